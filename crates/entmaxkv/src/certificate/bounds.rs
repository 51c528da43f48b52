//! Score bounds of one page and of its sketched tokens, for one query head: the kernel of
//! the `certified` strategy, the token-level certificate and the robust Gaussian criterion.
//!
//! # How the bounds are computed, and why they stay rigorous
//!
//! Notation: `w` the (f32) scaled query of a head, `lo`/`hi` the page's stored min/max rows,
//! `L = 2^b − 1`, `s_c = fl64((hi_c − lo_c)/L)` the encoder's step ([`sketch::step`]),
//! `code_c` a token's b-bit code, `u = 2⁻²⁴`, `n = D + 2`, `γ = n·u/(1 − n·u)`. Every stored
//! key satisfies `k_c = lo_c + code_c·s_c + ρ_c` with `|ρ_c| ≤ (s_c/2)(1 + 2⁻⁴⁶)` (the
//! encoder rounds `(k − lo)/s` in f64), so exactly
//! `w·k = Σ w_c·lo_c + Σ w_c·s_c·code_c + Σ w_c·ρ_c`.
//!
//! Per (page, head), [`page_bound`] works in f32, eight lanes (any summation order):
//!
//! * `ŝ_c = fl(fl(hi_c − lo_c)·fl(1/L)) = s_c(1 + θ_c)`, `|θ_c| ≤ 3.01u`;
//!   `ŵs_c = fl(w_c·ŝ_c) = w_c·s_c(1 + θ'_c)`, `|θ'_c| ≤ 4.02u`, so
//!   `|w_c·s_c − ŵs_c| ≤ 4.03u·|ŵs_c|`.
//! * Sums of `D` terms (products rounded or fused) carry at most `γ·Σ|terms|`: the centre
//!   offset `B̂ ≈ Σ w_c·lo_c`, the magnitude `M̂ ≈ M = Σ|w_c|·max(|lo_c|, |hi_c|)` (so
//!   `M ≤ M̂/(1 − γ) ≤ M̂(1 + 3γ) =: M⁺`, and `Σ|w_c·lo_c| ≤ M`), and `P̂ ≈ Σ max(ŵs_c, 0)`,
//!   `N̂ ≈ Σ min(ŵs_c, 0)`; `Ŝ = P̂ − N̂` bounds `Σ|ŵs_c| ≤ Ŝ(1 + 2γ) =: S⁺`.
//! * The key-range box: `Σ min(w_c·lo_c, w_c·hi_c) = Σ w_c·lo_c + Σ min(0, w_c·Δ_c)` with
//!   `Δ_c = hi_c − lo_c = L·ŵs_c/(w_c·ŝ_c-rounding)`: `w_c·Δ_c = L·ŵs_c/(1 + θ''_c)`,
//!   `|θ''_c| ≤ 4.02u` (ŝ taken against the real `Δ_c/L`; without a sketch L = 1 and
//!   `ŝ_c = fl(Δ_c)`), so the box is `[B̂ + L·N̂, B̂ + L·P̂]` widened by
//!   `γ·M⁺ + L·(γ + 4.03u)·S⁺`.
//! * Quantisation: `scale` is a power of two with `max|ŵs_c| ≤ q_max·scale`,
//!   `q_c = round(ŵs_c/scale)` (an i16; `q_max` keeps `Σ|q_c|·L` below 2³¹) and
//!   `e_c = ŵs_c − scale·q_c` is exact in f32 (a power-of-two scaling and a Sterbenz
//!   subtraction); `Ê ≈ Σ|e_c|`, `Σ|e_c| ≤ Ê(1 + 2γ)`.
//!
//! Per token, `S = Σ q_c·code_c` is an exact i32 (any order, SIMD or not: the AVX2 kernel,
//! the AVX-512 ones — VPDPWSSD on widened codes; at D = 64 VPDPBUSD on the weights' high and
//! low bytes, `q = 256·(q >> 8) + (q & 255)` — and the portable one agree bit for bit), and `ĉ = B̂ + scale·S` in f64. Then
//! `Σ w_c·s_c·code_c = scale·S + Σ e_c·code_c + Σ (w_c·s_c − ŵs_c)·code_c`, so
//!
//! `|w·k − ĉ| ≤ S⁺(1 + 5u)/2 + L·Ê(1 + 2γ) + 4.03u·L·S⁺ + γ·M⁺ =: H₀`
//!
//! (the radius, the quantisation, the rounding of `ŵs`, the rounding of `B̂`). The f64
//! operations that form `ĉ ± H` and the intersection with the box add at most
//! `2⁻⁵⁰·(|ĉ| + H)` with `|ĉ| ≤ 4M⁺ + H₀`: covered by `2⁻⁴⁰·(H₀ + M⁺)`; f32 underflow (at most
//! `~10·D` operations of absolute error `2⁻¹⁵⁰` each) by `2⁻¹²⁰`. Finally every end is widened by
//! [`BOUND_ERR`]`·M⁺` for the oracle's f64 scores (see the module docs of
//! [`crate::certificate`]). The result is an interval that contains both `w·k` and the
//! oracle's score of every stored key of the page; at D = 64 the f32 terms add ~1e-5·M,
//! a few 1e-3 of the sketch radius (the quantisation term dominates).
//!
//! Non-finite statistics, or f32 overflow of any of the sums, give the interval (−∞, +∞):
//! rigorous, and the caller then reads that token.
//!
//! Where the CPU has AVX-512 (detected at run time, [`has_avx512`]), the rows, the sketch
//! dots, the token ends and the lower-end filters run in AVX-512 kernels that perform, per
//! value, the same IEEE operations in the same order as the AVX2/portable path (the page
//! sums and quantisation keep the AVX2 kernels' 8-lane order; the f64 token ends are
//! rounded lane by lane without fused multiply-adds; the integer dots are exact in any
//! order; maxima are order-independent since no end is NaN or −0). So the intervals are the
//! same bits on either path and the derivation above applies unchanged (tested:
//! `avx512_kernels_equal_the_fallback_bitwise`, `batched_page_bounds_equal_page_bound`).
//!
//! Without ALiBi the passes form a page's ends lazily ([`dots_max`], [`dots_ups`], the
//! `push_*_dots` filters): each end above is a composition of operations non-decreasing in
//! the sketch dot `S` (`scale ≥ 0`; `±H`, the clamp to the box, the directed f32 roundings;
//! the ALiBi term is ±0 and adds nothing), so the largest end of a page is the end of its
//! largest dot, and the per-token ends, formed only where a filter can pass, are the same
//! operations on the same values: no bound changes (tested: `lazy_ends_equal_token_ends`).

use super::BOUND_ERR;
use crate::stats::{sketch, Stat, StatsStorage};

/// How many pages ahead the bound passes prefetch a page's min/max rows and sketch block
/// (they lie 1–4 KiB apart per kv head, which the hardware prefetchers do not follow).
pub(crate) const PREFETCH_PAGES: usize = 8;

/// f32 unit roundoff.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The min/max rows of one page, shared by every query head of a task, and what every
/// head's bounds derive from them: the f32 step `fl(fl(hi − lo)·fl(1/L))` and
/// `max(|lo|, |hi|)` per channel.
#[derive(Debug, Clone, Default)]
pub(crate) struct PageRows {
    pub lo: Vec<f32>,
    pub hi: Vec<f32>,
    step: Vec<f32>,
    amax: Vec<f32>,
    finite: bool,
    /// Sketch width the step is for (0: no sketch, the step is then `hi − lo`).
    bits: u32,
    /// Constants of (D, bits), recomputed only when those change: `q_max`, `1/q_max`,
    /// `γ` and `L` (see the module docs).
    consts_for: (usize, u32),
    qmax: f32,
    inv_qmax: f32,
    gam: f64,
    lv: f64,
}

impl PageRows {
    #[cfg(test)]
    pub fn new(d: usize) -> Self {
        let mut r = PageRows::default();
        r.reserve(d);
        r
    }

    /// Grows (never shrinks) to head dim `d`.
    pub fn reserve(&mut self, d: usize) {
        for v in [&mut self.lo, &mut self.hi, &mut self.step, &mut self.amax] {
            if v.len() < d {
                v.resize(d, 0.0);
            }
        }
    }

    /// Reads the min/max rows at statistics offset `base` and derives the rest.
    #[inline]
    pub fn load(&mut self, stats: &StatsStorage, base: usize, d: usize, bits: u32) {
        #[cfg(all(
            target_arch = "x86_64",
            target_feature = "avx2",
            target_feature = "f16c"
        ))]
        if let (StatsStorage::F16(a), true) = (stats, d.is_multiple_of(8)) {
            // f16 → f32 is exact: the same values as `read_row`, widened in registers.
            use std::arch::x86_64::*;
            let (mn, mx) = (
                &a[Stat::Min as usize][base..base + d],
                &a[Stat::Max as usize][base..base + d],
            );
            let (lo, hi) = (&mut self.lo[..d], &mut self.hi[..d]);
            for c in (0..d).step_by(8) {
                // SAFETY: c + 8 ≤ d, inside all four slices; F16C is enabled (this cfg).
                unsafe {
                    let l = _mm256_cvtph_ps(_mm_loadu_si128(mn.as_ptr().add(c).cast()));
                    let h = _mm256_cvtph_ps(_mm_loadu_si128(mx.as_ptr().add(c).cast()));
                    _mm256_storeu_ps(lo.as_mut_ptr().add(c), l);
                    _mm256_storeu_ps(hi.as_mut_ptr().add(c), h);
                }
            }
            self.derive(d, bits);
            return;
        }
        stats.read_row(Stat::Min, base, &mut self.lo[..d]);
        stats.read_row(Stat::Max, base, &mut self.hi[..d]);
        self.derive(d, bits);
    }

    /// Sets the rows from f32 slices (tests).
    #[cfg(test)]
    pub fn set(&mut self, lo: &[f32], hi: &[f32], bits: u32) {
        let d = lo.len();
        self.reserve(d);
        self.lo[..d].copy_from_slice(lo);
        self.hi[..d].copy_from_slice(&hi[..d]);
        self.derive(d, bits);
    }

    /// [`PageRows::load`] where the CPU has AVX-512 ([`has_avx512`]): the same values bit
    /// for bit (every derived quantity is elementwise), 16 channels per instruction.
    #[inline]
    pub fn load_fast(
        &mut self,
        fast: bool,
        stats: &StatsStorage,
        base: usize,
        d: usize,
        bits: u32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if fast && d.is_multiple_of(16) {
            let end = base + d;
            let ok = crate::with_stats!(stats, |a| a[Stat::Min as usize].len() >= end
                && a[Stat::Max as usize].len() >= end);
            if ok && self.lo.len() >= d && self.step.len() >= d {
                // SAFETY: `fast` is only set where `has_avx512()` holds; the rows
                // `base..base + d` and the D-long buffers are checked just above.
                unsafe { avx512::load_rows(self, stats, base, d, bits) };
                self.set_consts(d, bits);
                return;
            }
        }
        self.load(stats, base, d, bits);
    }

    #[inline]
    fn set_consts(&mut self, d: usize, bits: u32) {
        self.bits = bits;
        if self.consts_for != (d, bits) {
            self.consts_for = (d, bits);
            self.qmax = q_max(d, bits);
            self.inv_qmax = 1.0 / self.qmax;
            let n = (d + 2) as f64;
            self.gam = n * U / (1.0 - n * U);
            self.lv = sketch::levels(bits).max(1) as f64;
        }
    }

    #[inline]
    fn derive(&mut self, d: usize, bits: u32) {
        // L = 1 without a sketch: the step is then the key range itself (for the box).
        let inv = 1.0 / sketch::levels(bits).max(1) as f32;
        let (lo, hi) = (&self.lo[..d], &self.hi[..d]);
        let (step, amax) = (&mut self.step[..d], &mut self.amax[..d]);
        let mut bad = 0u32;
        for c in 0..d {
            let (l, h) = (lo[c], hi[c]);
            // Finite iff |x| ≤ MAX (NaN fails the compare).
            bad |= !(l.abs() <= f32::MAX && h.abs() <= f32::MAX) as u32;
            let r = h - l;
            step[c] = if r > 0.0 { r } else { 0.0 } * inv;
            amax[c] = if l.abs() > h.abs() { l.abs() } else { h.abs() };
        }
        self.finite = bad == 0;
        self.set_consts(d, bits);
    }
}

/// Score bounds of the tokens of one page for one query head (score units, scale applied,
/// no ALiBi), everything widened as the module docs derive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PageBound {
    /// Rigorous lower / upper bound of every key's score on the page (the key-range box).
    pub box_lo: f64,
    pub box_hi: f64,
    /// An upper bound of `Σ_d |w_d|·max(|kmin_d|, |kmax_d|)` (+∞ if not finite).
    pub mag: f64,
    /// Token interval `[ĉ − half, ĉ + half] ∩ box` with `ĉ = base + scale·S`.
    base: f64,
    half: f64,
    scale: f64,
}

impl Default for PageBound {
    fn default() -> Self {
        PageBound::UNBOUNDED
    }
}

impl PageBound {
    /// Bounds nothing: every token's interval is (−∞, +∞).
    pub const UNBOUNDED: PageBound = PageBound {
        box_lo: f64::NEG_INFINITY,
        box_hi: f64::INFINITY,
        mag: f64::INFINITY,
        base: 0.0,
        half: f64::INFINITY,
        scale: 0.0,
    };

    /// The score interval of a token whose sketch dot ([`sketch_dots`]) is `s` (any `s`
    /// without a sketch: the interval is then the box).
    #[inline(always)]
    pub fn interval(&self, s: i32) -> (f64, f64) {
        let c = self.base + self.scale * s as f64;
        // Compares rather than f64::max/min so loops over tokens vectorise (no NaN here:
        // every constant is finite or the bound is UNBOUNDED, where c = 0).
        let (l, u) = (c - self.half, c + self.half);
        (
            if l > self.box_lo { l } else { self.box_lo },
            if u < self.box_hi { u } else { self.box_hi },
        )
    }
}

/// The constants [`PageRows`] derives for head dim `d` and sketch width `bits`, as the GPU
/// port of the bounds takes them (`kernels/robust_bound.cuh`): `(γ, L as f64, q_max,
/// fl(1/q_max), fl(1/L))`, each computed by the same expression as here.
pub(crate) fn device_consts(d: usize, bits: u32) -> (f64, f64, f32, f32, f32) {
    let n = (d + 2) as f64;
    let gam = n * U / (1.0 - n * U);
    let lv = sketch::levels(bits).max(1) as f64;
    let qmax = q_max(d, bits);
    let inv_levels = 1.0 / sketch::levels(bits).max(1) as f32;
    (gam, lv, qmax, 1.0 / qmax, inv_levels)
}

/// Largest quantised weight for head dim `d` and `bits`: `|Σ q_c·code_c| < 2³¹` always.
#[inline]
fn q_max(d: usize, bits: u32) -> f32 {
    let lim = (i32::MAX as u64) / (d.max(1) as u64 * sketch::levels(bits).max(1) as u64);
    lim.min(i16::MAX as u64) as f32
}

/// `1/p` for a normal power of two `p` in [2⁻¹²⁵, 2¹²⁵] (exact, no division).
#[inline]
fn pow2_inv(p: f32) -> f32 {
    let exp = (p.to_bits() >> 23) & 0xff;
    f32::from_bits((254 - exp) << 23)
}

/// The smallest power of two `p` with `x ≤ p` (x > 0 finite normal).
#[inline]
fn pow2_at_least(x: f32) -> f32 {
    let b = x.to_bits();
    let exp = (b >> 23) & 0xff;
    if b & 0x7f_ffff == 0 {
        x
    } else {
        f32::from_bits((exp + 1) << 23)
    }
}

/// `(q, |ws − scale·q|)` with `q = round_ties_even(ws·inv)` (`inv = 1/scale`, both powers of
/// two, `|ws·inv| ≤ 32767`), without a saturating float-to-int cast so it vectorises: adding
/// 1.5·2²³ rounds `ws·inv` (exact) to an integer held in the low mantissa bits.
#[inline(always)]
fn quantise(ws: f32, inv: f32, scale: f32) -> (i16, f32) {
    const MAGIC: f32 = 12_582_912.0;
    let y = ws * inv + MAGIC;
    let qf = y - MAGIC;
    let qi = (y.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32) as i16;
    (qi, (ws - qf * scale).abs())
}

/// `([Σ w·lo, Σ max(ŵs, 0), Σ min(ŵs, 0), Σ |w|·amax], max |ŵs|)` with `ŵs = fl(w·step)`, in
/// f32 (any summation order: the module docs bound the error for every order).
#[inline]
fn page_sums(w: &[f32], lo: &[f32], step: &[f32], amax: &[f32]) -> ([f32; 4], f32) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if w.len().is_multiple_of(8) {
        // SAFETY: equal lengths (checked by the caller's slicing), a multiple of 8; AVX2
        // and FMA are enabled at compile time (this cfg).
        return unsafe { avx2::page_sums(w, lo, step, amax) };
    }
    page_sums_portable(w, lo, step, amax)
}

fn page_sums_portable(w: &[f32], lo: &[f32], step: &[f32], amax: &[f32]) -> ([f32; 4], f32) {
    const L8: usize = 8;
    let d = w.len();
    let (mut b, mut p, mut m) = ([0.0f32; L8], [0.0f32; L8], [0.0f32; L8]);
    let (mut mg, mut mx) = ([0.0f32; L8], [0.0f32; L8]);
    for c in 0..d {
        let (j, wc) = (c % L8, w[c]);
        b[j] = wc.mul_add(lo[c], b[j]);
        mg[j] = wc.abs().mul_add(amax[c], mg[j]);
        let ws = wc * step[c];
        p[j] += if ws > 0.0 { ws } else { 0.0 };
        m[j] += if ws < 0.0 { ws } else { 0.0 };
        let a = ws.abs();
        mx[j] = if mx[j] < a { a } else { mx[j] };
    }
    let sum = |x: [f32; L8]| ((x[0] + x[4]) + (x[1] + x[5])) + ((x[2] + x[6]) + (x[3] + x[7]));
    let mx = mx.iter().fold(0.0f32, |a, &x| if x > a { x } else { a });
    ([sum(b), sum(p), sum(m), sum(mg)], mx)
}

/// Quantises `ŵs_c = fl(w_c·step_c)` into `q` ([`quantise`]); returns `Σ|e_c|` (f32 sum).
#[inline]
fn quantise_all(w: &[f32], step: &[f32], inv: f32, scale: f32, q: &mut [i16]) -> f32 {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    if w.len().is_multiple_of(16) {
        // SAFETY: as in `page_sums`; `q` has D entries.
        return unsafe { avx2::quantise_all(w, step, inv, scale, q) };
    }
    let mut e = [0.0f32; 8];
    for c in 0..w.len() {
        let (qi, err) = quantise(w[c] * step[c], inv, scale);
        q[c] = qi;
        e[c % 8] += err;
    }
    e.iter().sum()
}

/// Box bounds, magnitude and (with `sketch`, rows loaded for a width `bits > 0`) the
/// sketch constants of one page for the head query `w`; `q` (length D) receives the
/// quantised weights `q_c` of [`sketch_dots`]. Without `sketch` the token intervals are the
/// box.
#[inline]
pub(crate) fn page_bound(w: &[f32], rows: &PageRows, sketch: bool, q: &mut [i16]) -> PageBound {
    let d = w.len();
    let sketch = sketch && rows.bits > 0;
    let pre = if rows.finite {
        let (sums, mx) = page_sums(w, &rows.lo[..d], &rows.step[..d], &rows.amax[..d]);
        bound_pre(rows, sketch, sums, mx)
    } else {
        BoundPre::UNBOUNDED
    };
    bound_post(&pre, rows, w, q)
}

/// What [`page_bound`] derives from the page sums before the quantisation (split out so
/// that [`page_bounds`] can run each stage over many heads back to back).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundPre {
    /// 0: unbounded; 1: the box only (no sketch); 2: box and sketch.
    kind: u8,
    b: f32,
    m_up: f64,
    s_up: f64,
    box_lo: f64,
    box_hi: f64,
    scale: f32,
    inv: f32,
}

impl BoundPre {
    const UNBOUNDED: BoundPre = BoundPre {
        kind: 0,
        b: 0.0,
        m_up: 0.0,
        s_up: 0.0,
        box_lo: 0.0,
        box_hi: 0.0,
        scale: 0.0,
        inv: 0.0,
    };
}

/// [`page_bound`] from the page sums `([Σ w·lo, P̂, N̂, Σ|w|·amax], max|ŵs|)` of finite rows
/// (`sketch`: rows loaded for a width > 0 and the sketch asked for).
#[inline]
fn bound_pre(rows: &PageRows, sketch: bool, sums: [f32; 4], mx: f32) -> BoundPre {
    let [b, p, m, mg] = sums;
    if !(b.is_finite() && p.is_finite() && m.is_finite() && mg.is_finite()) {
        return BoundPre::UNBOUNDED;
    }
    let (gam, lv) = (rows.gam, rows.lv);
    let m_up = mg as f64 * (1.0 + 3.0 * gam);
    let s_up = (p as f64 - m as f64) * (1.0 + 2.0 * gam);
    let tail = 1.0 / (1u64 << 40) as f64;
    let tiny = f64::powi(2.0, -120);
    let box_err = gam * m_up + lv * (gam + 4.03 * U) * s_up;
    let widen = box_err + tail * (box_err + m_up) + BOUND_ERR * m_up + tiny;
    let box_lo = b as f64 + lv * m as f64 - widen;
    let box_hi = b as f64 + lv * p as f64 + widen;
    if !sketch {
        return BoundPre {
            kind: 1,
            b,
            m_up,
            s_up,
            box_lo,
            box_hi,
            scale: 0.0,
            inv: 0.0,
        };
    }
    // Quantise ŵs_c = fl(w_c·ŝ_c) (recomputed: the same f32 products as above).
    let qmax = rows.qmax;
    // 2⁻¹¹⁰ ≤ mx keeps scale ≥ 2⁻¹²⁵ (normal), mx ≤ 2¹⁰⁰ keeps scale·q finite.
    let (lo_mx, hi_mx) = (
        f32::from_bits((127 - 110) << 23),
        f32::from_bits((127 + 100) << 23),
    );
    let (scale, inv) = if mx >= lo_mx && mx <= hi_mx {
        // A power of two ≥ mx/qmax (the product may round low: then one doubling).
        let mut s = pow2_at_least(mx * rows.inv_qmax);
        if mx * pow2_inv(s) > qmax {
            s *= 2.0;
        }
        (s, pow2_inv(s))
    } else {
        // Nothing to quantise (or out of range): q = 0, e_c = ŵs_c.
        (0.0, 0.0)
    };
    BoundPre {
        kind: 2,
        b,
        m_up,
        s_up,
        box_lo,
        box_hi,
        scale,
        inv,
    }
}

/// [`page_bound`] after [`bound_pre`]: the quantised weights into `q` and the bound.
#[inline]
fn bound_post(pre: &BoundPre, rows: &PageRows, w: &[f32], q: &mut [i16]) -> PageBound {
    let d = w.len();
    if pre.kind == 0 {
        q[..d].fill(0);
        return PageBound::UNBOUNDED;
    }
    if pre.kind == 1 {
        q[..d].fill(0);
        return PageBound {
            box_lo: pre.box_lo,
            box_hi: pre.box_hi,
            mag: pre.m_up,
            base: pre.b as f64,
            half: f64::INFINITY,
            scale: 0.0,
        };
    }
    let e = quantise_all(w, &rows.step[..d], pre.inv, pre.scale, &mut q[..d]) as f64;
    bound_finish(pre, rows, e, q)
}

/// The half-width from the quantisation error `e` ([`page_bound`]'s last step).
#[inline]
fn bound_finish(pre: &BoundPre, rows: &PageRows, e: f64, q: &mut [i16]) -> PageBound {
    let (gam, lv) = (rows.gam, rows.lv);
    let (s_up, m_up) = (pre.s_up, pre.m_up);
    let tail = 1.0 / (1u64 << 40) as f64;
    let tiny = f64::powi(2.0, -120);
    let h0 = s_up * (1.0 + 5.0 * U) * 0.5
        + lv * e * (1.0 + 2.0 * gam)
        + 4.03 * U * lv * s_up
        + gam * m_up;
    let half = h0 + tail * (h0 + m_up) + BOUND_ERR * m_up + tiny;
    if !half.is_finite() {
        q.fill(0);
        return PageBound::UNBOUNDED;
    }
    PageBound {
        box_lo: pre.box_lo,
        box_hi: pre.box_hi,
        mag: m_up,
        base: pre.b as f64,
        half,
        scale: pre.scale as f64,
    }
}

/// One head of [`page_bounds`]: its query (D values), the page's rows, and its quantised
/// weights' buffer (D values).
#[derive(Debug, Clone, Copy)]
pub(crate) struct BoundUnit {
    pub w: *const f32,
    pub rows: *const PageRows,
    pub q: *mut i16,
}

/// [`page_bound`] (sketch on) of up to [`BATCH`] heads at once into `out`: the same
/// function, stage by stage over all the heads (sums, constants, quantisation,
/// half-widths), so that the heads' long dependency chains overlap in the out-of-order core
/// instead of running one after the other. The same bits as `page_bound` per head (the
/// same operations on the same values; tested).
///
/// # Safety
/// Every unit's pointers are valid for D values (`rows` for reads, loaded for D), the `q`
/// buffers are distinct from each other and from everything else in use.
#[inline]
pub(crate) unsafe fn page_bounds(d: usize, units: &[BoundUnit], out: &mut [PageBound]) {
    let n = units.len();
    assert!(n <= BATCH && out.len() >= n);
    // SAFETY (the caller's contract): valid for D values.
    let w = |i: usize| unsafe { std::slice::from_raw_parts(units[i].w, d) };
    let rows = |i: usize| unsafe { &*units[i].rows };
    let q = |i: usize| unsafe { std::slice::from_raw_parts_mut(units[i].q, d) };
    if n == 0 {
        return;
    }
    // The lane-wise stages need every head's constants alike (the same D and width: always
    // so in one pass); otherwise head by head.
    let r0 = rows(0);
    let alike = (0..n).all(|i| {
        let r = rows(i);
        r.consts_for == r0.consts_for && r.bits == r0.bits && r.bits > 0
    });
    if !alike {
        for i in 0..n {
            out[i] = page_bound(w(i), rows(i), true, q(i));
        }
        return;
    }
    // Stage 1: the page sums (AVX2 kernel order), as lanes.
    let mut sums = [[0.0f32; BATCH]; 5];
    let mut fin = [false; BATCH];
    for i in 0..n {
        let r = rows(i);
        fin[i] = r.finite;
        if r.finite {
            let ([b, p, m, mg], mx) = page_sums(w(i), &r.lo[..d], &r.step[..d], &r.amax[..d]);
            for (k, v) in [b, p, m, mg, mx].into_iter().enumerate() {
                sums[k][i] = v;
            }
        }
    }
    // Stage 2: `bound_pre`'s arithmetic, lane by lane without branches (the same
    // operations in the same order per lane: the same values).
    let lanes = PreLanes::new(r0, &sums, &fin);
    // Stage 3: the quantisation per head.
    let mut e = [0.0f64; BATCH];
    for i in 0..n {
        if lanes.ok[i] {
            let st = &rows(i).step[..d];
            e[i] = quantise_all(w(i), st, lanes.inv[i], lanes.scale[i], q(i)) as f64;
        }
    }
    // Stage 4: the half-widths, lane by lane, then the bounds.
    let half = lanes.half(r0, &e);
    for i in 0..n {
        out[i] = if !lanes.ok[i] || !half[i].is_finite() {
            q(i).fill(0);
            PageBound::UNBOUNDED
        } else {
            PageBound {
                box_lo: lanes.box_lo[i],
                box_hi: lanes.box_hi[i],
                mag: lanes.m_up[i],
                base: sums[0][i] as f64,
                half: half[i],
                scale: lanes.scale[i] as f64,
            }
        };
    }
}

/// [`bound_pre`] (sketch on) for [`BATCH`] heads as lanes: plain per-lane arithmetic in
/// fixed-length loops (which the compiler vectorises), the same operations in the same
/// order as `bound_pre`, so the same values.
struct PreLanes {
    ok: [bool; BATCH],
    m_up: [f64; BATCH],
    s_up: [f64; BATCH],
    box_lo: [f64; BATCH],
    box_hi: [f64; BATCH],
    scale: [f32; BATCH],
    inv: [f32; BATCH],
}

impl PreLanes {
    #[inline(always)]
    fn new(rows: &PageRows, sums: &[[f32; BATCH]; 5], fin: &[bool; BATCH]) -> Self {
        let (gam, lv) = (rows.gam, rows.lv);
        let tail = 1.0 / (1u64 << 40) as f64;
        let tiny = f64::powi(2.0, -120);
        let (lo_mx, hi_mx) = (
            f32::from_bits((127 - 110) << 23),
            f32::from_bits((127 + 100) << 23),
        );
        let (qmax, inv_qmax) = (rows.qmax, rows.inv_qmax);
        let [b, p, m, mg, mx] = sums;
        let mut l = PreLanes {
            ok: [false; BATCH],
            m_up: [0.0; BATCH],
            s_up: [0.0; BATCH],
            box_lo: [0.0; BATCH],
            box_hi: [0.0; BATCH],
            scale: [0.0; BATCH],
            inv: [0.0; BATCH],
        };
        for i in 0..BATCH {
            l.ok[i] =
                fin[i] & b[i].is_finite() & p[i].is_finite() & m[i].is_finite() & mg[i].is_finite();
            let m_up = mg[i] as f64 * (1.0 + 3.0 * gam);
            let s_up = (p[i] as f64 - m[i] as f64) * (1.0 + 2.0 * gam);
            let box_err = gam * m_up + lv * (gam + 4.03 * U) * s_up;
            let widen = box_err + tail * (box_err + m_up) + BOUND_ERR * m_up + tiny;
            l.m_up[i] = m_up;
            l.s_up[i] = s_up;
            l.box_lo[i] = b[i] as f64 + lv * m[i] as f64 - widen;
            l.box_hi[i] = b[i] as f64 + lv * p[i] as f64 + widen;
        }
        for i in 0..BATCH {
            // `bound_pre`'s scale: a power of two ≥ mx/qmax (one doubling where the
            // product rounded low), or 0 out of range; written as selects.
            let inr = mx[i] >= lo_mx && mx[i] <= hi_mx;
            // Out of range: any normal stand-in (its scale is discarded), so that the bit
            // manipulations below only ever see normal numbers.
            let x = if inr { mx[i] } else { 1.0 };
            let s = pow2_at_least(x * inv_qmax);
            let s = if x * pow2_inv(s) > qmax { s * 2.0 } else { s };
            l.scale[i] = if inr { s } else { 0.0 };
            l.inv[i] = if inr { pow2_inv(s) } else { 0.0 };
        }
        l
    }

    /// `bound_finish`'s half-width per lane.
    #[inline(always)]
    fn half(&self, rows: &PageRows, e: &[f64; BATCH]) -> [f64; BATCH] {
        let (gam, lv) = (rows.gam, rows.lv);
        let tail = 1.0 / (1u64 << 40) as f64;
        let tiny = f64::powi(2.0, -120);
        let mut out = [0.0; BATCH];
        for i in 0..BATCH {
            let (s_up, m_up) = (self.s_up[i], self.m_up[i]);
            let h0 = s_up * (1.0 + 5.0 * U) * 0.5
                + lv * e[i] * (1.0 + 2.0 * gam)
                + 4.03 * U * lv * s_up
                + gam * m_up;
            out[i] = h0 + tail * (h0 + m_up) + BOUND_ERR * m_up + tiny;
        }
        out
    }
}

/// Heads per call of [`page_bounds`].
pub(crate) const BATCH: usize = 8;

/// [`page_bounds`] over any number of heads, [`BATCH`] at a time in the order `units`
/// yields them; `store(tag, bound)` receives each head's bound with the tag it came with.
/// The page-major certified and robust passes batch every (task, head) of a page this way.
///
/// # Safety
/// As [`page_bounds`], for every unit yielded; `store` must not touch the units' buffers.
pub(crate) unsafe fn page_bounds_batched<T: Copy + Default>(
    d: usize,
    units: impl IntoIterator<Item = (BoundUnit, T)>,
    mut store: impl FnMut(T, PageBound),
) {
    let mut buf = [BoundUnit {
        w: std::ptr::null(),
        rows: std::ptr::null(),
        q: std::ptr::null_mut(),
    }; BATCH];
    let mut tags = [T::default(); BATCH];
    let mut pbs = [PageBound::UNBOUNDED; BATCH];
    let mut n = 0;
    let mut flush = |n: usize, buf: &[BoundUnit; BATCH], tags: &[T; BATCH]| {
        // SAFETY: the caller's contract.
        unsafe { page_bounds(d, &buf[..n], &mut pbs[..n]) };
        for i in 0..n {
            store(tags[i], pbs[i]);
        }
    };
    for (unit, tag) in units {
        buf[n] = unit;
        tags[n] = tag;
        n += 1;
        if n == BATCH {
            flush(n, &buf, &tags);
            n = 0;
        }
    }
    if n > 0 {
        flush(n, &buf, &tags);
    }
}

/// The ends of every token interval of one page for one head, ALiBi `slope·(s0 + t)` added
/// for token `t` (`s0 = first position − q_pos`, so this is exactly [`alibi`]'s value):
/// upper ends rounded up to f32 into `up`, lower ends (f64) into `lo`. Returns the largest
/// of each. Written in four explicit lanes so it vectorises (float max reductions do not,
/// otherwise).
#[inline]
pub(crate) fn token_ends(
    pc: &PageBound,
    sdot: &[i32],
    slope: f64,
    s0: f64,
    up: &mut [f32],
    lo: &mut [f64],
) -> (f32, f64) {
    const L: usize = 4;
    let n = sdot.len();
    let (up, lo) = (&mut up[..n], &mut lo[..n]);
    let (mut um, mut lm) = ([f32::NEG_INFINITY; L], [f64::NEG_INFINITY; L]);
    let full = n / L * L;
    let mut tb = s0;
    for c0 in (0..full / L).map(|i| i * L) {
        let s4: &[i32; L] = sdot[c0..c0 + L].try_into().expect("4 lanes");
        let u4: &mut [f32; L] = (&mut up[c0..c0 + L]).try_into().expect("4 lanes");
        let l4: &mut [f64; L] = (&mut lo[c0..c0 + L]).try_into().expect("4 lanes");
        for j in 0..L {
            let (l, u) = pc.interval(s4[j]);
            let al = slope * (tb + j as f64);
            let u = f32_up(u + al);
            let l = l + al;
            u4[j] = u;
            l4[j] = l;
            um[j] = if u > um[j] { u } else { um[j] };
            lm[j] = if l > lm[j] { l } else { lm[j] };
        }
        tb += L as f64;
    }
    for (j, t) in (full..n).enumerate() {
        let (l, u) = pc.interval(sdot[t]);
        let al = slope * (tb + j as f64);
        let u = f32_up(u + al);
        let l = l + al;
        up[t] = u;
        lo[t] = l;
        um[j] = if u > um[j] { u } else { um[j] };
        lm[j] = if l > lm[j] { l } else { lm[j] };
    }
    let umax = um
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    let lmax = lm
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    (umax, lmax)
}

/// Bit `t` set iff `u[t] > thr` (`u.len() ≤ 64`).
#[inline]
pub(crate) fn above_mask(u: &[f32], thr: f32) -> u64 {
    let mut m = 0u64;
    for (t, &x) in u.iter().enumerate() {
        m |= ((x > thr) as u64) << t;
    }
    m
}

/// Sketch dots `S_t = Σ_c q_c·code_{t,c}` (exact i32) of `out.len()` consecutive sketch rows
/// of `rb` bytes at the start of `rows`; `q` holds D quantised weights ([`page_bound`]).
/// `codes` is scratch of at least D bytes (unused on the 4-bit fast path).
#[inline]
pub(crate) fn sketch_dots(
    q: &[i16],
    rows: &[u8],
    rb: usize,
    bits: u32,
    out: &mut [i32],
    codes: &mut [u8],
) {
    let d = q.len();
    let n = out.len();
    assert!(rows.len() >= n * rb && rb >= sketch::row_bytes(d, bits));
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if bits == 4 && d.is_multiple_of(64) && d <= 64 * avx2::MAX_BLOCKS {
        // SAFETY: the assert above keeps every row load inside `rows`; AVX2 is enabled at
        // compile time (this cfg).
        unsafe { avx2::dots_nibbles(q, rows, rb, out) };
        return;
    }
    sketch_dots_portable(q, rows, rb, bits, out, codes);
}

/// The portable [`sketch_dots`] (also the reference the AVX2 kernel is tested against).
pub(crate) fn sketch_dots_portable(
    q: &[i16],
    rows: &[u8],
    rb: usize,
    bits: u32,
    out: &mut [i32],
    codes: &mut [u8],
) {
    let d = q.len();
    for (t, o) in out.iter_mut().enumerate() {
        let row = &rows[t * rb..t * rb + rb];
        *o = if bits == 4 && d.is_multiple_of(2) {
            let mut s = 0i32;
            for (j, &byte) in row[..d / 2].iter().enumerate() {
                s +=
                    q[2 * j] as i32 * (byte & 15) as i32 + q[2 * j + 1] as i32 * (byte >> 4) as i32;
            }
            s
        } else {
            decode_codes(row, bits, &mut codes[..d]);
            q.iter()
                .zip(&codes[..d])
                .map(|(&w, &c)| w as i32 * c as i32)
                .sum()
        };
    }
}

/// Whether the CPU runs the AVX-512 bound kernels (F, BW, VL, DQ and VNNI), detected at run
/// time: binaries are built for x86-64-v3, so these kernels are picked here, and the
/// AVX2/portable ones stay the fallback. Every AVX-512 kernel gives the same bits as the
/// AVX2 path it replaces (tested). `ENTMAXKV_NO_AVX512` set in the environment forces the
/// fallback (to test it on an AVX-512 machine). Decided once per process (the decoder asks
/// at plan time, so a step never allocates for it).
#[inline]
pub(crate) fn has_avx512() -> bool {
    static FAST: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FAST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512dq")
                && std::arch::is_x86_feature_detected!("avx512vnni")
                && std::env::var_os("ENTMAXKV_NO_AVX512").is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Whether the fused AVX-512 token kernel serves this shape: 4-bit sketch, D a multiple of
/// 64 up to 256, or 512; whole blocks of 16 tokens.
#[inline]
fn fused_fits(bits: u32, d: usize, n: usize) -> bool {
    bits == 4 && matches!(d, 64 | 128 | 192 | 256 | 512) && n.is_multiple_of(16)
}

/// The token bounds of one page for one head in one call: [`page_bound`] (sketch on),
/// [`sketch_dots`] (zeros without a sketch) and [`token_ends`]. `fast` (from
/// [`has_avx512`]) picks the fused AVX-512 kernel where it fits; the results are the same
/// bits either way: `sdot`, `up`, `lo` (first `sdot.len()` entries), `qw` and the returned
/// `(bound, max upper end, max lower end)`. (The decode passes call the two halves
/// separately, [`page_bound`] for every head first; this is their composition, tested.)
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn head_tokens(
    fast: bool,
    w: &[f32],
    rows: &PageRows,
    sk: &[u8],
    rb: usize,
    slope: f64,
    s0: f64,
    qw: &mut [i16],
    sdot: &mut [i32],
    codes: &mut [u8],
    up: &mut [f32],
    lo: &mut [f64],
) -> (PageBound, f32, f64) {
    let pb = page_bound(w, rows, true, qw);
    let (u, l) = tokens_from(
        fast, &pb, qw, sk, rb, rows.bits, slope, s0, sdot, codes, up, lo,
    );
    (pb, u, l)
}

/// [`sketch_dots`] (zeros when `bits == 0`) then [`token_ends`] for a page whose bound and
/// quantised weights [`page_bound`] gave; `fast` as in [`head_tokens`], same bits.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn tokens_from(
    fast: bool,
    pb: &PageBound,
    qw: &[i16],
    sk: &[u8],
    rb: usize,
    bits: u32,
    slope: f64,
    s0: f64,
    sdot: &mut [i32],
    codes: &mut [u8],
    up: &mut [f32],
    lo: &mut [f64],
) -> (f32, f64) {
    let (d, n) = (qw.len(), sdot.len());
    #[cfg(target_arch = "x86_64")]
    if fast && fused_fits(bits, d, n) {
        assert!(
            sk.len() >= n * rb
                && rb >= sketch::row_bytes(d, bits)
                && up.len() >= n
                && lo.len() >= n
        );
        // SAFETY: `fast` is only set where `has_avx512()` holds; the assert keeps every
        // row load inside `sk` and every store inside `sdot`/`up`/`lo`.
        // SAFETY: as above (the block count is D/64 ≤ 8: `fused_fits`).
        return unsafe {
            match d / 64 {
                1 => avx512::dots_ends::<1>(pb, qw, sk, rb, slope, s0, sdot, up, lo),
                2 => avx512::dots_ends::<2>(pb, qw, sk, rb, slope, s0, sdot, up, lo),
                3 => avx512::dots_ends::<3>(pb, qw, sk, rb, slope, s0, sdot, up, lo),
                4 => avx512::dots_ends::<4>(pb, qw, sk, rb, slope, s0, sdot, up, lo),
                _ => avx512::dots_ends::<8>(pb, qw, sk, rb, slope, s0, sdot, up, lo),
            }
        };
    }
    if bits > 0 {
        sketch_dots(qw, sk, rb, bits, sdot, codes);
    } else {
        sdot.fill(0);
    }
    token_ends(pb, sdot, slope, s0, up, lo)
}

/// [`sketch_dots`] (zeros when `bits == 0`) into `sdot`, returning the largest dot: the
/// lazy form of [`tokens_from`]. Every end of [`token_ends`] is non-decreasing in the dot
/// (`c = base + scale·s` with `scale ≥ 0`, then `±half`, the box clamp, the ALiBi term and
/// the directed f32 rounding, each monotone), so without ALiBi (`slope = 0`, where the
/// term is ±0 and adds nothing) the largest ends are those of the largest dot, bit for bit:
/// [`PageBound::interval`] of the result. The per-token ends are then formed only where
/// they are needed ([`upper_end`], [`lower_ends`]). `fast` as in [`tokens_from`].
#[inline]
pub(crate) fn dots_max(
    fast: bool,
    qw: &[i16],
    sk: &[u8],
    rb: usize,
    bits: u32,
    sdot: &mut [i32],
    codes: &mut [u8],
) -> i32 {
    let (d, n) = (qw.len(), sdot.len());
    #[cfg(target_arch = "x86_64")]
    if fast && fused_fits(bits, d, n) {
        assert!(sk.len() >= n * rb && rb >= sketch::row_bytes(d, bits));
        // SAFETY: `fast` is only set where `has_avx512()` holds; the assert keeps every
        // row load inside `sk` (the block count is D/64 ≤ 8: `fused_fits`).
        return unsafe {
            match d / 64 {
                1 => avx512::dots_max::<1>(qw, sk, rb, sdot),
                2 => avx512::dots_max::<2>(qw, sk, rb, sdot),
                3 => avx512::dots_max::<3>(qw, sk, rb, sdot),
                4 => avx512::dots_max::<4>(qw, sk, rb, sdot),
                _ => avx512::dots_max::<8>(qw, sk, rb, sdot),
            }
        };
    }
    if bits > 0 {
        sketch_dots(qw, sk, rb, bits, sdot, codes);
    } else {
        sdot.fill(0);
    }
    sdot.iter().fold(i32::MIN, |m, &x| m.max(x))
}

/// [`dots_max`] and, without ALiBi, the upper ends [`token_ends`] gives (rounded up to
/// f32) into `up`: returns `(largest upper end, largest dot)`, the values of
/// [`tokens_from`] with `slope = 0` bit for bit, without its lower ends (the caller forms
/// those from the dots where they are needed, [`push_lows_dots`]).
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn dots_ups(
    fast: bool,
    pc: &PageBound,
    qw: &[i16],
    sk: &[u8],
    rb: usize,
    bits: u32,
    sdot: &mut [i32],
    codes: &mut [u8],
    up: &mut [f32],
) -> (f32, i32) {
    let (d, n) = (qw.len(), sdot.len());
    #[cfg(target_arch = "x86_64")]
    if fast && fused_fits(bits, d, n) {
        assert!(sk.len() >= n * rb && rb >= sketch::row_bytes(d, bits) && up.len() >= n);
        // SAFETY: `fast` is only set where `has_avx512()` holds; the assert keeps every
        // row load inside `sk` and every store inside `up` (D/64 ≤ 8 blocks: `fused_fits`).
        return unsafe {
            match d / 64 {
                1 => avx512::dots_ups::<1>(pc, qw, sk, rb, sdot, up),
                2 => avx512::dots_ups::<2>(pc, qw, sk, rb, sdot, up),
                3 => avx512::dots_ups::<3>(pc, qw, sk, rb, sdot, up),
                4 => avx512::dots_ups::<4>(pc, qw, sk, rb, sdot, up),
                _ => avx512::dots_ups::<8>(pc, qw, sk, rb, sdot, up),
            }
        };
    }
    let smax = dots_max(false, qw, sk, rb, bits, sdot, codes);
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if n.is_multiple_of(4) {
        // SAFETY: AVX2 is enabled at compile time (this cfg); `up[..n]` bounds the stores.
        return (unsafe { avx2::ups(pc, sdot, &mut up[..n]) }, smax);
    }
    let mut um = f32::NEG_INFINITY;
    for (u, &s) in up[..n].iter_mut().zip(sdot.iter()) {
        *u = f32_up(pc.interval(s).1);
        um = if *u > um { *u } else { um };
    }
    (um, smax)
}

#[cfg(test)]
/// The lower ends [`token_ends`] gives without ALiBi (`slope = 0`), into `lo`; the upper
/// ends too where `up` is given (same operations, same bits).
#[inline]
pub(crate) fn ends_no_alibi(pc: &PageBound, sdot: &[i32], lo: &mut [f64], up: Option<&mut [f32]>) {
    let n = sdot.len();
    let lo = &mut lo[..n];
    match up {
        Some(up) => {
            let up = &mut up[..n];
            for t in 0..n {
                let (l, u) = pc.interval(sdot[t]);
                lo[t] = l;
                up[t] = f32_up(u);
            }
        }
        None => {
            for t in 0..n {
                lo[t] = pc.interval(sdot[t]).0;
            }
        }
    }
}

/// Appends to `out` the lower ends `l` [`ends_no_alibi`] gives the tokens whose sketch
/// dots are `sdot` (page bound `pc`, no ALiBi) that pass `a·(l − m) > −1`, order kept,
/// without a branch per token (the filter of the certified pass). `out` should have room
/// for every token (then its capacity is never exceeded). `fast` as in [`tokens_from`];
/// the same values either way.
#[inline]
pub(crate) fn push_lows_dots(
    fast: bool,
    out: &mut Vec<f64>,
    pc: &PageBound,
    sdot: &[i32],
    a: f64,
    m: f64,
) {
    #[cfg(target_arch = "x86_64")]
    if fast && sdot.len().is_multiple_of(8) && out.capacity() - out.len() >= sdot.len() {
        // SAFETY: `fast` only where `has_avx512()` holds; room and length checked.
        unsafe { avx512::push_lows_dots(out, pc, sdot, a, m) };
        return;
    }
    let _ = fast;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if sdot.len().is_multiple_of(4) && out.capacity() - out.len() >= sdot.len() {
        // SAFETY: AVX2 is enabled at compile time (this cfg); room and length checked.
        unsafe { avx2::push_lows_dots(out, pc, sdot, a, m) };
        return;
    }
    push_kept(out, sdot, |s| {
        let l = pc.interval(s).0;
        (l, a * (l - m) > -1.0)
    });
}

/// As [`push_lows_dots`] with the lower ends rounded down to f32 ([`f32_down`]) and the
/// test on the rounded values (the robust pass's filter).
#[inline]
pub(crate) fn push_lows_dots_f32(
    fast: bool,
    out: &mut Vec<f32>,
    pc: &PageBound,
    sdot: &[i32],
    a: f64,
    m: f64,
) {
    #[cfg(target_arch = "x86_64")]
    if fast && sdot.len().is_multiple_of(8) && out.capacity() - out.len() >= sdot.len() {
        // SAFETY: `fast` only where `has_avx512()` holds; room and length checked.
        unsafe { avx512::push_lows_dots_f32(out, pc, sdot, a, m) };
        return;
    }
    let _ = fast;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if sdot.len().is_multiple_of(4) && out.capacity() - out.len() >= sdot.len() {
        // SAFETY: as in `push_lows_dots`.
        unsafe { avx2::push_ends_dots_f32(out, pc, sdot, a, m, true) };
        return;
    }
    push_kept(out, sdot, |s| {
        let v = f32_down(pc.interval(s).0);
        (v, a * (v as f64 - m) > -1.0)
    });
}

/// Appends to `out` the upper ends [`ends_no_alibi`] gives (rounded up to f32) that pass
/// `a·u − th > 0`, order kept (the robust pass's filter); as [`push_lows_dots`] otherwise.
#[inline]
pub(crate) fn push_ups_dots_f32(
    fast: bool,
    out: &mut Vec<f32>,
    pc: &PageBound,
    sdot: &[i32],
    a: f64,
    th: f64,
) {
    #[cfg(target_arch = "x86_64")]
    if fast && sdot.len().is_multiple_of(8) && out.capacity() - out.len() >= sdot.len() {
        // SAFETY: `fast` only where `has_avx512()` holds; room and length checked.
        unsafe { avx512::push_ups_dots_f32(out, pc, sdot, a, th) };
        return;
    }
    let _ = fast;
    #[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
    if sdot.len().is_multiple_of(4) && out.capacity() - out.len() >= sdot.len() {
        // SAFETY: as in `push_lows_dots`.
        unsafe { avx2::push_ends_dots_f32(out, pc, sdot, a, th, false) };
        return;
    }
    push_kept(out, sdot, |s| {
        let u = f32_up(pc.interval(s).1);
        (u, a * u as f64 - th > 0.0)
    });
}

/// The portable path of the `push_*_dots` filters: `end(s)` gives each token's end and
/// whether it passes; the passing ones are appended in order, without a branch per token
/// (every end is written, the write position advances only past a passing one).
#[inline]
fn push_kept<T: Copy + Default>(out: &mut Vec<T>, sdot: &[i32], end: impl Fn(i32) -> (T, bool)) {
    let n0 = out.len();
    out.resize(n0 + sdot.len(), T::default());
    let tail = &mut out[n0..];
    let mut k = 0;
    for &s in sdot {
        let (v, keep) = end(s);
        tail[k] = v;
        k += keep as usize;
    }
    out.truncate(n0 + k);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512 {
    use super::{PageBound, PageRows};
    use crate::stats::{Stat, StatsStorage};
    use std::arch::x86_64::*;

    /// [`PageRows::load`]'s rows and derived channels (D a multiple of 16, buffers of at
    /// least D, rows `base..base + d` inside the statistics): elementwise, so the same
    /// bits as the scalar `derive` (`max(r, 0)` is `r > 0 ? r : 0`, NaN to 0, as there).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn load_rows(
        rows: &mut PageRows,
        stats: &StatsStorage,
        base: usize,
        d: usize,
        bits: u32,
    ) {
        // As `derive`: L = 1 without a sketch.
        let inv = _mm512_set1_ps(1.0 / crate::stats::sketch::levels(bits).max(1) as f32);
        let z = _mm512_setzero_ps();
        let absm = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fff_ffff));
        let fmax = _mm512_set1_ps(f32::MAX);
        let mut ok: u16 = 0xffff;
        let (lo, hi) = (rows.lo.as_mut_ptr(), rows.hi.as_mut_ptr());
        let (st, am) = (rows.step.as_mut_ptr(), rows.amax.as_mut_ptr());
        let mut c = 0;
        while c < d {
            let (l, h) = match stats {
                StatsStorage::F32(a) => (
                    _mm512_loadu_ps(a[Stat::Min as usize].as_ptr().add(base + c)),
                    _mm512_loadu_ps(a[Stat::Max as usize].as_ptr().add(base + c)),
                ),
                StatsStorage::F16(a) => (
                    _mm512_cvtph_ps(_mm256_loadu_si256(
                        a[Stat::Min as usize].as_ptr().add(base + c).cast(),
                    )),
                    _mm512_cvtph_ps(_mm256_loadu_si256(
                        a[Stat::Max as usize].as_ptr().add(base + c).cast(),
                    )),
                ),
                StatsStorage::Bf16(a) => {
                    let w = |p: *const half::bf16| {
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                            _mm256_loadu_si256(p.cast()),
                        )))
                    };
                    (
                        w(a[Stat::Min as usize].as_ptr().add(base + c)),
                        w(a[Stat::Max as usize].as_ptr().add(base + c)),
                    )
                }
            };
            _mm512_storeu_ps(lo.add(c), l);
            _mm512_storeu_ps(hi.add(c), h);
            let (al, ah) = (_mm512_and_ps(l, absm), _mm512_and_ps(h, absm));
            ok &= _mm512_cmp_ps_mask::<_CMP_LE_OQ>(al, fmax)
                & _mm512_cmp_ps_mask::<_CMP_LE_OQ>(ah, fmax);
            let r = _mm512_sub_ps(h, l);
            // Scalar: `(if r > 0 { r } else { 0 }) * inv`; max_ps(r, 0) is `r > 0 ? r : 0`.
            _mm512_storeu_ps(st.add(c), _mm512_mul_ps(_mm512_max_ps(r, z), inv));
            // Scalar: `|l| > |h| ? |l| : |h|`, which is max_ps(|l|, |h|).
            _mm512_storeu_ps(am.add(c), _mm512_max_ps(al, ah));
            c += 16;
        }
        rows.finite = ok == 0xffff;
    }

    /// One statistics row (`d` values at `base`, D a multiple of 16, inside the storage)
    /// widened to f32 into `out` (at least D long): exact, the values of `read_row`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(crate) unsafe fn read_row(stats: &StatsStorage, stat: Stat, base: usize, out: &mut [f32]) {
        let d = out.len();
        let o = out.as_mut_ptr();
        let mut c = 0;
        while c < d {
            let v = match stats {
                StatsStorage::F32(a) => _mm512_loadu_ps(a[stat as usize].as_ptr().add(base + c)),
                StatsStorage::F16(a) => _mm512_cvtph_ps(_mm256_loadu_si256(
                    a[stat as usize].as_ptr().add(base + c).cast(),
                )),
                StatsStorage::Bf16(a) => {
                    _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                        _mm256_loadu_si256(a[stat as usize].as_ptr().add(base + c).cast()),
                    )))
                }
            };
            _mm512_storeu_ps(o.add(c), v);
            c += 16;
        }
    }

    /// Sums of 16 vectors of 16 i32 lanes: lane t of the result is the sum of vector t's
    /// lanes (exact, wrapping i32 arithmetic: any order gives the same value).
    #[inline(always)]
    unsafe fn reduce16(a: &[__m512i; 16]) -> __m512i {
        // Level 1: pairs → [a2i: 2 quads | a2i+1: 2 quads].
        let b: [__m512i; 8] = std::array::from_fn(|i| {
            let (x, y) = (a[2 * i], a[2 * i + 1]);
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0x44>(x, y),
                _mm512_shuffle_i32x4::<0xEE>(x, y),
            )
        });
        // Level 2: quad k of c[i] holds token 4i + k (4 partials).
        let c: [__m512i; 4] = std::array::from_fn(|i| {
            let (x, y) = (b[2 * i], b[2 * i + 1]);
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0x88>(x, y),
                _mm512_shuffle_i32x4::<0xDD>(x, y),
            )
        });
        reduce_quads(&c)
    }

    /// Levels 3–4 of [`reduce16`]: quad k of `c[i]` holds 4 partials of token 4i + k;
    /// returns the 16 sums in token order.
    #[inline(always)]
    unsafe fn reduce_quads(c: &[__m512i; 4]) -> __m512i {
        // Level 3: quad k = [token k: 2 partials, token k + 4: 2] (e0), tokens 8 + k and
        // 12 + k (e1).
        let e0 = _mm512_add_epi32(
            _mm512_unpacklo_epi64(c[0], c[1]),
            _mm512_unpackhi_epi64(c[0], c[1]),
        );
        let e1 = _mm512_add_epi32(
            _mm512_unpacklo_epi64(c[2], c[3]),
            _mm512_unpackhi_epi64(c[2], c[3]),
        );
        // Level 4: quad k = [token k, 8 + k, 4 + k, 12 + k].
        let lo = _mm512_unpacklo_epi32(e0, e1);
        let hi = _mm512_unpackhi_epi32(e0, e1);
        let s = _mm512_add_epi32(_mm512_unpacklo_epi64(lo, hi), _mm512_unpackhi_epi64(lo, hi));
        let idx = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15);
        _mm512_permutexvar_epi32(idx, s)
    }

    /// The constants of [`super::token_ends`] for one page and head, broadcast.
    struct Ends {
        base: __m512d,
        scale: __m512d,
        half: __m512d,
        blo: __m512d,
        bhi: __m512d,
        sl: __m512d,
        s0: f64,
    }

    /// [`super::token_ends`] of 16 tokens `t0..t0 + 16` whose sketch dots are `s` (also
    /// stored to `sdot`), eight f64 lanes at a time with exactly the scalar's operations per
    /// token (products and sums rounded separately, no fused multiply-add), so the same
    /// bits; running maxima in `um`/`lm` (order-independent: no value is NaN or −0, see
    /// the comments there).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn ends16(
        e: &Ends,
        s: __m512i,
        t0: usize,
        sdot: &mut [i32],
        up: &mut [f32],
        lo: &mut [f64],
        um: &mut __m256,
        lm: &mut __m512d,
    ) {
        _mm512_storeu_si512(sdot.as_mut_ptr().add(t0).cast(), s);
        let iota = _mm512_setr_pd(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        for h in 0..2 {
            let si = if h == 0 {
                _mm512_castsi512_si256(s)
            } else {
                _mm512_extracti64x4_epi64::<1>(s)
            };
            let t = t0 + 8 * h;
            // c = base + scale·s; [c − half, c + half] ∩ box; ALiBi slope·(s0 + t)
            // (s0 + t an exact integer, as tb + j there).
            let c = _mm512_add_pd(e.base, _mm512_mul_pd(e.scale, _mm512_cvtepi32_pd(si)));
            let l = _mm512_max_pd(_mm512_sub_pd(c, e.half), e.blo);
            let u = _mm512_min_pd(_mm512_add_pd(c, e.half), e.bhi);
            let al = _mm512_mul_pd(e.sl, _mm512_add_pd(_mm512_set1_pd(e.s0 + t as f64), iota));
            let (u, l) = (_mm512_add_pd(u, al), _mm512_add_pd(l, al));
            let uf = f32_up8(u);
            _mm256_storeu_ps(up.as_mut_ptr().add(t), uf);
            _mm512_storeu_pd(lo.as_mut_ptr().add(t), l);
            *um = _mm256_max_ps(*um, uf);
            *lm = _mm512_max_pd(*lm, l);
        }
    }

    /// The quantised weights of one page and head arranged for [`dots16`]: at D = 64 the
    /// high and low bytes of the even / odd channels (`[weh, wel, woh, wol]` in `b`), else
    /// the even / odd channels' i16 weights of each 64-channel block.
    struct DotWeights<const NB: usize> {
        b: [__m512i; 4],
        we: [__m512i; NB],
        wo: [__m512i; NB],
    }

    #[inline(always)]
    unsafe fn dot_weights<const NB: usize>(q: &[i16]) -> DotWeights<NB> {
        debug_assert_eq!(q.len(), 64 * NB);
        // Weights of block b as the codes come: byte j of a row holds channels 2j (low
        // nibble) and 2j + 1 (high nibble).
        let ie = _mm512_set_epi16(
            62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 20,
            18, 16, 14, 12, 10, 8, 6, 4, 2, 0,
        );
        let io = _mm512_add_epi16(ie, _mm512_set1_epi16(1));
        let z = _mm512_setzero_si512();
        let mut w = DotWeights {
            b: [z; 4],
            we: [z; NB],
            wo: [z; NB],
        };
        for b in 0..NB {
            let x = _mm512_loadu_si512(q.as_ptr().add(64 * b).cast());
            let y = _mm512_loadu_si512(q.as_ptr().add(64 * b + 32).cast());
            w.we[b] = _mm512_permutex2var_epi16(x, ie, y);
            w.wo[b] = _mm512_permutex2var_epi16(x, io, y);
        }
        if NB == 1 {
            let (we, wo) = (w.we[0], w.wo[0]);
            // High bytes (arithmetic shift) and low bytes, in both 256-bit halves.
            let dup = |v: __m256i| _mm512_inserti64x4::<1>(_mm512_castsi256_si512(v), v);
            w.b = [
                dup(_mm512_cvtepi16_epi8(_mm512_srai_epi16::<8>(we))),
                dup(_mm512_cvtepi16_epi8(we)),
                dup(_mm512_cvtepi16_epi8(_mm512_srai_epi16::<8>(wo))),
                dup(_mm512_cvtepi16_epi8(wo)),
            ];
        }
        w
    }

    /// The exact i32 sketch dots of the 16 tokens `t0..t0 + 16` (4-bit sketch, D = 64·NB,
    /// rows of `rb` bytes at `rows`), in token order. `q_max` keeps every partial sum below
    /// 2³¹; wrapping i32 arithmetic gives the exact sum in any order. D = 64 takes two
    /// tokens per 512-bit register with VPDPBUSD: `q = 256·q_h + q_l` with `q_h = q >> 8`
    /// signed and `q_l = q & 255` unsigned bytes, so `S = 256·Σ q_h·code + Σ q_l·code`,
    /// both byte dots exact (codes are 0..15, signed or unsigned alike). Other D: VPDPWSSD
    /// on codes widened to i16.
    #[inline(always)]
    unsafe fn dots16<const NB: usize>(
        w: &DotWeights<NB>,
        rows: *const u8,
        rb: usize,
        t0: usize,
    ) -> __m512i {
        if NB == 1 {
            let [weh, wel, woh, wol] = w.b;
            let m0f = _mm512_set1_epi8(0x0f);
            let z = _mm512_setzero_si512();
            let mut a = [z; 8];
            for (p, acc) in a.iter_mut().enumerate() {
                let r0 = rows.add((t0 + 2 * p) * rb);
                let v = _mm512_inserti64x4::<1>(
                    _mm512_castsi256_si512(_mm256_loadu_si256(r0.cast())),
                    _mm256_loadu_si256(r0.add(rb).cast()),
                );
                let lo4 = _mm512_and_si512(v, m0f);
                let hi4 = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m0f);
                let h = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, lo4, weh), hi4, woh);
                let l = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(z, wel, lo4), wol, hi4);
                *acc = _mm512_add_epi32(_mm512_slli_epi32::<8>(h), l);
            }
            // Lanes 0–7 of a[p] hold token 2p, 8–15 token 2p + 1: quad k of c[i] holds
            // token 4i + k, as level 2 of `reduce16`.
            let c: [__m512i; 4] = std::array::from_fn(|i| {
                let (x, y) = (a[2 * i], a[2 * i + 1]);
                _mm512_add_epi32(
                    _mm512_shuffle_i32x4::<0x88>(x, y),
                    _mm512_shuffle_i32x4::<0xDD>(x, y),
                )
            });
            reduce_quads(&c)
        } else {
            let m0f = _mm512_set1_epi16(0x0f);
            let mut a = [_mm512_setzero_si512(); 16];
            for (i, acc) in a.iter_mut().enumerate() {
                let row = rows.add((t0 + i) * rb);
                for b in 0..NB {
                    let x = _mm512_cvtepu8_epi16(_mm256_loadu_si256(row.add(32 * b).cast()));
                    *acc = _mm512_dpwssd_epi32(*acc, _mm512_and_si512(x, m0f), w.we[b]);
                    *acc = _mm512_dpwssd_epi32(*acc, _mm512_srli_epi16::<4>(x), w.wo[b]);
                }
            }
            reduce16(&a)
        }
    }

    /// [`super::tokens_from`] for a 4-bit sketch, D = 64·NB (NB ≤ 8) and `sdot.len()` a
    /// multiple of 16: the exact sketch dots ([`dots16`]), then [`ends16`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn dots_ends<const NB: usize>(
        pb: &PageBound,
        q: &[i16],
        rows: &[u8],
        rb: usize,
        slope: f64,
        s0: f64,
        sdot: &mut [i32],
        up: &mut [f32],
        lo: &mut [f64],
    ) -> (f32, f64) {
        let n = sdot.len();
        let e = Ends {
            base: _mm512_set1_pd(pb.base),
            scale: _mm512_set1_pd(pb.scale),
            half: _mm512_set1_pd(pb.half),
            blo: _mm512_set1_pd(pb.box_lo),
            bhi: _mm512_set1_pd(pb.box_hi),
            sl: _mm512_set1_pd(slope),
            s0,
        };
        let mut um = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut lm = _mm512_set1_pd(f64::NEG_INFINITY);
        let w = dot_weights::<NB>(q);
        let mut t0 = 0;
        while t0 < n {
            let s = dots16::<NB>(&w, rows.as_ptr(), rb, t0);
            ends16(&e, s, t0, sdot, up, lo, &mut um, &mut lm);
            t0 += 16;
        }
        let x = _mm_max_ps(_mm256_castps256_ps128(um), _mm256_extractf128_ps::<1>(um));
        let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_max_ss(x, _mm_movehdup_ps(x));
        (_mm_cvtss_f32(x), _mm512_reduce_max_pd(lm))
    }

    /// [`super::dots_max`] for a 4-bit sketch, D = 64·NB (NB ≤ 8) and `sdot.len()` a
    /// multiple of 16: the exact sketch dots ([`dots16`]) into `sdot`, and their maximum.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn dots_max<const NB: usize>(
        q: &[i16],
        rows: &[u8],
        rb: usize,
        sdot: &mut [i32],
    ) -> i32 {
        let n = sdot.len();
        let w = dot_weights::<NB>(q);
        let mut mx = _mm512_set1_epi32(i32::MIN);
        let mut t0 = 0;
        while t0 < n {
            let s = dots16::<NB>(&w, rows.as_ptr(), rb, t0);
            _mm512_storeu_si512(sdot.as_mut_ptr().add(t0).cast(), s);
            mx = _mm512_max_epi32(mx, s);
            t0 += 16;
        }
        _mm512_reduce_max_epi32(mx)
    }

    /// `f32_up` of eight f64 lanes, lane by lane the scalar's operations.
    #[inline(always)]
    unsafe fn f32_up8(x: __m512d) -> __m256 {
        let negmax = _mm512_set1_pd(-(f32::MAX as f64));
        let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(x, negmax);
        let y = _mm512_cvtpd_ps(_mm512_mask_blend_pd(k, negmax, x));
        let absm = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        _mm256_add_ps(
            _mm256_add_ps(
                y,
                _mm256_mul_ps(_mm256_and_ps(y, absm), _mm256_set1_ps(f32::EPSILON)),
            ),
            _mm256_set1_ps(f32::from_bits(1)),
        )
    }

    /// The ends of eight tokens whose sketch dots are `s`, without ALiBi: `(lower, upper)`
    /// as [`PageBound::interval`] forms them, lane by lane the same operations (products
    /// and sums rounded separately), so the same bits.
    #[inline(always)]
    unsafe fn ends8(e: &Ends, s: __m256i) -> (__m512d, __m512d) {
        let c = _mm512_add_pd(e.base, _mm512_mul_pd(e.scale, _mm512_cvtepi32_pd(s)));
        (
            _mm512_max_pd(_mm512_sub_pd(c, e.half), e.blo),
            _mm512_min_pd(_mm512_add_pd(c, e.half), e.bhi),
        )
    }

    fn ends_of(pc: &PageBound) -> Ends {
        // SAFETY: plain broadcasts (AVX-512F, present wherever these kernels run).
        unsafe {
            Ends {
                base: _mm512_set1_pd(pc.base),
                scale: _mm512_set1_pd(pc.scale),
                half: _mm512_set1_pd(pc.half),
                blo: _mm512_set1_pd(pc.box_lo),
                bhi: _mm512_set1_pd(pc.box_hi),
                sl: _mm512_setzero_pd(),
                s0: 0.0,
            }
        }
    }

    /// [`super::dots_ups`], a 4-bit sketch, D = 64·NB and `sdot.len()` a multiple of 16:
    /// [`dots16`], then the upper ends of [`ends16`] without ALiBi (where its term is ±0,
    /// which adds nothing), their maximum and the dots' maximum.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")]
    pub(super) unsafe fn dots_ups<const NB: usize>(
        pb: &PageBound,
        q: &[i16],
        rows: &[u8],
        rb: usize,
        sdot: &mut [i32],
        up: &mut [f32],
    ) -> (f32, i32) {
        let n = sdot.len();
        let e = ends_of(pb);
        let w = dot_weights::<NB>(q);
        let mut um = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut mx = _mm512_set1_epi32(i32::MIN);
        let mut t0 = 0;
        while t0 < n {
            let s = dots16::<NB>(&w, rows.as_ptr(), rb, t0);
            _mm512_storeu_si512(sdot.as_mut_ptr().add(t0).cast(), s);
            mx = _mm512_max_epi32(mx, s);
            for h in 0..2 {
                let si = if h == 0 {
                    _mm512_castsi512_si256(s)
                } else {
                    _mm512_extracti64x4_epi64::<1>(s)
                };
                let (_, u) = ends8(&e, si);
                let uf = f32_up8(u);
                _mm256_storeu_ps(up.as_mut_ptr().add(t0 + 8 * h), uf);
                um = _mm256_max_ps(um, uf);
            }
            t0 += 16;
        }
        let x = _mm_max_ps(_mm256_castps256_ps128(um), _mm256_extractf128_ps::<1>(um));
        let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_max_ss(x, _mm_movehdup_ps(x));
        (_mm_cvtss_f32(x), _mm512_reduce_max_epi32(mx))
    }

    /// [`super::push_lows_dots`]: the lower ends of the tokens whose dots are `sdot`
    /// (`sdot.len()` a multiple of 8), those with `a·(l − m) > −1` appended to `out`, order
    /// kept. Panics unless `out` has room for all of them.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn push_lows_dots(
        out: &mut Vec<f64>,
        pc: &PageBound,
        sdot: &[i32],
        a: f64,
        m: f64,
    ) {
        let n = sdot.len();
        assert!(
            n.is_multiple_of(8) && out.capacity() - out.len() >= n,
            "push_lows_dots: no room"
        );
        let e = ends_of(pc);
        let (av, mv, neg1) = (_mm512_set1_pd(a), _mm512_set1_pd(m), _mm512_set1_pd(-1.0));
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let (l, _) = ends8(&e, _mm256_loadu_si256(sdot.as_ptr().add(i).cast()));
            let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(_mm512_mul_pd(av, _mm512_sub_pd(l, mv)), neg1);
            _mm512_mask_compressstoreu_pd(dst.add(len).cast(), k, l);
            len += k.count_ones() as usize;
            i += 8;
        }
        out.set_len(len);
    }

    /// [`super::push_lows_dots_f32`]: as [`push_lows_dots`] with the lower ends rounded
    /// down to f32 first (the values and test of [`compact_lows_f32`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn push_lows_dots_f32(
        out: &mut Vec<f32>,
        pc: &PageBound,
        sdot: &[i32],
        a: f64,
        m: f64,
    ) {
        let n = sdot.len();
        assert!(
            n.is_multiple_of(8) && out.capacity() - out.len() >= n,
            "push_lows_dots_f32: no room"
        );
        let e = ends_of(pc);
        let (av, mv, neg1) = (_mm512_set1_pd(a), _mm512_set1_pd(m), _mm512_set1_pd(-1.0));
        let sign = _mm512_set1_pd(-0.0);
        let sign32 = _mm256_set1_ps(-0.0);
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let (l, _) = ends8(&e, _mm256_loadu_si256(sdot.as_ptr().add(i).cast()));
            let v = _mm256_xor_ps(f32_up8(_mm512_xor_pd(l, sign)), sign32);
            let z = _mm512_mul_pd(av, _mm512_sub_pd(_mm512_cvtps_pd(v), mv));
            let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(z, neg1);
            _mm256_mask_compressstoreu_ps(dst.add(len).cast(), k, v);
            len += k.count_ones() as usize;
            i += 8;
        }
        out.set_len(len);
    }

    /// [`super::push_ups_dots_f32`]: the upper ends (rounded up to f32) of the tokens whose
    /// dots are `sdot` (a multiple of 8), those with `a·u − th > 0` appended to `out` (the
    /// values and test of [`compact_ups_f32`]).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn push_ups_dots_f32(
        out: &mut Vec<f32>,
        pc: &PageBound,
        sdot: &[i32],
        a: f64,
        th: f64,
    ) {
        let n = sdot.len();
        assert!(
            n.is_multiple_of(8) && out.capacity() - out.len() >= n,
            "push_ups_dots_f32: no room"
        );
        let e = ends_of(pc);
        let (av, tv, z0) = (_mm512_set1_pd(a), _mm512_set1_pd(th), _mm512_setzero_pd());
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let (_, u) = ends8(&e, _mm256_loadu_si256(sdot.as_ptr().add(i).cast()));
            let uf = f32_up8(u);
            let z = _mm512_sub_pd(_mm512_mul_pd(av, _mm512_cvtps_pd(uf)), tv);
            let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(z, z0);
            _mm256_mask_compressstoreu_ps(dst.add(len).cast(), k, uf);
            len += k.count_ones() as usize;
            i += 8;
        }
        out.set_len(len);
    }

    /// The robust pass's lower-end filter: appends `v = f32_down(l)` for each `l` of
    /// `lows` with `a·(v − m) > −1` (v widened to f64) to `out`, order kept; the scalar
    /// operations lane by lane (`f32_down(l) = −f32_up(−l)`). Panics unless `out` has room
    /// for all of `lows`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(crate) unsafe fn compact_lows_f32(out: &mut Vec<f32>, lows: &[f64], a: f64, m: f64) {
        let n = lows.len();
        assert!(out.capacity() - out.len() >= n, "compact_lows_f32: no room");
        let (av, mv, neg1) = (_mm512_set1_pd(a), _mm512_set1_pd(m), _mm512_set1_pd(-1.0));
        let sign = _mm512_set1_pd(-0.0);
        let sign32 = _mm256_set1_ps(-0.0);
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= n {
            let l = _mm512_loadu_pd(lows.as_ptr().add(i));
            let v = _mm256_xor_ps(f32_up8(_mm512_xor_pd(l, sign)), sign32);
            let z = _mm512_mul_pd(av, _mm512_sub_pd(_mm512_cvtps_pd(v), mv));
            let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(z, neg1);
            _mm256_mask_compressstoreu_ps(dst.add(len).cast(), k, v);
            len += k.count_ones() as usize;
            i += 8;
        }
        for &l in &lows[i..] {
            let v = super::f32_down(l);
            *dst.add(len) = v;
            len += (a * (v as f64 - m) > -1.0) as usize;
        }
        out.set_len(len);
    }

    /// The robust pass's upper-end filter: appends each `u` of `ups` with
    /// `a·u − th > 0` (u widened to f64) to `out`, order kept. Panics unless `out` has room
    /// for all of `ups`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(crate) unsafe fn compact_ups_f32(out: &mut Vec<f32>, ups: &[f32], a: f64, th: f64) {
        let n = ups.len();
        assert!(out.capacity() - out.len() >= n, "compact_ups_f32: no room");
        let (av, tv, z0) = (_mm512_set1_pd(a), _mm512_set1_pd(th), _mm512_setzero_pd());
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= n {
            let u = _mm256_loadu_ps(ups.as_ptr().add(i));
            let z = _mm512_sub_pd(_mm512_mul_pd(av, _mm512_cvtps_pd(u)), tv);
            let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(z, z0);
            _mm256_mask_compressstoreu_ps(dst.add(len).cast(), k, u);
            len += k.count_ones() as usize;
            i += 8;
        }
        for &u in &ups[i..] {
            *dst.add(len) = u;
            len += (a * u as f64 - th > 0.0) as usize;
        }
        out.set_len(len);
    }

    /// Appends the values `v` of `vals` with `a·(v − m) > −1` to `out` (order kept),
    /// without a branch per value (the scalar test, lane by lane: same values). Panics
    /// unless `out` has room for all of `vals` (no reallocation here).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(crate) unsafe fn compact_f64(out: &mut Vec<f64>, vals: &[f64], a: f64, m: f64) {
        let n = vals.len();
        assert!(out.capacity() - out.len() >= n, "compact_f64: no room");
        let (av, mv, neg1) = (_mm512_set1_pd(a), _mm512_set1_pd(m), _mm512_set1_pd(-1.0));
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= n {
            let l = _mm512_loadu_pd(vals.as_ptr().add(i));
            let k = _mm512_cmp_pd_mask::<_CMP_GT_OQ>(_mm512_mul_pd(av, _mm512_sub_pd(l, mv)), neg1);
            _mm512_mask_compressstoreu_pd(dst.add(len).cast(), k, l);
            len += k.count_ones() as usize;
            i += 8;
        }
        for &l in &vals[i..] {
            *dst.add(len) = l;
            len += (a * (l - m) > -1.0) as usize;
        }
        out.set_len(len);
    }
}

#[cfg(all(target_arch = "x86_64", target_feature = "avx2"))]
mod avx2 {
    use super::PageBound;
    use std::arch::x86_64::*;

    /// Head dims up to 64·MAX_BLOCKS take the AVX2 path.
    pub const MAX_BLOCKS: usize = 8;

    /// `_mm256_permutevar8x32_epi32` indices that move the f64 lanes whose mask bit is set
    /// to the front, in lane order (the compress store AVX2 lacks).
    const COMPRESS_PD: [[i32; 8]; 16] = compress_table::<8, 2>();
    /// `_mm_permutevar_ps` indices, the same for four f32 lanes.
    const COMPRESS_PS: [[i32; 4]; 16] = compress_table::<4, 1>();

    const fn compress_table<const W: usize, const E: usize>() -> [[i32; W]; 16] {
        let mut t = [[0i32; W]; 16];
        let mut m = 0;
        while m < 16 {
            let (mut lane, mut o) = (0, 0);
            while lane < 4 {
                if m & (1 << lane) != 0 {
                    let mut e = 0;
                    while e < E {
                        t[m][o] = (lane * E + e) as i32;
                        o += 1;
                        e += 1;
                    }
                }
                lane += 1;
            }
            m += 1;
        }
        t
    }

    /// The token score centres `base + scale·s` of four dots ([`PageBound::interval`]'s
    /// operations: a product, then a sum).
    #[inline(always)]
    unsafe fn centres(pc: &PageBound, sdot: *const i32) -> __m256d {
        let s = _mm256_cvtepi32_pd(_mm_loadu_si128(sdot.cast()));
        _mm256_add_pd(
            _mm256_set1_pd(pc.base),
            _mm256_mul_pd(_mm256_set1_pd(pc.scale), s),
        )
    }

    /// Lower ends: `max(c − half, box_lo)` (`maxpd` returns its second operand unless the
    /// first is larger: the scalar `if l > box_lo { l } else { box_lo }`).
    #[inline(always)]
    unsafe fn lows(pc: &PageBound, c: __m256d) -> __m256d {
        _mm256_max_pd(
            _mm256_sub_pd(c, _mm256_set1_pd(pc.half)),
            _mm256_set1_pd(pc.box_lo),
        )
    }

    /// Upper ends: `min(c + half, box_hi)`.
    #[inline(always)]
    unsafe fn highs(pc: &PageBound, c: __m256d) -> __m256d {
        _mm256_min_pd(
            _mm256_add_pd(c, _mm256_set1_pd(pc.half)),
            _mm256_set1_pd(pc.box_hi),
        )
    }

    /// [`super::f32_up`] of four lanes, the same operations.
    #[inline(always)]
    unsafe fn f32_up4(x: __m256d) -> __m128 {
        let y = _mm256_cvtpd_ps(_mm256_max_pd(x, _mm256_set1_pd(-f32::MAX as f64)));
        let abs = _mm_and_ps(y, _mm_castsi128_ps(_mm_set1_epi32(0x7fff_ffff)));
        _mm_add_ps(
            _mm_add_ps(y, _mm_mul_ps(abs, _mm_set1_ps(f32::EPSILON))),
            _mm_set1_ps(f32::from_bits(1)),
        )
    }

    /// The upper ends (rounded up to f32) of the tokens whose dots are `sdot` (a multiple
    /// of 4 of them) into `up`, and their maximum: [`super::dots_ups`]' loop, same bits.
    #[target_feature(enable = "avx2")]
    pub unsafe fn ups(pc: &PageBound, sdot: &[i32], up: &mut [f32]) -> f32 {
        let n = sdot.len();
        assert!(n.is_multiple_of(4) && up.len() >= n);
        let mut um = _mm_set1_ps(f32::NEG_INFINITY);
        let mut i = 0;
        while i < n {
            let u = f32_up4(highs(pc, centres(pc, sdot.as_ptr().add(i))));
            _mm_storeu_ps(up.as_mut_ptr().add(i), u);
            um = _mm_max_ps(u, um);
            i += 4;
        }
        let x = _mm_max_ps(um, _mm_movehl_ps(um, um));
        _mm_cvtss_f32(_mm_max_ss(x, _mm_movehdup_ps(x)))
    }

    /// [`super::push_lows_dots`]: lower ends kept where `a·(l − m) > −1`, compressed four
    /// at a time (the store writes four lanes, the length advances by those kept; the
    /// caller leaves room for every token).
    #[target_feature(enable = "avx2")]
    pub unsafe fn push_lows_dots(out: &mut Vec<f64>, pc: &PageBound, sdot: &[i32], a: f64, m: f64) {
        let n = sdot.len();
        assert!(
            n.is_multiple_of(4) && out.capacity() - out.len() >= n,
            "push_lows_dots: no room"
        );
        let (av, mv, neg1) = (_mm256_set1_pd(a), _mm256_set1_pd(m), _mm256_set1_pd(-1.0));
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let l = lows(pc, centres(pc, sdot.as_ptr().add(i)));
            let keep = _mm256_cmp_pd::<_CMP_GT_OQ>(_mm256_mul_pd(av, _mm256_sub_pd(l, mv)), neg1);
            let k = _mm256_movemask_pd(keep) as usize;
            let idx = _mm256_loadu_si256(COMPRESS_PD[k].as_ptr().cast());
            let packed = _mm256_permutevar8x32_epi32(_mm256_castpd_si256(l), idx);
            _mm256_storeu_pd(dst.add(len), _mm256_castsi256_pd(packed));
            len += k.count_ones() as usize;
            i += 4;
        }
        out.set_len(len);
    }

    /// [`super::push_lows_dots_f32`] (`lower`: lower ends rounded down to f32, kept where
    /// `a·(v − t) > −1`) and [`super::push_ups_dots_f32`] (upper ends rounded up, kept where
    /// `a·v − t > 0`), compressed as [`push_lows_dots`].
    #[target_feature(enable = "avx2")]
    pub unsafe fn push_ends_dots_f32(
        out: &mut Vec<f32>,
        pc: &PageBound,
        sdot: &[i32],
        a: f64,
        t: f64,
        lower: bool,
    ) {
        let n = sdot.len();
        assert!(
            n.is_multiple_of(4) && out.capacity() - out.len() >= n,
            "push_ends_dots_f32: no room"
        );
        let (av, tv) = (_mm256_set1_pd(a), _mm256_set1_pd(t));
        let (neg1, zero) = (_mm256_set1_pd(-1.0), _mm256_setzero_pd());
        let (sign, sign32) = (_mm256_set1_pd(-0.0), _mm_set1_ps(-0.0));
        let mut len = out.len();
        let dst = out.as_mut_ptr();
        let mut i = 0;
        while i < n {
            let c = centres(pc, sdot.as_ptr().add(i));
            let (v, keep) = if lower {
                // f32_down(l) = −f32_up(−l).
                let v = _mm_xor_ps(f32_up4(_mm256_xor_pd(lows(pc, c), sign)), sign32);
                let z = _mm256_mul_pd(av, _mm256_sub_pd(_mm256_cvtps_pd(v), tv));
                (v, _mm256_cmp_pd::<_CMP_GT_OQ>(z, neg1))
            } else {
                let v = f32_up4(highs(pc, c));
                let z = _mm256_sub_pd(_mm256_mul_pd(av, _mm256_cvtps_pd(v)), tv);
                (v, _mm256_cmp_pd::<_CMP_GT_OQ>(z, zero))
            };
            let k = _mm256_movemask_pd(keep) as usize;
            let idx = _mm_loadu_si128(COMPRESS_PS[k].as_ptr().cast());
            _mm_storeu_ps(dst.add(len), _mm_permutevar_ps(v, idx));
            len += k.count_ones() as usize;
            i += 4;
        }
        out.set_len(len);
    }

    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let x = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let x = _mm_max_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_max_ss(x, _mm_movehdup_ps(x));
        _mm_cvtss_f32(x)
    }

    /// [`super::page_sums`], D a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn page_sums(w: &[f32], lo: &[f32], st: &[f32], am: &[f32]) -> ([f32; 4], f32) {
        let d = w.len();
        assert!(lo.len() >= d && st.len() >= d && am.len() >= d);
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let z = _mm256_setzero_ps();
        let (mut b, mut p, mut m, mut mg, mut mx) = (z, z, z, z, z);
        let mut c = 0;
        while c < d {
            let wv = _mm256_loadu_ps(w.as_ptr().add(c));
            b = _mm256_fmadd_ps(wv, _mm256_loadu_ps(lo.as_ptr().add(c)), b);
            mg = _mm256_fmadd_ps(
                _mm256_and_ps(wv, abs),
                _mm256_loadu_ps(am.as_ptr().add(c)),
                mg,
            );
            let ws = _mm256_mul_ps(wv, _mm256_loadu_ps(st.as_ptr().add(c)));
            p = _mm256_add_ps(p, _mm256_max_ps(ws, z));
            m = _mm256_add_ps(m, _mm256_min_ps(ws, z));
            mx = _mm256_max_ps(mx, _mm256_and_ps(ws, abs));
            c += 8;
        }
        // Four horizontal sums at once: [b, p, m, mg] in the four lanes.
        let h = _mm256_hadd_ps(_mm256_hadd_ps(b, p), _mm256_hadd_ps(m, mg));
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
        let mut out = [0.0f32; 4];
        _mm_storeu_ps(out.as_mut_ptr(), s);
        (out, hmax(mx))
    }

    /// [`super::quantise_all`], D a multiple of 16.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantise_all(w: &[f32], st: &[f32], inv: f32, scale: f32, q: &mut [i16]) -> f32 {
        let d = w.len();
        assert!(st.len() >= d && q.len() >= d);
        let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let magic = _mm256_set1_ps(12_582_912.0);
        let (iv, sc) = (_mm256_set1_ps(inv), _mm256_set1_ps(scale));
        let mut e = _mm256_setzero_ps();
        let mut c = 0;
        while c < d {
            let mut qi = [_mm256_setzero_si256(); 2];
            for (h, qh) in qi.iter_mut().enumerate() {
                let o = c + 8 * h;
                let ws = _mm256_mul_ps(
                    _mm256_loadu_ps(w.as_ptr().add(o)),
                    _mm256_loadu_ps(st.as_ptr().add(o)),
                );
                // ws·inv is exact (a power of two): one rounding, to the nearest integer.
                let y = _mm256_fmadd_ps(ws, iv, magic);
                let qf = _mm256_sub_ps(y, magic);
                *qh = _mm256_sub_epi32(_mm256_castps_si256(y), _mm256_castps_si256(magic));
                // ws − qf·scale is exact (see `quantise`).
                e = _mm256_add_ps(e, _mm256_and_ps(_mm256_fnmadd_ps(qf, sc, ws), abs));
            }
            // packs interleaves 128-bit halves: [0-3, 8-11 | 4-7, 12-15] → natural order.
            let pk = _mm256_permute4x64_epi64::<0xD8>(_mm256_packs_epi32(qi[0], qi[1]));
            _mm256_storeu_si256(q.as_mut_ptr().add(c) as *mut __m256i, pk);
            c += 16;
        }
        let x = _mm_add_ps(_mm256_castps256_ps128(e), _mm256_extractf128_ps::<1>(e));
        let x = _mm_add_ps(x, _mm_movehl_ps(x, x));
        let x = _mm_add_ss(x, _mm_movehdup_ps(x));
        _mm_cvtss_f32(x)
    }

    /// The i16 weights of one 64-channel block arranged as the unpacked nibbles come:
    /// `lo & 15` holds channels 2j (byte j), `lo >> 4` channels 2j + 1; `unpacklo_epi8` of 32
    /// bytes yields bytes 0–7 and 16–23, `unpackhi_epi8` bytes 8–15 and 24–31.
    #[inline(always)]
    unsafe fn block_weights(q: *const i16) -> [__m256i; 4] {
        // Within each 128-bit lane: i16 elements [0, 2, 4, 6, 1, 3, 5, 7].
        let m = _mm256_setr_epi8(
            0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15, 0, 1, 4, 5, 8, 9, 12, 13, 2, 3,
            6, 7, 10, 11, 14, 15,
        );
        let split = |p: *const i16| {
            let v = _mm256_shuffle_epi8(_mm256_loadu_si256(p as *const __m256i), m);
            // [E E | O O] (even channels of the 16, then odd).
            _mm256_permute4x64_epi64::<0xD8>(v)
        };
        let n0 = split(q);
        let n1 = split(q.add(16));
        let n2 = split(q.add(32));
        let n3 = split(q.add(48));
        [
            _mm256_permute2x128_si256::<0x20>(n0, n2),
            _mm256_permute2x128_si256::<0x20>(n1, n3),
            _mm256_permute2x128_si256::<0x31>(n0, n2),
            _mm256_permute2x128_si256::<0x31>(n1, n3),
        ]
    }

    #[inline(always)]
    unsafe fn row_acc(row: *const u8, nb: usize, wt: &[[__m256i; 4]; MAX_BLOCKS]) -> __m256i {
        let m0f = _mm256_set1_epi8(0x0f);
        let z = _mm256_setzero_si256();
        let mut acc = _mm256_setzero_si256();
        for (b, w) in wt.iter().enumerate().take(nb) {
            let v = _mm256_loadu_si256(row.add(32 * b) as *const __m256i);
            let lo = _mm256_and_si256(v, m0f);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m0f);
            let p0 = _mm256_madd_epi16(_mm256_unpacklo_epi8(lo, z), w[0]);
            let p1 = _mm256_madd_epi16(_mm256_unpackhi_epi8(lo, z), w[1]);
            let p2 = _mm256_madd_epi16(_mm256_unpacklo_epi8(hi, z), w[2]);
            let p3 = _mm256_madd_epi16(_mm256_unpackhi_epi8(hi, z), w[3]);
            acc = _mm256_add_epi32(
                acc,
                _mm256_add_epi32(_mm256_add_epi32(p0, p1), _mm256_add_epi32(p2, p3)),
            );
        }
        acc
    }

    /// 4-bit sketch dots, D a multiple of 64 (at most 64·MAX_BLOCKS).
    #[target_feature(enable = "avx2")]
    pub unsafe fn dots_nibbles(q: &[i16], rows: &[u8], rb: usize, out: &mut [i32]) {
        let nb = q.len() / 64;
        let mut wt = [[_mm256_setzero_si256(); 4]; MAX_BLOCKS];
        for (b, w) in wt.iter_mut().enumerate().take(nb) {
            *w = block_weights(q.as_ptr().add(64 * b));
        }
        let n = out.len();
        let base = rows.as_ptr();
        let mut t = 0;
        while t + 8 <= n {
            let a: [__m256i; 8] = std::array::from_fn(|i| row_acc(base.add((t + i) * rb), nb, &wt));
            let s01 = _mm256_hadd_epi32(a[0], a[1]);
            let s23 = _mm256_hadd_epi32(a[2], a[3]);
            let s45 = _mm256_hadd_epi32(a[4], a[5]);
            let s67 = _mm256_hadd_epi32(a[6], a[7]);
            let s0123 = _mm256_hadd_epi32(s01, s23);
            let s4567 = _mm256_hadd_epi32(s45, s67);
            let r = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(s0123, s4567),
                _mm256_permute2x128_si256::<0x31>(s0123, s4567),
            );
            _mm256_storeu_si256(out.as_mut_ptr().add(t) as *mut __m256i, r);
            t += 8;
        }
        while t < n {
            let a = row_acc(base.add(t * rb), nb, &wt);
            let s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256::<1>(a));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0x4E>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0xB1>(s));
            out[t] = _mm_cvtsi128_si32(s);
            t += 1;
        }
    }
}

/// Unpacks one token's sketch codes into `out` (length D).
#[inline]
pub(crate) fn decode_codes(row: &[u8], bits: u32, out: &mut [u8]) {
    match bits {
        8 => out.copy_from_slice(&row[..out.len()]),
        4 => {
            let d = out.len();
            for (pair, &b) in out[..d & !1].chunks_exact_mut(2).zip(row) {
                pair[0] = b & 0xf;
                pair[1] = b >> 4;
            }
            if d % 2 == 1 {
                out[d - 1] = row[d / 2] & 0xf;
            }
        }
        _ => {
            // LSB-first bit stream: one byte in whenever fewer than `bits` bits are buffered.
            let mask = sketch::levels(bits) as u64;
            let (mut acc, mut have, mut next) = (0u64, 0u32, 0usize);
            for o in out.iter_mut() {
                if have < bits {
                    acc |= (row[next] as u64) << have;
                    next += 1;
                    have += 8;
                }
                *o = (acc & mask) as u8;
                acc >>= bits;
                have -= bits;
            }
        }
    }
}

/// `x` rounded to an f32 that is ≥ x (vectorises; at most two ulps above), so an upper
/// bound stays one. x below −f32::MAX (or NaN) gives −f32::MAX; +∞ stays +∞.
#[inline(always)]
pub(crate) fn f32_up(x: f64) -> f32 {
    let y = if x > -f32::MAX as f64 {
        x
    } else {
        -f32::MAX as f64
    } as f32;
    // |y − x| ≤ ulp(y)/2 ≤ |y|·2⁻²⁴; adding |y|·2⁻²³ (exact: a power-of-two scaling) moves
    // y up by at least one ulp after rounding, and the smallest subnormal covers y = 0.
    (y + y.abs() * f32::EPSILON) + f32::from_bits(1)
}

/// `x` rounded to an f32 that is ≤ x (see [`f32_up`]).
#[inline(always)]
pub(crate) fn f32_down(x: f64) -> f32 {
    -f32_up(-x)
}

/// ALiBi bias of position `t` for a query at `q_pos`, exactly as the oracle forms it.
#[inline]
pub(crate) fn alibi(slope: f32, t: usize, q_pos: f64) -> f64 {
    slope as f64 * (t as f64 - q_pos)
}

/// Largest ALiBi bias over positions `first..=last`.
#[inline]
pub(crate) fn alibi_max(slope: f32, first: usize, last: usize, q_pos: f64) -> f64 {
    alibi(slope, first, q_pos).max(alibi(slope, last, q_pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference page and token bounds for `scripts/robust_host_check.py` (the GPU port in
    /// `gpu/kernels/robust_bound.cuh` compiled as host C++): with `ENTMAXKV_ROBUST_REF` set,
    /// writes, per case, the inputs (D, bits, rows, query, slope, position offset, sketch
    /// bytes) and the CPU's outputs (box ends, quantised weights, every token's f32 upper end
    /// and f64 lower end) as hex bits, one case per line. Ignored: a dump, not a check.
    #[test]
    #[ignore]
    fn robust_device_reference_dump() {
        use std::fmt::Write as _;
        let Ok(path) = std::env::var("ENTMAXKV_ROBUST_REF") else {
            return;
        };
        let mut rng = Rng(0x5eed);
        let mut out = String::new();
        let fast = has_avx512();
        let ps = 16usize;
        let mut case = 0usize;
        for &d in &[64usize, 128, 40, 36, 256, 8] {
            for &bits in &[0u32, 1, 2, 3, 4, 5, 7, 8] {
                for rep in 0..6 {
                    case += 1;
                    // Magnitudes from tiny to large; some channels with hi == lo, a zero
                    // query channel, and (rep 5) a non-finite row.
                    let mag = [1e-3f32, 0.1, 1.0, 10.0, 300.0, 1.0][rep];
                    let mut lo = vec![0f32; d];
                    let mut hi = vec![0f32; d];
                    let mut w = vec![0f32; d];
                    for c in 0..d {
                        let a = rng.sym() * mag;
                        let b = rng.sym() * mag;
                        lo[c] = a.min(b);
                        hi[c] = if c % 11 == 3 { lo[c] } else { a.max(b) };
                        w[c] = if c % 13 == 5 { 0.0 } else { rng.sym() * 0.3 };
                    }
                    if rep == 5 && case.is_multiple_of(2) {
                        hi[d / 2] = f32::INFINITY;
                    }
                    let slope = if rep % 2 == 1 {
                        -0.0625f32 * rng.next() as f32
                    } else {
                        0.0
                    };
                    let s0 = -((rng.next() * 5000.0).floor() * ps as f64);
                    let rb = sketch::row_bytes(d, bits);
                    let sk: Vec<u8> = (0..ps * rb.max(1))
                        .map(|_| (rng.next() * 256.0) as u8)
                        .collect();
                    let mut rows = PageRows::new(d);
                    rows.set(&lo, &hi, bits);
                    let mut q = vec![0i16; d];
                    let pb = page_bound(&w, &rows, true, &mut q);
                    let mut sdot = vec![0i32; ps];
                    let mut codes = vec![0u8; d];
                    let mut up = vec![0f32; ps];
                    let mut lw = vec![0f64; ps];
                    let sk_use = if bits > 0 { &sk[..ps * rb] } else { &[][..] };
                    tokens_from(
                        fast,
                        &pb,
                        &q,
                        sk_use,
                        rb,
                        bits,
                        slope as f64,
                        s0,
                        &mut sdot,
                        &mut codes,
                        &mut up,
                        &mut lw,
                    );
                    let hx = |v: &[f32]| {
                        v.iter()
                            .map(|x| format!("{:08x}", x.to_bits()))
                            .collect::<Vec<_>>()
                            .join(",")
                    };
                    let _ = write!(
                        out,
                        "{d} {bits} {ps} {:08x} {:016x} ",
                        slope.to_bits(),
                        s0.to_bits()
                    );
                    let _ = write!(out, "{} {} {} ", hx(&lo), hx(&hi), hx(&w));
                    let skh: String = sk.iter().map(|b| format!("{b:02x}")).collect();
                    let _ = write!(out, "{skh} ");
                    let _ = write!(
                        out,
                        "{:016x} {:016x} ",
                        pb.box_lo.to_bits(),
                        pb.box_hi.to_bits()
                    );
                    let qh: Vec<String> = q.iter().map(|x| format!("{:04x}", *x as u16)).collect();
                    let _ = write!(out, "{} {} ", qh.join(","), hx(&up));
                    let lh: Vec<String> =
                        lw.iter().map(|x| format!("{:016x}", x.to_bits())).collect();
                    let _ = writeln!(out, "{}", lh.join(","));
                }
            }
        }
        std::fs::write(&path, out).unwrap();
        eprintln!("robust_device_reference_dump: {case} cases into {path} (avx512 {fast})");
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn sym(&mut self) -> f32 {
            (self.next() * 2.0 - 1.0) as f32
        }
    }

    #[test]
    fn decode_matches_get_code() {
        for bits in 1..=8u32 {
            let d = 19;
            let rb = sketch::row_bytes(d, bits);
            let row: Vec<u8> = (0..rb).map(|i| (i * 97 + 13) as u8).collect();
            let mut out = vec![0u8; d];
            decode_codes(&row, bits, &mut out);
            for c in 0..d {
                assert_eq!(
                    out[c] as u32,
                    sketch::get_code(&row, c, bits),
                    "bits {bits}"
                );
            }
        }
    }

    #[test]
    fn directed_f32_rounding() {
        let mut r = Rng(3);
        let specials = [
            0.0,
            -0.0,
            1e-46,
            -1e-46,
            1e-40,
            f64::MAX,
            -f64::MAX,
            f32::MAX as f64,
            -(f32::MAX as f64) * 1.5,
            1.0,
            -1.0,
        ];
        let rnd: Vec<f64> = (0..10000)
            .map(|_| (r.next() - 0.5) * 10f64.powf(r.next() * 80.0 - 40.0))
            .collect();
        for &x in specials.iter().chain(&rnd) {
            assert!(f32_up(x) as f64 >= x, "{x}");
            assert!(f32_down(x) as f64 <= x, "{x}");
            if x.abs() < 1e30 && x.abs() > 1e-30 {
                assert!((f32_up(x) as f64 - x).abs() <= 3.0 * x.abs() * f32::EPSILON as f64);
            }
        }
    }

    /// The AVX2 kernel (where compiled) against the portable one, every width and shape.
    #[test]
    fn sketch_dots_paths_agree() {
        let mut r = Rng(11);
        for bits in 1..=8u32 {
            for d in [4usize, 7, 64, 128, 192] {
                let rb = sketch::row_bytes(d, bits);
                let n = 21;
                let rows: Vec<u8> = (0..n * rb).map(|_| (r.next() * 256.0) as u8).collect();
                let qm = q_max(d, bits) as i32;
                let q: Vec<i16> = (0..d)
                    .map(|i| match i % 5 {
                        0 => qm as i16,
                        1 => -qm as i16,
                        _ => ((r.next() * 2.0 - 1.0) * qm as f64) as i16,
                    })
                    .collect();
                let mut fast = vec![0i32; n];
                let mut slow = vec![0i32; n];
                let mut codes = vec![0u8; d];
                sketch_dots(&q, &rows, rb, bits, &mut fast, &mut codes);
                sketch_dots_portable(&q, &rows, rb, bits, &mut slow, &mut codes);
                for t in 0..n {
                    let row = &rows[t * rb..(t + 1) * rb];
                    let exact: i64 = (0..d)
                        .map(|c| q[c] as i64 * sketch::get_code(row, c, bits) as i64)
                        .sum();
                    assert_eq!(slow[t] as i64, exact, "bits {bits} d {d} t {t}");
                }
                assert_eq!(fast, slow, "bits {bits} d {d}");
            }
        }
    }

    /// Keys of one page under `kind`: 0 iid, 1 one huge channel, 2 tiny magnitudes,
    /// 3 constant channels (zero range), 4 mixed scales, 5 large magnitudes.
    fn page_keys(r: &mut Rng, kind: u32, ps: usize, d: usize) -> Vec<Vec<f32>> {
        let big = (r.next() * d as f64) as usize;
        (0..ps)
            .map(|_| {
                (0..d)
                    .map(|c| match kind {
                        0 => r.sym() * 3.0,
                        1 => r.sym() * if c == big { 500.0 } else { 1.0 },
                        2 => r.sym() * 1e-30,
                        3 => {
                            if c % 2 == 0 {
                                0.75
                            } else {
                                r.sym()
                            }
                        }
                        4 => r.sym() * 10f32.powi((c % 7) as i32 - 3),
                        _ => r.sym() * 1e15,
                    })
                    .collect()
            })
            .collect()
    }

    /// The f32/integer bounds contain the exact score of every key (computed exactly: f32
    /// products are exact in f64, summed with a compensated sum), and the f64 reference
    /// interval [`sketch::dot_bounds`] overlaps them; on plain keys they are barely wider.
    #[test]
    fn bounds_enclose_keys_and_track_the_f64_reference() {
        let mut r = Rng(7);
        let mut worst_ratio = 0.0f64;
        for trial in 0..400 {
            let kind = trial % 6;
            let d = [4usize, 16, 33, 64, 128][trial / 6 % 5];
            let bits = [1u32, 2, 3, 4, 4, 8][trial / 30 % 6];
            let keys = page_keys(&mut r, kind as u32, 16, d);
            let lo: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::INFINITY, f32::min))
                .collect();
            let hi: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::NEG_INFINITY, f32::max))
                .collect();
            let w: Vec<f32> = (0..d)
                .map(|c| {
                    let x = r.sym();
                    if kind == 4 {
                        x * 10f32.powi(3 - (c % 7) as i32)
                    } else {
                        x
                    }
                })
                .collect();
            let mut rows = PageRows::new(d);
            rows.set(&lo, &hi, bits);
            let mut q = vec![0i16; d];
            let pb = page_bound(&w, &rows, true, &mut q);
            let pbox = page_bound(&w, &rows, false, &mut q.clone());
            let rb = sketch::row_bytes(d, bits);
            let mut row = vec![0u8; rb];
            let mut s = [0i32; 1];
            let mut codes = vec![0u8; d];
            for k in &keys {
                sketch::encode_row(k, &lo, &hi, bits, &mut row);
                sketch_dots(&q, &row, rb, bits, &mut s, &mut codes);
                let (l, u) = pb.interval(s[0]);
                let (mut sum, mut comp) = (0.0f64, 0.0f64);
                for c in 0..d {
                    // Neumaier summation of exact products.
                    let x = w[c] as f64 * k[c] as f64;
                    let t = sum + x;
                    comp += if sum.abs() >= x.abs() {
                        (sum - t) + x
                    } else {
                        (x - t) + sum
                    };
                    sum = t;
                }
                let exact = sum + comp;
                assert!(
                    l <= exact && exact <= u,
                    "kind {kind} d {d} bits {bits}: {l} {exact} {u}"
                );
                let (bl, bu) = pbox.interval(12345);
                assert!(bl <= exact && exact <= bu);
                assert!(pbox.box_lo <= l && u <= pbox.box_hi);
                let (rl, ru) = sketch::dot_bounds(&w, &row, &lo, &hi, bits);
                assert!(rl <= u && l <= ru, "disjoint from the f64 reference");
                if kind == 0 && (ru - rl) > 0.0 {
                    worst_ratio = worst_ratio.max((u - l) / (ru - rl));
                }
            }
        }
        assert!(
            worst_ratio < 1.02,
            "f32 bounds {worst_ratio}× the f64 width"
        );
    }

    /// Min/max rows of `keys` written into `stats` at `base` (outward rounding of the
    /// statistics dtype, as the cache does), and the f32 rows read back.
    fn store_rows(
        stats: &mut crate::stats::StatsStorage,
        base: usize,
        keys: &[Vec<f32>],
    ) -> (Vec<f32>, Vec<f32>) {
        use crate::dtype::KvElem;
        let d = keys[0].len();
        let lo: Vec<f32> = (0..d)
            .map(|c| keys.iter().map(|k| k[c]).fold(f32::INFINITY, f32::min))
            .collect();
        let hi: Vec<f32> = (0..d)
            .map(|c| keys.iter().map(|k| k[c]).fold(f32::NEG_INFINITY, f32::max))
            .collect();
        fn put<T: KvElem>(a: &mut [Vec<T>; 4], base: usize, lo: &[f32], hi: &[f32]) {
            for c in 0..lo.len() {
                a[0][base + c] = T::from_f32_down(lo[c]);
                a[1][base + c] = T::from_f32_up(hi[c]);
            }
        }
        match stats {
            crate::stats::StatsStorage::F32(a) => put(a, base, &lo, &hi),
            crate::stats::StatsStorage::F16(a) => put(a, base, &lo, &hi),
            crate::stats::StatsStorage::Bf16(a) => put(a, base, &lo, &hi),
        }
        let (mut l, mut h) = (vec![0.0f32; d], vec![0.0f32; d]);
        stats.read_row(Stat::Min, base, &mut l);
        stats.read_row(Stat::Max, base, &mut h);
        (l, h)
    }

    /// The AVX-512 kernels (where the CPU has them) against the AVX2/portable path, bit for
    /// bit, and both against the exact scores and the scalar f64 reference
    /// [`sketch::dot_bounds`]: rows of every statistics dtype (outlier channels, zero-width
    /// channels, tiny and huge magnitudes, infinities), every head dim the fused kernel
    /// takes and some it does not, ALiBi, several page sizes.
    #[test]
    fn avx512_kernels_equal_the_fallback_bitwise() {
        use crate::DType;
        let fast = has_avx512();
        if !fast {
            eprintln!("no AVX-512 (F/BW/VL/DQ/VNNI): fallback path only");
        }
        let mut r = Rng(99);
        let mut fused = 0;
        for trial in 0..360 {
            let kind = trial % 6;
            let dtype = [DType::F16, DType::F32, DType::Bf16][trial / 6 % 3];
            let d = [64usize, 128, 64, 192, 256, 512, 48, 80][trial / 18 % 8];
            let ps = [16usize, 32, 16, 48, 8][trial / 144 % 5];
            let bits = if trial % 11 == 10 {
                [1u32, 2, 3, 8][trial / 11 % 4]
            } else {
                4
            };
            let keys = page_keys(&mut r, kind as u32, ps, d);
            let mut stats = crate::stats::StatsStorage::new(dtype, 3 * d);
            let base = d;
            let (lo, hi) = store_rows(&mut stats, base, &keys);
            if trial % 13 == 12 {
                // A non-finite row (the interval is then unbounded on both paths).
                let mut bad = keys.clone();
                bad[0][d / 2] = f32::INFINITY;
                store_rows(&mut stats, base, &bad);
            }
            let mut slow_rows = PageRows::new(d);
            slow_rows.load(&stats, base, d, bits);
            let mut fast_rows = PageRows::new(d);
            fast_rows.load_fast(fast, &stats, base, d, bits);
            for (x, y) in [
                (&slow_rows.lo, &fast_rows.lo),
                (&slow_rows.hi, &fast_rows.hi),
                (&slow_rows.step, &fast_rows.step),
                (&slow_rows.amax, &fast_rows.amax),
            ] {
                let bx: Vec<u32> = x[..d].iter().map(|v| v.to_bits()).collect();
                let by: Vec<u32> = y[..d].iter().map(|v| v.to_bits()).collect();
                assert_eq!(bx, by, "rows: trial {trial} dtype {dtype:?} d {d}");
            }
            assert_eq!(slow_rows.finite, fast_rows.finite);
            let w: Vec<f32> = (0..d)
                .map(|c| {
                    let x = r.sym();
                    if kind == 4 {
                        x * 10f32.powi(3 - (c % 7) as i32)
                    } else {
                        x
                    }
                })
                .collect();
            let rb = sketch::row_bytes(d, bits) + (trial % 3 == 2) as usize;
            let mut sk = vec![0u8; ps * rb];
            for (t, k) in keys.iter().enumerate() {
                sketch::encode_row(
                    k,
                    &lo,
                    &hi,
                    bits,
                    &mut sk[t * rb..t * rb + sketch::row_bytes(d, bits)],
                );
            }
            let slope = if trial % 4 == 3 {
                -0.0625 * (trial % 5) as f64
            } else {
                0.0
            };
            let s0 = -((trial * 37) as f64);
            let run = |fast: bool, rows: &PageRows| {
                let (mut qw, mut sdot, mut codes) = (vec![0i16; d], vec![0i32; ps], vec![0u8; d]);
                let (mut up, mut low) = (vec![0f32; ps], vec![0f64; ps]);
                let (pb, u, l) = head_tokens(
                    fast, &w, rows, &sk, rb, slope, s0, &mut qw, &mut sdot, &mut codes, &mut up,
                    &mut low,
                );
                (pb, u, l, qw, sdot, up, low)
            };
            let (pb0, u0, l0, q0, s0v, up0, lo0) = run(false, &slow_rows);
            let (pb1, u1, l1, q1, s1v, up1, lo1) = run(fast, &fast_rows);
            fused += (fast && fused_fits(bits, d, ps)) as usize;
            assert_eq!(pb0, pb1, "trial {trial}");
            assert_eq!(q0, q1);
            assert_eq!(s0v, s1v, "dots: trial {trial} d {d} bits {bits}");
            assert_eq!(u0.to_bits(), u1.to_bits(), "trial {trial}");
            assert_eq!(l0.to_bits(), l1.to_bits(), "trial {trial}");
            let bu: Vec<u32> = up0.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bu, up1.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            let bl: Vec<u64> = lo0.iter().map(|v| v.to_bits()).collect();
            assert_eq!(bl, lo1.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
            // Both enclose the exact score (ALiBi added) and meet the f64 reference.
            if slow_rows.finite && trial % 13 != 12 {
                for (t, k) in keys.iter().enumerate() {
                    let exact: f64 = w.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let al = slope * (s0 + t as f64);
                    let tol = 1e-12
                        * w.iter()
                            .zip(k)
                            .map(|(a, b)| (*a as f64 * *b as f64).abs())
                            .sum::<f64>();
                    assert!(
                        lo1[t] <= exact + al + tol && exact + al - tol <= up1[t] as f64,
                        "trial {trial} t {t}: {} {} {}",
                        lo1[t],
                        exact + al,
                        up1[t]
                    );
                    let row = &sk[t * rb..(t + 1) * rb];
                    let (rl, ru) = sketch::dot_bounds(&w, row, &lo, &hi, bits);
                    assert!(rl + al <= up1[t] as f64 && lo1[t] <= ru + al);
                }
            }
            // The vectorised lower-end filter keeps exactly the scalar's values.
            let (a, m) = (0.5, l0 - 1.5);
            let mut v0: Vec<f64> = Vec::with_capacity(4 * ps);
            v0.push(1.0);
            let mut v1: Vec<f64> = Vec::with_capacity(4 * ps);
            v1.push(1.0);
            for &l in &lo0 {
                if a * (l - m) > -1.0 {
                    v0.push(l);
                }
            }
            #[cfg(target_arch = "x86_64")]
            if fast {
                assert!(v1.capacity() - v1.len() >= lo0.len());
                // SAFETY: AVX-512 present; room for every value (just checked).
                unsafe { avx512::compact_f64(&mut v1, &lo0, a, m) };
                assert_eq!(v0, v1);
                // The robust pass's f32 filters (lower ends rounded down, upper ends).
                let mut lows = lo0.clone();
                if trial % 5 == 0 {
                    lows[0] = f64::MAX;
                    lows[1] = -f64::MAX;
                    lows[2] = 1e-300;
                    lows[3] = f64::NEG_INFINITY;
                }
                let m32 = f32_down(l0) as f64 - 1.25;
                let mut w0: Vec<f32> = Vec::with_capacity(ps);
                for &l in &lows {
                    let v = f32_down(l);
                    if a * (v as f64 - m32) > -1.0 {
                        w0.push(v);
                    }
                }
                let mut w1: Vec<f32> = Vec::with_capacity(ps);
                // SAFETY: AVX-512 present; room for every value.
                unsafe { avx512::compact_lows_f32(&mut w1, &lows, a, m32) };
                let b0: Vec<u32> = w0.iter().map(|x| x.to_bits()).collect();
                assert_eq!(
                    b0,
                    w1.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    "trial {trial}"
                );
                let th = a * u0 as f64 - 0.75;
                let u0v: Vec<f32> = up0
                    .iter()
                    .copied()
                    .filter(|&u| a * u as f64 - th > 0.0)
                    .collect();
                let mut u1v: Vec<f32> = Vec::with_capacity(ps);
                // SAFETY: as above.
                unsafe { avx512::compact_ups_f32(&mut u1v, &up0, a, th) };
                assert_eq!(u0v, u1v);
            }
        }
        if fast {
            assert!(fused > 100, "the fused kernel ran {fused} times");
        }
    }

    /// The lazy token path ([`dots_max`], then the ends of the largest dot, [`upper_end`],
    /// [`above_mask_dots`], the `push_*_dots` filters) gives, without ALiBi, exactly the
    /// values of the eager one ([`tokens_from`] then the filters on its ends), on the
    /// AVX-512 and the fallback kernels alike: rows of every kind, widths, page sizes.
    #[test]
    fn lazy_ends_equal_token_ends() {
        let fast = has_avx512();
        let mut r = Rng(7);
        for trial in 0..240 {
            let kind = (trial % 6) as u32;
            let d = [64usize, 128, 64, 192, 48, 512][trial / 6 % 6];
            let ps = [16usize, 32, 16, 8, 48][trial / 36 % 5];
            let bits = [4u32, 4, 4, 2, 8, 1][trial / 7 % 6];
            let keys = page_keys(&mut r, kind, ps, d);
            let lo: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::INFINITY, f32::min))
                .collect();
            let hi: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::NEG_INFINITY, f32::max))
                .collect();
            let mut rows = PageRows::new(d);
            rows.set(&lo, &hi, bits);
            if trial % 29 == 28 {
                rows.finite = false;
            }
            let w: Vec<f32> = (0..d).map(|_| r.sym()).collect();
            let rb = sketch::row_bytes(d, bits);
            let mut sk = vec![0u8; ps * rb];
            for (t, k) in keys.iter().enumerate() {
                sketch::encode_row(k, &lo, &hi, bits, &mut sk[t * rb..(t + 1) * rb]);
            }
            let s0 = -((trial * 53 + 1000) as f64);
            let mut qw = vec![0i16; d];
            let pb = page_bound(&w, &rows, true, &mut qw);
            let mut codes = vec![0u8; d];
            let (mut sd0, mut up0, mut lo0) = (vec![0i32; ps], vec![0f32; ps], vec![0f64; ps]);
            let (u0, l0) = tokens_from(
                false, &pb, &qw, &sk, rb, bits, 0.0, s0, &mut sd0, &mut codes, &mut up0, &mut lo0,
            );
            for path in [false, fast] {
                let mut sd1 = vec![0i32; ps];
                let smax = dots_max(path, &qw, &sk, rb, bits, &mut sd1, &mut codes);
                assert_eq!(sd0, sd1, "trial {trial}");
                let (l1, u1) = pb.interval(smax);
                assert_eq!(f32_up(u1).to_bits(), u0.to_bits(), "trial {trial}");
                assert_eq!(l1.to_bits(), l0.to_bits(), "trial {trial}");
                let (mut lo2, mut up2) = (vec![0f64; ps], vec![0f32; ps]);
                ends_no_alibi(&pb, &sd1, &mut lo2, Some(&mut up2));
                let bits_of = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits_of(&up2), bits_of(&up0));
                assert_eq!(
                    lo2.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                    lo0.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                );
                // The upper ends and their maximum with the dots in one kernel.
                let (mut sd2, mut up3) = (vec![0i32; ps], vec![0f32; ps]);
                let (um, sm) = dots_ups(
                    path, &pb, &qw, &sk, rb, bits, &mut sd2, &mut codes, &mut up3,
                );
                assert_eq!(sd2, sd0, "trial {trial}");
                assert_eq!(sm, smax);
                assert_eq!(um.to_bits(), u0.to_bits(), "trial {trial}");
                assert_eq!(bits_of(&up3), bits_of(&up0), "trial {trial}");
                // The filters against the eager ends (a leading value checks the append).
                for (a, m) in [(0.5, l0 - 1.5), (0.5, l0), (2.0, l0 - 0.1), (0.0, l0)] {
                    let mut want = vec![9.0f64];
                    want.extend(lo0.iter().copied().filter(|&l| a * (l - m) > -1.0));
                    let mut got = Vec::with_capacity(ps + 1);
                    got.push(9.0f64);
                    push_lows_dots(path, &mut got, &pb, &sd1, a, m);
                    assert_eq!(
                        want.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        got.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "trial {trial}"
                    );
                    let m32 = f32_down(m) as f64;
                    let mut want = vec![9.0f32];
                    want.extend(
                        lo0.iter()
                            .map(|&l| f32_down(l))
                            .filter(|&v| a * (v as f64 - m32) > -1.0),
                    );
                    let mut got = Vec::with_capacity(ps + 1);
                    got.push(9.0f32);
                    push_lows_dots_f32(path, &mut got, &pb, &sd1, a, m32);
                    assert_eq!(bits_of(&want), bits_of(&got), "trial {trial}");
                    let th = a * u0 as f64 - 0.25;
                    let mut want = vec![9.0f32];
                    want.extend(up0.iter().copied().filter(|&u| a * u as f64 - th > 0.0));
                    let mut got = Vec::with_capacity(ps + 1);
                    got.push(9.0f32);
                    push_ups_dots_f32(path, &mut got, &pb, &sd1, a, th);
                    assert_eq!(bits_of(&want), bits_of(&got), "trial {trial}");
                }
            }
        }
    }

    /// [`page_bounds`] (heads batched stage by stage) equals [`page_bound`] per head, bit
    /// for bit: bounds and quantised weights, rows of every kind (non-finite, overflowing,
    /// zero-width, tiny, huge), every sketch width and none.
    #[test]
    fn batched_page_bounds_equal_page_bound() {
        let mut r = Rng(21);
        for trial in 0..200 {
            let d = [64usize, 32, 16, 128][trial % 4];
            let bits = [4u32, 4, 1, 2, 3, 8, 0][trial / 4 % 7];
            let n = 1 + trial % BATCH;
            let rows: Vec<PageRows> = (0..n)
                .map(|i| {
                    let keys = page_keys(&mut r, ((trial + i) % 6) as u32, 16, d);
                    let mut lo: Vec<f32> = (0..d)
                        .map(|c| keys.iter().map(|k| k[c]).fold(f32::INFINITY, f32::min))
                        .collect();
                    let hi: Vec<f32> = (0..d)
                        .map(|c| keys.iter().map(|k| k[c]).fold(f32::NEG_INFINITY, f32::max))
                        .collect();
                    if (trial + i) % 17 == 5 {
                        lo[1] = f32::NEG_INFINITY;
                    }
                    let mut pr = PageRows::new(d);
                    pr.set(&lo, &hi, bits);
                    pr
                })
                .collect();
            let ws: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    (0..d)
                        .map(|_| r.sym() * if (trial + i) % 23 == 7 { 1e30 } else { 1.0 })
                        .collect()
                })
                .collect();
            let mut q0 = vec![0i16; n * d];
            let want: Vec<PageBound> = (0..n)
                .map(|i| page_bound(&ws[i], &rows[i], true, &mut q0[i * d..(i + 1) * d]))
                .collect();
            let mut q1 = vec![5i16; n * d];
            let units: Vec<BoundUnit> = (0..n)
                .map(|i| BoundUnit {
                    w: ws[i].as_ptr(),
                    rows: &rows[i],
                    q: q1[i * d..].as_mut_ptr(),
                })
                .collect();
            let mut got = vec![PageBound::UNBOUNDED; n];
            // SAFETY: D-long queries, rows and disjoint weight buffers.
            unsafe { page_bounds(d, &units, &mut got) };
            assert_eq!(want, got, "trial {trial}");
            assert_eq!(q0, q1, "trial {trial}");
        }
    }

    #[test]
    fn non_finite_rows_are_unbounded() {
        let d = 8;
        let mut rows = PageRows::new(d);
        let mut hi = vec![1.0f32; d];
        hi[3] = f32::INFINITY;
        rows.set(&[0.0; 8], &hi, 4);
        let mut q = vec![0i16; d];
        let pb = page_bound(&[1.0; 8], &rows, true, &mut q);
        assert_eq!(pb.interval(7), (f64::NEG_INFINITY, f64::INFINITY));
        // Finite rows whose f32 products overflow.
        rows.set(&[-1e30; 8], &[1e30; 8], 4);
        let pb = page_bound(&[1e30; 8], &rows, true, &mut q);
        assert_eq!(pb.interval(7), (f64::NEG_INFINITY, f64::INFINITY));
    }

    /// Timings of the kernel's pieces on in-cache data (run with `--ignored --nocapture`):
    /// the fastest of the repetitions, robust to other load on the machine.
    #[test]
    #[ignore]
    fn kernel_timing() {
        use std::time::Instant;
        let (d, ps, pages, bits) = (64usize, 16usize, 1024usize, 4u32);
        let mut r = Rng(5);
        let rb = sketch::row_bytes(d, bits);
        let los: Vec<Vec<f32>> = (0..pages)
            .map(|_| (0..d).map(|_| -1.5 - r.sym()).collect())
            .collect();
        let his: Vec<Vec<f32>> = (0..pages)
            .map(|_| (0..d).map(|_| 1.5 + r.sym()).collect())
            .collect();
        let sk: Vec<u8> = (0..pages * ps * rb)
            .map(|_| (r.next() * 256.0) as u8)
            .collect();
        let w: Vec<f32> = (0..d).map(|_| r.sym() * 0.1).collect();
        let mut rows: Vec<PageRows> = (0..pages).map(|_| PageRows::new(d)).collect();
        for i in 0..pages {
            rows[i].set(&los[i], &his[i], bits);
        }
        let mut q = vec![0i16; d];
        let mut sd = vec![0i32; ps];
        let mut codes = vec![0u8; d];
        let (mut up, mut lo) = (vec![0f32; ps], vec![0f64; ps]);
        let reps = 200;
        let mut acc = 0.0;
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for rw in &rows {
                acc += page_bound(&w, rw, true, &mut q).half;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let pb_ns = best * 1e9 / pages as f64;
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                sketch_dots(&q, &sk[i * ps * rb..], rb, bits, &mut sd, &mut codes);
                acc += sd[3] as f64;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let sd_ns = best * 1e9 / pages as f64;
        let pc = page_bound(&w, &rows[0], true, &mut q);
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                let (a, b) = token_ends(&pc, &sd, 0.0, -(i as f64), &mut up, &mut lo);
                acc += a as f64 + b;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let te_ns = best * 1e9 / pages as f64;
        let stats = crate::stats::StatsStorage::new(crate::DType::F16, pages * d);
        let mut rr = PageRows::new(d);
        for i in 0..pages {
            rr.load(&stats, i * d, d, bits);
        }
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                rr.load(&stats, i * d, d, bits);
                acc += rr.step[5] as f64;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ld_ns = best * 1e9 / pages as f64;
        let fast = has_avx512();
        let mut qb = vec![0i16; BATCH * d];
        let mut pbo = [PageBound::UNBOUNDED; BATCH];
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for ch in rows.chunks(BATCH) {
                let units: [BoundUnit; BATCH] = std::array::from_fn(|i| BoundUnit {
                    w: w.as_ptr(),
                    rows: &ch[i.min(ch.len() - 1)],
                    q: qb[i * d..].as_mut_ptr(),
                });
                // SAFETY: D-long query, rows, disjoint weight buffers.
                unsafe { page_bounds(d, &units[..ch.len()], &mut pbo) };
                acc += pbo[3].half;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let pbb_ns = best * 1e9 / pages as f64;
        println!("page_bounds (batched) {pbb_ns:.1} ns");
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                rr.load_fast(fast, &stats, i * d, d, bits);
                acc += rr.step[5] as f64;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let ldf_ns = best * 1e9 / pages as f64;
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                let (a, b) = tokens_from(
                    fast,
                    &pc,
                    &q,
                    &sk[i * ps * rb..],
                    rb,
                    bits,
                    0.0,
                    -(i as f64),
                    &mut sd,
                    &mut codes,
                    &mut up,
                    &mut lo,
                );
                acc += a as f64 + b;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        let tf_ns = best * 1e9 / pages as f64;
        let mut best = f64::INFINITY;
        for _ in 0..reps {
            let t = Instant::now();
            for i in 0..pages {
                let m = dots_max(fast, &q, &sk[i * ps * rb..], rb, bits, &mut sd, &mut codes);
                acc += m as f64;
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "dots_max (fast: {fast}) {:.1} ns",
            best * 1e9 / pages as f64
        );
        println!(
            "per page (D {d}, {ps} tokens): page_bound {pb_ns:.1} ns, sketch_dots {sd_ns:.1} ns, token_ends {te_ns:.1} ns, rows load {ld_ns:.1} ns; fast ({fast}): rows {ldf_ns:.1} ns, dots+ends {tf_ns:.1} ns ({acc})"
        );
    }
}
