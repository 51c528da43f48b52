//! `entmaxkv bench --device cuda`: the bench sweep on the GPU.
//!
//! Per cell: a [`GpuDecoder`] is planned, its step captured in a CUDA graph, and each timed
//! replay is bracketed by CUDA events with the L2 cache flushed before it (so no step reads
//! the previous step's cache lines, nor finds its own code cached); median, min and p90 over
//! the replays. `--warm-l2` skips the flush, to see how much of a kernel's time is cold
//! misses (code included); the recorded numbers flush. Stage times are
//! separate graphs (selection, attention) timed the same way. Bytes moved come from the
//! step report (page metadata, kept K, V rows read) and are compared with the byte floor at
//! the read bandwidth measured in the same run (`probe_read`, a 16-byte-load reduction).
//! `--sdpa-json` merges the timings of `bench/sdpa_baseline.py` (torch SDPA on the same
//! shapes) so the table shows each method against dense softmax SDPA.

use crate::bench::{BenchArgs, BenchResult, Cell, Sweep};
use crate::meta::provenance;
use crate::probe::Bandwidth;
use anyhow::{Context, Result as Res};
use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::gpu::probe::{self as gprobe, L2Flush};
use entmaxkv::gpu::{DeviceCacheOptions, DeviceKvCache, Event, Gpu, GpuDecoder, Stage};
use entmaxkv::metrics::compare;
use rayon::prelude::*;
use serde::Deserialize;

/// One row of `bench/sdpa_baseline.py`'s JSON.
#[derive(Debug, Clone, Deserialize)]
struct SdpaRow {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    context: usize,
    median_ms: f64,
}

/// Deterministic N(0,1) values from a counter (splitmix64 + Box–Muller), filled in parallel.
fn normals(seed: u64, n: usize) -> Vec<f32> {
    use entmaxkv::synth::splitmix64 as mix;
    let mut v = vec![0.0f32; n];
    v.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(ci, chunk)| {
            let base = (ci as u64) << 16;
            for (i, pair) in chunk.chunks_mut(2).enumerate() {
                let j = base + 2 * i as u64;
                let u1 = ((mix(seed ^ mix(j)) >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                let u2 = ((mix(seed ^ mix(j + 1)) >> 11) as f64) / (1u64 << 53) as f64;
                let r = (-2.0 * u1.ln()).sqrt();
                let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
                pair[0] = (r * c) as f32;
                if pair.len() > 1 {
                    pair[1] = (r * s) as f32;
                }
            }
        });
    v
}

struct Problem {
    host: PagedKvCache,
    ids: Vec<SeqId>,
    q: Vec<f32>,
}

fn build(sw: &Sweep, ctx: usize, seed: u64) -> Res<Problem> {
    let hd = sw.kv_heads * sw.head_dim;
    let pages = sw.batch * ctx.div_ceil(sw.page_size);
    let cfg = CacheConfig::new(sw.kv_heads, sw.head_dim, pages)
        .with_page_size(sw.page_size)
        .with_kv_dtype(sw.dtype)
        .with_stats_dtype(StatsDType::Kv);
    let mut host = PagedKvCache::new(cfg)?;
    let mut ids = Vec::new();
    let chunk = 1 << 16;
    for b in 0..sw.batch {
        let id = host.add_sequence();
        let mut t = 0;
        while t < ctx {
            let e = (t + chunk).min(ctx);
            let s = seed
                .wrapping_mul(1000)
                .wrapping_add((b * 1_000_000 + t) as u64);
            let k = normals(s.wrapping_mul(2), (e - t) * hd);
            let v = normals(s.wrapping_mul(2) + 1, (e - t) * hd);
            host.append(id, &k, &v, ChunkLayout::TokenMajor)?;
            t = e;
        }
        ids.push(id);
    }
    let q = normals(seed ^ 0x5151, sw.batch * sw.heads * sw.head_dim);
    Ok(Problem { host, ids, q })
}

fn quantile(sorted: &[f64], p: f64) -> f64 {
    sorted[((p * (sorted.len() - 1) as f64).round() as usize).min(sorted.len() - 1)]
}

/// `--warm-code`: the same method on a 128-page cache, replayed after the flush on its own
/// stream, ordered with the timed stream by events (no host wait, so no idle gap is timed).
struct Primer {
    dev: DeviceKvCache,
    dec: GpuDecoder,
    flushed: Event,
    primed: Event,
}

/// What precedes every timed launch: the L2 flush (unless warm), then the primer's step.
fn before_step(
    dev: &DeviceKvCache,
    flush: Option<&L2Flush>,
    prime: Option<&Primer>,
) -> entmaxkv::Result<()> {
    let s = dev.stream();
    if let Some(f) = flush {
        f.run(s)?;
    }
    if let Some(p) = prime {
        p.flushed.record(s)?;
        p.dev.stream().wait(&p.flushed)?;
        p.dec.replay(&p.dev)?;
        p.primed.record(p.dev.stream())?;
        s.wait(&p.primed)?;
    }
    Ok(())
}

/// Times `launch` with the L2 flushed before each call (unless `flush` is None: warm L2);
/// returns sorted milliseconds.
fn time_it(
    gpu: &std::sync::Arc<Gpu>,
    dev: &DeviceKvCache,
    flush: Option<&L2Flush>,
    prime: Option<&Primer>,
    warmup: usize,
    iters: usize,
    launch: &dyn Fn() -> entmaxkv::Result<()>,
) -> Res<Vec<f64>> {
    let s = dev.stream();
    for _ in 0..warmup {
        before_step(dev, flush, prime)?;
        launch()?;
    }
    s.sync()?;
    let (e0, e1) = (Event::new(gpu)?, Event::new(gpu)?);
    let mut t = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        before_step(dev, flush, prime)?;
        e0.record(s)?;
        launch()?;
        e1.record(s)?;
        t.push(e0.elapsed_ms(&e1)? as f64);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t)
}

pub fn run(a: &BenchArgs) -> Res<BenchResult> {
    let sw = Sweep::resolve(a)?;
    let gpu = Gpu::get().context("--device cuda")?;
    let info = gpu.info().clone();
    eprintln!(
        "device: {} (cc {}.{}, {} SMs, {:.1} GiB, L2 {} MiB, driver {})",
        info.name,
        info.cc.0,
        info.cc.1,
        info.sm_count,
        info.total_mem as f64 / (1u64 << 30) as f64,
        info.l2_bytes >> 20,
        info.driver_version
    );
    let sdpa: Vec<SdpaRow> = match &a.sdpa_json {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?,
        )
        .with_context(|| format!("parsing {p}"))?,
        None => Vec::new(),
    };
    let probe_stream = gpu.stream()?;
    let bw = gprobe::measure(&gpu, &probe_stream, 2 << 30, 10)?;
    eprintln!(
        "  device bandwidth: read {:.1} GB/s, copy {:.1} GB/s (read+write)",
        bw.read_gbs, bw.copy_gbs
    );
    drop(probe_stream);
    let mut cells = Vec::new();
    for &ctx in &sw.contexts {
        // The dense f64 reference depends on the context and α only: computed once each.
        let mut oracles: Vec<(f64, Vec<f64>)> = Vec::new();
        let t0 = std::time::Instant::now();
        let prob = build(&sw, ctx, crate::bench::context_seed(a.seed, ctx))?;
        let dev = DeviceKvCache::upload(&prob.host, DeviceCacheOptions::default())?;
        let flush_buf = L2Flush::new(&gpu)?;
        let flush = (!a.warm_l2).then_some(&flush_buf);
        eprintln!(
            "context {ctx}: cache built and uploaded in {:.1} s",
            t0.elapsed().as_secs_f64()
        );
        for &alpha in &sw.alphas {
            for m in &sw.methods {
                let budgets: Vec<f64> = if m.starts_with("topk") {
                    sw.budgets.clone()
                } else {
                    vec![0.0]
                };
                for budget in budgets {
                    let spec = crate::methods::MethodSpec::parse(m, budget)?;
                    let b = spec.budget;
                    let cfg = spec.config(alpha, sw.heads, sw.gqa, None);
                    let a_used = cfg.attention.alpha;
                    // Combinations the GPU backend does not implement (e.g. certified with
                    // sketch rows that are not whole 4-byte words) are skipped, not errors.
                    let mut dec = match GpuDecoder::new(&dev, &prob.ids, ctx, cfg.clone()) {
                        Err(entmaxkv::Error::Unsupported { what, .. }) => {
                            eprintln!("  {m}: not on the GPU ({what}), skipped at alpha {alpha}");
                            continue;
                        }
                        r => r?,
                    };
                    let prime = if a.warm_code {
                        // 128 pages: the kernels' main paths run; 4 MB of other data.
                        let small = 128 * sw.page_size;
                        let p = build(&sw, small, a.seed)?;
                        let pdev = DeviceKvCache::upload(&p.host, DeviceCacheOptions::default())?;
                        let mut pdec = GpuDecoder::new(&pdev, &p.ids, small, cfg)?;
                        pdec.set_query(&p.q)?;
                        pdec.capture(&pdev)?;
                        Some(Primer {
                            dev: pdev,
                            dec: pdec,
                            flushed: Event::new(&gpu)?,
                            primed: Event::new(&gpu)?,
                        })
                    } else {
                        None
                    };
                    dec.set_query(&prob.q)?;
                    dec.capture(&dev)?;
                    let times = time_it(
                        &gpu,
                        &dev,
                        flush,
                        prime.as_ref(),
                        a.warmup,
                        a.iters,
                        &|| dec.replay(&dev),
                    )?;
                    if m == "certified" && alpha <= 1.0 {
                        eprintln!("  {m}: defined for alpha > 1 only, skipped at alpha {alpha}");
                        continue;
                    }
                    // Every method but dense decode has a selection stage (robust-softmax
                    // was missed by a list of prefixes).
                    let sel = if b.is_some() || !m.starts_with("dense") {
                        let g = dec.capture_stage(&dev, Stage::Selection)?;
                        quantile(
                            &time_it(&gpu, &dev, flush, prime.as_ref(), 2, a.iters, &|| {
                                g.launch()
                            })?,
                            0.5,
                        )
                    } else {
                        0.0
                    };
                    // The fused Gaussian step's attention stage (tail, values) takes the running
                    // maxima its selection stage (the fused K pass) leaves and resets them, so
                    // alone it would run on reset state (its heads then report a non-finite
                    // maximum): there the attention time is the step's less the selection's.
                    let att = if dec.fused_gauss() {
                        (quantile(&times, 0.5) - sel).max(0.0)
                    } else {
                        let att_graph = dec.capture_stage(&dev, Stage::Attention)?;
                        quantile(
                            &time_it(&gpu, &dev, flush, prime.as_ref(), 2, a.iters, &|| {
                                att_graph.launch()
                            })?,
                            0.5,
                        )
                    };
                    // Per kernel: events between the launches of plain (ungraphed) steps.
                    let names = dec.kernel_names();
                    let evs = (0..=names.len())
                        .map(|_| Event::new(&gpu))
                        .collect::<entmaxkv::Result<Vec<_>>>()?;
                    let mut per: Vec<Vec<f64>> = vec![Vec::new(); names.len()];
                    for it in 0..a.iters.max(1) + 2 {
                        before_step(&dev, flush, prime.as_ref())?;
                        dec.enqueue_timed(&dev, &evs)?;
                        dev.stream().sync()?;
                        if it >= 2 {
                            for (i, v) in per.iter_mut().enumerate() {
                                v.push(evs[i].elapsed_ms(&evs[i + 1])? as f64);
                            }
                        }
                    }
                    let kernel_ms: Vec<(String, f64)> = names
                        .iter()
                        .zip(per.iter_mut())
                        .map(|(n, v)| {
                            v.sort_by(|x, y| x.total_cmp(y));
                            (n.to_string(), quantile(v, 0.5))
                        })
                        .collect();
                    if let Some(pr) = dec.tail_profile()? {
                        let d: Vec<i64> = (1..7).map(|i| pr[i] - pr[i - 1]).collect();
                        eprintln!(
                            "    tail clocks (counts, hist, bracket, copy, solve, V): {d:?}; n_c {} n_s {} support {} iterations {}",
                            pr[10], pr[11], pr[12], pr[13]
                        );
                    }
                    if let Some(sp) = dec.scores_profile()? {
                        eprintln!("    {}", scores_profile_line(&sp));
                    }
                    if let Some(f) = dec.fused_profile()? {
                        eprintln!(
                            "    fused µs (moments published, solved, chunk scores, chunk waited, chunk candidates, list; solve, merge): {f:.1?}"
                        );
                    }
                    // The stage graphs ran after the full step: run it once more for the report.
                    // A stage replayed alone is not a step (an attention stage after no
                    // selection takes the state the last step left), so what it raised in the
                    // status word is cleared first; the step below reports its own.
                    match dec.check_finite() {
                        Ok(()) | Err(entmaxkv::Error::NonFinite { .. }) => {}
                        Err(e) => return Err(e.into()),
                    }
                    dec.replay(&dev)?;
                    let mut out = vec![0.0f32; prob.q.len()];
                    dec.read_output(&mut out)?;
                    let rep = dec.report(&dev)?.clone();
                    let (rel, cosine) = if a.no_accuracy {
                        (None, None)
                    } else {
                        if !oracles.iter().any(|o| o.0 == a_used) {
                            let p = AttentionParams::new(sw.heads, a_used);
                            let o = oracle_decode(&prob.host, &prob.ids, &prob.q, &p)?;
                            oracles.push((a_used, o.out));
                        }
                        let o = &oracles.iter().find(|o| o.0 == a_used).expect("pushed").1;
                        let e = compare(&out, o)?;
                        (Some(e.rel), Some(e.cosine))
                    };
                    let bytes = rep.bytes.total() as f64;
                    let median = quantile(&times, 0.5);
                    let n = rep.heads.len() as f64;
                    let sdpa_ms = sdpa
                        .iter()
                        .find(|r| {
                            r.batch == sw.batch
                                && r.heads == sw.heads
                                && r.kv_heads == sw.kv_heads
                                && r.head_dim == sw.head_dim
                                && r.context == ctx
                        })
                        .map(|r| r.median_ms);
                    let cell = Cell {
                        method: m.clone(),
                        context: ctx,
                        alpha: a_used,
                        budget: b,
                        median_ms: median,
                        min_ms: times[0],
                        p90_ms: quantile(&times, 0.9),
                        selection_ms: sel,
                        attention_ms: att,
                        pages_kept_mean: rep.heads.iter().map(|h| h.pages_kept as f64).sum::<f64>()
                            / n,
                        pages_total: rep.heads.iter().map(|h| h.pages_total as f64).sum::<f64>()
                            / n,
                        bytes_meta: rep.bytes.meta,
                        bytes_k: rep.bytes.k,
                        bytes_v: rep.bytes.v,
                        floor_ms: bytes / (bw.read_gbs * 1e9) * 1e3,
                        achieved_gbs: bytes / (median * 1e-3) / 1e9,
                        rel,
                        cosine,
                        bytes_sketch: rep.bytes.sketch,
                        certificate_ms: 0.0,
                        certified_frac: rep.heads.iter().any(|h| h.certified.is_some()).then(
                            || {
                                rep.heads
                                    .iter()
                                    .filter(|h| h.certified == Some(true))
                                    .count() as f64
                                    / n
                            },
                        ),
                        sdpa_ms,
                        kernel_ms,
                    };
                    eprintln!(
                        "  {:<14} a={:<5} {:>8.4} ms (p90 {:.4}), floor {:.4} ms, kept {:.1}/{:.0}, sel {:.4} ms{} | {}",
                        m,
                        a_used,
                        median,
                        cell.p90_ms,
                        cell.floor_ms,
                        cell.pages_kept_mean,
                        cell.pages_total,
                        cell.selection_ms,
                        sdpa_ms.map_or(String::new(), |s| format!(", SDPA {s:.4} ms")),
                        cell.kernel_ms
                            .iter()
                            .map(|(n, t)| format!("{n} {t:.4}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    cells.push(cell);
                }
            }
        }
    }
    Ok(BenchResult {
        provenance: provenance(),
        device: format!(
            "{} (cc {}.{}, {} SMs, driver {})",
            info.name, info.cc.0, info.cc.1, info.sm_count, info.driver_version
        ),
        bandwidth: Bandwidth {
            copy_gbs: bw.copy_gbs,
            read_gbs: bw.read_gbs,
            bytes: bw.bytes,
        },
        sweep: sw,
        l2: Some(
            if a.warm_l2 {
                "warm"
            } else if a.warm_code {
                "flushed, code warmed"
            } else {
                "flushed"
            }
            .into(),
        ),
        cells,
    })
}

/// One line summarising the K pass's CTA phases (`GpuDecoder::scores_profile`): how long the
/// CTAs took to load their page lists, read K and write candidates (p10 / median / p90, µs),
/// when they started and ended relative to the first start, and the share of the kernel's
/// span during which at least half of the CTAs were reading K.
fn scores_profile_line(sp: &[[u64; 4]]) -> String {
    if sp.is_empty() {
        return "scores profile: no stamps (module built without SCORES_PROF=1?)".into();
    }
    let t0 = sp.iter().map(|s| s[0]).min().unwrap_or(0);
    let us = |x: u64| x as f64 * 1e-3;
    let stat = |mut v: Vec<f64>| -> String {
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |f| quantile(&v, f);
        format!("{:.2}/{:.2}/{:.2}", q(0.1), q(0.5), q(0.9))
    };
    let pro = stat(sp.iter().map(|s| us(s[1].saturating_sub(s[0]))).collect());
    let kp = stat(sp.iter().map(|s| us(s[2].saturating_sub(s[1]))).collect());
    let epi = stat(sp.iter().map(|s| us(s[3].saturating_sub(s[2]))).collect());
    let start = stat(sp.iter().map(|s| us(s[0] - t0)).collect());
    let end = stat(sp.iter().map(|s| us(s[3] - t0)).collect());
    let span = sp.iter().map(|s| s[3]).max().unwrap_or(t0) - t0;
    // Time with at least half of the CTAs inside their K phase, by a sweep over the events.
    let mut ev: Vec<(u64, i64)> = sp.iter().flat_map(|s| [(s[1], 1), (s[2], -1)]).collect();
    ev.sort();
    let (mut live, mut last, mut busy) = (0i64, t0, 0u64);
    let half = (sp.len() as i64 + 1) / 2;
    for (t, d) in ev {
        if live >= half {
            busy += t - last;
        }
        live += d;
        last = t;
    }
    format!(
        "scores profile ({} CTAs, µs p10/p50/p90): pages {pro}, K {kp}, candidates {epi}; start {start}, end {end}; span {:.2}, ≥ half the CTAs in K for {:.0}% of it",
        sp.len(),
        us(span),
        100.0 * busy as f64 / span.max(1) as f64
    )
}

#[cfg(test)]
mod tests {
    use super::scores_profile_line;

    #[test]
    fn scores_profile_line_summarises_the_phases() {
        // Two CTAs (ns): A reads K over 1–11 µs, B over 1.5–21.5 µs; at least one of them
        // (half of two) is in its K phase from 1 to 21.5 µs of a 22 µs span: 93%.
        let line = scores_profile_line(&[[0, 1000, 11000, 12000], [500, 1500, 21500, 22000]]);
        assert_eq!(
            line,
            "scores profile (2 CTAs, µs p10/p50/p90): pages 1.00/1.00/1.00, K 10.00/20.00/20.00, \
             candidates 0.50/1.00/1.00; start 0.00/0.50/0.50, end 12.00/22.00/22.00; span 22.00, \
             ≥ half the CTAs in K for 93% of it"
        );
        // Four CTAs, K phases 0–10 µs twice and 10–20 µs twice: two (half) in K throughout.
        let line = scores_profile_line(&[
            [0, 0, 10000, 10000],
            [0, 0, 10000, 10000],
            [10000, 10000, 20000, 20000],
            [10000, 10000, 20000, 20000],
        ]);
        assert!(
            line.ends_with("span 20.00, ≥ half the CTAs in K for 100% of it"),
            "{line}"
        );
        assert!(scores_profile_line(&[]).contains("no stamps"));
    }
}
