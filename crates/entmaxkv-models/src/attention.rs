//! Pluggable decode attention: the model calls a [`DecodeAttention`] once per layer at
//! prefill and once per layer per generated token, so decode attention can be routed through
//! entmaxkv (or anything else) without touching the model.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Attention geometry of a model, handed to attention backends.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AttentionShape {
    pub n_layers: usize,
    /// Query heads H.
    pub n_heads: usize,
    /// KV heads H_kv; query head `h` reads kv head `h / (H / H_kv)`.
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Score scale, 1/sqrt(head_dim).
    pub scale: f32,
}

impl AttentionShape {
    /// Query heads per kv head, H / H_kv.
    pub fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads.max(1)
    }
    /// The kv head that query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.group().max(1)
    }
}

/// Decode-time attention over a growing KV cache, one sequence at a time.
///
/// Layouts are row-major f32. K and Q are post-RoPE (interleaved-pair RoPE in the basis of
/// the GGUF's Q/K weights; dot products are what matters). Query head `h` uses kv head
/// `h / (n_heads / n_kv_heads)`; scores are scaled by `1/sqrt(head_dim)`.
pub trait DecodeAttention {
    /// Called once per layer at prefill with the prompt's K and V, each
    /// `[n_kv_heads, t, head_dim]`. Starts a new sequence for that layer (drops old state).
    fn prefill(&mut self, layer: usize, k: &[f32], v: &[f32], t: usize) -> Result<()>;

    /// One decode step for one layer: `q` is `[n_heads, head_dim]`, `k_new`/`v_new` are
    /// `[n_kv_heads, head_dim]`. Append `k_new`/`v_new` to the layer's cache, then attend
    /// causally over everything cached (including the new token) and write `out`
    /// `[n_heads, head_dim]`.
    fn step(
        &mut self,
        layer: usize,
        q: &[f32],
        k_new: &[f32],
        v_new: &[f32],
        out: &mut [f32],
    ) -> Result<()>;
}

/// Reference dense softmax attention over an in-memory cache.
#[derive(Debug, Clone)]
pub struct DenseAttention {
    shape: AttentionShape,
    /// `[layer][kv_head]` -> `t * head_dim` keys / values.
    k: Vec<Vec<Vec<f32>>>,
    v: Vec<Vec<Vec<f32>>>,
}

impl DenseAttention {
    /// Empty caches for every layer.
    pub fn new(shape: AttentionShape) -> Result<Self> {
        if shape.n_kv_heads == 0 || shape.head_dim == 0 || shape.n_heads % shape.n_kv_heads != 0 {
            return Err(Error::invalid(
                "DenseAttention::new",
                "shape",
                format!("need n_heads a positive multiple of n_kv_heads > 0 and head_dim > 0, got {shape:?}"),
            ));
        }
        let empty = vec![vec![Vec::new(); shape.n_kv_heads]; shape.n_layers];
        Ok(Self {
            shape,
            k: empty.clone(),
            v: empty,
        })
    }

    /// The geometry this backend was built for.
    pub fn shape(&self) -> AttentionShape {
        self.shape
    }

    /// Tokens cached for `layer`.
    pub fn len(&self, layer: usize) -> usize {
        self.k
            .get(layer)
            .and_then(|l| l.first())
            .map_or(0, |k| k.len() / self.shape.head_dim)
    }

    /// Whether `layer` holds no tokens.
    pub fn is_empty(&self, layer: usize) -> bool {
        self.len(layer) == 0
    }

    fn check_layer(&self, op: &'static str, layer: usize) -> Result<()> {
        if layer >= self.shape.n_layers {
            return Err(Error::invalid(
                op,
                "layer",
                format!("{layer} >= n_layers {}", self.shape.n_layers),
            ));
        }
        Ok(())
    }
}

fn check_len(op: &'static str, arg: &'static str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(Error::invalid(
            op,
            arg,
            format!("has {got} elements, expected {want}"),
        ));
    }
    Ok(())
}

impl DecodeAttention for DenseAttention {
    fn prefill(&mut self, layer: usize, k: &[f32], v: &[f32], t: usize) -> Result<()> {
        const OP: &str = "DenseAttention::prefill";
        self.check_layer(OP, layer)?;
        let (hk, d) = (self.shape.n_kv_heads, self.shape.head_dim);
        check_len(OP, "k", k.len(), hk * t * d)?;
        check_len(OP, "v", v.len(), hk * t * d)?;
        for h in 0..hk {
            self.k[layer][h] = k[h * t * d..(h + 1) * t * d].to_vec();
            self.v[layer][h] = v[h * t * d..(h + 1) * t * d].to_vec();
        }
        Ok(())
    }

    fn step(
        &mut self,
        layer: usize,
        q: &[f32],
        k_new: &[f32],
        v_new: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "DenseAttention::step";
        self.check_layer(OP, layer)?;
        let s = self.shape;
        let (h_all, hk, d) = (s.n_heads, s.n_kv_heads, s.head_dim);
        check_len(OP, "q", q.len(), h_all * d)?;
        check_len(OP, "k_new", k_new.len(), hk * d)?;
        check_len(OP, "v_new", v_new.len(), hk * d)?;
        check_len(OP, "out", out.len(), h_all * d)?;
        for h in 0..hk {
            self.k[layer][h].extend_from_slice(&k_new[h * d..(h + 1) * d]);
            self.v[layer][h].extend_from_slice(&v_new[h * d..(h + 1) * d]);
        }
        let t = self.len(layer);
        let mut scores = vec![0f32; t];
        for h in 0..h_all {
            let kvh = s.kv_head(h);
            let qh = &q[h * d..(h + 1) * d];
            let keys = &self.k[layer][kvh];
            let vals = &self.v[layer][kvh];
            let mut m = f32::NEG_INFINITY;
            for (j, sc) in scores.iter_mut().enumerate() {
                let kj = &keys[j * d..(j + 1) * d];
                let dot: f32 = qh.iter().zip(kj).map(|(a, b)| a * b).sum();
                *sc = dot * s.scale;
                m = m.max(*sc);
            }
            let mut z = 0f32;
            for sc in scores.iter_mut() {
                *sc = (*sc - m).exp();
                z += *sc;
            }
            let o = &mut out[h * d..(h + 1) * d];
            o.fill(0.0);
            for (j, &p) in scores.iter().enumerate() {
                let w = p / z;
                for (oi, vi) in o.iter_mut().zip(&vals[j * d..(j + 1) * d]) {
                    *oi += w * vi;
                }
            }
        }
        Ok(())
    }
}
