//! Per-token key sketch: each key quantised to `b` bits per channel on its own page's
//! `[min, max]` grid (the statistics the cache already keeps).
//!
//! With `step_d = (max_d − min_d)/(2^b − 1)` and the reconstruction
//! `k̃_d = min_d + code_d·step_d`, every stored key satisfies `|k_d − k̃_d| ≤ step_d/2`, so
//! `q·k ∈ q·k̃ ± Σ_d |q_d|·step_d/2`: a rigorous per-token score interval at a fraction of
//! the bytes of K. Codes are computed in f64 from the stored (rounded) keys and the stored
//! (outward-rounded) page min/max, so the bound holds for exactly what attention reads.
//!
//! Layout: `[num_pages, H_kv, page_size, row_bytes]`, codes packed LSB-first along the
//! channel axis. A page is sketched when it closes; the open page is always read exactly.

/// Bytes of one token's sketch row.
pub const fn row_bytes(d: usize, bits: u32) -> usize {
    (d * bits as usize).div_ceil(8)
}

/// Largest code for `bits`.
pub const fn levels(bits: u32) -> u32 {
    (1u32 << bits) - 1
}

/// Quantisation step of one channel.
#[inline]
pub fn step(lo: f32, hi: f32, bits: u32) -> f64 {
    ((hi as f64) - (lo as f64)).max(0.0) / levels(bits) as f64
}

/// Encodes one key (`key.len() == D`) on the grid `[lo, hi]` into `out` (`row_bytes` long).
pub fn encode_row(key: &[f32], lo: &[f32], hi: &[f32], bits: u32, out: &mut [u8]) {
    out.fill(0);
    let top = levels(bits);
    for c in 0..key.len() {
        let s = step(lo[c], hi[c], bits);
        let code = if s > 0.0 {
            (((key[c] as f64) - (lo[c] as f64)) / s)
                .round()
                .clamp(0.0, top as f64) as u32
        } else {
            0
        };
        put_code(out, c, bits, code);
    }
}

#[inline]
fn put_code(out: &mut [u8], c: usize, bits: u32, code: u32) {
    let bit = c * bits as usize;
    let mut v = (code as u64) << (bit % 8);
    let mut byte = bit / 8;
    while v != 0 {
        out[byte] |= (v & 0xff) as u8;
        v >>= 8;
        byte += 1;
    }
}

/// Reads the code of channel `c`.
#[inline]
pub fn get_code(row: &[u8], c: usize, bits: u32) -> u32 {
    let bit = c * bits as usize;
    let byte = bit / 8;
    let shift = bit % 8;
    let mut v: u32 = row[byte] as u32;
    if shift + bits as usize > 8 {
        v |= (row[byte + 1] as u32) << 8;
    }
    (v >> shift) & levels(bits)
}

/// Rigorous bounds of `Σ_d w_d·k_d` for the sketched key: returns `(lower, upper)`. The
/// scalar f64 reference; the decode paths use the vectorised kernel of
/// `certificate::bounds` (tested against this one).
/// `w` is the (already scaled) query; `lo`/`hi` are the page's stored min/max rows.
pub fn dot_bounds(w: &[f32], row: &[u8], lo: &[f32], hi: &[f32], bits: u32) -> (f64, f64) {
    let mut center = 0.0f64;
    let mut radius = 0.0f64;
    for c in 0..w.len() {
        let s = step(lo[c], hi[c], bits);
        let code = get_code(row, c, bits) as f64;
        let kt = lo[c] as f64 + code * s;
        let wc = w[c] as f64;
        center += wc * kt;
        radius += wc.abs() * s * 0.5;
    }
    // f64 rounding of the sums above is far below this slack.
    let slack = 1e-9 * (radius + center.abs()) + 1e-300;
    (center - radius - slack, center + radius + slack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_for_every_width() {
        for bits in 1..=8u32 {
            let d = 13;
            let mut row = vec![0u8; row_bytes(d, bits)];
            let codes: Vec<u32> = (0..d as u32)
                .map(|c| (c * 7 + 3) % (levels(bits) + 1))
                .collect();
            for (c, &code) in codes.iter().enumerate() {
                put_code(&mut row, c, bits, code);
            }
            for (c, &code) in codes.iter().enumerate() {
                assert_eq!(get_code(&row, c, bits), code, "bits {bits} channel {c}");
            }
        }
    }

    #[test]
    fn bounds_enclose_the_true_dot() {
        let d = 64;
        let mut seed = 12345u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        };
        for bits in [1u32, 2, 3, 4, 8] {
            let keys: Vec<Vec<f32>> = (0..16)
                .map(|_| (0..d).map(|_| rnd() * 3.0).collect())
                .collect();
            let lo: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::INFINITY, f32::min))
                .collect();
            let hi: Vec<f32> = (0..d)
                .map(|c| keys.iter().map(|k| k[c]).fold(f32::NEG_INFINITY, f32::max))
                .collect();
            let w: Vec<f32> = (0..d).map(|_| rnd()).collect();
            let mut row = vec![0u8; row_bytes(d, bits)];
            for k in &keys {
                encode_row(k, &lo, &hi, bits, &mut row);
                let exact: f64 = w.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                let (l, u) = dot_bounds(&w, &row, &lo, &hi, bits);
                assert!(l <= exact && exact <= u, "bits {bits}: {l} {exact} {u}");
            }
        }
    }
}
