//! The CPU decode kernel: one (sequence, kv head) group attends over a list of pages.
//!
//! One pass over K computes the scores of all G query heads of the group (each K row is
//! read once for the group) into a workspace; τ is solved on the cached scores, never by
//! re-reading K; V is read only for tokens with nonzero weight. Weights are renormalised so
//! they sum to one over the tokens read, whatever the τ rule.
//!
//! Sparse decode is this kernel over the kept pages (Gaussian selection; top-k with
//! per-query-head page sets and G > 1). Dense decode uses the page-major kernel of
//! [`super::stream`] (one walk over the pages for all kv heads), top-k with one page set
//! per kv head the union walk of [`super::sparse`]; both compute the same scores bit for
//! bit.

use crate::dtype::KvElem;
use crate::error::Result;
use crate::tau::{entmax_threshold_f32, halley_correct};
use crate::workspace::grow;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// A page to read: pool page id, tokens used in it, sequence position of its first token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRef {
    pub page: u32,
    pub len: u32,
    pub start: u32,
}

/// How τ is obtained for the tokens a step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TauMode {
    /// τ solved exactly on the scores of the tokens read (default).
    #[default]
    Exact,
    /// τ̂ from the selection stage used as is; weights then renormalised over the tokens
    /// read. Cheapest, approximate: the support is `{z > τ̂}`, not the exact one.
    Fixed,
    /// τ̂ refined by this many safeguarded Halley steps on the scores read, then
    /// renormalised. Between fixed and exact in cost and accuracy.
    Corrected(u32),
}

/// Geometry of the pool the kernel reads.
#[derive(Debug, Clone, Copy)]
pub struct PoolGeometry {
    pub num_kv_heads: usize,
    pub page_size: usize,
    pub head_dim: usize,
}

impl PoolGeometry {
    #[inline]
    pub(crate) fn kv_offset(&self, page: u32, head: usize) -> usize {
        (page as usize * self.num_kv_heads + head) * self.page_size * self.head_dim
    }
}

/// Per-task scratch, sized once by the plan: no allocation inside a step.
#[derive(Debug, Clone, Default)]
pub struct Workspace {
    /// `[G, max_tokens]` scores.
    scores: Vec<f32>,
    /// One page of K or V widened to f32: `[page_size, D]`.
    rows: Vec<f32>,
    /// Candidate scratch for the τ solve.
    cand: Vec<f32>,
    /// `[G, D]` f32 accumulators.
    acc: Vec<f32>,
    /// Per block of [`BLOCK_PAGES`] pages: a `[page_size, D]` rows buffer, `[G, D]` partial
    /// V sums, the block's first token index (one more entry: the total).
    block_rows: Vec<f32>,
    block_acc: Vec<f32>,
    block_start: Vec<usize>,
}

impl Workspace {
    pub fn new(group: usize, max_tokens: usize, page_size: usize, head_dim: usize) -> Self {
        let blocks = max_tokens.div_ceil(page_size).div_ceil(BLOCK_PAGES).max(1);
        let mut ws = Workspace {
            scores: vec![0.0; group * max_tokens],
            rows: vec![0.0; page_size * head_dim],
            cand: Vec::with_capacity(max_tokens),
            acc: vec![0.0; group * head_dim],
            block_rows: Vec::new(),
            block_acc: Vec::new(),
            block_start: Vec::new(),
        };
        ws.reserve_blocks(blocks, group, page_size, head_dim);
        ws
    }

    /// Grows (only ever grows) the per-block buffers to `blocks` blocks.
    fn reserve_blocks(&mut self, blocks: usize, group: usize, page_size: usize, head_dim: usize) {
        grow(&mut self.block_rows, blocks * page_size * head_dim);
        grow(&mut self.block_acc, blocks * group * head_dim);
        grow(&mut self.block_start, blocks + 1);
    }

    /// Grows (only ever grows) to hold `group × max_tokens` scores.
    pub fn reserve(&mut self, group: usize, max_tokens: usize, page_size: usize, head_dim: usize) {
        if self.scores.len() < group * max_tokens {
            self.scores.resize(group * max_tokens, 0.0);
        }
        if self.rows.len() < page_size * head_dim {
            self.rows.resize(page_size * head_dim, 0.0);
        }
        if self.cand.capacity() < max_tokens {
            self.cand.reserve(max_tokens - self.cand.len());
        }
        if self.acc.len() < group * head_dim {
            self.acc.resize(group * head_dim, 0.0);
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        4 * (self.scores.len()
            + self.rows.len()
            + self.cand.capacity()
            + self.acc.len()
            + self.block_rows.len()
            + self.block_acc.len())
            + 8 * self.block_start.len()
    }
}

/// One group's work: G query heads of one kv head over one page list.
pub struct GroupTask<'a> {
    pub kv_head: usize,
    pub pages: &'a [PageRef],
    /// `[G, D]` queries, already multiplied by the score scale.
    pub q_scaled: &'a [f32],
    /// `[G]` ALiBi slopes (zeros without ALiBi).
    pub slopes: &'a [f32],
    /// Position of the query (`len − 1`).
    pub q_pos: f32,
    /// `[G]` starting τ for fixed/corrected modes (z-space); ignored by exact.
    pub tau_hat: Option<&'a [f64]>,
}

/// What a group's attention produced, per query head.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeadResult {
    /// τ used for the output (z-space; softmax: log-sum-exp).
    pub tau: f64,
    /// Tokens with nonzero weight.
    pub support: u32,
    /// Σ of the unnormalised weights at τ (1 for exact up to rounding).
    pub mass: f64,
}

/// f32 dot product with 16 independent accumulators, reduced as a tree (a sequential
/// reduction of the accumulators would dominate at D = 64). Where AVX2 and FMA are compiled
/// in, the same operations in the same order on two ymm registers (bit-identical result;
/// the compiler otherwise pairs the lanes two by two).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    ))]
    {
        dot_avx2(a, b)
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma"
    )))]
    {
        dot_portable(a, b)
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma"
))]
#[inline(always)]
fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let chunks = n / 16;
    // SAFETY: every load reads 8 floats at i·16 (+8) < chunks·16 ≤ n, inside both slices.
    let mut s = unsafe {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for i in 0..chunks {
            let (pa, pb) = (a.as_ptr().add(i * 16), b.as_ptr().add(i * 16));
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa), _mm256_loadu_ps(pb), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(8)), _mm256_loadu_ps(pb.add(8)), a1);
        }
        // The portable tree: acc[j] += acc[j + w] for w = 8, 4, 2, 1.
        let s8 = _mm256_add_ps(a0, a1);
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
    };
    for i in chunks * 16..n {
        s = a[i].mul_add(b[i], s);
    }
    s
}

/// The portable [`dot`] (the reference of the AVX2 one).
#[inline(always)]
pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    const L: usize = 16;
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; L];
    let chunks = n / L;
    for i in 0..chunks {
        let (x, y) = (&a[i * L..i * L + L], &b[i * L..i * L + L]);
        for j in 0..L {
            acc[j] = x[j].mul_add(y[j], acc[j]);
        }
    }
    let mut w = L / 2;
    while w > 0 {
        for j in 0..w {
            acc[j] += acc[j + w];
        }
        w /= 2;
    }
    let mut s = acc[0];
    for i in chunks * L..n {
        s = a[i].mul_add(b[i], s);
    }
    s
}

/// How many kept pages ahead of the one being read K is prefetched (pages are 1–4 KiB).
const PREFETCH_PAGES: usize = 6;

/// Kept pages per block of the K and V passes: blocks run in parallel (rayon), so a
/// single long sequence streams from every core.
const BLOCK_PAGES: usize = 128;

/// The smallest f32 `c` with `(α−1)(c − smax) > −1` in f64 (`a = α − 1 > 0`, `smax`
/// finite): the exact τ's candidates are exactly the scores ≥ c (the test is monotone in the
/// score). Rounding is monotone too, so a smaller `smax` never gives a larger cut: a cut from
/// a running maximum keeps every final candidate.
pub(crate) fn candidate_cut(smax: f64, a: f64) -> f32 {
    let pass = |s: f32| a * (f64::from(s) - smax) > -1.0;
    let mut cut = (smax - 1.0 / a) as f32;
    while !pass(cut) {
        cut = cut.next_up();
    }
    while pass(cut.next_down()) {
        cut = cut.next_down();
    }
    cut
}

/// A raw pointer the K pass's blocks share to write disjoint ranges of the score buffer.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(*mut f32);
// SAFETY: only used for writes to disjoint elements from different threads (see the K
// pass), never for aliasing reads.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Shares `buf` for writes to disjoint elements from parallel jobs.
    pub(crate) fn new(buf: &mut [f32]) -> Self {
        SharedMut(buf.as_mut_ptr())
    }

    /// Pointer to element `i` (a method, so closures capture the wrapper, not the field).
    #[inline(always)]
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// Asks the CPU to start loading `bytes` bytes at `ptr` into cache. Kept pages are 1–4 KiB
/// blocks at scattered addresses, which the hardware prefetcher does not run ahead into.
#[inline(always)]
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch never faults and `off` stays inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

#[inline(always)]
pub(crate) fn axpy(acc: &mut [f32], w: f32, x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a = w.mul_add(b, *a);
    }
}

/// e^x in f32 (Cephes polynomial, relative error ~1e-7), written so loops over slices
/// vectorise; x below −87 gives 0.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let under = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let fx = (x * LOG2E + 0.5).floor();
    let r = x - fx * C1 - fx * C2;
    let mut y = 1.987_569_1e-4f32;
    y = y.mul_add(r, 1.398_199_9e-3);
    y = y.mul_add(r, 8.333_452e-3);
    y = y.mul_add(r, 4.166_579_6e-2);
    y = y.mul_add(r, 1.666_666_5e-1);
    y = y.mul_add(r, 0.5);
    y = y.mul_add(r * r, r + 1.0);
    // 2^fx by the exponent bits: fx is an integer in [-125, 127] (x clamped), so adding
    // 1.5·2²³ puts it in the low mantissa bits exactly. Unlike `fx as i32` (a saturating
    // cast, scalar code per lane) this vectorises; a NaN x gives a NaN y either way.
    let k = (fx + 12_582_912.0).to_bits().wrapping_sub(0x4B40_0000);
    let pow2 = f32::from_bits(k.wrapping_add(127) << 23);
    if under {
        0.0
    } else {
        y * pow2
    }
}

/// Overwrites each score `s` by its weight `(a·s − τ)_+^β`; returns (Σ weights, support).
/// `a·s − τ` is formed in f64: near the support boundary it cancels, and for β < 1 the
/// weight amplifies that error.
#[inline]
pub(crate) fn entmax_weights_in_place(
    sc: &mut [f32],
    a: f64,
    tau: f64,
    beta: f64,
    alpha_code: u8,
) -> (f64, u32) {
    let mut sum = 0.0f64;
    let mut cnt = 0u32;
    for chunk in sc.chunks_mut(256) {
        let mut part = 0.0f64;
        for x in chunk.iter_mut() {
            let y = (a * *x as f64 - tau).max(0.0);
            let w = match alpha_code {
                2 => y,
                15 => y * y,
                13 => y * y * y,
                _ => {
                    if y > 0.0 {
                        y.powf(beta)
                    } else {
                        0.0
                    }
                }
            };
            cnt += (w > 0.0) as u32;
            part += w;
            *x = w as f32;
        }
        sum += part;
    }
    (sum, cnt)
}

pub(crate) fn alpha_code(alpha: f64) -> u8 {
    if alpha == 2.0 {
        2
    } else if alpha == 1.5 {
        15
    } else if (alpha - 4.0 / 3.0).abs() < 1e-15 {
        13
    } else {
        0
    }
}

/// τ of one head on its cached scores `sc` (the τ mode's rule; `tau_hat` its starting point,
/// NaN for none), then the scores become their unnormalised weights in place (softmax:
/// `exp(s − max)`). `cand` is scratch for the τ solve.
pub(crate) fn head_weights(
    sc: &mut [f32],
    alpha: f64,
    mode: TauMode,
    tau_hat: f64,
    cand: &mut Vec<f32>,
) -> Result<HeadResult> {
    let n = sc.len();
    let code = alpha_code(alpha);
    let a = alpha - 1.0;
    let beta = if alpha > 1.0 { 1.0 / a } else { 1.0 };
    Ok(if alpha == 1.0 {
        let m = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let mut sum = 0.0f64;
        for chunk in sc.chunks_mut(256) {
            let mut part = 0.0f32;
            for x in chunk.iter_mut() {
                *x = exp_f32(*x - m);
                part += *x;
            }
            sum += part as f64;
        }
        HeadResult {
            tau: m as f64 + sum.ln(),
            support: n as u32,
            mass: sum,
        }
    } else {
        let tau = match mode {
            TauMode::Exact => entmax_threshold_f32(sc, alpha, cand)?,
            TauMode::Fixed => tau_hat,
            TauMode::Corrected(it) => {
                if tau_hat.is_finite() {
                    // The corrections work in z-space: borrow the candidate scratch.
                    cand.clear();
                    cand.extend(sc.iter().map(|&s| (a * s as f64) as f32));
                    halley_correct(cand, alpha, tau_hat, it as usize)?
                } else {
                    f64::NAN
                }
            }
        };
        // An empty support at τ̂ (τ̂ above every score read) falls back to the exact τ
        // on the tokens read.
        let mut tau = tau;
        if !tau.is_finite() || !sc.iter().any(|&s| a * s as f64 > tau) {
            tau = entmax_threshold_f32(sc, alpha, cand)?;
        }
        let (mass, support) = entmax_weights_in_place(sc, a, tau, beta, code);
        HeadResult { tau, support, mass }
    })
}

/// Runs one group: scores → τ → weighted V sum. `out` is `[G, D]`, `res` is `[G]`.
/// Returns the number of V rows read.
#[allow(clippy::too_many_arguments)]
pub fn attend_group<T: KvElem>(
    k: &[T],
    v: &[T],
    geom: PoolGeometry,
    task: &GroupTask<'_>,
    alpha: f64,
    mode: TauMode,
    ws: &mut Workspace,
    out: &mut [f32],
    res: &mut [HeadResult],
) -> Result<u64> {
    let (ps, d) = (geom.page_size, geom.head_dim);
    let g = task.slopes.len();
    let n: usize = task.pages.iter().map(|p| p.len as usize).sum();
    ws.reserve(g, n, ps, d);
    let any_alibi = task.slopes.iter().any(|&s| s != 0.0);

    // Blocks of pages, run in parallel (one long sequence uses every core); block b
    // covers pages b·BLOCK_PAGES.. and tokens block_start[b]..block_start[b + 1].
    let np = task.pages.len();
    let nb = np.div_ceil(BLOCK_PAGES).max(1);
    ws.reserve_blocks(nb, g, ps, d);
    let mut t0 = 0;
    for b in 0..nb {
        ws.block_start[b] = t0;
        let pages = &task.pages[(b * BLOCK_PAGES).min(np)..((b + 1) * BLOCK_PAGES).min(np)];
        t0 += pages.iter().map(|p| p.len as usize).sum::<usize>();
    }
    ws.block_start[nb] = t0;
    let block = |p: &PageRef| {
        let off = geom.kv_offset(p.page, task.kv_head);
        off..off + p.len as usize * d
    };
    let starts = &ws.block_start[..=nb];
    let pages_of = |b: usize| (b * BLOCK_PAGES).min(np)..((b + 1) * BLOCK_PAGES).min(np);

    // Pass 1: K, once for the whole group.
    let scores = SharedMut::new(&mut ws.scores);
    let k_block = |b: usize, rows: &mut [f32]| {
        let mut idx = starts[b];
        for i in pages_of(b) {
            let p = &task.pages[i];
            let len = p.len as usize;
            if let Some(next) = task.pages.get(i + PREFETCH_PAGES) {
                prefetch(&k[block(next)]);
            }
            let rows = &mut rows[..len * d];
            T::slice_to_f32(&k[block(p)], rows);
            for t in 0..len {
                let krow = &rows[t * d..(t + 1) * d];
                let rel = (p.start as usize + t) as f32 - task.q_pos;
                for hg in 0..g {
                    let mut s = dot(&task.q_scaled[hg * d..(hg + 1) * d], krow);
                    if any_alibi {
                        s += task.slopes[hg] * rel;
                    }
                    // SAFETY: hg < G and idx + t < n, inside the `[G, n]` score buffer
                    // (reserved above); blocks write disjoint token ranges and nothing
                    // reads the scores during this pass.
                    unsafe { *scores.at(hg * n + idx + t) = s };
                }
            }
            idx += len;
        }
    };
    let rows_buf = &mut ws.block_rows[..nb * ps * d];
    if nb > 1 {
        rows_buf
            .par_chunks_mut(ps * d)
            .enumerate()
            .for_each(|(b, rows)| k_block(b, rows));
    } else {
        k_block(0, rows_buf);
    }

    // τ per head on the cached scores, then the scores become weights in place.
    for hg in 0..g {
        let sc = &mut ws.scores[hg * n..(hg + 1) * n];
        let tau_hat = task.tau_hat.map_or(f64::NAN, |t| t[hg]);
        res[hg] = head_weights(sc, alpha, mode, tau_hat, &mut ws.cand)?;
    }

    // Pass 2: V, only for pages where some head of the group has weight; blocks in
    // parallel, each into its own partial sums, added in block order (deterministic).
    let sc = &ws.scores[..g * n];
    let starts = &ws.block_start[..=nb];
    let res_r = &res[..g];
    // Weights are +0 or positive: OR of their bits (vectorises, no early exit).
    let weighted = |i: usize, idx: usize| {
        let len = task.pages[i].len as usize;
        (0..g).any(|hg| {
            sc[hg * n + idx..hg * n + idx + len]
                .iter()
                .fold(0u32, |m, &w| m | (w.to_bits() & 0x7fff_ffff))
                != 0
        })
    };
    let v_block = |b: usize, rows: &mut [f32], acc: &mut [f32]| -> u64 {
        acc.fill(0.0);
        let mut v_rows = 0u64;
        let mut idx = starts[b];
        let range = pages_of(b);
        // Token index of the page PREFETCH_PAGES ahead (within the block).
        let mut ahead_idx = idx;
        for i in range.clone().take(PREFETCH_PAGES) {
            ahead_idx += task.pages[i].len as usize;
        }
        for i in range.clone() {
            let p = &task.pages[i];
            let len = p.len as usize;
            let ahead = i + PREFETCH_PAGES;
            if ahead < range.end {
                if weighted(ahead, ahead_idx) {
                    prefetch(&v[block(&task.pages[ahead])]);
                }
                ahead_idx += task.pages[ahead].len as usize;
            }
            if weighted(i, idx) {
                v_rows += len as u64;
                let rows = &mut rows[..len * d];
                T::slice_to_f32(&v[block(p)], rows);
                for hg in 0..g {
                    let norm = (1.0 / res_r[hg].mass) as f32;
                    let w = &sc[hg * n + idx..hg * n + idx + len];
                    let acc_h = &mut acc[hg * d..(hg + 1) * d];
                    for t in 0..len {
                        if w[t] > 0.0 {
                            axpy(acc_h, w[t] * norm, &rows[t * d..(t + 1) * d]);
                        }
                    }
                }
            }
            idx += len;
        }
        v_rows
    };
    let rows_buf = &mut ws.block_rows[..nb * ps * d];
    let accs = &mut ws.block_acc[..nb * g * d];
    let v_rows = if nb > 1 {
        rows_buf
            .par_chunks_mut(ps * d)
            .zip(accs.par_chunks_mut(g * d))
            .enumerate()
            .map(|(b, (rows, acc))| v_block(b, rows, acc))
            .sum()
    } else {
        v_block(0, rows_buf, accs)
    };
    let acc = &mut ws.acc[..g * d];
    acc.copy_from_slice(&accs[..g * d]);
    for part in accs[g * d..].chunks_exact(g * d) {
        for (a, &x) in acc.iter_mut().zip(part) {
            *a += x;
        }
    }
    out[..g * d].copy_from_slice(acc);
    Ok(v_rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp_f32` against f64 `exp` over its whole range: a few ulps, 0 below −87, NaN in NaN
    /// out, and the exponent bits right at both ends (2^-125 and 2^127 scale factors).
    #[test]
    fn exp_f32_matches_f64_exp() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let (got, want) = (exp_f32(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
            x += 0.001_3;
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_f32(-87.5), 0.0);
        assert_eq!(exp_f32(-1e30), 0.0);
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert!(exp_f32(f32::NAN).is_nan());
        assert_eq!(exp_f32(0.0), 1.0);
        let big = exp_f32(88.0) as f64;
        assert!((big / 88f64.exp() - 1.0).abs() < 4e-7);
    }

    /// The dispatched dot (AVX2 where compiled) equals the portable one bit for bit, every
    /// length and sign mix.
    #[test]
    fn dot_paths_agree_bitwise() {
        let mut seed = 99u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
        };
        for n in 0..200usize {
            for scale in [1.0f32, 1e-20, 1e20] {
                let a: Vec<f32> = (0..n).map(|_| rnd() * scale).collect();
                let b: Vec<f32> = (0..n + 3).map(|_| rnd()).collect();
                assert_eq!(
                    dot(&a, &b).to_bits(),
                    dot_portable(&a, &b).to_bits(),
                    "n {n}"
                );
            }
        }
    }
}
