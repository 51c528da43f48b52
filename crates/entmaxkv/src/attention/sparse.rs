//! Sparse decode page-major: the kept pages of every kv head of a sequence in one walk.
//!
//! A sparse selector keeps a page set per kv head (per task). The group kernel
//! ([`super::cpu::attend_group`]) then reads each task's pages as scattered `page_size · D`
//! slices, task after task. [`attend_sparse_seq`] instead walks the union of the tasks'
//! page sets once, in the sequence's page order, with a per-page kv-head mask: for each
//! page it reads the K (then V) slices of the kv heads that kept it — the same bytes, but
//! as one forward stream through the pool, with a steady software prefetch (into L2) of
//! the slice a fixed distance (16 KiB) down the union, one line per line consumed. Blocks
//! of [`UNION_BLOCK`] union pages run in parallel (rayon); V partial sums are combined in
//! block order, so the bits do not depend on the thread count.
//!
//! Each head's scores are those of the group kernel bit for bit (the same `dot`, the same
//! ALiBi term, via [`super::stream`]'s page kernel) and τ, the weights, mass and support
//! come from the same per-head routine on the same scores in the same order, so τ and the
//! support are exactly the group kernel's; only the order in which V rows are summed
//! differs (blocks of union pages instead of blocks of one task's pages).
//!
//! The kernel needs one task per kv head (per-query-head selection with G = 1, or shared
//! GQA page sets) and at most 64 kv heads (the mask is a `u64`).

use super::cpu::{head_weights, HeadResult, PageRef, PoolGeometry, SharedMut, TauMode};
use super::stream::{accum_page, score_page, PageOut};
use crate::dtype::KvElem;
use crate::error::Result;
use rayon::prelude::*;

/// Union pages per block of the parallel passes (fixed: the summation order depends on it,
/// never on the thread count).
pub const UNION_BLOCK: usize = 64;

/// How far ahead of the slices being read the K pass prefetches.
const PREFETCH_BYTES: usize = 16 * 1024;

/// V pass: union pages ahead whose needed V slices are prefetched.
const V_AHEAD: usize = 4;

#[derive(Debug, Clone, Default)]
struct Part {
    /// `[H, D]` V sums (weights normalised).
    acc: Vec<f32>,
    /// `[H_kv]` V rows read.
    v_rows: Vec<u64>,
    /// `[H_kv]` token cursor of each kv head's kept tokens.
    cur: Vec<usize>,
    /// `[page_size, D]` widened rows.
    rows: Vec<f32>,
    /// `[G, page_size]` normalised weights of one page.
    w: Vec<f32>,
}

/// Per-sequence scratch of [`attend_sparse_seq`] (grows, never shrinks). The results of
/// the last call are in [`Self::out`], [`Self::res`] and [`Self::v_rows`].
#[derive(Debug, Clone, Default)]
pub struct SparseWorkspace {
    /// `[pages]` kv-head mask and page ref of each slot of the sequence.
    mask: Vec<u64>,
    slot_ref: Vec<PageRef>,
    /// The union: page refs and masks in page order.
    upages: Vec<PageRef>,
    umask: Vec<u64>,
    /// `[blocks + 1, H_kv]` each kv head's token index at the start of each block.
    bstart: Vec<usize>,
    /// `[H_kv]` tokens kept per kv head.
    ntok: Vec<usize>,
    /// `[H, stride]` scores, then weights.
    scores: Vec<f32>,
    /// `[H, union]` maximum score of each (head, union page).
    page_max: Vec<f32>,
    cand: Vec<Vec<f32>>,
    parts: Vec<Part>,
    /// `[H, D]` outputs of the last call.
    pub out: Vec<f32>,
    /// `[H]` per-head results of the last call.
    pub res: Vec<HeadResult>,
    /// `[H_kv]` V rows read by the last call.
    pub v_rows: Vec<u64>,
}

fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl SparseWorkspace {
    /// Scratch for `heads` query heads over `kv_heads` kv heads, up to `max_tokens` tokens.
    pub fn new(
        heads: usize,
        kv_heads: usize,
        max_tokens: usize,
        page_size: usize,
        head_dim: usize,
    ) -> Self {
        let mut ws = SparseWorkspace::default();
        let np = max_tokens.div_ceil(page_size).max(1);
        ws.reserve(heads, kv_heads, max_tokens, np, np, page_size, head_dim);
        ws
    }

    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &mut self,
        h: usize,
        hkv: usize,
        stride: usize,
        np: usize,
        nu: usize,
        ps: usize,
        d: usize,
    ) {
        let g = h / hkv.max(1);
        grow(&mut self.mask, np);
        grow(&mut self.slot_ref, np);
        if self.upages.capacity() < np {
            self.upages.reserve(np - self.upages.len());
            self.umask.reserve(np - self.umask.len());
        }
        let nb = nu.div_ceil(UNION_BLOCK).max(1);
        grow(&mut self.bstart, (nb + 1) * hkv);
        grow(&mut self.ntok, hkv);
        grow(&mut self.scores, h * stride);
        grow(&mut self.page_max, h * nu);
        if self.cand.len() < h {
            self.cand.resize_with(h, Vec::new);
        }
        for c in &mut self.cand {
            if c.capacity() < stride {
                c.reserve(stride - c.len());
            }
        }
        if self.parts.len() < nb {
            self.parts.resize_with(nb, Part::default);
        }
        for p in &mut self.parts {
            grow(&mut p.acc, h * d);
            grow(&mut p.v_rows, hkv);
            grow(&mut p.cur, hkv);
            grow(&mut p.rows, ps * d);
            grow(&mut p.w, g * ps);
        }
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
                4 * (p.acc.len() + p.rows.len() + p.w.len()) + 8 * (p.v_rows.len() + p.cur.len())
            })
            .sum();
        8 * (self.mask.len() + self.umask.capacity() + self.bstart.len() + self.ntok.len())
            + 12 * (self.slot_ref.len() + self.upages.capacity())
            + 4 * (self.scores.len() + self.page_max.len() + self.out.len())
            + 4 * self.cand.iter().map(|c| c.capacity()).sum::<usize>()
            + std::mem::size_of::<HeadResult>() * self.res.len()
            + 8 * self.v_rows.len()
            + parts
    }
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

/// Sparse decode of one sequence over all its heads, page-major (see the module docs).
/// `lists(kvh)` is kv head `kvh`'s kept pages in token order (each a page of the
/// sequence, `start` a multiple of the page size, below `pages · page_size`), `pages` the
/// sequence's page count, `q_scaled` `[H, D]` (scale applied), `slopes` `[H]`, `tau_hat(h)`
/// head h's τ̂ (NaN for none; used by the fixed and corrected τ modes). Results land in
/// `ws.out`, `ws.res`, `ws.v_rows`.
#[allow(clippy::too_many_arguments)]
pub fn attend_sparse_seq<'a, T: KvElem>(
    k: &[T],
    v: &[T],
    geom: PoolGeometry,
    lists: impl Fn(usize) -> &'a [PageRef],
    pages: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    q_pos: f32,
    alpha: f64,
    mode: TauMode,
    tau_hat: impl Fn(usize) -> f64 + Sync,
    ws: &mut SparseWorkspace,
) -> Result<()> {
    let (hkv, ps, d) = (geom.num_kv_heads, geom.page_size, geom.head_dim);
    assert!(hkv <= 64, "attend_sparse_seq: at most 64 kv heads");
    let h = slopes.len();
    let g = h / hkv;
    let np = pages;

    // The union of the kept pages, in page order, and each kv head's token count.
    grow(&mut ws.mask, np);
    grow(&mut ws.slot_ref, np);
    grow(&mut ws.ntok, hkv);
    ws.mask[..np].fill(0);
    for kvh in 0..hkv {
        let mut n = 0;
        for p in lists(kvh) {
            let slot = p.start as usize / ps;
            ws.mask[slot] |= 1u64 << kvh;
            ws.slot_ref[slot] = *p;
            n += p.len as usize;
        }
        ws.ntok[kvh] = n;
    }
    ws.upages.clear();
    ws.umask.clear();
    for (m, r) in ws.mask[..np].iter().zip(&ws.slot_ref[..np]) {
        if *m != 0 {
            ws.upages.push(*r);
            ws.umask.push(*m);
        }
    }
    let nu = ws.upages.len();
    let nb = nu.div_ceil(UNION_BLOCK).max(1);
    let stride = ws.ntok[..hkv].iter().copied().max().unwrap_or(0).max(1);
    ws.reserve(h, hkv, stride, np, nu, ps, d);
    // Each kv head's token index at the start of each block.
    {
        let mut cur = [0usize; 64];
        for b in 0..nb {
            ws.bstart[b * hkv..(b + 1) * hkv].copy_from_slice(&cur[..hkv]);
            for u in (b * UNION_BLOCK).min(nu)..((b + 1) * UNION_BLOCK).min(nu) {
                let (len, mut m) = (ws.upages[u].len as usize, ws.umask[u]);
                while m != 0 {
                    cur[m.trailing_zeros() as usize] += len;
                    m &= m - 1;
                }
            }
        }
        ws.bstart[nb * hkv..(nb + 1) * hkv].copy_from_slice(&cur[..hkv]);
    }
    let blocks = |b: usize| (b * UNION_BLOCK).min(nu)..((b + 1) * UNION_BLOCK).min(nu);
    let any_alibi = slopes.iter().any(|&s| s != 0.0);
    let (upages, umask, bstart) = (&ws.upages[..nu], &ws.umask[..nu], &ws.bstart[..]);
    let slice = |p: &PageRef, kvh: usize| {
        let off = geom.kv_offset(p.page, kvh);
        off..off + p.len as usize * d
    };
    // Union pages ahead to prefetch: about PREFETCH_BYTES of slices.
    // Slices (one kv head's rows of one page) the K prefetch runs ahead: PREFETCH_BYTES.
    let ahead = (PREFETCH_BYTES / (ps * d * std::mem::size_of::<T>()).max(1)).max(1);

    // Pass 1: K, union pages in order, blocks in parallel.
    {
        let scores = SharedMut::new(&mut ws.scores[..h * stride]);
        let pmax = SharedMut::new(&mut ws.page_max[..h * nu]);
        let k_block = |b: usize, part: &mut Part| {
            let range = blocks(b);
            let cur = &mut part.cur[..hkv];
            cur.copy_from_slice(&bstart[b * hkv..(b + 1) * hkv]);
            // A lead cursor runs `ahead` slices in front of the walk (within the block):
            // each slice read hands the score kernel the lead slice, which it prefetches
            // one line per line consumed. The block's first slices are prefetched at once.
            let (mut lu, mut lm) = (range.start, umask.get(range.start).copied().unwrap_or(0));
            let mut lead = || -> Option<*const T> {
                while lm == 0 {
                    lu += 1;
                    if lu >= range.end {
                        return None;
                    }
                    lm = umask[lu];
                }
                let kvh = lm.trailing_zeros() as usize;
                lm &= lm - 1;
                Some(
                    k.as_ptr()
                        .wrapping_add(geom.kv_offset(upages[lu].page, kvh)),
                )
            };
            for _ in 0..ahead {
                if let Some(ptr) = lead() {
                    // SAFETY: a slice of `k` (the lead is a kept page's slice).
                    prefetch_l2(unsafe { std::slice::from_raw_parts(ptr, ps * d) });
                }
            }
            for u in range.clone() {
                let p = upages[u];
                let len = p.len as usize;
                let mut m = umask[u];
                while m != 0 {
                    let kvh = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let h0 = kvh * g;
                    let pf = lead().unwrap_or(std::ptr::null());
                    // SAFETY: heads h0..h0+G write tokens cur..cur+len < ntok ≤ stride of
                    // their `[H, stride]` rows and (head, u) of `[H, nu]`; blocks write
                    // disjoint token and union ranges, nothing reads them in this pass.
                    // `pf` is null or a slice of `k` (prefetched only).
                    unsafe {
                        score_page(
                            &k[slice(&p, kvh)],
                            pf,
                            len,
                            d,
                            &q_scaled[h0 * d..(h0 + g) * d],
                            any_alibi.then(|| &slopes[h0..h0 + g]),
                            p.start,
                            q_pos,
                            &mut part.rows,
                            PageOut {
                                scores: scores.at(h0 * stride + cur[kvh]),
                                stride,
                                page_max: pmax.at(h0 * nu + u),
                                pm_stride: nu,
                            },
                        );
                    }
                    cur[kvh] += len;
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

    // τ per head on its cached scores (as the group kernel), scores become weights.
    {
        let ntok = &ws.ntok[..hkv];
        ws.scores[..h * stride]
            .par_chunks_mut(stride)
            .zip(ws.cand[..h].par_iter_mut())
            .zip(ws.res[..h].par_iter_mut())
            .enumerate()
            .try_for_each(|(hh, ((sc, cand), res))| -> Result<()> {
                *res = head_weights(&mut sc[..ntok[hh / g]], alpha, mode, tau_hat(hh), cand)?;
                Ok(())
            })?;
    }

    // Pass 2: V of the (page, kv head) pairs where some head has weight.
    {
        let (scores, page_max) = (&ws.scores[..h * stride], &ws.page_max[..h * nu]);
        let res = &ws.res[..h];
        let softmax = alpha == 1.0;
        let a = alpha - 1.0;
        // Whether head hh can have weight on union page u (entmax: its page maximum clears
        // τ; softmax: every token has weight unless exp underflows).
        let reach = |hh: usize, u: usize| softmax || a * page_max[hh * nu + u] as f64 > res[hh].tau;
        let v_block = |b: usize, part: &mut Part| {
            part.acc[..h * d].fill(0.0);
            part.v_rows[..hkv].fill(0);
            let range = blocks(b);
            let cur = &mut part.cur[..hkv];
            cur.copy_from_slice(&bstart[b * hkv..(b + 1) * hkv]);
            for u in range.clone() {
                let j = u + V_AHEAD;
                if j < range.end {
                    let mut m = umask[j];
                    while m != 0 {
                        let kvh = m.trailing_zeros() as usize;
                        m &= m - 1;
                        if (kvh * g..(kvh + 1) * g).any(|hh| reach(hh, j)) {
                            prefetch_l2(&v[slice(&upages[j], kvh)]);
                        }
                    }
                }
                let p = upages[u];
                let len = p.len as usize;
                let mut m = umask[u];
                while m != 0 {
                    let kvh = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let h0 = kvh * g;
                    let idx = cur[kvh];
                    cur[kvh] += len;
                    let mut any = false;
                    for hg in 0..g {
                        let hh = h0 + hg;
                        let w = &mut part.w[hg * ps..hg * ps + len];
                        if reach(hh, u) {
                            let norm = (1.0 / res[hh].mass) as f32;
                            let sc = &scores[hh * stride + idx..hh * stride + idx + len];
                            let mut bits = 0u32;
                            for (w, &s) in w.iter_mut().zip(sc) {
                                *w = s * norm;
                                bits |= s.to_bits() & 0x7fff_ffff;
                            }
                            any |= bits != 0;
                        } else {
                            w.fill(0.0);
                        }
                    }
                    if !any {
                        continue;
                    }
                    part.v_rows[kvh] += len as u64;
                    let w = &part.w;
                    accum_page(
                        &v[slice(&p, kvh)],
                        std::ptr::null(),
                        len,
                        d,
                        w,
                        ps,
                        |hg| w[hg * ps..hg * ps + len].iter().any(|&x| x != 0.0),
                        g,
                        &mut part.rows,
                        &mut part.acc[h0 * d..(h0 + g) * d],
                    );
                }
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
    let (out, parts) = (&mut ws.out[..h * d], &ws.parts[..nb]);
    out.copy_from_slice(&parts[0].acc[..h * d]);
    for p in &parts[1..] {
        for (o, &x) in out.iter_mut().zip(&p.acc[..h * d]) {
            *o += x;
        }
    }
    ws.v_rows[..hkv].fill(0);
    for p in parts {
        for (r, &x) in ws.v_rows[..hkv].iter_mut().zip(&p.v_rows[..hkv]) {
            *r += x;
        }
    }
    Ok(())
}
