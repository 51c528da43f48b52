//! Exact entmax, the f32 fast threshold and the Halley correction against independent
//! brute-force solvers written here.

use entmaxkv::tau::{
    entmax, entmax_threshold_f32, entmax_weights_f32, halley_correct, moments, Entmax,
};
use entmaxkv::Error;
use proptest::prelude::*;

/// Brute force: for every support size k of the sorted z, bisect Σ_{j≤k}(z_j − τ)^β = 1 on
/// [z_1 − 1, z_k] (200 halvings) and keep the k whose root lies in [z_{k+1}, z_k).
fn brute_tau(scores: &[f64], alpha: f64) -> f64 {
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let mut z: Vec<f64> = scores.iter().map(|s| a * s).collect();
    z.sort_by(|x, y| y.partial_cmp(x).unwrap());
    for k in 1..=z.len() {
        let f = |tau: f64| -> f64 {
            z[..k]
                .iter()
                .map(|&zj| (zj - tau).max(0.0).powf(beta))
                .sum::<f64>()
                - 1.0
        };
        let (mut lo, mut hi) = (z[0] - 1.0, z[k - 1]);
        if f(hi) > 0.0 {
            continue; // the first k entries alone already exceed 1 at τ = z_k
        }
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if f(mid) > 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let tau = 0.5 * (lo + hi);
        if k == z.len() || tau >= z[k] {
            return tau;
        }
    }
    unreachable!("some support size always works")
}

/// The textbook sparsemax (Martins & Astudillo 2016, Alg. 1).
fn textbook_sparsemax(z: &[f64]) -> Vec<f64> {
    let mut s = z.to_vec();
    s.sort_by(|x, y| y.partial_cmp(x).unwrap());
    let mut cum = 0.0;
    let mut k_z = 0;
    let mut cum_k = 0.0;
    for (i, &v) in s.iter().enumerate() {
        cum += v;
        let k = (i + 1) as f64;
        if 1.0 + k * v > cum {
            k_z = i + 1;
            cum_k = cum;
        }
    }
    let tau = (cum_k - 1.0) / k_z as f64;
    z.iter().map(|&v| (v - tau).max(0.0)).collect()
}

fn softmax(s: &[f64]) -> Vec<f64> {
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
    let t: f64 = e.iter().sum();
    e.iter().map(|x| x / t).collect()
}

fn check_invariants(s: &[f64], alpha: f64, e: &Entmax) {
    let sum: f64 = e.p.iter().sum();
    assert!(
        (sum - 1.0).abs() <= 1e-12,
        "alpha={alpha} sum={sum} s={s:?} p={:?}",
        e.p
    );
    assert!(e.p.iter().all(|&p| p >= 0.0 && p.is_finite()));
    assert!(e.tau.is_finite());
    if alpha > 1.0 {
        let a = alpha - 1.0;
        let mut count = 0;
        for (&si, &pi) in s.iter().zip(&e.p) {
            let gap = a * si - e.tau;
            if gap > 0.0 {
                count += 1;
            }
            // away from the boundary the weight is positive exactly on {z > τ}
            if gap.abs() > 1e-9 {
                assert_eq!(pi > 0.0, gap > 0.0, "alpha={alpha} s={si} tau={}", e.tau);
            }
        }
        let near = s
            .iter()
            .filter(|&&si| (a * si - e.tau).abs() <= 1e-9)
            .count();
        assert!(
            (e.support as i64 - count as i64).unsigned_abs() as usize <= near,
            "support {} vs {count}",
            e.support
        );
    } else {
        assert_eq!(e.support, s.len());
    }
}

fn alpha_strategy() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.5),
        Just(2.0),
        Just(4.0 / 3.0),
        Just(1.25),
        Just(3.0),
        1.05f64..4.0,
    ]
}

/// Scores with deliberate ties (values drawn from a small grid half of the time).
fn scores_strategy(max_n: usize) -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        prop::collection::vec(-4.0f64..4.0, 1..max_n),
        prop::collection::vec((-6i32..6).prop_map(|k| k as f64 * 0.25), 1..max_n),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn entmax_matches_brute_force(s in scores_strategy(24), alpha in alpha_strategy()) {
        let e = entmax(&s, alpha).unwrap();
        check_invariants(&s, alpha, &e);
        let tau = brute_tau(&s, alpha);
        prop_assert!((e.tau - tau).abs() <= 1e-11 * tau.abs().max(1.0),
            "alpha={} tau={} brute={}", alpha, e.tau, tau);
        let beta = 1.0 / (alpha - 1.0);
        for (&si, &pi) in s.iter().zip(&e.p) {
            let want = ((alpha - 1.0) * si - tau).max(0.0).powf(beta);
            prop_assert!((pi - want).abs() <= 1e-10, "p={} want={}", pi, want);
        }
    }

    #[test]
    fn sparsemax_is_textbook(s in scores_strategy(64)) {
        let e = entmax(&s, 2.0).unwrap();
        let want = textbook_sparsemax(&s);
        for (p, w) in e.p.iter().zip(&want) {
            prop_assert!((p - w).abs() <= 1e-13, "{} vs {}", p, w);
        }
    }

    /// The sort-based closed forms and the generic Halley solver agree (α nudged off the
    /// special values so it takes the Halley path).
    #[test]
    fn closed_forms_agree_with_halley(s in scores_strategy(64)) {
        for alpha in [1.5f64, 2.0] {
            let exact = entmax(&s, alpha).unwrap();
            let nudged = entmax(&s, alpha + 1e-13).unwrap();
            prop_assert!((exact.tau - nudged.tau).abs() <= 1e-10 * exact.tau.abs().max(1.0));
        }
    }

    #[test]
    fn softmax_is_exact(s in prop::collection::vec(-30.0f64..30.0, 1..50)) {
        let e = entmax(&s, 1.0).unwrap();
        check_invariants(&s, 1.0, &e);
        for (p, w) in e.p.iter().zip(softmax(&s)) {
            prop_assert!((p - w).abs() <= 1e-14);
        }
    }

    #[test]
    fn f32_threshold_matches_oracle(
        s in prop::collection::vec(-8.0f32..8.0, 1..400),
        alpha in prop_oneof![Just(1.0), alpha_strategy()],
    ) {
        let s64: Vec<f64> = s.iter().map(|&x| f64::from(x)).collect();
        let oracle = entmax(&s64, alpha).unwrap();
        let mut scratch = Vec::new();
        let tau = entmax_threshold_f32(&s, alpha, &mut scratch).unwrap();
        prop_assert!((tau - oracle.tau).abs() <= 1e-10 * oracle.tau.abs().max(1.0),
            "alpha={} fast={} oracle={}", alpha, tau, oracle.tau);
        let mut out = vec![0.0f32; s.len()];
        let sum = entmax_weights_f32(&s, alpha, tau, &mut out).unwrap();
        // The weights are formed from x = (α−1)s − τ in absolute terms, rounded at the size
        // of (α−1)s and τ; for β = 1/(α−1) < 1 a token just inside the support
        // (x → 0) turns that rounding into a relative error β·ε/x of its weight (a case
        // with x = 6e-9 at α = 3.69 summed to 1 + 2e-10). Allowed: 1e-10 plus that
        // propagated rounding, β·p_i/x_i · 8ε·(|(α−1)s_i| + |τ|) over the support.
        let a = alpha - 1.0;
        let cond: f64 = if alpha == 1.0 {
            0.0
        } else {
            s64.iter()
                .zip(&oracle.p)
                .map(|(&si, &pi)| {
                    let x = a * si - oracle.tau;
                    if x > 0.0 {
                        pi / (a * x) * 8.0 * f64::EPSILON * ((a * si).abs() + oracle.tau.abs())
                    } else {
                        0.0
                    }
                })
                .sum()
        };
        prop_assert!((sum - 1.0).abs() <= 1e-10 + cond, "sum {} (allowed 1e-10 + {:e})", sum, cond);
        for (o, p) in out.iter().zip(&oracle.p) {
            prop_assert!((f64::from(*o) - p).abs() <= 1e-6 * p + 1e-9, "{} vs {}", o, p);
        }
    }

    /// From any start, the correction stays in [z_max − 1, z_max − n^{−(α−1)}] and converges.
    #[test]
    fn halley_correct_bracketed(
        z in prop::collection::vec(-3.0f32..3.0, 1..200),
        alpha in alpha_strategy(),
        start in -50.0f64..50.0,
    ) {
        let zmax = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let a = alpha - 1.0;
        let lo = zmax - 1.0;
        let hi = zmax - (z.len() as f64).powf(-a);
        let s: Vec<f64> = z.iter().map(|&v| f64::from(v) / a).collect();
        let exact = entmax(&s, alpha).unwrap().tau;
        for iters in [0usize, 1, 2, 3] {
            let t = halley_correct(&z, alpha, start, iters).unwrap();
            prop_assert!(t >= lo - 1e-12 && t <= hi + 1e-12, "iters={} t={} [{}, {}]", iters, t, lo, hi);
        }
        let t = halley_correct(&z, alpha, start, 80).unwrap();
        prop_assert!((t - exact).abs() <= 1e-9 * exact.abs().max(1.0), "{} vs {}", t, exact);
        let (a0, _, _) = moments(&z, alpha, t).unwrap();
        prop_assert!((a0 - 1.0).abs() <= 1e-9);
    }
}

#[test]
fn alpha_to_one_approaches_softmax() {
    let s: Vec<f64> = (0..40)
        .map(|i| ((i * 7919) % 61) as f64 / 10.0 - 3.0)
        .collect();
    let sm = softmax(&s);
    let err = |alpha: f64| -> f64 {
        let e = entmax(&s, alpha).unwrap();
        check_invariants(&s, alpha, &e);
        e.p.iter()
            .zip(&sm)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f64::max)
    };
    let (e3, e4) = (err(1.001), err(1.0001));
    assert!(e4 < 1e-3, "alpha=1.0001 max |p - softmax| = {e4}");
    assert!(e4 < e3 / 5.0, "not converging: {e3} -> {e4}");
}

#[test]
fn edge_cases() {
    for alpha in [1.0, 1.25, 4.0 / 3.0, 1.5, 2.0, 3.0, 7.0, 1.0001] {
        // n = 1
        let e = entmax(&[0.3], alpha).unwrap();
        assert_eq!(e.p, vec![1.0]);
        if alpha > 1.0 {
            assert!((e.tau - ((alpha - 1.0) * 0.3 - 1.0)).abs() < 1e-15);
        }
        // all equal: uniform, τ = z − n^{−(α−1)}
        let e = entmax(&[2.0; 10], alpha).unwrap();
        for p in &e.p {
            assert!((p - 0.1).abs() < 1e-14, "alpha={alpha} p={p}");
        }
        if alpha > 1.0 {
            let want = (alpha - 1.0) * 2.0 - 10f64.powf(1.0 - alpha);
            assert!((e.tau - want).abs() < 1e-14, "alpha={alpha}");
        }
        // ties at the top
        let e = entmax(&[5.0, 5.0, -200.0], alpha).unwrap();
        assert!((e.p[0] - 0.5).abs() < 1e-12 && (e.p[0] - e.p[1]).abs() < 1e-15);
        // extreme finite magnitudes
        for s in [
            vec![1e300, -1e300, 0.0],
            vec![-1e300, -1e300],
            vec![1e300, 1e300 * (1.0 - 1e-15)],
            vec![-1e300, 1e-300, 3.0],
            vec![f64::MAX / 8.0, -f64::MAX / 8.0],
        ] {
            let e = entmax(&s, alpha).unwrap();
            check_invariants(&s, alpha, &e);
        }
    }
    // (α−1)·max overflows: typed error, not inf/NaN
    assert!(matches!(
        entmax(&[1e308, 0.0], 3.0),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn scratch_is_reused() {
    let s: Vec<f32> = (0..1000).map(|i| ((i * 31) % 97) as f32 * 0.01).collect();
    let mut scratch = Vec::with_capacity(1000);
    let ptr = scratch.as_ptr();
    for alpha in [1.5, 2.0, 1.7] {
        entmax_threshold_f32(&s, alpha, &mut scratch).unwrap();
        assert_eq!(scratch.as_ptr(), ptr, "scratch reallocated");
        assert_eq!(scratch.capacity(), 1000);
    }
}

#[test]
fn moments_match_direct_sums() {
    let z: Vec<f32> = vec![0.9, 0.5, 0.2, -0.4, 0.85];
    let tau = 0.1;
    for alpha in [1.5, 2.0, 1.3, 2.5] {
        let beta = 1.0 / (alpha - 1.0);
        let (m0, m1, m2) = moments(&z, alpha, tau).unwrap();
        let x: Vec<f64> = z
            .iter()
            .map(|&v| f64::from(v) - tau)
            .filter(|&v| v > 0.0)
            .collect();
        let want0: f64 = x.iter().map(|v| v.powf(beta)).sum();
        let want1: f64 = x.iter().map(|v| v.powf(beta - 1.0)).sum();
        let want2: f64 = x.iter().map(|v| v.powf(beta - 2.0)).sum();
        assert!((m0 - want0).abs() < 1e-13 * want0);
        assert!((m1 - want1).abs() < 1e-13 * want1);
        assert!((m2 - want2).abs() < 1e-12 * want2.abs().max(1.0));
    }
    // α = 1: a correction step is the exact log-sum-exp
    let lse = (z.iter().map(|&v| f64::from(v).exp()).sum::<f64>()).ln();
    assert!((halley_correct(&z, 1.0, 0.0, 1).unwrap() - lse).abs() < 1e-14);
    assert_eq!(halley_correct(&z, 1.0, 0.25, 0).unwrap(), 0.25);
}

#[test]
fn bad_input_is_typed() {
    let mut scratch = Vec::new();
    // α < 1, NaN, ∞
    for alpha in [0.5, f64::NAN, f64::INFINITY, -1.0] {
        assert!(matches!(
            entmax(&[1.0], alpha),
            Err(Error::InvalidArgument { arg: "alpha", .. })
        ));
        assert!(matches!(
            entmax_threshold_f32(&[1.0], alpha, &mut scratch),
            Err(Error::InvalidArgument { arg: "alpha", .. })
        ));
        assert!(matches!(
            halley_correct(&[1.0], alpha, 0.0, 1),
            Err(Error::InvalidArgument { arg: "alpha", .. })
        ));
        assert!(matches!(
            moments(&[1.0], alpha, 0.0),
            Err(Error::InvalidArgument { arg: "alpha", .. })
        ));
    }
    // empty
    assert!(matches!(
        entmax(&[], 1.5),
        Err(Error::InvalidArgument { arg: "scores", .. })
    ));
    assert!(matches!(
        entmax_threshold_f32(&[], 1.5, &mut scratch),
        Err(Error::InvalidArgument { arg: "scores", .. })
    ));
    assert!(matches!(
        halley_correct(&[], 1.5, 0.0, 1),
        Err(Error::InvalidArgument { .. })
    ));
    // NaN / ±Inf scores, with the index
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        assert!(matches!(
            entmax(&[0.0, bad], 1.5),
            Err(Error::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            entmax_threshold_f32(&[0.0, 1.0, bad as f32], 2.0, &mut scratch),
            Err(Error::NonFinite { index: 2, .. })
        ));
        assert!(matches!(
            halley_correct(&[bad as f32], 2.0, 0.0, 1),
            Err(Error::NonFinite { index: 0, .. })
        ));
        assert!(matches!(
            moments(&[bad as f32], 2.0, 0.0),
            Err(Error::NonFinite { index: 0, .. })
        ));
        let mut out = [0.0f32; 1];
        assert!(matches!(
            entmax_weights_f32(&[bad as f32], 2.0, 0.0, &mut out),
            Err(Error::NonFinite { .. })
        ));
        // non-finite τ arguments
        assert!(matches!(
            entmax_weights_f32(&[0.0], 2.0, bad, &mut out),
            Err(Error::InvalidArgument { arg: "tau", .. })
        ));
        assert!(matches!(
            halley_correct(&[0.0], 2.0, bad, 1),
            Err(Error::InvalidArgument { arg: "tau0", .. })
        ));
        assert!(matches!(
            moments(&[0.0], 2.0, bad),
            Err(Error::InvalidArgument { arg: "tau", .. })
        ));
    }
    // α = 1 has no entmax moments; length mismatch of the output
    assert!(matches!(
        moments(&[0.0], 1.0, 0.0),
        Err(Error::InvalidArgument { .. })
    ));
    let mut out = [0.0f32; 2];
    assert!(matches!(
        entmax_weights_f32(&[0.0], 2.0, 0.0, &mut out),
        Err(Error::Mismatch { .. })
    ));
}
