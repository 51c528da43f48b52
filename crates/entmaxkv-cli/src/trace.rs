//! `entmaxkv trace capture` and `entmaxkv trace eval`: real attention from SmolLM2.
//!
//! `capture` runs a teacher-forced prefill over a long text and stores post-RoPE Q at chosen
//! decode positions and K/V of every token per layer (safetensors + JSON sidecar).
//!
//! `eval` loads a trace's K/V into a [`PagedKvCache`] per layer, appending tokens up to each
//! stored query position p (the query is the last cached token, so the cache holds 0..=p),
//! and runs every method × α × budget with the stored query through [`Decoder::step`].
//! Each (layer, head, query) is compared with the f64 dense oracle over the same cache:
//! output relative error and cosine, recall of the dense attention mass on the tokens the
//! selector kept, pages kept, and — with a token-level certificate run beside it — whether
//! the kept pages provably hold the dense output (α > 1) or how much mass they can miss
//! (α = 1). A sink diagnosis looks at page 0 under the Gaussian model.

use crate::meta::{provenance, Provenance};
use crate::methods::MethodSpec;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use entmaxkv::attention::cpu::{PageRef, TauMode};
use entmaxkv::attention::oracle::{oracle_decode, oracle_scores};
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::certificate::CertificateLevel;
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::metrics::{compare, summarize, Summary};
use entmaxkv::selection::gaussian::{self, model as gmodel, Criterion, GaussianOpts};
use entmaxkv::selection::{topk, GqaMode, SelectScratch, Selection, SelectionContext};
use entmaxkv::tau::{entmax, page_max_quantile_z};
use entmaxkv::DType;
use entmaxkv_models::{
    capture_traces, first_tokens, DataFiles, Model, Trace, TraceDtype, TraceMeta, TraceSpec,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub cmd: TraceCmd,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TraceCmd {
    /// Teacher-forced prefill over a text; store post-RoPE Q at chosen positions and K/V per
    /// layer to safetensors + JSON sidecar.
    Capture(CaptureArgs),
    /// Every method × α × budget on stored traces against the f64 dense oracle.
    Eval(TraceEvalArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CaptureArgs {
    /// `kjv`, `jargon` (from the data directory) or a path to a text file.
    #[arg(long, default_value = "kjv")]
    pub text: String,
    /// Tokens from the start of the text.
    #[arg(long, default_value_t = 8192)]
    pub tokens: usize,
    /// `all` or a comma list of layers.
    #[arg(long, default_value = "all")]
    pub layers: String,
    /// Store the queries of the last N positions.
    #[arg(long, default_value_t = 4)]
    pub last: usize,
    /// f16 or f32.
    #[arg(long, default_value = "f16")]
    pub dtype: String,
    /// Prepend BOS (SmolLM2 does not by default).
    #[arg(long)]
    pub bos: bool,
    /// Output .safetensors (default `<data>/traces/<text>-<tokens>.safetensors`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Data directory (default `$ENTMAXKV_DATA` or `<repo>/.data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct TraceEvalArgs {
    /// Trace files (.safetensors) written by `trace capture`.
    #[arg(required = true)]
    pub traces: Vec<PathBuf>,
    /// Methods (see `entmaxkv bench --help`); `topk`/`topk-softmax` run once per budget.
    /// Softmax-only methods run at α = 1 only; `certified` at α > 1 only.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dense-entmax,topk,gaussian-exact,gaussian-corrected,gaussian-robust,gaussian-robust-corrected,certified"
    )]
    pub methods: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "1,1.5,2")]
    pub alpha: Vec<f64>,
    /// Top-k budgets (fractions of the closed pages).
    #[arg(long, value_delimiter = ',', default_value = "0.0625,0.125,0.25")]
    pub budgets: Vec<f64>,
    /// Layers to evaluate (default: every layer in the trace).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,
    /// K/V dtype of the cache.
    #[arg(long, default_value = "f16")]
    pub kv_dtype: DType,
    #[arg(long, default_value_t = 16)]
    pub page_size: usize,
    /// Skip the token-level certificate run beside each exact-τ method.
    #[arg(long)]
    pub no_certificate: bool,
    /// Summary JSON (per method/α/budget overall and per layer, plus the sink diagnosis).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Every (layer, head, query) case as JSON lines.
    #[arg(long)]
    pub cases: Option<PathBuf>,
    /// Every sink-diagnosis case (page 0 under the Gaussian model) as JSON lines.
    #[arg(long)]
    pub sink_cases: Option<PathBuf>,
    /// Plot of error vs pages kept (.svg or .png), one panel per α.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

pub fn run(a: &TraceArgs) -> Result<()> {
    match &a.cmd {
        TraceCmd::Capture(c) => capture(c),
        TraceCmd::Eval(e) => {
            let r = eval(e)?;
            print_tables(&r);
            if let Some(p) = &e.json {
                std::fs::write(p, serde_json::to_string_pretty(&r)?)?;
                eprintln!("wrote {}", p.display());
            }
            if let Some(p) = &e.plot {
                plot(&r, p)?;
                eprintln!("wrote {}", p.display());
            }
            Ok(())
        }
    }
}

pub fn data_files(dir: &Option<PathBuf>) -> DataFiles {
    match dir {
        Some(d) => DataFiles::in_dir(d),
        None => DataFiles::default_location(),
    }
}

pub fn text_path(files: &DataFiles, text: &str) -> PathBuf {
    match text {
        "kjv" => files.kjv.clone(),
        "jargon" => files.jargon.clone(),
        p => PathBuf::from(p),
    }
}

fn capture(a: &CaptureArgs) -> Result<()> {
    let files = data_files(&a.data);
    let model = Model::load(&files.gguf).with_context(|| {
        format!(
            "loading {} (run `entmaxkv fetch` first)",
            files.gguf.display()
        )
    })?;
    let layers: Vec<usize> = if a.layers == "all" {
        (0..model.config().n_layers).collect()
    } else {
        a.layers
            .split(',')
            .map(|x| x.trim().parse().context("bad --layers"))
            .collect::<Result<_>>()?
    };
    let dtype = match a.dtype.as_str() {
        "f16" => TraceDtype::F16,
        "f32" => TraceDtype::F32,
        o => bail!("--dtype {o}: expected f16 or f32"),
    };
    let path = text_path(&files, &a.text);
    let text = DataFiles::read_text(&path)?;
    let tokens = first_tokens(&model, &text, a.tokens, a.bos)?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "text".into());
    let out = a.out.clone().unwrap_or_else(|| {
        files
            .dir
            .join("traces")
            .join(format!("{name}-{}.safetensors", a.tokens))
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let spec = TraceSpec {
        layers,
        positions: TraceSpec::last_positions(tokens.len(), a.last),
        dtype,
        source: format!(
            "{} tokens 0..{}",
            path.file_name().unwrap_or_default().to_string_lossy(),
            a.tokens
        ),
        bos: a.bos,
    };
    let t0 = Instant::now();
    let meta = capture_traces(&model, &tokens, &spec, &out)?;
    eprintln!(
        "wrote {} ({} layers, {} tokens, positions {:?}) in {:.1} s",
        out.display(),
        meta.layers.len(),
        meta.n_tokens,
        meta.positions,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One (trace, layer, head, query, method, α, budget) case.
#[derive(Debug, Clone, Serialize)]
pub struct Case {
    pub trace: String,
    pub layer: usize,
    pub head: usize,
    pub pos: usize,
    pub method: String,
    pub alpha: f64,
    pub budget: Option<f64>,
    pub rel: f64,
    pub cosine: f64,
    /// Dense attention mass on the kept tokens (None: `certified`, exact by construction).
    pub recall: Option<f64>,
    pub pages_kept: u32,
    pub pages_total: u32,
    /// Token-level certificate of the kept pages (exact-τ methods; `certified`: always).
    pub certified: Option<bool>,
    /// Proven bound of the dense mass on the tokens not read (certificate runs).
    pub mass_bound: Option<f64>,
    /// Bytes the step read (without the certificate) and a dense f16/f32 K+V read.
    pub bytes: u64,
    pub dense_bytes: u64,
    /// Whether page 0 (the attention sink) was kept.
    pub page0_kept: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summ {
    pub n: usize,
    pub rel: Summary,
    pub cosine: Summary,
    pub recall: Option<Summary>,
    /// Fraction of pages kept.
    pub pages_kept: Summary,
    /// Fraction of cases with cosine ≥ 0.999.
    pub cos_ge_0999: f64,
    /// Fraction of cases the certificate proved equal to dense (None: no certificate ran).
    pub certified_frac: Option<f64>,
    pub mass_bound: Option<Summary>,
    /// Mean bytes per step relative to a dense K+V read.
    pub bytes_frac: f64,
    /// Mean bytes per (head, step) read.
    pub bytes_per_head_step: f64,
    /// Fraction of cases that dropped page 0.
    pub page0_dropped: f64,
}

fn summ(cases: &[&Case]) -> Summ {
    let f = |g: &dyn Fn(&Case) -> f64| summarize(&cases.iter().map(|c| g(c)).collect::<Vec<_>>());
    let n = cases.len().max(1) as f64;
    let recall: Vec<f64> = cases.iter().filter_map(|c| c.recall).collect();
    let cert: Vec<bool> = cases.iter().filter_map(|c| c.certified).collect();
    let mb: Vec<f64> = cases.iter().filter_map(|c| c.mass_bound).collect();
    Summ {
        n: cases.len(),
        rel: f(&|c| c.rel),
        cosine: f(&|c| c.cosine),
        recall: (!recall.is_empty()).then(|| summarize(&recall)),
        pages_kept: f(&|c| c.pages_kept as f64 / c.pages_total.max(1) as f64),
        cos_ge_0999: cases.iter().filter(|c| c.cosine >= 0.999).count() as f64 / n,
        certified_frac: (!cert.is_empty())
            .then(|| cert.iter().filter(|&&b| b).count() as f64 / cert.len() as f64),
        mass_bound: (!mb.is_empty()).then(|| summarize(&mb)),
        bytes_frac: cases.iter().map(|c| c.bytes as f64).sum::<f64>()
            / cases
                .iter()
                .map(|c| c.dense_bytes as f64)
                .sum::<f64>()
                .max(1.0),
        bytes_per_head_step: cases.iter().map(|c| c.bytes as f64).sum::<f64>() / n,
        page0_dropped: cases.iter().filter(|c| !c.page0_kept).count() as f64 / n,
    }
}

/// Page-0 (sink) diagnosis of the Gaussian model for one (layer, head, query, α).
#[derive(Debug, Clone, Serialize)]
pub struct SinkCase {
    pub trace: String,
    pub layer: usize,
    pub head: usize,
    pub pos: usize,
    pub alpha: f64,
    /// Dense attention mass on page 0.
    pub page0_mass: f64,
    pub kept_original: bool,
    pub kept_robust: bool,
    /// Score units (scale applied): the model's page mean and diagonal std.
    pub mu: f64,
    pub sd_diag: f64,
    /// The std of the 16 actual scores q·k in the page (full covariance) and their max.
    pub sd_true: f64,
    pub mean_true: f64,
    pub max_true: f64,
    /// The original's likely max `μ + z_page·σ_diag` and z_page.
    pub z_page: f64,
    pub likely_max: f64,
    /// `(max_true − μ) / σ_diag`: the z the diagonal model would have needed.
    pub z_needed: f64,
    /// τ̂ and the true τ in score units (τ / (α − 1)).
    pub tau_hat: f64,
    pub tau_true: f64,
    /// Token of page 0 with the largest score (0-based position).
    pub argmax_token: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Group {
    pub trace: String,
    pub method: String,
    pub alpha: f64,
    pub budget: Option<f64>,
    /// None: all layers.
    pub layer: Option<usize>,
    pub summary: Summ,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkSummary {
    pub trace: String,
    pub alpha: f64,
    pub layer: Option<usize>,
    pub n: usize,
    pub dropped_original: usize,
    pub dropped_robust: usize,
    /// Over the cases the original dropped: page-0 mass, sd_true / sd_diag, z_needed,
    /// (max_true − likely_max) / sd_diag, and whether max_true is above τ̂.
    pub dropped_mass: Summary,
    pub dropped_sd_ratio: Summary,
    pub dropped_z_needed: Summary,
    pub dropped_max_above_tau_hat: f64,
    pub dropped_argmax_token0: f64,
    /// The same ratios over every case.
    pub all_sd_ratio: Summary,
    pub all_z_needed: Summary,
    /// z_page of the original's likely max (median over cases).
    pub z_page: f64,
    /// Dropped cases where page 0 carries more than half the dense mass ("heavy"), and over
    /// them: sd_true / sd_diag, z_needed, the sink's z within the page's own score std
    /// `(max_true − mean) / sd_true` (≤ √(n−1) = 3.87 for 16 tokens), `(max_true −
    /// likely_max) / sd_diag`, and the fraction with max_true above τ̂.
    pub heavy_dropped: usize,
    pub heavy_sd_ratio: Summary,
    pub heavy_z_needed: Summary,
    pub heavy_z_true: Summary,
    pub heavy_gap: Summary,
    pub heavy_max_above_tau_hat: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceEvalResult {
    pub provenance: Provenance,
    pub command: String,
    pub traces: Vec<TraceMeta>,
    pub kv_dtype: DType,
    pub page_size: usize,
    pub groups: Vec<Group>,
    pub sink: Vec<SinkSummary>,
    pub seconds: f64,
}

/// A method instance of the sweep.
#[derive(Debug, Clone)]
struct Inst {
    spec: MethodSpec,
    alpha: f64,
}

fn instances(a: &TraceEvalArgs) -> Result<Vec<Inst>> {
    let mut v = Vec::new();
    for &alpha in &a.alpha {
        for m in &a.methods {
            let budgets: Vec<f64> = if m.starts_with("topk") && !m.ends_with("-full") {
                a.budgets.clone()
            } else {
                vec![0.125]
            };
            for b in budgets {
                let spec = MethodSpec::parse(m, b)?;
                if (spec.softmax && alpha != 1.0) || !spec.supports_alpha(alpha) {
                    continue;
                }
                v.push(Inst { spec, alpha });
            }
        }
    }
    Ok(v)
}

fn label(i: &Inst) -> String {
    match i.spec.budget {
        Some(b) if b < 1.0 => format!("{}@{b}", i.spec.name),
        _ => i.spec.name.clone(),
    }
}

/// Appends trace tokens `from..to` of every kv head (head-major chunk).
fn append_range(
    cache: &mut PagedKvCache,
    seq: SeqId,
    meta: &TraceMeta,
    k: &[f32],
    v: &[f32],
    from: usize,
    to: usize,
) -> Result<()> {
    let (hk, t, d) = (meta.n_kv_heads, meta.n_tokens, meta.head_dim);
    let n = to - from;
    let (mut kc, mut vc) = (
        Vec::with_capacity(hk * n * d),
        Vec::with_capacity(hk * n * d),
    );
    for h in 0..hk {
        kc.extend_from_slice(&k[(h * t + from) * d..(h * t + to) * d]);
        vc.extend_from_slice(&v[(h * t + from) * d..(h * t + to) * d]);
    }
    cache.append(seq, &kc, &vc, ChunkLayout::HeadMajor)?;
    Ok(())
}

/// The pages a selector keeps for one query head (per-head selection, as the decoder's).
fn selected_pages(
    cache: &PagedKvCache,
    seq: SeqId,
    kvh: usize,
    q_scaled: &[f32],
    alpha: f64,
    method: &Method,
    pinned: (usize, usize),
    scoring: topk::TopkScoring,
    scratch: &mut SelectScratch,
) -> Result<Option<Vec<PageRef>>> {
    let view = cache.seq(seq)?;
    let slopes = [0f32];
    let ctx = SelectionContext {
        cache,
        seq: view,
        kv_head: kvh,
        q_scaled,
        slopes: &slopes,
        alpha,
    };
    let mut sel = Selection::with_capacity(view.pages.len(), 1);
    match method {
        Method::Dense => {
            return Ok(Some(
                (0..view.pages.len()).map(|i| ctx.page_ref(i)).collect(),
            ));
        }
        Method::TopK(b) => {
            topk::select_scored(&ctx, *b, pinned.0, pinned.1, scoring, scratch, &mut sel)?
        }
        Method::Gaussian(o) => gaussian::select(&ctx, o, scratch, &mut sel)?,
        Method::Certified => return Ok(None),
    }
    Ok(Some(sel.pages))
}

pub fn eval(a: &TraceEvalArgs) -> Result<TraceEvalResult> {
    let t_start = Instant::now();
    let insts = instances(a)?;
    let mut cases: Vec<Case> = Vec::new();
    let mut sinks: Vec<SinkCase> = Vec::new();
    let mut metas = Vec::new();
    let mut cases_out = match &a.cases {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    for path in &a.traces {
        let tr = Trace::load(path).with_context(|| format!("loading {}", path.display()))?;
        let meta = tr.meta.clone();
        let tname = path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let (h, hk, d, ps) = (meta.n_heads, meta.n_kv_heads, meta.head_dim, a.page_size);
        let g = h / hk;
        let scale = meta.scale;
        let mut positions: Vec<(usize, usize)> =
            meta.positions.iter().copied().enumerate().collect();
        positions.sort_by_key(|&(_, p)| p);
        let layers: Vec<usize> = match &a.layers {
            Some(l) => l.clone(),
            None => meta.layers.clone(),
        };
        for &layer in &layers {
            let lt = tr
                .layer(layer)
                .with_context(|| format!("layer {layer} is not in {}", path.display()))?;
            let t_layer = Instant::now();
            let cfg = CacheConfig::new(hk, d, meta.n_tokens.div_ceil(ps))
                .with_page_size(ps)
                .with_kv_dtype(a.kv_dtype)
                .with_stats_dtype(StatsDType::Kv);
            let mut cache = PagedKvCache::new(cfg)?;
            let seq = cache.add_sequence();
            let mut cached = 0usize;
            let n_cases_before = cases.len();
            for &(qi, pos) in &positions {
                append_range(&mut cache, seq, &meta, &lt.k, &lt.v, cached, pos + 1)?;
                cached = pos + 1;
                let q = &lt.q[qi * h * d..(qi + 1) * h * d];
                let n_pages = cache.seq(seq)?.pages.len();
                let dense_bytes = 2 * cached as u64 * d as u64 * a.kv_dtype.size() as u64;
                for &alpha in &a.alpha {
                    let params = AttentionParams::new(h, alpha).with_scale(scale);
                    let oracle = oracle_decode(&cache, &[seq], q, &params)?;
                    // Dense weights per head (for recall and the sink diagnosis).
                    let mut weights = Vec::with_capacity(h);
                    let mut scores_h = Vec::with_capacity(h);
                    for hh in 0..h {
                        let s = oracle_scores(&cache, seq, hh, &q[hh * d..(hh + 1) * d], &params)?;
                        weights.push(entmax(&s, alpha)?);
                        scores_h.push(s);
                    }
                    for inst in insts.iter().filter(|i| i.alpha == alpha) {
                        let cfg = inst.spec.config(alpha, h, GqaMode::PerHead, None);
                        let cfg = DecodeConfig {
                            attention: AttentionParams {
                                scale: Some(scale),
                                ..cfg.attention
                            },
                            ..cfg
                        };
                        let mut out = vec![0f32; h * d];
                        let mut dec = Decoder::new(&cache, 1, cached, cfg.clone())?;
                        let rep = dec.step(&cache, &[seq], q, &mut out)?.clone();
                        let per_head_bytes = rep.bytes.total() / h as u64;
                        // Certificate beside exact-τ sparse methods.
                        let cert = if !a.no_certificate
                            && cfg.tau_mode == TauMode::Exact
                            && !matches!(cfg.method, Method::Dense | Method::Certified)
                        {
                            let c2 = cfg.clone().with_certificate(CertificateLevel::Token);
                            let mut dec2 = Decoder::new(&cache, 1, cached, c2)?;
                            let mut o2 = vec![0f32; h * d];
                            Some(dec2.step(&cache, &[seq], q, &mut o2)?.heads.clone())
                        } else {
                            None
                        };
                        let mut scratch = SelectScratch::new(n_pages, d);
                        for hh in 0..h {
                            let m = compare(
                                &out[hh * d..(hh + 1) * d],
                                &oracle.out[hh * d..(hh + 1) * d],
                            )?;
                            let qs: Vec<f32> =
                                q[hh * d..(hh + 1) * d].iter().map(|x| x * scale).collect();
                            let pages = selected_pages(
                                &cache,
                                seq,
                                hh / g,
                                &qs,
                                alpha,
                                &cfg.method,
                                (cfg.sink_pages, cfg.recent_pages),
                                cfg.topk_scoring,
                                &mut scratch,
                            )?;
                            let hr = rep.heads[hh];
                            if let Some(p) = &pages {
                                if p.len() as u32 != hr.pages_kept {
                                    bail!(
                                        "selection replay disagrees with the decoder: {} vs {} pages ({}, layer {layer}, head {hh})",
                                        p.len(),
                                        hr.pages_kept,
                                        label(inst)
                                    );
                                }
                            }
                            let recall = pages.as_ref().map(|p| {
                                p.iter()
                                    .map(|r| {
                                        weights[hh].p[r.start as usize..(r.start + r.len) as usize]
                                            .iter()
                                            .sum::<f64>()
                                    })
                                    .sum::<f64>()
                            });
                            let page0_kept = match &pages {
                                Some(p) => p.first().is_some_and(|r| r.start == 0),
                                None => true,
                            };
                            let (certified, mass_bound) = match (&cert, &cfg.method) {
                                (_, Method::Certified) => (Some(true), Some(0.0)),
                                (Some(c), _) => (c[hh].certified, Some(c[hh].mass_bound)),
                                (None, Method::Dense) => (Some(true), Some(0.0)),
                                _ => (None, None),
                            };
                            let case = Case {
                                trace: tname.clone(),
                                layer,
                                head: hh,
                                pos,
                                method: label(inst),
                                alpha,
                                budget: inst.spec.budget,
                                rel: m.rel,
                                cosine: m.cosine,
                                recall,
                                pages_kept: hr.pages_kept,
                                pages_total: hr.pages_total,
                                certified,
                                mass_bound,
                                bytes: per_head_bytes,
                                dense_bytes,
                                page0_kept,
                            };
                            if let Some(w) = cases_out.as_mut() {
                                use std::io::Write;
                                writeln!(w, "{}", serde_json::to_string(&case)?)?;
                            }
                            cases.push(case);
                        }
                    }
                    if alpha > 1.0 {
                        for hh in 0..h {
                            sinks.push(sink_case(
                                &cache,
                                seq,
                                &tname,
                                layer,
                                hh,
                                hh / g,
                                pos,
                                alpha,
                                &q[hh * d..(hh + 1) * d],
                                scale,
                                &scores_h[hh],
                                &weights[hh],
                            )?);
                        }
                    }
                }
            }
            eprintln!(
                "{tname} layer {layer}: {} cases in {:.1} s",
                cases.len() - n_cases_before,
                t_layer.elapsed().as_secs_f64()
            );
        }
        metas.push(meta);
    }
    // Groups: overall and per layer.
    let mut keys: BTreeMap<(String, String, u64), Vec<usize>> = BTreeMap::new();
    let mut order: Vec<(String, String, u64)> = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let k = (c.trace.clone(), c.method.clone(), c.alpha.to_bits());
        if !keys.contains_key(&k) {
            order.push(k.clone());
        }
        keys.entry(k).or_default().push(i);
    }
    let mut groups = Vec::new();
    for k in &order {
        let idx = &keys[k];
        let all: Vec<&Case> = idx.iter().map(|&i| &cases[i]).collect();
        let first = all[0];
        let mk = |layer: Option<usize>, cs: &[&Case]| Group {
            trace: first.trace.clone(),
            method: first.method.clone(),
            alpha: first.alpha,
            budget: first.budget,
            layer,
            summary: summ(cs),
        };
        groups.push(mk(None, &all));
        let mut by_layer: BTreeMap<usize, Vec<&Case>> = BTreeMap::new();
        for c in &all {
            by_layer.entry(c.layer).or_default().push(c);
        }
        for (l, cs) in by_layer {
            groups.push(mk(Some(l), &cs));
        }
    }
    if let Some(p) = &a.sink_cases {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(std::fs::File::create(p)?);
        for s in &sinks {
            writeln!(w, "{}", serde_json::to_string(s)?)?;
        }
    }
    let mut sink = Vec::new();
    let mut skeys: BTreeMap<(String, u64), Vec<&SinkCase>> = BTreeMap::new();
    for s in &sinks {
        skeys
            .entry((s.trace.clone(), s.alpha.to_bits()))
            .or_default()
            .push(s);
    }
    for ((trace, ab), v) in &skeys {
        sink.push(sink_summary(trace, f64::from_bits(*ab), None, v));
        let mut by_layer: BTreeMap<usize, Vec<&SinkCase>> = BTreeMap::new();
        for s in v {
            by_layer.entry(s.layer).or_default().push(s);
        }
        for (l, cs) in by_layer {
            sink.push(sink_summary(trace, f64::from_bits(*ab), Some(l), &cs));
        }
    }
    Ok(TraceEvalResult {
        provenance: provenance(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        traces: metas,
        kv_dtype: a.kv_dtype,
        page_size: a.page_size,
        groups,
        sink,
        seconds: t_start.elapsed().as_secs_f64(),
    })
}

fn sink_summary(trace: &str, alpha: f64, layer: Option<usize>, v: &[&SinkCase]) -> SinkSummary {
    let dropped: Vec<&&SinkCase> = v.iter().filter(|s| !s.kept_original).collect();
    let sd = |s: &SinkCase| s.sd_true / s.sd_diag.max(1e-30);
    let heavy: Vec<&&SinkCase> = dropped
        .iter()
        .copied()
        .filter(|s| s.page0_mass > 0.5)
        .collect();
    let nd = dropped.len().max(1) as f64;
    SinkSummary {
        trace: trace.to_string(),
        alpha,
        layer,
        n: v.len(),
        dropped_original: dropped.len(),
        dropped_robust: v.iter().filter(|s| !s.kept_robust).count(),
        dropped_mass: summarize(&dropped.iter().map(|s| s.page0_mass).collect::<Vec<_>>()),
        dropped_sd_ratio: summarize(&dropped.iter().map(|s| sd(s)).collect::<Vec<_>>()),
        dropped_z_needed: summarize(&dropped.iter().map(|s| s.z_needed).collect::<Vec<_>>()),
        dropped_max_above_tau_hat: dropped.iter().filter(|s| s.max_true > s.tau_hat).count() as f64
            / nd,
        dropped_argmax_token0: dropped.iter().filter(|s| s.argmax_token == 0).count() as f64 / nd,
        all_sd_ratio: summarize(&v.iter().map(|s| sd(s)).collect::<Vec<_>>()),
        all_z_needed: summarize(&v.iter().map(|s| s.z_needed).collect::<Vec<_>>()),
        z_page: summarize(&v.iter().map(|s| s.z_page).collect::<Vec<_>>()).median,
        heavy_dropped: heavy.len(),
        heavy_sd_ratio: summarize(&heavy.iter().map(|s| sd(s)).collect::<Vec<_>>()),
        heavy_z_needed: summarize(&heavy.iter().map(|s| s.z_needed).collect::<Vec<_>>()),
        heavy_z_true: summarize(
            &heavy
                .iter()
                .map(|s| (s.max_true - s.mean_true) / s.sd_true.max(1e-30))
                .collect::<Vec<_>>(),
        ),
        heavy_gap: summarize(
            &heavy
                .iter()
                .map(|s| (s.max_true - s.likely_max) / s.sd_diag.max(1e-30))
                .collect::<Vec<_>>(),
        ),
        heavy_max_above_tau_hat: heavy.iter().filter(|s| s.max_true > s.tau_hat).count() as f64
            / heavy.len().max(1) as f64,
    }
}

#[allow(clippy::too_many_arguments)]
fn sink_case(
    cache: &PagedKvCache,
    seq: SeqId,
    trace: &str,
    layer: usize,
    head: usize,
    kvh: usize,
    pos: usize,
    alpha: f64,
    q: &[f32],
    scale: f32,
    scores: &[f64],
    w: &entmaxkv::tau::Entmax,
) -> Result<SinkCase> {
    let ps = cache.page_size();
    let d = cache.head_dim();
    let qs: Vec<f32> = q.iter().map(|x| x * scale).collect();
    let view = cache.seq(seq)?;
    let slopes = [0f32];
    let ctx = SelectionContext {
        cache,
        seq: view,
        kv_head: kvh,
        q_scaled: &qs,
        slopes: &slopes,
        alpha,
    };
    let mut scratch = SelectScratch::new(view.pages.len(), d);
    let closed = ctx.closed_pages();
    scratch.reserve_pages(1, closed);
    gmodel::page_moments(&ctx, &mut scratch);
    let (mu, sd_diag) = (scratch.mu[0], scratch.sd[0]);
    let opts = GaussianOpts::default();
    let hm = gmodel::head_model(&ctx, &opts, &mut scratch, 0)?;
    // The original's automatic max quantile (see GaussianOpts::max_quantile).
    let qmax = if hm.sigma_g < 1.5 { 0.99 } else { 0.995 };
    let z_page = page_max_quantile_z(qmax, ps)?;
    let p0 = &scores[..ps.min(scores.len())];
    let n = p0.len() as f64;
    let mean = p0.iter().sum::<f64>() / n;
    let sd_true = (p0.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt();
    let (argmax_token, max_true) =
        p0.iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |b, (i, x)| if x > b.1 { (i, x) } else { b },
            );
    let a = alpha - 1.0;
    let mut sel_scratch = SelectScratch::new(view.pages.len(), d);
    let kept = |crit: Criterion, sc: &mut SelectScratch| -> Result<bool> {
        let o = GaussianOpts::default().with_criterion(crit);
        let pages = selected_pages(
            cache,
            seq,
            kvh,
            &qs,
            alpha,
            &Method::Gaussian(o),
            (0, 0),
            topk::TopkScoring::Box,
            sc,
        )?;
        Ok(pages.is_some_and(|p| p.first().is_some_and(|r| r.start == 0)))
    };
    Ok(SinkCase {
        trace: trace.to_string(),
        layer,
        head,
        pos,
        alpha,
        page0_mass: w.p[..p0.len()].iter().sum(),
        kept_original: kept(Criterion::Original, &mut sel_scratch)?,
        kept_robust: kept(Criterion::Robust, &mut sel_scratch)?,
        mu,
        sd_diag,
        sd_true,
        mean_true: mean,
        max_true,
        z_page,
        likely_max: mu + z_page * sd_diag,
        z_needed: (max_true - mu) / sd_diag.max(1e-30),
        tau_hat: hm.tau_hat / a,
        tau_true: w.tau / a,
        argmax_token,
    })
}

pub fn print_tables(r: &TraceEvalResult) {
    println!(
        "{:<10} {:<28} {:>4} {:>5} | {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>8} {:>8} | {:>6} {:>6} | {:>6} {:>6} {:>6}",
        "trace", "method", "α", "n", "rel med", "rel p90", "cos med", "cos p10", "cos min", "rec p10",
        "rec min", "pages", "p max", "≥.999", "cert", "bytes"
    );
    for g in r.groups.iter().filter(|g| g.layer.is_none()) {
        let s = &g.summary;
        println!(
            "{:<10} {:<28} {:>4} {:>5} | {:>9.2e} {:>9.2e} | {:>9.6} {:>9.6} {:>9.5} | {:>8} {:>8} | {:>5.1}% {:>5.1}% | {:>5.1}% {:>6} {:>5.1}%",
            g.trace,
            g.method,
            g.alpha,
            s.n,
            s.rel.median,
            s.rel.p90,
            s.cosine.median,
            s.cosine.p10,
            s.cosine.min,
            s.recall.map_or("-".into(), |x| format!("{:.5}", x.p10)),
            s.recall.map_or("-".into(), |x| format!("{:.4}", x.min)),
            100.0 * s.pages_kept.mean,
            100.0 * s.pages_kept.max,
            100.0 * s.cos_ge_0999,
            s.certified_frac
                .map_or("-".into(), |x| format!("{:.1}%", 100.0 * x)),
            100.0 * s.bytes_frac,
        );
    }
    println!();
    println!("sink page (page 0) under the original Gaussian criterion:");
    println!(
        "{:<10} {:>4} {:>6} | {:>5} {:>5} | {:>8} {:>9} {:>9} {:>8} {:>8} | {:>9} {:>9}",
        "trace",
        "α",
        "layer",
        "drop",
        "rob",
        "mass med",
        "sd× med",
        "z need",
        ">τ̂",
        "tok0",
        "all sd×",
        "all z"
    );
    for s in &r.sink {
        println!(
            "{:<10} {:>4} {:>6} | {:>2}/{:<3} {:>5} | {:>8.3} {:>9.2} {:>9.2} {:>7.0}% {:>7.0}% | {:>9.2} {:>9.2}",
            s.trace,
            s.alpha,
            s.layer.map_or("all".into(), |l| l.to_string()),
            s.dropped_original,
            s.n,
            s.dropped_robust,
            s.dropped_mass.median,
            s.dropped_sd_ratio.median,
            s.dropped_z_needed.median,
            100.0 * s.dropped_max_above_tau_hat,
            100.0 * s.dropped_argmax_token0,
            s.all_sd_ratio.median,
            s.all_z_needed.median,
        );
        if s.heavy_dropped > 0 {
            println!(
                "  heavy {:>3} | sd× {:.2} [{:.2}, {:.2}] | z need {:.2} [{:.2}, {:.2}] | z true {:.2} [{:.2}, {:.2}] | gap {:.2} | >τ̂ {:.0}% | z_page {:.2}",
                s.heavy_dropped,
                s.heavy_sd_ratio.median,
                s.heavy_sd_ratio.min,
                s.heavy_sd_ratio.max,
                s.heavy_z_needed.median,
                s.heavy_z_needed.min,
                s.heavy_z_needed.max,
                s.heavy_z_true.median,
                s.heavy_z_true.min,
                s.heavy_z_true.max,
                s.heavy_gap.median,
                100.0 * s.heavy_max_above_tau_hat,
                s.z_page
            );
        }
    }
}

/// Relative error p90 vs mean pages kept per (trace, method), one panel per α.
fn plot(r: &TraceEvalResult, path: &std::path::Path) -> Result<()> {
    use plotters::prelude::*;
    let p = path.to_string_lossy().to_string();
    let w = 560 * alphas_of(r).len().max(1) as u32;
    // Text is laid out with ab_glyph for SVG too, so the font is needed either way.
    crate::figure::register_font()?;
    if p.ends_with(".png") {
        draw_panels(r, BitMapBackend::new(&p, (w, 560)).into_drawing_area())
    } else {
        draw_panels(r, SVGBackend::new(&p, (w, 560)).into_drawing_area())
    }
}

fn alphas_of(r: &TraceEvalResult) -> Vec<f64> {
    let mut v: Vec<f64> = r.groups.iter().map(|g| g.alpha).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.dedup();
    v
}

fn draw_panels<DB: plotters::prelude::DrawingBackend>(
    r: &TraceEvalResult,
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    let err = |e: &dyn std::fmt::Debug| anyhow::anyhow!("plot: {e:?}");
    let alphas = alphas_of(r);
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let panels = root.split_evenly((1, alphas.len().max(1)));
    for (panel, &alpha) in panels.iter().zip(&alphas) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!("α = {alpha}: rel. error p90 vs pages kept"),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(55)
            .build_cartesian_2d(
                (1e-2f64..1.0f64).log_scale(),
                (1e-7f64..10.0f64).log_scale(),
            )
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("mean fraction of pages kept")
            .y_desc("relative error, p90 over (layer, head, query)")
            .draw()
            .map_err(|e| err(&e))?;
        let pts = r
            .groups
            .iter()
            .filter(|g| g.layer.is_none() && g.alpha == alpha);
        for (i, g) in pts.enumerate() {
            let c = Palette99::pick(i).to_rgba();
            let (x, y) = (
                g.summary.pages_kept.mean.clamp(1e-2, 1.0),
                g.summary.rel.p90.clamp(1e-7, 10.0),
            );
            let jargon = g.trace.starts_with("jargon");
            let lab = format!("{} {}", g.trace, g.method);
            if jargon {
                chart
                    .draw_series(std::iter::once(TriangleMarker::new((x, y), 6, c.filled())))
                    .map_err(|e| err(&e))?
                    .label(lab)
                    .legend(move |(x, y)| TriangleMarker::new((x, y), 5, c.filled()));
            } else {
                chart
                    .draw_series(std::iter::once(Circle::new((x, y), 5, c.filled())))
                    .map_err(|e| err(&e))?
                    .label(lab)
                    .legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 9))
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
