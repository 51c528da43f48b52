//! Double-exponential quadrature (tanh-sinh on a finite piece, exp-sinh on the tail) for
//! the non-integer truncated-Gaussian moments.
//!
//! Why DE: the integrands `u^ν φ(u − t)` have an algebraic endpoint singularity at 0 when
//! ν ∈ (−1, 0) (α > 2) and a peak of unknown width; DE rules converge exponentially for
//! both, need no tuning per ν, and the nodes are computed so that `x − a` never cancels
//! near the singular endpoint.

use std::f64::consts::FRAC_PI_2;

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
