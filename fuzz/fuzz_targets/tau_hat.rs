//! The distributional τ̂ solvers on arbitrary μ, σ, n, α (extremes included): never panic,
//! never return a non-finite τ, and the residual of an accepted solve is small.
#![no_main]
use arbitrary::Arbitrary;
use entmaxkv::tau::{tau_hat_mixture, tau_hat_single, TauHatOpts};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    mu: f64,
    sigma: f64,
    n_exp: u8,
    alpha_pick: u8,
    alpha_raw: f64,
    comps: Vec<(f64, f64, u8)>,
}

const ALPHAS: [f64; 8] = [1.0, 1.25, 4.0 / 3.0, 1.5, 2.0, 3.0, 1.01, 7.0];

fuzz_target!(|inp: Input| {
    let alpha = if inp.alpha_pick < 200 {
        ALPHAS[inp.alpha_pick as usize % ALPHAS.len()]
    } else {
        inp.alpha_raw
    };
    let n = 10f64.powf((inp.n_exp % 90) as f64 / 10.0); // 1 .. 1e9
    let opts = TauHatOpts::default();
    if let Ok(t) = tau_hat_single(inp.mu, inp.sigma, n, alpha, &opts) {
        assert!(t.tau.is_finite(), "non-finite tau {t:?} for {inp:?}");
        assert!(!t.residual.is_nan(), "NaN residual {t:?}");
    }
    let comps: Vec<_> = inp.comps.iter().take(64).collect();
    let mu: Vec<f64> = comps.iter().map(|c| c.0).collect();
    let sigma: Vec<f64> = comps.iter().map(|c| c.1).collect();
    let counts: Vec<f64> = comps.iter().map(|c| (c.2 % 17) as f64).collect();
    if let Ok(t) = tau_hat_mixture(&mu, &sigma, Some(&counts), 16.0, alpha, &opts) {
        assert!(t.tau.is_finite(), "non-finite mixture tau {t:?}");
    }
});
