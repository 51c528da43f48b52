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
    let Some(k) = ranked_pages(ctx, budget, out) else {
        return Ok(());
    };
    out.meta_bytes = match scoring {
        TopkScoring::Box => page_bounds(ctx, scratch),
        s => super::topk_sketch::page_scores(ctx, s, scratch),
    };
    rank_scored(ctx, k, sinks, recent, scratch, out);
    Ok(())
}

/// [`select_pinned`] from bounds already computed (`bounds[i]`: closed page `i`, as
/// [`page_bounds`] forms it, e.g. by [`seq_page_bounds`]); `meta_bytes` is reported as read.
#[allow(clippy::too_many_arguments)]
pub fn select_from_bounds(
    ctx: &SelectionContext<'_>,
    budget: Budget,
    sinks: usize,
    recent: usize,
    bounds: &[f32],
    meta_bytes: usize,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    let Some(k) = ranked_pages(ctx, budget, out) else {
        return Ok(());
    };
    let closed = ctx.closed_pages();
    scratch.scored.clear();
    scratch.scored.extend(
        bounds[..closed]
            .iter()
            .enumerate()
            .map(|(i, &b)| (b, i as u32)),
    );
    out.meta_bytes = meta_bytes;
    rank_scored(ctx, k, sinks, recent, scratch, out);
    Ok(())
}

/// Resets `out`; when the budget covers every closed page, keeps them all (and the last
/// page) and returns None, else returns the number of closed pages to rank.
fn ranked_pages(ctx: &SelectionContext<'_>, budget: Budget, out: &mut Selection) -> Option<usize> {
    out.reset(ctx.group());
    let closed = ctx.closed_pages();
    let k = budget.pages(closed, ctx.cache.page_size());
    if k >= closed {
        for i in 0..ctx.seq.pages.len() {
            out.pages.push(ctx.page_ref(i));
        }
        return None;
    }
    Some(k)
}

/// Keeps the `k` best of `scratch.scored` (pinned pages first), in token order, then the
/// last page.
fn rank_scored(
    ctx: &SelectionContext<'_>,
    k: usize,
    sinks: usize,
    recent: usize,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) {
    let closed = ctx.closed_pages();
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
}

/// The query heads one selection task serves: its kv head and its query heads
/// `h0..h0 + group` (indices within the sequence's `H` heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskHeads {
    pub kv_head: usize,
    pub h0: usize,
    pub group: usize,
}

/// Closed pages per block of [`seq_page_bounds`].
const SEQ_BLOCK_PAGES: usize = 128;

/// Length of the `rows` scratch [`seq_page_bounds`] needs for `closed` closed pages (to
/// size it at plan time).
pub fn seq_bounds_rows_len(closed: usize, num_kv_heads: usize, head_dim: usize) -> usize {
    closed.div_ceil(SEQ_BLOCK_PAGES) * 2 * num_kv_heads * head_dim
}

/// How far ahead of the statistics rows being read [`seq_page_bounds`] prefetches.
const SEQ_PREFETCH_BYTES: usize = 4 * 1024;

/// The key-range bounds of every closed page for every task of one sequence in one walk
/// over the pages: each page's min (and max) rows of all kv heads are one contiguous
/// `[H_kv, D]` block, read once for all tasks, with a steady prefetch (into L2) of the rows
/// a fixed distance down the page list. `out[t · closed + i]` gets task `t`'s bound of
/// closed page `i`, bit-identical to [`page_bounds`] (same rows, same [`box_bound`], same
/// ALiBi term, group maximum). `q_scaled` is the sequence's `[H, D]`, `slopes` its `[H]`.
/// Blocks of pages run in parallel; every value is computed by one thread, so nothing
/// depends on the thread count. `rows` is scratch (grown, never shrunk). Returns the
/// statistics bytes read.
pub fn seq_page_bounds(
    cache: &crate::cache::PagedKvCache,
    seq: crate::cache::SeqView<'_>,
    tasks: &[TaskHeads],
    q_scaled: &[f32],
    slopes: &[f32],
    out: &mut Vec<f32>,
    rows: &mut Vec<f32>,
) -> usize {
    let (hkv, d, ps) = (cache.num_kv_heads(), cache.head_dim(), cache.page_size());
    let closed = seq.pages.len().saturating_sub(1);
    let nt = tasks.len();
    if out.len() < nt * closed {
        out.resize(nt * closed, 0.0);
    }
    let nb = closed.div_ceil(SEQ_BLOCK_PAGES);
    let row = 2 * hkv * d;
    if rows.len() < nb * row {
        rows.resize(nb * row, 0.0);
    }
    let q_pos = (seq.len as f64 - 1.0) as f32;
    let shared = crate::attention::cpu::SharedMut::new(&mut out[..nt * closed]);
    crate::with_stats!(cache.stats(), |a| {
        let (kmin, kmax) = (&a[Stat::Min as usize], &a[Stat::Max as usize]);
        let elem = std::mem::size_of_val(&kmin[0]);
        let ahead = (SEQ_PREFETCH_BYTES / (2 * hkv * d * elem)).max(1);
        let run = |b: usize, buf: &mut [f32]| {
            let (lo, hi) = buf.split_at_mut(hkv * d);
            for i in b * SEQ_BLOCK_PAGES..((b + 1) * SEQ_BLOCK_PAGES).min(closed) {
                if let Some(&next) = seq.pages.get(i + ahead) {
                    let nb = cache.stats_offset(next, 0);
                    prefetch_l2(&kmin[nb..nb + hkv * d]);
                    prefetch_l2(&kmax[nb..nb + hkv * d]);
                }
                let base = cache.stats_offset(seq.pages[i], 0);
                let last_pos = (i * ps + ps - 1) as f32;
                #[cfg(all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "f16c"
                ))]
                if d.is_multiple_of(8) {
                    // The rows stay in their storage type, widened in registers.
                    let (mn, mx) = (&kmin[base..base + hkv * d], &kmax[base..base + hkv * d]);
                    for (t, th) in tasks.iter().enumerate() {
                        let (l, h) = (
                            &mn[th.kv_head * d..(th.kv_head + 1) * d],
                            &mx[th.kv_head * d..(th.kv_head + 1) * d],
                        );
                        let mut best = f32::NEG_INFINITY;
                        for hh in th.h0..th.h0 + th.group {
                            let q = &q_scaled[hh * d..(hh + 1) * d];
                            let u = box_bound_typed(q, l, h, lo) + slopes[hh] * (last_pos - q_pos);
                            best = best.max(u);
                        }
                        // SAFETY: as below.
                        unsafe { *shared.at(t * closed + i) = best };
                    }
                    continue;
                }
                crate::dtype::KvElem::slice_to_f32(&kmin[base..base + hkv * d], lo);
                crate::dtype::KvElem::slice_to_f32(&kmax[base..base + hkv * d], hi);
                for (t, th) in tasks.iter().enumerate() {
                    let (l, h) = (
                        &lo[th.kv_head * d..(th.kv_head + 1) * d],
                        &hi[th.kv_head * d..(th.kv_head + 1) * d],
                    );
                    let mut best = f32::NEG_INFINITY;
                    for hh in th.h0..th.h0 + th.group {
                        let q = &q_scaled[hh * d..(hh + 1) * d];
                        let u = box_bound(q, l, h) + slopes[hh] * (last_pos - q_pos);
                        best = best.max(u);
                    }
                    // SAFETY: t < nt and i < closed: inside `out`; blocks write disjoint
                    // page ranges and nothing reads `out` during the walk.
                    unsafe { *shared.at(t * closed + i) = best };
                }
            }
        };
        if nb > 1 {
            rows[..nb * row]
                .par_chunks_mut(row)
                .enumerate()
                .for_each(|(b, buf)| run(b, buf));
        } else if nb == 1 {
            run(0, &mut rows[..row]);
        }
    });
    closed * 2 * hkv * cache.stats().row_bytes(d)
}

/// Prefetches `data` into L2, one line per 64 bytes.
#[inline(always)]
fn prefetch_l2<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch never faults and `off` stays inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(base.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// [`box_bound`] of rows in their storage type (`lo.len() == hi.len() == q.len()`, a
/// multiple of 8), bit for bit: eight lanes in registers, each lane's products and maxima
/// added chunk after chunk as `box_bound`'s `acc[j]`, then its reduction tree. Where the
/// SIMD maximum and `f32::max` could disagree (a NaN product) the result is NaN and the
/// bound is recomputed by `box_bound` on rows widened into `buf` (length ≥ 2·D).
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "f16c"
))]
#[inline(always)]
fn box_bound_typed<T: KvElem>(q: &[f32], lo: &[T], hi: &[T], buf: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn load8<T: KvElem>(p: *const T) -> __m256 {
        match T::DTYPE {
            crate::dtype::DType::F32 => _mm256_loadu_ps(p.cast::<f32>()),
            crate::dtype::DType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())),
            crate::dtype::DType::Bf16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast::<__m128i>())),
            )),
        }
    }
    let d = q.len();
    debug_assert!(d.is_multiple_of(8) && lo.len() >= d && hi.len() >= d);
    // SAFETY: every load reads 8 elements at c < d, inside the three slices (the element
    // type matches `T::DTYPE`: KvElem is implemented for f32, f16 and bf16 only).
    let u = unsafe {
        let mut acc = _mm256_setzero_ps();
        let mut c = 0;
        while c < d {
            let qv = _mm256_loadu_ps(q.as_ptr().add(c));
            let a = _mm256_mul_ps(qv, load8(lo.as_ptr().add(c)));
            let b = _mm256_mul_ps(qv, load8(hi.as_ptr().add(c)));
            // max(a, b) as f32::max unless a is NaN (then NaN: recomputed below).
            acc = _mm256_add_ps(acc, _mm256_max_ps(b, a));
            c += 8;
        }
        // ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)).
        let s4 = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        let h = _mm_hadd_ps(s4, s4);
        _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)))
    };
    if u.is_nan() {
        let (l, r) = buf[..2 * d].split_at_mut(d);
        T::slice_to_f32(&lo[..d], l);
        T::slice_to_f32(&hi[..d], r);
        return box_bound(q, l, r);
    }
    u
}
