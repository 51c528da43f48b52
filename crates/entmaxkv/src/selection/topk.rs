//! Top-k page selection (Quest): rank closed pages by an upper bound of their best score,
//! keep the best within a token budget, always keep the last page.
//!
//! The bound of page p for query head h, in score units (scale applied):
//! `u = Σ_d max(q_d·kmin_d, q_d·kmax_d) + slope_h·(last_pos(p) − q_pos)`, the largest q·k
//! any key inside the page's per-channel box can reach plus the largest ALiBi bias in the
//! page. (The original added an unscaled q·k bound to a scaled ALiBi bias: SPEC §8.1.4.)

use super::{SelectScratch, Selection, SelectionContext};
use crate::error::{Error, Result};
use crate::stats::Stat;
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

/// The key-range bound of every closed page for every head of the task, written as the
/// group maximum into `scratch.scored` (one entry per closed page). Returns metadata bytes read.
pub fn page_bounds(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) -> usize {
    let cache = ctx.cache;
    let (d, ps) = (cache.head_dim(), cache.page_size());
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let q_pos = ctx.q_pos() as f32;
    scratch.scored.clear();
    for i in 0..closed {
        let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
        cache.stats().read_row(Stat::Min, base, &mut scratch.row0);
        cache.stats().read_row(Stat::Max, base, &mut scratch.row1);
        let last_pos = (i * ps + ps - 1) as f32;
        let mut best = f32::NEG_INFINITY;
        for hg in 0..g {
            let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
            let mut u = 0.0f32;
            for c in 0..d {
                u += (q[c] * scratch.row0[c]).max(q[c] * scratch.row1[c]);
            }
            u += ctx.slopes[hg] * (last_pos - q_pos);
            best = best.max(u);
        }
        scratch.scored.push((best, i as u32));
    }
    closed * 2 * cache.stats().row_bytes(d)
}

/// Top-k selection for one task.
pub fn select(
    ctx: &SelectionContext<'_>,
    budget: Budget,
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
    out.meta_bytes = page_bounds(ctx, scratch);
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
