//! Memory-bandwidth probe: a STREAM-like copy and a read-only reduction over buffers far
//! larger than the caches, so every result can be stated as a fraction of the machine's
//! bandwidth.

use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bandwidth {
    /// Copy, counting bytes read + written, GB/s.
    pub copy_gbs: f64,
    /// Read-only reduction, GB/s.
    pub read_gbs: f64,
    pub bytes: usize,
}

/// Measures with `bytes`-sized buffers (best of `reps`).
pub fn measure(bytes: usize, reps: usize) -> Bandwidth {
    let n = bytes / 4;
    // In transparent huge pages, as the cache's arrays are: the decode passes' floors are
    // stated against what memory of that kind streams at (with 4 KiB pages the probe read
    // slower than the dense decode streamed its K, session 8).
    let mut src: Vec<f32> = entmaxkv::huge_zeroed(n);
    src.par_iter_mut()
        .enumerate()
        .for_each(|(i, x)| *x = (i % 1000) as f32 * 1e-3);
    let mut dst: Vec<f32> = entmaxkv::huge_zeroed(n);
    let chunk = 1 << 16;
    let mut best_copy = f64::INFINITY;
    let mut best_read = f64::INFINITY;
    let mut sink = 0.0f32;
    for _ in 0..reps {
        let t = Instant::now();
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
        best_copy = best_copy.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let s: f32 = src
            .par_chunks(chunk)
            .map(|c| {
                let mut acc = [0.0f32; 16];
                for w in c.chunks_exact(16) {
                    for j in 0..16 {
                        acc[j] += w[j];
                    }
                }
                acc.iter().sum::<f32>()
            })
            .sum();
        best_read = best_read.min(t.elapsed().as_secs_f64());
        sink += s + dst[n / 2];
    }
    std::hint::black_box(sink);
    Bandwidth {
        copy_gbs: 2.0 * (n * 4) as f64 / best_copy / 1e9,
        read_gbs: (n * 4) as f64 / best_read / 1e9,
        bytes: n * 4,
    }
}
