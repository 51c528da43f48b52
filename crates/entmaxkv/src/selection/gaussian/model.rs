//! The Gaussian score model of a task's closed pages (SPEC §4.2–4.6).
//!
//! Keys of page p are modelled as independent per channel with the page's mean and std, so
//! a token's score is `N(μ_p, σ_p²)` with `μ_p = q·mean_p`, `σ_p² = Σ_d q_d² std_{p,d}²`
//! (diagonal covariance: cross-channel correlation is ignored, which is what makes a page
//! holding one coherent outlier look harmless; see [`super::robust`]).

use super::GaussianOpts;
use crate::certificate::bounds::PREFETCH_PAGES;
use crate::error::Result;
use crate::selection::{SelectScratch, SelectionContext};
use crate::stats::Stat;
use crate::tau::{tau_hat_mixture, tau_hat_single, SIGMA_FLOOR};
use rayon::prelude::*;

/// Closed pages per block of [`page_moments`] (blocks run in parallel).
const BLOCK_PAGES: usize = 256;

/// Fills `scratch.mu` / `scratch.sd` (`[G, closed]`, unshifted μ_p and σ_p) from the mean
/// and std rows of every closed page, each row read once for the whole group; blocks of
/// pages run in parallel. Returns the statistics bytes read.
pub fn page_moments(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) -> usize {
    fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
        if v.len() < n {
            v.resize(n, T::default());
        }
    }
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let d = ctx.cache.head_dim();
    scratch.mu.clear();
    scratch.mu.resize(g * closed, 0.0);
    scratch.sd.clear();
    scratch.sd.resize(g * closed, 0.0);
    let nb = closed.div_ceil(BLOCK_PAGES);
    grow(&mut scratch.pm, closed * 2 * g);
    grow(&mut scratch.pm_rows, nb * 2 * d);
    let stats = ctx.cache.stats();
    let run = |(bi, (out, rows)): (usize, (&mut [f64], &mut [f32]))| {
        let (r0, r1) = rows.split_at_mut(d);
        let first = bi * BLOCK_PAGES;
        for i in first..(first + BLOCK_PAGES).min(closed) {
            // Rows of consecutive pages are scattered through the pool: fetch ahead.
            if let Some(&next) = ctx.seq.pages.get(i + PREFETCH_PAGES) {
                let nb = ctx.cache.stats_offset(next, ctx.kv_head);
                stats.prefetch_row(Stat::Mean, nb, d);
                stats.prefetch_row(Stat::Std, nb, d);
            }
            let base = ctx.cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
            stats.read_row(Stat::Mean, base, r0);
            stats.read_row(Stat::Std, base, r1);
            let o = (i - first) * 2 * g;
            for hg in 0..g {
                let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
                let (mu, var) = mean_var(q, r0, r1);
                out[o + 2 * hg] = mu as f64;
                out[o + 2 * hg + 1] = (var as f64).sqrt();
            }
        }
    };
    if g > 0 && closed > 0 {
        let out = &mut scratch.pm[..closed * 2 * g];
        let rows = &mut scratch.pm_rows[..nb * 2 * d];
        if nb > 1 {
            out.par_chunks_mut(BLOCK_PAGES * 2 * g)
                .zip(rows.par_chunks_mut(2 * d))
                .enumerate()
                .for_each(run);
        } else {
            run((0, (out, rows)));
        }
    }
    for i in 0..closed {
        for hg in 0..g {
            scratch.mu[hg * closed + i] = scratch.pm[i * 2 * g + 2 * hg];
            scratch.sd[hg * closed + i] = scratch.pm[i * 2 * g + 2 * hg + 1];
        }
    }
    closed * 2 * ctx.cache.stats().row_bytes(d)
}

/// `(Σ q_d·m_d, Σ (q_d·s_d)²)` with eight f32 lanes (vectorises; the model is an estimate,
/// f32 is ample).
#[inline]
fn mean_var(q: &[f32], m: &[f32], s: &[f32]) -> (f32, f32) {
    let (mut am, mut av) = ([0.0f32; 8], [0.0f32; 8]);
    let (qc, mc, sc) = (q.chunks_exact(8), m.chunks_exact(8), s.chunks_exact(8));
    let (qr, mr, sr) = (qc.remainder(), mc.remainder(), sc.remainder());
    for ((q8, m8), s8) in qc.zip(mc).zip(sc) {
        for j in 0..8 {
            am[j] = q8[j].mul_add(m8[j], am[j]);
            let x = q8[j] * s8[j];
            av[j] = x.mul_add(x, av[j]);
        }
    }
    let (mut mu, mut var) = (am.iter().sum::<f32>(), av.iter().sum::<f32>());
    for j in 0..qr.len() {
        mu += qr[j] * mr[j];
        var += (qr[j] * sr[j]) * (qr[j] * sr[j]);
    }
    (mu, var)
}

/// One head's model after [`head_model`].
#[derive(Debug, Clone, Copy)]
pub struct HeadModel {
    /// τ̂ in z-space.
    pub tau_hat: f64,
    /// Mixture mean and std of the unshifted page scores.
    pub mu_g: f64,
    pub sigma_g: f64,
    /// Largest ALiBi offset inside a page from its centre (0 without ALiBi, or when
    /// `alibi_within_page` is off): added to a page's likely max.
    pub bias_half_width: f64,
}

/// Head `hg`'s mixture moments and τ̂. With ALiBi, shifts the head's `scratch.mu` row in
/// place to each page's centre position (SPEC §4.4); μ_g, σ_g stay unshifted, as in the
/// original, since they only size the margins.
pub fn head_model(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    hg: usize,
) -> Result<HeadModel> {
    let closed = ctx.closed_pages();
    let ps = ctx.cache.page_size();
    let n = closed as f64;
    let mu = &mut scratch.mu[hg * closed..(hg + 1) * closed];
    let sd = &scratch.sd[hg * closed..(hg + 1) * closed];
    // Two-pass moments: Var_μ = mean (μ_p − μ_g)², no cancellation (SPEC §8.1.16).
    let mu_g = mu.iter().sum::<f64>() / n;
    let var_mu = mu.iter().map(|&m| (m - mu_g) * (m - mu_g)).sum::<f64>() / n;
    let mean_var = sd.iter().map(|&s| s * s).sum::<f64>() / n;
    let sigma_g = (mean_var + var_mu).sqrt().max(SIGMA_FLOOR);

    let slope = ctx.slopes[hg] as f64;
    if slope == 0.0 {
        let t = tau_hat_single(
            mu_g,
            sigma_g,
            (closed * ps) as f64,
            ctx.alpha,
            &opts.solver(false),
        )?;
        return Ok(HeadModel {
            tau_hat: t.tau,
            mu_g,
            sigma_g,
            bias_half_width: 0.0,
        });
    }
    let q_pos = ctx.q_pos();
    let half = (ps as f64 - 1.0) / 2.0;
    for (i, m) in mu.iter_mut().enumerate() {
        *m += slope * ((i * ps) as f64 + half - q_pos);
    }
    let (spread_var, bias_half_width) = if opts.alibi_within_page {
        let l = ps as f64;
        (slope * slope * (l * l - 1.0) / 12.0, slope.abs() * half)
    } else {
        (0.0, 0.0)
    };
    scratch.a.clear();
    scratch
        .a
        .extend(sd.iter().map(|&s| (s * s + spread_var).sqrt()));
    let t = tau_hat_mixture(
        mu,
        &scratch.a,
        None,
        ps as f64,
        ctx.alpha,
        &opts.solver(true),
    )?;
    Ok(HeadModel {
        tau_hat: t.tau,
        mu_g,
        sigma_g,
        bias_half_width,
    })
}
