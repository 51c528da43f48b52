//! Shared by the `tau_hat` and `tau_hat_closed_form` targets: the input and the checks;
//! the targets differ only in which α they draw.
use arbitrary::Arbitrary;
use entmaxkv::tau::{tau_hat_mixture, tau_hat_single, TauHatOpts};

#[derive(Debug, Arbitrary)]
pub struct Input {
    pub mu: f64,
    pub sigma: f64,
    pub n_exp: u8,
    pub alpha_pick: u8,
    #[allow(dead_code)] // read by `tau_hat` only
    pub alpha_raw: f64,
    pub comps: Vec<(f64, f64, u8)>,
}

/// Closed-form α (β ∈ {1, 2, 3, 4}) and softmax.
pub const FAST: [f64; 5] = [1.0, 1.25, 4.0 / 3.0, 1.5, 2.0];
/// Quadrature α (non-integer β), from β ≈ 10⁹ (α → 1⁺) to β = 1/1000 (x^{β−1} singular at 0):
/// microseconds a moment since the fixed-ladder rule (`tau::quad::peak_integral`).
#[allow(dead_code)] // used by `tau_hat` only
pub const GENERIC: [f64; 10] = [
    3.0,
    1.01,
    7.0,
    1.7,
    2.5,
    1.1,
    1.001,
    1.0 + 1e-9,
    64.0,
    1001.0,
];

/// Single and mixture τ̂ at `alpha`: a solve either fails with a typed error or returns a
/// finite τ (and, for the single Gaussian, a non-NaN residual).
pub fn check(inp: &Input, alpha: f64) {
    let n = 10f64.powf((inp.n_exp % 90) as f64 / 10.0); // 1 .. 1e9
    let opts = TauHatOpts::default();
    if let Ok(t) = tau_hat_single(inp.mu, inp.sigma, n, alpha, &opts) {
        assert!(t.tau.is_finite(), "non-finite tau {t:?} for {inp:?}");
        assert!(!t.residual.is_nan(), "NaN residual {t:?}");
    }
    // Up to 32 components for every α (a quadrature per component and iteration costs a few
    // microseconds).
    let comps: Vec<_> = inp.comps.iter().take(32).collect();
    let mu: Vec<f64> = comps.iter().map(|c| c.0).collect();
    let sigma: Vec<f64> = comps.iter().map(|c| c.1).collect();
    let counts: Vec<f64> = comps.iter().map(|c| (c.2 % 17) as f64).collect();
    if let Ok(t) = tau_hat_mixture(&mu, &sigma, Some(&counts), 16.0, alpha, &opts) {
        assert!(t.tau.is_finite(), "non-finite mixture tau {t:?}");
    }
}
