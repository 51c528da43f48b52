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
//!    (`certificate::bounds`: f32 page constants, an exact integer sketch dot, a proven
//!    rounding widening; plus the token's exact ALiBi bias).
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
use crate::certificate::bounds::{
    dots_max, f32_down, f32_up, has_avx512, page_bound, page_bounds_batched, push_lows_dots_f32,
    push_ups_dots_f32, tokens_from, BoundUnit, PageBound, PageRows,
};
use crate::error::Result;
use crate::selection::{SelectScratch, Selection, SelectionContext};
use crate::stats::{sketch, Stat};
use crate::tau::entmax_threshold_f32;
use crate::workspace::grow;
use rayon::prelude::*;

/// Closed pages per block of the bound passes: blocks run in parallel (rayon), each with
/// its own scratch, so one long sequence uses every core.
const BLOCK_PAGES: usize = 128;

/// Scratch of one block of pages.
#[derive(Debug, Clone, Default)]
struct Block {
    rows: PageRows,
    /// `[G, D]` quantised sketch weights of one page, `[G]` its bounds.
    qw: Vec<i16>,
    pbs: Vec<PageBound>,
    /// `[page_size]` sketch dots, upper (f32, rounded up) and lower (f64, then f32 rounded
    /// down) ends of one page and head.
    sdot: Vec<i32>,
    ups_pg: Vec<f32>,
    lows_pg: Vec<f64>,
    vals: Vec<f32>,
    codes: Vec<u8>,
    /// Per head: the block's lower ends that can still enter the τ_lb solve, and (pass 1)
    /// its upper ends above τ̂.
    lows: Vec<Vec<f32>>,
    ups: Vec<Vec<f32>>,
    /// `[G]` running maximum of the block's lower ends (seeded with the task's).
    lmax: Vec<f64>,
}

impl Block {
    fn reserve(&mut self, g: usize, ps: usize, d: usize) {
        self.rows.reserve(d);
        grow(&mut self.qw, g * d);
        grow(&mut self.pbs, g);
        grow(&mut self.sdot, ps);
        grow(&mut self.ups_pg, ps);
        grow(&mut self.lows_pg, ps);
        grow(&mut self.vals, ps);
        grow(&mut self.codes, d);
        grow(&mut self.lmax, g);
        for lists in [&mut self.lows, &mut self.ups] {
            if lists.len() < g {
                lists.resize_with(g, Vec::new);
            }
            for l in lists.iter_mut() {
                if l.capacity() < BLOCK_PAGES * ps {
                    l.reserve(BLOCK_PAGES * ps - l.len());
                }
            }
        }
    }
}

/// Scratch of the robust criterion's bound passes (sized on first use, never shrunk).
#[derive(Debug, Clone, Default)]
pub(crate) struct RobustScratch {
    blocks: Vec<Block>,
    /// `[closed]` pages the current token pass bounds.
    want: Vec<bool>,
    /// `[closed, G]` page-major results of a pass: box upper / lower ends (ALiBi extremes
    /// added) and a token pass's best upper ends.
    pg_hi: Vec<f64>,
    pg_lo: Vec<f64>,
    pg_best: Vec<f64>,
    /// `[G]` lengths of the head's lower-end and upper-end segments of `tok`, and the
    /// running maximum of its lower ends.
    n_low: Vec<usize>,
    n_up: Vec<usize>,
    lmax: Vec<f64>,
    /// Sink pages of the current selection (kept between [`seq_begin`] and [`seq_finish`]).
    sinks: usize,
}

/// Sizes the scratch for `g` heads over `closed` pages: `tok` holds, per head, a segment of
/// lower ends (`[hg·max_tokens..]`) and one of upper ends (`[(G + hg)·max_tokens..]`),
/// filled from the front (lengths in `n_low` / `n_up`).
fn prepare_tokens(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch, max_tokens: usize) {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let (ps, d) = (ctx.cache.page_size(), ctx.cache.head_dim());
    grow(&mut scratch.tok, 2 * g * max_tokens);
    let rs = &mut scratch.robust;
    let nb = closed.div_ceil(BLOCK_PAGES);
    if rs.blocks.len() < nb {
        rs.blocks.resize_with(nb, Block::default);
    }
    for b in &mut rs.blocks[..nb] {
        b.reserve(g, ps, d);
    }
    grow(&mut rs.want, closed);
    grow(&mut rs.pg_hi, closed * g);
    grow(&mut rs.pg_lo, closed * g);
    grow(&mut rs.pg_best, closed * g);
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
    let sinks = begin(ctx, opts, scratch)?;
    let meta =
        out.meta_bytes + ctx.closed_pages() * 2 * ctx.cache.stats().row_bytes(ctx.cache.head_dim());
    // Box bounds of every closed page, and pass 1: pages the Gaussian τ̂ points at, and
    // the sink pages (one read of the rows). Only the lower ends that can enter the τ_lb
    // solve and the upper ends above τ̂ are kept.
    let meta = meta + token_pass(ctx, scratch, Pass::Fused { sinks });
    finish(ctx, scratch, out, meta, sinks)
}

/// [`select`] up to the fused pass: τ̂ per head (into `head`), the scratch sized and
/// reset. Returns the number of sink pages.
fn begin(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
) -> Result<usize> {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let ps = ctx.cache.page_size();
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
    Ok(opts.sink_pages.min(closed))
}

/// [`select`] after the fused pass (`meta`: the statistics and sketch bytes read so far):
/// the trust test of τ̂, τ_lb, pass 2, the kept pages.
fn finish(
    ctx: &SelectionContext<'_>,
    scratch: &mut SelectScratch,
    out: &mut Selection,
    mut meta: usize,
    sinks: usize,
) -> Result<()> {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let max_tokens = closed * ctx.cache.page_size();
    let a = ctx.alpha - 1.0;
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
        let w = scratch.b[i] == 0.0
            && (0..g).any(|hg| a * scratch.mu[hg * closed + i] > threshold(scratch, hg));
        scratch.robust.want[i] = w;
        added |= w;
    }
    if added {
        meta += token_pass(ctx, scratch, Pass::Marked);
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
    scratch.b.clear();
    scratch.b.resize(closed, 0.0);
    scratch.keep.clear();
    scratch.keep.resize(closed, false);
    scratch.head.clear();
    scratch.head.resize(2 * g, f64::NEG_INFINITY);
    let sinks = opts.sink_pages.min(closed);
    let mut meta = closed * 2 * cache.stats().row_bytes(d);
    box_pass(ctx, scratch);
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
        scratch.robust.want[i] =
            i < sinks || (0..g).any(|hg| scratch.mu[hg * closed + i] >= scratch.head[g + hg] - 2.0);
    }
    meta += token_pass(ctx, scratch, Pass::Marked);
    tau_lower_bounds(ctx, scratch)?;
    let per_page = SOFTMAX_DROP_MASS / closed as f64;
    let mut added = false;
    for i in 0..closed {
        let w = scratch.b[i] == 0.0
            && (0..g).any(|hg| {
                ps as f64 * (scratch.mu[hg * closed + i] - scratch.head[hg]).exp() > per_page
            });
        scratch.robust.want[i] = w;
        added |= w;
    }
    if added {
        meta += token_pass(ctx, scratch, Pass::Marked);
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

/// Starts loading the min/max rows (and with `sketch` the sketch block) of the page
/// [`PREFETCH_PAGES`](crate::certificate::bounds::PREFETCH_PAGES) slots after `i`: page
/// rows are scattered through the pool.
#[inline]
fn prefetch_ahead(ctx: &SelectionContext<'_>, i: usize, sketch: bool) {
    let cache = ctx.cache;
    if let Some(&next) = ctx
        .seq
        .pages
        .get(i + crate::certificate::bounds::PREFETCH_PAGES)
    {
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

/// The per-block slices of a pass: `[pages, G]` box upper / lower ends and best upper
/// ends, and the pages' `want` flags.
struct BlockOut<'a> {
    hi: &'a mut [f64],
    lo: &'a mut [f64],
    best: &'a mut [f64],
    want: &'a mut [bool],
}

/// Runs `f(first page, last page, block scratch, block outputs)` over the blocks of closed
/// pages, in parallel when there are several.
fn for_blocks<F>(ctx: &SelectionContext<'_>, rs: &mut RobustScratch, f: F)
where
    F: Fn(usize, usize, &mut Block, BlockOut<'_>) + Sync,
{
    let g = ctx.group();
    let closed = ctx.closed_pages();
    if closed == 0 || g == 0 {
        return;
    }
    let nb = closed.div_ceil(BLOCK_PAGES);
    let blocks = &mut rs.blocks[..nb];
    let hi = &mut rs.pg_hi[..closed * g];
    let lo = &mut rs.pg_lo[..closed * g];
    let best = &mut rs.pg_best[..closed * g];
    let want = &mut rs.want[..closed];
    type Item<'a> = (
        usize,
        (
            (
                ((&'a mut Block, &'a mut [f64]), &'a mut [f64]),
                &'a mut [f64],
            ),
            &'a mut [bool],
        ),
    );
    let run = |(bi, ((((b, hi), lo), best), want)): Item<'_>| {
        let first = bi * BLOCK_PAGES;
        let out = BlockOut { hi, lo, best, want };
        f(first, (first + BLOCK_PAGES).min(closed), b, out);
    };
    if nb > 1 {
        blocks
            .par_iter_mut()
            .zip(hi.par_chunks_mut(BLOCK_PAGES * g))
            .zip(lo.par_chunks_mut(BLOCK_PAGES * g))
            .zip(best.par_chunks_mut(BLOCK_PAGES * g))
            .zip(want.par_chunks_mut(BLOCK_PAGES))
            .enumerate()
            .for_each(run);
    } else {
        run((0, ((((&mut blocks[0], hi), lo), best), want)));
    }
}

/// Box bounds of closed page `i` (rows loaded in `blk`) for every head, ALiBi extremes
/// of the page added, into `hi`/`lo` at `o·G..`; the heads' bounds into `blk.pbs`, their
/// quantised weights into `blk.qw` (with `sketch`).
#[inline]
fn page_boxes(
    ctx: &SelectionContext<'_>,
    i: usize,
    blk: &mut Block,
    sketch: bool,
    hi: &mut [f64],
    lo: &mut [f64],
) {
    let d = ctx.cache.head_dim();
    for hg in 0..ctx.group() {
        let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
        blk.pbs[hg] = page_bound(q, &blk.rows, sketch, &mut blk.qw[hg * d..(hg + 1) * d]);
    }
    boxes_from(ctx, i, blk, hi, lo);
}

/// The box bounds of [`page_boxes`] from the heads' bounds already in `blk.pbs`.
#[inline]
fn boxes_from(ctx: &SelectionContext<'_>, i: usize, blk: &Block, hi: &mut [f64], lo: &mut [f64]) {
    let ps = ctx.cache.page_size();
    let q_pos = ctx.q_pos();
    let start = (i * ps) as f64;
    for hg in 0..ctx.group() {
        let pb = blk.pbs[hg];
        let slope = ctx.slopes[hg] as f64;
        let (b0, b1) = (
            slope * (start - q_pos),
            slope * (start + (ps - 1) as f64 - q_pos),
        );
        hi[hg] = pb.box_hi + b0.max(b1);
        lo[hg] = pb.box_lo + b0.min(b1);
    }
}

/// Box bounds of every closed page and head (f32, widened: [`page_bound`]), ALiBi extremes
/// of the page added: upper into `mu`, lower into `sd`.
fn box_pass(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) {
    let cache = ctx.cache;
    let d = cache.head_dim();
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let fast = has_avx512();
    for_blocks(ctx, &mut scratch.robust, |first, last, blk, out| {
        for i in first..last {
            prefetch_ahead(ctx, i, false);
            let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
            blk.rows.load_fast(fast, cache.stats(), base, d, 0);
            let o = (i - first) * g;
            page_boxes(
                ctx,
                i,
                blk,
                false,
                &mut out.hi[o..o + g],
                &mut out.lo[o..o + g],
            );
        }
    });
    let rs = &scratch.robust;
    for i in 0..closed {
        for hg in 0..g {
            scratch.mu[hg * closed + i] = rs.pg_hi[i * g + hg];
            scratch.sd[hg * closed + i] = rs.pg_lo[i * g + hg];
        }
    }
}

/// Appends the values of `vals` that pass `keep` to `out` without a branch per value
/// (`out` has the capacity of a whole block).
#[inline]
fn compact(out: &mut Vec<f32>, vals: &[f32], keep: impl Fn(f32) -> bool) {
    let n0 = out.len();
    out.resize(n0 + vals.len(), 0.0);
    let tail = &mut out[n0..];
    let mut k = 0;
    for &v in vals {
        tail[k] = v;
        k += keep(v) as usize;
    }
    out.truncate(n0 + k);
}

/// Which pages a token pass bounds.
#[derive(Clone, Copy)]
enum Pass {
    /// The robust criterion's pass 1, fused with the box pass (one read of the rows):
    /// every page's box into `mu`/`sd`, then the pages τ̂ points at (`a·box > τ̂`, `head`)
    /// and the first `sinks` pages are bounded, with their upper ends above τ̂ collected.
    Fused { sinks: usize },
    /// The pages marked in `want`, lower ends only.
    Marked,
}

/// Per-token bounds (sketch, or the box without one) of the pages [`Pass`] selects, for
/// every head: lower ends that can still enter the τ_lb solve go to the head's lower
/// segment of `tok` (f32, rounded down), in the fused pass the upper ends above τ̂
/// (`head[hg]`) to its upper segment (rounded up), and each page's best upper bound to
/// `mu`. Marks the pages bounded (`b`) and returns the sketch bytes read.
fn token_pass(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch, pass: Pass) -> usize {
    let g = ctx.group();
    pass_prelude(ctx, scratch);
    let tau_hat = &scratch.head[..g];
    let fast = has_avx512();
    for_blocks(ctx, &mut scratch.robust, |first, last, blk, mut out| {
        for i in first..last {
            pass_page(
                ctx, fast, true, false, pass, tau_hat, i, first, blk, &mut out,
            );
        }
    });
    pass_merge(ctx, scratch, pass)
}

/// [`token_pass`] before the walk: the blocks' lists emptied, their running maxima seeded.
fn pass_prelude(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) {
    let g = ctx.group();
    let rs = &mut scratch.robust;
    let nb = ctx.closed_pages().div_ceil(BLOCK_PAGES);
    for blk in &mut rs.blocks[..nb] {
        blk.lmax[..g].copy_from_slice(&rs.lmax[..g]);
        for l in blk.lows[..g].iter_mut().chain(blk.ups[..g].iter_mut()) {
            l.clear();
        }
    }
}

/// [`token_pass`] on closed page `i` (in the block starting at page `first`, whose
/// scratch and outputs are `blk`/`out`); `tau_hat` the task's `[G]` τ̂, `prefetch`
/// whether to prefetch the page [`PREFETCH_PAGES`](crate::certificate::bounds::PREFETCH_PAGES)
/// slots on (the per-task walk; the page-major one reads forward streams).
#[allow(clippy::too_many_arguments)]
#[inline]
fn pass_page(
    ctx: &SelectionContext<'_>,
    fast: bool,
    prefetch: bool,
    bounded: bool,
    pass: Pass,
    tau_hat: &[f64],
    i: usize,
    first: usize,
    blk: &mut Block,
    out: &mut BlockOut<'_>,
) {
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let g = ctx.group();
    let bits = cache.config().sketch_bits;
    let a = ctx.alpha - 1.0;
    let sk_row = sketch::row_bytes(d, bits);
    let o = (i - first) * g;
    if let Pass::Fused { sinks } = pass {
        if bounded {
            // Rows and bounds done by the caller (`pass_seq`).
            boxes_from(ctx, i, blk, &mut out.hi[o..o + g], &mut out.lo[o..o + g]);
        } else {
            if prefetch {
                prefetch_ahead(ctx, i, true);
            }
            let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
            blk.rows.load_fast(fast, cache.stats(), base, d, bits);
            page_boxes(
                ctx,
                i,
                blk,
                true,
                &mut out.hi[o..o + g],
                &mut out.lo[o..o + g],
            );
        }
        out.want[i - first] = i < sinks || (0..g).any(|hg| a * out.hi[o + hg] > tau_hat[hg]);
        if !out.want[i - first] {
            return;
        }
    } else {
        if !out.want[i - first] {
            return;
        }
        if prefetch {
            prefetch_ahead(ctx, i, true);
        }
        let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
        blk.rows.load_fast(fast, cache.stats(), base, d, bits);
        for hg in 0..g {
            let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
            blk.pbs[hg] = page_bound(q, &blk.rows, true, &mut blk.qw[hg * d..(hg + 1) * d]);
        }
    }
    let sk = if bits > 0 {
        let skb = cache.sketch_offset(ctx.seq.pages[i], ctx.kv_head);
        &cache.sketch()[skb..skb + ps * sk_row]
    } else {
        &[][..]
    };
    let s0 = (i * ps) as f64 - ctx.q_pos();
    for hg in 0..g {
        let (ups, lows) = (&mut blk.ups_pg[..ps], &mut blk.lows_pg[..ps]);
        let pb = blk.pbs[hg];
        let slope = ctx.slopes[hg] as f64;
        let qw = &blk.qw[hg * d..(hg + 1) * d];
        let sdot = &mut blk.sdot[..ps];
        // Without ALiBi the largest ends are those of the largest sketch dot (bit for bit,
        // `dots_max`), and the per-token ends are formed only where a page's largest passes
        // a filter below (`lazy`); with ALiBi every token's ends are formed here.
        let lazy = slope == 0.0;
        let (umax, lmx) = if lazy {
            let smax = dots_max(fast, qw, sk, sk_row, bits, sdot, &mut blk.codes);
            let (l, u) = pb.interval(smax);
            (f32_up(u), l)
        } else {
            tokens_from(
                fast,
                &pb,
                qw,
                sk,
                sk_row,
                bits,
                slope,
                s0,
                sdot,
                &mut blk.codes,
                ups,
                lows,
            )
        };
        out.best[o + hg] = umax as f64;
        let pmax = f32_down(lmx) as f64;
        let lmax = blk.lmax[hg];
        let lows_pass = pmax > lmax || a * (pmax - lmax) > -1.0;
        // The upper-end filter `a·u − th > 0` is monotone in u (a ≥ 0): no token passes
        // unless the largest does, and the list is then left as it is.
        let ups_pass = match pass {
            Pass::Fused { .. } => !(a >= 0.0 && a * umax as f64 - tau_hat[hg] <= 0.0),
            Pass::Marked => false,
        };
        if ups_pass && lazy {
            let sdot = &blk.sdot[..ps];
            push_ups_dots_f32(fast, &mut blk.ups[hg], &pb, sdot, a, tau_hat[hg]);
        } else if ups_pass {
            let th = tau_hat[hg];
            let list = &mut blk.ups[hg];
            #[cfg(target_arch = "x86_64")]
            if fast && list.capacity() - list.len() >= ps {
                // SAFETY: `fast` only where `has_avx512()` holds; room checked.
                unsafe { crate::certificate::bounds::avx512::compact_ups_f32(list, ups, a, th) };
            } else {
                compact(list, ups, |u| a * u as f64 - th > 0.0);
            }
            #[cfg(not(target_arch = "x86_64"))]
            compact(list, ups, |u| a * u as f64 - th > 0.0);
        }
        // Lower ends: only those within 1/a of the running maximum can be candidates of
        // the τ_lb solve (as in `certified`); the rest are dropped. f32_down is monotone,
        // so the largest rounded value is f32_down(lmx).
        // Without ALiBi the filter runs whatever the page's largest end (no branch on it,
        // which the predictor misses often): where `lows_pass` fails the largest is at
        // most the running maximum, which then stays, and the per-token test drops every
        // end (a ≥ 0, each step monotone), so the same list either way.
        if lows_pass || lazy {
            let lmax = &mut blk.lmax[hg];
            *lmax = lmax.max(pmax);
            let m = *lmax;
            let list = &mut blk.lows[hg];
            if lazy {
                push_lows_dots_f32(fast, list, &pb, &blk.sdot[..ps], a, m);
                continue;
            }
            #[cfg(target_arch = "x86_64")]
            if fast && list.capacity() - list.len() >= ps {
                // SAFETY: `fast` only where `has_avx512()` holds; room checked.
                unsafe { crate::certificate::bounds::avx512::compact_lows_f32(list, lows, a, m) };
                continue;
            }
            let vals = &mut blk.vals[..ps];
            for (v, &l) in vals.iter_mut().zip(lows.iter()) {
                *v = f32_down(l);
            }
            compact(list, vals, |v| a * (v as f64 - m) > -1.0);
        }
    }
}

/// [`token_pass`] after the walk: boxes (fused pass), flags, best upper ends, and the
/// blocks' lists into the head segments. Returns the sketch bytes read.
fn pass_merge(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch, pass: Pass) -> usize {
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let max_tokens = closed * ps;
    let bits = cache.config().sketch_bits;
    let nb = closed.div_ceil(BLOCK_PAGES);
    let rs = &mut scratch.robust;
    let mut pages = 0usize;
    for i in 0..closed {
        if let Pass::Fused { .. } = pass {
            for hg in 0..g {
                scratch.mu[hg * closed + i] = rs.pg_hi[i * g + hg];
                scratch.sd[hg * closed + i] = rs.pg_lo[i * g + hg];
            }
        }
        if !rs.want[i] {
            continue;
        }
        pages += 1;
        scratch.b[i] = 1.0;
        for hg in 0..g {
            let m = &mut scratch.mu[hg * closed + i];
            *m = rs.pg_best[i * g + hg].min(*m);
        }
    }
    for blk in &rs.blocks[..nb] {
        for hg in 0..g {
            let (nl, nu) = (blk.lows[hg].len(), blk.ups[hg].len());
            let at = hg * max_tokens + rs.n_low[hg];
            scratch.tok[at..at + nl].copy_from_slice(&blk.lows[hg]);
            rs.n_low[hg] += nl;
            let at = (g + hg) * max_tokens + rs.n_up[hg];
            scratch.tok[at..at + nu].copy_from_slice(&blk.ups[hg]);
            rs.n_up[hg] += nu;
            rs.lmax[hg] = rs.lmax[hg].max(blk.lmax[hg]);
        }
    }
    if bits > 0 {
        pages * ps * sketch::row_bytes(d, bits)
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

/// One task of [`pass_seq`] (the robust criterion's fused pass, page-major over all tasks
/// of a sequence): its kv head, query heads `h0..h0 + group`, sink pages, and raw
/// pointers to its scratch (taken by [`seq_begin`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqTask {
    kv_head: usize,
    h0: usize,
    group: usize,
    sinks: usize,
    blocks: *mut Block,
    hi: *mut f64,
    lo: *mut f64,
    best: *mut f64,
    want: *mut bool,
    tau_hat: *const f64,
    /// [`moments_seq`]: `[blocks, 2D]` row scratch (the task's `pm_rows`).
    rows: *mut f32,
}

// SAFETY: the pointers are only dereferenced by `pass_seq`, whose jobs touch disjoint
// blocks of every task (and only read τ̂).
unsafe impl Send for SeqTask {}
unsafe impl Sync for SeqTask {}

/// [`super::select`] with the robust criterion and α ≠ 1, its first part for the
/// page-major passes of a sequence: the checks and early returns, the moments' buffers
/// sized. Returns the task for [`moments_seq`] (and later [`pass_seq`]), or `None` when
/// the selection is already complete (a single page). Then [`moments_seq`], then
/// [`seq_begin_pass`]; the scratch must not be touched in between.
pub(crate) fn seq_begin(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    out: &mut Selection,
    h0: usize,
) -> Result<Option<SeqTask>> {
    const OP: &str = "gaussian::select";
    opts.validate(OP)?;
    let g = ctx.group();
    out.reset(g);
    let closed = ctx.closed_pages();
    debug_assert!(ctx.alpha != 1.0 && opts.criterion == super::Criterion::Robust);
    if closed == 0 {
        keep_all(ctx, out);
        return Ok(None);
    }
    scratch.reserve_pages(g, closed);
    // As `model::page_moments`: `[G, closed]` μ_p and σ_p, filled by `moments_seq`.
    scratch.mu.clear();
    scratch.mu.resize(g * closed, 0.0);
    scratch.sd.clear();
    scratch.sd.resize(g * closed, 0.0);
    let d = ctx.cache.head_dim();
    let need = closed.div_ceil(BLOCK_PAGES) * 2 * d;
    if scratch.pm_rows.len() < need {
        scratch.pm_rows.resize(need, 0.0);
    }
    Ok(Some(SeqTask {
        kv_head: ctx.kv_head,
        h0,
        group: g,
        sinks: 0,
        blocks: std::ptr::null_mut(),
        hi: scratch.mu.as_mut_ptr(),
        lo: scratch.sd.as_mut_ptr(),
        best: std::ptr::null_mut(),
        want: std::ptr::null_mut(),
        tau_hat: std::ptr::null(),
        rows: scratch.pm_rows.as_mut_ptr(),
    }))
}

/// Every page into the selection (nothing to drop, or no model).
fn keep_all(ctx: &SelectionContext<'_>, out: &mut Selection) {
    out.pages.clear();
    for i in 0..ctx.seq.pages.len() {
        out.pages.push(ctx.page_ref(i));
    }
}

/// After [`moments_seq`]: the rest of [`super::select`] up to the fused pass (the finite
/// check, τ̂, the scratch prepared). Returns the task for [`pass_seq`], or `None` when the
/// selection is complete (non-finite statistics).
pub(crate) fn seq_begin_pass(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    out: &mut Selection,
    h0: usize,
) -> Result<Option<SeqTask>> {
    let closed = ctx.closed_pages();
    out.meta_bytes = closed * 2 * ctx.cache.stats().row_bytes(ctx.cache.head_dim());
    if !scratch.mu.iter().chain(&scratch.sd).all(|x| x.is_finite()) {
        keep_all(ctx, out);
        return Ok(None);
    }
    let sinks = begin(ctx, opts, scratch)?;
    pass_prelude(ctx, scratch);
    let rs = &mut scratch.robust;
    rs.sinks = sinks;
    Ok(Some(SeqTask {
        kv_head: ctx.kv_head,
        h0,
        group: ctx.group(),
        sinks,
        blocks: rs.blocks.as_mut_ptr(),
        hi: rs.pg_hi.as_mut_ptr(),
        lo: rs.pg_lo.as_mut_ptr(),
        best: rs.pg_best.as_mut_ptr(),
        want: rs.want.as_mut_ptr(),
        tau_hat: scratch.head.as_ptr(),
        rows: scratch.pm_rows.as_mut_ptr(),
    }))
}

/// `model::page_moments`' `(Σ q_d·m_d, Σ (q_d·s_d)²)`, operation for operation (eight f32
/// lanes with fused multiply-adds, then the lanes summed in order from −0): the same bits
/// (tested against `model::page_moments`).
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

/// How far ahead [`moments_seq`] prefetches (rounded up to pages).
const MOMENTS_PREFETCH_BYTES: usize = 8 * 1024;

/// `model::page_moments` of every task of one sequence (tasks from [`seq_begin`]),
/// page-major: a page's mean and std rows of all kv heads are contiguous, read once as
/// forward streams, where each task's own walk reads a scattered slice per page. Writes
/// each task's `[G, closed]` μ_p / σ_p, the same bits as `model::page_moments` (tested).
///
/// # Safety
/// As [`pass_seq`], for tasks from [`seq_begin`].
pub(crate) unsafe fn moments_seq(
    cache: &crate::cache::PagedKvCache,
    seq: crate::cache::SeqView<'_>,
    tasks: &[SeqTask],
    q_scaled: &[f32],
) {
    let d = cache.head_dim();
    let closed = seq.pages.len().saturating_sub(1);
    if closed == 0 || tasks.is_empty() {
        return;
    }
    let stats = cache.stats();
    let nb = closed.div_ceil(BLOCK_PAGES);
    let fast = crate::certificate::bounds::has_avx512() && d.is_multiple_of(16);
    // A steady prefetch of the same rows a fixed distance down the page list (one line per
    // line consumed): 2 to 6 pages ahead took the robust selection from ~9.5 to ~7.5 ms in
    // alternated runs (2 threads, 128K, 8 kv heads); the hardware prefetchers alone leave
    // the walk waiting.
    let ahead_m = MOMENTS_PREFETCH_BYTES
        .div_ceil((2 * cache.num_kv_heads() * stats.row_bytes(d)).max(1))
        .max(1);
    let run = |bi: usize| {
        // SAFETY (the caller's contract): the first task's `[blocks, 2D]` row scratch;
        // block bi's rows belong to this job only.
        let rows = unsafe { std::slice::from_raw_parts_mut(tasks[0].rows.add(bi * 2 * d), 2 * d) };
        let (r0, r1) = rows.split_at_mut(d);
        let first = bi * BLOCK_PAGES;
        for i in first..(first + BLOCK_PAGES).min(closed) {
            let page = seq.pages[i];
            let next = seq.pages.get(i + ahead_m).copied();
            for t in tasks {
                if let Some(next) = next {
                    let nb = cache.stats_offset(next, t.kv_head);
                    stats.prefetch_row(Stat::Mean, nb, d);
                    stats.prefetch_row(Stat::Std, nb, d);
                }
                let base = cache.stats_offset(page, t.kv_head);
                // The rows in their storage type, widened in registers (as
                // `model::seq_page_moments`): `mean_var_typed` is `mean_var` bit for bit.
                #[cfg(all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "fma",
                    target_feature = "f16c"
                ))]
                if d.is_multiple_of(8) {
                    for hg in 0..t.group {
                        let h = t.h0 + hg;
                        let q = &q_scaled[h * d..(h + 1) * d];
                        let (mu, var) = crate::with_stats!(stats, |a| model::mean_var_typed(
                            q,
                            &a[Stat::Mean as usize][base..base + d],
                            &a[Stat::Std as usize][base..base + d],
                        ));
                        // SAFETY (the caller's contract): `[G, closed]` buffers of this
                        // task; page i belongs to this job only.
                        unsafe {
                            *t.hi.add(hg * closed + i) = mu as f64;
                            *t.lo.add(hg * closed + i) = (var as f64).sqrt();
                        }
                    }
                    continue;
                }
                #[cfg(target_arch = "x86_64")]
                if fast {
                    // SAFETY: AVX-512 present (`fast`), D a multiple of 16, the rows inside
                    // the statistics (a closed page of the sequence).
                    unsafe {
                        crate::certificate::bounds::avx512::read_row(stats, Stat::Mean, base, r0);
                        crate::certificate::bounds::avx512::read_row(stats, Stat::Std, base, r1);
                    }
                } else {
                    stats.read_row(Stat::Mean, base, r0);
                    stats.read_row(Stat::Std, base, r1);
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    stats.read_row(Stat::Mean, base, r0);
                    stats.read_row(Stat::Std, base, r1);
                }
                for hg in 0..t.group {
                    let h = t.h0 + hg;
                    let (mu, var) = mean_var(&q_scaled[h * d..(h + 1) * d], r0, r1);
                    // SAFETY (the caller's contract): `[G, closed]` buffers of this task;
                    // page i belongs to this job only.
                    unsafe {
                        *t.hi.add(hg * closed + i) = mu as f64;
                        *t.lo.add(hg * closed + i) = (var as f64).sqrt();
                    }
                }
            }
        }
    };
    if nb > 1 {
        (0..nb).into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

/// [`super::select`] after [`pass_seq`] (for a task [`seq_begin`] returned).
pub(crate) fn seq_finish(
    ctx: &SelectionContext<'_>,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    let closed = ctx.closed_pages();
    let sinks = scratch.robust.sinks;
    let meta = out.meta_bytes
        + closed * 2 * ctx.cache.stats().row_bytes(ctx.cache.head_dim())
        + pass_merge(ctx, scratch, Pass::Fused { sinks });
    finish(ctx, scratch, out, meta, sinks)
}

/// The fused pass (box bounds of every closed page, token bounds of the pages pass 1
/// picks) of every task of one sequence, page-major: a page's min/max rows and sketch
/// blocks of all kv heads are contiguous, so one walk over the pages reads them as forward
/// streams, where each task's own walk reads a scattered slice per page. Each task's
/// results are exactly those of its own pass (the same [`pass_page`] on the same pages in
/// the same block order; tested). `q_scaled` is the sequence's `[H, D]`, `slopes` `[H]`.
///
/// # Safety
/// The tasks come from [`seq_begin`] on distinct scratches for this sequence, alive and
/// otherwise untouched until the call returns.
pub(crate) unsafe fn pass_seq(
    cache: &crate::cache::PagedKvCache,
    seq: crate::cache::SeqView<'_>,
    tasks: &[SeqTask],
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
) {
    let d = cache.head_dim();
    let closed = seq.pages.len().saturating_sub(1);
    if closed == 0 || tasks.is_empty() {
        return;
    }
    let fast = has_avx512();
    let nb = closed.div_ceil(BLOCK_PAGES);
    let bits = cache.config().sketch_bits;
    let run = |bi: usize| {
        let first = bi * BLOCK_PAGES;
        let last = (first + BLOCK_PAGES).min(closed);
        // SAFETY (the caller's contract): block `bi` of every task is touched by this job
        // only.
        let blk = |t: &SeqTask| unsafe { &mut *t.blocks.add(bi) };
        for i in first..last {
            // Phase 1: every task's rows; phase 2: every head's page bound, batched across
            // tasks (`page_bounds`); phase 3: the rest of `pass_page` per task.
            // (No software prefetch here: one the certified pass's way, 2–3 pages ahead,
            // measured ~0.5 ms slower.)
            for t in tasks {
                let base = cache.stats_offset(seq.pages[i], t.kv_head);
                blk(t).rows.load_fast(fast, cache.stats(), base, d, bits);
            }
            let units = tasks.iter().enumerate().flat_map(|(ti, t)| {
                let b = blk(t);
                (0..t.group).map(move |hg| {
                    let unit = BoundUnit {
                        w: q_scaled[(t.h0 + hg) * d..].as_ptr(),
                        rows: &b.rows,
                        q: b.qw[hg * d..].as_mut_ptr(),
                    };
                    (unit, (ti, hg))
                })
            });
            // SAFETY: distinct (task, head) units: their queries, their block's rows
            // and weights (D each).
            unsafe { page_bounds_batched(d, units, |(ti, hg), pb| blk(&tasks[ti]).pbs[hg] = pb) };
            for t in tasks {
                let g = t.group;
                let ctx = SelectionContext {
                    cache,
                    seq,
                    kv_head: t.kv_head,
                    q_scaled: &q_scaled[t.h0 * d..(t.h0 + g) * d],
                    slopes: &slopes[t.h0..t.h0 + g],
                    alpha,
                };
                let n = last - first;
                // SAFETY (the caller's contract): this task's page-major outputs of pages
                // first..last are touched by this job only; τ̂ is only read.
                let (mut out, tau_hat) = unsafe {
                    (
                        BlockOut {
                            hi: std::slice::from_raw_parts_mut(t.hi.add(first * g), n * g),
                            lo: std::slice::from_raw_parts_mut(t.lo.add(first * g), n * g),
                            best: std::slice::from_raw_parts_mut(t.best.add(first * g), n * g),
                            want: std::slice::from_raw_parts_mut(t.want.add(first), n),
                        },
                        std::slice::from_raw_parts(t.tau_hat, g),
                    )
                };
                let pass = Pass::Fused { sinks: t.sinks };
                pass_page(
                    &ctx,
                    fast,
                    false,
                    true,
                    pass,
                    tau_hat,
                    i,
                    first,
                    blk(t),
                    &mut out,
                );
            }
        }
    };
    if nb > 1 {
        (0..nb).into_par_iter().for_each(run);
    } else {
        run(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::{CacheConfig, StatsDType};
    use crate::selection::gaussian::Criterion;
    use crate::synth::{Synth, Workload};
    use crate::DType;

    /// Reference selections for `scripts/robust_host_check.py`'s pipeline check (the GPU
    /// kernels' control flow, `gpu/kernels/robust.cu`, replayed on the host with the shared
    /// `robust_bound.cuh`): with `ENTMAXKV_ROBUST_SEL_REF` set, writes one line per task —
    /// the shape, α, sink pages, the CPU's τ̂ per head (the host replay takes it as given:
    /// the device's own τ̂ is checked by the GPU tests), the scaled queries and slopes, every
    /// closed page's min/max rows and sketch bytes — and the CPU selection (kept closed
    /// pages, T per head). Trials 48.. are the softmax mode (α = 1, [`select_softmax`]):
    /// τ̂ written as NaN, and L per head (the log-sum-exp lower bound left in `head`) in
    /// place of T. Ignored: a dump, not a check.
    #[test]
    #[ignore]
    fn robust_selection_reference_dump() {
        use std::fmt::Write as _;
        let Ok(path) = std::env::var("ENTMAXKV_ROBUST_SEL_REF") else {
            return;
        };
        let hx = |v: &[f32]| {
            v.iter()
                .map(|x| format!("{:08x}", x.to_bits()))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut out = String::new();
        let mut lines = 0usize;
        for trial in 0..72u64 {
            let (hkv, group) = (
                [1usize, 2][trial as usize % 2],
                [1usize, 2, 4][trial as usize / 2 % 3],
            );
            let h = hkv * group;
            let d = [64usize, 128, 40][trial as usize / 6 % 3];
            let ps = [16usize, 16, 32][trial as usize % 3];
            let lens = [
                vec![1500 + 37 * trial as usize, 17, 5],
                vec![6000 + trial as usize],
            ][trial as usize / 18 % 2]
                .clone();
            let wl =
                [Workload::Iid, Workload::Structured, Workload::Adversarial][trial as usize % 3];
            let mut syn = Synth::new(100 + trial);
            let prob = syn.problem(wl, &lens, h, hkv, d);
            let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
            let (kvd, sd) = [
                (DType::F16, StatsDType::Kv),
                (DType::F32, StatsDType::F32),
                (DType::Bf16, StatsDType::Kv),
            ][trial as usize % 3];
            let bits = [4u32, 2, 0, 8, 3][trial as usize % 5];
            let cfg = CacheConfig::new(hkv, d, pages)
                .with_page_size(ps)
                .with_kv_dtype(kvd)
                .with_stats_dtype(sd)
                .with_sketch_bits(bits);
            let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
            let alpha = if trial >= 48 {
                1.0
            } else {
                [1.5, 2.0, 4.0 / 3.0, 1.7, 3.0][trial as usize % 5]
            };
            let opts = GaussianOpts {
                sink_pages: (trial % 3) as usize,
                ..GaussianOpts::default().with_criterion(Criterion::Robust)
            };
            let scale = 1.0 / (d as f32).sqrt();
            let qs: Vec<f32> = prob.q.iter().map(|x| x * scale).collect();
            let slopes: Vec<f32> = (0..h)
                .map(|i| {
                    if trial % 4 == 1 {
                        -0.01 * (i + 1) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let rb = sketch::row_bytes(d, bits);
            for (b, &id) in ids.iter().enumerate() {
                let seq = cache.seq(id).unwrap();
                let closed = seq.pages.len() - 1;
                if closed == 0 {
                    continue;
                }
                let qb = &qs[b * h * d..(b + 1) * h * d];
                for h0 in (0..h).step_by(group) {
                    let ctx = SelectionContext {
                        cache: &cache,
                        seq,
                        kv_head: h0 / group,
                        q_scaled: &qb[h0 * d..(h0 + group) * d],
                        slopes: &slopes[h0..h0 + group],
                        alpha,
                    };
                    let mut scr = SelectScratch::new(seq.pages.len(), d);
                    let mut sel = Selection::with_capacity(seq.pages.len(), group);
                    super::super::select(&ctx, &opts, &mut scr, &mut sel).unwrap();
                    let mut that = Vec::new();
                    if alpha == 1.0 {
                        that.resize(group, f64::NAN);
                    } else {
                        let mut s2 = SelectScratch::new(seq.pages.len(), d);
                        s2.reserve_pages(group, closed);
                        model::page_moments(&ctx, &mut s2);
                        for hg in 0..group {
                            that.push(model::head_model(&ctx, &opts, &mut s2, hg).unwrap().tau_hat);
                        }
                    }
                    let _ = write!(
                        out,
                        "{d} {bits} {ps} {:016x} {closed} {group} {} {:016x} ",
                        alpha.to_bits(),
                        opts.sink_pages,
                        ctx.q_pos().to_bits()
                    );
                    let th: Vec<String> = that
                        .iter()
                        .map(|x| format!("{:016x}", x.to_bits()))
                        .collect();
                    let _ = write!(
                        out,
                        "{} {} {} ",
                        th.join(","),
                        hx(ctx.q_scaled),
                        hx(ctx.slopes)
                    );
                    let (mut lo, mut hi) = (vec![0f32; d], vec![0f32; d]);
                    let mut rows = Vec::new();
                    let mut sk = String::new();
                    for i in 0..closed {
                        let base = cache.stats_offset(seq.pages[i], ctx.kv_head);
                        cache.stats().read_row(Stat::Min, base, &mut lo);
                        cache.stats().read_row(Stat::Max, base, &mut hi);
                        rows.push(hx(&lo));
                        rows.push(hx(&hi));
                        if bits > 0 {
                            let sb = cache.sketch_offset(seq.pages[i], ctx.kv_head);
                            for byte in &cache.sketch()[sb..sb + ps * rb] {
                                let _ = write!(sk, "{byte:02x}");
                            }
                        }
                    }
                    let _ = write!(
                        out,
                        "{} {} ",
                        rows.join(";"),
                        if sk.is_empty() { "-" } else { &sk }
                    );
                    let kept: Vec<String> = sel.pages[..sel.pages.len() - 1]
                        .iter()
                        .map(|p| (p.start as usize / ps).to_string())
                        .collect();
                    // T per head, or L (softmax mode: `head[..group]` after the selection).
                    let ts = if alpha == 1.0 {
                        &scr.head[..group]
                    } else {
                        &sel.tau_hat[..group]
                    };
                    let tt: Vec<String> =
                        ts.iter().map(|x| format!("{:016x}", x.to_bits())).collect();
                    let _ = writeln!(
                        out,
                        "{} {}",
                        if kept.is_empty() {
                            "-".to_string()
                        } else {
                            kept.join(",")
                        },
                        tt.join(",")
                    );
                    lines += 1;
                }
            }
        }
        std::fs::write(&path, out).unwrap();
        eprintln!("robust_selection_reference_dump: {lines} tasks into {path}");
    }

    /// The page-major fused pass ([`seq_begin`], [`pass_seq`], [`seq_finish`]) selects
    /// exactly what the per-task [`super::super::select`] does: pages, τ̂ bits, bytes read;
    /// GQA groups, ALiBi, several sequences, statistics dtypes, sink pages, sketch widths.
    #[test]
    fn page_major_pass_equals_per_task_select() {
        for trial in 0..24u64 {
            let (hkv, group) = (
                [1usize, 2, 4][trial as usize % 3],
                [1usize, 2][trial as usize / 3 % 2],
            );
            let h = hkv * group;
            let d = [64usize, 32][trial as usize / 6 % 2];
            let ps = 16;
            let lens = [vec![3000usize + 97 * trial as usize], vec![2500, 17, 4100]]
                [trial as usize / 12 % 2]
                .clone();
            let mut syn = Synth::new(trial);
            let wl = if trial % 2 == 0 {
                Workload::Structured
            } else {
                Workload::Iid
            };
            let prob = syn.problem(wl, &lens, h, hkv, d);
            let pages: usize = lens.iter().map(|l| l.div_ceil(ps)).sum();
            let (kvd, sd) = [
                (DType::F16, StatsDType::Kv),
                (DType::F32, StatsDType::F32),
                (DType::Bf16, StatsDType::Kv),
                (DType::F16, StatsDType::F32),
            ][trial as usize % 4];
            let bits = [4u32, 4, 2, 8][trial as usize / 4 % 4];
            let cfg = CacheConfig::new(hkv, d, pages)
                .with_kv_dtype(kvd)
                .with_stats_dtype(sd)
                .with_sketch_bits(bits);
            let (cache, ids) = prob.build_cache(cfg, 0).unwrap();
            let alpha = [1.5, 2.0, 4.0 / 3.0][trial as usize % 3];
            let opts = GaussianOpts {
                sink_pages: (trial % 3) as usize,
                ..GaussianOpts::default().with_criterion(Criterion::Robust)
            };
            let scale = 1.0 / (d as f32).sqrt();
            let qs: Vec<f32> = prob.q.iter().map(|x| x * scale).collect();
            let slopes: Vec<f32> = (0..h)
                .map(|i| {
                    if trial % 4 == 1 {
                        -0.01 * (i + 1) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            for (b, &id) in ids.iter().enumerate() {
                let seq = cache.seq(id).unwrap();
                let qb = &qs[b * h * d..(b + 1) * h * d];
                let ctx_of = |h0: usize| SelectionContext {
                    cache: &cache,
                    seq,
                    kv_head: h0 / group,
                    q_scaled: &qb[h0 * d..(h0 + group) * d],
                    slopes: &slopes[h0..h0 + group],
                    alpha,
                };
                let heads: Vec<usize> = (0..h).step_by(group).collect();
                let mut scr: Vec<SelectScratch> = heads
                    .iter()
                    .map(|_| SelectScratch::new(seq.pages.len(), d))
                    .collect();
                let mut sel: Vec<Selection> = heads
                    .iter()
                    .map(|_| Selection::with_capacity(seq.pages.len(), group))
                    .collect();
                let mut tasks = Vec::new();
                for (j, &h0) in heads.iter().enumerate() {
                    if let Some(t) =
                        seq_begin(&ctx_of(h0), &opts, &mut scr[j], &mut sel[j], h0).unwrap()
                    {
                        tasks.push(t);
                    }
                }
                // SAFETY: distinct scratches prepared just above.
                unsafe { moments_seq(&cache, seq, &tasks, qb) };
                // The moments equal `model::page_moments` bit for bit.
                for (j, &h0) in heads.iter().enumerate() {
                    if seq.pages.len() > 1 {
                        let mut s1 = SelectScratch::new(seq.pages.len(), d);
                        model::page_moments(&ctx_of(h0), &mut s1);
                        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(bits(&scr[j].mu), bits(&s1.mu), "trial {trial} mu");
                        assert_eq!(bits(&scr[j].sd), bits(&s1.sd), "trial {trial} sd");
                    }
                }
                tasks.clear();
                for (j, &h0) in heads.iter().enumerate() {
                    if seq.pages.len() > 1 {
                        if let Some(t) =
                            seq_begin_pass(&ctx_of(h0), &opts, &mut scr[j], &mut sel[j], h0)
                                .unwrap()
                        {
                            tasks.push(t);
                        }
                    }
                }
                // SAFETY: distinct scratches prepared just above.
                unsafe { pass_seq(&cache, seq, &tasks, qb, &slopes, alpha) };
                let active = tasks.len();
                for (j, &h0) in heads.iter().enumerate() {
                    if seq.pages.len() > 1 {
                        seq_finish(&ctx_of(h0), &mut scr[j], &mut sel[j]).unwrap();
                    }
                    let mut s1 = SelectScratch::new(seq.pages.len(), d);
                    let mut sel1 = Selection::with_capacity(seq.pages.len(), group);
                    super::super::select(&ctx_of(h0), &opts, &mut s1, &mut sel1).unwrap();
                    assert_eq!(sel[j].pages, sel1.pages, "trial {trial} seq {b} head {h0}");
                    let t0: Vec<u64> = sel[j].tau_hat.iter().map(|x| x.to_bits()).collect();
                    let t1: Vec<u64> = sel1.tau_hat.iter().map(|x| x.to_bits()).collect();
                    assert_eq!(t0, t1, "trial {trial}");
                    assert_eq!(sel[j].meta_bytes, sel1.meta_bytes, "trial {trial}");
                }
                assert!(seq.pages.len() == 1 || active == heads.len());
            }
        }
    }
}
