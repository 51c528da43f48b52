//! Top-k page scores from the per-token key sketch: [`TopkScoring::Sketch`] scores a page by
//! the largest upper end of its tokens' sketch intervals (`certificate/bounds.rs`),
//! [`TopkScoring::SketchMass`] by the log-sum-exp of their centres (its estimated softmax
//! mass); ALiBi added per token, the maximum over the heads of the task.
//!
//! Quest's key-range bound takes, channel by channel, the best corner of the page's box, so
//! a page of unremarkable keys with a wide range ranks high; the sketch bound is within the
//! quantisation radius of the page's actual best score. It reads the page's sketch rows
//! besides its min/max (a quarter of the K bytes with 4-bit codes), so it trades selection
//! bytes for a better page set at the same budget. Without a sketch (`sketch_bits = 0`) the
//! token intervals are the box and the scores equal Quest's up to the per-token ALiBi.

use super::{SelectScratch, SelectionContext};
use crate::certificate::bounds::{page_bound, sketch_dots, token_ends, PageBound, PageRows};
use crate::stats::sketch;
use crate::workspace::grow;
use serde::{Deserialize, Serialize};

/// How top-k scores a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopkScoring {
    /// Quest's key-range (min/max box) bound (default; the original's behaviour).
    #[default]
    Box,
    /// The best per-token sketch upper bound in the page (reads the sketch rows too).
    Sketch,
    /// The page's estimated softmax mass: log-sum-exp of its tokens' sketch interval
    /// centres (an estimate, not a bound; reads the sketch rows too).
    SketchMass,
}

/// Scratch of the sketch scorer (sized on first use, reused afterwards).
#[derive(Debug, Clone, Default)]
pub(crate) struct SketchScoreScratch {
    rows: PageRows,
    qw: Vec<i16>,
    sdot: Vec<i32>,
    ups: Vec<f32>,
    lows: Vec<f64>,
    codes: Vec<u8>,
}

impl SketchScoreScratch {
    fn reserve(&mut self, ps: usize, d: usize) {
        self.rows.reserve(d);
        grow(&mut self.qw, d);
        grow(&mut self.sdot, ps);
        grow(&mut self.ups, ps);
        grow(&mut self.lows, ps);
        grow(&mut self.codes, d.max(64));
    }
}

/// Sketch scores of every closed page into `scratch.scored` (one `(score, slot)` entry per
/// closed page, the group maximum). Returns the bytes read (min/max rows and sketch rows).
pub fn page_scores(
    ctx: &SelectionContext<'_>,
    scoring: TopkScoring,
    scratch: &mut SelectScratch,
) -> usize {
    let cache = ctx.cache;
    let (ps, d) = (cache.page_size(), cache.head_dim());
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let bits = cache.config().sketch_bits;
    let rb = sketch::row_bytes(d, bits);
    let q_pos = ctx.q_pos();
    scratch.scored.clear();
    let sc = &mut scratch.sketch_score;
    sc.reserve(ps, d);
    for i in 0..closed {
        let base = cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
        sc.rows.load(cache.stats(), base, d, bits);
        let sk = if bits > 0 {
            let at = cache.sketch_offset(ctx.seq.pages[i], ctx.kv_head);
            &cache.sketch()[at..at + ps * rb]
        } else {
            &[][..]
        };
        let s0 = (i * ps) as f64 - q_pos;
        let mut best = f32::NEG_INFINITY;
        for hg in 0..g {
            let w = &ctx.q_scaled[hg * d..(hg + 1) * d];
            let pb: PageBound = page_bound(w, &sc.rows, bits > 0, &mut sc.qw[..d]);
            let sdot = &mut sc.sdot[..ps];
            if bits > 0 {
                sketch_dots(&sc.qw[..d], sk, rb, bits, sdot, &mut sc.codes);
            } else {
                sdot.fill(0);
            }
            let slope = ctx.slopes[hg] as f64;
            let (umax, _) = token_ends(&pb, sdot, slope, s0, &mut sc.ups[..ps], &mut sc.lows[..ps]);
            let s = match scoring {
                TopkScoring::SketchMass => {
                    // log Σ_t exp(c_t), c_t the centre of token t's interval.
                    let c = |t: usize| 0.5 * (sc.ups[t] as f64 + sc.lows[t]);
                    let m = (0..ps).map(c).fold(f64::NEG_INFINITY, f64::max);
                    let sum: f64 = (0..ps).map(|t| (c(t) - m).exp()).sum();
                    (m + sum.ln()) as f32
                }
                _ => umax,
            };
            best = best.max(s);
        }
        scratch.scored.push((best, i as u32));
    }
    let meta = closed * 2 * cache.stats().row_bytes(d);
    meta + if bits > 0 { closed * ps * rb } else { 0 }
}
