//! Exact α-entmax thresholds on explicit score vectors.
//!
//! Everything is solved in coordinates shifted by the maximum, `d_i = (α−1)(s_i − s_max)`,
//! with the relative threshold `t = τ − z_max ∈ [−1, −k^{−(α−1)}]` (k = number of
//! candidates). The shift makes scores of any magnitude (±1e300) safe: only the final
//! `τ = z_max + t` is formed in absolute coordinates. Only entries with `d_i > −1` can be
//! in the support, so the solvers look at those candidates only.
//!
//! The non-sort-based solver iterates on `G(t) = (Σ(d−t)_+^β)^{1/β} − 1` instead of
//! `F(t) = Σ(d−t)_+^β − 1`: G is exactly linear on a fixed support for sparsemax, convex for
//! β ≥ 1, and stays well-scaled when β = 1/(α−1) is huge (α → 1), where F is so steep that
//! Newton on F crawls. Halley on G is safeguarded by the bracket, so it cannot escape.

use crate::error::{check_alpha, Error, Result};

/// The exact entmax of a score vector (the f64 oracle).
#[derive(Debug, Clone, PartialEq)]
pub struct Entmax {
    /// Weights, `Σp = 1`.
    pub p: Vec<f64>,
    /// Threshold in kernel space (`z = (α−1)s`); for α = 1 the log-sum-exp of the scores.
    pub tau: f64,
    /// `#{i : z_i > τ}` (α > 1; a weight may still underflow to 0 for α very close to 1);
    /// for α = 1 every entry, `n`.
    pub support: usize,
}

/// How the threshold for a given α is solved.
#[derive(Debug, Clone, Copy)]
enum Method {
    Softmax,
    Sparsemax,
    Entmax15,
    Halley,
}

fn method(alpha: f64) -> Method {
    if alpha == 1.0 {
        Method::Softmax
    } else if alpha == 2.0 {
        Method::Sparsemax
    } else if alpha == 1.5 {
        Method::Entmax15
    } else {
        Method::Halley
    }
}

fn check_nonempty(op: &'static str, arg: &'static str, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid(
            op,
            arg,
            "[] (0 elements)",
            "needs at least one element",
        ));
    }
    Ok(())
}

/// Max of a finite slice, or the typed error for its first NaN/±Inf. One pass.
fn finite_max<T: Copy + Into<f64>>(op: &'static str, arg: &'static str, xs: &[T]) -> Result<f64> {
    let mut m = f64::NEG_INFINITY;
    for (index, &x) in xs.iter().enumerate() {
        let v: f64 = x.into();
        if !v.is_finite() {
            return Err(Error::NonFinite {
                op,
                arg,
                index,
                value: v,
            });
        }
        if v > m {
            m = v;
        }
    }
    Ok(m)
}

/// `x^β, x^{β−1}, x^{β−2}` for x > 0, exact products for the common integer β.
#[inline]
fn powers(x: f64, beta: f64) -> (f64, f64, f64) {
    if beta == 1.0 {
        (x, 1.0, 1.0 / x)
    } else if beta == 2.0 {
        (x * x, x, 1.0)
    } else if beta == 3.0 {
        (x * x * x, x * x, x)
    } else {
        let p0 = x.powf(beta);
        let p1 = p0 / x;
        (p0, p1, p1 / x)
    }
}

/// `(Σ(d−t)_+^β, Σ(d−t)_+^{β−1}, Σ(d−t)_+^{β−2})` over candidates, `d = a(s − shift)`.
#[inline]
fn sums<T: Copy + Into<f64>>(cand: &[T], shift: f64, a: f64, beta: f64, t: f64) -> [f64; 3] {
    let mut acc = [0.0f64; 3];
    for &s in cand {
        let x = a * (s.into() - shift) - t;
        if x > 0.0 {
            let (p0, p1, p2) = powers(x, beta);
            acc[0] += p0;
            acc[1] += p1;
            acc[2] += p2;
        }
    }
    acc
}

/// One safeguarded Halley step on `G = A0^{1/β} − 1` from the sums at `t`.
/// Returns the candidate (not yet checked against the bracket); NaN if no step exists.
#[inline]
fn g_halley_step(t: f64, m: [f64; 3], beta: f64) -> f64 {
    let [a0, a1, a2] = m;
    if !(a0 > 0.0 && a1 > 0.0) {
        return f64::NAN;
    }
    let r = if beta == 1.0 {
        a0
    } else if beta == 2.0 {
        a0.sqrt()
    } else {
        a0.powf(1.0 / beta)
    };
    let g = r - 1.0;
    let g1 = -r * a1 / a0;
    // G'' = (β−1)(r/A0)(A2 − A1²/A0); zero for sparsemax (G is linear there).
    let g2 = if beta == 1.0 {
        0.0
    } else {
        (beta - 1.0) * (r / a0) * (a2 - a1 * a1 / a0)
    };
    let newton = -g / g1;
    let corr = 0.5 * g * g2 / (g1 * g1);
    let step = if corr.is_finite() && corr.abs() < 0.5 {
        newton / (1.0 - corr)
    } else {
        newton
    };
    t + step
}

/// Bracketed Halley for the relative threshold on unsorted candidates.
fn solve_halley<T: Copy + Into<f64>>(
    cand: &[T],
    shift: f64,
    a: f64,
    beta: f64,
    mut lo: f64,
    mut hi: f64,
) -> f64 {
    if hi <= lo {
        return lo;
    }
    // G is convex for β ≥ 1, so Newton-type steps from the left end approach monotonically.
    let mut t = lo;
    for _ in 0..200 {
        let m = sums(cand, shift, a, beta, t);
        let f = m[0] - 1.0;
        if f == 0.0 {
            return t;
        }
        if f > 0.0 {
            lo = t;
        } else {
            hi = t;
        }
        let mut next = g_halley_step(t, m, beta);
        // A step at rounding level is convergence, even where it lands on the end just set
        // (else the bisection below would halve the whole bracket down to ulps).
        if (next - t).abs() <= 2.0 * f64::EPSILON * t.abs().max(f64::MIN_POSITIVE) {
            return if next > lo && next < hi { next } else { t };
        }
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        let converged = (next - t).abs() <= 2.0 * f64::EPSILON * t.abs().max(f64::MIN_POSITIVE)
            || hi - lo <= 2.0 * f64::EPSILON * hi.abs().max(lo.abs());
        t = next;
        if converged {
            break;
        }
    }
    t
}

/// Sparsemax threshold on candidates sorted descending (relative coordinates), and whether
/// the scan stopped inside `sorted` (otherwise more candidates could extend the support).
fn solve_sorted_sparsemax<T: Copy + Into<f64>>(sorted: &[T], shift: f64) -> (f64, bool) {
    let mut cum = 0.0;
    let mut t_best = -1.0;
    for (i, &s) in sorted.iter().enumerate() {
        let d = s.into() - shift;
        cum += d;
        let t = (cum - 1.0) / (i + 1) as f64;
        if t < d {
            t_best = t;
        } else {
            return (t_best, true);
        }
    }
    (t_best, false)
}

/// 1.5-entmax threshold on candidates sorted descending (Peters et al. 2019): for support
/// size k, Σ(d−t)² = 1 gives t_k = mean_k − √((1 − ss_k)/k); the answer is the largest k
/// with t_k < d_(k). Welford updates keep ss_k free of the E[d²] − E[d]² cancellation.
/// Also returns whether the scan stopped inside `sorted`.
fn solve_sorted_entmax15<T: Copy + Into<f64>>(sorted: &[T], shift: f64, a: f64) -> (f64, bool) {
    let mut mean = 0.0;
    let mut ss = 0.0;
    let mut t_best = -1.0;
    for (i, &s) in sorted.iter().enumerate() {
        let d = a * (s.into() - shift);
        let k = (i + 1) as f64;
        let delta = d - mean;
        mean += delta / k;
        ss += delta * (d - mean);
        if ss > 1.0 {
            return (t_best, true);
        }
        let t = mean - ((1.0 - ss) / k).sqrt();
        if t < d {
            t_best = t;
        } else {
            return (t_best, true);
        }
    }
    (t_best, false)
}

/// Removes the rounding of the closed forms: Newton on the fixed support, kept only if it
/// reduces |Σp − 1|. Returns the threshold and the other point whose sums were evaluated
/// (NaN if none).
fn polish<T: Copy + Into<f64>>(cand: &[T], shift: f64, a: f64, beta: f64, t: f64) -> (f64, f64) {
    let m = sums(cand, shift, a, beta, t);
    let err = (m[0] - 1.0).abs();
    if err == 0.0 {
        return (t, f64::NAN);
    }
    let next = g_halley_step(t, m, beta);
    if !next.is_finite() || next >= 0.0 {
        return (t, f64::NAN);
    }
    let m2 = sums(cand, shift, a, beta, next);
    if (m2[0] - 1.0).abs() < err {
        (next, next)
    } else {
        (t, next)
    }
}

/// The sorted closed forms first sort only this many of the largest candidates.
const PARTIAL_SORT: usize = 256;

/// Sparsemax / 1.5-entmax relative threshold: sort descending, closed form, polish. The
/// closed forms read the largest candidates in order and stop at the support's edge,
/// usually long before the end, so only the largest `m` are sorted (`select_nth` + a sort
/// of the prefix), and `m` grows only when the scan ran through the prefix or polish could
/// see past it. The result equals a full sort's bit for bit: the prefix is the same sorted
/// sequence, and every later candidate is at most the m-th largest, which contributes to
/// none of the sums polish evaluates.
fn solve_sorted<T: Copy + Into<f64>>(cand: &mut [T], shift: f64, alpha: f64) -> f64 {
    let a = alpha - 1.0;
    let sparse = alpha == 2.0;
    let pb = if sparse { 1.0 } else { 2.0 };
    let desc = |x: &T, y: &T| {
        let (x, y): (f64, f64) = ((*x).into(), (*y).into());
        y.total_cmp(&x)
    };
    let k = cand.len();
    let mut m = PARTIAL_SORT.min(k);
    loop {
        if m < k {
            cand.select_nth_unstable_by(m - 1, desc);
            cand[..m].sort_unstable_by(desc);
        } else {
            cand.sort_unstable_by(desc);
        }
        let pre = &cand[..m];
        let (t, stopped) = if sparse {
            solve_sorted_sparsemax(pre, shift)
        } else {
            solve_sorted_entmax15(pre, shift, a)
        };
        if m < k && !stopped {
            m = (4 * m).min(k);
            continue;
        }
        let (res, other) = polish(pre, shift, a, pb, t);
        if m == k {
            return res;
        }
        // As `sums` forms it: the m-th largest is outside the support at t (and `other`).
        let s_m: f64 = cand[m - 1].into();
        let quiet = |tt: f64| a * (s_m - shift) - tt <= 0.0;
        if quiet(t) && (other.is_nan() || quiet(other)) {
            return res;
        }
        m = (4 * m).min(k);
    }
}

/// Relative threshold `t = τ − a·shift` on the candidates (all entries with
/// `a(s − shift) > −1`, the maximum among them). Sorts `cand` for the closed forms.
fn solve_relative<T: Copy + Into<f64>>(cand: &mut [T], shift: f64, alpha: f64) -> f64 {
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let k = cand.len();
    match method(alpha) {
        Method::Sparsemax | Method::Entmax15 => solve_sorted(cand, shift, alpha),
        Method::Halley | Method::Softmax => {
            // τ ≥ z_max − 1 (p_max ≤ 1) and τ ≤ z_max − k^{−a} (k·p_max ≥ 1).
            let lo = -1.0;
            let hi = -(-a * (k as f64).ln()).exp();
            solve_halley(cand, shift, a, beta, lo, hi)
        }
    }
}

/// Numerically stable log-sum-exp (with its max), f64 accumulation.
fn logsumexp<T: Copy + Into<f64>>(xs: &[T], max: f64) -> f64 {
    let s: f64 = xs.iter().map(|&x| (x.into() - max).exp()).sum();
    max + s.ln()
}

/// The exact α-entmax of `scores` (f64 oracle).
///
/// α = 1 is softmax (`tau` = log-sum-exp); α = 2 (sparsemax) and α = 1.5 use the exact
/// sort-based algorithms; any other α > 1 a bracketed Halley solve to |Σp − 1| ≈ 1e-15.
pub fn entmax(scores: &[f64], alpha: f64) -> Result<Entmax> {
    const OP: &str = "tau::entmax";
    check_alpha(OP, alpha)?;
    check_nonempty(OP, "scores", scores.len())?;
    let smax = finite_max(OP, "scores", scores)?;
    if alpha == 1.0 {
        // Weights from the max-shifted exponentials: τ itself may have absorbed ln Σ
        // (|s| ~ 1e300), the shifted values have not.
        let sum: f64 = scores.iter().map(|&s| (s - smax).exp()).sum();
        let tau = smax + sum.ln();
        let p = scores.iter().map(|&s| (s - smax).exp() / sum).collect();
        return Ok(Entmax {
            p,
            tau,
            support: scores.len(),
        });
    }
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let mut cand: Vec<f64> = scores
        .iter()
        .copied()
        .filter(|&s| a * (s - smax) > -1.0)
        .collect();
    let t = solve_relative(&mut cand, smax, alpha);
    let tau = a * smax + t;
    if !tau.is_finite() {
        return Err(Error::invalid(
            OP,
            "scores",
            smax,
            "(alpha - 1) * max(scores) overflows f64, so tau is not representable",
        ));
    }
    let mut support = 0;
    let mut p: Vec<f64> = scores
        .iter()
        .map(|&s| {
            let x = a * (s - smax) - t;
            if x > 0.0 {
                support += 1;
                powers(x, beta).0
            } else {
                0.0
            }
        })
        .collect();
    // t is the double nearest the root, but p = x^β amplifies its last-bit error β-fold
    // (β = 10⁴ at α = 1.0001); the renormalisation (a ≤ ~1e-12 relative change) restores
    // Σp = 1 to rounding.
    let sum: f64 = p.iter().sum();
    for v in &mut p {
        *v /= sum;
    }
    Ok(Entmax { p, tau, support })
}

/// Fast threshold over an f32 score buffer, τ in kernel space (α = 1: log-sum-exp of the
/// scores). Only entries within 1/(α−1) of the maximum can carry weight, so they are
/// gathered into `scratch` (no allocation once it has the capacity) and solved exactly
/// there; the arithmetic is f64 on the exact f32 values, so the result matches
/// [`entmax`] on the same numbers to rounding.
pub fn entmax_threshold_f32(scores: &[f32], alpha: f64, scratch: &mut Vec<f32>) -> Result<f64> {
    const OP: &str = "tau::entmax_threshold_f32";
    check_alpha(OP, alpha)?;
    check_nonempty(OP, "scores", scores.len())?;
    let smax = finite_max(OP, "scores", scores)?;
    if alpha == 1.0 {
        return Ok(logsumexp(scores, smax));
    }
    let a = alpha - 1.0;
    scratch.clear();
    scratch.extend(
        scores
            .iter()
            .copied()
            .filter(|&s| a * (f64::from(s) - smax) > -1.0),
    );
    let t = solve_relative(scratch.as_mut_slice(), smax, alpha);
    Ok(a * smax + t)
}

/// [`entmax_threshold_f32`] when the caller already knows the maximum `smax` (finite) and
/// has gathered the candidates — every score with `(α−1)(s − smax) > −1`, in score order —
/// into `cand` (α > 1). Same solve, so the same τ bit for bit; `cand` is reordered.
pub fn entmax_threshold_candidates(cand: &mut [f32], smax: f64, alpha: f64) -> f64 {
    let a = alpha - 1.0;
    a * smax + solve_relative(cand, smax, alpha)
}

/// [`entmax_threshold_f32`] on an f64 score buffer (e.g. rigorous score bounds that must
/// not be rounded to f32): same exact solve, `scratch` reused without allocation.
pub fn entmax_threshold_f64(scores: &[f64], alpha: f64, scratch: &mut Vec<f64>) -> Result<f64> {
    const OP: &str = "tau::entmax_threshold_f64";
    check_alpha(OP, alpha)?;
    check_nonempty(OP, "scores", scores.len())?;
    let smax = finite_max(OP, "scores", scores)?;
    if alpha == 1.0 {
        return Ok(logsumexp(scores, smax));
    }
    let a = alpha - 1.0;
    scratch.clear();
    scratch.extend(scores.iter().copied().filter(|&s| a * (s - smax) > -1.0));
    let t = solve_relative(scratch.as_mut_slice(), smax, alpha);
    Ok(a * smax + t)
}

/// Writes `p_i = [(α−1)s_i − τ]_+^{1/(α−1)}` (α = 1: `exp(s_i − τ)`) into `out` and returns
/// Σp in f64 — callers renormalise or check it instead of trusting τ blindly.
pub fn entmax_weights_f32(scores: &[f32], alpha: f64, tau: f64, out: &mut [f32]) -> Result<f64> {
    const OP: &str = "tau::entmax_weights_f32";
    check_alpha(OP, alpha)?;
    if out.len() != scores.len() {
        return Err(Error::Mismatch {
            op: OP,
            arg: "out.len()",
            got: out.len(),
            what: "scores.len()",
            expected: scores.len(),
        });
    }
    if !tau.is_finite() {
        return Err(Error::invalid(OP, "tau", tau, "tau must be finite"));
    }
    finite_max(OP, "scores", scores)?;
    let mut sum = 0.0;
    if alpha == 1.0 {
        for (o, &s) in out.iter_mut().zip(scores) {
            let p = (f64::from(s) - tau).exp();
            sum += p;
            *o = p as f32;
        }
    } else {
        let a = alpha - 1.0;
        let beta = 1.0 / a;
        for (o, &s) in out.iter_mut().zip(scores) {
            let x = a * f64::from(s) - tau;
            let p = if x > 0.0 { powers(x, beta).0 } else { 0.0 };
            sum += p;
            *o = p as f32;
        }
    }
    Ok(sum)
}

/// `(Σ(z−τ)_+^β, Σ(z−τ)_+^{β−1}, Σ(z−τ)_+^{β−2})` over the support `{z > τ}`, β = 1/(α−1),
/// z in kernel space. These are the three reductions a GPU kernel makes per Halley step:
/// `F = A0 − 1`, `F' = −β·A1`, `F'' = β(β−1)·A2`. Requires α > 1.
pub fn moments(z: &[f32], alpha: f64, tau: f64) -> Result<(f64, f64, f64)> {
    const OP: &str = "tau::moments";
    check_alpha(OP, alpha)?;
    if alpha == 1.0 {
        return Err(Error::invalid(
            OP,
            "alpha",
            alpha,
            "the entmax moments need alpha > 1 (softmax has no threshold moments)",
        ));
    }
    if !tau.is_finite() {
        return Err(Error::invalid(OP, "tau", tau, "tau must be finite"));
    }
    finite_max(OP, "z", z)?;
    let m = sums(z, 0.0, 1.0, 1.0 / (alpha - 1.0), tau);
    Ok((m[0], m[1], m[2]))
}

/// Relative step below which [`halley_correct`] stops: converged to f64 noise.
pub const CORRECT_TOL: f64 = 1e-12;
/// Relative distance within which a step past a bracket end lands on it (covers the f32
/// evaluation of the GPU kernels, so both take the same branch).
pub const CORRECT_SNAP: f64 = 1e-6;

/// `iters` safeguarded Halley steps on `Σ(z−τ)_+^β = 1` starting from `tau0` (the
/// "corrected" τ mode: a distributional τ̂ refined on the scores actually read).
///
/// `tau0` is first clamped into `[z_max − 1, z_max − n^{−(α−1)}]`, which always holds the
/// root, and every step is kept inside that bracket (narrowed by the sign of the residual),
/// falling back to bisection — so a poor start or an empty support can never push τ out
/// of range. `iters = 0` returns the clamped start. For α = 1 pass the scores as `z`: the
/// answer is their log-sum-exp (exact after one Newton step in log space), or `tau0` when
/// `iters = 0`. Stops early once a step is below [`CORRECT_TOL`] (relative): at the root
/// the safeguard would otherwise bisect away from it.
pub fn halley_correct(z: &[f32], alpha: f64, tau0: f64, iters: usize) -> Result<f64> {
    halley_correct_n("tau::halley_correct", z, z.len(), alpha, tau0, iters)
}

/// [`halley_correct`] over the `n` z-values of a head given only by its candidates `z`:
/// every value with `z − z_max > −1` (the maximum among them), in the order of the full
/// vector. The corrections' bracket never goes below `z_max − 1`, so no other value ever
/// contributes to a sum, and the sums over the candidates are those over all `n` values bit
/// for bit (the same terms added in the same order); `n` sets the bracket's upper end as
/// `z.len()` does in [`halley_correct`]. Same τ bit for bit (α > 1).
pub fn halley_correct_candidates(
    z: &[f32],
    n: usize,
    alpha: f64,
    tau0: f64,
    iters: usize,
) -> Result<f64> {
    const OP: &str = "tau::halley_correct_candidates";
    if n < z.len() {
        return Err(Error::invalid(OP, "n", n, "fewer values than candidates"));
    }
    if alpha == 1.0 {
        return Err(Error::invalid(
            OP,
            "alpha",
            alpha,
            "candidates serve alpha > 1 only",
        ));
    }
    halley_correct_n(OP, z, n, alpha, tau0, iters)
}

fn halley_correct_n(
    op: &'static str,
    z: &[f32],
    n: usize,
    alpha: f64,
    tau0: f64,
    iters: usize,
) -> Result<f64> {
    check_alpha(op, alpha)?;
    check_nonempty(op, "z", z.len())?;
    if !tau0.is_finite() {
        return Err(Error::invalid(op, "tau0", tau0, "tau0 must be finite"));
    }
    let zmax = finite_max(op, "z", z)?;
    if alpha == 1.0 {
        return Ok(if iters == 0 { tau0 } else { logsumexp(z, zmax) });
    }
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let lo = -1.0;
    let hi = -(-a * (n as f64).ln()).exp();
    let mut lo_t = lo;
    let mut hi_t = hi;
    let (mut lo_seen, mut hi_seen) = (false, false);
    let mut t = (tau0 - zmax).clamp(lo, hi);
    for _ in 0..iters {
        if hi_t <= lo_t {
            break;
        }
        let m = sums(z, zmax, 1.0, beta, t);
        let f = m[0] - 1.0;
        if f == 0.0 {
            break;
        }
        if f > 0.0 {
            lo_t = t;
            lo_seen = true;
        } else {
            hi_t = t;
            hi_seen = true;
        }
        let raw = g_halley_step(t, m, beta);
        // Converged: the step is at f64 noise. Take it (kept inside the bracket) and stop,
        // rather than let the safeguard bisect away from the root.
        if (raw - t).abs() <= CORRECT_TOL * (1.0 + t.abs()) {
            t = raw.clamp(lo_t, hi_t);
            break;
        }
        // An end not yet evaluated is a bound the root can equal (τ = z_max − 1 when the
        // largest score alone takes all the weight): a step may land on it; an evaluated end
        // has a nonzero residual, so the root is strictly inside. A step onto an end up to
        // rounding (CORRECT_SNAP) is that end, so f32 and f64 evaluations take the same
        // branch.
        let snap = CORRECT_SNAP * (1.0 + t.abs());
        let mut next = raw;
        if next < lo_t && next >= lo_t - snap {
            next = lo_t;
        } else if next > hi_t && next <= hi_t + snap {
            next = hi_t;
        }
        let inside = (next > lo_t || (!lo_seen && next == lo_t))
            && (next < hi_t || (!hi_seen && next == hi_t));
        if !inside || next == t {
            next = 0.5 * (lo_t + hi_t);
        }
        t = next;
    }
    Ok(zmax + t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Once the corrections reach the root they stay there: more iterations never move τ
    /// away from the exact threshold (the safeguard used to bisect off a converged root).
    #[test]
    fn corrections_stay_at_the_root() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for case in 0..300 {
            let alpha = [2.0, 1.5, 4.0 / 3.0, 1.25][case % 4];
            let n = 2 + case % 40;
            let z: Vec<f32> = (0..n).map(|_| (rnd() * 3.0) as f32).collect();
            // The exact τ (z-space) from the scores s = z/(α−1).
            let sd: Vec<f64> = z.iter().map(|&x| x as f64 / (alpha - 1.0)).collect();
            let exact = entmax_threshold_f64(&sd, alpha, &mut Vec::new()).unwrap();
            let tau0 = exact + (rnd() - 0.5) * 0.6;
            let mut reached = false;
            for it in 0..16 {
                let t = halley_correct(&z, alpha, tau0, it).unwrap();
                let close = (t - exact).abs() <= 1e-9 * (1.0 + exact.abs());
                assert!(
                    close || !reached,
                    "case {case}: alpha {alpha}, n {n}: left the root after {it} steps: {t} vs {exact}"
                );
                reached |= close;
            }
            if !reached {
                let ts: Vec<f64> = (0..6)
                    .map(|it| halley_correct(&z, alpha, tau0, it).unwrap())
                    .collect();
                panic!("case {case}: alpha {alpha}, n {n}: never reached {exact}: z {z:?} tau0 {tau0} iterates {ts:?}");
            }
        }
    }

    /// The partial sort gives the full sort's threshold bit for bit (sparsemax and
    /// 1.5-entmax; sizes around the prefix length; ties; long and short supports).
    #[test]
    fn partial_sort_equals_full_sort() {
        let mut seed = 17u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for trial in 0..600 {
            let alpha = if trial % 2 == 0 { 1.5 } else { 2.0 };
            let a = alpha - 1.0;
            let n = [1usize, 5, 255, 256, 257, 300, 1024, 1025, 4000, 6000][trial / 2 % 10];
            let spread = [0.01, 0.3, 3.0, 30.0][trial / 20 % 4];
            let ties = trial % 3 == 0;
            let scores: Vec<f64> = (0..n)
                .map(|_| {
                    let x = (rnd() - 0.5) * spread;
                    if ties {
                        (x * 8.0).round() / 8.0
                    } else {
                        x
                    }
                })
                .collect();
            let smax = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let cand: Vec<f64> = scores
                .iter()
                .copied()
                .filter(|&s| a * (s - smax) > -1.0)
                .collect();
            let mut full = cand.clone();
            full.sort_unstable_by(|x, y| y.total_cmp(x));
            let (t0, _) = if alpha == 2.0 {
                solve_sorted_sparsemax(&full, smax)
            } else {
                solve_sorted_entmax15(&full, smax, a)
            };
            let want = polish(&full, smax, a, if alpha == 2.0 { 1.0 } else { 2.0 }, t0).0;
            let mut part = cand.clone();
            let got = solve_sorted(&mut part, smax, alpha);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "trial {trial} n {n} alpha {alpha}"
            );
        }
    }

    #[test]
    fn small_cases() {
        let e = entmax(&[0.0], 1.5).unwrap();
        assert_eq!(e.p, vec![1.0]);
        assert_eq!(e.support, 1);
        assert!((e.tau + 1.0).abs() < 1e-15);

        let e = entmax(&[1.0, 1.0, 1.0, 1.0], 2.0).unwrap();
        for p in &e.p {
            assert!((p - 0.25).abs() < 1e-15);
        }
        let e = entmax(&[3.0, 1.0, -1.0], 2.0).unwrap();
        assert_eq!(e.p, vec![1.0, 0.0, 0.0]);
        assert_eq!(e.support, 1);
    }

    #[test]
    fn halley_correct_converges() {
        let z: Vec<f32> = (0..100).map(|i| ((i * 37) % 101) as f32 * 0.01).collect();
        for &alpha in &[1.5, 2.0, 1.7, 3.0] {
            let zs: Vec<f64> = z.iter().map(|&v| f64::from(v) / (alpha - 1.0)).collect();
            let exact = entmax(&zs, alpha).unwrap().tau;
            let got = halley_correct(&z, alpha, exact - 0.3, 30).unwrap();
            assert!((got - exact).abs() < 1e-12, "{alpha}: {got} vs {exact}");
            let (a0, _, _) = moments(&z, alpha, got).unwrap();
            assert!((a0 - 1.0).abs() < 1e-12);
        }
    }
}
