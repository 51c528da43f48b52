//! Interim entmax threshold by bisection (to be replaced by the exact sort-based solvers).
use crate::error::{check_alpha, check_finite, Error, Result};

#[derive(Debug, Clone)]
pub struct Entmax {
    pub p: Vec<f64>,
    pub tau: f64,
    pub support: usize,
}

fn solve(z: impl Fn(usize) -> f64, n: usize, alpha: f64) -> f64 {
    let beta = 1.0 / (alpha - 1.0);
    let zmax = (0..n).map(&z).fold(f64::NEG_INFINITY, f64::max);
    let (mut lo, mut hi) = (zmax - 1.0, zmax);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        let f: f64 = (0..n)
            .map(|i| (z(i) - mid).max(0.0).powf(beta))
            .sum::<f64>()
            - 1.0;
        if f > 0.0 {
            lo = mid
        } else {
            hi = mid
        }
        if hi - lo <= 1e-15 * zmax.abs().max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

pub fn entmax(scores: &[f64], alpha: f64) -> Result<Entmax> {
    check_alpha("entmax", alpha)?;
    check_finite("entmax", "scores", scores)?;
    if scores.is_empty() {
        return Err(Error::invalid("entmax", "scores", "[]", "empty"));
    }
    if alpha == 1.0 {
        let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = scores.iter().map(|x| (x - m).exp()).sum();
        let tau = m + s.ln();
        let p: Vec<f64> = scores.iter().map(|x| (x - tau).exp()).collect();
        return Ok(Entmax {
            support: p.len(),
            p,
            tau,
        });
    }
    let a = alpha - 1.0;
    let tau = solve(|i| a * scores[i], scores.len(), alpha);
    let p: Vec<f64> = scores
        .iter()
        .map(|x| (a * x - tau).max(0.0).powf(1.0 / a))
        .collect();
    let sum: f64 = p.iter().sum();
    let p: Vec<f64> = p.iter().map(|x| x / sum).collect();
    Ok(Entmax {
        support: p.iter().filter(|&&x| x > 0.0).count(),
        p,
        tau,
    })
}

pub fn entmax_threshold_f32(scores: &[f32], alpha: f64, _scratch: &mut Vec<f32>) -> Result<f64> {
    if alpha == 1.0 {
        let m = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let s: f64 = scores.iter().map(|&x| (x as f64 - m).exp()).sum();
        return Ok(m + s.ln());
    }
    let a = alpha - 1.0;
    Ok(solve(|i| a * scores[i] as f64, scores.len(), alpha))
}

pub fn halley_correct(scores: &[f32], alpha: f64, _tau0: f64, _iters: usize) -> f64 {
    let a = alpha - 1.0;
    solve(|i| a * scores[i] as f64, scores.len(), alpha)
}
