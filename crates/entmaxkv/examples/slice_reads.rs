//! How fast this machine reads a sparse step's K: 2 KiB slices (one kv head's 16 rows of 64
//! f16, a page of the default cache) kept at random with probability `f` from a 128 MiB
//! pool, read in ascending order (as the sparse walk reads them) and summed, against reading
//! every slice. No decode work: the ceiling of any sparse CPU step's K pass.
//!
//! `cargo run --release --example slice_reads -- [threads] [prefetch_slices] [rounds]`
//! * `threads` (default 1) split the pool into contiguous ranges;
//! * `prefetch_slices` (default 0): software prefetch (into L2) of the kept slice that many
//!   kept slices ahead, one whole slice at a time;
//! * the last-level cache is evicted (1 GiB read) before every timed pass.
//!
//! Session 19, 2-core development machine (read probe 32–36 GB/s): with two threads,
//! reading 60% of the slices took 0.82–0.95 of the time of reading all of them (the
//! skipped slices sit between read ones), and 1/8 of them ran at 11.8–13.0 GB/s of useful
//! bytes against 26–28 GB/s streaming (one thread: 6.9–7.7 against 18–20). So on this
//! machine a top-k 1/8 step's kept K alone takes ~1.3 ms against the 1.0 ms byte floor of
//! the whole step, before any score is computed.
use entmaxkv::synth::splitmix64;
use rayon::prelude::*;
use std::time::Instant;

const SLICE: usize = 2048;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let threads: usize = args.get(1).map_or(1, |s| s.parse().expect("threads"));
    let pf: usize = args
        .get(2)
        .map_or(0, |s| s.parse().expect("prefetch slices"));
    let rounds: usize = args.get(3).map_or(2, |s| s.parse().expect("rounds"));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("pool");
    let n = 128usize << 20;
    let ns = n / SLICE;
    let buf: Vec<u64> = (0..n as u64 / 8).collect();
    let evict = entmaxkv::timing::CacheEvictor::with_bytes(1 << 30);
    let words = SLICE / 8;
    for _ in 0..rounds {
        let mut full_ms = f64::NAN;
        for (fi, &f) in [1.0f64, 0.6, 0.3, 0.125, 0.0625].iter().enumerate() {
            // Kept slices: a fixed pseudo-random draw per fraction (splitmix64).
            let keep: Vec<usize> = (0..ns)
                .filter(|&i| {
                    let z = splitmix64((i as u64) ^ ((fi as u64 + 1) << 40));
                    (z >> 11) as f64 / (1u64 << 53) as f64 <= f
                })
                .collect();
            pool.install(|| evict.evict());
            let t = Instant::now();
            let per = keep.len().div_ceil(threads).max(1);
            let sum: u64 = pool.install(|| {
                keep.par_chunks(per)
                    .map(|ks| {
                        let mut acc = 0u64;
                        for (j, &i) in ks.iter().enumerate() {
                            if pf > 0 {
                                if let Some(&a) = ks.get(j + pf) {
                                    entmaxkv::attention::cpu::prefetch(
                                        &buf[a * words..(a + 1) * words],
                                    );
                                }
                            }
                            acc = buf[i * words..(i + 1) * words]
                                .iter()
                                .fold(acc, |s, &x| s.wrapping_add(x));
                        }
                        acc
                    })
                    .reduce(|| 0, u64::wrapping_add)
            });
            let ms = t.elapsed().as_secs_f64() * 1e3;
            if f == 1.0 {
                full_ms = ms;
            }
            std::hint::black_box(sum);
            println!(
                "threads {threads} prefetch {pf}: keep {f:.4}: {ms:.2} ms ({:.2} of reading all), useful {:.1} GB/s, {} of {ns} slices",
                ms / full_ms,
                (keep.len() * SLICE) as f64 / ms / 1e6,
                keep.len()
            );
        }
    }
}
