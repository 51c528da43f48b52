//! Micro-timings of the CPU kernel's inner loops (single thread): f16 widening, dot products.
use entmaxkv::attention::cpu::dot;
use entmaxkv::KvElem;
use half::f16;
use std::time::Instant;

fn main() {
    let n = 1 << 24;
    let src: Vec<f16> = (0..n)
        .map(|i| f16::from_f32((i % 97) as f32 * 0.01))
        .collect();
    let mut dst = vec![0.0f32; 1024];
    let t = Instant::now();
    let mut s = 0.0;
    for c in src.chunks(1024) {
        f16::slice_to_f32(c, &mut dst);
        s += dst[7];
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "widen f16: {:.2} GB/s of f16 ({s})",
        (n * 2) as f64 / el / 1e9
    );
    let q: Vec<f32> = (0..64).map(|i| i as f32 * 0.1).collect();
    let rows: Vec<f32> = (0..1024).map(|i| i as f32 * 0.001).collect();
    let t = Instant::now();
    let mut acc = 0.0;
    let reps = n / 1024;
    for _ in 0..reps {
        for r in rows.chunks(64) {
            acc += dot(&q, r);
        }
    }
    let el = t.elapsed().as_secs_f64();
    println!(
        "dot64: {:.2} ns each ({acc})",
        el * 1e9 / (reps * 16) as f64
    );
}
