//! LLaMA-architecture (SmolLM2) forward pass on dequantised f32 weights.

use crate::attention::{AttentionShape, DecodeAttention};
use crate::error::{Error, Result};
use crate::gguf::{verify_sha256, GgufFile};
use crate::tokenizer::Tokenizer;
use candle_core::{DType, Device, Storage, Tensor, D};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How RoPE pairs dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeLayout {
    /// Adjacent pairs `(2i, 2i+1)` (GGML `NORM` mode, GPT-J style). llama.cpp's converter
    /// permutes HF's Q/K weights so that this is the right layout for GGUF llama models.
    Interleaved,
    /// Half-split pairs `(i, i + d/2)` (HF `rotate_half`). Wrong for GGUF weights; kept to
    /// demonstrate that (perplexity explodes).
    HalfSplit,
}

/// Model hyper-parameters, read from GGUF metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub architecture: String,
    pub name: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub d_ff: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rope_layout: RopeLayout,
    pub rms_eps: f32,
    /// Output projection is the token embedding (no `output.weight` in the file).
    pub tied_embeddings: bool,
}

impl Config {
    /// Read the `llama.*` hyper-parameters.
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch = f.meta_str("general.architecture")?.to_string();
        if arch != "llama" {
            return Err(Error::BadMetadata {
                key: "general.architecture".into(),
                reason: format!("only `llama` is supported, got `{arch}`"),
            });
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_heads = f.meta_usize(&k("attention.head_count"))?;
        let n_kv_heads = if f.has_meta(&k("attention.head_count_kv")) {
            f.meta_usize(&k("attention.head_count_kv"))?
        } else {
            n_heads
        };
        let d_model = f.meta_usize(&k("embedding_length"))?;
        if n_heads == 0 || n_kv_heads == 0 || n_heads % n_kv_heads != 0 || d_model % n_heads != 0 {
            return Err(Error::BadMetadata {
                key: k("attention.head_count"),
                reason: format!(
                    "heads {n_heads} / kv heads {n_kv_heads} / d_model {d_model} inconsistent"
                ),
            });
        }
        let head_dim = d_model / n_heads;
        if head_dim % 2 != 0 {
            return Err(Error::BadMetadata {
                key: k("embedding_length"),
                reason: format!("head_dim {head_dim} must be even for RoPE"),
            });
        }
        if f.has_meta(&k("rope.dimension_count")) {
            let rd = f.meta_usize(&k("rope.dimension_count"))?;
            if rd != head_dim {
                return Err(Error::BadMetadata {
                    key: k("rope.dimension_count"),
                    reason: format!("partial RoPE ({rd} of {head_dim} dims) is not supported"),
                });
            }
        }
        let tokens = f.meta_str_array("tokenizer.ggml.tokens")?.len();
        let vocab_size = if f.has_meta(&k("vocab_size")) {
            f.meta_usize(&k("vocab_size"))?
        } else {
            tokens
        };
        let name = if f.has_meta("general.name") {
            f.meta_str("general.name")?.to_string()
        } else {
            "unknown".into()
        };
        Ok(Self {
            architecture: arch.clone(),
            name,
            n_layers: f.meta_usize(&k("block_count"))?,
            d_model,
            d_ff: f.meta_usize(&k("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: f.meta_usize(&k("context_length"))?,
            rope_theta: if f.has_meta(&k("rope.freq_base")) {
                f.meta_f64(&k("rope.freq_base"))? as f32
            } else {
                10_000.0
            },
            rope_layout: RopeLayout::Interleaved,
            rms_eps: f.meta_f64(&k("attention.layer_norm_rms_epsilon"))? as f32,
            tied_embeddings: f.tensor_shape("output.weight").is_none(),
        })
    }

    /// Attention geometry for [`DecodeAttention`] backends.
    pub fn attention_shape(&self) -> AttentionShape {
        AttentionShape {
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            head_dim: self.head_dim,
            scale: 1.0 / (self.head_dim as f32).sqrt(),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    w_gate: Tensor,
    w_up: Tensor,
    w_down: Tensor,
}

/// Per-layer post-RoPE activations handed to a forward hook: `q` `[H, T, D]`,
/// `k`/`v` `[H_kv, T, D]` (candle tensors, f32, contiguous).
pub struct LayerQkv<'a> {
    pub layer: usize,
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    pub v: &'a Tensor,
}

/// A SmolLM2 / LLaMA model with dequantised f32 weights on the CPU, plus its tokenizer.
pub struct Model {
    cfg: Config,
    tokenizer: Tokenizer,
    embed: Tensor,
    output: Option<Tensor>,
    output_norm: Tensor,
    layers: Vec<Layer>,
    /// Query rows per attention chunk in the full-sequence forward (bounds memory).
    pub attn_chunk: usize,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("cfg", &self.cfg).finish()
    }
}

fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    Ok(x.matmul(&w.t()?)?)
}

impl Model {
    /// Load a GGUF model (dequantising every tensor to f32).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let mut f = GgufFile::open(path)?;
        let cfg = Config::from_gguf(&f)?;
        let tokenizer = Tokenizer::from_gguf(&f)?;
        if tokenizer.vocab_size() != cfg.vocab_size {
            return Err(Error::BadMetadata {
                key: "tokenizer.ggml.tokens".into(),
                reason: format!(
                    "{} tokens but vocab_size {}",
                    tokenizer.vocab_size(),
                    cfg.vocab_size
                ),
            });
        }
        let (dm, dff, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
        let dq = cfg.n_heads * cfg.head_dim;
        let dkv = cfg.n_kv_heads * cfg.head_dim;
        let embed = f.tensor_f32("token_embd.weight", &[v, dm])?;
        let output = if cfg.tied_embeddings {
            None
        } else {
            Some(f.tensor_f32("output.weight", &[v, dm])?)
        };
        let output_norm = f.tensor_f32("output_norm.weight", &[dm])?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for l in 0..cfg.n_layers {
            let mut t = |n: &str, s: &[usize]| f.tensor_f32(&format!("blk.{l}.{n}.weight"), s);
            layers.push(Layer {
                attn_norm: t("attn_norm", &[dm])?,
                wq: t("attn_q", &[dq, dm])?,
                wk: t("attn_k", &[dkv, dm])?,
                wv: t("attn_v", &[dkv, dm])?,
                wo: t("attn_output", &[dm, dq])?,
                ffn_norm: t("ffn_norm", &[dm])?,
                w_gate: t("ffn_gate", &[dff, dm])?,
                w_up: t("ffn_up", &[dff, dm])?,
                w_down: t("ffn_down", &[dm, dff])?,
            });
        }
        Ok(Self {
            cfg,
            tokenizer,
            embed,
            output,
            output_norm,
            layers,
            attn_chunk: 256,
        })
    }

    /// Verify the file's sha256 first, then [`Model::load`].
    pub fn load_verified(path: impl AsRef<Path>, sha256: &str) -> Result<Self> {
        verify_sha256(path.as_ref(), sha256)?;
        Self::load(path)
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// Mutable tokenizer (e.g. [`Tokenizer::set_split_digits`]).
    pub fn tokenizer_mut(&mut self) -> &mut Tokenizer {
        &mut self.tokenizer
    }
    pub fn attention_shape(&self) -> AttentionShape {
        self.cfg.attention_shape()
    }

    /// Override the RoPE layout (for experiments; GGUF llama weights need `Interleaved`).
    pub fn set_rope_layout(&mut self, layout: RopeLayout) {
        self.cfg.rope_layout = layout;
    }

    fn check_tokens(&self, op: &'static str, tokens: &[u32]) -> Result<()> {
        if let Some((i, &t)) = tokens
            .iter()
            .enumerate()
            .find(|(_, &t)| t as usize >= self.cfg.vocab_size)
        {
            return Err(Error::invalid(
                op,
                "tokens",
                format!(
                    "token {t} at index {i} >= vocab size {}",
                    self.cfg.vocab_size
                ),
            ));
        }
        Ok(())
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (ms + self.cfg.rms_eps as f64)?.sqrt()?.recip()?;
        Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?)
    }

    /// Apply RoPE in place to `x` laid out `[T, n_heads, head_dim]`, positions `pos0..`.
    fn rope_inplace(&self, x: &mut [f32], t: usize, n_heads: usize, pos0: usize) {
        let d = self.cfg.head_dim;
        let half = d / 2;
        let theta = self.cfg.rope_theta as f64;
        let inv_freq: Vec<f64> = (0..half)
            .map(|i| theta.powf(-(2.0 * i as f64) / d as f64))
            .collect();
        let mut cs = vec![(0f32, 0f32); half];
        for ti in 0..t {
            let pos = (pos0 + ti) as f64;
            for (c, f) in cs.iter_mut().zip(&inv_freq) {
                let a = pos * f;
                *c = (a.cos() as f32, a.sin() as f32);
            }
            for h in 0..n_heads {
                let row = &mut x[(ti * n_heads + h) * d..(ti * n_heads + h + 1) * d];
                for (i, &(c, s)) in cs.iter().enumerate() {
                    let (a, b) = match self.cfg.rope_layout {
                        RopeLayout::Interleaved => (2 * i, 2 * i + 1),
                        RopeLayout::HalfSplit => (i, i + half),
                    };
                    let (x0, x1) = (row[a], row[b]);
                    row[a] = x0 * c - x1 * s;
                    row[b] = x0 * s + x1 * c;
                }
            }
        }
    }

    /// `[T, n*D]` projection -> RoPE'd (optional) `[n, T, D]` contiguous tensor.
    fn heads(&self, x: Tensor, n: usize, pos0: usize, rope: bool) -> Result<Tensor> {
        let t = x.dim(0)?;
        let d = self.cfg.head_dim;
        let x = if rope {
            let mut v = x.flatten_all()?.to_vec1::<f32>()?;
            self.rope_inplace(&mut v, t, n, pos0);
            Tensor::from_vec(v, (t, n, d), &Device::Cpu)?
        } else {
            x.reshape((t, n, d))?
        };
        Ok(x.transpose(0, 1)?.contiguous()?)
    }

    /// Causal attention within one sequence: q `[H,T,D]`, k/v `[H_kv,T,D]` -> `[H,T,D]`.
    fn causal_attention(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (h, t, d) = q.dims3()?;
        let hk = self.cfg.n_kv_heads;
        let g = h / hk;
        let scale = 1.0 / (d as f32).sqrt();
        let qg = q.reshape((hk, g, t, d))?;
        let chunk = self.attn_chunk.max(1);
        let mut outs = Vec::with_capacity(t.div_ceil(chunk));
        let mut c0 = 0;
        while c0 < t {
            let c = chunk.min(t - c0);
            let c1 = c0 + c;
            let qc = qg.narrow(2, c0, c)?.contiguous()?.reshape((hk, g * c, d))?;
            let kc = k.narrow(1, 0, c1)?;
            let vc = v.narrow(1, 0, c1)?;
            // Scores via gemm, then a fused causal softmax per row in plain Rust (one pass
            // over the valid prefix instead of several masked tensor passes).
            let mut sc = qc.matmul(&kc.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            sc.par_chunks_mut(c1).enumerate().for_each(|(r, row)| {
                let valid = c0 + (r % c) + 1;
                let (keep, masked) = row.split_at_mut(valid);
                let mut m = f32::NEG_INFINITY;
                for x in keep.iter_mut() {
                    *x *= scale;
                    m = m.max(*x);
                }
                let mut z = 0f32;
                for x in keep.iter_mut() {
                    *x = (*x - m).exp();
                    z += *x;
                }
                let inv = 1.0 / z;
                keep.iter_mut().for_each(|x| *x *= inv);
                masked.fill(0.0);
            });
            let p = Tensor::from_vec(sc, (hk, g * c, c1), &Device::Cpu)?;
            let o = p.matmul(&vc)?;
            outs.push(o.reshape((h, c, d))?);
            c0 = c1;
        }
        Ok(Tensor::cat(&outs, 1)?)
    }

    fn mlp(&self, layer: &Layer, x: &Tensor) -> Result<Tensor> {
        let h = self.rms_norm(x, &layer.ffn_norm)?;
        let gate = linear(&h, &layer.w_gate)?.silu()?;
        let up = linear(&h, &layer.w_up)?;
        linear(&(gate * up)?, &layer.w_down)
    }

    /// Teacher-forced forward of a fresh sequence through the first `n_layers` layers
    /// (positions start at 0). `hook` sees every layer's post-RoPE Q/K/V. Returns the
    /// residual stream `[T, d_model]` after the last layer run (not normed).
    pub fn forward_layers(
        &self,
        tokens: &[u32],
        n_layers: usize,
        hook: &mut dyn FnMut(LayerQkv<'_>) -> Result<()>,
    ) -> Result<Tensor> {
        const OP: &str = "Model::forward_layers";
        if tokens.is_empty() {
            return Err(Error::invalid(OP, "tokens", "empty sequence"));
        }
        if n_layers > self.cfg.n_layers {
            return Err(Error::invalid(
                OP,
                "n_layers",
                format!("{n_layers} > model layers {}", self.cfg.n_layers),
            ));
        }
        self.check_tokens(OP, tokens)?;
        let t = tokens.len();
        let ids = Tensor::from_vec(tokens.to_vec(), t, &Device::Cpu)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let (h, hk) = (self.cfg.n_heads, self.cfg.n_kv_heads);
        for (l, layer) in self.layers.iter().take(n_layers).enumerate() {
            let hn = self.rms_norm(&x, &layer.attn_norm)?;
            let q = self.heads(linear(&hn, &layer.wq)?, h, 0, true)?;
            let k = self.heads(linear(&hn, &layer.wk)?, hk, 0, true)?;
            let v = self.heads(linear(&hn, &layer.wv)?, hk, 0, false)?;
            hook(LayerQkv {
                layer: l,
                q: &q,
                k: &k,
                v: &v,
            })?;
            let a = self.causal_attention(&q, &k, &v)?;
            let a = a
                .transpose(0, 1)?
                .contiguous()?
                .reshape((t, h * self.cfg.head_dim))?;
            x = (x + linear(&a, &layer.wo)?)?;
            x = (&x + self.mlp(layer, &x)?)?;
        }
        Ok(x)
    }

    /// Final norm + output projection of residual rows `[N, d_model]` -> logits `[N, V]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.rms_norm(x, &self.output_norm)?;
        linear(&h, self.output.as_ref().unwrap_or(&self.embed))
    }

    /// Full teacher-forced forward: logits `[T, V]` (memory: T x V x 4 bytes).
    pub fn forward(&self, tokens: &[u32]) -> Result<Tensor> {
        let x = self.forward_layers(tokens, self.cfg.n_layers, &mut |_| Ok(()))?;
        self.logits(&x)
    }

    /// Teacher-forced negative log-likelihoods: entry `i` is `-log p(tokens[i+1] | tokens[..=i])`
    /// (`T-1` values). Logits are computed in chunks so memory stays small.
    pub fn token_nlls(&self, tokens: &[u32]) -> Result<Vec<f64>> {
        if tokens.len() < 2 {
            return Err(Error::invalid(
                "Model::token_nlls",
                "tokens",
                "need at least 2 tokens",
            ));
        }
        let x = self.forward_layers(tokens, self.cfg.n_layers, &mut |_| Ok(()))?;
        let t = tokens.len();
        let mut nll = Vec::with_capacity(t - 1);
        let chunk = 256;
        let mut r0 = 0;
        while r0 < t - 1 {
            let n = chunk.min(t - 1 - r0);
            let logits = self.logits(&x.narrow(0, r0, n)?)?.to_vec2::<f32>()?;
            for (i, row) in logits.iter().enumerate() {
                nll.push(nll_of(row, tokens[r0 + i + 1]));
            }
            r0 += n;
        }
        Ok(nll)
    }

    /// Prefill a fresh sequence through `attn` (calls `prefill` on every layer) and return
    /// the logits of the last prompt position.
    pub fn prefill(&self, tokens: &[u32], attn: &mut dyn DecodeAttention) -> Result<Vec<f32>> {
        let t = tokens.len();
        let x = self.forward_layers(tokens, self.cfg.n_layers, &mut |lq| {
            let k = lq.k.flatten_all()?.to_vec1::<f32>()?;
            let v = lq.v.flatten_all()?.to_vec1::<f32>()?;
            attn.prefill(lq.layer, &k, &v, t)
        })?;
        let last = self.logits(&x.narrow(0, t - 1, 1)?)?;
        Ok(last.flatten_all()?.to_vec1::<f32>()?)
    }

    /// One decode step: feed `token` at absolute position `pos` (= tokens already cached),
    /// routing attention through `attn`; returns the next-token logits `[V]`.
    ///
    /// Runs in plain Rust on the f32 weights (rayon gemv): candle's gemm is slow for a
    /// single row.
    pub fn step(&self, token: u32, pos: usize, attn: &mut dyn DecodeAttention) -> Result<Vec<f32>> {
        self.check_tokens("Model::step", &[token])?;
        let (h, hk, d) = (self.cfg.n_heads, self.cfg.n_kv_heads, self.cfg.head_dim);
        let dm = self.cfg.d_model;
        let t = token as usize;
        let eps = self.cfg.rms_eps;
        let mut x = with_f32(&self.embed, |e| e[t * dm..(t + 1) * dm].to_vec())?;
        let mut out = vec![0f32; h * d];
        for (l, layer) in self.layers.iter().enumerate() {
            let hn = with_f32(&layer.attn_norm, |w| rms_norm_vec(&x, w, eps))?;
            let mut q = gemv(&layer.wq, &hn)?;
            let mut k = gemv(&layer.wk, &hn)?;
            let v = gemv(&layer.wv, &hn)?;
            self.rope_inplace(&mut q, 1, h, pos);
            self.rope_inplace(&mut k, 1, hk, pos);
            attn.step(l, &q, &k, &v, &mut out)?;
            let o = gemv(&layer.wo, &out)?;
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let hn = with_f32(&layer.ffn_norm, |w| rms_norm_vec(&x, w, eps))?;
            let mut g = gemv(&layer.w_gate, &hn)?;
            let u = gemv(&layer.w_up, &hn)?;
            g.iter_mut()
                .zip(&u)
                .for_each(|(a, b)| *a = *a / (1.0 + (-*a).exp()) * b);
            let dn = gemv(&layer.w_down, &g)?;
            x.iter_mut().zip(&dn).for_each(|(a, b)| *a += b);
        }
        let hn = with_f32(&self.output_norm, |w| rms_norm_vec(&x, w, eps))?;
        gemv(self.output.as_ref().unwrap_or(&self.embed), &hn)
    }

    /// Decode-path NLLs: prefill `tokens[..prefix]` through `attn`, then step token by token.
    /// Entry `i` is `-log p(tokens[prefix + i] | tokens[..prefix + i])`, `T - prefix` values,
    /// directly comparable with `token_nlls(tokens)[prefix - 1..]`.
    pub fn decode_nlls(
        &self,
        tokens: &[u32],
        prefix: usize,
        attn: &mut dyn DecodeAttention,
    ) -> Result<Vec<f64>> {
        if prefix == 0 || prefix >= tokens.len() {
            return Err(Error::invalid(
                "Model::decode_nlls",
                "prefix",
                format!("need 0 < prefix < {} tokens, got {prefix}", tokens.len()),
            ));
        }
        let mut logits = self.prefill(&tokens[..prefix], attn)?;
        let mut nll = Vec::with_capacity(tokens.len() - prefix);
        for pos in prefix..tokens.len() {
            nll.push(nll_of(&logits, tokens[pos]));
            if pos + 1 < tokens.len() {
                logits = self.step(tokens[pos], pos, attn)?;
            }
        }
        Ok(nll)
    }

    /// Dtype of the dequantised weights (always f32).
    pub fn dtype(&self) -> DType {
        self.embed.dtype()
    }
}

/// Run `f` on the contiguous f32 data of a CPU tensor (no copy).
fn with_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (st, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*st else {
        return Err(Error::invalid("with_f32", "tensor", "not on the CPU"));
    };
    let data = cpu.as_slice::<f32>()?;
    let (a, b) = layout
        .contiguous_offsets()
        .ok_or_else(|| Error::invalid("with_f32", "tensor", "not contiguous"))?;
    Ok(f(&data[a..b]))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `W x` for a row-major `[out, in]` weight tensor.
fn gemv(w: &Tensor, x: &[f32]) -> Result<Vec<f32>> {
    let (rows, cols) = w.dims2()?;
    if x.len() != cols {
        return Err(Error::invalid(
            "gemv",
            "x",
            format!("has {} elements, weight is [{rows}, {cols}]", x.len()),
        ));
    }
    with_f32(w, |w| {
        let mut y = vec![0f32; rows];
        y.par_chunks_mut(256).enumerate().for_each(|(c, ys)| {
            for (i, yi) in ys.iter_mut().enumerate() {
                let r = c * 256 + i;
                *yi = dot(&w[r * cols..(r + 1) * cols], x);
            }
        });
        y
    })
}

fn rms_norm_vec(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(a, b)| a * inv * b).collect()
}

/// `-log softmax(logits)[target]`, in f64.
pub fn nll_of(logits: &[f32], target: u32) -> f64 {
    let m = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
    let z: f64 = logits.iter().map(|&l| (l as f64 - m).exp()).sum();
    let lt = logits
        .get(target as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY) as f64;
    m + z.ln() - lt
}
