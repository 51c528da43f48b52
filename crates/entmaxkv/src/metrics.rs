//! Error metrics against a reference, global and per head.

use crate::error::{check_len, Result};
use serde::{Deserialize, Serialize};

/// Errors of an output against a reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorMetrics {
    /// ‖out − ref‖₂.
    pub l2: f64,
    /// ‖out − ref‖₂ / ‖ref‖₂ (‖out − ref‖₂ when the reference is zero).
    pub rel: f64,
    /// cos(out, ref); 1 when both are zero.
    pub cosine: f64,
    /// max |out − ref|.
    pub max_abs: f64,
}

/// Compares `out` with `reference` (same length) as flat vectors.
pub fn compare(out: &[f32], reference: &[f64]) -> Result<ErrorMetrics> {
    check_len("compare", "out", out.len(), &[reference.len()])?;
    let (mut d2, mut r2, mut o2, mut dot, mut max_abs) = (0.0f64, 0.0, 0.0, 0.0, 0.0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let o = o as f64;
        let diff = o - r;
        d2 += diff * diff;
        r2 += r * r;
        o2 += o * o;
        dot += o * r;
        max_abs = max_abs.max(diff.abs());
    }
    let l2 = d2.sqrt();
    let rel = if r2 > 0.0 { l2 / r2.sqrt() } else { l2 };
    let cosine = if r2 > 0.0 && o2 > 0.0 {
        dot / (r2.sqrt() * o2.sqrt())
    } else if r2 == 0.0 && o2 == 0.0 {
        1.0
    } else {
        0.0
    };
    Ok(ErrorMetrics {
        l2,
        rel,
        cosine,
        max_abs: if out.iter().any(|x| x.is_nan()) {
            f64::NAN
        } else {
            max_abs
        },
    })
}

/// Per-head metrics of `[B, H, D]` tensors: one entry per (b, h).
pub fn compare_per_head(
    out: &[f32],
    reference: &[f64],
    head_dim: usize,
) -> Result<Vec<ErrorMetrics>> {
    check_len("compare_per_head", "out", out.len(), &[reference.len()])?;
    if head_dim == 0 {
        return Err(crate::Error::invalid(
            "compare_per_head",
            "head_dim",
            0,
            "must be >= 1",
        ));
    }
    out.chunks(head_dim)
        .zip(reference.chunks(head_dim))
        .map(|(o, r)| compare(o, r))
        .collect()
}

/// Summary statistics of a set of values (for per-head tables).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Summary {
    pub min: f64,
    pub p10: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
    pub mean: f64,
}

/// Nearest-rank quantiles of `values` (NaN sorts last).
pub fn summarize(values: &[f64]) -> Summary {
    if values.is_empty() {
        return Summary::default();
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1)];
    Summary {
        min: v[0],
        p10: q(0.1),
        median: q(0.5),
        p90: q(0.9),
        max: v[v.len() - 1],
        mean: v.iter().sum::<f64>() / v.len() as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_is_zero_error_and_unit_cosine() {
        let r = [1.0, -2.0, 3.0];
        let m = compare(&[1.0, -2.0, 3.0], &r).unwrap();
        assert_eq!(m.l2, 0.0);
        assert_eq!(m.rel, 0.0);
        assert!((m.cosine - 1.0).abs() < 1e-15);
    }

    #[test]
    fn opposite_has_rel_two_and_cosine_minus_one() {
        let m = compare(&[-1.0, 2.0], &[1.0, -2.0]).unwrap();
        assert!(compare(&[1.0], &[1.0, 2.0]).is_err());
        assert!((m.rel - 2.0).abs() < 1e-12);
        assert!((m.cosine + 1.0).abs() < 1e-12);
        assert!((m.max_abs - 4.0).abs() < 1e-12);
    }
}
