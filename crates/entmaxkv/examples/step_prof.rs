//! Times decode steps on the CPU bench's default shape (B = 1, 8/8 heads, D = 64, f16,
//! α = 1.5, page 16, iid keys), building the cache once: a target for `perf` and for
//! before/after comparisons.
//!
//! `cargo run --release --example step_prof -- <context> <methods> <iters> [threads] [heads] [kv_heads]`
//! with methods a comma-separated list of dense, dense-softmax, certified, robust,
//! gaussian, topk, and threads a comma-separated list of rayon pool sizes (default: the
//! global pool).
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::decode::{DecodeConfig, Decoder, Method};
use entmaxkv::selection::gaussian::{Criterion, GaussianOpts};
use entmaxkv::selection::topk::Budget;
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ctx: usize = args.get(1).map_or(131072, |s| s.parse().expect("context"));
    let names = args.get(2).map_or("certified", |s| s.as_str());
    let iters: usize = args.get(3).map_or(50, |s| s.parse().expect("iters"));
    let threads: Vec<usize> = args.get(4).map_or(vec![0], |s| {
        s.split(',').map(|x| x.parse().expect("threads")).collect()
    });
    let heads: usize = args.get(5).map_or(8, |s| s.parse().expect("heads"));
    let kv_heads: usize = args.get(6).map_or(8, |s| s.parse().expect("kv heads"));
    let (d, ps) = (64, 16);
    let mut syn = Synth::new(0);
    let prob = syn.problem(Workload::Iid, &[ctx], heads, kv_heads, d);
    let cfg = CacheConfig::new(kv_heads, d, ctx.div_ceil(ps))
        .with_page_size(ps)
        .with_kv_dtype(DType::F16)
        .with_stats_dtype(StatsDType::Kv);
    let (cache, ids) = prob.build_cache(cfg, 0).expect("cache");
    // STEP_WARM=1 keeps the caches warm between steps; by default each timed step starts
    // after streaming 1 GiB (the bench's protocol: the last-level cache evicted).
    let evict = std::env::var_os("STEP_WARM")
        .is_none()
        .then(|| entmaxkv::timing::CacheEvictor::with_bytes(1 << 30));
    for &nt in &threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(nt)
            .build()
            .expect("pool");
        let nt = pool.current_num_threads();
        for name in names.split(',') {
            let robust = GaussianOpts {
                criterion: Criterion::Robust,
                ..GaussianOpts::default()
            };
            let (method, alpha) = match name {
                "dense" => (Method::Dense, 1.5),
                "dense-softmax" => (Method::Dense, 1.0),
                "certified" => (Method::Certified, 1.5),
                "robust" => (Method::Gaussian(robust), 1.5),
                "gaussian" => (Method::Gaussian(GaussianOpts::default()), 1.5),
                "topk" => (Method::TopK(Budget::Fraction(0.125)), 1.5),
                o => panic!("unknown method {o}"),
            };
            let cfg = DecodeConfig::new(AttentionParams::new(heads, alpha), method);
            let mut dec = Decoder::new(&cache, 1, ctx, cfg).expect("decoder");
            let mut out = vec![0.0f32; prob.q.len()];
            pool.install(|| {
                for _ in 0..3 {
                    dec.step(&cache, &ids, &prob.q, &mut out).expect("step");
                }
                let (mut tot, mut sel, mut att) = (vec![], vec![], vec![]);
                let mut cpus = vec![];
                let cpu0 = cpu_ms();
                for _ in 0..iters {
                    if let Some(e) = &evict {
                        e.evict();
                    }
                    let c = cpu_ns();
                    let t = Instant::now();
                    let r = dec.step(&cache, &ids, &prob.q, &mut out).expect("step");
                    tot.push(t.elapsed().as_secs_f64() * 1e3);
                    cpus.push((cpu_ns() - c) as f64 / 1e6);
                    sel.push(r.times.selection_ns as f64 / 1e6);
                    att.push(r.times.attention_ns as f64 / 1e6);
                }
                let cpu = (cpu_ms() - cpu0) / iters as f64;
                let med = |v: &mut Vec<f64>| {
                    v.sort_by(|a, b| a.total_cmp(b));
                    v[v.len() / 2]
                };
                let checksum: f64 = out.iter().map(|&x| x as f64).sum();
                let cmed = med(&mut cpus);
                println!(
                    "{name} ctx {ctx} threads {nt}: median {:.3} ms (selection {:.3}, attention {:.3}), min selection {:.3}, cpu {cpu:.2} ms/step (per step: median {cmed:.3}, min {:.3}), checksum {checksum:.6}",
                    med(&mut tot),
                    med(&mut sel),
                    med(&mut att),
                    sel[0],
                    cpus[0]
                );
            });
        }
    }
}

/// CPU time of the whole process (all threads), ns (`clock_gettime` of the process CPU
/// clock): time on a core only, so a step's figure leaves out the time other load on the
/// machine takes the cores away (not its share of the memory bus).
fn cpu_ns() -> u64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, tp: *mut Timespec) -> i32;
    }
    const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
    let mut t = Timespec { sec: 0, nsec: 0 };
    // SAFETY: a valid out pointer; the C library's clock_gettime (linked by std on Linux).
    let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    if rc != 0 {
        return 0;
    }
    t.sec as u64 * 1_000_000_000 + t.nsec as u64
}

/// CPU time of the whole process (all threads), ms, from /proc (10 ms ticks): the mean over
/// many steps is robust to other load on the machine, unlike wall time.
fn cpu_ms() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are the 12th and 13th after the command name.
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) * 10.0
}
