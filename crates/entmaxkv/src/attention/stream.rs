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
//! Pass 1 reads K once: the scores of all H query heads, plus the maximum of each (head,
//! page) and of each (head, block). Softmax (α = 1) keeps a block's scores in a scratch its
//! thread reuses block after block, exponentiates them against the block's own maximum,
//! and reads the block's V right away (one walk, K then V per block); the blocks are
//! rescaled to the global maximum when combined. Entmax scores a page into an L1-resident
//! `[H, page_size]` scratch and keeps as candidates, with their tokens, the scores at or
//! above the cut of a running maximum the blocks share; the final candidates
//! (`(α−1)(s − s_max) > −1`, an exact f32 cut) are filtered from those, so no score
//! buffer is written to memory or read back. τ is solved per head on them (the same solve,
//! so the same τ as [`crate::tau::entmax_threshold_f32`] on all the scores); the weights'
//! sum and support come from the candidates too. Pass 2 (entmax) reads V only for the
//! support's rows, head by head in token order, weights formed exactly as the group
//! kernel forms them. (2-core development machine, 128K, 8/8 heads: the scores' second
//! read and the V pass over whole pages took 1.3 of 6.5 ms, now 0.35; the `[H, n]` score
//! buffer's 8 MB of write traffic cost another ~0.2 ms.)
//!
//! Scores are bit-identical to the group kernel's (`dot` then the ALiBi term): where AVX2,
//! FMA and F16C are compiled in and `D` is a multiple of 16, the inner loops convert f16
//! rows in registers (no widened copy) and dot four rows at once with `dot`'s chunks and
//! reduction tree; where the CPU has AVX-512F (detected at run time) one zmm FMA does the
//! work of `dot`'s two ymm chains, same bits. Memory: the kernels prefetch (into L2) the
//! rows they are about to read a fixed distance further in reading order (entmax: one page,
//! ≥ [`PREFETCH_BYTES`]; softmax: [`SOFTMAX_PREFETCH_BYTES`]), one line per line consumed —
//! without that steady stream the cores compute and wait for memory in turn (2-core
//! development machine, dense entmax at 128K: 9.0 ms without, 5.6 ms with, in one
//! `examples/step_prof` round).

use super::cpu::{
    alpha_code, candidate_cut, dot, exp_f32, HeadResult, PageRef, PoolGeometry, SharedMut,
};
use crate::dtype::{DType, KvElem};
use crate::error::{Error, Result};
use crate::tau::entmax_threshold_candidates;
use crate::workspace::grow;
use rayon::prelude::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// How far ahead of the rows being read the dense entmax passes prefetch (rounded up to
/// pages).
pub const PREFETCH_BYTES: usize = 16 * 1024;

/// How far ahead the dense softmax pass prefetches (2-core development machine, 128K, caches
/// evicted: 2 KiB 10.8–10.9 ms, 4 KiB 11.2, 16 KiB 11.3–11.4).
pub const SOFTMAX_PREFETCH_BYTES: usize = 2 * 1024;

/// Entmax τ stage: blocks ahead whose candidate lists are prefetched.
const FILTER_AHEAD: usize = 4;

/// Entmax V pass: support candidates ahead whose V rows are prefetched.
const V_AHEAD_ROWS: usize = 8;

/// Pages per block of the parallel passes (fixed: the summation order depends on it, never
/// on the thread count). 64 pages of 8 kv heads × 16 tokens × 64 f16 = 1 MiB of K.
pub const STREAM_BLOCK_PAGES: usize = 64;

/// One block's partial results and scratch.
#[derive(Debug, Clone, Default)]
struct BlockPart {
    /// `[H, D]` V sums (entmax: weights normalised; softmax: weights exp(s − block max)).
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
    /// Entmax: `[H, STREAM_BLOCK_PAGES · page_size]` the block's τ candidates per head
    /// against the running cut (a superset of the final ones), their tokens
    /// (`page index · page_size + row`), and their counts `[H]`. Softmax: a run's first
    /// block lends `cand` as the run's scores.
    cand: Vec<f32>,
    cand_tok: Vec<u32>,
    ncand: Vec<usize>,
    /// Entmax: `[H, page_size]` the scores of the page being read (L1-resident). Both: the
    /// block's first non-finite score (head, token, value).
    page_sc: Vec<f32>,
    bad: Option<(usize, usize, f32)>,
    /// Entmax: `[H]` the running maximum this block has seen (its own pages' and what other
    /// blocks published before) and its candidate cut.
    rmax: Vec<f32>,
    rcut: Vec<f32>,
}

/// Per-head running maxima shared by the K pass's blocks (cloned by value).
#[derive(Debug, Default)]
struct RunMax(Vec<AtomicU32>);

impl Clone for RunMax {
    fn clone(&self) -> Self {
        RunMax(
            self.0
                .iter()
                .map(|x| AtomicU32::new(x.load(Ordering::Relaxed)))
                .collect(),
        )
    }
}

/// Per-sequence scratch of [`attend_dense_seq`], sized once by the plan (grows only when a
/// step is longer than planned). The results of the last call are in [`Self::out`],
/// [`Self::res`] and [`Self::v_rows`].
#[derive(Debug, Clone, Default)]
pub struct StreamWorkspace {
    /// `[H, pages]` maximum score of each (head, page); NaN if a score is not finite.
    page_max: Vec<f32>,
    /// Per head: τ candidates in token order, their tokens (`page index · page_size + row`),
    /// and a copy the τ solve reorders.
    cand: Vec<Vec<f32>>,
    cand_tok: Vec<Vec<u32>>,
    solve: Vec<Vec<f32>>,
    /// `[H]` the largest page maximum any block has published so far in this call
    /// (`ordered_key` of an f32): blocks start their candidate cut from it.
    run_max: RunMax,
    /// `[H_kv, D]` widened V rows (paths without the f16 register conversion).
    vbuf: Vec<f32>,
    /// `[G]` merge cursors (V rows read by a group).
    cursor: Vec<usize>,
    /// Per head: τ (z-space; softmax: log-sum-exp), maximum score, candidate cut.
    tau: Vec<f64>,
    smax: Vec<f64>,
    cut: Vec<f32>,
    parts: Vec<BlockPart>,
    block_start: Vec<usize>,
    /// `[H, D]` outputs of the last call.
    pub out: Vec<f32>,
    /// `[H]` per-head results of the last call.
    pub res: Vec<HeadResult>,
    /// `[H_kv]` V rows read by the last call, per kv head.
    pub v_rows: Vec<u64>,
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
        grow(&mut self.page_max, h * np);
        if self.cand.len() < h {
            self.cand.resize_with(h, Vec::new);
            self.cand_tok.resize_with(h, Vec::new);
            self.solve.resize_with(h, Vec::new);
        }
        for c in self.cand.iter_mut().chain(&mut self.solve) {
            if c.capacity() < n {
                c.reserve(n - c.len());
            }
        }
        for c in &mut self.cand_tok {
            if c.capacity() < n {
                c.reserve(n - c.len());
            }
        }
        if self.run_max.0.len() < h {
            self.run_max.0.resize_with(h, || AtomicU32::new(0));
        }
        grow(&mut self.vbuf, hkv * d);
        grow(&mut self.cursor, g);
        grow(&mut self.tau, h);
        grow(&mut self.smax, h);
        grow(&mut self.cut, h);
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
            grow(&mut p.cand, h * STREAM_BLOCK_PAGES * ps);
            grow(&mut p.cand_tok, h * STREAM_BLOCK_PAGES * ps);
            grow(&mut p.ncand, h);
            grow(&mut p.rmax, h);
            grow(&mut p.page_sc, h * ps);
            grow(&mut p.rcut, h);
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
                4 * (p.acc.len() + p.max.len() + p.scale.len() + p.rmax.len() + p.rcut.len())
                    + 4 * p.page_sc.len()
                    + 4 * (p.rows.len() + p.w.len() + p.cand.len() + p.cand_tok.len())
                    + 8 * (p.mass.len() + p.v_rows.len() + p.ncand.len())
            })
            .sum();
        4 * (self.page_max.len() + self.out.len())
            + 4 * self.cand.iter().map(|c| c.capacity()).sum::<usize>()
            + 4 * self.cand_tok.iter().map(|c| c.capacity()).sum::<usize>()
            + 4 * self.solve.iter().map(|c| c.capacity()).sum::<usize>()
            + 4 * (self.run_max.0.len() + self.vbuf.len())
            + 8 * self.cursor.len()
            + 8 * (self.tau.len() + self.smax.len() + self.block_start.len() + self.v_rows.len())
            + 4 * self.cut.len()
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
    pub(super) unsafe fn dot_row<E: Load>(row: *const E, d: usize, q: *const f32) -> f32 {
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

    /// Per row of four: the even-chunk and odd-chunk sums of `dot` added (`s8` of
    /// [`super::super::cpu::dot`]), AVX2.
    #[inline(always)]
    unsafe fn dot4<E: Load>(rows: *const E, t: usize, d: usize, q: *const f32) -> [__m256; 4] {
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
        [
            _mm256_add_ps(e[0], o[0]),
            _mm256_add_ps(e[1], o[1]),
            _mm256_add_ps(e[2], o[2]),
            _mm256_add_ps(e[3], o[3]),
        ]
    }

    /// The rest of `dot`'s tree for four rows at once: `w = lo + hi` halves,
    /// `u = (w0 + w2, w1 + w3)`, `u0 + u1`; lane j of the result is row j's dot.
    #[inline(always)]
    pub(super) unsafe fn reduce4(s: [__m256; 4]) -> __m128 {
        let r01 = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(s[0], s[1]),
            _mm256_permute2f128_ps::<0x31>(s[0], s[1]),
        );
        let r23 = _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(s[2], s[3]),
            _mm256_permute2f128_ps::<0x31>(s[2], s[3]),
        );
        // [r0 (w0+w2), r0 (w1+w3), r2 .., r2 .. | r1 .., r1 .., r3 .., r3 ..]
        let u = _mm256_add_ps(
            _mm256_shuffle_ps::<0b01_00_01_00>(r01, r23),
            _mm256_shuffle_ps::<0b11_10_11_10>(r01, r23),
        );
        let hsum = _mm256_hadd_ps(u, u); // [r0, r2, r0, r2 | r1, r3, r1, r3]
        _mm_unpacklo_ps(
            _mm256_castps256_ps128(hsum),
            _mm256_extractf128_ps::<1>(hsum),
        )
    }

    /// Scores of `len` rows of `d` elements (`d % 16 == 0`) against `q`, four rows at once
    /// (`$dot4`), each bit-identical to [`super::super::cpu::dot`] (same chunks, same tree),
    /// plus the ALiBi term `slope · ((start + t) − q_pos)` when `alibi` is given, into
    /// `out[t]`. Returns the maximum score and whether every score is finite.
    macro_rules! scores_fn {
        ($(#[$attr:meta])* $name:ident, $bound:path, $dot4:path) => {
            $(#[$attr])*
            pub unsafe fn $name<E: $bound + Load>(
                rows: *const E,
                pf: *const E,
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
                    $crate::attention::stream::simd::prefetch_rows(pf, t, 4, d);
                    let mut v = $crate::attention::stream::simd::reduce4($dot4(rows, t, d, q));
                    if let Some((slope, start, q_pos)) = alibi {
                        let pos = _mm_add_epi32(
                            _mm_set1_epi32((start as usize + t) as i32),
                            _mm_setr_epi32(0, 1, 2, 3),
                        );
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
                    let mut s = $crate::attention::stream::simd::dot_row(rows.add(t * d), d, q);
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
        };
    }
    pub(super) use scores_fn;

    scores_fn!(
        /// AVX2 scores (see [`scores_fn`]).
        ///
        /// # Safety
        /// `rows` holds `len · d` elements, `q` `d`, `out` `len`.
        #[inline(always)]
        scores, Load, dot4
    );

    /// Prefetches (into L2) rows `t..t + n` of `d` elements at `pf`, unless `pf` is null.
    /// The kernels are handed the same rows of a page further down the page list: a
    /// steady stream of prefetches, one line per line consumed, keeps enough misses in
    /// flight for the hardware to stream while the core computes.
    #[inline(always)]
    pub fn prefetch_rows<E>(pf: *const E, t: usize, n: usize, d: usize) {
        if pf.is_null() {
            return;
        }
        let base = pf.wrapping_add(t * d).cast::<i8>();
        let bytes = n * d * std::mem::size_of::<E>();
        let mut o = 0;
        while o < bytes {
            // SAFETY: a prefetch never faults.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(base.wrapping_add(o)) };
            o += 64;
        }
    }

    /// Whether the AVX-512 kernels run: the CPU has AVX-512F (std caches the detection).
    #[inline(always)]
    pub fn has_avx512() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// [`scores`], through the AVX-512 kernel where the CPU has it (same bits).
    ///
    /// # Safety
    /// As [`scores`].
    #[inline(always)]
    pub unsafe fn scores_any<E: Load + avx512::Load16>(
        rows: *const E,
        pf: *const E,
        len: usize,
        d: usize,
        q: *const f32,
        out: *mut f32,
        alibi: Option<(f32, u32, f32)>,
    ) -> (f32, bool) {
        if has_avx512() {
            avx512::scores(rows, pf, len, d, q, out, alibi)
        } else {
            scores(rows, pf, len, d, q, out, alibi)
        }
    }

    /// [`accum`] over all `d` columns, through the AVX-512 kernel where the CPU has it.
    ///
    /// # Safety
    /// As [`accum`].
    #[inline(always)]
    pub unsafe fn accum_any<E: Load + avx512::Load16>(
        rows: *const E,
        pf: *const E,
        len: usize,
        d: usize,
        w: *const f32,
        acc: *mut f32,
    ) {
        if has_avx512() {
            avx512::accum(rows, pf, len, d, w, acc)
        } else {
            prefetch_rows(pf, 0, len, d);
            accum(rows, len, d, w, acc, d)
        }
    }

    /// AVX-512 versions (used where the CPU has AVX-512F, detected at run time): one zmm
    /// FMA does the work of `dot`'s two ymm chains (lanes 0–7 the even chunk, 8–15 the
    /// odd), so every result is bit-identical to the AVX2 kernels, with half the µops.
    pub mod avx512 {
        use super::Load;
        use std::arch::x86_64::*;

        /// Sixteen consecutive elements widened to f32.
        pub trait Load16: Copy {
            /// # Safety
            /// `p..p + 16` must be readable and the CPU must have AVX-512F.
            unsafe fn load16(p: *const Self) -> __m512;
        }
        impl Load16 for f32 {
            #[inline]
            #[target_feature(enable = "avx512f")]
            unsafe fn load16(p: *const f32) -> __m512 {
                _mm512_loadu_ps(p)
            }
        }
        impl Load16 for u16 {
            #[inline]
            #[target_feature(enable = "avx512f")]
            unsafe fn load16(p: *const u16) -> __m512 {
                _mm512_cvtph_ps(_mm256_loadu_si256(p.cast::<__m256i>()))
            }
        }

        /// Lanes 0–7 plus lanes 8–15.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn halves(x: __m512) -> __m256 {
            _mm256_add_ps(
                _mm512_castps512_ps256(x),
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x))),
            )
        }

        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn dot4<E: Load16>(
            rows: *const E,
            t: usize,
            d: usize,
            q: *const f32,
        ) -> [__m256; 4] {
            let mut z = [_mm512_setzero_ps(); 4];
            let mut c = 0;
            while c < d {
                let qc = _mm512_loadu_ps(q.add(c));
                for (j, zj) in z.iter_mut().enumerate() {
                    *zj = _mm512_fmadd_ps(qc, E::load16(rows.add((t + j) * d + c)), *zj);
                }
                c += 16;
            }
            [halves(z[0]), halves(z[1]), halves(z[2]), halves(z[3])]
        }

        super::scores_fn!(
            /// AVX-512 scores, bit-identical to [`super::scores`].
            ///
            /// # Safety
            /// As [`super::scores`]; the CPU must have AVX-512F.
            #[target_feature(enable = "avx512f")]
            scores, Load16, dot4
        );

        /// AVX-512 [`super::accum`], bit-identical to it.
        ///
        /// # Safety
        /// As [`super::accum`]; the CPU must have AVX-512F.
        #[target_feature(enable = "avx512f")]
        pub unsafe fn accum<E: Load16 + Load>(
            rows: *const E,
            pf: *const E,
            len: usize,
            d: usize,
            w: *const f32,
            acc: *mut f32,
        ) {
            if d < 64 {
                super::prefetch_rows(pf, 0, len, d);
            }
            let mut c = 0;
            while c + 64 <= d {
                let mut r = [_mm512_setzero_ps(); 4];
                for (j, x) in r.iter_mut().enumerate() {
                    *x = _mm512_loadu_ps(acc.add(c + 16 * j));
                }
                for t in 0..len {
                    // One row of the page ahead per row consumed (as `scores` does): a
                    // burst of a whole page's prefetches stalls the core on fill buffers.
                    if c == 0 {
                        super::prefetch_rows(pf, t, 1, d);
                    }
                    let wt = *w.add(t);
                    if wt == 0.0 {
                        continue;
                    }
                    let wv = _mm512_set1_ps(wt);
                    for (j, x) in r.iter_mut().enumerate() {
                        *x = _mm512_fmadd_ps(E::load16(rows.add(t * d + c + 16 * j)), wv, *x);
                    }
                }
                for (j, x) in r.iter().enumerate() {
                    _mm512_storeu_ps(acc.add(c + 16 * j), *x);
                }
                c += 64;
            }
            while c + 16 <= d {
                let mut x = _mm512_loadu_ps(acc.add(c));
                for t in 0..len {
                    let wt = *w.add(t);
                    if wt != 0.0 {
                        x = _mm512_fmadd_ps(E::load16(rows.add(t * d + c)), _mm512_set1_ps(wt), x);
                    }
                }
                _mm512_storeu_ps(acc.add(c), x);
                c += 16;
            }
            if c < d {
                super::accum(rows.add(c), len, d, w, acc.add(c), d - c);
            }
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
        width: usize,
    ) {
        let mut c = 0;
        while c + 64 <= width {
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
        while c + 8 <= width {
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

/// Where one page of one kv head writes: head `hg` of the group writes its scores at
/// `scores + hg · stride + t` (t < len) and its page maximum (NaN when a score is not
/// finite) at `page_max + hg · pm_stride`.
#[derive(Clone, Copy)]
pub(crate) struct PageOut {
    pub(crate) scores: *mut f32,
    pub(crate) stride: usize,
    pub(crate) page_max: *mut f32,
    pub(crate) pm_stride: usize,
}

/// Scores of one page of one kv head for its `G` query heads, each bit-identical to the
/// group kernel's (`dot`, then the ALiBi term). `q` is `[G, D]`, `rows` `[len, D]`,
/// `slopes` `[G]`, `start` the position of the page's first token.
///
/// # Safety
/// Every address `out` names for hg < G, t < len must be writable.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn score_page<T: KvElem>(
    rows: &[T],
    pf: *const T,
    len: usize,
    d: usize,
    q: &[f32],
    slopes: Option<&[f32]>,
    start: u32,
    q_pos: f32,
    buf: &mut [f32],
    out: PageOut,
) {
    let _ = pf; // only the SIMD kernels prefetch
    let g = q.len() / d;
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if d.is_multiple_of(16) {
        let alibi = |hg: usize| slopes.map(|s| (s[hg], start, q_pos));
        let put = |hg: usize, (m, finite): (f32, bool)| {
            *out.page_max.add(hg * out.pm_stride) = if finite { m } else { f32::NAN };
        };
        if g == 1 {
            if let Some(r) = f16_bits(rows) {
                let pf = pf.cast::<u16>();
                let st = simd::scores_any(r.as_ptr(), pf, len, d, q.as_ptr(), out.scores, alibi(0));
                put(0, st);
                return;
            }
        }
        let (r, mut pf): (&[f32], *const f32) = match f32_elems(rows) {
            Some(r) => (r, pf.cast::<f32>()),
            None => {
                simd::prefetch_rows(pf, 0, len, d);
                T::slice_to_f32(rows, &mut buf[..len * d]);
                (&buf[..len * d], std::ptr::null())
            }
        };
        for hg in 0..g {
            let st = simd::scores_any(
                r.as_ptr(),
                std::mem::replace(&mut pf, std::ptr::null()),
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
pub(crate) fn accum_page<T: KvElem>(
    rows: &[T],
    pf: *const T,
    len: usize,
    d: usize,
    w: &[f32],
    ps: usize,
    active: impl Fn(usize) -> bool,
    g: usize,
    buf: &mut [f32],
    acc: &mut [f32],
) {
    let _ = pf; // only the SIMD kernels prefetch
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    if d.is_multiple_of(8) {
        // SAFETY: rows holds len·d elements, w[hg·ps..] at least len, acc[hg·d..] d.
        unsafe {
            if g == 1 {
                if let Some(r) = f16_bits(rows) {
                    let pf = pf.cast::<u16>();
                    simd::accum_any(r.as_ptr(), pf, len, d, w.as_ptr(), acc.as_mut_ptr());
                    return;
                }
            }
            simd::prefetch_rows(pf, 0, len, d);
            let r: &[f32] = match f32_elems(rows) {
                Some(r) => r,
                None => {
                    T::slice_to_f32(rows, &mut buf[..len * d]);
                    &buf[..len * d]
                }
            };
            for hg in 0..g {
                if active(hg) {
                    simd::accum_any(
                        r.as_ptr(),
                        std::ptr::null(),
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

/// An f32's bits as a u32 whose unsigned order is the numbers' order (NaN aside), so a
/// running maximum can be an atomic `fetch_max`.
#[inline(always)]
fn ordered_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Inverse of [`ordered_key`].
#[inline(always)]
fn from_ordered_key(k: u32) -> f32 {
    f32::from_bits(if k >> 31 == 1 { k & 0x7fff_ffff } else { !k })
}

/// Whether score `s` has entmax weight at τ (`a` = α − 1): the support's test.
#[inline(always)]
fn has_weight(s: f32, a: f64, tau: f64) -> bool {
    a * s as f64 - tau > 0.0
}

/// Distinct tokens in the supports of a group's heads (`a·s − τ > 0`), from their
/// token-ordered candidate lists: a merge, `cur` one cursor per head.
fn union_support(
    cands: &[Vec<f32>],
    toks: &[Vec<u32>],
    taus: &[f64],
    a: f64,
    cur: &mut [usize],
) -> u64 {
    let next = |hg: usize, mut k: usize| {
        while k < cands[hg].len() && !has_weight(cands[hg][k], a, taus[hg]) {
            k += 1;
        }
        k
    };
    for (hg, c) in cur.iter_mut().enumerate() {
        *c = next(hg, 0);
    }
    let mut rows = 0u64;
    loop {
        let m = (0..cur.len())
            .filter(|&hg| cur[hg] < toks[hg].len())
            .map(|hg| toks[hg][cur[hg]])
            .min();
        let Some(m) = m else { return rows };
        rows += 1;
        for hg in 0..cur.len() {
            if cur[hg] < toks[hg].len() && toks[hg][cur[hg]] == m {
                cur[hg] = next(hg, cur[hg] + 1);
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
    // The kernels prefetch the (page, kv head) slice this many slices further in reading
    // order (kv heads of a page, then the next page), wherever the pool placed it: softmax
    // SOFTMAX_PREFETCH_BYTES ahead (its block's scores stay in a hot scratch, so K and V are
    // the only streams), entmax whole pages ≥ PREFETCH_BYTES ahead (chosen when entmax
    // also stored an `[H, n]` score buffer; without it, 4 KiB against 16 KiB: 6.08–7.06
    // against 6.32–7.32 ms in four alternated rounds, within the machine's noise).
    let slice = ps * d;
    let slice_bytes = (slice * std::mem::size_of::<T>()).max(1);
    let pf_slices = if softmax {
        (SOFTMAX_PREFETCH_BYTES / slice_bytes).max(1)
    } else {
        (PREFETCH_BYTES / (hkv * slice_bytes)).max(1) * hkv
    };
    let ahead = |buf: &[T], i: usize, kvh: usize| -> *const T {
        let s = i * hkv + kvh + pf_slices;
        pages.get(s / hkv).map_or(std::ptr::null(), |p| {
            buf.as_ptr()
                .wrapping_add(p.page as usize * page_elems + (s % hkv) * slice)
        })
    };

    // Entmax gathers the τ candidates of each page right after scoring it (its scores are
    // in L1): those at or above the cut of a running maximum, which blocks share through
    // `run_max` (any value a block sees is at most the final maximum, so its cut keeps
    // every final candidate; the final cut filters them, so which superset a block kept
    // does not reach the results).
    let a = alpha - 1.0;
    let cap = STREAM_BLOCK_PAGES * ps;
    if !softmax {
        if np * ps > u32::MAX as usize {
            return Err(Error::invalid(
                "attention::attend_dense_seq",
                "pages",
                np,
                format!("pages of {ps} tokens: candidate token ids exceed u32"),
            ));
        }
        for r in &ws.run_max.0[..h] {
            r.store(ordered_key(f32::NEG_INFINITY), Ordering::Relaxed);
        }
    }
    // Pass 1: K, page-major, blocks in parallel.
    {
        let pmax = SharedMut::new(&mut ws.page_max[..h * np]);
        let starts = &ws.block_start[..=nb];
        let run_max = &ws.run_max.0[..h];
        // Softmax writes a block's scores into `hot` (page-major within the block: the
        // block's j-th page's head hh at (j·H + hh)·page_size, the layout `accum_page` reads
        // its weights in), scratch one thread reuses block after block, and reads the
        // block's V right after its K; entmax scores each page into the block's
        // `[H, page_size]` scratch and keeps its candidates from there.
        let k_block = |b: usize, part: &mut BlockPart, hot: *mut f32| {
            let mut idx = starts[b];
            let range = pages_of(b);
            let page_sc = part.page_sc.as_mut_ptr();
            part.bad = None;
            if !softmax {
                for hh in 0..h {
                    part.ncand[hh] = 0;
                    part.rmax[hh] = from_ordered_key(run_max[hh].load(Ordering::Relaxed));
                    part.rcut[hh] = if part.rmax[hh].is_finite() {
                        candidate_cut(part.rmax[hh] as f64, a)
                    } else {
                        f32::NEG_INFINITY
                    };
                }
            }
            for i in range.clone() {
                let p = pages[i];
                let len = p.len as usize;
                let base = p.page as usize * page_elems;
                for kvh in 0..hkv {
                    let off = base + kvh * ps * d;
                    let h0 = kvh * g;
                    // SAFETY: heads h0..h0+G, rows 0..len of this block's `[H, page_size]`
                    // page scores (softmax: of the run's hot scratch), and (head, page i)
                    // inside `[H, pages]`; blocks write disjoint page ranges, nothing reads
                    // `page_max` during this pass.
                    unsafe {
                        score_page(
                            &k[off..off + len * d],
                            ahead(k, i, kvh),
                            len,
                            d,
                            &q_scaled[h0 * d..(h0 + g) * d],
                            any_alibi.then(|| &slopes[h0..h0 + g]),
                            p.start,
                            q_pos,
                            &mut part.rows,
                            PageOut {
                                scores: if softmax {
                                    hot.add(((i - range.start) * h + h0) * ps)
                                } else {
                                    page_sc.add(h0 * ps)
                                },
                                stride: ps,
                                page_max: pmax.at(h0 * np + i),
                                pm_stride: np,
                            },
                        );
                    }
                }
                if softmax && part.bad.is_none() {
                    for hh in 0..h {
                        // SAFETY: this page's maximum, and head hh's scores of it in the
                        // run's scratch, written above (not yet exponentiated).
                        if unsafe { *pmax.at(hh * np + i) }.is_nan() {
                            let at = ((i - range.start) * h + hh) * ps;
                            let sc = unsafe { std::slice::from_raw_parts(hot.add(at), len) };
                            if let Some(j) = sc.iter().position(|x| !x.is_finite()) {
                                part.bad = Some((hh, idx + j, sc[j]));
                                break;
                            }
                        }
                    }
                }
                if !softmax {
                    for hh in 0..h {
                        // SAFETY: this page's maximum and scores of head hh, written above.
                        let pm = unsafe { *pmax.at(hh * np + i) };
                        let sc = unsafe { std::slice::from_raw_parts(page_sc.add(hh * ps), len) };
                        if pm.is_nan() {
                            // A score is not finite: the τ stage reports the block's first.
                            if part.bad.is_none() {
                                if let Some(j) = sc.iter().position(|x| !x.is_finite()) {
                                    part.bad = Some((hh, idx + j, sc[j]));
                                }
                            }
                            continue;
                        }
                        if pm < part.rcut[hh] {
                            continue;
                        }
                        let m = pm.max(from_ordered_key(run_max[hh].load(Ordering::Relaxed)));
                        if m > part.rmax[hh] {
                            run_max[hh].fetch_max(ordered_key(m), Ordering::Relaxed);
                            part.rmax[hh] = m;
                            part.rcut[hh] = candidate_cut(m as f64, a);
                        }
                        let cut = part.rcut[hh];
                        let (dst, tok) =
                            (&mut part.cand[hh * cap..], &mut part.cand_tok[hh * cap..]);
                        let mut c = part.ncand[hh];
                        for (j, &s) in sc.iter().enumerate() {
                            // c ≤ the block's tokens before this one < cap
                            dst[c] = s;
                            tok[c] = (i * ps + j) as u32;
                            c += (s >= cut) as usize;
                        }
                        part.ncand[hh] = c;
                    }
                }
                idx += len;
            }
            // Block maximum per head (NaN if a score is not finite).
            for hh in 0..h {
                // SAFETY: this block's pages of head hh, written above.
                let pm = unsafe {
                    std::slice::from_raw_parts(pmax.at(hh * np + range.start), range.len())
                };
                let m = pm.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                part.max[hh] = if pm.iter().any(|x| x.is_nan()) {
                    f32::NAN
                } else {
                    m
                };
            }
            if softmax {
                // Blocked softmax: exp against the block maximum, page by page (Σ per page in
                // f32, pages added in order in f64), then V weighted by exp(s − block max);
                // blocks are rescaled to the global maximum when combined.
                part.mass[..h].fill(0.0);
                part.acc[..h * d].fill(0.0);
                part.v_rows[..hkv].fill(0);
                for i in range.clone() {
                    let p = pages[i];
                    let len = p.len as usize;
                    let base = p.page as usize * page_elems;
                    // SAFETY: this page's scores in `hot`, written above.
                    let sc = unsafe {
                        std::slice::from_raw_parts_mut(hot.add((i - range.start) * h * ps), h * ps)
                    };
                    for hh in 0..h {
                        let m = part.max[hh];
                        let x = &mut sc[hh * ps..hh * ps + len];
                        for v in x.iter_mut() {
                            *v = exp_f32(*v - m); // vectorises
                        }
                        part.mass[hh] += x.iter().fold(0.0f32, |a, &v| a + v) as f64;
                    }
                    for kvh in 0..hkv {
                        let h0 = kvh * g;
                        part.v_rows[kvh] += len as u64;
                        let off = base + kvh * ps * d;
                        accum_page(
                            &v[off..off + len * d],
                            ahead(v, i, kvh),
                            len,
                            d,
                            &sc[h0 * ps..(h0 + g) * ps],
                            ps,
                            |_| true,
                            g,
                            &mut part.rows,
                            &mut part.acc[h0 * d..(h0 + g) * d],
                        );
                    }
                }
            }
        };
        let parts = &mut ws.parts[..nb];
        if softmax {
            // One contiguous run of blocks per thread; its first block's candidate buffer
            // (unused by softmax) is the run's hot scratch. Which thread runs a block
            // changes no bit of its results.
            let per = nb.div_ceil(rayon::current_num_threads().clamp(1, nb));
            parts.par_chunks_mut(per).enumerate().for_each(|(c, run)| {
                let mut hot = std::mem::take(&mut run[0].cand);
                for (j, part) in run.iter_mut().enumerate() {
                    k_block(c * per + j, part, hot.as_mut_ptr());
                }
                run[0].cand = hot;
            });
        } else if nb > 1 {
            parts
                .par_iter_mut()
                .enumerate()
                .for_each(|(b, part)| k_block(b, part, std::ptr::null_mut()));
        } else {
            k_block(0, &mut parts[0], std::ptr::null_mut());
        }
    }

    // A score not finite (q·k overflowed): the first block's first, as a typed error.
    if let Some((hh, t, x)) = ws.parts[..nb].iter().find_map(|p| p.bad) {
        return Err(Error::NonFinite {
            op: "attention::attend_dense_seq",
            arg: "scores",
            index: hh * n + t,
            value: x as f64,
        });
    }
    // τ per head.
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
        // s_max per head from the block maxima; the final candidates are the blocks'
        // candidates at or above the exact f32 cut of s_max, compared in f32.
        for hh in 0..h {
            let bm = ws.parts[..nb].iter().map(|p| p.max[hh]);
            let smax = bm.fold(f32::NEG_INFINITY, f32::max) as f64;
            ws.smax[hh] = smax;
            ws.cut[hh] = candidate_cut(smax, a);
        }
        let parts = &ws.parts[..nb];
        let (smaxs, cuts) = (&ws.smax[..h], &ws.cut[..h]);
        let code = alpha_code(alpha);
        let beta = 1.0 / a;
        ws.cand[..h]
            .par_iter_mut()
            .zip(ws.cand_tok[..h].par_iter_mut())
            .zip(ws.solve[..h].par_iter_mut())
            .zip(ws.tau[..h].par_iter_mut())
            .zip(ws.res[..h].par_iter_mut())
            .enumerate()
            .for_each(|(hh, ((((cand, tok), solve), tau), res))| {
                cand.clear();
                tok.clear();
                let cut = cuts[hh];
                for (bi, p) in parts.iter().enumerate() {
                    // The blocks' lists lie in as many buffers, written by other threads:
                    // their lines are fetched a few blocks ahead.
                    if let Some(q) = parts.get(bi + FILTER_AHEAD) {
                        let r = hh * cap..hh * cap + q.ncand[hh];
                        super::cpu::prefetch(&q.cand[r.clone()]);
                        super::cpu::prefetch(&q.cand_tok[r]);
                    }
                    let r = hh * cap..hh * cap + p.ncand[hh];
                    for (&s, &t) in p.cand[r.clone()].iter().zip(&p.cand_tok[r]) {
                        if s >= cut {
                            cand.push(s);
                            tok.push(t);
                        }
                    }
                }
                // The solve reorders its input: the token-ordered list stays for V.
                solve.clear();
                solve.extend_from_slice(cand);
                *tau = entmax_threshold_candidates(solve, smaxs[hh], alpha);
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
            });

        // Pass 2: V of the support rows only, head by head in token order (the candidates
        // carry their tokens), each kv head's group on one thread; rows are prefetched
        // V_AHEAD_ROWS support candidates ahead.
        let (cands, toks, taus, res) =
            (&ws.cand[..h], &ws.cand_tok[..h], &ws.tau[..h], &ws.res[..h]);
        let row = |kvh: usize, x: u32| {
            let x = x as usize;
            let off = pages[x / ps].page as usize * page_elems + kvh * slice + (x % ps) * d;
            &v[off..off + d]
        };
        ws.out[..h * d]
            .par_chunks_mut(g * d)
            .zip(ws.vbuf[..hkv * d].par_chunks_mut(d))
            .enumerate()
            .for_each(|(kvh, (out_g, buf))| {
                for hg in 0..g {
                    let hh = kvh * g + hg;
                    let acc = &mut out_g[hg * d..(hg + 1) * d];
                    acc.fill(0.0);
                    // As the group kernel: the f32 weight times the f32 norm.
                    let (tau, norm) = (taus[hh], (1.0 / res[hh].mass) as f32);
                    let (c, t) = (&cands[hh], &toks[hh]);
                    for k in 0..c.len() {
                        if let Some(&s) = c.get(k + V_AHEAD_ROWS) {
                            if has_weight(s, a, tau) {
                                super::cpu::prefetch(row(kvh, t[k + V_AHEAD_ROWS]));
                            }
                        }
                        if !has_weight(c[k], a, tau) {
                            continue;
                        }
                        let w = weight(c[k], a, tau, beta, code) as f32 * norm;
                        accum_page(
                            row(kvh, t[k]),
                            std::ptr::null(),
                            1,
                            d,
                            std::slice::from_ref(&w),
                            1,
                            |_| true,
                            1,
                            buf,
                            acc,
                        );
                    }
                }
            });
        // V rows read: the union of the group's supports (token-ordered lists).
        for kvh in 0..hkv {
            ws.v_rows[kvh] = if g == 1 {
                res[kvh].support as u64
            } else {
                union_support(
                    &cands[kvh * g..(kvh + 1) * g],
                    &toks[kvh * g..(kvh + 1) * g],
                    &taus[kvh * g..(kvh + 1) * g],
                    a,
                    &mut ws.cursor[..g],
                )
            };
        }
        return Ok(());
    }

    // Softmax: combine the blocks in block order, each block's sums times its factor
    // exp(m_b − M)/S.
    let out = &mut ws.out[..h * d];
    out.fill(0.0);
    for part in &ws.parts[..nb] {
        for hh in 0..h {
            let c = part.scale[hh];
            for (o, &x) in out[hh * d..(hh + 1) * d]
                .iter_mut()
                .zip(&part.acc[hh * d..(hh + 1) * d])
            {
                *o += c * x;
            }
        }
    }
    for kvh in 0..hkv {
        ws.v_rows[kvh] = ws.parts[..nb].iter().map(|p| p.v_rows[kvh]).sum();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::cpu::dot;
    use half::f16;

    fn rnd(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    }

    /// Dense entmax against brute force over its own f32 scores, across many blocks and
    /// thread counts, scattered pages, a short last page, GQA, ALiBi: the candidates the K pass
    /// keeps against its running cut, filtered, are exactly the scores at or above the
    /// final cut, in token order; τ is the full solve's; V rows read are the union of each
    /// group's supports; the output is Σ w·v over the support (f64 reference).
    #[test]
    fn dense_entmax_candidates_rows_and_output_match_brute_force() {
        let mut seed = 17u64;
        let (hkv, ps, d) = (2usize, 16usize, 32usize);
        for (g, alpha, np, threads, alibi) in [
            (1usize, 1.5, 300usize, 2usize, false),
            (3, 1.5, 200, 3, false),
            (2, 2.0, 150, 1, false),
            (2, 4.0 / 3.0, 131, 2, false),
            (2, 1.5, 260, 2, true),
            (1, 3.0, 140, 3, true),
        ] {
            let h = hkv * g;
            // Pool pages in a shuffled order; the last page holds 5 tokens.
            let pool_pages = np + 7;
            let mut order: Vec<u32> = (0..pool_pages as u32).collect();
            for i in (1..order.len()).rev() {
                let j = ((rnd(&mut seed) * 0.5 + 0.5) * i as f32) as usize % (i + 1);
                order.swap(i, j);
            }
            let pages: Vec<PageRef> = (0..np)
                .map(|i| PageRef {
                    page: order[i],
                    len: if i + 1 == np { 5 } else { ps as u32 },
                    start: (i * ps) as u32,
                })
                .collect();
            let n: usize = pages.iter().map(|p| p.len as usize).sum();
            // Keys drift upwards so that later blocks raise the running maximum.
            let k: Vec<f16> = (0..pool_pages * hkv * ps * d)
                .map(|i| {
                    f16::from_f32(
                        rnd(&mut seed) * 2.0 + (i as f32 / (pool_pages * hkv * ps * d) as f32),
                    )
                })
                .collect();
            let v: Vec<f16> = (0..k.len())
                .map(|_| f16::from_f32(rnd(&mut seed)))
                .collect();
            let q: Vec<f32> = (0..h * d).map(|_| rnd(&mut seed) * 0.6).collect();
            // ALiBi: slopes that move the maximum towards the recent tokens.
            let slopes: Vec<f32> = (0..h)
                .map(|hh| if alibi { 0.002 * (hh + 1) as f32 } else { 0.0 })
                .collect();
            let q_pos = (n - 1) as f32;
            let geom = PoolGeometry {
                num_kv_heads: hkv,
                page_size: ps,
                head_dim: d,
            };
            let mut ws = StreamWorkspace::new(h, hkv, n, ps, d);
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                attend_dense_seq(&k, &v, geom, &pages, &q, &slopes, q_pos, alpha, &mut ws)
            })
            .unwrap();
            let a = alpha - 1.0;
            let tok_of = |t: usize| {
                let (mut i, mut j) = (0, t);
                while j >= pages[i].len as usize {
                    j -= pages[i].len as usize;
                    i += 1;
                }
                (i, j)
            };
            let mut scratch = Vec::new();
            let mut want_rows = vec![0u64; hkv];
            for kvh in 0..hkv {
                let mut rows = std::collections::BTreeSet::new();
                for hg in 0..g {
                    let hh = kvh * g + hg;
                    // The step's scores: `dot` bit for bit (page_scores_equal_dot_bitwise).
                    let sc: Vec<f32> = (0..n)
                        .map(|t| {
                            let (i, j) = tok_of(t);
                            let off = pages[i].page as usize * hkv * ps * d + kvh * ps * d + j * d;
                            let row: Vec<f32> =
                                k[off..off + d].iter().map(|x| x.to_f32()).collect();
                            let s = dot(&q[hh * d..(hh + 1) * d], &row);
                            if alibi {
                                s + slopes[hh] * ((pages[i].start as usize + j) as f32 - q_pos)
                            } else {
                                s
                            }
                        })
                        .collect();
                    let sc = &sc[..];
                    let tau = crate::tau::entmax_threshold_f32(sc, alpha, &mut scratch).unwrap();
                    assert_eq!(
                        ws.tau[hh].to_bits(),
                        tau.to_bits(),
                        "tau g {g} alpha {alpha} head {hh}"
                    );
                    let smax = sc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
                    let cut = candidate_cut(smax, a);
                    let want: Vec<(f32, u32)> = (0..n)
                        .filter(|&t| sc[t] >= cut)
                        .map(|t| {
                            let (i, j) = tok_of(t);
                            (sc[t], (i * ps + j) as u32)
                        })
                        .collect();
                    let got: Vec<(f32, u32)> = ws.cand[hh]
                        .iter()
                        .copied()
                        .zip(ws.cand_tok[hh].iter().copied())
                        .collect();
                    assert_eq!(got, want, "candidates g {g} alpha {alpha} head {hh}");
                    // Output: Σ w_t v_t / Σ w_t over the support, in f64.
                    let mut acc = vec![0.0f64; d];
                    let mut mass = 0.0f64;
                    for t in 0..n {
                        let y = a * sc[t] as f64 - tau;
                        if y <= 0.0 {
                            continue;
                        }
                        rows.insert(t);
                        let w = y.powf(1.0 / a);
                        mass += w;
                        let (i, j) = tok_of(t);
                        let off = pages[i].page as usize * hkv * ps * d + kvh * ps * d + j * d;
                        for (x, r) in acc.iter_mut().zip(&v[off..off + d]) {
                            *x += w * r.to_f64();
                        }
                    }
                    for (c, (x, &o)) in acc.iter().zip(&ws.out[hh * d..(hh + 1) * d]).enumerate() {
                        let want = x / mass;
                        assert!(
                            (want - o as f64).abs() <= 1e-5 * (1.0 + want.abs()),
                            "out g {g} alpha {alpha} head {hh} dim {c}: {o} vs {want}"
                        );
                    }
                }
                want_rows[kvh] = rows.len() as u64;
            }
            assert_eq!(
                &ws.v_rows[..hkv],
                &want_rows[..],
                "V rows g {g} alpha {alpha}"
            );
            assert!(want_rows.iter().all(|&r| r > 0));
        }
    }

    /// A score that overflows (finite q and K) is a typed error naming it, at every α and
    /// thread count, not a NaN output.
    #[test]
    fn dense_non_finite_score_is_a_typed_error() {
        let (hkv, ps, d, np) = (2usize, 16usize, 16usize, 200usize);
        let pages: Vec<PageRef> = (0..np)
            .map(|i| PageRef {
                page: i as u32,
                len: ps as u32,
                start: (i * ps) as u32,
            })
            .collect();
        let n = np * ps;
        let mut k = vec![f16::from_f32(0.5); np * hkv * ps * d];
        // Head 1 (kv head 1), token 150·16 + 3: its row is large, q·k overflows f32.
        let t_bad = 150 * ps + 3;
        let off = 150 * hkv * ps * d + ps * d + 3 * d;
        k[off..off + d].fill(f16::from_f32(60000.0));
        let v = vec![f16::from_f32(0.25); k.len()];
        let mut q = vec![0.1f32; 2 * d];
        q[d..].fill(1e35);
        let geom = PoolGeometry {
            num_kv_heads: hkv,
            page_size: ps,
            head_dim: d,
        };
        for alpha in [1.0, 1.5, 2.0] {
            for threads in [1, 2] {
                let mut ws = StreamWorkspace::new(2, hkv, n, ps, d);
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let r = pool.install(|| {
                    attend_dense_seq(
                        &k,
                        &v,
                        geom,
                        &pages,
                        &q,
                        &[0.0; 2],
                        (n - 1) as f32,
                        alpha,
                        &mut ws,
                    )
                });
                assert!(
                    matches!(r, Err(Error::NonFinite { arg: "scores", index, .. }) if index == n + t_bad),
                    "alpha {alpha} threads {threads}: {r:?}"
                );
            }
        }
    }

    /// Page scores equal the group kernel's `dot` (+ ALiBi) bit for bit, f16 and f32 rows,
    /// every row count (the 4-row and the 1-row paths), one and several heads; the page
    /// maximum is the maximum.
    #[test]
    fn page_scores_equal_dot_bitwise() {
        let mut seed = 3u64;
        for d in [16usize, 32, 64, 80, 128, 24, 7] {
            for len in [1usize, 3, 4, 5, 8, 16, 17] {
                for g in [1usize, 3] {
                    for alibi in [false, true] {
                        let kf: Vec<f32> = (0..len * d).map(|_| rnd(&mut seed) * 3.0).collect();
                        let k16: Vec<f16> = kf.iter().map(|&x| f16::from_f32(x)).collect();
                        let q: Vec<f32> = (0..g * d).map(|_| rnd(&mut seed)).collect();
                        let slopes: Vec<f32> = (0..g).map(|_| rnd(&mut seed).abs()).collect();
                        let (start, q_pos) = (32u32, 1000.0f32);
                        for half in [false, true] {
                            let mut buf = vec![0.0f32; len * d];
                            let mut out = vec![0.0f32; g * len];
                            let mut pm = vec![0.0f32; g];
                            let po = PageOut {
                                scores: out.as_mut_ptr(),
                                stride: len,
                                page_max: pm.as_mut_ptr(),
                                pm_stride: 1,
                            };
                            let sl = alibi.then_some(&slopes[..]);
                            // SAFETY: out holds g·len, pm g.
                            unsafe {
                                if half {
                                    let pf = std::ptr::null();
                                    score_page(&k16, pf, len, d, &q, sl, start, q_pos, &mut buf, po)
                                } else {
                                    let pf = kf.as_ptr();
                                    score_page(&kf, pf, len, d, &q, sl, start, q_pos, &mut buf, po)
                                }
                            };
                            let rows: Vec<f32> = if half {
                                k16.iter().map(|x| x.to_f32()).collect()
                            } else {
                                kf.clone()
                            };
                            for hg in 0..g {
                                let mut m = f32::NEG_INFINITY;
                                for t in 0..len {
                                    let mut s =
                                        dot(&q[hg * d..(hg + 1) * d], &rows[t * d..(t + 1) * d]);
                                    if alibi {
                                        s += slopes[hg] * ((start as usize + t) as f32 - q_pos);
                                    }
                                    m = m.max(s);
                                    assert_eq!(
                                        out[hg * len + t].to_bits(),
                                        s.to_bits(),
                                        "d {d} len {len} g {g} alibi {alibi} f16 {half}"
                                    );
                                }
                                assert_eq!(pm[hg].to_bits(), m.to_bits());
                            }
                        }
                    }
                }
            }
        }
    }

    /// The AVX-512 kernels give the AVX2 kernels' bits (where the CPU has AVX-512).
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))]
    #[test]
    fn avx512_kernels_equal_avx2_bitwise() {
        if !simd::has_avx512() {
            return;
        }
        let mut seed = 17u64;
        for d in [16usize, 32, 64, 80, 128, 72, 8] {
            for len in [1usize, 4, 7, 16] {
                let kf: Vec<f32> = (0..len * d).map(|_| rnd(&mut seed) * 2.0).collect();
                let k16: Vec<u16> = kf.iter().map(|&x| f16::from_f32(x).to_bits()).collect();
                let q: Vec<f32> = (0..d).map(|_| rnd(&mut seed)).collect();
                let w: Vec<f32> = (0..len)
                    .map(|t| {
                        if t % 3 == 1 {
                            0.0
                        } else {
                            rnd(&mut seed).abs()
                        }
                    })
                    .collect();
                let acc0: Vec<f32> = (0..d).map(|_| rnd(&mut seed)).collect();
                // SAFETY: the buffers have the sizes the kernels read and write.
                unsafe {
                    if d % 16 == 0 {
                        let (mut a, mut b) = (vec![0.0f32; len], vec![0.0f32; len]);
                        let al = Some((0.25f32, 3u32, 9.0f32));
                        let ra = simd::scores(
                            k16.as_ptr(),
                            std::ptr::null(),
                            len,
                            d,
                            q.as_ptr(),
                            a.as_mut_ptr(),
                            al,
                        );
                        let rb = simd::avx512::scores(
                            k16.as_ptr(),
                            k16.as_ptr(),
                            len,
                            d,
                            q.as_ptr(),
                            b.as_mut_ptr(),
                            al,
                        );
                        assert_eq!(ra.0.to_bits(), rb.0.to_bits());
                        assert_eq!(
                            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                        );
                        let ra = simd::scores(
                            kf.as_ptr(),
                            std::ptr::null(),
                            len,
                            d,
                            q.as_ptr(),
                            a.as_mut_ptr(),
                            None,
                        );
                        let rb = simd::avx512::scores(
                            kf.as_ptr(),
                            kf.as_ptr(),
                            len,
                            d,
                            q.as_ptr(),
                            b.as_mut_ptr(),
                            None,
                        );
                        assert_eq!(ra.0.to_bits(), rb.0.to_bits());
                        assert_eq!(
                            a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                        );
                    }
                    let (mut a, mut b) = (acc0.clone(), acc0.clone());
                    simd::accum(k16.as_ptr(), len, d, w.as_ptr(), a.as_mut_ptr(), d);
                    simd::avx512::accum(
                        k16.as_ptr(),
                        std::ptr::null(),
                        len,
                        d,
                        w.as_ptr(),
                        b.as_mut_ptr(),
                    );
                    assert_eq!(
                        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "d {d}"
                    );
                    let (mut a, mut b) = (acc0.clone(), acc0.clone());
                    simd::accum(kf.as_ptr(), len, d, w.as_ptr(), a.as_mut_ptr(), d);
                    simd::avx512::accum(
                        kf.as_ptr(),
                        std::ptr::null(),
                        len,
                        d,
                        w.as_ptr(),
                        b.as_mut_ptr(),
                    );
                    assert_eq!(
                        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        "d {d}"
                    );
                }
            }
        }
    }
}
