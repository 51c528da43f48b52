//! The robust Gaussian criterion: keeps the adaptive budget of the Gaussian τ̂ but tests
//! pages with bounds that a coherent outlier key cannot fool.
//!
//! Why: the original tests a page by `μ_p + z·σ_p` with a diagonal-variance σ_p. One key
//! deviating coherently across channels (an attention sink) moves its score by up to
//! √D times what the per-channel variances suggest, so the page holding the sink — often
//! most of the attention mass — looks far below τ̂ and is dropped (MEASURED.md, SmolLM2).
//!
//! Test, per query head h, in z-space (a = α − 1):
//! 1. τ̂_h from the same Gaussian model, without the margin shrink.
//! 2. Box bound `u_p = Σ_d max(q_d·min_d, q_d·max_d) + max ALiBi bias in the page`: every
//!    key of the page scores ≤ u_p.
//! 3. Pass 1: the pages with `a·u_p > τ̂_h` for some head, plus the first `sink_pages`
//!    pages, get per-token score intervals `[l_t, u_t]` from the key sketch
//!    (`stats::sketch::dot_bounds`, plus the token's exact ALiBi bias).
//! 4. `τ_lb,h` = the exact entmax threshold of those lower bounds `l_t`. Entmax τ grows
//!    with every score and with every added token, so `τ_lb ≤ τ_true`: a rigorous floor that,
//!    unlike τ̂, sees a sink (whose lower bound alone pushes τ up).
//! 5. Trust test of τ̂: `τ̂_h ≤ τ_true` needs `Σ_t [a·u_t − τ̂_h]_+^{1/a} ≥ 1` over the
//!    bounded tokens (every other token's box is below τ̂). Threshold
//!    `T_h = max(τ̂_h, τ_lb,h)` where τ̂ passes, else `T_h = τ_lb,h`.
//! 6. Pass 2: every page not bounded yet whose box reaches `T_h` is bounded too, and
//!    `τ_lb` is recomputed over all bounded tokens (it can only rise).
//! 7. Keep the page iff some head has `a·max_t u_t > T_h`; the first `sink_pages` pages
//!    are always kept.
//!
//! Where τ̂ failed its test the kept pages provably hold the whole dense support. Where it
//! passed, τ̂ tightens the selection on unstructured keys (where `τ_lb` trails the truth by
//! the sketch's slack) at the risk the original takes: a τ̂ above the true τ drops tokens
//! with scores in `(τ, τ̂)`. The test is necessary, not sufficient, but it catches the
//! failure seen on SmolLM2 traces: there the Gaussian τ̂ sits above the true τ in a few
//! percent of (layer, head, query) cases (real scores are lighter-tailed than the page
//! mixture), and testing against `max(τ̂, τ_lb)` alone dropped the whole support except
//! the sink (cosine down to −0.5; MODELS.md). `out.tau_hat` receives `T_h`. Without a
//! sketch (`sketch_bits = 0`) the token intervals are the page box, rigorous but looser.

use super::{model, GaussianOpts};
use crate::certificate::bounds::{f32_down, page_bound, sketch_dots, token_ends, PageRows};
use crate::error::Result;
use crate::selection::{SelectScratch, Selection, SelectionContext};
use crate::stats::{sketch, Stat};
use crate::tau::entmax_threshold_f32;

/// Scratch of the per-token sketch bounds (sized on first use, never shrunk).
#[derive(Debug, Clone, Default)]
pub(crate) struct RobustScratch {
    rows: PageRows,
    /// `[D]` quantised sketch weights of one page and head.
    qw: Vec<i16>,
    /// `[page_size]` sketch dots, f32 lower ends of one page and head.
    sdot: Vec<i32>,
    vals: Vec<f32>,
    /// `[page_size]` upper (f32, rounded up) and lower (f64) ends of one page and head.
    ups: Vec<f32>,
    lows: Vec<f64>,
    codes: Vec<u8>,
    /// `[G]` lengths of the head's lower-end and upper-end segments of `tok`, and the
    /// running maximum of its lower ends.
    n_low: Vec<usize>,
    n_up: Vec<usize>,
    lmax: Vec<f64>,
    /// Pass 1 also collects the upper ends the τ̂ trust test needs.
    collect_ups: bool,
}

/// Sizes the token scratch for `g` heads over `max_tokens` bounded tokens: `tok` holds,
/// per head, a segment of lower ends (`[hg·max_tokens..]`) and one of upper ends
/// (`[(G + hg)·max_tokens..]`), filled from the front (lengths in `n_low` / `n_up`).
fn prepare_tokens(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch, max_tokens: usize) {
    fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
        if v.len() < n {
            v.resize(n, T::default());
        }
    }
    let g = ctx.group();
    let (ps, d) = (ctx.cache.page_size(), ctx.cache.head_dim());
    grow(&mut scratch.tok, 2 * g * max_tokens);
    let rs = &mut scratch.robust;
    rs.rows.reserve(d);
    grow(&mut rs.qw, d);
    grow(&mut rs.codes, d);
    grow(&mut rs.sdot, ps);
    grow(&mut rs.vals, ps);
    grow(&mut rs.ups, ps);
    grow(&mut rs.lows, ps);
    rs.n_low.clear();
    rs.n_low.resize(g, 0);
    rs.n_up.clear();
    rs.n_up.resize(g, 0);
    rs.lmax.clear();
    rs.lmax.resize(g, f64::NEG_INFINITY);
}

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

    // head[hg] = τ̂ (pass-1 hint), then τ_lb.
    scratch.head.clear();
    for hg in 0..g {
        let m = model::head_model(ctx, opts, scratch, hg)?;
        scratch.head.push(m.tau_hat);
    }
    // From here on `mu` holds, per head and page, the best upper bound of the page's max
    // score (box, then sketch), `sd` the box lower bound, `b` whether the page was bounded
    // per token, and `tok` the token lower bounds `[G, bounded tokens]`.
    let max_tokens = closed * ps;
    prepare_tokens(ctx, scratch, max_tokens);
    scratch.b.clear();
    scratch.b.resize(closed, 0.0);
    scratch.keep.clear();
    scratch.keep.resize(closed, false);
    let row_b = cache.stats().row_bytes(d);
    let mut meta = out.meta_bytes + closed * 2 * row_b;
    let sinks = opts.sink_pages.min(closed);

    // Box bounds of every closed page.
    for i in 0..closed {
        box_bounds(ctx, i, scratch);
    }
    // Pass 1: pages the Gaussian τ̂ points at, and the sink pages. Only the lower ends
    // that can enter the τ_lb solve and the upper ends above τ̂ are kept.
    scratch.robust.collect_ups = true;
    for i in 0..closed {
        let hinted =
            i < sinks || (0..g).any(|hg| a * scratch.mu[hg * closed + i] > scratch.head[hg]);
        if hinted {
            meta += token_bounds(ctx, i, scratch);
        }
    }
    scratch.robust.collect_ups = false;
    // τ̂ is kept as the threshold only where it passes a necessary test of τ̂ ≤ τ_true:
    // the bounded tokens' upper bounds must carry entmax mass ≥ 1 at τ̂ (the others are
    // below τ̂ by their box). `trust[hg]` (in `head[g..2g]`) is 1 where it passes.
    scratch.head.resize(3 * g, 0.0);
    for hg in 0..g {
        let at = (g + hg) * max_tokens;
        let ups = &scratch.tok[at..at + scratch.robust.n_up[hg]];
        scratch.head[g + hg] = mass_at_least_one(ups, ctx.alpha, scratch.head[hg]) as u8 as f64;
        scratch.head[2 * g + hg] = scratch.head[hg];
    }
    tau_lower_bounds(ctx, scratch)?;
    let threshold = |s: &SelectScratch, hg: usize| {
        if s.head[g + hg] > 0.0 {
            s.head[hg].max(s.head[2 * g + hg])
        } else {
            s.head[hg]
        }
    };
    // Pass 2: every page whose box still reaches the threshold.
    let mut added = false;
    for i in 0..closed {
        if scratch.b[i] == 0.0
            && (0..g).any(|hg| a * scratch.mu[hg * closed + i] > threshold(scratch, hg))
        {
            meta += token_bounds(ctx, i, scratch);
            added = true;
        }
    }
    if added {
        tau_lower_bounds(ctx, scratch)?;
    }
    for hg in 0..g {
        scratch.head[hg] = threshold(scratch, hg);
    }
    scratch.head.truncate(g);
    out.meta_bytes = meta;

    for hg in 0..g {
        let thr = scratch.head[hg];
        out.tau_hat[hg] = thr;
        for i in 0..closed {
            if a * scratch.mu[hg * closed + i] > thr {
                scratch.keep[i] = true;
            }
        }
    }
    for k in scratch.keep.iter_mut().take(sinks) {
        *k = true;
    }
    super::push_kept(ctx, &scratch.keep, out);
    Ok(())
}

/// Dense attention mass the softmax mode may drop, in total over a head's dropped pages.
pub const SOFTMAX_DROP_MASS: f64 = 1e-3;

/// Softmax (α = 1) mode: no threshold to predict, so pages are dropped only with a proven
/// bound on the attention mass they can carry. With `L` a rigorous lower bound of the
/// log-sum-exp of all scores (from sketch lower bounds of the tokens bounded so far), a
/// page's mass is at most `len·exp(max_t u_t − L)`; a page is dropped iff that is at most
/// [`SOFTMAX_DROP_MASS`] / closed pages, so the dropped pages provably carry at most
/// [`SOFTMAX_DROP_MASS`] of the mass per head. Pass 1 bounds the sink pages and the pages
/// whose box bound is within 2 of the head's best box; pass 2 every page whose box cannot
/// be dropped against `L`; `L` is then recomputed over all bounded tokens. `out.tau_hat`
/// is NaN (attention solves the log-sum-exp exactly).
pub fn select_softmax(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let max_tokens = closed * ps;
    scratch.mu.clear();
    scratch.mu.resize(g * closed, 0.0);
    scratch.sd.clear();
    scratch.sd.resize(g * closed, 0.0);
    prepare_tokens(ctx, scratch, max_tokens);
    scratch.robust.collect_ups = false;
    scratch.b.clear();
    scratch.b.resize(closed, 0.0);
    scratch.keep.clear();
    scratch.keep.resize(closed, false);
    scratch.head.clear();
    scratch.head.resize(2 * g, f64::NEG_INFINITY);
    let sinks = opts.sink_pages.min(closed);
    let mut meta = closed * 2 * cache.stats().row_bytes(d);
    for i in 0..closed {
        box_bounds(ctx, i, scratch);
    }
    if !scratch.mu.iter().chain(&scratch.sd).all(|x| x.is_finite()) {
        // Overflowed statistics: no bound, read everything.
        out.meta_bytes = meta;
        scratch.keep.fill(true);
        super::push_kept(ctx, &scratch.keep, out);
        return Ok(());
    }
    for hg in 0..g {
        scratch.head[g + hg] = scratch.mu[hg * closed..(hg + 1) * closed]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
    }
    for i in 0..closed {
        let hinted =
            i < sinks || (0..g).any(|hg| scratch.mu[hg * closed + i] >= scratch.head[g + hg] - 2.0);
        if hinted {
            meta += token_bounds(ctx, i, scratch);
        }
    }
    tau_lower_bounds(ctx, scratch)?;
    let per_page = SOFTMAX_DROP_MASS / closed as f64;
    let mut added = false;
    for i in 0..closed {
        if scratch.b[i] == 0.0
            && (0..g).any(|hg| {
                ps as f64 * (scratch.mu[hg * closed + i] - scratch.head[hg]).exp() > per_page
            })
        {
            meta += token_bounds(ctx, i, scratch);
            added = true;
        }
    }
    if added {
        tau_lower_bounds(ctx, scratch)?;
    }
    out.meta_bytes = meta;
    // Keep test: `mu` now holds each page's best upper bound (sketch max where bounded).
    for hg in 0..g {
        out.tau_hat[hg] = f64::NAN;
        for i in 0..closed {
            if ps as f64 * (scratch.mu[hg * closed + i] - scratch.head[hg]).exp() > per_page {
                scratch.keep[i] = true;
            }
        }
    }
    for k in scratch.keep.iter_mut().take(sinks) {
        *k = true;
    }
    super::push_kept(ctx, &scratch.keep, out);
    Ok(())
}

/// Starts loading the min/max rows (and with `sketch` the sketch block) of the page four
/// slots after `i`: page rows are scattered through the pool.
#[inline]
fn prefetch_ahead(ctx: &SelectionContext<'_>, i: usize, sketch: bool) {
    let cache = ctx.cache;
    if let Some(&next) = ctx.seq.pages.get(i + 4) {
        let d = cache.head_dim();
        let nb = cache.stats_offset(next, ctx.kv_head);
        cache.stats().prefetch_row(Stat::Min, nb, d);
        cache.stats().prefetch_row(Stat::Max, nb, d);
        let bits = cache.config().sketch_bits;
        if sketch && bits > 0 {
            let len = cache.page_size() * sketch::row_bytes(d, bits);
            let sb = cache.sketch_offset(next, ctx.kv_head);
            crate::attention::cpu::prefetch(&cache.sketch()[sb..sb + len]);
        }
    }
}

/// Box bounds of closed page `i` for every head (f32, widened: [`page_bound`]), ALiBi
/// extremes of the page added: upper into `mu`, lower into `sd`.
fn box_bounds(ctx: &SelectionContext<'_>, i: usize, scratch: &mut SelectScratch) {
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let closed = ctx.closed_pages();
    let q_pos = ctx.q_pos();
    let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
    prefetch_ahead(ctx, i, false);
    let rs = &mut scratch.robust;
    rs.rows.load(cache.stats(), base, d, 0);
    let start = (i * ps) as f64;
    for hg in 0..ctx.group() {
        let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
        let pb = page_bound(q, &rs.rows, false, &mut rs.qw[..d]);
        let slope = ctx.slopes[hg] as f64;
        let (b0, b1) = (
            slope * (start - q_pos),
            slope * (start + (ps - 1) as f64 - q_pos),
        );
        scratch.mu[hg * closed + i] = pb.box_hi + b0.max(b1);
        scratch.sd[hg * closed + i] = pb.box_lo + b0.min(b1);
    }
}

/// Per-token bounds of closed page `i` (sketch, or the box without one) for every head:
/// lower ends that can still enter the τ_lb solve go to the head's lower segment of `tok`
/// (f32, rounded down), in pass 1 upper ends above τ̂ (`head[hg]`) to its upper segment
/// (rounded up), and the page's best upper bound to `mu`. Marks the page bounded and
/// returns the sketch bytes read.
fn token_bounds(ctx: &SelectionContext<'_>, i: usize, scratch: &mut SelectScratch) -> usize {
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let max_tokens = closed * ps;
    let bits = cache.config().sketch_bits;
    let q_pos = ctx.q_pos();
    let start = (i * ps) as f64;
    let a = ctx.alpha - 1.0;
    scratch.b[i] = 1.0;
    let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
    prefetch_ahead(ctx, i, true);
    let rs = &mut scratch.robust;
    rs.rows.load(cache.stats(), base, d, bits);
    let sk_row = sketch::row_bytes(d, bits);
    let sk = if bits > 0 {
        let skb = cache.sketch_offset(ctx.seq.pages[i], ctx.kv_head);
        &cache.sketch()[skb..skb + ps * sk_row]
    } else {
        &[][..]
    };
    for hg in 0..g {
        let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
        let qw = &mut rs.qw[..d];
        let pb = page_bound(q, &rs.rows, true, qw);
        let sdot = &mut rs.sdot[..ps];
        if bits > 0 {
            sketch_dots(qw, sk, sk_row, bits, sdot, &mut rs.codes);
        } else {
            sdot.fill(0);
        }
        let s0 = start - q_pos;
        let (ups, lows) = (&mut rs.ups[..ps], &mut rs.lows[..ps]);
        let (umax, _) = token_ends(&pb, sdot, ctx.slopes[hg] as f64, s0, ups, lows);
        let vals = &mut rs.vals[..ps];
        for (v, &l) in vals.iter_mut().zip(lows.iter()) {
            *v = f32_down(l);
        }
        if rs.collect_ups {
            let tau_hat = scratch.head[hg];
            for &u in ups.iter() {
                if a * u as f64 - tau_hat > 0.0 {
                    scratch.tok[(g + hg) * max_tokens + rs.n_up[hg]] = u;
                    rs.n_up[hg] += 1;
                }
            }
        }
        let best = umax as f64;
        // Lower ends: only those within 1/a of the running maximum can be candidates of
        // the τ_lb solve (as in `certified`), the others are dropped here.
        let pmax = vals.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
        let lmax = &mut rs.lmax[hg];
        if pmax > *lmax || a * (pmax - *lmax) > -1.0 {
            *lmax = lmax.max(pmax);
            let seg = &mut scratch.tok[hg * max_tokens..(hg + 1) * max_tokens];
            for &v in vals.iter() {
                if a * (v as f64 - *lmax) > -1.0 {
                    seg[rs.n_low[hg]] = v;
                    rs.n_low[hg] += 1;
                }
            }
        }
        let m = &mut scratch.mu[hg * closed + i];
        *m = best.min(*m);
    }
    if bits > 0 {
        ps * sk_row
    } else {
        0
    }
}

/// `head[hg]` ← the exact entmax threshold of the token lower bounds kept so far (a
/// rigorous lower bound of the true τ), or −∞ when there are none.
fn tau_lower_bounds(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) -> Result<()> {
    let max_tokens = ctx.closed_pages() * ctx.cache.page_size();
    for hg in 0..ctx.group() {
        let n = scratch.robust.n_low[hg];
        scratch.head[hg] = if n > 0 {
            let lbs = &scratch.tok[hg * max_tokens..hg * max_tokens + n];
            entmax_threshold_f32(lbs, ctx.alpha, &mut scratch.tok_scratch)?
        } else {
            f64::NEG_INFINITY
        };
    }
    Ok(())
}

/// Whether `Σ_t [(α−1)·u_t − τ]_+^{1/(α−1)} ≥ 1` (early exit).
fn mass_at_least_one(ups: &[f32], alpha: f64, tau: f64) -> bool {
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let mut m = 0.0f64;
    for &u in ups {
        let z = a * u as f64 - tau;
        if z > 0.0 {
            m += z.powf(beta);
            if m >= 1.0 {
                return true;
            }
        }
    }
    false
}
