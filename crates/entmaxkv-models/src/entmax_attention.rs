//! [`DecodeAttention`] backed by entmaxkv: one paged cache and one planned decoder per
//! layer. Prefill appends the prompt's K/V to the layer's paged cache (head-major chunk);
//! each decode step appends the new token and runs the configured method with the new token
//! as the query (entmaxkv's convention: the query is the last cached token).
//!
//! [`Backend::Cpu`] keeps a [`PagedKvCache`] and a [`Decoder`]. [`Backend::Cuda`] fills the
//! same host cache at prefill, uploads it ([`DeviceKvCache`]), plans a [`GpuDecoder`] on it
//! and captures its step as a CUDA graph; each decode step then appends on the device
//! (statistics and sketch updated by the append kernel) and replays the graph. The model's
//! matmuls stay on the host: what runs on the GPU is the attention over the long cache.

use crate::attention::{AttentionShape, DecodeAttention};
use crate::error::{Error, Result};
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, HeadReport, Method, StepReport};
use entmaxkv::gpu::{DeviceCacheOptions, DeviceKvCache, GpuDecoder};
use entmaxkv::DType;
use serde::Serialize;

fn ek(op: &'static str, e: entmaxkv::Error) -> Error {
    Error::invalid(op, "entmaxkv", e.to_string())
}

/// Where an [`EntmaxKvAttention`] runs its decode steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// entmaxkv's CPU pipeline.
    #[default]
    Cpu,
    /// entmaxkv's CUDA backend (the first GPU); a typed error where there is none.
    Cuda,
}

/// How an [`EntmaxKvAttention`] stores its cache and which layers it runs sparse.
#[derive(Debug, Clone, PartialEq)]
pub struct EntmaxKvOptions {
    /// K/V storage dtype (f32 makes `Method::Dense` at α = 1 match [`crate::DenseAttention`]
    /// to f32 rounding; f16 is what a deployment would store).
    pub kv_dtype: DType,
    /// Tokens per page (default 16).
    pub page_size: usize,
    /// Longest sequence (prompt + generated tokens) the caches must hold.
    pub max_tokens: usize,
    /// Layers that run `Method::Dense` regardless of the configured method (same α).
    pub dense_layers: Vec<usize>,
    /// CPU pipeline or CUDA backend.
    pub backend: Backend,
}

impl EntmaxKvOptions {
    pub fn new(kv_dtype: DType, max_tokens: usize) -> Self {
        EntmaxKvOptions {
            kv_dtype,
            page_size: 16,
            max_tokens,
            dense_layers: Vec::new(),
            backend: Backend::Cpu,
        }
    }
    /// The same options on another backend.
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
}

/// Running totals over the decode steps of one layer (or all layers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepTotals {
    /// Decode steps (calls to `step`) counted.
    pub steps: u64,
    /// Σ over steps and heads of pages kept and of pages in the sequence.
    pub pages_kept: u64,
    pub pages_total: u64,
    /// (step, head) pairs and those with a certificate that proved equality with dense.
    pub heads: u64,
    pub heads_certified: u64,
    /// Bytes read by the decoder (K, V, statistics, sketch), summed over steps.
    pub bytes: u64,
    /// Bytes a dense read of K and V of the same steps would take (in the cache dtype).
    pub dense_bytes: u64,
}

impl StepTotals {
    /// Mean fraction of pages kept.
    pub fn pages_kept_frac(&self) -> f64 {
        self.pages_kept as f64 / self.pages_total.max(1) as f64
    }
    fn add(&mut self, o: &StepTotals) {
        self.steps += o.steps;
        self.pages_kept += o.pages_kept;
        self.pages_total += o.pages_total;
        self.heads += o.heads;
        self.heads_certified += o.heads_certified;
        self.bytes += o.bytes;
        self.dense_bytes += o.dense_bytes;
    }
}

/// A layer's decode engine.
enum Engine {
    Cpu(Box<Decoder>),
    /// Planned at prefill (the decoder is planned on the uploaded cache).
    Cuda {
        cfg: DecodeConfig,
        dev: Option<Box<CudaLayer>>,
    },
}

struct CudaLayer {
    cache: DeviceKvCache,
    seq: SeqId,
    decoder: GpuDecoder,
    /// The step is captured as a graph at the first step (capture needs a token cached).
    captured: bool,
}

struct Layer {
    /// The host cache: the whole cache on the CPU backend, the prompt's staging on CUDA.
    cache: PagedKvCache,
    seq: Option<SeqId>,
    engine: Engine,
    totals: StepTotals,
}

impl Layer {
    fn len(&self) -> usize {
        match &self.engine {
            Engine::Cuda { dev: Some(g), .. } => g.cache.seq_len(g.seq).unwrap_or(0),
            _ => self
                .seq
                .map(|s| self.cache.seq_len(s).unwrap_or(0))
                .unwrap_or(0),
        }
    }

    /// Starts a new sequence holding `t` prompt tokens (`[H_kv, t, D]` each); on CUDA
    /// uploads it and plans the layer's decoder (and its graph) on the device copy.
    fn start(
        &mut self,
        op: &'static str,
        k: &[f32],
        v: &[f32],
        t: usize,
        max: usize,
    ) -> Result<()> {
        if let Some(s) = self.seq.take() {
            self.cache.release(s).map_err(|e| ek(op, e))?;
        }
        let s = self.cache.add_sequence();
        self.seq = Some(s);
        if t > 0 {
            self.cache
                .append(s, k, v, ChunkLayout::HeadMajor)
                .map_err(|e| ek(op, e))?;
        }
        if let Engine::Cuda { cfg, dev } = &mut self.engine {
            *dev = None;
            let opts = DeviceCacheOptions {
                max_seqs: 1,
                max_pages_per_seq: 0,
            };
            let cache = DeviceKvCache::upload(&self.cache, opts).map_err(|e| ek(op, e))?;
            // The host copy is only staging: drop its tokens (the pool stays allocated).
            self.cache.release(s).map_err(|e| ek(op, e))?;
            self.seq = None;
            let decoder = GpuDecoder::new(&cache, &[s], max, cfg.clone()).map_err(|e| ek(op, e))?;
            *dev = Some(Box::new(CudaLayer {
                cache,
                seq: s,
                decoder,
                captured: false,
            }));
        }
        Ok(())
    }
}

/// Decode attention through entmaxkv (see the module docs).
pub struct EntmaxKvAttention {
    shape: AttentionShape,
    cfg: DecodeConfig,
    opts: EntmaxKvOptions,
    layers: Vec<Layer>,
    last: Vec<HeadReport>,
}

impl EntmaxKvAttention {
    /// Plans caches and decoders for every layer of `shape`. `cfg.attention` is overwritten
    /// with the shape's heads and scale (its α, ALiBi slopes and the rest are kept).
    pub fn new(shape: AttentionShape, cfg: DecodeConfig, opts: EntmaxKvOptions) -> Result<Self> {
        const OP: &str = "EntmaxKvAttention::new";
        if opts.max_tokens == 0 {
            return Err(Error::invalid(OP, "max_tokens", "must be >= 1"));
        }
        let mut cfg = cfg;
        cfg.attention = AttentionParams {
            num_heads: shape.n_heads,
            scale: Some(shape.scale),
            ..cfg.attention
        };
        let ccfg = CacheConfig::new(
            shape.n_kv_heads,
            shape.head_dim,
            opts.max_tokens.div_ceil(opts.page_size),
        )
        .with_page_size(opts.page_size)
        .with_kv_dtype(opts.kv_dtype)
        .with_stats_dtype(StatsDType::Kv);
        let mut layers = Vec::with_capacity(shape.n_layers);
        for l in 0..shape.n_layers {
            let cache = PagedKvCache::new(ccfg.clone()).map_err(|e| ek(OP, e))?;
            let mut lcfg = cfg.clone();
            if opts.dense_layers.contains(&l) {
                lcfg.method = Method::Dense;
                lcfg.certificate = Default::default();
            }
            let engine = match opts.backend {
                Backend::Cpu => Engine::Cpu(Box::new(
                    Decoder::new(&cache, 1, opts.max_tokens, lcfg).map_err(|e| ek(OP, e))?,
                )),
                Backend::Cuda => {
                    // Fail here, not at the first prefill, where there is no GPU.
                    entmaxkv::gpu::Gpu::get().map_err(|e| ek(OP, e))?;
                    Engine::Cuda {
                        cfg: lcfg,
                        dev: None,
                    }
                }
            };
            layers.push(Layer {
                cache,
                seq: None,
                engine,
                totals: StepTotals::default(),
            });
        }
        Ok(EntmaxKvAttention {
            shape,
            cfg,
            opts,
            layers,
            last: Vec::new(),
        })
    }

    pub fn shape(&self) -> AttentionShape {
        self.shape
    }
    pub fn config(&self) -> &DecodeConfig {
        &self.cfg
    }
    pub fn options(&self) -> &EntmaxKvOptions {
        &self.opts
    }

    /// Tokens cached for `layer`.
    pub fn len(&self, layer: usize) -> usize {
        self.layers.get(layer).map_or(0, Layer::len)
    }

    /// Whether `layer` holds no tokens.
    pub fn is_empty(&self, layer: usize) -> bool {
        self.len(layer) == 0
    }

    /// The per-head reports of the last decode step (of the last layer stepped).
    pub fn last_heads(&self) -> &[HeadReport] {
        &self.last
    }

    /// Totals of `layer` since construction or [`Self::reset_totals`].
    pub fn layer_totals(&self, layer: usize) -> Option<StepTotals> {
        self.layers.get(layer).map(|l| l.totals)
    }

    /// Totals over all layers (steps are counted per layer).
    pub fn totals(&self) -> StepTotals {
        let mut t = StepTotals::default();
        for l in &self.layers {
            t.add(&l.totals);
        }
        t
    }

    pub fn reset_totals(&mut self) {
        for l in &mut self.layers {
            l.totals = StepTotals::default();
        }
    }

    fn layer_mut(&mut self, op: &'static str, layer: usize) -> Result<&mut Layer> {
        let n = self.layers.len();
        self.layers
            .get_mut(layer)
            .ok_or_else(|| Error::invalid(op, "layer", format!("{layer} >= n_layers {n}")))
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

impl DecodeAttention for EntmaxKvAttention {
    fn prefill(&mut self, layer: usize, k: &[f32], v: &[f32], t: usize) -> Result<()> {
        const OP: &str = "EntmaxKvAttention::prefill";
        let (hk, d) = (self.shape.n_kv_heads, self.shape.head_dim);
        let max = self.opts.max_tokens;
        check_len(OP, "k", k.len(), hk * t * d)?;
        check_len(OP, "v", v.len(), hk * t * d)?;
        if t > max {
            return Err(Error::invalid(
                OP,
                "t",
                format!("{t} tokens > max_tokens {max}"),
            ));
        }
        self.layer_mut(OP, layer)?.start(OP, k, v, t, max)
    }

    fn step(
        &mut self,
        layer: usize,
        q: &[f32],
        k_new: &[f32],
        v_new: &[f32],
        out: &mut [f32],
    ) -> Result<()> {
        const OP: &str = "EntmaxKvAttention::step";
        let (h, hk, d) = (
            self.shape.n_heads,
            self.shape.n_kv_heads,
            self.shape.head_dim,
        );
        check_len(OP, "q", q.len(), h * d)?;
        check_len(OP, "k_new", k_new.len(), hk * d)?;
        check_len(OP, "v_new", v_new.len(), hk * d)?;
        check_len(OP, "out", out.len(), h * d)?;
        let max = self.opts.max_tokens;
        let elem = self.opts.kv_dtype.size() as u64;
        let n = self.layers.len();
        let Some(l) = self.layers.get_mut(layer) else {
            return Err(Error::invalid(
                OP,
                "layer",
                format!("{layer} >= n_layers {n}"),
            ));
        };
        let len = l.len();
        if len + 1 > max {
            return Err(Error::invalid(
                OP,
                "step",
                format!("cache would exceed max_tokens {max}"),
            ));
        }
        if matches!(l.engine, Engine::Cuda { dev: None, .. }) {
            // No prefill: an empty sequence, uploaded and planned now.
            l.start(OP, &[], &[], 0, max)?;
        }
        let rep: &StepReport = match &mut l.engine {
            Engine::Cpu(decoder) => {
                let s = match l.seq {
                    Some(s) => s,
                    None => {
                        let s = l.cache.add_sequence();
                        l.seq = Some(s);
                        s
                    }
                };
                l.cache
                    .append(s, k_new, v_new, ChunkLayout::TokenMajor)
                    .map_err(|e| ek(OP, e))?;
                decoder
                    .step(&l.cache, &[s], q, out)
                    .map_err(|e| ek(OP, e))?
            }
            Engine::Cuda { dev: None, .. } => {
                return Err(Error::invalid(
                    OP,
                    "layer",
                    "the device cache was not planned",
                ));
            }
            Engine::Cuda { dev: Some(g), .. } => {
                g.cache
                    .append(&[g.seq], k_new, v_new)
                    .map_err(|e| ek(OP, e))?;
                // Plan once, run many: the first step captures the graph, later ones replay.
                if !g.captured {
                    g.decoder.capture(&g.cache).map_err(|e| ek(OP, e))?;
                    g.captured = true;
                }
                g.decoder.step(&g.cache, q, out).map_err(|e| ek(OP, e))?
            }
        };
        let t = &mut l.totals;
        t.steps += 1;
        t.bytes += rep.bytes.total();
        t.dense_bytes += 2 * (len as u64 + 1) * hk as u64 * d as u64 * elem;
        for r in &rep.heads {
            t.pages_kept += r.pages_kept as u64;
            t.pages_total += r.pages_total as u64;
            t.heads += 1;
            t.heads_certified += (r.certified == Some(true)) as u64;
        }
        self.last.clear();
        self.last.extend_from_slice(&rep.heads);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::DenseAttention;
    use entmaxkv::selection::topk::Budget;

    fn shape() -> AttentionShape {
        AttentionShape {
            n_layers: 2,
            n_heads: 6,
            n_kv_heads: 2,
            head_dim: 16,
            scale: 0.25,
        }
    }

    /// Deterministic pseudo-random values in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Runs the same prefill + steps through both backends; returns the max abs difference.
    fn max_diff(method: Method, prompt: usize, steps: usize) -> f32 {
        let s = shape();
        let (h, hk, d) = (s.n_heads, s.n_kv_heads, s.head_dim);
        let mut dense = DenseAttention::new(s).unwrap();
        let cfg = DecodeConfig::new(AttentionParams::new(h, 1.0), method);
        let mut ek =
            EntmaxKvAttention::new(s, cfg, EntmaxKvOptions::new(DType::F32, prompt + steps))
                .unwrap();
        let mut worst = 0f32;
        for layer in 0..s.n_layers {
            let k = noise(10 + layer as u64, hk * prompt * d);
            let v = noise(20 + layer as u64, hk * prompt * d);
            dense.prefill(layer, &k, &v, prompt).unwrap();
            ek.prefill(layer, &k, &v, prompt).unwrap();
            for st in 0..steps {
                let seed = 1000 * layer as u64 + st as u64;
                // Queries with a large norm make the softmax peaked, like real attention.
                let q: Vec<f32> = noise(seed, h * d).iter().map(|x| 4.0 * x).collect();
                let kn = noise(seed + 7, hk * d);
                let vn = noise(seed + 9, hk * d);
                let (mut o1, mut o2) = (vec![0f32; h * d], vec![0f32; h * d]);
                dense.step(layer, &q, &kn, &vn, &mut o1).unwrap();
                ek.step(layer, &q, &kn, &vn, &mut o2).unwrap();
                for (a, b) in o1.iter().zip(&o2) {
                    worst = worst.max((a - b).abs());
                }
            }
            assert_eq!(ek.len(layer), prompt + steps);
        }
        worst
    }

    #[test]
    fn dense_method_matches_dense_attention() {
        let w = max_diff(Method::Dense, 77, 5);
        assert!(w < 1e-5, "max |diff| {w}");
    }

    #[test]
    fn full_budget_topk_matches_dense_attention() {
        let w = max_diff(Method::TopK(Budget::Fraction(1.0)), 100, 4);
        assert!(w < 1e-5, "max |diff| {w}");
    }

    #[test]
    fn small_budget_topk_differs_and_reports_pages() {
        let s = shape();
        let cfg = DecodeConfig::new(
            AttentionParams::new(s.n_heads, 1.0),
            Method::TopK(Budget::Fraction(0.125)),
        );
        let mut ek = EntmaxKvAttention::new(s, cfg, EntmaxKvOptions::new(DType::F16, 300)).unwrap();
        let (hk, d) = (s.n_kv_heads, s.head_dim);
        let k = noise(1, hk * 256 * d);
        ek.prefill(0, &k, &k, 256).unwrap();
        let mut out = vec![0f32; s.n_heads * d];
        ek.step(
            0,
            &noise(2, s.n_heads * d),
            &noise(3, hk * d),
            &noise(4, hk * d),
            &mut out,
        )
        .unwrap();
        let t = ek.layer_totals(0).unwrap();
        assert_eq!(t.steps, 1);
        // 17 pages: 16 closed, 2 kept (1/8) plus the open page.
        assert_eq!(t.pages_total, 17 * s.n_heads as u64);
        assert_eq!(t.pages_kept, 3 * s.n_heads as u64);
        assert!(t.bytes < t.dense_bytes);
        assert!(ek.prefill(0, &k, &k, 301).is_err());
    }
}
