//! Times `topk::seq_page_bounds` alone on one thread: the top-k selection's bound pass
//! without the rest of the step (B = 1, 8/8 heads, D = 64, f16 statistics).
//!
//! `cargo run --release --example bounds_bench -- [context] [reps] [cold] [scattered]`
//! * `cold`: the last-level cache is evicted before every call (as a decode step meets its
//!   layer's statistics); otherwise the rows stay cache-resident (at small contexts).
//! * `scattered`: the sequence's pages lie in the pool in a random order (filler sequences
//!   take random runs of pages between its pages), where a page-ordered walk is no longer
//!   a linear stream the hardware prefetcher follows.
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, StatsDType};
use entmaxkv::selection::topk::{seq_page_bounds, TaskHeads};
use entmaxkv::synth::{Synth, Workload};
use entmaxkv::DType;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ctx: usize = args.get(1).map_or(16384, |s| s.parse().expect("context"));
    let reps: usize = args.get(2).map_or(2000, |s| s.parse().expect("reps"));
    let cold = args.iter().any(|a| a == "cold");
    let scattered = args.iter().any(|a| a == "scattered");
    let (h, d, ps) = (8, 64, 16);
    let mut syn = Synth::new(0);
    let prob = syn.problem(Workload::Iid, &[ctx], h, h, d);
    let pages = ctx.div_ceil(ps);
    let cfg = CacheConfig::new(h, d, if scattered { 4 * pages } else { pages })
        .with_page_size(ps)
        .with_kv_dtype(DType::F16)
        .with_stats_dtype(StatsDType::Kv);
    let mut cache = PagedKvCache::new(cfg).expect("cache");
    let id = cache.add_sequence();
    let filler = cache.add_sequence();
    let hd = h * d;
    let (k, v) = (&prob.k[0], &prob.v[0]);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let zeros = vec![0.0f32; 3 * ps * hd];
    for p in 0..pages {
        let r = (p * ps * hd)..(((p + 1) * ps).min(ctx) * hd);
        cache
            .append(id, &k[r.clone()], &v[r], ChunkLayout::TokenMajor)
            .expect("append");
        if scattered {
            // 0–2 filler pages after each of the sequence's pages (xorshift).
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let n = (state % 3) as usize * ps * hd;
            if n > 0 {
                cache
                    .append(filler, &zeros[..n], &zeros[..n], ChunkLayout::TokenMajor)
                    .expect("filler");
            }
        }
    }
    let seq = cache.seq(id).expect("seq");
    let tasks: Vec<TaskHeads> = (0..h)
        .map(|k| TaskHeads {
            kv_head: k,
            h0: k,
            group: 1,
        })
        .collect();
    let slopes = vec![0.0f32; h];
    let (mut out, mut rows) = (Vec::new(), Vec::new());
    let evict = cold.then(|| entmaxkv::timing::CacheEvictor::with_bytes(1 << 28));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let mut times = Vec::with_capacity(reps);
    pool.install(|| {
        for _ in 0..reps {
            if let Some(e) = &evict {
                e.evict();
            }
            let t = Instant::now();
            seq_page_bounds(&cache, seq, &tasks, &prob.q, &slopes, &mut out, &mut rows);
            times.push(t.elapsed().as_secs_f64() * 1e6);
        }
    });
    times.sort_by(|a, b| a.total_cmp(b));
    let closed = seq.pages.len() - 1;
    println!(
        "seq_page_bounds ctx {ctx}{}{}: min {:.1} µs, median {:.1} µs ({:.1} ns a page at the median, one thread), checksum {}",
        if cold { " cold" } else { "" },
        if scattered { " scattered" } else { "" },
        times[0],
        times[reps / 2],
        times[reps / 2] * 1e3 / closed as f64,
        out.iter().map(|&x| x as f64).sum::<f64>()
    );
}
