//! Score bounds of one page and of its sketched tokens, for one query head.

use super::BOUND_ERR;
use crate::stats::sketch;

/// Per-(page, query head) constants of the score bounds (score units, scale applied, no
/// ALiBi): the box bounds, the magnitude `Σ|w_d|·max(|kmin_d|, |kmax_d|)`, and the sketch
/// centre offset `Σ w_d·kmin_d` and radius `Σ|w_d|·step_d/2`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PageConsts {
    pub box_lo: f64,
    pub box_hi: f64,
    pub mag: f64,
    pub base: f64,
    pub rad: f64,
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
    }
}

/// Box bounds, magnitude and the sketch constants; `ws` (length D) receives `w_d·step_d`.
#[inline]
pub(crate) fn page_consts(
    w: &[f32],
    lo: &[f32],
    hi: &[f32],
    bits: u32,
    ws: &mut [f64],
) -> PageConsts {
    let mut pc = page_box(w, lo, hi);
    let (mut base, mut rad) = (0.0f64, 0.0f64);
    for c in 0..w.len() {
        let wc = w[c] as f64;
        let s = sketch::step(lo[c], hi[c], bits);
        base += wc * lo[c] as f64;
        ws[c] = wc * s;
        rad += ws[c].abs();
    }
    pc.base = base;
    pc.rad = 0.5 * rad;
    pc
}

/// Unpacks one token's sketch codes into `out` (length D) as f64.
#[inline]
pub(crate) fn decode_codes(row: &[u8], bits: u32, out: &mut [f64]) {
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(row) {
                *o = b as f64;
            }
        }
        4 => {
            for (c, o) in out.iter_mut().enumerate() {
                let b = row[c / 2];
                *o = if c % 2 == 0 { b & 0xf } else { b >> 4 } as f64;
            }
        }
        _ => {
            for (c, o) in out.iter_mut().enumerate() {
                *o = sketch::get_code(row, c, bits) as f64;
            }
        }
    }
}

/// Sketch bounds of one token (no ALiBi, not widened): the sketch interval intersected
/// with the page box.
#[inline]
pub(crate) fn token_bounds(pc: &PageConsts, ws: &[f64], codes: &[f64]) -> (f64, f64) {
    let mut centre = pc.base;
    for (a, b) in ws.iter().zip(codes) {
        centre += a * b;
    }
    (
        (centre - pc.rad).max(pc.box_lo),
        (centre + pc.rad).min(pc.box_hi),
    )
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
            let mut out = vec![0.0; d];
            decode_codes(&row, bits, &mut out);
            for c in 0..d {
                assert_eq!(
                    out[c],
                    sketch::get_code(&row, c, bits) as f64,
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
            let mut ws = vec![0.0; d];
            let pc = page_consts(&w, &lo, &hi, bits, &mut ws);
            let mut row = vec![0u8; sketch::row_bytes(d, bits)];
            let mut codes = vec![0.0; d];
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
