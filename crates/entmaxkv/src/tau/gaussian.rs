//! The distributional threshold τ̂ (SPEC §4.6, §5): solve the entmax normalisation in
//! expectation, `Σ_p c_p·E[(aS_p − τ)_+^β] = 1` with `S_p ~ N(μ_p, σ_p²)`, before any
//! score is read.
//!
//! Design:
//! * All moments are carried as `ln E` plus the ratios `E'/E`, `E''/E`, and the solver
//!   iterates on `h(τ) = ln F(τ)`. F spans hundreds of orders of magnitude across a bracket
//!   (`n r^β` on the left, `e^{−r²/2σ²}` on the right) and the pages far below τ sit deep
//!   in Gaussian tails, so linear-space sums underflow to garbage; log space does not, and
//!   `ln F` is close to linear in τ in both the bulk and the tail, so Halley converges in a
//!   handful of steps.
//! * With `t = μ_Y/σ_Y`, `E[Y_+^β] = σ_Y^β·M_β(t)` where `M_ν(t) = ∫_0^∞ u^ν φ(u − t) du`.
//!   For integer β ≤ 4 (α ∈ {2, 1.5, 4/3, 5/4}) `M` has closed forms in Φ, φ; they are used
//!   for `t ≥ −2`, where their alternating terms lose at most ~2 digits. Below that,
//!   `M_k = φ(t)·J_k(s)` (s = −t) with `J_0` the Mills ratio and the ratios `J_j/J_{j−1}` from
//!   their continued fraction evaluated backwards — every term positive, no cancellation.
//! * Any other β uses double-exponential quadrature of the same integrals (scaled by the
//!   log of the integrand's peak, and in the variable `v = s·u` in the lower tail).
//! * The derivatives use `dM_β/dt = β·M_{β−1}` and `d²M_β/dt² = β(M_β − t·M_{β−1})`, so only
//!   orders > −1 are ever needed (the naive `E[Y_+^{β−2}]` diverges for α > 1.5).

use super::normal::{mills_ratio, normal_cdf, normal_pdf, quantile_from_tails, LN_SQRT_2PI};
use super::quad::{integrate, peak_integral};
use crate::error::{check_alpha, Error, Result};

/// σ floor of the score model (as in the original): a zero-variance page is a point mass,
/// which this floor approximates to ~1e-6 relative.
pub const SIGMA_FLOOR: f64 = 1e-6;
/// Floor of σ_Y = (α−1)σ, for α very close to 1.
const SIGMA_Y_FLOOR: f64 = 1e-10;

/// Solver controls for τ̂.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TauHatOpts {
    /// Stop when `|F(τ) − 1| ≤ tol` (F is the expected Σp). Default 1e-6.
    pub tol: f64,
    /// Also stop when a step moves τ by at most `rtol·max(1, |τ|)`; 0 disables. Default 0.
    pub rtol: f64,
    /// Iteration cap (each iteration is one evaluation of F, F', F''). Default 120.
    pub max_iter: usize,
}

impl Default for TauHatOpts {
    fn default() -> Self {
        TauHatOpts {
            tol: 1e-6,
            rtol: 0.0,
            max_iter: 120,
        }
    }
}

/// A solved τ̂.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TauHat {
    /// τ̂ in kernel space (α = 1: the log-normaliser in score space).
    pub tau: f64,
    /// Evaluations of F spent after bracketing (0 for the closed-form α = 1).
    pub iterations: usize,
    /// `F(τ̂) − 1`, the expected Σp minus one, at the returned τ̂.
    pub residual: f64,
}

/// `E[Y_+^β]` of `Y ~ N(μ_Y, σ_Y²)` and its τ-derivatives (τ enters as `μ_Y = aμ − τ`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruncGaussMoments {
    /// `ln E[Y_+^β]`, finite even where `e` underflows (−∞ only for a point mass at ≤ 0).
    pub ln_e: f64,
    /// `E[Y_+^β]`.
    pub e: f64,
    /// `dE/dτ = −β·E[Y_+^{β−1}]`.
    pub de_dtau: f64,
    /// `d²E/dτ²` (finite for every β > 0, although `E[Y_+^{β−2}]` is not for β ≤ 1).
    pub d2e_dtau2: f64,
}

/// Lanczos ln Γ(x), x > 0 (only used for a skip bound, ~1e-15 accurate).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    let t = x + 7.5;
    LN_SQRT_2PI + (x + 0.5) * t.ln() - t + a.ln()
}

/// β as a small integer when the closed forms apply.
fn int_beta(beta: f64) -> Option<u32> {
    let k = beta.round();
    if (1.0..=4.0).contains(&k) && (beta - k).abs() <= 1e-12 * k {
        Some(k as u32)
    } else {
        None
    }
}

/// `(ln M_k(t), M_{k−1}/M_k, (M_k − t M_{k−1})/M_k)` for integer k ∈ 1..=4.
fn std_moment_int(k: u32, t: f64) -> (f64, f64, f64) {
    let k = k as usize;
    if t >= -2.0 {
        let ph = normal_pdf(t);
        let mut m = [0.0f64; 5];
        m[0] = normal_cdf(t);
        m[1] = t * m[0] + ph;
        for j in 1..k {
            m[j + 1] = t * m[j] + j as f64 * m[j - 1];
        }
        let rho2 = if k == 1 {
            ph / m[1]
        } else {
            (k - 1) as f64 * m[k - 2] / m[k]
        };
        (m[k].ln(), m[k - 1] / m[k], rho2)
    } else {
        let s = -t;
        // Backward evaluation of r_j = J_j/J_{j−1} = j/(s + r_{j+1}); the truncation error
        // decays like exp(−2s(√N − √k)), so N = 400/s² + 12 is below 1e-16 for s ≥ 2.
        let n = ((400.0 / (s * s)) as usize + 12).min(200);
        let mut r = 0.0;
        let mut prod = 1.0;
        let mut r_k = 0.0;
        for j in (1..=n).rev() {
            r = j as f64 / (s + r);
            if j <= k {
                prod *= r;
                if j == k {
                    r_k = r;
                }
            }
        }
        let ln_m = -0.5 * t * t - LN_SQRT_2PI + mills_ratio(s).ln() + prod.ln();
        (ln_m, 1.0 / r_k, 1.0 + s / r_k)
    }
}

/// The same triple for any β > 0 by quadrature: the fast fixed-ladder rule, or the adaptive
/// double-exponential reference where the fast rule's error check fails.
fn std_moment_quad(beta: f64, t: f64) -> (f64, f64, f64) {
    std_moment_quad_fast(beta, t).unwrap_or_else(|| std_moment_quad_adaptive(beta, t))
}

/// [`std_moment_quad`] by [`peak_integral`]; `None` where its error check fails.
fn std_moment_quad_fast(beta: f64, t: f64) -> Option<(f64, f64, f64)> {
    if t >= -1.0 {
        // Peak of g(u) = β ln u − (u−t)²/2 at u*; d0 = u* − t without cancellation.
        let q = (t * t + 4.0 * beta).sqrt();
        let (u_star, d0) = if t >= 0.0 {
            let d0 = 2.0 * beta / (q + t);
            (t + d0, d0)
        } else {
            let u = 2.0 * beta / (q - t);
            (u, u - t)
        };
        let l = beta * u_star.ln() - 0.5 * d0 * d0;
        // g(u* + d) − l = β ln(1 + d/u*) − d0·d − d²/2, and d0 = β/u* at the peak
        let [i0, i1, i2] = peak_integral(u_star, beta, 1.0, |u: f64, d: f64| [u, 1.0, d0 + d])?;
        Some((l + i0.ln() - LN_SQRT_2PI, i1 / i0, i2 / i0))
    } else {
        // M_β(t) = φ(t) s^{−β−1} ∫ v^β e^{−v − v²/(2s²)} dv with v = s·u.
        let s = -t;
        let s2 = s * s;
        let v_star = 2.0 * beta / (1.0 + (1.0 + 4.0 * beta / s2).sqrt());
        let l = beta * v_star.ln() - v_star - 0.5 * v_star * v_star / s2;
        // g(v* + d) − l = β ln(1 + d/v*) − (1 + v*/s²)·d − d²/(2s²), and 1 + v*/s² = β/v*
        let [k0, k1] = peak_integral(v_star, beta, 1.0 / s2, |v: f64, _| [v, 1.0])?;
        let ln_m = -0.5 * t * t - LN_SQRT_2PI - (beta + 1.0) * s.ln() + l + k0.ln();
        let rho1 = s * k1 / k0;
        Some((ln_m, rho1, 1.0 + s * rho1))
    }
}

/// The same triple by the adaptive double-exponential reference ([`integrate`]).
fn std_moment_quad_adaptive(beta: f64, t: f64) -> (f64, f64, f64) {
    if t >= -1.0 {
        // Peak of g(u) = β ln u − (u−t)²/2, g'' ≤ −1 so mass beyond ±40 of it is < e^{−800}.
        let q = (t * t + 4.0 * beta).sqrt();
        let u_star = if t >= 0.0 {
            0.5 * (t + q)
        } else {
            2.0 * beta / (q - t)
        };
        let l = beta * u_star.ln() - 0.5 * (u_star - t) * (u_star - t);
        let width = 1.0 / (1.0 + beta / (u_star * u_star)).sqrt();
        let lower = (u_star - 40.0).max(0.0);
        let [i0, i1, i2] = integrate(lower, u_star, width, |u: f64| {
            if u <= 0.0 {
                return [0.0; 3];
            }
            let e0 = (beta * u.ln() - 0.5 * (u - t) * (u - t) - l).exp();
            let e1 = e0 / u;
            [e0, e1, e1 * (u - t)]
        });
        (l + i0.ln() - LN_SQRT_2PI, i1 / i0, i2 / i0)
    } else {
        // M_β(t) = φ(t) s^{−β−1} ∫ v^β e^{−v − v²/(2s²)} dv with v = s·u.
        let s = -t;
        let s2 = s * s;
        let v_star = 2.0 * beta / (1.0 + (1.0 + 4.0 * beta / s2).sqrt());
        let l = beta * v_star.ln() - v_star - 0.5 * v_star * v_star / s2;
        let width = 1.0 / (beta / (v_star * v_star) + 1.0 / s2).sqrt();
        let [k0, k1] = integrate(0.0, v_star, width, |v: f64| {
            if v <= 0.0 {
                return [0.0; 2];
            }
            let e0 = (beta * v.ln() - v - 0.5 * v * v / s2 - l).exp();
            [e0, e0 / v]
        });
        let ln_m = -0.5 * t * t - LN_SQRT_2PI - (beta + 1.0) * s.ln() + l + k0.ln();
        let rho1 = s * k1 / k0;
        (ln_m, rho1, 1.0 + s * rho1)
    }
}

#[inline]
fn std_moment(beta: f64, kint: Option<u32>, t: f64) -> (f64, f64, f64) {
    match kint {
        Some(k) => std_moment_int(k, t),
        None => std_moment_quad(beta, t),
    }
}

/// `E[Y_+^β]`, `dE/dτ`, `d²E/dτ²` for `Y ~ N(μ_Y, σ_Y²)`, `μ_Y = aμ − τ`, any β > 0.
/// `σ_Y = 0` is the exact point mass.
pub fn trunc_gauss_moments(mu_y: f64, sigma_y: f64, beta: f64) -> Result<TruncGaussMoments> {
    const OP: &str = "tau::trunc_gauss_moments";
    if !mu_y.is_finite() {
        return Err(Error::invalid(OP, "mu_y", mu_y, "must be finite"));
    }
    if !(sigma_y.is_finite() && sigma_y >= 0.0) {
        return Err(Error::invalid(
            OP,
            "sigma_y",
            sigma_y,
            "must be finite and >= 0",
        ));
    }
    if !(beta.is_finite() && beta > 0.0) {
        return Err(Error::invalid(OP, "beta", beta, "must be finite and > 0"));
    }
    if sigma_y == 0.0 {
        if mu_y <= 0.0 {
            return Ok(TruncGaussMoments {
                ln_e: f64::NEG_INFINITY,
                e: 0.0,
                de_dtau: 0.0,
                d2e_dtau2: 0.0,
            });
        }
        let e = mu_y.powf(beta);
        return Ok(TruncGaussMoments {
            ln_e: beta * mu_y.ln(),
            e,
            de_dtau: -beta * e / mu_y,
            d2e_dtau2: beta * (beta - 1.0) * e / (mu_y * mu_y),
        });
    }
    let t = mu_y / sigma_y;
    let (ln_m, rho1, rho2) = std_moment(beta, int_beta(beta), t);
    let ln_e = beta * sigma_y.ln() + ln_m;
    let e = ln_e.exp();
    Ok(TruncGaussMoments {
        ln_e,
        e,
        de_dtau: -beta / sigma_y * rho1 * e,
        d2e_dtau2: beta / (sigma_y * sigma_y) * rho2 * e,
    })
}

/// Online log-sum-exp of `c_p·E_p` with the matching sums of `E'_p`, `E''_p`.
#[derive(Clone, Copy)]
struct LogAcc {
    m: f64,
    s0: f64,
    s1: f64,
    s2: f64,
}

impl LogAcc {
    fn new() -> Self {
        LogAcc {
            m: f64::NEG_INFINITY,
            s0: 0.0,
            s1: 0.0,
            s2: 0.0,
        }
    }

    /// Adds a term `e^w` with `E'/E = d1`, `E''/E = d2`.
    #[inline]
    fn add(&mut self, w: f64, d1: f64, d2: f64) {
        if w > self.m {
            let sc = (self.m - w).exp();
            self.s0 *= sc;
            self.s1 *= sc;
            self.s2 *= sc;
            self.m = w;
        }
        let e = (w - self.m).exp();
        self.s0 += e;
        self.s1 += e * d1;
        self.s2 += e * d2;
    }

    /// `(ln F, F'/F, (ln F)'')`.
    fn finish(&self) -> [f64; 3] {
        let h = self.m + self.s0.ln();
        let h1 = self.s1 / self.s0;
        [h, h1, self.s2 / self.s0 - h1 * h1]
    }
}

/// Per-solve constants of the score model.
#[derive(Clone, Copy)]
struct Model {
    a: f64,
    beta: f64,
    kint: Option<u32>,
    ln_gamma_b1: f64,
}

impl Model {
    fn new(alpha: f64) -> Self {
        let a = alpha - 1.0;
        let beta = 1.0 / a;
        Model {
            a,
            beta,
            kint: int_beta(beta),
            ln_gamma_b1: ln_gamma(beta + 1.0),
        }
    }

    /// σ_Y of a component (σ floored as in the original).
    #[inline]
    fn sigma_y(&self, sigma: f64) -> f64 {
        (self.a * sigma.max(SIGMA_FLOOR)).max(SIGMA_Y_FLOOR)
    }

    /// Adds `c·E[(aS − τ)_+^β]`, skipping terms provably below e^{−60} of the running max.
    #[inline]
    fn add(&self, acc: &mut LogAcc, ln_c: f64, mu: f64, sigma: f64, tau: f64) {
        let sy = self.sigma_y(sigma);
        let t = (self.a * mu - tau) / sy;
        let base = ln_c + self.beta * sy.ln();
        if t < -2.0 {
            // J_β(s) ≤ Γ(β+1)/s^{β+1}
            let s = -t;
            let ub =
                base - 0.5 * t * t - LN_SQRT_2PI + self.ln_gamma_b1 - (self.beta + 1.0) * s.ln();
            if ub < acc.m - 60.0 {
                return;
            }
        }
        let (ln_m, rho1, rho2) = std_moment(self.beta, self.kint, t);
        let d1 = -self.beta / sy * rho1;
        let d2 = self.beta / (sy * sy) * rho2;
        acc.add(base + ln_m, d1, d2);
    }
}

fn check_opts(op: &'static str, opts: &TauHatOpts) -> Result<()> {
    if !(opts.tol.is_finite() && opts.tol >= 0.0) {
        return Err(Error::invalid(
            op,
            "opts.tol",
            opts.tol,
            "must be finite and >= 0",
        ));
    }
    if !(opts.rtol.is_finite() && opts.rtol >= 0.0) {
        return Err(Error::invalid(
            op,
            "opts.rtol",
            opts.rtol,
            "must be finite and >= 0",
        ));
    }
    if opts.max_iter == 0 {
        return Err(Error::invalid(op, "opts.max_iter", 0, "must be >= 1"));
    }
    Ok(())
}

/// Bracketed, safeguarded Halley on `h(τ) = ln F(τ)` (decreasing in τ).
fn solve<E: Fn(f64) -> [f64; 3]>(
    op: &'static str,
    eval: E,
    center: f64,
    r0: f64,
    opts: &TauHatOpts,
) -> Result<TauHat> {
    // Inputs near the f64 range (μ ≈ 1e308, σ ≈ 1e295) can push the bracket or τ to ±∞:
    // report that as a typed error rather than an infinite τ (found by fuzzing).
    let t = solve_inner(op, eval, center, r0, opts)?;
    if !t.tau.is_finite() || t.residual.is_nan() {
        return Err(Error::invalid(
            op,
            "mu/sigma",
            t.tau,
            "the score model overflows f64 (inputs too extreme)",
        ));
    }
    Ok(t)
}

fn solve_inner<E: Fn(f64) -> [f64; 3]>(
    op: &'static str,
    eval: E,
    center: f64,
    r0: f64,
    opts: &TauHatOpts,
) -> Result<TauHat> {
    let bad = |what: &str, tau: f64| {
        Error::invalid(
            op,
            "mu/sigma",
            tau,
            format!("the score model {what} (inputs too extreme for f64)"),
        )
    };
    // Bracket: h(lo) ≥ 0 ≥ h(hi). F → ∞ as τ → −∞ and → 0 as τ → ∞, so expansion ends.
    // A step below the spacing of f64 near the bracket end cannot move it; it is raised to
    // that spacing (|center| = 1e297 with σ_Y = 1e-10 would otherwise spend ~1000
    // evaluations doubling a step that leaves the end where it is; found by fuzzing).
    let min_step = |x: f64| 2.0 * f64::EPSILON * x.abs();
    let mut step = r0;
    let mut lo = center - step;
    let mut h_lo = eval(lo)[0];
    let mut tries = 0;
    while h_lo < 0.0 || h_lo.is_nan() {
        tries += 1;
        if tries > 1100 || h_lo.is_nan() || !lo.is_finite() {
            return Err(bad("could not be bracketed from below", lo));
        }
        step = step.max(min_step(lo));
        lo -= step;
        step *= 2.0;
        h_lo = eval(lo)[0];
    }
    step = r0;
    let mut hi = center + step;
    let mut h_hi = eval(hi)[0];
    tries = 0;
    while h_hi > 0.0 || h_hi.is_nan() {
        tries += 1;
        if tries > 1100 || h_hi.is_nan() || !hi.is_finite() {
            return Err(bad("could not be bracketed from above", hi));
        }
        step = step.max(min_step(hi));
        hi += step;
        step *= 2.0;
        h_hi = eval(hi)[0];
    }
    if h_lo == 0.0 {
        return Ok(TauHat {
            tau: lo,
            iterations: 0,
            residual: 0.0,
        });
    }
    if h_hi == 0.0 {
        return Ok(TauHat {
            tau: hi,
            iterations: 0,
            residual: 0.0,
        });
    }
    // Start by regula falsi on h (nearly linear in τ), strictly inside.
    let mut tau = lo + (hi - lo) * h_lo / (h_lo - h_hi);
    if !(tau > lo && tau < hi) {
        tau = 0.5 * (lo + hi);
    }
    let mut iterations = 0;
    loop {
        let [h, h1, h2] = eval(tau);
        iterations += 1;
        if h.is_nan() {
            return Err(bad("evaluated to NaN", tau));
        }
        let residual = h.exp_m1();
        if residual.abs() <= opts.tol || iterations >= opts.max_iter {
            return Ok(TauHat {
                tau,
                iterations,
                residual,
            });
        }
        if h > 0.0 {
            lo = tau;
        } else {
            hi = tau;
        }
        let newton = -h / h1;
        let corr = 0.5 * h * h2 / (h1 * h1);
        let mut next = if corr.is_finite() && corr.abs() < 0.5 {
            tau + newton / (1.0 - corr)
        } else {
            tau + newton
        };
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        let width_done = hi - lo <= 4.0 * f64::EPSILON * lo.abs().max(hi.abs());
        let step_done = opts.rtol > 0.0 && (next - tau).abs() <= opts.rtol * tau.abs().max(1.0);
        tau = next;
        if width_done || step_done {
            let h = eval(tau)[0];
            return Ok(TauHat {
                tau,
                iterations: iterations + 1,
                residual: h.exp_m1(),
            });
        }
    }
}

/// The standardised root t*(c) of `ln M_β(t) = c` tabulated on a uniform grid of c, for
/// a device τ̂ without special functions: `τ̂ = aμ − σ_Y·t*(c)` with `c = −ln n − β ln σ_Y`
/// (the single-Gaussian equation in standardised form, `gauss_tau_newton` in
/// gpu/kernels/gauss_beta.cuh). Each node holds `(t, h·t', h²·t'')`, t' = 1/c'(t) and
/// t'' = −c''(t)/c'(t)³ from `c' = β·M_{β−1}/M_β`, `c'' = β(ρ₂ − β(M_{β−1}/M_β)²)`; between
/// nodes a quintic Hermite interpolant ([`TstarTable::eval`], the device's arithmetic), within
/// ~1e-13 of the root where tested (`tstar_table_matches_the_solver`). Outside the grid the
/// caller solves as before.
#[derive(Debug, Clone)]
pub struct TstarTable {
    /// c of node 0.
    pub c0: f64,
    /// Grid step in c.
    pub h: f64,
    /// `[t, h·t', h²·t'']` per node.
    pub nodes: Vec<[f64; 3]>,
}

impl TstarTable {
    /// Lowest c tabulated: n up to ~1e9 tokens with σ_Y down to ~1e-9 at β = 2.
    pub const C_LO: f64 = -60.0;
    /// Highest c tabulated (t* of a few units to ~150 at β = 1).
    pub const C_HI: f64 = 5.0;
    /// Grid step for β ≥ 1, times β below (the interpolation error grows like (h/β)⁶).
    pub const H: f64 = 1.0 / 64.0;
    /// Largest |t*| tabulated.
    pub const T_MAX: f64 = 1e4;

    /// The table for exponent β = 1/(α − 1) > 0.
    pub fn build(beta: f64) -> Result<TstarTable> {
        const OP: &str = "tau::TstarTable::build";
        if !(beta.is_finite() && beta > 0.0) {
            return Err(Error::invalid(OP, "beta", beta, "must be finite and > 0"));
        }
        let kint = int_beta(beta);
        // t* varies like e^{c/β} for large c: the step shrinks with β below 1.
        let h = Self::H * beta.min(1.0);
        let n = ((Self::C_HI - Self::C_LO) / h).ceil() as usize + 1;
        let g = |t: f64| std_moment(beta, kint, t);
        // Node 0 by bisection (ln M_β increases in t), then Newton from the left: ln M_β is
        // concave in t, so Newton started left of the root increases monotonically to it,
        // and each node starts from the previous one's root.
        let (mut lo, mut hi) = (-60.0f64, 60.0f64);
        for _ in 0..200 {
            let mid = 0.5 * (lo + hi);
            if g(mid).0 < Self::C_LO {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let mut t = lo;
        let mut nodes = Vec::with_capacity(n);
        for j in 0..n {
            let c = Self::C_LO + j as f64 * h;
            let mut m = g(t);
            for _ in 0..100 {
                let step = (m.0 - c) / (beta * m.1);
                let tn = t - step;
                if !tn.is_finite() {
                    return Err(Error::invalid(OP, "beta", beta, "root not finite"));
                }
                let done = (tn - t).abs() <= 1e-15 * t.abs().max(1.0);
                t = tn;
                m = g(t);
                if done {
                    break;
                }
            }
            // Small β puts t* of the upper c far out (e^{c/β}): the grid ends there.
            if t.abs() > Self::T_MAX {
                break;
            }
            let (_, r, rho2) = m;
            let c1 = beta * r;
            let c2 = beta * (rho2 - beta * r * r);
            let t1 = 1.0 / c1;
            let t2 = -c2 * t1 * t1 * t1;
            if !(t1.is_finite() && t2.is_finite()) {
                return Err(Error::invalid(OP, "beta", beta, "derivatives not finite"));
            }
            nodes.push([t, h * t1, h * h * t2]);
        }
        if nodes.len() < 2 {
            return Err(Error::invalid(OP, "beta", beta, "fewer than two nodes"));
        }
        Ok(TstarTable {
            c0: Self::C_LO,
            h,
            nodes,
        })
    }

    /// t*(c) by quintic Hermite interpolation between the nodes around c; `None` outside
    /// the grid. The device evaluates the same expression in the same order.
    pub fn eval(&self, c: f64) -> Option<f64> {
        let x = (c - self.c0) * (1.0 / self.h);
        if !(x >= 0.0 && x < (self.nodes.len() - 1) as f64) {
            return None;
        }
        let j = x as usize;
        let u = x - j as f64;
        let [p0, v0, a0] = self.nodes[j];
        let [p1, v1, a1] = self.nodes[j + 1];
        Some(hermite5(u, p0, v0, a0, p1, v1, a1))
    }
}

/// Quintic Hermite interpolant on [0, 1] from values, first and second derivatives at both
/// ends (derivatives already scaled to the unit interval).
#[inline]
fn hermite5(u: f64, p0: f64, v0: f64, a0: f64, p1: f64, v1: f64, a1: f64) -> f64 {
    let u2 = u * u;
    let u3 = u2 * u;
    // p(u) = p0 + v0 u + a0 u²/2 + u³ (A + B u + C u²) matching p1, v1, a1 at u = 1.
    let d0 = p1 - p0 - v0 - 0.5 * a0;
    let d1 = v1 - v0 - a0;
    let d2 = a1 - a0;
    let ca = 10.0 * d0 - 4.0 * d1 + 0.5 * d2;
    let cb = -15.0 * d0 + 7.0 * d1 - d2;
    let cc = 6.0 * d0 - 3.0 * d1 + 0.5 * d2;
    p0 + u * (v0 + u * (0.5 * a0)) + u3 * (ca + u * (cb + u * cc))
}

/// τ̂ for n scores drawn from `N(μ, σ²)`: solves `n·E[(aS − τ)_+^β] = 1`, τ in kernel space.
/// α = 1 gives the softmax normaliser `log(n·E[e^S]) = ln n + μ + σ²/2` exactly.
pub fn tau_hat_single(
    mu: f64,
    sigma: f64,
    n: f64,
    alpha: f64,
    opts: &TauHatOpts,
) -> Result<TauHat> {
    const OP: &str = "tau::tau_hat_single";
    check_alpha(OP, alpha)?;
    check_opts(OP, opts)?;
    if !mu.is_finite() {
        return Err(Error::NonFinite {
            op: OP,
            arg: "mu",
            index: 0,
            value: mu,
        });
    }
    if !(sigma.is_finite() && sigma >= 0.0) {
        return Err(Error::invalid(
            OP,
            "sigma",
            sigma,
            "must be finite and >= 0",
        ));
    }
    if !(n.is_finite() && n >= 1.0) {
        return Err(Error::invalid(
            OP,
            "n",
            n,
            "the population size must be finite and >= 1",
        ));
    }
    if alpha == 1.0 {
        let tau = n.ln() + mu + 0.5 * sigma * sigma;
        if !tau.is_finite() {
            return Err(Error::invalid(
                OP,
                "sigma",
                sigma,
                "log n + mu + sigma^2/2 overflows f64",
            ));
        }
        return Ok(TauHat {
            tau,
            iterations: 0,
            residual: 0.0,
        });
    }
    let model = Model::new(alpha);
    let ln_n = n.ln();
    let r0 = model.sigma_y(sigma) * ((2.0 * (n + 1.0).ln()).sqrt() + 8.0);
    solve(
        OP,
        |tau| {
            let mut acc = LogAcc::new();
            model.add(&mut acc, ln_n, mu, sigma, tau);
            acc.finish()
        },
        model.a * mu,
        r0,
        opts,
    )
}

/// τ̂ for a mixture of Gaussian components (pages; e.g. ALiBi-shifted means): solves
/// `Σ_p c_p·E[(aS_p − τ)_+^β] = 1`. `counts[p]` tokens per component (0 = inactive), or
/// `uniform_count` for every component when `counts` is `None`. The iteration allocates
/// nothing and skips components provably negligible (deep below τ), so it scales to the
/// 65 536 pages of a 1M-token context.
pub fn tau_hat_mixture(
    mu: &[f64],
    sigma: &[f64],
    counts: Option<&[f64]>,
    uniform_count: f64,
    alpha: f64,
    opts: &TauHatOpts,
) -> Result<TauHat> {
    const OP: &str = "tau::tau_hat_mixture";
    check_alpha(OP, alpha)?;
    check_opts(OP, opts)?;
    if mu.is_empty() {
        return Err(Error::invalid(
            OP,
            "mu",
            "[] (0 elements)",
            "needs at least one component",
        ));
    }
    let mismatch = |arg: &'static str, got: usize| Error::Mismatch {
        op: OP,
        arg,
        got,
        what: "mu.len()",
        expected: mu.len(),
    };
    if sigma.len() != mu.len() {
        return Err(mismatch("sigma.len()", sigma.len()));
    }
    crate::error::check_finite(OP, "mu", mu)?;
    for (index, &s) in sigma.iter().enumerate() {
        if !(s.is_finite() && s >= 0.0) {
            return Err(Error::invalid(
                OP,
                "sigma",
                format!("{s} at index {index}"),
                "must be finite and >= 0",
            ));
        }
    }
    match counts {
        Some(c) => {
            if c.len() != mu.len() {
                return Err(mismatch("counts.len()", c.len()));
            }
            for (index, &x) in c.iter().enumerate() {
                if !(x.is_finite() && x >= 0.0) {
                    return Err(Error::invalid(
                        OP,
                        "counts",
                        format!("{x} at index {index}"),
                        "counts must be finite and >= 0",
                    ));
                }
            }
        }
        None => {
            if !(uniform_count.is_finite() && uniform_count > 0.0) {
                return Err(Error::invalid(
                    OP,
                    "uniform_count",
                    uniform_count,
                    "must be finite and > 0",
                ));
            }
        }
    }
    let count = |p: usize| counts.map_or(uniform_count, |c| c[p]);
    let total: f64 = (0..mu.len()).map(count).sum();
    if total.is_nan() || total <= 0.0 {
        return Err(Error::invalid(
            OP,
            "counts",
            total,
            "no active component (all counts are 0)",
        ));
    }
    if alpha == 1.0 {
        // log Σ c_p e^{μ_p + σ_p²/2}
        let mut acc = LogAcc::new();
        for p in 0..mu.len() {
            let c = count(p);
            if c > 0.0 {
                acc.add(c.ln() + mu[p] + 0.5 * sigma[p] * sigma[p], 0.0, 0.0);
            }
        }
        let tau = acc.finish()[0];
        if !tau.is_finite() {
            return Err(Error::invalid(
                OP,
                "sigma",
                "(mixture)",
                "log sum c_p exp(mu_p + sigma_p^2/2) is not finite",
            ));
        }
        return Ok(TauHat {
            tau,
            iterations: 0,
            residual: 0.0,
        });
    }
    let model = Model::new(alpha);
    let mut center = f64::NEG_INFINITY;
    let mut sy_max: f64 = 0.0;
    for p in 0..mu.len() {
        if count(p) > 0.0 {
            center = center.max(model.a * mu[p]);
            sy_max = sy_max.max(model.sigma_y(sigma[p]));
        }
    }
    let r0 = sy_max * ((2.0 * (total + 1.0).ln()).sqrt() + 8.0);
    solve(
        OP,
        |tau| {
            let mut acc = LogAcc::new();
            for p in 0..mu.len() {
                let c = count(p);
                if c > 0.0 {
                    model.add(&mut acc, c.ln(), mu[p], sigma[p], tau);
                }
            }
            acc.finish()
        },
        center,
        r0,
        opts,
    )
}

/// z-score of the maximum of a page of `page_size` iid normal scores at quantile q:
/// `Φ⁻¹(q^{1/page_size})`. The selection stage keeps a page when its mean plus this many
/// σ clears τ̂. Computed from the upper tail `1 − q^{1/ps} = −expm1(ln q / ps)` so that it
/// keeps full precision as the quantile approaches 1.
pub fn page_max_quantile_z(q: f64, page_size: usize) -> Result<f64> {
    const OP: &str = "tau::page_max_quantile_z";
    if !(q > 0.0 && q < 1.0) {
        return Err(Error::invalid(
            OP,
            "q",
            q,
            "quantile must lie strictly inside (0, 1)",
        ));
    }
    if page_size == 0 {
        return Err(Error::invalid(OP, "page_size", 0, "must be >= 1"));
    }
    let l = q.ln() / page_size as f64;
    Ok(quantile_from_tails(l.exp(), -l.exp_m1()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tabulated t*(c) against the root solved to the last bits, at random c and at
    /// every node, for the closed-form β and quadrature ones.
    #[test]
    fn tstar_table_matches_the_solver() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 11) as f64 / (1u64 << 53) as f64
        };
        for beta in [1.0, 2.0, 3.0, 2.5, 4.0, 1.0 / 0.7, 0.5, 0.2] {
            let tab = TstarTable::build(beta).unwrap();
            let kint = int_beta(beta);
            let root = |c: f64| {
                let (mut lo, mut hi) = (-80.0f64, 2.0e4f64);
                for _ in 0..300 {
                    let mid = 0.5 * (lo + hi);
                    if std_moment(beta, kint, mid).0 < c {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                0.5 * (lo + hi)
            };
            let mut worst = 0.0f64;
            for i in 0..400 {
                let c = if i % 4 == 0 {
                    TstarTable::C_LO + (i / 4) as f64 * 37.0 * tab.h
                } else {
                    TstarTable::C_LO + next() * (TstarTable::C_HI - TstarTable::C_LO)
                };
                let Some(t) = tab.eval(c) else { continue };
                let r = root(c);
                let err = (t - r).abs() / r.abs().max(1.0);
                worst = worst.max(err);
                assert!(
                    err <= 1e-13,
                    "beta {beta} c {c}: table {t} vs root {r} ({err:.2e})"
                );
            }
            assert!(tab.eval(TstarTable::C_LO - 1e-9).is_none());
            assert!(tab.eval(TstarTable::C_HI + 1e-9).is_none());
            let last = tab.nodes.last().unwrap()[0];
            assert!(
                last.abs() <= TstarTable::T_MAX,
                "beta {beta}: last node {last}"
            );
            eprintln!("beta {beta}: worst table error {worst:.2e}");
        }
    }

    /// Closed forms / continued fraction vs quadrature on a wide t grid.
    #[test]
    fn integer_paths_match_quadrature() {
        for k in 1..=4u32 {
            let mut t = -60.0;
            while t <= 60.0 {
                let (l1, r1, q1) = std_moment_int(k, t);
                // both quadratures: the fast rule (without its fallback) and the reference
                for (l2, r2, q2) in [
                    std_moment_quad_fast(k as f64, t).expect("no fallback"),
                    std_moment_quad_adaptive(k as f64, t),
                ] {
                    let tol = 5e-12 * l1.abs().max(1.0);
                    assert!((l1 - l2).abs() < tol, "k={k} t={t}: ln M {l1} vs {l2}");
                    assert!(
                        ((r1 - r2) / r1).abs() < 1e-9,
                        "k={k} t={t}: rho1 {r1} vs {r2}"
                    );
                    assert!(
                        (q1 - q2).abs() < 1e-8 * (q1.abs() + t.abs() * r1 + 1.0),
                        "k={k} t={t}: rho2 {q1} vs {q2}"
                    );
                }
                t += 0.37;
            }
        }
    }

    /// The fast rule against the adaptive reference over β from 1/20 (α = 21) to 10⁴
    /// (α = 1.0001) and |t| ≤ 10⁴ (where the reference is itself accurate): it never needs the
    /// fallback, and agrees to ~1e-13.
    #[test]
    fn fast_quadrature_matches_adaptive_reference() {
        let betas = [
            0.05,
            0.1,
            1.0 / 6.0,
            0.25,
            0.5,
            0.7,
            1.0,
            1.0 / 0.7,
            1.7,
            2.5,
            3.3,
            10.0,
            30.0,
            100.0,
            999.0,
            1e4,
        ];
        let mut ts = vec![-1e4, -1e3, -300.0, -100.0, 100.0, 300.0, 1e3, 1e4];
        ts.extend([-1.0 - 1e-12, -1.0, -1.0 + 1e-12]);
        let mut t = -40.0;
        while t <= 40.0 {
            ts.push(t);
            t += 0.173;
        }
        for &beta in &betas {
            for &t in &ts {
                let (l1, r1, q1) = std_moment_quad_fast(beta, t)
                    .unwrap_or_else(|| panic!("fast rule fell back at beta={beta} t={t}"));
                let (l2, r2, q2) = std_moment_quad_adaptive(beta, t);
                assert!(
                    (l1 - l2).abs() <= 5e-13 * l2.abs().max(1.0),
                    "beta={beta} t={t}: ln M {l1} vs {l2}"
                );
                assert!(
                    ((r1 - r2) / r2).abs() <= 1e-13,
                    "beta={beta} t={t}: rho1 {r1} vs {r2}"
                );
                assert!(
                    (q1 - q2).abs() <= 1e-13 * (q2.abs() + t.abs() * r2 + 1.0),
                    "beta={beta} t={t}: rho2 {q1} vs {q2}"
                );
            }
        }
    }

    /// Small β (α up to 200): ρ1 = M_{β−1}/M_β is the log-derivative (d ln M_β/dt)/β. This
    /// holds the fast rule to an independent check where the adaptive reference is off (it
    /// loses the x^{β−1} mass below 1e-308: ~1e-5 of ρ1 at β = 1/63).
    #[test]
    fn fast_quadrature_small_beta_log_derivative() {
        for beta in [1e-5, 1.0 / 200.0, 1.0 / 63.0, 0.05, 0.3] {
            for t in [-30.0, -5.0, -1.5, -0.7, 0.0, 1.0, 3.0, 6.0, 15.0] {
                let (_, r1, q1) = std_moment_quad_fast(beta, t).expect("no fallback");
                let h = 1e-4;
                let lm = |t: f64| std_moment_quad_fast(beta, t).unwrap().0;
                let d = (lm(t + h) - lm(t - h)) / (2.0 * h) / beta;
                // the difference quotient carries ln M's rounding divided by 2h·β
                let rounding = 4.0 * f64::EPSILON * lm(t).abs().max(1.0) / (2.0 * h * beta);
                assert!(
                    (r1 - d).abs() <= 1e-7 * d.abs() + rounding,
                    "beta={beta} t={t}: rho1 {r1} vs d lnM/dt / beta {d}"
                );
                // ρ2 = 1 + t·… identity of the derivatives: (M_β − t M_{β−1})/M_β
                assert!((q1 - (1.0 - t * r1)).abs() <= 1e-9 * (1.0 + t.abs() * r1));
            }
        }
    }

    /// t = 0 has closed forms, M_ν(0) = 2^{(ν−1)/2} Γ((ν+1)/2)/√(2π): ln M_β(0) and
    /// ρ1 = Γ(β/2)/(√2·Γ((β+1)/2)), ρ2 = 1. For β → ∞ (α → 1⁺, up to α − 1 = 1e-15), where
    /// the Γ difference loses precision, ρ1 = β^{−1/2}(1 + 1/(4β) + 1/(32β²) + O(β⁻³)); the fast rule
    /// must not need its fallback there either.
    #[test]
    fn fast_quadrature_at_zero_is_a_gamma_ratio() {
        for beta in [1e-5, 1.0 / 600.0, 1.0 / 63.0, 0.05, 0.5, 1.7, 10.0, 100.0] {
            let (l, r1, q1) = std_moment_quad_fast(beta, 0.0).expect("no fallback");
            let want = 0.5 * (beta - 1.0) * std::f64::consts::LN_2 + ln_gamma(0.5 * (beta + 1.0))
                - LN_SQRT_2PI;
            assert!(
                (l - want).abs() <= 1e-13 * want.abs().max(1.0),
                "beta={beta}: {l} vs {want}"
            );
            let want = (ln_gamma(0.5 * beta) - ln_gamma(0.5 * (beta + 1.0))).exp()
                * std::f64::consts::FRAC_1_SQRT_2;
            assert!(
                ((r1 - want) / want).abs() <= 1e-12,
                "beta={beta}: rho1 {r1} vs {want}"
            );
            assert!((q1 - 1.0).abs() <= 1e-13, "beta={beta}: rho2 {q1}");
        }
        for beta in [1e4, 1e6, 1e9, 1e12, 1e15] {
            let (_, r1, q1) = std_moment_quad_fast(beta, 0.0).expect("no fallback");
            let want = (1.0 + 0.25 / beta + 1.0 / (32.0 * beta * beta)) / beta.sqrt();
            assert!(
                ((r1 - want) / want).abs() <= 1e-12,
                "beta={beta}: rho1 {r1} vs {want}"
            );
            assert!((q1 - 1.0).abs() <= 1e-12, "beta={beta}: rho2 {q1}");
            let mut t = -50.0;
            while t <= 50.0 {
                let m = std_moment_quad_fast(beta, t);
                assert!(
                    m.is_some_and(|(l, r1, q1)| l.is_finite() && r1 > 0.0 && q1.is_finite()),
                    "beta={beta} t={t}: {m:?}"
                );
                t += 0.77;
            }
        }
    }

    /// |t| far beyond where the adaptive reference keeps precision (it forms u − t at
    /// u ≈ t): the asymptotic series.
    #[test]
    fn fast_quadrature_extreme_t() {
        for beta in [1.0 / 63.0, 0.5, 1.7, 10.0, 100.0] {
            for t in [1e5, 1e10, 1e100, 1e300] {
                let (l, r1, _) = std_moment_quad_fast(beta, t).expect("no fallback");
                // M_β(t) = t^β (1 + β(β−1)/(2t²) + O(t⁻⁴)), so
                // M_{β−1}/M_β = (1 − (β−1)/t² + O(t⁻⁴))/t
                let want = beta * t.ln() + beta * (beta - 1.0) / (2.0 * t * t);
                assert!(
                    (l - want).abs() <= 1e-14 * want.abs(),
                    "beta={beta} t={t}: {l} vs {want}"
                );
                let want = 1.0 - (beta - 1.0) / (t * t);
                assert!(
                    (r1 * t - want).abs() <= 1e-12,
                    "beta={beta} t={t}: rho1 {r1}"
                );
            }
            for s in [1e5, 1e10, 1e100] {
                let (l, r1, _) = std_moment_quad_fast(beta, -s).expect("no fallback");
                // M_β(−s) = φ(s) Γ(β+1) s^{−β−1} (1 + O(β²/s²)), M_{β−1}/M_β → s/β
                let want =
                    -0.5 * s * s - LN_SQRT_2PI + ln_gamma(beta + 1.0) - (beta + 1.0) * s.ln();
                assert!(
                    (l - want).abs() <= 1e-14 * want.abs(),
                    "beta={beta} s={s}: {l} vs {want}"
                );
                assert!(
                    (r1 * beta / s - 1.0).abs() <= 1e-5,
                    "beta={beta} s={s}: rho1 {r1}"
                );
            }
        }
    }

    /// Reference values for `scripts/gauss_beta_check.py`, which holds the device quadrature
    /// (`gpu/kernels/gauss_beta.cuh`, compiled on the host) to them: the adaptive reference
    /// `(ln M_β, M_{β−1}/M_β)` on a (β, t) grid, whether the CPU's fast rule needed its
    /// fallback there, and τ̂ of single Gaussians. Writes to `$ENTMAXKV_GBETA_REF`; does
    /// nothing without it.
    #[test]
    #[ignore = "a data dump for scripts/gauss_beta_check.py"]
    fn gauss_beta_reference_dump() {
        use std::fmt::Write as _;
        let Ok(path) = std::env::var("ENTMAXKV_GBETA_REF") else {
            return;
        };
        let mut out = String::new();
        // β = 1/(α−1): 20 (α = 1.05) down to 1/20 (α = 21); 0.5, 0.8, 1.3, 4 and 6 are
        // α = 3, 2.25, 1.77, 1.25, 1.17
        let betas = [
            0.05,
            0.1,
            0.25,
            1.0 / 3.0,
            0.5,
            0.8,
            1.0,
            1.3,
            1.0 / 0.7,
            1.7,
            2.5,
            3.0,
            3.3,
            4.0,
            6.0,
            10.0,
            20.0,
            100.0,
            1000.0,
        ];
        let mut ts = vec![
            -1e4, -1e3, -300.0, -100.0, -60.0, 60.0, 100.0, 300.0, 1e3, 1e4,
        ];
        ts.extend([-2.0, -1.0 - 1e-12, -1.0, -1.0 + 1e-12, -1e-300, 0.0, 1e-300]);
        let mut t = -40.0;
        while t <= 40.0 {
            ts.push(t);
            t += 0.0731;
        }
        for &beta in &betas {
            for &t in &ts {
                let (l, r, _) = std_moment_quad_adaptive(beta, t);
                let fast_ok = std_moment_quad_fast(beta, t).is_some() as u8;
                writeln!(out, "m {beta:e} {t:e} {l:e} {r:e} {fast_ok}").unwrap();
            }
        }
        let opts = TauHatOpts {
            tol: 1e-14,
            rtol: 0.0,
            max_iter: 500,
        };
        for alpha in [3.0, 1.25, 1.7, 2.5, 1.1, 1.05, 5.0, 21.0] {
            for mu in [-3.0, 0.0, 0.7, 6.0] {
                for sigma in [1e-3, 0.3, 1.0, 3.0] {
                    for n in [1.0, 16.0, 1e3, 1e6, 1.6e7] {
                        let th = tau_hat_single(mu, sigma, n, alpha, &opts).unwrap();
                        let tau = th.tau;
                        writeln!(out, "tau {alpha:e} {mu:e} {sigma:e} {n:e} {tau:e}").unwrap();
                    }
                }
            }
        }
        std::fs::write(&path, out).unwrap();
    }

    #[test]
    fn spec_closed_forms() {
        // m1, m2, m3 of SPEC §4.6 at a benign point. NB: the SPEC prints the φ term of m3 as
        // (σ³ + 2μ²σ); the correct one (M_3 = t·M_2 + 2·M_1, checked against mpmath
        // quadrature: 4.4795761644218385 here) is (2σ³ + μ²σ).
        let (mu, s) = (0.7f64, 1.3f64);
        let t = mu / s;
        let (ph, cdf) = (normal_pdf(t), normal_cdf(t));
        let m1 = mu * cdf + s * ph;
        let m2 = (mu * mu + s * s) * cdf + mu * s * ph;
        let m3 = (mu.powi(3) + 3.0 * mu * s * s) * cdf + (2.0 * s.powi(3) + mu * mu * s) * ph;
        assert!((m3 - 4.479_576_164_421_838).abs() < 1e-13);
        for (beta, want, d1, d2) in [
            (1.0, m1, -cdf, ph / s),
            (2.0, m2, -2.0 * m1, 2.0 * cdf),
            (3.0, m3, -3.0 * m2, 6.0 * m1),
        ] {
            let m = trunc_gauss_moments(mu, s, beta).unwrap();
            assert!((m.e - want).abs() < 1e-13 * want, "{beta} {} {want}", m.e);
            assert!((m.de_dtau - d1).abs() < 1e-13 * d1.abs(), "{beta}");
            assert!((m.d2e_dtau2 - d2).abs() < 1e-13 * d2.abs(), "{beta}");
        }
    }

    #[test]
    fn quantile_z_values() {
        let z = page_max_quantile_z(0.99, 16).unwrap();
        assert!((z - 3.2259).abs() < 5e-5, "{z}");
        let z = page_max_quantile_z(0.995, 16).unwrap();
        assert!((z - 3.4199).abs() < 5e-5, "{z}");
    }
}
