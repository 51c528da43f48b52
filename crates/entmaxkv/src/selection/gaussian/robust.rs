//! The robust Gaussian criterion: keeps the adaptive budget of the Gaussian τ̂ but tests
//! pages with bounds that a coherent outlier key cannot fool.
//!
//! Why: the original tests a page by `μ_p + z·σ_p` with a diagonal-variance σ_p. One key
//! deviating coherently across channels (an attention sink) moves its score by up to
//! √D times what the per-channel variances suggest, so the page holding the sink — often
//! most of the attention mass — looks far below τ̂ and is dropped (MEASURED.md, SmolLM2).
//!
//! Test, per query head h, in z-space:
//! 1. τ̂_h from the same Gaussian model, without the margin shrink.
//! 2. Box bound `u_p = Σ_d max(q_d·min_d, q_d·max_d) + max ALiBi bias in the page`: every
//!    key of the page scores ≤ u_p. A page with `a·u_p ≤ τ̂_h` for every head is dropped
//!    without reading more.
//! 3. For the other pages, the per-token key sketch gives rigorous score intervals
//!    `[l_t, u_t]` (`stats::sketch::dot_bounds`, plus the token's exact ALiBi bias).
//! 4. `τ_lb,h` = the exact entmax threshold of the lower bounds `l_t` of those tokens. Entmax
//!    τ grows with every score and with every added token, so `τ_lb ≤ τ_true`: a rigorous
//!    floor that, unlike τ̂, sees a sink (whose lower bound alone pushes τ up).
//! 5. Keep the page iff some head has `a·max_t u_t > T_h = max(τ̂_h, τ_lb,h)`.
//!    The first `sink_pages` pages are always kept.
//!
//! With `T_h = τ_lb,h` alone the kept pages would provably hold the whole dense support;
//! τ̂ tightens that on unstructured keys (where `τ_lb` trails the truth by the sketch's
//! slack) at the risk the original already takes: τ̂ above the true τ drops tokens with
//! scores in `(τ, τ̂)` whose bounds are below τ̂. `out.tau_hat` receives `T_h`.
//! Without a sketch (`sketch_bits = 0`) the box bound is the test and `T_h = τ̂_h`.

use super::{model, GaussianOpts};
use crate::error::Result;
use crate::selection::{SelectScratch, Selection, SelectionContext};
use crate::stats::{sketch, Stat};
use crate::tau::entmax_threshold_f32;

/// Robust selection (see the module docs). Expects `scratch.mu`/`sd` filled by
/// [`model::page_moments`].
pub fn select(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let a = ctx.alpha - 1.0;
    let q_pos = ctx.q_pos();
    let bits = cache.config().sketch_bits;

    scratch.head.clear();
    for hg in 0..g {
        let m = model::head_model(ctx, opts, scratch, hg)?;
        scratch.head.push(m.tau_hat);
    }
    // From here on `mu` holds, per head and page, the best upper bound of the page's
    // max score (box, then sketch), and `tok` the lower bounds `[G, candidate tokens]`.
    let max_tokens = closed * ps;
    if scratch.tok.capacity() < g * max_tokens {
        scratch.tok.reserve(g * max_tokens - scratch.tok.len());
    }
    scratch.tok.clear();
    scratch.tok.resize(g * max_tokens, f32::NEG_INFINITY);
    let mut n_tok = 0usize;
    scratch.keep.clear();
    scratch.keep.resize(closed, false);
    let row_b = cache.stats().row_bytes(d);
    let sk_row = sketch::row_bytes(d, bits);
    let mut meta = out.meta_bytes + closed * 2 * row_b;

    for i in 0..closed {
        let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
        cache.stats().read_row(Stat::Min, base, &mut scratch.row0);
        cache.stats().read_row(Stat::Max, base, &mut scratch.row1);
        let start = (i * ps) as f64;
        let mut candidate = false;
        for hg in 0..g {
            let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
            let slope = ctx.slopes[hg] as f64;
            let mut u = 0.0f64;
            for c in 0..d {
                let qc = q[c] as f64;
                u += (qc * scratch.row0[c] as f64).max(qc * scratch.row1[c] as f64);
            }
            let bias_max = (slope * (start - q_pos)).max(slope * (start + (ps - 1) as f64 - q_pos));
            u += bias_max;
            scratch.mu[hg * closed + i] = u;
            candidate |= a * u > scratch.head[hg];
        }
        if !candidate || bits == 0 {
            continue;
        }
        let skb = cache.sketch_offset(ctx.seq.pages[i], ctx.kv_head);
        meta += ps * sk_row;
        for hg in 0..g {
            let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
            let slope = ctx.slopes[hg] as f64;
            let mut best = f64::NEG_INFINITY;
            for t in 0..ps {
                let row = &cache.sketch()[skb + t * sk_row..skb + (t + 1) * sk_row];
                let (lo, hi) = sketch::dot_bounds(q, row, &scratch.row0, &scratch.row1, bits);
                let bias = slope * (start + t as f64 - q_pos);
                best = best.max(hi + bias);
                scratch.tok[hg * max_tokens + n_tok + t] = f32_down(lo + bias);
            }
            scratch.mu[hg * closed + i] = best.min(scratch.mu[hg * closed + i]);
        }
        n_tok += ps;
    }
    out.meta_bytes = meta;

    for hg in 0..g {
        let mut thr = scratch.head[hg];
        if n_tok > 0 {
            let lbs = &scratch.tok[hg * max_tokens..hg * max_tokens + n_tok];
            let lb = entmax_threshold_f32(lbs, ctx.alpha, &mut scratch.tok_scratch)?;
            thr = thr.max(lb);
        }
        scratch.head[hg] = thr;
        out.tau_hat[hg] = thr;
        for i in 0..closed {
            if a * scratch.mu[hg * closed + i] > thr {
                scratch.keep[i] = true;
            }
        }
    }
    for k in scratch.keep.iter_mut().take(opts.sink_pages.min(closed)) {
        *k = true;
    }
    super::push_kept(ctx, &scratch.keep, out);
    Ok(())
}

/// `x` rounded to an f32 that is ≤ x, so a lower bound stays one.
fn f32_down(x: f64) -> f32 {
    let l = x as f32;
    if (l as f64) <= x {
        l
    } else {
        l - (l.abs() * f32::EPSILON).max(f32::MIN_POSITIVE)
    }
}
