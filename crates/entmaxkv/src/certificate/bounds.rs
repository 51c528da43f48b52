//! Score bounds of one page and of its sketched tokens, for one query head.

use super::BOUND_ERR;
use crate::attention::cpu::dot;
use crate::stats::sketch;

/// Per-(page, query head) constants of the score bounds (score units, scale applied, no
/// ALiBi): the box bounds, the magnitude `Σ|w_d|·max(|kmin_d|, |kmax_d|)`, and the sketch
/// centre offset `Σ w_d·kmin_d`, radius `Σ|w_d|·step_d/2` and the rounding allowance of the
/// per-token f32 dot `Σ fl(w_d·step_d)·code_d`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageConsts {
    pub box_lo: f64,
    pub box_hi: f64,
    pub mag: f64,
    pub base: f64,
    pub rad: f64,
    pub dot_err: f64,
}

impl PageConsts {
    /// Absolute widening of every bound of this page (see [`BOUND_ERR`]).
    #[inline]
    pub fn err(&self) -> f64 {
        BOUND_ERR * self.mag
    }
}

/// Box bounds and magnitude only (no sketch).
#[inline]
pub(crate) fn page_box(w: &[f32], lo: &[f32], hi: &[f32]) -> PageConsts {
    let (mut box_lo, mut box_hi, mut mag) = (0.0f64, 0.0f64, 0.0f64);
    for c in 0..w.len() {
        let wc = w[c] as f64;
        let a = wc * lo[c] as f64;
        let b = wc * hi[c] as f64;
        box_lo += a.min(b);
        box_hi += a.max(b);
        mag += wc.abs() * (lo[c].abs().max(hi[c].abs())) as f64;
    }
    PageConsts {
        box_lo,
        box_hi,
        mag,
        base: 0.0,
        rad: 0.0,
        dot_err: 0.0,
    }
}

/// Box bounds, magnitude and the sketch constants; `ws` (length D) receives
/// `fl32(w_d·step_d)`, so a token's centre is one f32 dot with its codes. That dot's error
/// (any summation order, FMA or not, plus the rounding of `ws`) is at most
/// `(D + 4)·2⁻²⁴·Σ_d |w_d·step_d|·code_d ≤ (D + 4)·2⁻²⁴·(2^b − 1)·Σ_d |w_d·step_d|`,
/// carried in `dot_err`: about 1e-4 of the radius at D = 64, b = 4.
#[inline]
pub(crate) fn page_consts(
    w: &[f32],
    lo: &[f32],
    hi: &[f32],
    bits: u32,
    ws: &mut [f32],
) -> PageConsts {
    let mut pc = page_box(w, lo, hi);
    let (mut base, mut rad) = (0.0f64, 0.0f64);
    for c in 0..w.len() {
        let wc = w[c] as f64;
        let s = sketch::step(lo[c], hi[c], bits);
        base += wc * lo[c] as f64;
        let x = wc * s;
        ws[c] = x as f32;
        rad += x.abs();
    }
    pc.base = base;
    pc.rad = 0.5 * rad;
    let u = f32::EPSILON as f64 * 0.5;
    pc.dot_err = (w.len() as f64 + 4.0) * u * sketch::levels(bits) as f64 * rad * (1.0 + 4.0 * u);
    pc
}

/// Unpacks one token's sketch codes into `out` (length D) as f32 (exact: codes ≤ 255).
#[inline]
pub(crate) fn decode_codes(row: &[u8], bits: u32, out: &mut [f32]) {
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(row) {
                *o = b as f32;
            }
        }
        4 => {
            let d = out.len();
            for (pair, &b) in out[..d & !1].chunks_exact_mut(2).zip(row) {
                pair[0] = (b & 0xf) as f32;
                pair[1] = (b >> 4) as f32;
            }
            if d % 2 == 1 {
                out[d - 1] = (row[d / 2] & 0xf) as f32;
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
                *o = (acc & mask) as f32;
                acc >>= bits;
                have -= bits;
            }
        }
    }
}

/// Sketch bounds of one token (no ALiBi, not widened): the sketch interval intersected
/// with the page box.
#[inline]
pub(crate) fn token_bounds(pc: &PageConsts, ws: &[f32], codes: &[f32]) -> (f64, f64) {
    let centre = pc.base + dot(ws, codes) as f64;
    let r = pc.rad + pc.dot_err;
    ((centre - r).max(pc.box_lo), (centre + r).min(pc.box_hi))
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

    #[test]
    fn decode_matches_get_code() {
        for bits in 1..=8u32 {
            let d = 19;
            let rb = sketch::row_bytes(d, bits);
            let row: Vec<u8> = (0..rb).map(|i| (i * 97 + 13) as u8).collect();
            let mut out = vec![0.0f32; d];
            decode_codes(&row, bits, &mut out);
            for c in 0..d {
                assert_eq!(
                    out[c],
                    sketch::get_code(&row, c, bits) as f32,
                    "bits {bits}"
                );
            }
        }
    }

    #[test]
    fn token_bounds_enclose_keys() {
        let d = 32;
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        };
        for bits in [1u32, 2, 3, 4, 8] {
            let keys: Vec<Vec<f32>> = (0..16)
                .map(|_| (0..d).map(|_| rnd() * 4.0).collect())
                .collect();
            let lo: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::INFINITY, f32::min))
                .collect();
            let hi: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::NEG_INFINITY, f32::max))
                .collect();
            let w: Vec<f32> = (0..d).map(|_| rnd()).collect();
            let mut ws = vec![0.0f32; d];
            let pc = page_consts(&w, &lo, &hi, bits, &mut ws);
            let mut row = vec![0u8; sketch::row_bytes(d, bits)];
            let mut codes = vec![0.0f32; d];
            for k in &keys {
                sketch::encode_row(k, &lo, &hi, bits, &mut row);
                decode_codes(&row, bits, &mut codes);
                let (l, u) = token_bounds(&pc, &ws, &codes);
                let exact: f64 = w.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                assert!(l - pc.err() <= exact && exact <= u + pc.err());
                assert!(pc.box_lo <= l && u <= pc.box_hi);
            }
        }
    }
}
