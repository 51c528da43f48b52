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
    /// `[H, D]` V sums (weights normalised).
    acc: Vec<f32>,
    /// `[H]` softmax: Σ exp(s − block max).
    mass: Vec<f64>,
    /// `[H]` softmax: block maximum, then the block's weight factor exp(m_b − M)/S.
    max: Vec<f32>,
    scale: Vec<f32>,
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
                4 * (p.acc.len() + p.max.len() + p.scale.len())
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

    /// The dot of `q` with one row, exactly as [`super::super::cpu::dot`] forms it
    /// (`d % 16 == 0`): even 8-chunks into one accumulator, odd into another, then the tree.
    #[inline(always)]
    unsafe fn dot_row<E: Load>(row: *const E, d: usize, q: *const f32) -> f32 {
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut c = 0;
        while c < d {
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c)), E::load8(row.add(c)), a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(c + 8)), E::load8(row.add(c + 8)), a1);
            c += 16;
        }
        let s8 = _mm256_add_ps(a0, a1);
        let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
        let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        _mm_cvtss_f32(_mm_add_ss(s2, _mm_movehdup_ps(s2)))
    }

    /// Scores of `len` rows of `d` elements (`d % 16 == 0`) against `q`, four rows at once,
    /// each bit-identical to [`super::super::cpu::dot`] (same chunks, same tree), plus the
    /// ALiBi term `slope · ((start + t) − q_pos)` when `alibi` is given, into `out[t]`.
    /// Returns the maximum score and whether every score is finite.
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
        alibi: Option<(f32, u32, f32)>,
    ) -> (f32, bool) {
        let mut mx = _mm_set1_ps(f32::NEG_INFINITY);
        let mut z = _mm_setzero_ps();
        let mut t = 0;
        while t + 4 <= len {
            let mut e = [_mm256_setzero_ps(); 4];
            let mut o = [_mm256_setzero_ps(); 4];
            let mut c = 0;
            while c < d {
                let q0 = _mm256_loadu_ps(q.add(c));
                let q1 = _mm256_loadu_ps(q.add(c + 8));
                for j in 0..4 {
                    let r = rows.add((t + j) * d + c);
                    e[j] = _mm256_fmadd_ps(q0, E::load8(r), e[j]);
                    o[j] = _mm256_fmadd_ps(q1, E::load8(r.add(8)), o[j]);
                }
                c += 16;
            }
            // Per row: s8 = even + odd; w = lo + hi halves; u = (w0 + w2, w1 + w3); u0 + u1.
            let s0 = _mm256_add_ps(e[0], o[0]);
            let s1 = _mm256_add_ps(e[1], o[1]);
            let s2 = _mm256_add_ps(e[2], o[2]);
            let s3 = _mm256_add_ps(e[3], o[3]);
            let r01 = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(s0, s1),
                _mm256_permute2f128_ps::<0x31>(s0, s1),
            );
            let r23 = _mm256_add_ps(
                _mm256_permute2f128_ps::<0x20>(s2, s3),
                _mm256_permute2f128_ps::<0x31>(s2, s3),
            );
            // [r0 (w0+w2), r0 (w1+w3), r2 .., r2 .. | r1 .., r1 .., r3 .., r3 ..]
            let u = _mm256_add_ps(
                _mm256_shuffle_ps::<0b01_00_01_00>(r01, r23),
                _mm256_shuffle_ps::<0b11_10_11_10>(r01, r23),
            );
            let hsum = _mm256_hadd_ps(u, u); // [r0, r2, r0, r2 | r1, r3, r1, r3]
            let mut v = _mm_unpacklo_ps(
                _mm256_castps256_ps128(hsum),
                _mm256_extractf128_ps::<1>(hsum),
            );
            if let Some((slope, start, q_pos)) = alibi {
                let pos = _mm_add_epi32(_mm_set1_epi32((start as usize + t) as i32), _mm_setr_epi32(0, 1, 2, 3));
                let rel = _mm_sub_ps(_mm_cvtepi32_ps(pos), _mm_set1_ps(q_pos));
                v = _mm_add_ps(v, _mm_mul_ps(_mm_set1_ps(slope), rel));
            }
            _mm_storeu_ps(out.add(t), v);
            mx = _mm_max_ps(mx, v);
            z = _mm_add_ps(z, _mm_mul_ps(v, _mm_setzero_ps()));
            t += 4;
        }
        let mut m = {
            let m2 = _mm_max_ps(mx, _mm_movehl_ps(mx, mx));
            _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)))
        };
        let mut zs = {
            let z2 = _mm_add_ps(z, _mm_movehl_ps(z, z));
            _mm_cvtss_f32(_mm_add_ss(z2, _mm_movehdup_ps(z2)))
        };
        while t < len {
            let mut s = dot_row(rows.add(t * d), d, q);
            if let Some((slope, start, q_pos)) = alibi {
                s += slope * ((start as usize + t) as f32 - q_pos);
            }
            *out.add(t) = s;
            m = m.max(s);
            zs += s * 0.0;
            t += 1;
        }
        (m, zs == 0.0)
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

/// Where one page of one kv head writes: head `hg` of the group writes its scores at
/// `scores + hg · stride + t` (t < len) and its page maximum (NaN when a score is not
/// finite) at `page_max + hg · pm_stride`.
#[derive(Clone, Copy)]
struct PageOut {
    scores: *mut f32,
    stride: usize,
    page_max: *mut f32,
    pm_stride: usize,
}

/// Scores of one page of one kv head for its `G` query heads, each bit-identical to the
/// group kernel's (`dot`, then the ALiBi term). `q` is `[G, D]`, `rows` `[len, D]`,
/// `slopes` `[G]`, `start` the position of the page's first token.
///
/// # Safety
/// Every address `out` names for hg < G, t < len must be writable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn score_page<T: KvElem>(
    rows: &[T],
    len: usize,
    d: usize,
    q: &[f32],
    slopes: Option<&[f32]>,
    start: u32,
    q_pos: f32,
    buf: &mut [f32],
    out: PageOut,
) {
    let g = q.len() / d;
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if SIMD && d % 16 == 0 {
        let alibi = |hg: usize| slopes.map(|s| (s[hg], start, q_pos));
        let put = |hg: usize, (m, finite): (f32, bool)| {
            *out.page_max.add(hg * out.pm_stride) = if finite { m } else { f32::NAN };
        };
        if g == 1 {
            if let Some(r) = f16_bits(rows) {
                put(0, simd::scores(r.as_ptr(), len, d, q.as_ptr(), out.scores, alibi(0)));
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
            let st = simd::scores(
                r.as_ptr(),
                len,
                d,
                q.as_ptr().add(hg * d),
                out.scores.add(hg * out.stride),
                alibi(hg),
            );
            put(hg, st);
        }
        return;
    }
    T::slice_to_f32(rows, &mut buf[..len * d]);
    for hg in 0..g {
        let qh = &q[hg * d..(hg + 1) * d];
        let sc = std::slice::from_raw_parts_mut(out.scores.add(hg * out.stride), len);
        for (t, s) in sc.iter_mut().enumerate() {
            *s = dot(qh, &buf[t * d..(t + 1) * d]);
            if let Some(sl) = slopes {
                *s += sl[hg] * ((start as usize + t) as f32 - q_pos);
            }
        }
        let m = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let finite = sc.iter().all(|x| x.is_finite());
        *out.page_max.add(hg * out.pm_stride) = if finite { m } else { f32::NAN };
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

/// The entmax weight `[(α−1)s − τ]_+^β` of score `s`, formed as the group kernel forms it.
#[inline(always)]
fn weight(s: f32, a: f64, tau: f64, beta: f64, code: u8) -> f64 {
    let y = (a * s as f64 - tau).max(0.0);
    match code {
        2 => y,
        15 => y * y,
        13 => y * y * y,
        _ if y > 0.0 => y.powf(beta),
        _ => 0.0,
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
                    // SAFETY: heads h0..h0+G, tokens idx..idx+len: inside `[H, n]`, and
                    // (head, page i) inside `[H, pages]`; blocks write disjoint token and
                    // page ranges, nothing reads either buffer during this pass.
                    unsafe {
                        score_page(
                            &k[off..off + len * d],
                            len,
                            d,
                            &q_scaled[h0 * d..(h0 + g) * d],
                            any_alibi.then(|| &slopes[h0..h0 + g]),
                            p.start,
                            q_pos,
                            &mut part.rows,
                            PageOut {
                                scores: scores.at(h0 * n + idx),
                                stride: n,
                                page_max: pmax.at(h0 * np + i),
                                pm_stride: np,
                            },
                        );
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
        let code = alpha_code(alpha);
        let beta = 1.0 / a;
        ws.cand[..h]
            .par_iter_mut()
            .zip(ws.tau[..h].par_iter_mut())
            .zip(ws.res[..h].par_iter_mut())
            .enumerate()
            .try_for_each(|(hh, ((cand, tau), res))| -> Result<()> {
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
                // Every token with weight is a candidate: Σ weights and support from them.
                let (mut mass, mut support) = (0.0f64, 0u32);
                for &s in cand.iter() {
                    let w = weight(s, a, *tau, beta, code);
                    mass += w;
                    support += (w > 0.0) as u32;
                }
                *res = HeadResult {
                    tau: *tau,
                    support,
                    mass,
                };
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
        let res = &ws.res[..h];
        let v_block = |b: usize, part: &mut BlockPart| {
            part.acc[..h * d].fill(0.0);
            part.v_rows[..hkv].fill(0);
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
                            // As the group kernel: the f32 weight times the f32 norm.
                            let (tau, norm) = (taus[hh], (1.0 / res[hh].mass) as f32);
                            for (w, &s) in w.iter_mut().zip(sc) {
                                *w = weight(s, a, tau, beta, code) as f32 * norm;
                            }
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
    Ok(())
}
