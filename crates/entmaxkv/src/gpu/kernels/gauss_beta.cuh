// Truncated-Gaussian moments for any β = 1/(α−1) > 0 (Gaussian selection at α outside
// {4/3, 1.5, 2}): ln M_β(t) and M_{β−1}(t)/M_β(t), M_ν(t) = ∫_0^∞ u^ν φ(u − t) du, by the
// fixed-ladder quadrature of tau/quad.rs (peak_integral, as used by std_moment_quad_fast in
// tau/gaussian.rs), with the same constants, node sets and acceptance test, so that where the
// CPU's fast rule accepts, this accepts at the same level with the same sum (to libm
// rounding). Differences from the CPU:
//   * the tanh-sinh nodes are computed on the fly (no table);
//   * where the CPU's ladder fails its error check and falls back to the adaptive DE rule,
//     this ladder continues with two more halvings (trapezoid to 0.05 widths, tanh-sinh to
//     h = 1/256) and a left τ range to 24 (β ≥ ~2e-9 instead of 5e-6); if that still fails
//     the functions return false and the caller keeps every page (no silent wrong τ̂);
//   * only the two components the device solvers need (no M_β − t·M_{β−1}: they use Newton).
// Plain C++ on doubles (exp, log, log1p, sqrt, sinh, cosh, asinh, fabs, ceil): the same text
// compiles on the host for scripts/gauss_beta_check.py, which holds it to the CPU reference.
//
// Lane split: the node sums of a level are spread over R::L lanes (lane j sums every L-th node
// from its offset) and `red.sum` combines the lanes' partials into the same value on every
// lane in a fixed order, so the ladder's control flow is uniform. GbSerial (L = 1) serves one
// thread per moment (the mixture: a thread per page); gauss.cu's warp reducer (L = 32) serves
// the single-Gaussian τ̂, where one head's Newton would otherwise run on one thread.

#ifndef GB_TRACE
#define GB_TRACE(kind, level)  // host check: which rule and ladder level accepted
#endif

#define GB_LN_SQRT_2PI 0.91893853320467274178
#define GB_PI 3.14159265358979323846
#define GB_PI_2 1.57079632679489661923
// tau/quad.rs: LOG_CUT, R_CUT, D_TRAPEZOID, FAST_TOL.
#define GB_LOG_CUT 50.0
#define GB_R_CUT 10.0
#define GB_D_TRAPEZOID 12.0
#define GB_FAST_TOL 1e-11
// First halving at which a level may be accepted (1: as the CPU). scripts/gauss_beta_check.py
// raises them in a host build to force the levels the CPU's ladder lacks.
#ifndef GB_TRAP_FIRST_ACCEPT
#define GB_TRAP_FIRST_ACCEPT 1
#endif
#ifndef GB_TS_FIRST_ACCEPT
#define GB_TS_FIRST_ACCEPT 1
#endif
// Trapezoid levels: steps 0.8, 0.4, 0.2 widths (the CPU's three), then 0.1, 0.05.
#define GB_TRAP_LEVELS 5
// Tanh-sinh: node index i ↔ τ = (i − GB_TS_K_LEFT)/GB_TS_INV_H over [−GB_TS_T_LEFT, 3.5];
// coarsest level every 32nd node (h = 1/8, the CPU's), six levels to h = 1/256 (CPU: four,
// to 1/64). On the right the weights are below 2e-21 beyond 3.5 (the integrand there is
// already below e^{−LOG_CUT}); on the left the cut needs π·sinh τ ≳ (LOG_CUT + 15)/β.
#define GB_TS_INV_H 256
#define GB_TS_T_LEFT 24
#define GB_TS_K_LEFT (GB_TS_T_LEFT * GB_TS_INV_H)
#define GB_TS_K_RIGHT (7 * GB_TS_INV_H / 2)
#define GB_TS_J_MAX 5

struct GbSerial {
    static constexpr int L = 1;
    __device__ __forceinline__ int lane() const { return 0; }
    __device__ __forceinline__ double sum(double x) const { return x; }
};

// ln(1 + z) − z (z > −1) without cancellation near 0 (quad.rs ln1p_minus_x): there
// ln(1+z) = 2·atanh(w), w = z/(2+z), giving −z·w + 2w·Σ_k w^{2k}/(2k+1).
__device__ __forceinline__ double gb_ln1p_minus_x(double z) {
    if (fabs(z) < 0.2) {
        const double w = z / (2.0 + z), w2 = w * w;
        double series = 1.0 / 19.0;
        for (int k = 8; k >= 1; --k) series = 1.0 / (double)(2 * k + 1) + w2 * series;
        return -z * w + 2.0 * w * w2 * series;
    }
    return log1p(z) - z;
}

// log-integrand about the peak: g(x* + δ) = β·(ln(1 + δ/x*) − δ/x*) − κδ²/2 (g(x*) = 0).
__device__ __forceinline__ double gb_lg(double beta, double x_star, double kappa, double d) {
    return beta * gb_ln1p_minus_x(d / x_star) - 0.5 * kappa * d * d;
}

// Uniform trapezoid in δ over [−R_CUT·width, d_hi] (quad.rs trapezoid) of
// x^{−1}e^{g}·(x, 1): i0 = ∫e^g dx, i1 = ∫x^{−1}e^g dx. All terms are positive, so the
// CPU's Σ|f| scale equals the sum itself.
template <class R>
__device__ bool gb_trapezoid(double x_star, double beta, double kappa, double width, double d_hi, double& i0,
                             double& i1, const R& red) {
    const double d_lo = -GB_R_CUT * width;
    double r0 = 0.0, r1 = 0.0, p0 = 0.0, p1 = 0.0;
    for (int level = 0; level < GB_TRAP_LEVELS; ++level) {
        const double step = 0.8 * width / (double)(1 << level);
        const long long k_lo = (long long)ceil(d_lo / step);
        const long long k_hi = (long long)floor(d_hi / step);
        const bool odd_only = level > 0;
        // k_lo | 1: the first odd k ≥ k_lo (two's complement, as the CPU's i64)
        const long long k0 = odd_only ? (k_lo | 1) : k_lo, inc = odd_only ? 2 : 1;
        double l0 = 0.0, l1 = 0.0;  // this lane's nodes of the level
        for (long long k = k0 + inc * red.lane(); k <= k_hi; k += inc * R::L) {
            const double d = (double)k * step;
            const double x = x_star + d;
            const double e = exp(gb_lg(beta, x_star, kappa, d)) / x;
            l0 += x * e;
            l1 += e;
        }
        r0 += red.sum(l0);
        r1 += red.sum(l1);
        const double e0 = r0 * step, e1 = r1 * step;
        if (level >= GB_TRAP_FIRST_ACCEPT && fabs(e0 - p0) <= GB_FAST_TOL * e0 && fabs(e1 - p1) <= GB_FAST_TOL * e1) {
            GB_TRACE(0, level);
            i0 = e0;
            i1 = e1;
            return true;
        }
        p0 = e0;
        p1 = e1;
    }
    return false;
}

// Tanh-sinh in x over [0, b] (quad.rs tanh_sinh_from_zero), every term in log space:
// x^{−1}e^{g}dx = e^{β ln(b/x*) + β ln y − βδ/x* − κδ²/2 + ln(w/y)}dτ with x = b·y, so nodes
// whose x underflows still carry the x^β mass of a small β exactly.
template <class R>
__device__ bool gb_tanh_sinh(double x_star, double b, double beta, double kappa, double& i0, double& i1,
                             const R& red) {
    const double ln_bx = log(b / x_star);
    const double need = ((GB_LOG_CUT + 15.0) / beta + ln_bx) / GB_PI;  // −ln y ≥ π sinh|τ| on the left
    const double t_left = asinh(need);
    if (!(t_left <= (double)GB_TS_T_LEFT)) return false;  // also NaN
    const int coarse = 1 << GB_TS_J_MAX;
    int k_left = (int)ceil(t_left * GB_TS_INV_H);
    if (k_left > GB_TS_K_LEFT) k_left = GB_TS_K_LEFT;
    const int i0_node = (GB_TS_K_LEFT - k_left) / coarse * coarse;  // on the coarsest grid
    const double base = beta * ln_bx, slope = beta / x_star;
    const int n = GB_TS_K_LEFT + GB_TS_K_RIGHT;
    double r0 = 0.0, r1 = 0.0, p0 = 0.0, p1 = 0.0;
    for (int j = GB_TS_J_MAX; j >= 0; --j) {
        const int stride = 1 << j;
        const bool first = j == GB_TS_J_MAX;
        const int inc = first ? stride : 2 * stride;
        double l0 = 0.0, l1 = 0.0;  // this lane's nodes of the level
        for (int i = (first ? i0_node : i0_node + stride) + inc * red.lane(); i <= n; i += inc * R::L) {
            const double tau = (double)(i - GB_TS_K_LEFT) / (double)GB_TS_INV_H;
            // node y ∈ (0, 1): distance from the nearer end e/(1+e), e = e^{−π sinh|τ|};
            // dy/dτ = π cosh τ · e/(1+e)²
            const double u = GB_PI_2 * sinh(fabs(tau));
            const double ee = exp(-2.0 * u);
            const double l1pe = log1p(ee);
            const double ln_pc = log(GB_PI * cosh(tau));
            double ln_y, ln_wy;
            if (tau < 0.0) {
                ln_y = -2.0 * u - l1pe;
                ln_wy = ln_pc - l1pe;
            } else {
                ln_y = -l1pe;
                ln_wy = ln_pc - 2.0 * u - l1pe;
            }
            const double x = b * exp(ln_y);
            const double d = x - x_star;
            const double g_rest = -d * (slope + 0.5 * kappa * d);
            const double e = exp(base + beta * ln_y + ln_wy + g_rest);
            if (e == 0.0) continue;  // underflow (a NaN propagates and fails the level check)
            l0 += x * e;
            l1 += e;
        }
        r0 += red.sum(l0);
        r1 += red.sum(l1);
        const double h = (double)stride / (double)GB_TS_INV_H;
        const double e0 = r0 * h, e1 = r1 * h;
        if (GB_TS_J_MAX - j >= GB_TS_FIRST_ACCEPT && fabs(e0 - p0) <= GB_FAST_TOL * e0 && fabs(e1 - p1) <= GB_FAST_TOL * e1) {
            GB_TRACE(1, GB_TS_J_MAX - j);
            i0 = e0;
            i1 = e1;
            return true;
        }
        p0 = e0;
        p1 = e1;
    }
    return false;
}

// ∫_0^∞ x^{−1}e^{g(x)}·(x, 1) dx for g(x* + δ) = β(ln(1 + δ/x*) − δ/x*) − κδ²/2 (quad.rs
// peak_integral): the right end is the first δ (doubling from R_CUT widths, then four
// bisections) with g ≤ −LOG_CUT; trapezoid when the peak sits ≥ D_TRAPEZOID widths above 0,
// else tanh-sinh from 0.
template <class R>
__device__ bool gb_peak_integral(double x_star, double beta, double kappa, double& i0, double& i1, const R& red) {
    if (!(x_star > 0.0 && isfinite(x_star) && beta > 0.0 && isfinite(beta) && kappa >= 0.0 && isfinite(kappa)))
        return false;
    const double width = 1.0 / sqrt(beta / (x_star * x_star) + kappa);
    if (!(width > 0.0 && isfinite(width))) return false;
    double d_in = 0.0, d_hi = GB_R_CUT * width;
    for (int tries = 0;; ++tries) {
        const double g = gb_lg(beta, x_star, kappa, d_hi);
        if (isnan(g)) return false;
        if (g <= -GB_LOG_CUT) break;
        if (tries + 1 > 60 || !isfinite(d_hi)) return false;
        d_in = d_hi;
        d_hi *= 2.0;
    }
    for (int it = 0; it < 4; ++it) {
        const double mid = 0.5 * (d_in + d_hi);
        if (gb_lg(beta, x_star, kappa, mid) <= -GB_LOG_CUT) d_hi = mid;
        else d_in = mid;
    }
    if (x_star >= GB_D_TRAPEZOID * width) return gb_trapezoid(x_star, beta, kappa, width, d_hi, i0, i1, red);
    return gb_tanh_sinh(x_star, x_star + d_hi, beta, kappa, i0, i1, red);
}

// ln M_β(t) and M_{β−1}(t)/M_β(t) for β > 0 (gaussian.rs std_moment_quad_fast); false where
// the ladder does not reach GB_FAST_TOL (the caller then treats the statistics as unusable).
// Every lane of `red` gets the same result.
template <class R>
__device__ bool gb_moment_pair(double beta, double t, double& ln_m, double& ratio, const R& red) {
    double i0, i1;
    if (t >= -1.0) {
        // peak of β ln u − (u−t)²/2 at u*, d0 = u* − t without cancellation
        const double q = sqrt(t * t + 4.0 * beta);
        double u_star, d0;
        if (t >= 0.0) {
            d0 = 2.0 * beta / (q + t);
            u_star = t + d0;
        } else {
            u_star = 2.0 * beta / (q - t);
            d0 = u_star - t;
        }
        const double l = beta * log(u_star) - 0.5 * d0 * d0;
        if (!gb_peak_integral(u_star, beta, 1.0, i0, i1, red)) return false;
        ln_m = l + log(i0) - GB_LN_SQRT_2PI;
        ratio = i1 / i0;
    } else {
        // lower tail: M_β(t) = φ(t)·s^{−β−1}∫v^β e^{−v − v²/(2s²)}dv, v = s·u, s = −t
        const double s = -t, s2 = s * s;
        const double v_star = 2.0 * beta / (1.0 + sqrt(1.0 + 4.0 * beta / s2));
        const double l = beta * log(v_star) - v_star - 0.5 * v_star * v_star / s2;
        if (!gb_peak_integral(v_star, beta, 1.0 / s2, i0, i1, red)) return false;
        ln_m = -0.5 * t * t - GB_LN_SQRT_2PI - (beta + 1.0) * log(s) + l + log(i0);
        ratio = s * i1 / i0;
    }
    return isfinite(ln_m) && ratio > 0.0 && isfinite(ratio);
}

// τ̂ (kernel space) of n scores from N(mu, sigma²): the root of g(t) = ln M_β(t) − c,
// c = −ln n − β ln σ_Y, t = (aμ − τ)/σ_Y, by Newton. M_β is log-concave in t (a convolution of
// the log-concave u_+^β and φ), so g is concave increasing and Newton started left of the
// root increases monotonically to it. Start: t = 0 when g(0) ≤ 0, else the tail bound
// ln M_β(t) ≤ ln φ(0) + ln Γ(β+1) − t²/2 (t ≤ −1; J_β(s) ≤ Γ(β+1)/s^{β+1}) solved for t.
// `pair(t, ln_m, ratio)` returns false where the moment is unusable: τ̂ is then NaN.
template <class Pair>
__device__ double gauss_tau_newton(double mu, double sigma, double n, double a, double beta, double ln_gamma_b1,
                                   Pair pair) {
    const double nan_v = nan("");
    const double sy = fmax(a * fmax(sigma, 1e-6), 1e-10);
    const double c = -log(n) - beta * log(sy);
    const double TLO = -38.0;
    double t = 0.0, lm, ratio;
    if (!pair(t, lm, ratio)) return nan_v;
    if (lm - c > 0.0) {
        t = fmax(-sqrt(fmax(-2.0 * (c - ln_gamma_b1 + GB_LN_SQRT_2PI), 1.0)), TLO);
        if (!pair(t, lm, ratio)) return nan_v;
    }
    for (int it = 0; it < 200; ++it) {
        const double g = lm - c;
        const double dg = beta * ratio;  // d/dt ln M_β = β·M_{β−1}/M_β
        double tn = t - g / dg;
        if (!(tn >= TLO)) tn = TLO;  // also catches NaN
        const double step = fabs(tn - t);
        t = tn;
        if (step <= 1e-14 * fmax(1.0, fabs(t))) break;
        if (!pair(t, lm, ratio)) return nan_v;
    }
    return a * mu - sy * t;
}
