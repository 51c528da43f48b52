// Session 9: an #[ignore]d test that sat in crates/entmaxkv/src/attention/stream.rs's tests
// module (it needs the private simd kernels); kept here as the record of the measurement.
// The 8-output-stream variant was added for the second round (see BENCHMARKS.md).
    /// Cold streaming of the K-pass kernel alone (no decode structure): 128 MiB of f16 rows
    /// scored in 1 MiB blocks on the rayon pool, the caches evicted before each round, with
    /// the prefetch 16 KiB ahead (as the dense pass), 2 KiB ahead, or none. A measurement,
    /// not a check: `cargo test --release -p entmaxkv --lib cold_k_stream -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn cold_k_stream_microbench() {
        if !simd::has_avx512() {
            return;
        }
        let (d, ps) = (64usize, 16usize);
        let rows_total = (128usize << 20) / (d * 2);
        let mut k: Vec<u16> = crate::huge_zeroed(rows_total * d + (1 << 16));
        k.par_iter_mut().enumerate().for_each(|(i, x)| *x = 0x3c00 ^ (i as u16 & 0x3ff));
        let mut out: Vec<f32> = crate::huge_zeroed(rows_total);
        let mut evict: Vec<u64> = crate::huge_zeroed(1 << 27);
        evict.par_iter_mut().enumerate().for_each(|(i, x)| *x = i as u64);
        let q: Vec<f32> = (0..d).map(|i| i as f32 * 1e-3).collect();
        let block_rows = (1 << 20) / (d * 2);
        for (name, dist) in [("16K", 16384usize), ("2K", 2048), ("none", 0), ("16K", 16384), ("2K", 2048), ("none", 0)] {
            let mut best = f64::INFINITY;
            for _ in 0..5 {
                let x = evict.par_chunks(1 << 15).map(|c| c.iter().fold(0u64, |a, &x| a ^ x)).reduce(|| 0, |a, b| a ^ b);
                std::hint::black_box(x);
                let t = std::time::Instant::now();
                let kp = SharedMut::new(&mut out[..]);
                (0..rows_total / block_rows).into_par_iter().for_each(|b| {
                    let mut r = b * block_rows;
                    while r < (b + 1) * block_rows {
                        let rows = k[r * d..].as_ptr();
                        let pf = if dist == 0 { std::ptr::null() } else { rows.wrapping_add(dist / 2) };
                        // SAFETY: rows r..r+16 exist (plus slack for pf), out rows r..r+16.
                        unsafe {
                            std::hint::black_box(simd::avx512::scores(rows, pf, ps, d, q.as_ptr(), kp.at(r), None));
                        }
                        r += ps;
                    }
                });
                best = best.min(t.elapsed().as_secs_f64());
            }
            eprintln!("prefetch {name:>4}: {:.1} GB/s cold", (rows_total * d * 2) as f64 / best / 1e9);
        }
    }
}

