//! `entmaxkv bench`: times every decode method over a sweep of shapes on synthetic data,
//! with the stage breakdown, bytes moved against the byte floor, and accuracy against the
//! f64 oracle.

use crate::meta::{provenance, Provenance};
use crate::methods::{MethodSpec, METHODS};
use crate::probe::{self, Bandwidth};
use anyhow::{Context, Result as Res};
use clap::Args;
use entmaxkv::attention::cpu::TauMode;
use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::certificate::CertificateLevel;
use entmaxkv::decode::{Decoder, Method};
use entmaxkv::metrics::compare;
use entmaxkv::selection::GqaMode;
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Named sweep: default, original, figure, llama8b (explicit flags override it).
    #[arg(long)]
    pub preset: Option<String>,
    /// Context lengths (tokens), comma separated; K/M suffixes allowed (32K, 1M).
    #[arg(long, value_delimiter = ',')]
    pub contexts: Option<Vec<String>>,
    #[arg(long)]
    pub batch: Option<usize>,
    /// Query heads.
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub kv_heads: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// K/V dtype: f32, f16, bf16.
    #[arg(long)]
    pub dtype: Option<DType>,
    /// α values (entmax methods), comma separated.
    #[arg(long, value_delimiter = ',')]
    pub alpha: Option<Vec<f64>>,
    #[arg(long)]
    pub page_size: Option<usize>,
    /// Methods: dense-softmax, dense-entmax, topk-softmax, topk, gaussian-exact,
    /// gaussian-fixed, gaussian-corrected.
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<String>>,
    /// Top-k budget as a fraction of the closed pages.
    #[arg(long, value_delimiter = ',')]
    pub budget: Option<Vec<f64>>,
    /// per-head or shared page selection under GQA (default: the preset's).
    #[arg(long)]
    pub gqa: Option<String>,
    /// iid or structured synthetic keys.
    #[arg(long, default_value = "iid")]
    pub workload: Workload,
    #[arg(long, default_value_t = 20)]
    pub iters: usize,
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Seed of the synthetic data: a context's cache and queries depend only on it and the
    /// context length, not on the other contexts of the sweep.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Check every step's kept pages with a certificate: off, page or token (CPU).
    #[arg(long, default_value = "off")]
    pub certificate: String,
    /// Skip the f64 oracle comparison (faster on huge caches).
    #[arg(long)]
    pub no_accuracy: bool,
    /// Keep the caches warm between timed steps instead of evicting them before each (GPU:
    /// the L2; CPU: the last-level cache, which on some hosts holds a 128K cache's K between
    /// steps). For comparison only: the recorded numbers evict, as a real decode does,
    /// where the other layers' caches pass through between two steps of one layer.
    #[arg(long, alias = "warm-cache")]
    pub warm_l2: bool,
    /// GPU: flush the L2 before each timed step as usual, then run the same method's step on
    /// a 128-page cache (the same kernels, other data) before the timed one: its code is
    /// then in L2 and its data is not. Separates cold instruction fetch from cold data.
    #[arg(long, conflicts_with = "warm_l2")]
    pub warm_code: bool,
    /// Write every figure as JSON here.
    #[arg(long)]
    pub json: Option<String>,
    /// Write the table as CSV here.
    #[arg(long)]
    pub csv: Option<String>,
    /// (cuda) Merge torch SDPA timings from `bench/sdpa_baseline.py --json` into the table.
    #[arg(long)]
    pub sdpa_json: Option<String>,
}

/// A fully resolved sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Sweep {
    pub preset: String,
    pub contexts: Vec<usize>,
    pub batch: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub dtype: DType,
    pub alphas: Vec<f64>,
    pub page_size: usize,
    pub methods: Vec<String>,
    pub budgets: Vec<f64>,
    pub gqa: GqaMode,
    pub workload: Workload,
}

pub fn parse_gqa(s: &str) -> Res<GqaMode> {
    Ok(match s {
        "per-head" | "perhead" => GqaMode::PerHead,
        "shared" => GqaMode::Shared,
        o => anyhow::bail!("unknown --gqa `{o}` (per-head, shared)"),
    })
}

pub fn parse_tokens(s: &str) -> Res<usize> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1024),
        Some('m' | 'M') => (&s[..s.len() - 1], 1024 * 1024),
        _ => (s, 1),
    };
    let n: usize = num.parse().context(format!("bad context length `{s}`"))?;
    Ok(n * mul)
}

impl Sweep {
    pub fn resolve(a: &BenchArgs) -> Res<Sweep> {
        let preset = a.preset.clone().unwrap_or_else(|| "default".into());
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        // The original's shape (B = 1, 8/8 heads, D = 64, f16, α = 1.5, page 16, iid);
        // each preset changes only what it names.
        let base = Sweep {
            preset: preset.clone(),
            contexts: vec![],
            batch: 1,
            heads: 8,
            kv_heads: 8,
            head_dim: 64,
            dtype: DType::F16,
            alphas: vec![1.5],
            page_size: 16,
            methods: vec![],
            budgets: vec![0.125],
            gqa: GqaMode::PerHead,
            workload: Workload::Iid,
        };
        let mut sw = match preset.as_str() {
            // Small enough for a 2-core CPU in well under two minutes.
            "default" => Sweep {
                contexts: vec![4096, 32768, 131072],
                methods: s(&[
                    "dense-softmax",
                    "dense-entmax",
                    "topk-softmax",
                    "topk",
                    "gaussian-exact",
                    "gaussian-robust",
                    "certified",
                ]),
                ..base
            },
            "original" => Sweep {
                contexts: vec![32768, 65536, 131072],
                methods: s(METHODS),
                budgets: vec![0.25],
                ..base
            },
            "figure" => Sweep {
                contexts: vec![32768, 65536, 131072, 262144, 524288, 1048576],
                methods: s(&[
                    "dense-softmax",
                    "topk-softmax",
                    "dense-entmax",
                    "topk",
                    "gaussian-corrected",
                ]),
                ..base
            },
            "llama8b" => Sweep {
                contexts: vec![32768, 131072],
                heads: 32,
                head_dim: 128,
                methods: s(&[
                    "dense-softmax",
                    "dense-entmax",
                    "topk-softmax",
                    "topk",
                    "gaussian-exact",
                ]),
                gqa: GqaMode::Shared,
                ..base
            },
            other => anyhow::bail!("unknown preset `{other}` (default, original, figure, llama8b)"),
        };
        if let Some(c) = &a.contexts {
            sw.contexts = c.iter().map(|x| parse_tokens(x)).collect::<Res<_>>()?;
        }
        if let Some(x) = a.batch {
            sw.batch = x;
        }
        if let Some(x) = a.heads {
            sw.heads = x;
            if a.kv_heads.is_none() {
                sw.kv_heads = x;
            }
        }
        if let Some(x) = a.kv_heads {
            sw.kv_heads = x;
        }
        if let Some(x) = a.head_dim {
            sw.head_dim = x;
        }
        if let Some(x) = a.dtype {
            sw.dtype = x;
        }
        if let Some(x) = &a.alpha {
            sw.alphas = x.clone();
        }
        if let Some(x) = a.page_size {
            sw.page_size = x;
        }
        if let Some(x) = &a.methods {
            for m in x {
                MethodSpec::parse(m, 0.125)?;
            }
            sw.methods = x.clone();
        }
        if let Some(x) = &a.budget {
            sw.budgets = x.clone();
        }
        if let Some(g) = &a.gqa {
            sw.gqa = parse_gqa(g)?;
        }
        sw.workload = a.workload;
        if sw.batch == 0 || sw.heads == 0 || sw.kv_heads == 0 || sw.head_dim == 0 {
            anyhow::bail!("batch, heads, kv-heads and head-dim must be >= 1");
        }
        if sw.contexts.contains(&0) {
            anyhow::bail!("context lengths must be >= 1");
        }
        if sw.page_size == 0 {
            anyhow::bail!("--page-size must be >= 1");
        }
        if !sw.heads.is_multiple_of(sw.kv_heads) {
            anyhow::bail!(
                "--heads {} is not a multiple of --kv-heads {}",
                sw.heads,
                sw.kv_heads
            );
        }
        if let Some(a) = sw.alphas.iter().find(|a| !a.is_finite() || **a < 1.0) {
            anyhow::bail!("--alpha {a}: alpha must be finite and >= 1");
        }
        if let Some(b) = sw.budgets.iter().find(|b| !(**b > 0.0 && **b <= 1.0)) {
            anyhow::bail!("--budget {b}: a budget fraction must be in (0, 1]");
        }
        Ok(sw)
    }
}

/// One measured cell.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub method: String,
    pub context: usize,
    pub alpha: f64,
    pub budget: Option<f64>,
    pub median_ms: f64,
    pub min_ms: f64,
    pub p90_ms: f64,
    pub selection_ms: f64,
    pub attention_ms: f64,
    pub pages_kept_mean: f64,
    pub pages_total: f64,
    pub bytes_meta: u64,
    pub bytes_k: u64,
    pub bytes_v: u64,
    /// The bytes the step must read over the measured read bandwidth.
    pub floor_ms: f64,
    pub achieved_gbs: f64,
    pub rel: Option<f64>,
    pub cosine: Option<f64>,
    /// Sketch bytes read (certified, robust Gaussian, token-level certificates).
    #[serde(default)]
    pub bytes_sketch: u64,
    /// Median time of the certificate phase (`--certificate`), ms.
    #[serde(default)]
    pub certificate_ms: f64,
    /// Fraction of heads whose output is proven equal to dense (certified method, or the
    /// `--certificate` check of another method's kept pages); None when nothing was checked.
    #[serde(default)]
    pub certified_frac: Option<f64>,
    /// Dense softmax torch SDPA on the same shape, same run (GPU, `--sdpa-json`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdpa_ms: Option<f64>,
    /// (GPU) Median time of each kernel of the step, events between launches.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kernel_ms: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub provenance: Provenance,
    pub device: String,
    pub bandwidth: Bandwidth,
    pub sweep: Sweep,
    /// Timing protocol: "flushed" (GPU: L2 flushed; CPU: the last-level cache evicted,
    /// before every timed step) or "warm".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l2: Option<String>,
    pub cells: Vec<Cell>,
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

pub fn run(a: &BenchArgs) -> Res<BenchResult> {
    match a.device.as_str() {
        "cpu" => {}
        "cuda" | "gpu" => return crate::gpu_bench::run(a),
        d => anyhow::bail!("--device {d}: expected cpu or cuda"),
    }
    let sw = Sweep::resolve(a)?;
    eprintln!("measuring memory bandwidth ...");
    let bw = probe::measure(512 << 20, 5);
    eprintln!(
        "  copy {:.1} GB/s (read+write), read-only {:.1} GB/s",
        bw.copy_gbs, bw.read_gbs
    );
    let evict = (!a.warm_l2).then(entmaxkv::timing::CacheEvictor::new);
    if let Some(e) = &evict {
        eprintln!(
            "  evicting the caches before each timed step ({} MiB read; --warm-cache to keep them)",
            e.bytes() >> 20
        );
    }
    let mut cells = Vec::new();
    let mut plan: Vec<(usize, f64, String, f64)> = Vec::new();
    for &ctx in &sw.contexts {
        for &alpha in &sw.alphas {
            for m in &sw.methods {
                let budgets: Vec<f64> = if m.starts_with("topk") {
                    sw.budgets.clone()
                } else {
                    vec![0.0]
                };
                for b in budgets {
                    plan.push((ctx, alpha, m.clone(), b));
                }
            }
        }
    }
    let pb = ProgressBar::new(plan.len() as u64);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}]")
            .expect("static template"),
    );
    let mut current: Option<(
        usize,
        entmaxkv::cache::PagedKvCache,
        Vec<entmaxkv::cache::SeqId>,
        Vec<f32>,
    )> = None;
    for (ctx, alpha, m, budget) in plan {
        pb.set_message(format!("{m} @ {ctx}"));
        if current.as_ref().map(|c| c.0) != Some(ctx) {
            drop(current.take()); // free the previous cache first
            let lens = vec![ctx; sw.batch];
            let mut syn = Synth::new(context_seed(a.seed, ctx));
            let prob = syn.problem(sw.workload, &lens, sw.heads, sw.kv_heads, sw.head_dim);
            let pages = sw.batch * ctx.div_ceil(sw.page_size);
            let cfg = CacheConfig::new(sw.kv_heads, sw.head_dim, pages)
                .with_page_size(sw.page_size)
                .with_kv_dtype(sw.dtype)
                .with_stats_dtype(StatsDType::Kv);
            let (cache, ids) = prob.build_cache(cfg, 0)?;
            current = Some((ctx, cache, ids, prob.q));
        }
        let (_, cache, ids, q) = current.as_ref().expect("built above");
        let spec = MethodSpec::parse(&m, budget)?;
        if !spec.supports_alpha(alpha) {
            pb.inc(1);
            continue;
        }
        let b = spec.budget;
        let mut cfg = spec.config(alpha, sw.heads, sw.gqa, None);
        let level = match a.certificate.as_str() {
            "off" => CertificateLevel::Off,
            "page" => CertificateLevel::Page,
            "token" => CertificateLevel::Token,
            o => anyhow::bail!("unknown --certificate `{o}` (off, page, token)"),
        };
        // A certificate needs the exact τ of the kept tokens; certified proves itself.
        if level != CertificateLevel::Off
            && spec.tau_mode == TauMode::Exact
            && !matches!(cfg.method, Method::Certified | Method::Dense)
        {
            cfg = cfg.with_certificate(level);
        }
        let a_used = cfg.attention.alpha;
        let mut dec = Decoder::new(cache, sw.batch, ctx, cfg)?;
        let mut out = vec![0.0f32; q.len()];
        for _ in 0..a.warmup {
            dec.step(cache, ids, q, &mut out)?;
        }
        let mut times = Vec::with_capacity(a.iters);
        let mut sel = Vec::with_capacity(a.iters);
        let mut att = Vec::with_capacity(a.iters);
        let mut cert = Vec::with_capacity(a.iters);
        let mut last = None;
        for _ in 0..a.iters.max(1) {
            if let Some(e) = &evict {
                e.evict();
            }
            let t = Instant::now();
            let rep = dec.step(cache, ids, q, &mut out)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
            sel.push(rep.times.selection_ns as f64 / 1e6);
            att.push(rep.times.attention_ns as f64 / 1e6);
            cert.push(rep.times.certificate_ns as f64 / 1e6);
            last = Some(rep.clone());
        }
        let rep = last.expect("at least one iteration");
        for v in [&mut times, &mut sel, &mut att, &mut cert] {
            v.sort_by(|x, y| x.total_cmp(y));
        }
        let (rel, cosine) = if a.no_accuracy {
            (None, None)
        } else {
            let mut p = AttentionParams::new(sw.heads, a_used);
            p.scale = None;
            let o = oracle_decode(cache, ids, q, &p)?;
            let e = compare(&out, &o.out)?;
            (Some(e.rel), Some(e.cosine))
        };
        let bytes = rep.bytes.total() as f64;
        let median = quantile(&times, 0.5);
        let n_heads = rep.heads.len() as f64;
        cells.push(Cell {
            method: m.clone(),
            context: ctx,
            alpha: a_used,
            budget: b,
            median_ms: median,
            min_ms: times[0],
            p90_ms: quantile(&times, 0.9),
            selection_ms: quantile(&sel, 0.5),
            attention_ms: quantile(&att, 0.5),
            pages_kept_mean: rep.heads.iter().map(|h| h.pages_kept as f64).sum::<f64>() / n_heads,
            pages_total: rep.heads.iter().map(|h| h.pages_total as f64).sum::<f64>() / n_heads,
            bytes_meta: rep.bytes.meta,
            bytes_k: rep.bytes.k,
            bytes_v: rep.bytes.v,
            floor_ms: bytes / (bw.read_gbs * 1e9) * 1e3,
            achieved_gbs: bytes / (median * 1e-3) / 1e9,
            rel,
            cosine,
            bytes_sketch: rep.bytes.sketch,
            certificate_ms: quantile(&cert, 0.5),
            certified_frac: {
                let flags: Vec<bool> = rep.heads.iter().filter_map(|h| h.certified).collect();
                (!flags.is_empty())
                    .then(|| flags.iter().filter(|&&c| c).count() as f64 / flags.len() as f64)
            },
            sdpa_ms: None,
            kernel_ms: Vec::new(),
        });
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(BenchResult {
        provenance: provenance(),
        device: format!("cpu ({} threads)", rayon::current_num_threads()),
        bandwidth: bw,
        sweep: sw,
        l2: Some(if a.warm_l2 { "warm" } else { "flushed" }.into()),
        cells,
    })
}

pub fn print_table(r: &BenchResult) {
    let sdpa = r.cells.iter().any(|c| c.sdpa_ms.is_some());
    println!(
        "{:<20} {:>8} {:>5} {:>9} {:>9} {:>9} {:>8} {:>8} {:>11} {:>9} {:>8} {:>9} {:>8} {:>6}{}",
        "method",
        "context",
        "alpha",
        "median",
        "p90",
        "select",
        "attend",
        "floor",
        "pages",
        "GB/s",
        "%bw",
        "rel",
        "cosine",
        "cert",
        if sdpa { "      sdpa  vs-sdpa" } else { "" }
    );
    for c in &r.cells {
        let name = match c.budget {
            Some(b) => format!("{}@{}", c.method, b),
            None => c.method.clone(),
        };
        let vs = match (sdpa, c.sdpa_ms) {
            (true, Some(s)) => format!(" {:>7.4}ms {:>7.2}x", s, s / c.median_ms),
            (true, None) => format!(" {:>9} {:>8}", "-", "-"),
            _ => String::new(),
        };
        println!(
            "{:<20} {:>8} {:>5} {:>7.4}ms {:>7.4}ms {:>7.4}ms {:>6.4}ms {:>6.4}ms {:>11} {:>9.1} {:>7.0}% {:>9} {:>8} {:>6}{}",
            name,
            c.context,
            c.alpha,
            c.median_ms,
            c.p90_ms,
            c.selection_ms,
            c.attention_ms,
            c.floor_ms,
            format!("{:.0}/{:.0}", c.pages_kept_mean, c.pages_total),
            c.achieved_gbs,
            100.0 * c.achieved_gbs / r.bandwidth.read_gbs,
            c.rel.map_or("-".into(), |x| format!("{x:.2e}")),
            c.cosine.map_or("-".into(), |x| format!("{x:.6}")),
            c.certified_frac.map_or("-".into(), |x| format!("{:.0}%", 100.0 * x)),
            vs,
        );
    }
    println!(
        "{} | {} | read bandwidth {:.1} GB/s | {} | commit {}",
        r.device,
        r.provenance.machine,
        r.bandwidth.read_gbs,
        r.provenance.date_utc,
        r.provenance.git_commit
    );
}

pub fn write_csv(r: &BenchResult, path: &str) -> Res<()> {
    let mut s = String::from(
        "method,context,alpha,budget,median_ms,min_ms,p90_ms,selection_ms,attention_ms,pages_kept_mean,pages_total,bytes_meta,bytes_k,bytes_v,floor_ms,achieved_gbs,rel,cosine,bytes_sketch,certificate_ms,certified_frac\n",
    );
    for c in &r.cells {
        s += &format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            c.method,
            c.context,
            c.alpha,
            c.budget.map_or(String::new(), |b| b.to_string()),
            c.median_ms,
            c.min_ms,
            c.p90_ms,
            c.selection_ms,
            c.attention_ms,
            c.pages_kept_mean,
            c.pages_total,
            c.bytes_meta,
            c.bytes_k,
            c.bytes_v,
            c.floor_ms,
            c.achieved_gbs,
            c.rel.map_or(String::new(), |x| x.to_string()),
            c.cosine.map_or(String::new(), |x| x.to_string()),
            c.bytes_sketch,
            c.certificate_ms,
            c.certified_frac.map_or(String::new(), |x| x.to_string()),
        );
    }
    std::fs::write(path, s).context(format!("writing {path}"))
}

/// The seed of one context's synthetic data: the sweep's seed and the context length mixed
/// (splitmix64), so a context's instance is the same whichever contexts run beside it.
pub fn context_seed(seed: u64, ctx: usize) -> u64 {
    entmaxkv::synth::mix64(seed ^ (ctx as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

#[cfg(test)]
mod tests {
    use super::context_seed;

    #[test]
    fn context_seeds_differ_by_context_and_seed() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..4u64 {
            for ctx in [1usize, 2, 16, 32768, 65536, 131072, 1 << 20] {
                assert!(
                    seen.insert(context_seed(seed, ctx)),
                    "seed {seed} ctx {ctx}"
                );
            }
        }
        assert_eq!(context_seed(7, 4096), context_seed(7, 4096));
    }
}
