//! Top-k page selection (Quest): rank closed pages by an upper bound of their best score,
//! keep the best within a token budget, always keep the last page.
//!
//! The bound of page p for query head h, in score units (scale applied):
//! `u = Σ_d max(q_d·kmin_d, q_d·kmax_d) + slope_h·(last_pos(p) − q_pos)`, the largest q·k
//! any key inside the page's per-channel box can reach plus the largest ALiBi bias in the
//! page. (The original added an unscaled q·k bound to a scaled ALiBi bias: SPEC §8.1.4.)

pub use super::topk_sketch::TopkScoring;
use super::{SelectScratch, Selection, SelectionContext};
use crate::attention::cpu::prefetch;
use crate::certificate::bounds::PREFETCH_PAGES;
use crate::dtype::KvElem;
use crate::error::{Error, Result};
use crate::stats::Stat;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How many tokens top-k may read (the last page comes on top).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Budget {
    /// An absolute number of tokens: `floor(tokens / page_size)` closed pages.
    Tokens(usize),
    /// A fraction of the closed pages, rounded up (at least one page).
    Fraction(f64),
}

impl Budget {
    pub fn validate(&self, op: &'static str) -> Result<()> {
        match *self {
            Budget::Tokens(0) => Err(Error::invalid(op, "budget", 0, "must be >= 1 token")),
            Budget::Fraction(f) if !(f > 0.0 && f <= 1.0) => Err(Error::invalid(
                op,
                "budget",
                f,
                "a fraction must be in (0, 1]",
            )),
            _ => Ok(()),
        }
    }

    /// Closed pages to keep out of `closed`.
    pub fn pages(&self, closed: usize, page_size: usize) -> usize {
        match *self {
            Budget::Tokens(t) => (t / page_size).min(closed),
            Budget::Fraction(f) => ((f * closed as f64).ceil() as usize)
                .clamp(1, closed.max(1))
                .min(closed),
        }
    }
}

/// Closed pages per block of [`page_bounds`] (blocks run in parallel).
const BLOCK_PAGES: usize = 256;

/// A block's index, its slice of the page scores and its rows scratch.
type BlockItem<'a> = (usize, (&'a mut [(f32, u32)], &'a mut [f32]));

/// The key-range bound of every closed page for every head of the task, written as the
/// group maximum into `scratch.scored` (one entry per closed page); blocks of pages run in
/// parallel. Returns metadata bytes read.
pub fn page_bounds(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) -> usize {
    let cache = ctx.cache;
    let closed = ctx.closed_pages();
    let d = cache.head_dim();
    scratch.scored.clear();
    scratch.scored.resize(closed, (0.0, 0));
    let nb = closed.div_ceil(BLOCK_PAGES);
    if scratch.pm_rows.len() < nb * 2 * d {
        scratch.pm_rows.resize(nb * 2 * d, 0.0);
    }
    let (scored, rows) = (&mut scratch.scored[..], &mut scratch.pm_rows[..nb * 2 * d]);
    crate::with_stats!(cache.stats(), |a| {
        let (kmin, kmax) = (&a[Stat::Min as usize], &a[Stat::Max as usize]);
        let run = |(bi, (out, rows)): BlockItem<'_>| {
            bounds_typed(ctx, kmin, kmax, bi * BLOCK_PAGES, rows, out)
        };
        if nb > 1 {
            scored
                .par_chunks_mut(BLOCK_PAGES)
                .zip(rows.par_chunks_mut(2 * d))
                .enumerate()
                .for_each(run);
        } else if nb == 1 {
            run((0, (scored, rows)));
        }
    });
    closed * 2 * cache.stats().row_bytes(d)
}

/// Bounds of closed pages `first..first + out.len()` into `out` (`rows`: 2·D scratch).
fn bounds_typed<T: KvElem>(
    ctx: &SelectionContext<'_>,
    kmin: &[T],
    kmax: &[T],
    first: usize,
    rows: &mut [f32],
    out: &mut [(f32, u32)],
) {
    let cache = ctx.cache;
    let (d, ps) = (cache.head_dim(), cache.page_size());
    let g = ctx.group();
    let q_pos = ctx.q_pos() as f32;
    let (lo, hi) = rows.split_at_mut(d);
    for (j, o) in out.iter_mut().enumerate() {
        let i = first + j;
        let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
        if let Some(&next) = ctx.seq.pages.get(i + PREFETCH_PAGES) {
            let nb = cache.stats_offset(next, ctx.kv_head);
            prefetch(&kmin[nb..nb + d]);
            prefetch(&kmax[nb..nb + d]);
        }
        T::slice_to_f32(&kmin[base..base + d], lo);
        T::slice_to_f32(&kmax[base..base + d], hi);
        let last_pos = (i * ps + ps - 1) as f32;
        let mut best = f32::NEG_INFINITY;
        for hg in 0..g {
            let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
            let u = box_bound(q, lo, hi) + ctx.slopes[hg] * (last_pos - q_pos);
            best = best.max(u);
        }
        *o = (best, i as u32);
    }
}

/// `Σ_d max(q_d·lo_d, q_d·hi_d)`: the largest `q·k` over the box `lo ≤ k ≤ hi`.
#[inline]
pub fn box_bound(q: &[f32], lo: &[f32], hi: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (qc, lc, hc) = (q.chunks_exact(8), lo.chunks_exact(8), hi.chunks_exact(8));
    let (qr, lr, hr) = (qc.remainder(), lc.remainder(), hc.remainder());
    for ((q8, l8), h8) in qc.zip(lc).zip(hc) {
        for j in 0..8 {
            acc[j] += (q8[j] * l8[j]).max(q8[j] * h8[j]);
        }
    }
    let mut u = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for j in 0..qr.len() {
        u += (qr[j] * lr[j]).max(qr[j] * hr[j]);
    }
    u
}

/// Top-k selection for one task.
pub fn select(
    ctx: &SelectionContext<'_>,
    budget: Budget,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    select_pinned(ctx, budget, 0, 0, scratch, out)
}

/// Top-k selection with pinned pages: the first `sinks` and the last `recent` closed pages
/// take budget slots ahead of every ranked page (sinks first when the budget is short).
pub fn select_pinned(
    ctx: &SelectionContext<'_>,
    budget: Budget,
    sinks: usize,
    recent: usize,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    select_scored(ctx, budget, sinks, recent, TopkScoring::Box, scratch, out)
}

/// [`select_pinned`] with a choice of page score ([`TopkScoring`]).
pub fn select_scored(
    ctx: &SelectionContext<'_>,
    budget: Budget,
    sinks: usize,
    recent: usize,
    scoring: TopkScoring,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    out.reset(ctx.group());
    let closed = ctx.closed_pages();
    let k = budget.pages(closed, ctx.cache.page_size());
    if k >= closed {
        for i in 0..ctx.seq.pages.len() {
            out.pages.push(ctx.page_ref(i));
        }
        return Ok(());
    }
    out.meta_bytes = match scoring {
        TopkScoring::Box => page_bounds(ctx, scratch),
        s => super::topk_sketch::page_scores(ctx, s, scratch),
    };
    let n = scratch.scored.len();
    for e in scratch.scored[n - recent.min(n)..].iter_mut() {
        e.0 = f32::MAX;
    }
    for e in scratch.scored.iter_mut().take(sinks) {
        e.0 = f32::INFINITY;
    }
    if k > 0 {
        // Higher bound first; ties to the earlier page, so the choice is deterministic.
        let cmp = |a: &(f32, u32), b: &(f32, u32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
        scratch.scored.select_nth_unstable_by(k - 1, cmp);
        let kept = &mut scratch.scored[..k];
        kept.sort_unstable_by_key(|&(_, i)| i);
        for &(_, i) in kept.iter() {
            out.pages.push(ctx.page_ref(i as usize));
        }
    }
    out.pages.push(ctx.page_ref(closed));
    Ok(())
}
