//! The distributional τ̂ against an independent brute-force solver written here: composite
//! Simpson for E[(aS − τ)_+^β] plus plain bisection.

use entmaxkv::tau::{
    page_max_quantile_z, tau_hat_mixture, tau_hat_single, trunc_gauss_moments, TauHatOpts,
};
use entmaxkv::Error;
use proptest::prelude::*;

const SIGMA_FLOOR: f64 = 1e-6;

fn pdf(x: f64) -> f64 {
    (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

/// E[Y_+^β], Y ~ N(m, s²), by composite Simpson over m ± 14s (y = w² near 0 so the
/// y^β endpoint is smooth). Only for |m/s| ≲ 30, where 2000 intervals resolve it.
fn brute_e(m: f64, s: f64, beta: f64) -> f64 {
    let lo = (m - 14.0 * s).max(0.0);
    // deep in the tail the mass above 0 decays like e^{−|t|y/s}: cover 40 of those scales
    let hi = (m + 14.0 * s).max(40.0 * s / (m.abs() / s).max(1.0));
    if hi <= 0.0 {
        return 0.0;
    }
    let n = 2000;
    let (a, b, f): (f64, f64, Box<dyn Fn(f64) -> f64>) = if lo == 0.0 {
        (
            0.0,
            hi.sqrt(),
            Box::new(move |w: f64| 2.0 * w.powf(2.0 * beta + 1.0) * pdf((w * w - m) / s) / s),
        )
    } else {
        (
            lo,
            hi,
            Box::new(move |y: f64| y.powf(beta) * pdf((y - m) / s) / s),
        )
    };
    let h = (b - a) / n as f64;
    let mut acc = f(a) + f(b);
    for i in 1..n {
        let x = a + i as f64 * h;
        acc += if i % 2 == 1 { 4.0 } else { 2.0 } * f(x);
    }
    acc * h / 3.0
}

/// Brute-force τ for Σ c_p E[(aS_p − τ)_+^β] = 1 by bisection.
fn brute_tau(mu: &[f64], sigma: &[f64], counts: &[f64], alpha: f64) -> f64 {
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let f = |tau: f64| -> f64 {
        mu.iter()
            .zip(sigma)
            .zip(counts)
            .filter(|(_, &c)| c > 0.0)
            .map(|((&m, &s), &c)| c * brute_e(a * m - tau, a * s.max(SIGMA_FLOOR), beta))
            .sum::<f64>()
            - 1.0
    };
    let total: f64 = counts.iter().sum();
    let top = mu
        .iter()
        .zip(counts)
        .filter(|(_, &c)| c > 0.0)
        .map(|(&m, _)| a * m)
        .fold(f64::NEG_INFINITY, f64::max);
    let smax = sigma.iter().fold(0.0f64, |x, &y| x.max(y)) * a;
    let r = smax * ((2.0 * (total + 1.0).ln()).sqrt() + 8.0) + 2.0;
    let (mut lo, mut hi) = (top - r, top + r);
    assert!(f(lo) > 0.0 && f(hi) < 0.0, "brute bracket");
    for _ in 0..56 {
        let mid = 0.5 * (lo + hi);
        if f(mid) > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

fn tight() -> TauHatOpts {
    TauHatOpts {
        tol: 1e-12,
        ..TauHatOpts::default()
    }
}

fn check_grid(alphas: &[f64], mus: &[f64], sigmas: &[f64], ns: &[f64]) {
    let mut worst: f64 = 0.0;
    for &alpha in alphas {
        for &mu in mus {
            for &sigma in sigmas {
                for &n in ns {
                    let got = tau_hat_single(mu, sigma, n, alpha, &tight()).unwrap();
                    let want = brute_tau(&[mu], &[sigma], &[n], alpha);
                    let err = (got.tau - want).abs() / want.abs().max(1.0);
                    worst = worst.max(err);
                    assert!(
                        err <= 1e-6,
                        "alpha={alpha} mu={mu} sigma={sigma} n={n}: {} vs brute {want} \
                         (err {err:e}, residual {:e}, {} iters)",
                        got.tau,
                        got.residual,
                        got.iterations
                    );
                    assert!(got.residual.abs() <= 1e-10, "residual {:e}", got.residual);
                }
            }
        }
    }
    eprintln!("worst relative error vs brute force: {worst:e}");
}

#[test]
fn single_matches_brute_force_grid() {
    check_grid(
        &[1.25, 4.0 / 3.0, 1.5, 2.0, 3.0],
        &[-3.0, 0.0, 2.5],
        &[0.05, 1.0, 4.0],
        &[1.0, 10.0, 1e3, 1e5, 1e7],
    );
}

/// α off the closed forms (non-integer β: the quadrature path), incl. ν = β−1 < 0.
#[test]
fn single_general_alpha_matches_brute_force() {
    check_grid(
        &[1.1, 1.7, 2.5, 5.0],
        &[-1.0, 2.0],
        &[0.05, 1.5],
        &[1.0, 100.0, 1e6],
    );
}

#[test]
fn default_opts_exit_early() {
    for alpha in [1.5, 2.0, 4.0 / 3.0, 1.7] {
        for n in [1.0, 1e3, 1e6] {
            let r = tau_hat_single(0.3, 1.2, n, alpha, &TauHatOpts::default()).unwrap();
            assert!(r.residual.abs() <= 1e-6);
            assert!(
                r.iterations <= 12,
                "alpha={alpha} n={n}: {} iterations",
                r.iterations
            );
        }
    }
    // relative tolerance on τ alone also stops it
    let opts = TauHatOpts {
        tol: 0.0,
        rtol: 1e-10,
        max_iter: 120,
    };
    let r = tau_hat_single(0.3, 1.2, 1e4, 1.5, &opts).unwrap();
    assert!(r.iterations < 20 && r.residual.abs() < 1e-8, "{r:?}");
}

#[test]
fn softmax_normaliser_is_exact() {
    let r = tau_hat_single(0.4, 1.3, 1000.0, 1.0, &TauHatOpts::default()).unwrap();
    let want = 1000f64.ln() + 0.4 + 0.5 * 1.3 * 1.3;
    assert!((r.tau - want).abs() < 1e-14);
    // against quadrature of E[e^S]
    let m: f64 = {
        let (a, b, n) = (0.4 - 20.0 * 1.3, 0.4 + 20.0 * 1.3, 4000);
        let h = (b - a) / n as f64;
        let f = |x: f64| x.exp() * pdf((x - 0.4) / 1.3) / 1.3;
        let mut acc = f(a) + f(b);
        for i in 1..n {
            acc += if i % 2 == 1 { 4.0 } else { 2.0 } * f(a + i as f64 * h);
        }
        acc * h / 3.0
    };
    assert!((r.tau - (1000.0 * m).ln()).abs() < 1e-9);
    let mix = tau_hat_mixture(
        &[0.4, -1.0],
        &[1.3, 0.5],
        Some(&[600.0, 400.0]),
        0.0,
        1.0,
        &TauHatOpts::default(),
    )
    .unwrap();
    let want = (600.0 * (0.4f64 + 0.5 * 1.69).exp() + 400.0 * (-1.0f64 + 0.125).exp()).ln();
    assert!((mix.tau - want).abs() < 1e-13);
}

#[test]
fn zero_sigma_is_the_point_mass() {
    for alpha in [1.5, 2.0, 4.0 / 3.0, 3.0, 1.7] {
        for n in [1.0, 7.0, 1e4] {
            let r = tau_hat_single(0.8, 0.0, n, alpha, &tight()).unwrap();
            let a = alpha - 1.0;
            let want = a * 0.8 - n.powf(-a);
            // exact while the point mass's offset n^{−a} dwarfs the σ floor (1e-6), else
            // within a few floors of it
            let tol = if n.powf(-a) > 1e-3 {
                1e-9
            } else {
                5.0 * a * SIGMA_FLOOR
            };
            assert!(
                (r.tau - want).abs() < tol,
                "alpha={alpha} n={n}: {} vs {want}",
                r.tau
            );
        }
    }
}

#[test]
fn mixture_of_one_equals_single() {
    for alpha in [1.25, 4.0 / 3.0, 1.5, 2.0, 3.0, 1.7] {
        for (mu, sigma, n) in [(-3.0, 0.05, 1.0), (0.0, 1.0, 1e3), (2.5, 4.0, 1e7)] {
            let s = tau_hat_single(mu, sigma, n, alpha, &tight()).unwrap();
            let m = tau_hat_mixture(&[mu], &[sigma], Some(&[n]), 0.0, alpha, &tight()).unwrap();
            assert!((s.tau - m.tau).abs() <= 1e-12 * s.tau.abs().max(1.0));
            let u = tau_hat_mixture(&[mu], &[sigma], None, n, alpha, &tight()).unwrap();
            assert!((s.tau - u.tau).abs() <= 1e-12 * s.tau.abs().max(1.0));
            // P identical components of count n/P are the same population
            let p = 64;
            let m = tau_hat_mixture(
                &vec![mu; p],
                &vec![sigma; p],
                None,
                n / p as f64,
                alpha,
                &tight(),
            )
            .unwrap();
            assert!(
                (s.tau - m.tau).abs() <= 1e-9 * s.tau.abs().max(1.0),
                "{} vs {}",
                s.tau,
                m.tau
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn mixture_matches_brute_force(
        comps in prop::collection::vec((-3.0f64..3.0, 0.05f64..3.0, prop_oneof![Just(0.0), 1.0f64..50.0]), 1..6),
        alpha in prop_oneof![Just(1.5), Just(2.0), Just(4.0 / 3.0), Just(1.25), Just(3.0), Just(1.7)],
    ) {
        let mu: Vec<f64> = comps.iter().map(|c| c.0).collect();
        let sigma: Vec<f64> = comps.iter().map(|c| c.1).collect();
        let mut counts: Vec<f64> = comps.iter().map(|c| c.2).collect();
        if counts.iter().all(|&c| c == 0.0) {
            counts[0] = 3.0;
        }
        let got = tau_hat_mixture(&mu, &sigma, Some(&counts), 0.0, alpha, &tight()).unwrap();
        let want = brute_tau(&mu, &sigma, &counts, alpha);
        prop_assert!((got.tau - want).abs() <= 1e-6 * want.abs().max(1.0),
            "{} vs brute {} ({:?})", got.tau, want, got);
    }

    #[test]
    fn moments_derivatives_are_consistent(
        mu_y in -6.0f64..6.0,
        sy in 0.1f64..3.0,
        beta in prop_oneof![Just(1.0), Just(2.0), Just(3.0), Just(4.0), 0.2f64..5.0],
    ) {
        let m = trunc_gauss_moments(mu_y, sy, beta).unwrap();
        let want = brute_e(mu_y, sy, beta);
        // For β < 1 the integrand y^β has an unbounded derivative at 0, where the composite
        // Simpson reference converges slowly (seen: 4e-8 relative at β = 0.2): looser there.
        let tol = if beta < 1.0 { 2e-7 } else { 1e-8 };
        prop_assert!((m.e - want).abs() <= tol * want, "E {} vs {}", m.e, want);
        if m.e > 1e-300 {
            prop_assert!((m.ln_e - m.e.ln()).abs() <= 1e-12 * m.ln_e.abs().max(1.0));
        } else {
            // underflowed in linear space, still finite in log space
            prop_assert!(m.ln_e.is_finite() && m.ln_e < -600.0);
        }
        // τ enters as μ_Y = aμ − τ
        let h = 1e-4 * sy;
        let e = |d: f64| trunc_gauss_moments(mu_y - d, sy, beta).unwrap().e;
        let d1 = (e(h) - e(-h)) / (2.0 * h);
        prop_assert!((m.de_dtau - d1).abs() <= 1e-6 * m.de_dtau.abs() + 1e-12, "{} vs {}", m.de_dtau, d1);
        let h = 1e-3 * sy;
        let d2 = (e(h) - 2.0 * m.e + e(-h)) / (h * h);
        prop_assert!((m.d2e_dtau2 - d2).abs() <= 1e-4 * m.d2e_dtau2.abs() + 1e-7, "{} vs {}", m.d2e_dtau2, d2);
    }
}

/// The ALiBi-shaped 1M-token case: 65 536 pages of 16 tokens, means falling linearly.
#[test]
fn large_mixture_solves() {
    let p = 65_536;
    let mu: Vec<f64> = (0..p)
        .map(|i| -0.002 * (p - i) as f64 + 0.3 * ((i * 7919) % 13) as f64 / 13.0)
        .collect();
    let sigma: Vec<f64> = (0..p)
        .map(|i| 0.5 + 0.5 * ((i * 31) % 7) as f64 / 7.0)
        .collect();
    for alpha in [1.5, 2.0, 4.0 / 3.0] {
        let start = std::time::Instant::now();
        let r = tau_hat_mixture(&mu, &sigma, None, 16.0, alpha, &TauHatOpts::default()).unwrap();
        eprintln!(
            "alpha={alpha}: P={p} tau={} iters={} residual={:e} in {:?}",
            r.tau,
            r.iterations,
            r.residual,
            start.elapsed()
        );
        assert!(r.residual.abs() <= 1e-6 && r.iterations <= 20);
    }
}

#[test]
fn page_quantile_values() {
    assert!((page_max_quantile_z(0.99, 16).unwrap() - 3.2259).abs() < 5e-5);
    assert!((page_max_quantile_z(0.995, 16).unwrap() - 3.4199).abs() < 5e-5);
    // ps = 1 is the plain quantile
    assert!((page_max_quantile_z(0.975, 1).unwrap() - 1.959_963_984_540_054).abs() < 1e-13);
}

fn inv<T: std::fmt::Debug>(r: Result<T, Error>, want: &str) {
    match r {
        Err(Error::InvalidArgument { arg, .. }) => assert_eq!(arg, want),
        other => panic!("expected InvalidArgument({want}), got {other:?}"),
    }
}

#[test]
fn bad_input_is_typed() {
    let o = TauHatOpts::default();
    for alpha in [0.9, f64::NAN, f64::INFINITY] {
        inv(tau_hat_single(0.0, 1.0, 10.0, alpha, &o), "alpha");
        inv(
            tau_hat_mixture(&[0.0], &[1.0], None, 1.0, alpha, &o),
            "alpha",
        );
    }
    assert!(matches!(
        tau_hat_single(f64::NAN, 1.0, 10.0, 1.5, &o),
        Err(Error::NonFinite { arg: "mu", .. })
    ));
    for s in [-1.0, f64::NAN, f64::INFINITY] {
        inv(tau_hat_single(0.0, s, 10.0, 1.5, &o), "sigma");
        inv(tau_hat_mixture(&[0.0], &[s], None, 1.0, 1.5, &o), "sigma");
    }
    for n in [0.5, 0.0, -3.0, f64::NAN, f64::INFINITY] {
        inv(tau_hat_single(0.0, 1.0, n, 1.5, &o), "n");
    }
    let bad_tol = TauHatOpts { tol: f64::NAN, ..o };
    inv(tau_hat_single(0.0, 1.0, 10.0, 1.5, &bad_tol), "opts.tol");
    let bad_rtol = TauHatOpts { rtol: -1.0, ..o };
    inv(tau_hat_single(0.0, 1.0, 10.0, 1.5, &bad_rtol), "opts.rtol");
    let bad_iter = TauHatOpts { max_iter: 0, ..o };
    inv(
        tau_hat_mixture(&[0.0], &[1.0], None, 1.0, 1.5, &bad_iter),
        "opts.max_iter",
    );
    // mixture shapes and counts
    inv(tau_hat_mixture(&[], &[], None, 1.0, 1.5, &o), "mu");
    assert!(matches!(
        tau_hat_mixture(&[0.0, 1.0], &[1.0], None, 1.0, 1.5, &o),
        Err(Error::Mismatch {
            arg: "sigma.len()",
            ..
        })
    ));
    assert!(matches!(
        tau_hat_mixture(&[0.0], &[1.0], Some(&[1.0, 2.0]), 1.0, 1.5, &o),
        Err(Error::Mismatch {
            arg: "counts.len()",
            ..
        })
    ));
    assert!(matches!(
        tau_hat_mixture(&[0.0, f64::INFINITY], &[1.0, 1.0], None, 1.0, 1.5, &o),
        Err(Error::NonFinite {
            arg: "mu",
            index: 1,
            ..
        })
    ));
    for c in [-1.0, f64::NAN] {
        inv(
            tau_hat_mixture(&[0.0], &[1.0], Some(&[c]), 1.0, 1.5, &o),
            "counts",
        );
    }
    inv(
        tau_hat_mixture(&[0.0, 1.0], &[1.0, 1.0], Some(&[0.0, 0.0]), 1.0, 1.5, &o),
        "counts",
    );
    for u in [0.0, -2.0, f64::NAN] {
        inv(
            tau_hat_mixture(&[0.0], &[1.0], None, u, 1.5, &o),
            "uniform_count",
        );
    }
    // quantile
    for q in [0.0, 1.0, -0.5, f64::NAN] {
        inv(page_max_quantile_z(q, 16), "q");
    }
    inv(page_max_quantile_z(0.99, 0), "page_size");
    // moments
    inv(trunc_gauss_moments(f64::NAN, 1.0, 2.0), "mu_y");
    inv(trunc_gauss_moments(0.0, -1.0, 2.0), "sigma_y");
    inv(trunc_gauss_moments(0.0, 1.0, 0.0), "beta");
}

/// Found by fuzzing: a mixture at the edge of the f64 range used to return τ = +∞ as Ok.
#[test]
fn extreme_mixture_is_a_typed_error_not_infinite_tau() {
    let r = tau_hat_mixture(
        &[1.5685753823798637e308],
        &[1.8834471062213135e295],
        Some(&[6.0]),
        16.0,
        1.5,
        &TauHatOpts::default(),
    );
    match r {
        Ok(t) => assert!(t.tau.is_finite(), "{t:?}"),
        Err(e) => assert!(matches!(e, entmaxkv::Error::InvalidArgument { .. }), "{e}"),
    }
}
