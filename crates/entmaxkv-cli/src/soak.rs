//! `entmaxkv soak`: long-running append + decode to catch drift and leaks.
//!
//! Phase A appends `--steps` tokens to one sequence, one per decode step (top-k with a
//! small fixed budget, so a step costs O(pages) and 1M steps stay affordable), then
//! recomputes every page's statistics from the stored keys in f64 and compares them with
//! the incrementally maintained ones, and checks the last step against the oracle.
//! Phase B runs the same number of steps over rotating sequences that are released when
//! they reach `--release-at` tokens: the pool's free-page count and the process's resident
//! memory must stay flat.
//!
//! `--device cuda` runs both phases on the GPU: every token goes through the device append
//! kernel (statistics and sketch maintained there) and every step is a replay of a captured
//! CUDA graph; a host cache receives the same appends, and at the end the device K and
//! statistics must equal the host's byte for byte, the host statistics must equal ones
//! recomputed in f64, and a dense GPU step must match the f64 oracle. Phase B re-plans a
//! decoder for every new sequence and also samples the device's free memory.

use crate::meta::{provenance, Provenance};
use anyhow::Result;
use clap::Args;
use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::metrics::compare;
use entmaxkv::selection::topk::Budget;
use entmaxkv::stats::reference_stats;
use entmaxkv::synth::Synth;
use entmaxkv::DType;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Args)]
pub struct SoakArgs {
    #[arg(long, default_value = "1000000")]
    pub steps: usize,
    #[arg(long, default_value_t = 2)]
    pub heads: usize,
    #[arg(long, default_value_t = 1)]
    pub kv_heads: usize,
    #[arg(long, default_value_t = 32)]
    pub head_dim: usize,
    #[arg(long, default_value = "f16")]
    pub dtype: DType,
    /// Top-k budget in tokens for each step.
    #[arg(long, default_value_t = 64)]
    pub budget: usize,
    /// Phase B: sequences are released at this length.
    #[arg(long, default_value_t = 4096)]
    pub release_at: usize,
    /// Phase B: sequences alive at once.
    #[arg(long, default_value_t = 4)]
    pub live: usize,
    /// Phase B: steps (default: `--steps`).
    #[arg(long)]
    pub phase_b_steps: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: Option<String>,
    /// cpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub provenance: Provenance,
    pub steps: usize,
    pub phase_a_seconds: f64,
    pub pages_checked: usize,
    /// Largest relative difference of incremental vs recomputed mean/std; min/max exact.
    pub max_stat_rel_diff: f64,
    pub min_max_exact: bool,
    pub last_step_rel: f64,
    pub phase_b_seconds: f64,
    pub phase_b_steps: usize,
    pub sequences_released: usize,
    /// (step, free pages, resident MiB) samples.
    pub phase_b_samples: Vec<(usize, usize, f64)>,
    pub rss_growth_mib: f64,
    /// The device, and for `--device cuda`: device K and statistics equal the host's byte
    /// for byte after phase A; device free memory (MiB) change over phase B after warm-up.
    pub device: String,
    pub device_equals_host: Option<bool>,
    pub device_free_change_mib: Option<f64>,
}

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |pages| pages * 4096.0 / (1 << 20) as f64)
}

fn bar(n: usize, msg: &'static str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg} {bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("static template"),
    );
    pb.set_message(msg);
    pb
}

pub fn run(a: &SoakArgs) -> Result<SoakResult> {
    let (h, hkv, d) = (a.heads, a.kv_heads, a.head_dim);
    let hd = hkv * d;
    let mut syn = Synth::new(a.seed);
    let cfg = CacheConfig::new(hkv, d, a.steps.div_ceil(16) + 1)
        .with_kv_dtype(a.dtype)
        .with_stats_dtype(StatsDType::F32);
    let mut cache = PagedKvCache::new(cfg)?;
    let id = cache.add_sequence();
    let params = AttentionParams::new(h, 1.5);
    let dcfg = DecodeConfig::new(params.clone(), Method::TopK(Budget::Tokens(a.budget)));
    let mut dec = Decoder::new(&cache, 1, a.steps, dcfg.clone())?;
    let mut out = vec![0.0f32; h * d];
    let mut q = vec![0.0f32; h * d];
    let (mut k, mut v) = (vec![0.0f32; hd], vec![0.0f32; hd]);
    let t0 = Instant::now();
    let pb = bar(a.steps, "phase A");
    for step in 0..a.steps {
        for x in k.iter_mut().chain(v.iter_mut()).chain(q.iter_mut()) {
            *x = syn.normal();
        }
        // A slow drift and an outlier channel, so statistics see varied magnitudes.
        k[0] = k[0] * 4.0 + (step as f32 * 1e-5).sin() * 10.0;
        cache.append(id, &k, &v, ChunkLayout::TokenMajor)?;
        dec.step(&cache, &[id], &q, &mut out)?;
        if step % 4096 == 0 {
            pb.set_position(step as u64);
        }
    }
    pb.finish_and_clear();
    let phase_a = t0.elapsed().as_secs_f64();
    let oracle = oracle_decode(&cache, &[id], &q, &params)?;
    // The last step used top-k; rerun it dense to compare the pipeline with the oracle.
    let mut dense = Decoder::new(
        &cache,
        1,
        a.steps,
        DecodeConfig::new(params.clone(), Method::Dense),
    )?;
    dense.step(&cache, &[id], &q, &mut out)?;
    let last_rel = compare(&out, &oracle.out)?.rel;

    let (worst, minmax_exact, pages_checked) = check_stats(&cache, id)?;

    // Phase B: rotating sequences with release.
    let cap = a.live * a.release_at.div_ceil(16) + a.live;
    let mut cache = PagedKvCache::new(
        CacheConfig::new(hkv, d, cap)
            .with_kv_dtype(a.dtype)
            .with_stats_dtype(StatsDType::F32),
    )?;
    let mut live: Vec<_> = (0..a.live).map(|_| cache.add_sequence()).collect();
    let mut dec = Decoder::new(&cache, 1, a.release_at, dcfg)?;
    let mut samples = Vec::new();
    let mut released = 0;
    let t1 = Instant::now();
    let steps_b = a.phase_b_steps.unwrap_or(a.steps);
    let pb = bar(steps_b, "phase B");
    let mut rss0 = f64::NAN;
    for step in 0..steps_b {
        let slot = step % a.live;
        for x in k.iter_mut().chain(v.iter_mut()).chain(q.iter_mut()) {
            *x = syn.normal();
        }
        if cache.seq_len(live[slot])? >= a.release_at {
            cache.release(live[slot])?;
            live[slot] = cache.add_sequence();
            released += 1;
        }
        cache.append(live[slot], &k, &v, ChunkLayout::TokenMajor)?;
        dec.step(&cache, &[live[slot]], &q, &mut out)?;
        if step % (steps_b / 20).max(1) == 0 {
            let r = rss_mib();
            if step >= steps_b / 10 && rss0.is_nan() {
                rss0 = r;
            }
            samples.push((step, cache.free_pages(), r));
            pb.set_position(step as u64);
        }
    }
    pb.finish_and_clear();
    let rss_end = rss_mib();
    Ok(SoakResult {
        provenance: provenance(),
        steps: a.steps,
        phase_a_seconds: phase_a,
        pages_checked,
        max_stat_rel_diff: worst,
        min_max_exact: minmax_exact,
        last_step_rel: last_rel,
        phase_b_seconds: t1.elapsed().as_secs_f64(),
        phase_b_steps: steps_b,
        sequences_released: released,
        phase_b_samples: samples,
        rss_growth_mib: rss_end - rss0,
        device: format!("cpu ({} threads)", rayon::current_num_threads()),
        device_equals_host: None,
        device_free_change_mib: None,
    })
}

/// Incremental statistics of every page of `id` against ones recomputed from the stored
/// keys in f64: (largest mean/std relative difference, min/max exact, page rows checked).
fn check_stats(cache: &PagedKvCache, id: SeqId) -> Result<(f64, bool, usize)> {
    let (hkv, d) = (cache.config().num_kv_heads, cache.config().head_dim);
    let seq = cache.seq(id)?;
    let ps = cache.page_size();
    let mut worst = 0.0f64;
    let mut minmax_exact = true;
    let mut keys = Vec::new();
    for i in 0..seq.pages.len() {
        let n = seq.page_len(i, ps);
        for hh in 0..hkv {
            keys.resize(n * d, 0.0);
            for t in 0..n {
                cache.read_key(id, i * ps + t, hh, &mut keys[t * d..(t + 1) * d])?;
            }
            let r = reference_stats(&keys, d);
            let got = cache.page_stats(id, i, hh)?;
            for c in 0..d {
                minmax_exact &= got[0][c] as f64 == r[0][c] && got[1][c] as f64 == r[1][c];
                for st in 2..4 {
                    let e = r[st][c];
                    let diff = (got[st][c] as f64 - e).abs() / e.abs().max(1e-3);
                    worst = worst.max(diff);
                }
            }
        }
    }
    Ok((worst, minmax_exact, seq.pages.len() * hkv))
}

/// Fills k, v, q with fresh normals; keys get a slow drift and an outlier channel.
fn fill(syn: &mut Synth, k: &mut [f32], v: &mut [f32], q: &mut [f32], step: usize) {
    for x in k.iter_mut().chain(v.iter_mut()).chain(q.iter_mut()) {
        *x = syn.normal();
    }
    k[0] = k[0] * 4.0 + (step as f32 * 1e-5).sin() * 10.0;
}

/// The soak on the GPU (see the module docs).
pub fn run_gpu(a: &SoakArgs) -> Result<SoakResult> {
    use entmaxkv::gpu::cache::host_bytes;
    use entmaxkv::gpu::{DeviceCacheOptions, DeviceKvCache, GpuDecoder};
    let (h, hkv, d) = (a.heads, a.kv_heads, a.head_dim);
    let hd = hkv * d;
    let mut syn = Synth::new(a.seed);
    let cfg = CacheConfig::new(hkv, d, a.steps.div_ceil(16) + 1)
        .with_kv_dtype(a.dtype)
        .with_stats_dtype(StatsDType::F32);
    let mut host = PagedKvCache::new(cfg.clone())?;
    let id = host.add_sequence();
    let mut dev = DeviceKvCache::upload(
        &host,
        DeviceCacheOptions {
            max_seqs: 1,
            max_pages_per_seq: 0,
        },
    )?;
    let dev_id = dev.sequences()[0];
    let params = AttentionParams::new(h, 1.5);
    let dcfg = DecodeConfig::new(params.clone(), Method::TopK(Budget::Tokens(a.budget)));
    let mut dec = GpuDecoder::new(&dev, &[dev_id], a.steps, dcfg.clone())?;
    let mut q = vec![0.0f32; h * d];
    let (mut k, mut v) = (vec![0.0f32; hd], vec![0.0f32; hd]);
    let t0 = Instant::now();
    let pb = bar(a.steps, "phase A (cuda)");
    for step in 0..a.steps {
        fill(&mut syn, &mut k, &mut v, &mut q, step);
        host.append(id, &k, &v, ChunkLayout::TokenMajor)?;
        dev.append(&[dev_id], &k, &v)?;
        dec.set_query(&q)?;
        if step == 0 {
            dec.capture(&dev)?;
        }
        dec.replay(&dev)?;
        if step % 4096 == 0 {
            dev.stream().sync()?;
            pb.set_position(step as u64);
        }
        if step % 100_000 == 0 && step > 0 {
            eprintln!("phase A: {step} steps, {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    dev.stream().sync()?;
    pb.finish_and_clear();
    let phase_a = t0.elapsed().as_secs_f64();
    let (hk, hv, hs, hsk) = host_bytes(&host);
    let (dk, dv) = dev.download_kv()?;
    let ds = dev.download_stats()?;
    let dsk = dev.download_sketch()?;
    let equal = hk == dk && hv == dv && hs == ds && hsk == dsk;
    let (worst, minmax_exact, pages_checked) = check_stats(&host, id)?;
    let oracle = oracle_decode(&host, &[id], &q, &params)?;
    let mut dense = GpuDecoder::new(
        &dev,
        &[dev_id],
        a.steps,
        DecodeConfig::new(params.clone(), Method::Dense),
    )?;
    let mut out = vec![0.0f32; h * d];
    dense.step(&dev, &q, &mut out)?;
    let last_rel = compare(&out, &oracle.out)?.rel;
    drop((dense, dec, dev, host));

    // Phase B: rotating sequences on the device, a decoder planned per sequence.
    let cap = a.live * a.release_at.div_ceil(16) + a.live;
    let host = PagedKvCache::new(
        CacheConfig::new(hkv, d, cap)
            .with_kv_dtype(a.dtype)
            .with_stats_dtype(StatsDType::F32),
    )?;
    let mut dev = DeviceKvCache::upload(
        &host,
        DeviceCacheOptions {
            max_seqs: a.live,
            max_pages_per_seq: a.release_at.div_ceil(16) + 1,
        },
    )?;
    let mut live = Vec::with_capacity(a.live);
    for _ in 0..a.live {
        live.push(dev.add_sequence()?);
    }
    let mut decs: Vec<Option<GpuDecoder>> = (0..a.live).map(|_| None).collect();
    let mut samples = Vec::new();
    let mut released = 0;
    let gpu = dev.gpu().clone();
    let (mut rss0, mut free0) = (f64::NAN, f64::NAN);
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    let t1 = Instant::now();
    let steps_b = a.phase_b_steps.unwrap_or(a.steps);
    let pb = bar(steps_b, "phase B (cuda)");
    for step in 0..steps_b {
        let slot = step % a.live;
        fill(&mut syn, &mut k, &mut v, &mut q, step);
        if dev.seq_len(live[slot])? >= a.release_at {
            decs[slot] = None;
            dev.release(live[slot])?;
            live[slot] = dev.add_sequence()?;
            released += 1;
        }
        dev.append(&[live[slot]], &k, &v)?;
        if decs[slot].is_none() {
            decs[slot] = Some(GpuDecoder::new(
                &dev,
                &[live[slot]],
                a.release_at,
                dcfg.clone(),
            )?);
        }
        let dec = decs[slot].as_mut().expect("planned above");
        dec.set_query(&q)?;
        dec.replay(&dev)?;
        if step % (steps_b / 20).max(1) == 0 {
            dev.stream().sync()?;
            let (r, f) = (rss_mib(), mib(gpu.mem_info()?.0));
            if step >= steps_b / 10 && rss0.is_nan() {
                rss0 = r;
                free0 = f;
            }
            samples.push((step, dev.free_pages(), r));
            pb.set_position(step as u64);
        }
    }
    dev.stream().sync()?;
    pb.finish_and_clear();
    let (rss_end, free_end) = (rss_mib(), mib(gpu.mem_info()?.0));
    Ok(SoakResult {
        provenance: provenance(),
        steps: a.steps,
        phase_a_seconds: phase_a,
        pages_checked,
        max_stat_rel_diff: worst,
        min_max_exact: minmax_exact,
        last_step_rel: last_rel,
        phase_b_seconds: t1.elapsed().as_secs_f64(),
        phase_b_steps: steps_b,
        sequences_released: released,
        phase_b_samples: samples,
        rss_growth_mib: rss_end - rss0,
        device: format!(
            "{} (cc {}.{})",
            gpu.info().name,
            gpu.info().cc.0,
            gpu.info().cc.1
        ),
        device_equals_host: Some(equal),
        device_free_change_mib: Some(free_end - free0),
    })
}
