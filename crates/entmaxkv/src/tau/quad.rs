//! Quadrature for the non-integer truncated-Gaussian moments.
//!
//! Two rules:
//! * [`peak_integral`], the one the solvers use: a fixed ladder of at most three or four
//!   nested levels of a rule chosen from the integrand's shape (a log-concave peak times a
//!   power of x), on the interval where the integrand is within e^{−50} of its peak, with
//!   precomputed nodes. Each level reuses the previous level's nodes, and the difference
//!   between the last two levels is the error estimate: an integral is accepted only when it
//!   is below 1e-11 of the components' magnitudes, otherwise the caller falls back to
//!   [`integrate`]. A few microseconds a moment.
//! * [`integrate`], the adaptive reference: double-exponential quadrature (tanh-sinh on a
//!   finite piece, exp-sinh on the tail) refined until two levels agree to 1e-12, with nodes
//!   computed on the fly. Tens to hundreds of microseconds a moment; kept as the fallback and
//!   as the reference the unit tests hold the fast rule to.
//!
//! Why DE: the integrands `u^ν φ(u − t)` have an algebraic endpoint singularity at 0 when
//! ν ∈ (−1, 0) (α > 2) and a peak of unknown width; DE rules converge exponentially for
//! both, need no tuning per ν, and the nodes are computed so that `x − a` never cancels
//! near the singular endpoint.

use std::f64::consts::{FRAC_PI_2, PI};
use std::sync::OnceLock;

/// Half-width of the τ range of the DE rule; beyond it every node underflows/overflows.
const T_MAX: f64 = 6.5;
/// Coarsest step; refinements halve it.
const H0: f64 = 0.5;
const MAX_LEVEL: u32 = 9;
const MIN_LEVEL: u32 = 3;

/// Node `(x, dx/dτ)` of tanh-sinh on `[a, b]` at `τ`.
#[inline]
fn tanh_sinh_node(a: f64, b: f64, tau: f64) -> (f64, f64) {
    let y = FRAC_PI_2 * tau.sinh();
    let c = FRAC_PI_2 * tau.cosh();
    let e = (-2.0 * y.abs()).exp();
    let len = b - a;
    // distance from the nearer endpoint, without cancellation
    let near = len * e / (1.0 + e);
    let x = if y < 0.0 { a + near } else { b - near };
    let w = len * 2.0 * e / ((1.0 + e) * (1.0 + e)) * c;
    (x, w)
}

/// Node `(x, dx/dτ)` of exp-sinh on `[a, ∞)` with length scale `s` at `τ`.
#[inline]
fn exp_sinh_node(a: f64, s: f64, tau: f64) -> (f64, f64) {
    let e = (FRAC_PI_2 * tau.sinh()).exp();
    let c = FRAC_PI_2 * tau.cosh();
    (a + s * e, s * e * c)
}

/// Trapezoid sum of `f(x(τ))·x'(τ)` over `τ = k·h` for the given k (all or odd only).
fn level_sum<F, N, const K: usize>(node: &N, f: &F, h: f64, odd_only: bool, acc: &mut [f64; K])
where
    F: Fn(f64) -> [f64; K],
    N: Fn(f64) -> (f64, f64),
{
    let kmax = (T_MAX / h).ceil() as i64;
    let step = if odd_only { 2 } else { 1 };
    let mut k = if odd_only { -kmax | 1 } else { -kmax };
    while k <= kmax {
        let (x, w) = node(k as f64 * h);
        if w > 0.0 && w.is_finite() && x.is_finite() {
            let v = f(x);
            for (a, vi) in acc.iter_mut().zip(v) {
                let term = vi * w;
                if term.is_finite() {
                    *a += term;
                }
            }
        }
        k += step;
    }
}

/// Integrates a DE rule to convergence; `scale[i]` is the magnitude against which the
/// change of component i is judged (components may legitimately cancel to ~0).
fn integrate_rule<F, N, const K: usize>(node: N, f: &F) -> [f64; K]
where
    F: Fn(f64) -> [f64; K],
    N: Fn(f64) -> (f64, f64),
{
    let mut h = H0;
    let mut sum = [0.0; K];
    level_sum(&node, f, h, false, &mut sum);
    let mut est = sum.map(|s| s * h);
    for level in 1..=MAX_LEVEL {
        h *= 0.5;
        level_sum(&node, f, h, true, &mut sum);
        let new = sum.map(|s| s * h);
        let mag: f64 = new.iter().fold(0.0, |m, v| m.max(v.abs()));
        let done = level >= MIN_LEVEL
            && new
                .iter()
                .zip(est.iter())
                .all(|(n, o)| (n - o).abs() <= 1e-12 * mag);
        est = new;
        if done {
            break;
        }
    }
    est
}

/// `∫_lower^∞ f(x) dx` for a vector integrand, split at `split` (tanh-sinh on
/// `[lower, split]`, exp-sinh on `[split, ∞)` with length scale `width`).
pub(crate) fn integrate<F, const K: usize>(lower: f64, split: f64, width: f64, f: F) -> [f64; K]
where
    F: Fn(f64) -> [f64; K],
{
    let mut out = integrate_rule(|tau| exp_sinh_node(split, width, tau), &f);
    if split > lower {
        let left = integrate_rule(|tau| tanh_sinh_node(lower, split, tau), &f);
        for (o, l) in out.iter_mut().zip(left) {
            *o += l;
        }
    }
    out
}

/// The integrand is dropped where it is below e^{−LOG_CUT} of its peak (≈ 2e-22).
const LOG_CUT: f64 = 50.0;
/// √(2·LOG_CUT): on a side where the log-integrand's curvature is at least 1/width², it is
/// below −LOG_CUT beyond this many widths from the peak.
const R_CUT: f64 = 10.0;
/// Uniform trapezoid (a Gaussian-like peak far from 0) when the peak sits at least this many
/// widths above 0: the branch point of x^β at 0 is then far enough outside the rule's strip
/// of analyticity that the trapezoid error at the finest step is below 1e-20.
const D_TRAPEZOID: f64 = 12.0;
/// Acceptance: the last two levels agree to this fraction of each component's magnitude.
const FAST_TOL: f64 = 1e-11;
/// Finest tanh-sinh step; τ range of the table: `[−TS_T_LEFT, 3.5]`. On the right (x → b,
/// where the integrand is already below e^{−LOG_CUT}) the weights are below 2e-21 beyond
/// 3.5; on the left (x → 0) the integrand may carry x^{β−1}, which needs
/// `π·sinh τ ≳ (LOG_CUT + 15)/β`: TS_T_LEFT = 16 serves β ≥ 5e-6 (α ≤ 2·10⁵).
const TS_H_MIN: f64 = 1.0 / 64.0;
const TS_T_LEFT: f64 = 16.0;
const TS_K_RIGHT: usize = 224; // τ ≤ 3.5
const TS_K_LEFT: usize = 1024; // TS_T_LEFT / TS_H_MIN
/// Coarsest level: every 8th table node (h = 1/8).
const TS_J_MAX: u32 = 3;

/// Tanh-sinh nodes on `[0, 1]` at `τ = k·TS_H_MIN`, `k ∈ −TS_K_LEFT..=TS_K_RIGHT` (index
/// `k + TS_K_LEFT`): the node `y` (0 where it underflows), `ln y` (exact even there) and
/// `ln((dy/dτ)/y)`, so that a weight times a power of y is formed in log space.
struct TsTable {
    y: Vec<f64>,
    ln_y: Vec<f64>,
    ln_w_over_y: Vec<f64>,
}

fn ts_table() -> &'static TsTable {
    static TABLE: OnceLock<TsTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let n = TS_K_LEFT + TS_K_RIGHT + 1;
        let mut t = TsTable {
            y: Vec::with_capacity(n),
            ln_y: Vec::with_capacity(n),
            ln_w_over_y: Vec::with_capacity(n),
        };
        for i in 0..n {
            let tau = (i as f64 - TS_K_LEFT as f64) * TS_H_MIN;
            let u = FRAC_PI_2 * tau.abs().sinh();
            // e = e^{−2u}; the distance of y from the nearer endpoint is e/(1+e) and
            // dy/dτ = π cosh τ · e/(1+e)²
            let e = (-2.0 * u).exp();
            let ln_pc = (PI * tau.cosh()).ln();
            let (ln_y, ln_wy) = if tau < 0.0 {
                (-2.0 * u - e.ln_1p(), ln_pc - e.ln_1p())
            } else {
                (-e.ln_1p(), ln_pc - 2.0 * u - e.ln_1p())
            };
            t.y.push(ln_y.exp());
            t.ln_y.push(ln_y);
            t.ln_w_over_y.push(ln_wy);
        }
        t
    })
}

/// Accumulates one level's new nodes: `sum += Σ f`, `abs += Σ |f|`.
#[inline]
fn add_terms<const K: usize>(sum: &mut [f64; K], abs: &mut [f64; K], v: [f64; K]) {
    for i in 0..K {
        sum[i] += v[i];
        abs[i] += v[i].abs();
    }
}

/// Whether two consecutive levels agree (each component against its own magnitude).
fn converged<const K: usize>(new: &[f64; K], old: &[f64; K], abs: &[f64; K]) -> bool {
    (0..K).all(|i| (new[i] - old[i]).abs() <= FAST_TOL * abs[i])
}

/// `ln(1 + z) − z` without the cancellation of forming it from `ln_1p(z)` (z > −1): near
/// 0 by `ln(1+z) = 2·atanh(w)`, `w = z/(2+z)`, which gives `−z·w + 2w·Σ_k w^{2k}/(2k+1)`.
fn ln1p_minus_x(z: f64) -> f64 {
    if z.abs() < 0.2 {
        let w = z / (2.0 + z);
        let w2 = w * w;
        // |w| < 0.112: nine terms leave < 1e-18 of the leading −z·w
        let mut series = 1.0 / 19.0;
        for k in (1..9).rev() {
            series = 1.0 / (2 * k + 1) as f64 + w2 * series;
        }
        -z * w + 2.0 * w * w2 * series
    } else {
        z.ln_1p() - z
    }
}

/// `∫_0^∞ x^{−1}·e^{g(x)}·comps(x, x − x*) dx` for the log-concave family
/// `g(x* + δ) = β·(ln(1 + δ/x*) − δ/x*) − κ·δ²/2` (x^β times a Gaussian or exponential
/// factor, written about its maximum x*, where g = 0). Writing the log term as
/// `ln(1+z) − z` cancels the linear terms analytically: with β/x* ≫ 1 (β = 10¹², x* = 10⁶)
/// forming `β·ln(1 + δ/x*)` and subtracting the linear part in floating point would leave
/// ~1e-9 of noise in every node. The peak width is `(β/x*² + κ)^{−1/2}`, and g'' is at most
/// minus its inverse square on `(0, x*]`.
///
/// Returns `None` when the fixed ladder does not reach [`FAST_TOL`] (the caller then uses
/// [`integrate`]) or the shape arguments are unusable.
pub(crate) fn peak_integral<const K: usize, C>(
    x_star: f64,
    beta: f64,
    kappa: f64,
    comps: C,
) -> Option<[f64; K]>
where
    C: Fn(f64, f64) -> [f64; K],
{
    let positive = |x: f64| x > 0.0 && x.is_finite();
    if !(positive(x_star) && positive(beta) && kappa >= 0.0 && kappa.is_finite()) {
        return None;
    }
    let width = 1.0 / (beta / (x_star * x_star) + kappa).sqrt();
    if !(width > 0.0 && width.is_finite()) {
        return None;
    }
    let lg = |d: f64| beta * ln1p_minus_x(d / x_star) - 0.5 * kappa * d * d;
    // Right end: the first δ (doubling from R_CUT widths, then bisected to within 1/16 of
    // the last doubling) with g ≤ −LOG_CUT; by concavity g stays below it beyond.
    let mut d_in = 0.0;
    let mut d_hi = R_CUT * width;
    let mut tries = 0;
    loop {
        let g = lg(d_hi);
        if g.is_nan() {
            return None;
        }
        if g <= -LOG_CUT {
            break;
        }
        tries += 1;
        if tries > 60 || !d_hi.is_finite() {
            return None;
        }
        d_in = d_hi;
        d_hi *= 2.0;
    }
    for _ in 0..4 {
        let mid = 0.5 * (d_in + d_hi);
        if lg(mid) <= -LOG_CUT {
            d_hi = mid;
        } else {
            d_in = mid;
        }
    }
    if x_star >= D_TRAPEZOID * width {
        trapezoid(x_star, width, d_hi, &lg, &comps)
    } else {
        tanh_sinh_from_zero(x_star, x_star + d_hi, beta, kappa, &comps)
    }
}

/// Uniform trapezoid in δ = x − x* over `[−R_CUT·width, d_hi]` (g ≤ −LOG_CUT at both ends;
/// on the left by the curvature bound), steps 0.8, 0.4, 0.2 widths.
fn trapezoid<const K: usize, L, C>(
    x_star: f64,
    width: f64,
    d_hi: f64,
    lg: &L,
    comps: &C,
) -> Option<[f64; K]>
where
    L: Fn(f64) -> f64,
    C: Fn(f64, f64) -> [f64; K],
{
    let d_lo = -R_CUT * width;
    let mut raw = [0.0; K];
    let mut abs = [0.0; K];
    let mut prev: Option<[f64; K]> = None;
    for level in 0..3 {
        let step = 0.8 * width / (1u32 << level) as f64;
        let k_lo = (d_lo / step).ceil() as i64;
        let k_hi = (d_hi / step).floor() as i64;
        let odd_only = level > 0;
        let mut k = if odd_only { k_lo | 1 } else { k_lo };
        let inc = if odd_only { 2 } else { 1 };
        while k <= k_hi {
            let d = k as f64 * step;
            let x = x_star + d;
            let e = lg(d).exp() / x;
            let c = comps(x, d);
            add_terms(&mut raw, &mut abs, c.map(|ci| ci * e));
            k += inc;
        }
        let est = raw.map(|r| r * step);
        let scale = abs.map(|a| a * step);
        if let Some(p) = prev {
            if converged(&est, &p, &scale) {
                return Some(est);
            }
        }
        prev = Some(est);
    }
    None
}

/// Tanh-sinh in x over `[0, b]`, steps 1/8 … 1/64 in τ. Each term is formed in log space
/// (`x^{−1}·e^g·dx = e^{β ln(b/x*) + β ln y − βδ/x* − κδ²/2 + ln(w/y)}·dτ`; here x* is
/// within a dozen widths of 0, so the terms are of moderate size), so the nodes whose x
/// underflows still carry the x^{β} mass of a small β exactly; the left τ range is cut where
/// `(x/x*)^β < e^{−LOG_CUT−15}`.
fn tanh_sinh_from_zero<const K: usize, C>(
    x_star: f64,
    b: f64,
    beta: f64,
    kappa: f64,
    comps: &C,
) -> Option<[f64; K]>
where
    C: Fn(f64, f64) -> [f64; K],
{
    let tab = ts_table();
    let ln_bx = (b / x_star).ln();
    // −ln y ≥ π sinh|τ| on the left half
    let need = ((LOG_CUT + 15.0) / beta + ln_bx) / PI;
    let t_left = need.asinh();
    if t_left.is_nan() || t_left > TS_T_LEFT {
        return None;
    }
    // first table index in range, rounded down to the coarsest level's grid
    let k_left = ((t_left / TS_H_MIN).ceil() as usize).min(TS_K_LEFT);
    let coarse = 1usize << TS_J_MAX;
    let i0 = (TS_K_LEFT - k_left) / coarse * coarse; // TS_K_LEFT is a multiple of 8
    let base = beta * ln_bx;
    let slope = beta / x_star;
    let eval = |i: usize| -> [f64; K] {
        let x = b * tab.y[i];
        let d = x - x_star;
        let g_rest = -d * (slope + 0.5 * kappa * d);
        let e = (base + beta * tab.ln_y[i] + tab.ln_w_over_y[i] + g_rest).exp();
        if e == 0.0 {
            return [0.0; K]; // underflow (a NaN propagates and fails the level check)
        }
        comps(x, d).map(|ci| ci * e)
    };
    let n = TS_K_LEFT + TS_K_RIGHT;
    let mut raw = [0.0; K];
    let mut abs = [0.0; K];
    let mut prev: Option<[f64; K]> = None;
    // level j uses every 2^j-th table node: h = 2^j·TS_H_MIN
    for j in (0..=TS_J_MAX).rev() {
        let stride = 1usize << j;
        let first = j == TS_J_MAX;
        let mut i = if first { i0 } else { i0 + stride };
        let inc = if first { stride } else { 2 * stride };
        while i <= n {
            add_terms(&mut raw, &mut abs, eval(i));
            i += inc;
        }
        let h = stride as f64 * TS_H_MIN;
        let est = raw.map(|r| r * h);
        let scale = abs.map(|a| a * h);
        if let Some(pv) = prev {
            if converged(&est, &pv, &scale) {
                return Some(est);
            }
        }
        prev = Some(est);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_integrals() {
        // ∫_0^∞ e^{−x} = 1, ∫_0^∞ x^{−0.9} e^{−x} = Γ(0.1), ∫_0^1 x^{-0.5} = 2
        let r = integrate(0.0, 0.0, 1.0, |x| [(-x).exp(), x.powf(-0.9) * (-x).exp()]);
        assert!((r[0] - 1.0).abs() < 1e-13, "{}", r[0]);
        assert!(
            (r[1] - 9.513_507_698_668_732).abs() < 1e-11,
            "{}",
            r[1] - 9.513_507_698_668_732
        );
        let r = integrate(0.0, 1.0, 1.0, |x| {
            [if x < 1.0 { x.powf(-0.5) } else { 0.0 }]
        });
        assert!((r[0] - 2.0).abs() < 1e-12, "{}", r[0]);
    }
}
