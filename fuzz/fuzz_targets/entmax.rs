//! Exact entmax on adversarial score vectors: Σp = 1, p ≥ 0, support = {z > τ}, no NaN;
//! non-finite input is a typed error. The f32 threshold agrees with the f64 oracle.
#![no_main]
use arbitrary::Arbitrary;
use entmaxkv::tau::{entmax, entmax_threshold_f32};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    alpha_pick: u8,
    scale_exp: i8,
    raw: Vec<i16>,
    dup: u8,
}

const ALPHAS: [f64; 8] = [1.0, 1.25, 4.0 / 3.0, 1.5, 2.0, 3.0, 1.05, 10.0];

fuzz_target!(|inp: Input| {
    if inp.raw.is_empty() || inp.raw.len() > 4096 {
        return;
    }
    let alpha = ALPHAS[inp.alpha_pick as usize % ALPHAS.len()];
    let scale = 2f64.powi(inp.scale_exp as i32 / 4);
    let mut s: Vec<f64> = inp.raw.iter().map(|&x| x as f64 * scale / 256.0).collect();
    // Long runs of ties.
    for i in 0..(inp.dup as usize).min(s.len()) {
        s[i] = s[0];
    }
    let Ok(e) = entmax(&s, alpha) else {
        // Only overflow of (α−1)·max may be refused.
        assert!(s.iter().any(|x| ((alpha - 1.0) * x).abs() > 1e300), "refused finite input");
        return;
    };
    let sum: f64 = e.p.iter().sum();
    assert!((sum - 1.0).abs() < 1e-9, "sum {sum}");
    assert!(e.p.iter().all(|&p| p >= 0.0 && p.is_finite()));
    assert!(e.tau.is_finite());
    if alpha > 1.0 {
        let a = alpha - 1.0;
        for (i, &x) in s.iter().enumerate() {
            let z = a * x;
            let inside = z > e.tau;
            // τ is stored as an absolute f64; when |τ| is huge, tokens within a few ulps of
            // it may fall on either side of the rounded τ.
            let ulps = 8.0 * f64::EPSILON * z.abs().max(e.tau.abs());
            assert!(
                inside == (e.p[i] > 0.0) || (z - e.tau).abs() <= ulps,
                "support mismatch at {i}: z {z} tau {}",
                e.tau
            );
        }
    }
    let s32: Vec<f32> = s.iter().map(|&x| x as f32).collect();
    if s32.iter().all(|x| x.is_finite()) && s.iter().all(|x| x.abs() < 1e30) {
        let mut scratch = Vec::new();
        let t32 = entmax_threshold_f32(&s32, alpha, &mut scratch).expect("finite f32 input");
        let s64: Vec<f64> = s32.iter().map(|&x| x as f64).collect();
        let t64 = entmax(&s64, alpha).unwrap().tau;
        assert!((t32 - t64).abs() <= 1e-6 * t64.abs().max(1.0), "{t32} vs {t64}");
    }
});
