//! Standard normal special functions with full relative accuracy in the tails.
//!
//! The τ̂ equations live in the tails of Gaussians (a page far below τ contributes
//! `Φ(−8)`-sized mass, the selection quantile is `Φ⁻¹(1 − 6e-4)`), so `1 − Φ` computed
//! by subtraction would be useless. Everything here goes through the scaled
//! complementary error function `erfcx(x) = e^{x²} erfc(x)` (W. J. Cody's rational
//! approximations, 1969), which keeps ~1e-16 relative accuracy out to the underflow limit,
//! and through log-space forms where even that underflows.

// The rational-approximation coefficients are kept digit for digit as published.
#![allow(clippy::excessive_precision)]

use crate::error::{Error, Result};

/// 1/√(2π).
pub(crate) const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// ln √(2π).
pub(crate) const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;
/// √(π/2).
const SQRT_FRAC_PI_2: f64 = 1.253_314_137_315_500_3;
/// 1/√π.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;

// Cody's coefficients: erf on |x| <= 0.46875.
const A: [f64; 5] = [
    3.161_123_743_870_565_6,
    1.138_641_541_510_501_6e2,
    3.774_852_376_853_020_2e2,
    3.209_377_589_138_469_5e3,
    1.857_777_061_846_031_5e-1,
];
const B: [f64; 4] = [
    2.360_129_095_234_412e1,
    2.440_246_379_344_441_7e2,
    1.282_616_526_077_372_3e3,
    2.844_236_833_439_170_6e3,
];
// erfcx on 0.46875 < x <= 4.
const C: [f64; 9] = [
    5.641_884_969_886_701e-1,
    8.883_149_794_388_376,
    6.611_919_063_714_163e1,
    2.986_351_381_974_001_3e2,
    8.819_522_212_417_691e2,
    1.712_047_612_634_070_6e3,
    2.051_078_377_826_071_5e3,
    1.230_339_354_797_997_2e3,
    2.153_115_354_744_038_5e-8,
];
const D: [f64; 8] = [
    1.574_492_611_070_983_5e1,
    1.176_939_508_913_125e2,
    5.371_811_018_620_098_6e2,
    1.621_389_574_566_690_2e3,
    3.290_799_235_733_459_6e3,
    4.362_619_090_143_247e3,
    3.439_367_674_143_721_6e3,
    1.230_339_354_803_749_4e3,
];
// erfcx on x > 4 (in 1/x²).
const P: [f64; 6] = [
    3.053_266_349_612_323_4e-1,
    3.603_448_999_498_044_4e-1,
    1.257_817_261_112_292_5e-1,
    1.608_378_514_874_227_7e-2,
    6.587_491_615_298_378e-4,
    1.631_538_713_730_209_8e-2,
];
const Q: [f64; 5] = [
    2.568_520_192_289_822_4,
    1.872_952_849_923_460_5,
    5.279_051_029_514_284e-1,
    6.051_834_131_244_132e-2,
    2.335_204_976_268_691_8e-3,
];

/// erf(x) for |x| <= 0.46875.
fn erf_small(x: f64) -> f64 {
    let z = x * x;
    let mut num = A[4] * z;
    let mut den = z;
    for i in 0..3 {
        num = (num + A[i]) * z;
        den = (den + B[i]) * z;
    }
    x * (num + A[3]) / (den + B[3])
}

/// erfcx(y) = e^{y²}·erfc(y) for y >= 0.46875.
fn erfcx_pos_large(y: f64) -> f64 {
    if y <= 4.0 {
        let mut num = C[8] * y;
        let mut den = y;
        for i in 0..7 {
            num = (num + C[i]) * y;
            den = (den + D[i]) * y;
        }
        (num + C[7]) / (den + D[7])
    } else if y >= 6.71e7 {
        FRAC_1_SQRT_PI / y
    } else {
        let z = 1.0 / (y * y);
        let mut num = P[5] * z;
        let mut den = z;
        for i in 0..4 {
            num = (num + P[i]) * z;
            den = (den + Q[i]) * z;
        }
        let r = z * (num + P[4]) / (den + Q[4]);
        (FRAC_1_SQRT_PI - r) / y
    }
}

/// `exp(-x²)` without the rounding error of forming `x²` (Cody's split).
fn exp_neg_sq(x: f64) -> f64 {
    let x = x.abs();
    let hi = (x * 16.0).trunc() / 16.0;
    let del = (x - hi) * (x + hi);
    (-hi * hi).exp() * (-del).exp()
}

/// Scaled complementary error function `e^{x²}·erfc(x)`; `+∞` once it overflows (x < −26.6).
pub fn erfcx(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let y = x.abs();
    let r = if y <= 0.468_75 {
        (y * y).exp() * (1.0 - erf_small(y))
    } else {
        erfcx_pos_large(y)
    };
    if x >= 0.0 {
        r
    } else {
        // e^{x²} erfc(−y) = 2e^{y²} − erfcx(y)
        let e = 1.0 / exp_neg_sq(y);
        2.0 * e - r
    }
}

/// Complementary error function with full relative accuracy for large positive x.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let y = x.abs();
    let r = if y <= 0.468_75 {
        1.0 - erf_small(y)
    } else if y > 27.3 {
        0.0
    } else {
        erfcx_pos_large(y) * exp_neg_sq(y)
    };
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// Standard normal density φ(x), accurate in the far tails.
pub fn normal_pdf(x: f64) -> f64 {
    // φ(x) = exp(−x²/2)/√(2π) = exp(−(x/√2)²)/√(2π); split x itself to keep x² exact-ish.
    let x = x.abs();
    let hi = (x * 16.0).trunc() / 16.0;
    let del = (x - hi) * (x + hi);
    FRAC_1_SQRT_2PI * (-0.5 * hi * hi).exp() * (-0.5 * del).exp()
}

/// Mills ratio R(s) = Φ(−s)/φ(s) = ∫₀^∞ e^{−su−u²/2} du, for any finite s.
pub fn mills_ratio(s: f64) -> f64 {
    SQRT_FRAC_PI_2 * erfcx(s * std::f64::consts::FRAC_1_SQRT_2)
}

/// Upper tail Φ(−s) = 1 − Φ(s) for s ≥ 0, with full relative accuracy.
fn upper_tail(s: f64) -> f64 {
    if s < 0.66 {
        0.5 * erfc(s * std::f64::consts::FRAC_1_SQRT_2)
    } else {
        normal_pdf(s) * mills_ratio(s)
    }
}

/// Standard normal CDF Φ(x), relatively accurate for x ≪ 0 (down to underflow).
pub fn normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x <= 0.0 {
        upper_tail(-x)
    } else {
        1.0 - upper_tail(x)
    }
}

/// ln Φ(x), finite for every finite x (no underflow in the lower tail).
pub fn ln_normal_cdf(x: f64) -> f64 {
    if x.is_nan() {
        f64::NAN
    } else if x < -5.0 {
        -0.5 * x * x - LN_SQRT_2PI + mills_ratio(-x).ln()
    } else if x <= 0.0 {
        upper_tail(-x).ln()
    } else {
        (-upper_tail(x)).ln_1p()
    }
}

// Acklam's rational approximation of Φ⁻¹ (relative error < 1.15e-9), refined below.
const AK_A: [f64; 6] = [
    -3.969_683_028_665_376e1,
    2.209_460_984_245_205e2,
    -2.759_285_104_469_687e2,
    1.383_577_518_672_69e2,
    -3.066_479_806_614_716e1,
    2.506_628_277_459_239,
];
const AK_B: [f64; 5] = [
    -5.447_609_879_822_406e1,
    1.615_858_368_580_409e2,
    -1.556_989_798_598_866e2,
    6.680_131_188_771_972e1,
    -1.328_068_155_288_572e1,
];
const AK_C: [f64; 6] = [
    -7.784_894_002_430_293e-3,
    -3.223_964_580_411_365e-1,
    -2.400_758_277_161_838,
    -2.549_732_539_343_734,
    4.374_664_141_464_968,
    2.938_163_982_698_783,
];
const AK_D: [f64; 4] = [
    7.784_695_709_041_462e-3,
    3.224_671_290_700_398e-1,
    2.445_134_137_142_996,
    3.754_408_661_907_416,
];

/// Acklam's initial Φ⁻¹(p) for p ∈ (0, 0.5].
fn acklam_lower(p: f64) -> f64 {
    if p < 0.024_25 {
        let q = (-2.0 * p.ln()).sqrt();
        (((((AK_C[0] * q + AK_C[1]) * q + AK_C[2]) * q + AK_C[3]) * q + AK_C[4]) * q + AK_C[5])
            / ((((AK_D[0] * q + AK_D[1]) * q + AK_D[2]) * q + AK_D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((AK_A[0] * r + AK_A[1]) * r + AK_A[2]) * r + AK_A[3]) * r + AK_A[4]) * r + AK_A[5]) * q
            / (((((AK_B[0] * r + AK_B[1]) * r + AK_B[2]) * r + AK_B[3]) * r + AK_B[4]) * r + 1.0)
    }
}

/// Φ⁻¹(p) for p ∈ (0, 0.5]: Acklam plus Halley refinement against the tail-accurate Φ.
fn quantile_lower(p: f64) -> f64 {
    let mut x = acklam_lower(p);
    for _ in 0..2 {
        // Relative residual of the lower tail, e = (Φ(x) − p)/φ(x).
        let e = (normal_cdf(x) - p) / normal_pdf(x);
        if !e.is_finite() {
            break;
        }
        x -= e / (1.0 + 0.5 * x * e);
    }
    x
}

/// Φ⁻¹ given both tail masses `lower = p` and `upper = 1 − p` (each computed without
/// cancellation by the caller); uses the smaller one so the answer keeps full precision.
pub(crate) fn quantile_from_tails(lower: f64, upper: f64) -> f64 {
    if lower <= upper {
        quantile_lower(lower)
    } else {
        -quantile_lower(upper)
    }
}

/// Standard normal quantile Φ⁻¹(p) for p ∈ (0, 1).
pub fn normal_quantile(p: f64) -> Result<f64> {
    if !(p > 0.0 && p < 1.0) {
        return Err(Error::invalid(
            "tau::normal_quantile",
            "p",
            p,
            "probability must lie strictly inside (0, 1)",
        ));
    }
    Ok(quantile_from_tails(p, 1.0 - p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // Reference values (Abramowitz & Stegun / mpmath).
        let cases = [
            (0.0, 0.5),
            (-1.0, 0.158_655_253_931_457_05),
            (-3.0, 1.349_898_031_630_094_6e-3),
            (-10.0, 7.619_853_024_160_527e-24),
            (-37.5, 4.605_353_009_581_955e-308),
            (2.0, 0.977_249_868_051_820_8),
        ];
        for (x, want) in cases {
            let got = normal_cdf(x);
            assert!(
                ((got - want) / want).abs() < 1e-13,
                "Phi({x}) = {got:e}, want {want:e}"
            );
        }
        let l = ln_normal_cdf(-40.0);
        // ln Φ(−40) = −804.6084420137538
        assert!((l + 804.608_442_013_753_8).abs() < 1e-10, "{l}");
        assert!((erfc(5.0) - 1.537_459_794_428_034_8e-12).abs() < 1e-26);
        assert!((erfcx(-1.0) - 5.008_980_080_762_283).abs() < 1e-14);
    }

    #[test]
    fn quantile_roundtrip() {
        for &p in &[1e-300, 1e-20, 1e-5, 0.02, 0.3, 0.5, 0.7, 0.99, 1.0 - 1e-12] {
            let x = normal_quantile(p).unwrap();
            let back = normal_cdf(x);
            let rel = if p < 0.5 {
                (back - p) / p
            } else {
                ((1.0 - back) - (1.0 - p)) / (1.0 - p)
            };
            assert!(rel.abs() < 1e-12, "p={p:e} x={x} rel={rel:e}");
        }
        assert!(normal_quantile(0.0).is_err());
        assert!(normal_quantile(f64::NAN).is_err());
        assert!((normal_quantile(0.975).unwrap() - 1.959_963_984_540_054).abs() < 1e-14);
    }
}
