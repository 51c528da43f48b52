//! Page-major dense decode: one walk over a sequence's pages serves every kv head.
//!
//! The pool stores `[page, H_kv, page_size, D]`, so one page's K (or V) for all kv heads is
//! one contiguous block of `H_kv · page_size · D` elements. [`attend_dense_seq`] reads that
//! block whole — a linear stream the hardware prefetcher follows — where the per-group
//! kernel ([`super::cpu::attend_group`]) reads one scattered `page_size · D` slice per kv
//! head. Pages are cut into blocks of [`STREAM_BLOCK_PAGES`] that run in parallel (rayon);
//! every per-block partial (softmax block maximum and sum, V sums, entmax mass and support)
//! is combined in block order, so the bits do not depend on the thread count.
//!
//! Pass 1 reads K once: the scores of all H query heads into `[H, n]`, plus the maximum of
//! each (head, page). Softmax (α = 1) exponentiates each block against its own maximum
//! while the block is hot (blocked softmax); blocks are rescaled to the global maximum
//! afterwards. Entmax solves τ per head on the cached scores, gathering the candidates
//! (`(α−1)(s − s_max) > −1`) from the pages whose maximum can reach them only. Pass 2 reads
//! V, for entmax only for the (page, kv head) pairs where some head of the group has
//! weight; weights are formed from the cached scores on the fly and the sums normalised at
//! the end.
//!
//! Where AVX2, FMA and F16C are compiled in and `D` is a multiple of 8, the inner loops
//! convert f16 rows in registers (no widened copy) and dot eight rows at once.

use super::cpu::{alpha_code, dot, exp_f32, HeadResult, PageRef, PoolGeometry, SharedMut};
use crate::dtype::{DType, KvElem};
use crate::error::Result;
use crate::tau::{entmax_threshold_candidates, entmax_threshold_f32};
use rayon::prelude::*;

/// Pages per block of the parallel passes (fixed: the summation order depends on it, never
/// on the thread count). 64 pages of 8 kv heads × 16 tokens × 64 f16 = 1 MiB of K.
pub const STREAM_BLOCK_PAGES: usize = 64;

/// One block's partial results and scratch.
#[derive(Debug, Clone, Default)]
struct BlockPart {
    /// `[H, D]` unnormalised (entmax) or normalised (softmax) V sums.
    acc: Vec<f32>,
    /// `[H]` softmax: Σ exp(s − block max); entmax: Σ weights.
    mass: Vec<f64>,
    /// `[H]` softmax: block maximum, then the block's weight factor exp(m_b − M)/S.
    max: Vec<f32>,
    scale: Vec<f32>,
    /// `[H]` tokens with nonzero weight (entmax).
    support: Vec<u32>,
    /// `[H_kv]` V rows read.
    v_rows: Vec<u64>,
    /// `[page_size, D]` widened rows (paths without the f16 register conversion).
    rows: Vec<f32>,
    /// `[G, page_size]` weights of one page.
    w: Vec<f32>,
}

/// Per-sequence scratch of [`attend_dense_seq`], sized once by the plan (grows only when a
/// step is longer than planned). The results of the last call are in [`Self::out`],
/// [`Self::res`] and [`Self::v_rows`].
#[derive(Debug, Clone, Default)]
pub struct StreamWorkspace {
    /// `[H, n]` scores (softmax: exp against the block maximum).
    scores: Vec<f32>,
    /// `[H, pages]` maximum score of each (head, page); NaN if a score is not finite.
    page_max: Vec<f32>,
    /// Per head: τ candidates.
    cand: Vec<Vec<f32>>,
    /// Per head: τ (z-space; softmax: log-sum-exp).
    tau: Vec<f64>,
    parts: Vec<BlockPart>,
    block_start: Vec<usize>,
    /// `[H, D]` outputs of the last call.
    pub out: Vec<f32>,
    /// `[H]` per-head results of the last call.
    pub res: Vec<HeadResult>,
    /// `[H_kv]` V rows read by the last call, per kv head.
    pub v_rows: Vec<u64>,
}

fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl StreamWorkspace {
    /// Scratch for `heads` query heads over `kv_heads` kv heads, up to `max_tokens` tokens.
    pub fn new(
        heads: usize,
        kv_heads: usize,
        max_tokens: usize,
        page_size: usize,
        head_dim: usize,
    ) -> Self {
        let mut ws = StreamWorkspace::default();
        let pages = max_tokens.div_ceil(page_size).max(1);
        ws.reserve(heads, kv_heads, max_tokens, pages, page_size, head_dim);
        ws
    }

    fn reserve(&mut self, h: usize, hkv: usize, n: usize, np: usize, ps: usize, d: usize) {
        let g = h / hkv.max(1);
        grow(&mut self.scores, h * n);
        grow(&mut self.page_max, h * np);
        if self.cand.len() < h {
            self.cand.resize_with(h, Vec::new);
        }
        for c in &mut self.cand {
            if c.capacity() < n {
                c.reserve(n - c.len());
            }
        }
        grow(&mut self.tau, h);
        let nb = np.div_ceil(STREAM_BLOCK_PAGES).max(1);
        if self.parts.len() < nb {
            self.parts.resize_with(nb, BlockPart::default);
        }
        for p in &mut self.parts {
            grow(&mut p.acc, h * d);
            grow(&mut p.mass, h);
            grow(&mut p.max, h);
            grow(&mut p.scale, h);
            grow(&mut p.support, h);
            grow(&mut p.v_rows, hkv);
            grow(&mut p.rows, ps * d);
            grow(&mut p.w, g * ps);
        }
        grow(&mut self.block_start, nb + 1);
        grow(&mut self.out, h * d);
        grow(&mut self.res, h);
        grow(&mut self.v_rows, hkv);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        let parts: usize = self
            .parts
            .iter()
            .map(|p| {
                4 * (p.acc.len() + p.max.len() + p.scale.len() + p.support.len())
                    + 4 * (p.rows.len() + p.w.len())
                    + 8 * (p.mass.len() + p.v_rows.len())
            })
            .sum();
        4 * (self.scores.len() + self.page_max.len() + self.out.len())
            + 4 * self.cand.iter().map(|c| c.capacity()).sum::<usize>()
            + 8 * (self.tau.len() + self.block_start.len() + self.v_rows.len())
            + std::mem::size_of::<HeadResult>() * self.res.len()
            + parts
    }
}

/// The f16 elements of `x` as their bits (f16 only).
#[inline(always)]
#[allow(dead_code)]
fn f16_bits<T: KvElem>(x: &[T]) -> Option<&[u16]> {
    if T::DTYPE == DType::F16 && std::mem::size_of::<T>() == 2 {
        // SAFETY: `half::f16` is a transparent u16.
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u16>(), x.len()) })
    } else {
        None
    }
}

/// The f32 elements of `x` (f32 only).
#[inline(always)]
#[allow(dead_code)]
fn f32_elems<T: KvElem>(x: &[T]) -> Option<&[f32]> {
    if T::DTYPE == DType::F32 && std::mem::size_of::<T>() == 4 {
        // SAFETY: T is f32.
        Some(unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<f32>(), x.len()) })
    } else {
        None
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
mod simd {
    use std::arch::x86_64::*;

    /// Eight consecutive elements widened to f32.
    pub trait Load: Copy {
        /// # Safety
        /// `p..p + 8` must be readable.
        unsafe fn load8(p: *const Self) -> __m256;
    }
    impl Load for f32 {
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            _mm256_loadu_ps(p)
        }
    }
    impl Load for u16 {
        #[inline(always)]
        unsafe fn load8(p: *const u16) -> __m256 {
            _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>()))
        }
    }

    /// Lane sums of eight vectors: lane j of the result is the sum of `a[j]`, as the tree
    /// ((x0+x1)+(x2+x3)) + ((x4+x5)+(x6+x7)).
    #[inline(always)]
    unsafe fn hsum8x8(a: &[__m256; 8]) -> __m256 {
        let t0 = _mm256_hadd_ps(a[0], a[1]);
        let t1 = _mm256_hadd_ps(a[2], a[3]);
        let t2 = _mm256_hadd_ps(a[4], a[5]);
        let t3 = _mm256_hadd_ps(a[6], a[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let lo = _mm256_permute2f128_ps::<0x20>(u0, u1);
        let hi = _mm256_permute2f128_ps::<0x31>(u0, u1);
        _mm256_add_ps(lo, hi)
    }

    /// The sum of one vector, same tree as [`hsum8x8`].
    #[inline(always)]
    unsafe fn hsum(a: __m256) -> f32 {
        let h1 = _mm256_hadd_ps(a, a);
        let h2 = _mm256_hadd_ps(h1, h1);
        _mm_cvtss_f32(_mm_add_ss(
            _mm256_castps256_ps128(h2),
            _mm256_extractf128_ps::<1>(h2),
        ))
    }

    /// `out[t] = q · row_t` for `len` rows of `d` elements (`d % 8 == 0`), eight rows at once.
    ///
    /// # Safety
    /// `rows` holds `len · d` elements, `q` `d`, `out` `len`.
    #[inline(always)]
    pub unsafe fn scores<E: Load>(
        rows: *const E,
        len: usize,
        d: usize,
        q: *const f32,
        out: *mut f32,
    ) {
        let mut t = 0;
        while t + 8 <= len {
            let mut acc = [_mm256_setzero_ps(); 8];
            let mut c = 0;
            while c < d {
                let qc = _mm256_loadu_ps(q.add(c));
                for (j, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(E::load8(rows.add((t + j) * d + c)), qc, *a);
                }
                c += 8;
            }
            _mm256_storeu_ps(out.add(t), hsum8x8(&acc));
            t += 8;
        }
        while t < len {
            let mut acc = _mm256_setzero_ps();
            let mut c = 0;
            while c < d {
                acc = _mm256_fmadd_ps(
                    E::load8(rows.add(t * d + c)),
                    _mm256_loadu_ps(q.add(c)),
                    acc,
                );
                c += 8;
            }
            *out.add(t) = hsum(acc);
            t += 1;
        }
    }

    /// `acc += Σ_t w[t] · row_t` over `len` rows of `d` elements (`d % 8 == 0`), rows in
    /// order, zero weights skipped.
    ///
    /// # Safety
    /// `rows` holds `len · d` elements, `w` `len`, `acc` `d`.
    #[inline(always)]
    pub unsafe fn accum<E: Load>(
        rows: *const E,
        len: usize,
        d: usize,
        w: *const f32,
        acc: *mut f32,
    ) {
        let mut c = 0;
        while c + 64 <= d {
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, x) in r.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(acc.add(c + 8 * j));
            }
            for t in 0..len {
                let wt = *w.add(t);
                if wt == 0.0 {
                    continue;
                }
                let wv = _mm256_set1_ps(wt);
                for (j, x) in r.iter_mut().enumerate() {
                    *x = _mm256_fmadd_ps(E::load8(rows.add(t * d + c + 8 * j)), wv, *x);
                }
            }
            for (j, x) in r.iter().enumerate() {
                _mm256_storeu_ps(acc.add(c + 8 * j), *x);
            }
            c += 64;
        }
        while c + 8 <= d {
            let mut x = _mm256_loadu_ps(acc.add(c));
            for t in 0..len {
                let wt = *w.add(t);
                if wt != 0.0 {
                    x = _mm256_fmadd_ps(E::load8(rows.add(t * d + c)), _mm256_set1_ps(wt), x);
                }
            }
            _mm256_storeu_ps(acc.add(c), x);
            c += 8;
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
const SIMD: bool = true;
#[cfg(not(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
)))]
const SIMD: bool = false;

/// Scores of one page of one kv head for its `G` query heads: head `hg` writes
/// `out[hg · stride + t]`, t < len. `q` is `[G, D]`, `rows` `[len, D]`.
///
/// # Safety
/// `out + hg · stride + t` must be writable for every hg < G, t < len.
#[inline(always)]
unsafe fn score_page<T: KvElem>(
    rows: &[T],
    len: usize,
    d: usize,
    q: &[f32],
    g: usize,
    buf: &mut [f32],
    out: *mut f32,
    stride: usize,
) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if SIMD && d % 8 == 0 {
        if g == 1 {
            if let Some(r) = f16_bits(rows) {
                simd::scores(r.as_ptr(), len, d, q.as_ptr(), out);
                return;
            }
        }
        let r: &[f32] = match f32_elems(rows) {
            Some(r) => r,
            None => {
                T::slice_to_f32(rows, &mut buf[..len * d]);
                &buf[..len * d]
            }
        };
        for hg in 0..g {
            simd::scores(
                r.as_ptr(),
                len,
                d,
                q.as_ptr().add(hg * d),
                out.add(hg * stride),
            );
        }
        return;
    }
    T::slice_to_f32(rows, &mut buf[..len * d]);
    for hg in 0..g {
        let qh = &q[hg * d..(hg + 1) * d];
        for t in 0..len {
            *out.add(hg * stride + t) = dot(qh, &buf[t * d..(t + 1) * d]);
        }
    }
}

/// V of one page of one kv head into the accumulators of the active heads of its group:
/// `acc[hg] += Σ_t w[hg · ps + t] · row_t` for every hg with `active[hg]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn accum_page<T: KvElem>(
    rows: &[T],
    len: usize,
    d: usize,
    w: &[f32],
    ps: usize,
    active: impl Fn(usize) -> bool,
    g: usize,
    buf: &mut [f32],
    acc: &mut [f32],
) {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if SIMD && d % 8 == 0 {
        // SAFETY: rows holds len·d elements, w[hg·ps..] at least len, acc[hg·d..] d.
        unsafe {
            if g == 1 {
                if let Some(r) = f16_bits(rows) {
                    simd::accum(r.as_ptr(), len, d, w.as_ptr(), acc.as_mut_ptr());
                    return;
                }
            }
            let r: &[f32] = match f32_elems(rows) {
                Some(r) => r,
                None => {
                    T::slice_to_f32(rows, &mut buf[..len * d]);
                    &buf[..len * d]
                }
            };
            for hg in 0..g {
                if active(hg) {
                    simd::accum(
                        r.as_ptr(),
                        len,
                        d,
                        w.as_ptr().add(hg * ps),
                        acc.as_mut_ptr().add(hg * d),
                    );
                }
            }
        }
        return;
    }
    T::slice_to_f32(rows, &mut buf[..len * d]);
    for hg in 0..g {
        if !active(hg) {
            continue;
        }
        let acc_h = &mut acc[hg * d..(hg + 1) * d];
        for t in 0..len {
            let wt = w[hg * ps + t];
            if wt != 0.0 {
                super::cpu::axpy(acc_h, wt, &buf[t * d..(t + 1) * d]);
            }
        }
    }
}

/// Dense decode of one sequence over all its heads, page-major (see the module docs).
/// `q_scaled` is `[H, D]` (scale applied), `slopes` `[H]` (zeros without ALiBi), `pages`
/// the sequence's pages in token order, `q_pos` the query's position. Results land in
/// `ws.out`, `ws.res`, `ws.v_rows`.
#[allow(clippy::too_many_arguments)]
pub fn attend_dense_seq<T: KvElem>(
    k: &[T],
    v: &[T],
    geom: PoolGeometry,
    pages: &[PageRef],
    q_scaled: &[f32],
    slopes: &[f32],
    q_pos: f32,
    alpha: f64,
    ws: &mut StreamWorkspace,
) -> Result<()> {
    let (hkv, ps, d) = (geom.num_kv_heads, geom.page_size, geom.head_dim);
    let h = slopes.len();
    let g = h / hkv;
    let n: usize = pages.iter().map(|p| p.len as usize).sum();
    let np = pages.len();
    let nb = np.div_ceil(STREAM_BLOCK_PAGES).max(1);
    ws.reserve(h, hkv, n, np, ps, d);
    let mut t0 = 0;
    for b in 0..nb {
        ws.block_start[b] = t0;
        let r = (b * STREAM_BLOCK_PAGES).min(np)..((b + 1) * STREAM_BLOCK_PAGES).min(np);
        t0 += pages[r].iter().map(|p| p.len as usize).sum::<usize>();
    }
    ws.block_start[nb] = t0;
    let pages_of =
        |b: usize| (b * STREAM_BLOCK_PAGES).min(np)..((b + 1) * STREAM_BLOCK_PAGES).min(np);
    let any_alibi = slopes.iter().any(|&s| s != 0.0);
    let softmax = alpha == 1.0;
    let page_elems = hkv * ps * d;

    // Pass 1: K, page-major, blocks in parallel.
    {
        let scores = SharedMut::new(&mut ws.scores[..h * n]);
        let pmax = SharedMut::new(&mut ws.page_max[..h * np]);
        let starts = &ws.block_start[..=nb];
        let k_block = |b: usize, part: &mut BlockPart| {
            let mut idx = starts[b];
            for i in pages_of(b) {
                let p = pages[i];
                let len = p.len as usize;
                let base = p.page as usize * page_elems;
                for kvh in 0..hkv {
                    let off = base + kvh * ps * d;
                    let h0 = kvh * g;
                    // SAFETY: heads h0..h0+G, tokens idx..idx+len: inside `[H, n]`; blocks
                    // write disjoint token ranges, nothing reads the scores in this pass.
                    unsafe {
                        score_page(
                            &k[off..off + len * d],
                            len,
                            d,
                            &q_scaled[h0 * d..(h0 + g) * d],
                            g,
                            &mut part.rows,
                            scores.at(h0 * n + idx),
                            n,
                        );
                    }
                    for hh in h0..h0 + g {
                        // SAFETY: as above; this block's own token range.
                        let sc =
                            unsafe { std::slice::from_raw_parts_mut(scores.at(hh * n + idx), len) };
                        if any_alibi {
                            let sl = slopes[hh];
                            for (t, s) in sc.iter_mut().enumerate() {
                                *s += sl * ((p.start as usize + t) as f32 - q_pos);
                            }
                        }
                        let m = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                        let finite = sc.iter().all(|x| x.is_finite());
                        // SAFETY: (head, page) entries of this block's pages only.
                        unsafe { *pmax.at(hh * np + i) = if finite { m } else { f32::NAN } };
                    }
                }
                idx += len;
            }
            if softmax {
                // Blocked softmax: exp against the block maximum while the block is hot.
                let (s0, s1) = (starts[b], starts[b + 1]);
                for hh in 0..h {
                    // SAFETY: this block's pages / tokens of head hh.
                    let pm = unsafe {
                        std::slice::from_raw_parts(
                            pmax.at(hh * np + pages_of(b).start),
                            pages_of(b).len(),
                        )
                    };
                    let m = pm.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    let sc =
                        unsafe { std::slice::from_raw_parts_mut(scores.at(hh * n + s0), s1 - s0) };
                    let mut sum = 0.0f64;
                    for chunk in sc.chunks_mut(256) {
                        let mut part_sum = 0.0f32;
                        for x in chunk.iter_mut() {
                            *x = exp_f32(*x - m);
                            part_sum += *x;
                        }
                        sum += part_sum as f64;
                    }
                    part.max[hh] = m;
                    part.mass[hh] = sum;
                }
            }
        };
        let parts = &mut ws.parts[..nb];
        if nb > 1 {
            parts
                .par_iter_mut()
                .enumerate()
                .for_each(|(b, part)| k_block(b, part));
        } else {
            k_block(0, &mut parts[0]);
        }
    }

    // τ per head.
    let a = alpha - 1.0;
    if softmax {
        for hh in 0..h {
            let m = ws.parts[..nb]
                .iter()
                .fold(f32::NEG_INFINITY, |m, p| m.max(p.max[hh])) as f64;
            let s: f64 = ws.parts[..nb]
                .iter()
                .map(|p| p.mass[hh] * (p.max[hh] as f64 - m).exp())
                .sum();
            for p in &mut ws.parts[..nb] {
                p.scale[hh] = ((p.max[hh] as f64 - m).exp() / s) as f32;
            }
            ws.tau[hh] = m + s.ln();
            ws.res[hh] = HeadResult {
                tau: ws.tau[hh],
                support: n as u32,
                mass: s,
            };
        }
    } else {
        let (scores, page_max) = (&ws.scores[..h * n], &ws.page_max[..h * np]);
        ws.cand[..h]
            .par_iter_mut()
            .zip(ws.tau[..h].par_iter_mut())
            .enumerate()
            .try_for_each(|(hh, (cand, tau))| -> Result<()> {
                let sc = &scores[hh * n..(hh + 1) * n];
                let pm = &page_max[hh * np..(hh + 1) * np];
                if pm.iter().any(|x| x.is_nan()) {
                    // A score is not finite: the full solve names it (typed error).
                    *tau = entmax_threshold_f32(sc, alpha, cand)?;
                    return Ok(());
                }
                let smax = pm.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                cand.clear();
                let mut idx = 0;
                for (i, p) in pages.iter().enumerate() {
                    let len = p.len as usize;
                    if a * (pm[i] as f64 - smax) > -1.0 {
                        cand.extend(
                            sc[idx..idx + len]
                                .iter()
                                .copied()
                                .filter(|&s| a * (f64::from(s) - smax) > -1.0),
                        );
                    }
                    idx += len;
                }
                *tau = entmax_threshold_candidates(cand, smax, alpha);
                Ok(())
            })?;
    }

    // Pass 2: V, page-major, blocks in parallel; entmax weights formed on the fly.
    {
        let (scores, page_max) = (&ws.scores[..h * n], &ws.page_max[..h * np]);
        let starts = &ws.block_start[..=nb];
        let taus = &ws.tau[..h];
        let code = alpha_code(alpha);
        let beta = if alpha > 1.0 { 1.0 / a } else { 1.0 };
        let v_block = |b: usize, part: &mut BlockPart| {
            part.acc[..h * d].fill(0.0);
            part.v_rows[..hkv].fill(0);
            if !softmax {
                part.mass[..h].fill(0.0);
                part.support[..h].fill(0);
            }
            let mut idx = starts[b];
            for i in pages_of(b) {
                let p = pages[i];
                let len = p.len as usize;
                let base = p.page as usize * page_elems;
                for kvh in 0..hkv {
                    let h0 = kvh * g;
                    let mut any = false;
                    for hg in 0..g {
                        let hh = h0 + hg;
                        let sc = &scores[hh * n + idx..hh * n + idx + len];
                        let w = &mut part.w[hg * ps..hg * ps + len];
                        if softmax {
                            let c = part.scale[hh];
                            for (w, &s) in w.iter_mut().zip(sc) {
                                *w = s * c;
                            }
                            any = true;
                        } else if a * page_max[hh * np + i] as f64 - taus[hh] > 0.0 {
                            let tau = taus[hh];
                            let (mut mass, mut cnt) = (0.0f64, 0u32);
                            for (w, &s) in w.iter_mut().zip(sc) {
                                let y = (a * s as f64 - tau).max(0.0);
                                let x = match code {
                                    2 => y,
                                    15 => y * y,
                                    13 => y * y * y,
                                    _ if y > 0.0 => y.powf(beta),
                                    _ => 0.0,
                                };
                                cnt += (x > 0.0) as u32;
                                mass += x;
                                *w = x as f32;
                            }
                            part.mass[hh] += mass;
                            part.support[hh] += cnt;
                            any = true;
                        } else {
                            w.fill(0.0);
                        }
                    }
                    if !any {
                        continue;
                    }
                    part.v_rows[kvh] += len as u64;
                    let off = base + kvh * ps * d;
                    let w = &part.w;
                    accum_page(
                        &v[off..off + len * d],
                        len,
                        d,
                        w,
                        ps,
                        |hg| softmax || w[hg * ps..hg * ps + len].iter().any(|&x| x != 0.0),
                        g,
                        &mut part.rows,
                        &mut part.acc[h0 * d..(h0 + g) * d],
                    );
                }
                idx += len;
            }
        };
        let parts = &mut ws.parts[..nb];
        if nb > 1 {
            parts
                .par_iter_mut()
                .enumerate()
                .for_each(|(b, part)| v_block(b, part));
        } else {
            v_block(0, &mut parts[0]);
        }
    }

    // Combine the blocks in block order.
    let out = &mut ws.out[..h * d];
    out.copy_from_slice(&ws.parts[0].acc[..h * d]);
    for part in &ws.parts[1..nb] {
        for (o, &x) in out.iter_mut().zip(&part.acc[..h * d]) {
            *o += x;
        }
    }
    for kvh in 0..hkv {
        ws.v_rows[kvh] = ws.parts[..nb].iter().map(|p| p.v_rows[kvh]).sum();
    }
    if !softmax {
        for hh in 0..h {
            let mass: f64 = ws.parts[..nb].iter().map(|p| p.mass[hh]).sum();
            let support: u32 = ws.parts[..nb].iter().map(|p| p.support[hh]).sum();
            let norm = (1.0 / mass) as f32;
            for o in &mut out[hh * d..(hh + 1) * d] {
                *o *= norm;
            }
            ws.res[hh] = HeadResult {
                tau: ws.tau[hh],
                support,
                mass,
            };
        }
    }
    Ok(())
}
