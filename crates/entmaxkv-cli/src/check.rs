//! `entmaxkv check`: accuracy of every method against the f64 oracle over a sweep of
//! α, context, KV dtype, GQA and ALiBi. Exits nonzero when a method breaks its stated
//! tolerance: dense methods and full-budget sparse methods must equal the oracle
//! (rel ≤ 1e-5 with f32 K/V, ≤ 2e-3 with f16/bf16 K/V, where the only difference is f32
//! accumulation over the same stored values).

use crate::bench::parse_tokens;
use crate::meta::{provenance, Provenance};
use crate::methods::{nape_slopes, MethodSpec};
use anyhow::Result;
use clap::Args;
use entmaxkv::attention::cpu::TauMode;
use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::certificate::CertificateLevel;
use entmaxkv::decode::{Decoder, Method};
use entmaxkv::metrics::compare;
use entmaxkv::selection::GqaMode;
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use indicatif::ProgressBar;
use serde::Serialize;

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// cpu or cuda. On cuda, combinations the GPU backend does not implement are listed as
    /// unsupported rows (they are not failures).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "dense-softmax,dense-entmax,topk,topk-full,topk-softmax,gaussian-exact,gaussian-corrected,gaussian-robust,certified"
    )]
    pub methods: Vec<String>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,1.3333333333333333,1.5,2,3"
    )]
    pub alpha: Vec<f64>,
    #[arg(long, value_delimiter = ',', default_value = "1K,8K")]
    pub contexts: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "f32,f16,bf16")]
    pub dtypes: Vec<DType>,
    /// Query heads; GQA runs use heads/4 kv heads.
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    #[arg(long, default_value_t = 64)]
    pub head_dim: usize,
    #[arg(long, default_value_t = 0.125)]
    pub budget: f64,
    #[arg(long, default_value = "structured")]
    pub workload: Workload,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckRow {
    pub method: String,
    pub alpha: f64,
    pub context: usize,
    pub dtype: DType,
    pub gqa: bool,
    pub alibi: bool,
    pub rel: f64,
    pub cosine: f64,
    pub pages_kept_frac: f64,
    /// Fraction of heads whose certificate proves the output equals dense (methods that
    /// report one: `certified`, and every sparse method on the CPU, which runs the
    /// token-level certificate here); None otherwise.
    pub certified_frac: Option<f64>,
    /// The tolerance this row must meet, if the method promises one.
    pub tolerance: Option<f64>,
    pub pass: bool,
    /// Set when the backend does not implement this combination (the reason).
    pub unsupported: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub provenance: Provenance,
    pub device: String,
    pub rows: Vec<CheckRow>,
    pub failures: usize,
}

pub fn run(a: &CheckArgs) -> Result<CheckResult> {
    let cuda = match a.device.as_str() {
        "cpu" => false,
        "cuda" => true,
        d => anyhow::bail!("--device {d}: expected cpu or cuda"),
    };
    let gpu = if cuda {
        Some(entmaxkv::gpu::Gpu::get()?)
    } else {
        None
    };
    let specs = a
        .methods
        .iter()
        .map(|m| MethodSpec::parse(m, a.budget))
        .collect::<Result<Vec<_>>>()?;
    let contexts = a
        .contexts
        .iter()
        .map(|c| parse_tokens(c))
        .collect::<Result<Vec<_>>>()?;
    if a.heads == 0 || !a.heads.is_multiple_of(4) {
        anyhow::bail!("--heads must be a positive multiple of 4 (GQA runs use heads/4 kv heads)");
    }
    let total = contexts.len() * a.dtypes.len() * 4 * a.alpha.len() * specs.len();
    let pb = ProgressBar::new(total as u64);
    let mut rows = Vec::new();
    let mut syn = Synth::new(a.seed);
    for &ctx in &contexts {
        for &dtype in &a.dtypes {
            for gqa in [false, true] {
                let hkv = if gqa { a.heads / 4 } else { a.heads };
                let prob = syn.problem(a.workload, &[ctx], a.heads, hkv, a.head_dim);
                let cfg = CacheConfig::new(hkv, a.head_dim, ctx.div_ceil(16))
                    .with_kv_dtype(dtype)
                    .with_stats_dtype(StatsDType::Kv);
                let (cache, ids) = prob.build_cache(cfg, 0)?;
                let dev = if cuda {
                    Some(entmaxkv::gpu::DeviceKvCache::upload(
                        &cache,
                        entmaxkv::gpu::DeviceCacheOptions::default(),
                    )?)
                } else {
                    None
                };
                for alibi in [false, true] {
                    let slopes = alibi.then(|| nape_slopes(a.heads));
                    for &alpha in &a.alpha {
                        let mut oracle_for = std::collections::HashMap::new();
                        for spec in &specs {
                            pb.inc(1);
                            if spec.softmax && alpha != a.alpha[0] {
                                continue; // softmax does not depend on α: run it once
                            }
                            if !spec.supports_alpha(alpha) {
                                continue; // certified is defined for α > 1 only
                            }
                            let gmode = if gqa {
                                GqaMode::Shared
                            } else {
                                GqaMode::PerHead
                            };
                            let mut cfg = spec.config(alpha, a.heads, gmode, slopes.clone());
                            if dev.is_none()
                                && cfg.tau_mode == TauMode::Exact
                                && !matches!(cfg.method, Method::Dense | Method::Certified)
                            {
                                // The certified fraction of every sparse method (CPU only).
                                cfg.certificate = CertificateLevel::Token;
                            }
                            let used_alpha = cfg.attention.alpha;
                            let key = used_alpha.to_bits();
                            if let std::collections::hash_map::Entry::Vacant(e) =
                                oracle_for.entry(key)
                            {
                                e.insert(oracle_decode(&cache, &ids, &prob.q, &cfg.attention)?);
                            }
                            let oracle = &oracle_for[&key];
                            // A row of this combination; it passes when the method keeps its
                            // stated tolerance (if any) with a finite error.
                            let row =
                                |rel: f64,
                                 cosine: f64,
                                 kept: f64,
                                 cert: Option<f64>,
                                 tolerance: Option<f64>| {
                                    CheckRow {
                                        method: spec.name.clone(),
                                        alpha: used_alpha,
                                        context: ctx,
                                        dtype,
                                        gqa,
                                        alibi,
                                        rel,
                                        cosine,
                                        pages_kept_frac: kept,
                                        certified_frac: cert,
                                        tolerance,
                                        pass: tolerance.is_none_or(|t| rel <= t) && rel.is_finite(),
                                        unsupported: None,
                                    }
                                };
                            let mut out = vec![0.0f32; prob.q.len()];
                            let rep = match &dev {
                                None => {
                                    let mut dec = Decoder::new(&cache, 1, ctx, cfg)?;
                                    dec.step(&cache, &ids, &prob.q, &mut out)?.clone()
                                }
                                Some(dev) => {
                                    match entmaxkv::gpu::GpuDecoder::new(dev, &ids, ctx, cfg) {
                                        Err(entmaxkv::Error::Unsupported { what, .. }) => {
                                            let mut r =
                                                row(f64::NAN, f64::NAN, f64::NAN, None, None);
                                            r.pass = true;
                                            r.unsupported = Some(what);
                                            rows.push(r);
                                            continue;
                                        }
                                        Err(e) => return Err(e.into()),
                                        Ok(mut dec) => dec.step(dev, &prob.q, &mut out)?.clone(),
                                    }
                                }
                            };
                            let e = compare(&out, &oracle.out)?;
                            let kept: f64 = rep
                                .heads
                                .iter()
                                .map(|h| h.pages_kept as f64 / h.pages_total as f64)
                                .sum::<f64>()
                                / rep.heads.len() as f64;
                            let tolerance =
                                spec.exact
                                    .then_some(if dtype == DType::F32 { 1e-5 } else { 2e-3 });
                            let with_cert =
                                rep.heads.iter().filter(|h| h.certified.is_some()).count();
                            let cert = (with_cert > 0).then(|| {
                                rep.heads
                                    .iter()
                                    .filter(|h| h.certified == Some(true))
                                    .count() as f64
                                    / with_cert as f64
                            });
                            rows.push(row(e.rel, e.cosine, kept, cert, tolerance));
                        }
                    }
                }
            }
        }
    }
    pb.finish_and_clear();
    let failures = rows.iter().filter(|r| !r.pass).count();
    Ok(CheckResult {
        provenance: provenance(),
        device: match &gpu {
            Some(g) => format!("{} (cc {}.{})", g.info().name, g.info().cc.0, g.info().cc.1),
            None => format!("cpu ({} threads)", rayon::current_num_threads()),
        },
        rows,
        failures,
    })
}

pub fn print_table(r: &CheckResult) {
    println!(
        "{:<20} {:>6} {:>7} {:>5} {:>4} {:>5} {:>10} {:>10} {:>7} {:>6} {:>8} {:>5}",
        "method",
        "alpha",
        "context",
        "dtype",
        "gqa",
        "alibi",
        "rel",
        "cosine",
        "kept",
        "cert",
        "tol",
        "ok"
    );
    for x in &r.rows {
        if let Some(why) = &x.unsupported {
            println!(
                "{:<20} {:>6.3} {:>7} {:>5} {:>4} {:>5}  unsupported on this device: {why}",
                x.method,
                x.alpha,
                x.context,
                x.dtype,
                if x.gqa { "yes" } else { "no" },
                if x.alibi { "yes" } else { "no" },
            );
            continue;
        }
        println!(
            "{:<20} {:>6.3} {:>7} {:>5} {:>4} {:>5} {:>10.2e} {:>10.6} {:>6.1}% {:>6} {:>8} {:>5}",
            x.method,
            x.alpha,
            x.context,
            x.dtype,
            if x.gqa { "yes" } else { "no" },
            if x.alibi { "yes" } else { "no" },
            x.rel,
            x.cosine,
            100.0 * x.pages_kept_frac,
            x.certified_frac
                .map_or("-".into(), |c| format!("{:.0}%", 100.0 * c)),
            x.tolerance.map_or("-".into(), |t| format!("{t:.0e}")),
            if x.pass { "ok" } else { "FAIL" }
        );
    }
    let unsupported = r.rows.iter().filter(|x| x.unsupported.is_some()).count();
    println!(
        "{} rows ({} unsupported), {} failures | {} | {} | commit {}",
        r.rows.len(),
        unsupported,
        r.failures,
        r.device,
        r.provenance.date_utc,
        r.provenance.git_commit
    );
}
