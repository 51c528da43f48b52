//! Q/K/V trace capture (teacher-forced prefill) to safetensors + JSON sidecar, and a loader.
//!
//! File layout (`<name>.safetensors`), per captured layer `l`:
//! - `q.{l}`: `[n_pos, n_heads, head_dim]`, post-RoPE queries at the chosen positions;
//! - `k.{l}`: `[n_kv_heads, T, head_dim]`, post-RoPE keys of every token;
//! - `v.{l}`: `[n_kv_heads, T, head_dim]`, values of every token;
//! - `tokens`: `[T]` i32, the token ids.
//!
//! f32 or f16. The query at position `p` attends causally to keys/values `0..=p`; query head
//! `h` reads kv head `h / (n_heads / n_kv_heads)`; scores are scaled by `scale`.
//! The sidecar `<name>.json` ([`TraceMeta`]) is also stored in the safetensors header under
//! the key `entmaxkv_trace`.

use crate::error::{Error, Result};
use crate::model::{Model, RopeLayout};
use candle_core::Tensor;
use half::f16;
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Format tag written into every trace.
pub const TRACE_FORMAT: &str = "entmaxkv-trace-v1";

/// Storage precision of a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceDtype {
    F32,
    F16,
}

/// What to capture.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpec {
    /// Model layers to store (any order; stored sorted, deduplicated). Layers after the
    /// largest one are not run.
    pub layers: Vec<usize>,
    /// Decode positions whose queries are stored (each `< T`); kept in the given order.
    pub positions: Vec<usize>,
    pub dtype: TraceDtype,
    /// Free-form description of the text (e.g. `kjv.txt tokens 0..8192`).
    pub source: String,
    /// Whether the token sequence starts with a BOS (recorded only).
    pub bos: bool,
}

impl TraceSpec {
    /// The last `n` positions of a `t`-token sequence.
    pub fn last_positions(t: usize, n: usize) -> Vec<usize> {
        (t.saturating_sub(n)..t).collect()
    }
}

/// Sidecar metadata of a trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceMeta {
    pub format: String,
    pub model: String,
    /// Layers of the model (all of them, not only the captured ones).
    pub model_layers: usize,
    /// Captured layers, sorted.
    pub layers: Vec<usize>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// n_heads / n_kv_heads.
    pub gqa_group: usize,
    /// Always `kv_head = h / (n_heads / n_kv_heads)`.
    pub gqa_map: String,
    pub rope_theta: f32,
    pub rope_layout: RopeLayout,
    /// 1/sqrt(head_dim).
    pub scale: f32,
    /// Query positions, in the order of the `q.{l}` rows.
    pub positions: Vec<usize>,
    pub text_source: String,
    pub bos: bool,
    /// T: tokens in the sequence (= rows of `k.{l}` / `v.{l}` per kv head).
    pub n_tokens: usize,
    pub dtype: TraceDtype,
    /// Human-readable tensor layout.
    pub layout: String,
}

/// One captured layer, converted to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerTrace {
    pub layer: usize,
    /// `[n_pos, n_heads, head_dim]`
    pub q: Vec<f32>,
    /// `[n_kv_heads, T, head_dim]`
    pub k: Vec<f32>,
    /// `[n_kv_heads, T, head_dim]`
    pub v: Vec<f32>,
}

/// A loaded trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    pub meta: TraceMeta,
    pub tokens: Vec<u32>,
    /// In the order of `meta.layers`.
    pub layers: Vec<LayerTrace>,
}

/// Sidecar path for a trace file: same stem, `.json`.
pub fn sidecar_path(path: &Path) -> PathBuf {
    path.with_extension("json")
}

struct Owned {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Owned {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn encode(t: &Tensor, dtype: TraceDtype) -> Result<Owned> {
    let shape = t.dims().to_vec();
    let v = t.flatten_all()?.to_vec1::<f32>()?;
    Ok(match dtype {
        TraceDtype::F32 => Owned {
            dtype: Dtype::F32,
            shape,
            data: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        },
        TraceDtype::F16 => Owned {
            dtype: Dtype::F16,
            shape,
            data: v
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
        },
    })
}

/// Teacher-forced prefill over `tokens`, storing post-RoPE Q at `spec.positions` and K/V of
/// every token for `spec.layers` into `path` (safetensors) plus the JSON sidecar
/// ([`sidecar_path`]). Returns the metadata written.
pub fn capture_traces(
    model: &Model,
    tokens: &[u32],
    spec: &TraceSpec,
    path: impl AsRef<Path>,
) -> Result<TraceMeta> {
    const OP: &str = "capture_traces";
    let path = path.as_ref();
    let cfg = model.config();
    let t = tokens.len();
    if t == 0 {
        return Err(Error::invalid(OP, "tokens", "empty sequence"));
    }
    let mut layers = spec.layers.clone();
    layers.sort_unstable();
    layers.dedup();
    let Some(&last) = layers.last() else {
        return Err(Error::invalid(OP, "spec.layers", "no layers chosen"));
    };
    if last >= cfg.n_layers {
        return Err(Error::invalid(
            OP,
            "spec.layers",
            format!("layer {last} >= model layers {}", cfg.n_layers),
        ));
    }
    if spec.positions.is_empty() {
        return Err(Error::invalid(OP, "spec.positions", "no positions chosen"));
    }
    if let Some(&p) = spec.positions.iter().find(|&&p| p >= t) {
        return Err(Error::invalid(
            OP,
            "spec.positions",
            format!("position {p} >= sequence length {t}"),
        ));
    }
    let pos_ids = Tensor::from_vec(
        spec.positions.iter().map(|&p| p as u32).collect::<Vec<_>>(),
        spec.positions.len(),
        &candle_core::Device::Cpu,
    )?;
    let mut store: Vec<(String, Owned)> = Vec::new();
    model.forward_layers(tokens, last + 1, &mut |lq| {
        if layers.binary_search(&lq.layer).is_err() {
            return Ok(());
        }
        let l = lq.layer;
        // [H, T, D] -> [H, P, D] -> [P, H, D]
        let q =
            lq.q.index_select(&pos_ids, 1)?
                .transpose(0, 1)?
                .contiguous()?;
        store.push((format!("q.{l}"), encode(&q, spec.dtype)?));
        store.push((format!("k.{l}"), encode(lq.k, spec.dtype)?));
        store.push((format!("v.{l}"), encode(lq.v, spec.dtype)?));
        Ok(())
    })?;
    store.push((
        "tokens".into(),
        Owned {
            dtype: Dtype::I32,
            shape: vec![t],
            data: tokens
                .iter()
                .flat_map(|&x| (x as i32).to_le_bytes())
                .collect(),
        },
    ));
    let a = cfg.attention_shape();
    let meta = TraceMeta {
        format: TRACE_FORMAT.into(),
        model: cfg.name.clone(),
        model_layers: cfg.n_layers,
        layers,
        n_heads: cfg.n_heads,
        n_kv_heads: cfg.n_kv_heads,
        head_dim: cfg.head_dim,
        gqa_group: a.group(),
        gqa_map: "kv_head = h / (n_heads / n_kv_heads)".into(),
        rope_theta: cfg.rope_theta,
        rope_layout: cfg.rope_layout,
        scale: a.scale,
        positions: spec.positions.clone(),
        text_source: spec.source.clone(),
        bos: spec.bos,
        n_tokens: t,
        dtype: spec.dtype,
        layout: "q.{l}: [n_pos, n_heads, head_dim] post-RoPE; k.{l}, v.{l}: [n_kv_heads, T, head_dim] (k post-RoPE); tokens: [T] i32; query at position p attends to rows 0..=p".into(),
    };
    let json = serde_json::to_string_pretty(&meta)?;
    let header: HashMap<String, String> = [("entmaxkv_trace".to_string(), json.clone())].into();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(OP, dir, e))?;
    }
    safetensors::serialize_to_file(
        store.iter().map(|(n, o)| (n.as_str(), o)),
        Some(header),
        path,
    )?;
    let side = sidecar_path(path);
    std::fs::write(&side, json).map_err(|e| Error::io(OP, &side, e))?;
    Ok(meta)
}

fn to_f32(path: &Path, name: &str, st: &SafeTensors<'_>, shape: &[usize]) -> Result<Vec<f32>> {
    let bad = |reason: String| Error::BadTrace {
        path: path.to_path_buf(),
        reason,
    };
    let view = st
        .tensor(name)
        .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
    if view.shape() != shape {
        return Err(bad(format!(
            "tensor `{name}` has shape {:?}, expected {shape:?}",
            view.shape()
        )));
    }
    let d = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(d
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F16 => Ok(d
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect()),
        other => Err(bad(format!(
            "tensor `{name}` has dtype {other:?}, expected f32/f16"
        ))),
    }
}

impl Trace {
    /// Load a trace written by [`capture_traces`] (sidecar JSON, or the copy in the
    /// safetensors header when the sidecar is absent), converting to f32 and checking shapes.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| Error::BadTrace {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| Error::io("Trace::load", path, e))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)?;
        let st = SafeTensors::deserialize(&bytes)?;
        let side = sidecar_path(path);
        let json = if side.is_file() {
            std::fs::read_to_string(&side).map_err(|e| Error::io("Trace::load", &side, e))?
        } else {
            header
                .metadata()
                .as_ref()
                .and_then(|m| m.get("entmaxkv_trace").cloned())
                .ok_or_else(|| {
                    bad(format!(
                        "no sidecar {} and no header metadata",
                        side.display()
                    ))
                })?
        };
        let meta: TraceMeta = serde_json::from_str(&json)?;
        if meta.format != TRACE_FORMAT {
            return Err(bad(format!(
                "format `{}`, expected `{TRACE_FORMAT}`",
                meta.format
            )));
        }
        let (h, hk, d, t) = (meta.n_heads, meta.n_kv_heads, meta.head_dim, meta.n_tokens);
        let np = meta.positions.len();
        let tokens_view = st
            .tensor("tokens")
            .map_err(|e| bad(format!("tensor `tokens`: {e}")))?;
        if tokens_view.dtype() != Dtype::I32 || tokens_view.shape() != [t] {
            return Err(bad(format!(
                "`tokens` is {:?} {:?}, expected I32 [{t}]",
                tokens_view.dtype(),
                tokens_view.shape()
            )));
        }
        let tokens = tokens_view
            .data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32)
            .collect();
        let mut layers = Vec::with_capacity(meta.layers.len());
        for &l in &meta.layers {
            layers.push(LayerTrace {
                layer: l,
                q: to_f32(path, &format!("q.{l}"), &st, &[np, h, d])?,
                k: to_f32(path, &format!("k.{l}"), &st, &[hk, t, d])?,
                v: to_f32(path, &format!("v.{l}"), &st, &[hk, t, d])?,
            });
        }
        Ok(Self {
            meta,
            tokens,
            layers,
        })
    }

    /// The captured layer with model index `layer`.
    pub fn layer(&self, layer: usize) -> Option<&LayerTrace> {
        self.layers.iter().find(|l| l.layer == layer)
    }
}

impl LayerTrace {
    /// Query of head `h` at the `i`-th stored position: `[head_dim]` (None if out of range).
    pub fn query(&self, meta: &TraceMeta, i: usize, h: usize) -> Option<&[f32]> {
        if h >= meta.n_heads {
            return None;
        }
        let d = meta.head_dim;
        let o = (i * meta.n_heads + h) * d;
        self.q.get(o..o + d)
    }
    /// Keys of kv head `kvh` for tokens `0..n`: `[n, head_dim]` (None if out of range).
    pub fn keys(&self, meta: &TraceMeta, kvh: usize, n: usize) -> Option<&[f32]> {
        rows(&self.k, meta, kvh, n)
    }
    /// Values of kv head `kvh` for tokens `0..n`: `[n, head_dim]` (None if out of range).
    pub fn values(&self, meta: &TraceMeta, kvh: usize, n: usize) -> Option<&[f32]> {
        rows(&self.v, meta, kvh, n)
    }
}

fn rows<'a>(x: &'a [f32], meta: &TraceMeta, kvh: usize, n: usize) -> Option<&'a [f32]> {
    let (t, d) = (meta.n_tokens, meta.head_dim);
    if kvh >= meta.n_kv_heads || n > t {
        return None;
    }
    x.get(kvh * t * d..kvh * t * d + n * d)
}
