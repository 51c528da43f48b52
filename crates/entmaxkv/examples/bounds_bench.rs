//! Times `topk::seq_page_bounds` alone (one thread, statistics cache-resident at the
//! default 16K tokens): the top-k selection's bound pass without the rest of the step.
//!
//! `cargo run --release --example bounds_bench -- [context] [reps]`
use entmaxkv::cache::{CacheConfig, StatsDType};
use entmaxkv::selection::topk::{seq_page_bounds, TaskHeads};
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ctx: usize = args.get(1).map_or(16384, |s| s.parse().expect("context"));
    let reps: usize = args.get(2).map_or(2000, |s| s.parse().expect("reps"));
    let (h, d, ps) = (8, 64, 16);
    let mut syn = Synth::new(0);
    let prob = syn.problem(Workload::Iid, &[ctx], h, h, d);
    let cfg = CacheConfig::new(h, d, ctx.div_ceil(ps))
        .with_page_size(ps)
        .with_kv_dtype(DType::F16)
        .with_stats_dtype(StatsDType::Kv);
    let (cache, ids) = prob.build_cache(cfg, 0).expect("cache");
    let seq = cache.seq(ids[0]).expect("seq");
    let tasks: Vec<TaskHeads> = (0..h)
        .map(|k| TaskHeads {
            kv_head: k,
            h0: k,
            group: 1,
        })
        .collect();
    let slopes = vec![0.0f32; h];
    let (mut out, mut rows) = (Vec::new(), Vec::new());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut times = Vec::with_capacity(reps);
    pool.install(|| {
        for _ in 0..reps {
            let t = Instant::now();
            seq_page_bounds(&cache, seq, &tasks, &prob.q, &slopes, &mut out, &mut rows);
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    });
    times.sort_by(|a, b| a.total_cmp(b));
    let pages = seq.pages.len() - 1;
    println!(
        "seq_page_bounds ctx {ctx}: min {:.1} µs, median {:.1} µs ({:.1} ns a page, one thread), checksum {}",
        times[0],
        times[reps / 2],
        times[0] * 1e3 / pages as f64,
        out.iter().map(|&x| x as f64).sum::<f64>()
    );
}
