//! Sparse decode page-major: the kept pages of every kv head of a sequence in one walk.
//!
//! A sparse selector keeps a page set per kv head (per task). The group kernel
//! ([`super::cpu::attend_group`]) then reads each task's pages as scattered `page_size · D`
//! slices, task after task. [`attend_sparse_seq`] instead walks the union of the tasks'
//! page sets once, in the sequence's page order, with a per-page kv-head mask: for each
//! page it reads the K slices of the kv heads that kept it — the same bytes, but as one
//! forward stream through the pool, with a steady software prefetch (into L2) of the slice
//! a fixed distance (16 KiB) down the union, one line per line consumed. Blocks of
//! [`UNION_BLOCK`] union pages run in parallel (rayon).
//!
//! Each head's scores are those of the group kernel bit for bit (the same `dot`, the same
//! ALiBi term, via [`super::stream`]'s page kernel), and so are τ, Σ weights and support:
//! softmax runs the group kernel's per-head routine on all the scores; entmax
//! (`head_weights_paged`) finds from the page maxima the pages that can hold the exact τ's
//! candidates, the corrected τ's, or weight, and runs the same solves and sums over those
//! pages only — every other score contributes nothing to any of them, and the sums skip
//! exactly the terms that are zero in the full routine (Σ weights keeps its chunks of 256
//! tokens) — so a head with a small support costs a few pages, not a pass over its
//! tokens. V is then read (softmax) for every kept slice in union order, or (entmax) for
//! the (page, kv head) pairs where some head has weight, listed per kv head, in blocks cut
//! by the data only. V partial sums are combined in block order, so the bits do not
//! depend on the thread count; only the order in which V rows are summed differs from the
//! group kernel's.
//!
//! The kernel needs one task per kv head (per-query-head selection with G = 1, or shared
//! GQA page sets) and at most 64 kv heads (the mask is a `u64`).

use super::cpu::{
    alpha_code, candidate_cut, head_weights, HeadResult, PageRef, PoolGeometry, SharedMut, TauMode,
};
use super::stream::{accum_page, score_page, PageOut};
use crate::dtype::KvElem;
use crate::error::Result;
use crate::tau::{entmax_threshold_candidates, halley_correct_candidates};
use crate::workspace::grow;
use rayon::prelude::*;

/// Union pages per block of the parallel passes (fixed: the summation order depends on it,
/// never on the thread count).
pub const UNION_BLOCK: usize = 64;

/// How far ahead of the slices being read the K pass prefetches.
const PREFETCH_BYTES: usize = 16 * 1024;

/// V pass: union pages (softmax) or (page, kv head) pairs (entmax) ahead whose V slices
/// are prefetched.
const V_AHEAD: usize = 4;

/// Entmax V pass: the least (page, kv head) pairs per block.
const V_BLOCK: usize = 64;

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
    /// Per head: the (union page, token index) of the pages that hold τ candidates, and of
    /// the pages with weight.
    plist: Vec<Vec<(u32, u32)>>,
    rlist: Vec<Vec<(u32, u32)>>,
    /// Entmax V pass: (kv head, union page, token index) of the pairs with weight.
    vpairs: Vec<(u32, u32, u32)>,
    /// `[H]` list cursors of the merge.
    vat: Vec<usize>,
    parts: Vec<Part>,
    /// `[H, D]` outputs of the last call.
    pub out: Vec<f32>,
    /// `[H]` per-head results of the last call.
    pub res: Vec<HeadResult>,
    /// `[H_kv]` V rows read by the last call.
    pub v_rows: Vec<u64>,
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
        let nup = nu.max(np);
        for l in [&mut self.plist, &mut self.rlist] {
            if l.len() < h {
                l.resize_with(h, Vec::new);
            }
            for c in l.iter_mut() {
                if c.capacity() < nup {
                    c.reserve(nup - c.len());
                }
            }
        }
        grow(&mut self.vat, h);
        if self.vpairs.capacity() < hkv * nup {
            self.vpairs.reserve(hkv * nup - self.vpairs.len());
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
            + 8 * self.plist.iter().map(|c| c.capacity()).sum::<usize>()
            + 8 * self.rlist.iter().map(|c| c.capacity()).sum::<usize>()
            + 12 * self.vpairs.capacity()
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

/// One head's view of the union for [`head_weights_paged`]: its page maxima `pm` (`[nu]`;
/// −∞ on the union pages its kv head did not keep), its kv head `kvh` (the bit of the
/// masks), the masks and the pages.
#[derive(Clone, Copy)]
struct PagedHead<'a> {
    pm: &'a [f32],
    kvh: usize,
    umask: &'a [u64],
    upages: &'a [PageRef],
}

impl PagedHead<'_> {
    /// Calls `f(u, idx, len)` for every page the head's kv head kept (union index, token
    /// index in the head's scores, tokens) whose maximum passes `test`.
    #[inline]
    fn each(&self, test: impl Fn(f32) -> bool, mut f: impl FnMut(usize, usize, usize)) {
        let mut idx = 0usize;
        for (u, &m) in self.umask.iter().enumerate() {
            if (m >> self.kvh) & 1 != 0 {
                let len = self.upages[u].len as usize;
                if test(self.pm[u]) {
                    f(u, idx, len);
                }
                idx += len;
            }
        }
    }
}

/// The maximum of `f(x)` over `xs` (no NaN among them), in eight lanes (vectorises).
#[inline(always)]
fn lane_max(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for j in 0..8 {
            let x = f(c[j]);
            m[j] = if x > m[j] { x } else { m[j] };
        }
    }
    for &x in tail {
        let x = f(x);
        m[0] = if x > m[0] { x } else { m[0] };
    }
    m.iter()
        .fold(f32::NEG_INFINITY, |a, &x| if x > a { x } else { a })
}

/// Prefetches the line at `p` into L1 (a prefetch never faults).
#[inline(always)]
fn prefetch_line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Visits the pages of `head` whose maximum passes `test` (`f(u, idx, len)`): those listed
/// in `plist`, or every kept page where `rest` (the largest unlisted maximum) passes too.
#[inline(always)]
fn visit_pages(
    head: &PagedHead<'_>,
    plist: &[(u32, u32)],
    rest: f32,
    test: impl Fn(f32) -> bool,
    mut f: impl FnMut(usize, usize, usize),
) {
    if test(rest) {
        head.each(test, f);
    } else {
        for &(u, i) in plist {
            let u = u as usize;
            if test(head.pm[u]) {
                f(u, i as usize, head.upages[u].len as usize);
            }
        }
    }
}

/// Gathers `map(s)` of the scores `s` passing `keep` on the pages [`visit_pages`] visits with
/// `page`, in token order, branch-free into `cand`'s spare capacity (≥ the tokens: planned).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gather_pages(
    sc: &[f32],
    cand: &mut Vec<f32>,
    head: &PagedHead<'_>,
    plist: &[(u32, u32)],
    rest: f32,
    page: impl Fn(f32) -> bool,
    keep: impl Fn(f32) -> bool,
    map: impl Fn(f32) -> f32,
) {
    cand.clear();
    cand.reserve(sc.len());
    let spare = cand.spare_capacity_mut();
    let mut n = 0;
    visit_pages(head, plist, rest, page, |_, i, len| {
        for &s in &sc[i..i + len] {
            spare[n].write(map(s));
            n += keep(s) as usize;
        }
    });
    // SAFETY: the first `n` elements of the spare capacity were written above.
    unsafe { cand.set_len(n) };
}

/// [`head_weights`] for α > 1 on the scores `sc` (`[ntok]`, token order over the head's kept
/// pages) of one head, bit for bit — τ, Σ weights and support — reading only the pages that
/// can matter, found from the page maxima: the exact τ's candidates (pages whose maximum
/// reaches the candidate cut), the corrected τ's (the same in z-space), and the weights
/// (pages whose maximum clears τ). Every other score is outside all of them (each test is
/// monotone in the score), and the sums skip exactly the terms that are zero in the full
/// routine: the Halley sums in token order over the candidates, Σ weights per chunk of 256
/// tokens as `entmax_weights_in_place` forms it. Only the pages with weight are turned into
/// weights in place; `rlist` gets them, `(union page, token index)` in page order. `None`
/// where the full routine must run: no token, a non-finite score (NaN page maximum: the
/// full routine names it), the corrected mode with α > 2 (z-values may overflow f32 there,
/// which the full routine reports). `plist` is scratch (capacity ≥ the union's pages).
#[allow(clippy::too_many_arguments)]
fn head_weights_paged(
    sc: &mut [f32],
    head: PagedHead<'_>,
    alpha: f64,
    mode: TauMode,
    tau_hat: f64,
    cand: &mut Vec<f32>,
    plist: &mut Vec<(u32, u32)>,
    rlist: &mut Vec<(u32, u32)>,
) -> Result<Option<HeadResult>> {
    let PagedHead {
        pm,
        kvh,
        umask,
        upages,
    } = head;
    let a = alpha - 1.0;
    if sc.is_empty() || (matches!(mode, TauMode::Corrected(_)) && a > 1.0) {
        return Ok(None);
    }
    // The head's maximum score (its pages' maxima; −∞ elsewhere), in eight lanes.
    if pm.iter().any(|x| x.is_nan()) {
        return Ok(None);
    }
    let smax = lane_max(pm, |x| x);
    let smax64 = f64::from(smax);
    // The pages holding exact-τ candidates (listed, their scores prefetched), and the
    // largest maximum of the others.
    let cut = candidate_cut(smax64, a);
    let rest = lane_max(pm, |x| if x < cut { x } else { f32::NEG_INFINITY });
    let nu = umask.len();
    plist.clear();
    plist.reserve(nu);
    let spare = plist.spare_capacity_mut();
    let (mut n, mut idx) = (0usize, 0usize);
    for u in 0..nu {
        let take = pm[u] >= cut;
        spare[n].write((u as u32, idx as u32));
        // Branch-free: a page that is not listed prefetches the (hot) first line.
        prefetch_line(sc.as_ptr().wrapping_add(if take { idx } else { 0 }));
        n += take as usize;
        idx += upages[u].len as usize * ((umask[u] >> kvh) & 1) as usize;
    }
    // SAFETY: the first `n` elements of the spare capacity were written above.
    unsafe { plist.set_len(n) };
    debug_assert_eq!(idx, sc.len());
    let exact = |sc: &[f32], cand: &mut Vec<f32>| {
        gather_pages(
            sc,
            cand,
            &head,
            plist,
            rest,
            |x| x >= cut,
            |s| s >= cut,
            |s| s,
        );
        entmax_threshold_candidates(cand, smax64, alpha)
    };
    let mut tau = match mode {
        TauMode::Exact => exact(sc, cand),
        TauMode::Fixed => tau_hat,
        TauMode::Corrected(it) => {
            if tau_hat.is_finite() {
                // z-values as the full routine forms them; its corrections only ever sum
                // those with z − z_max > −1 (finite here: |z| ≤ |s| for α ≤ 2).
                let zf = |s: f32| (a * f64::from(s)) as f32;
                let zmax = f64::from(zf(smax));
                let zpass = |s: f32| f64::from(zf(s)) - zmax > -1.0;
                gather_pages(sc, cand, &head, plist, rest, zpass, zpass, zf);
                halley_correct_candidates(cand, sc.len(), alpha, tau_hat, it as usize)?
            } else {
                f64::NAN
            }
        }
    };
    // An empty support at τ̂ falls back to the exact τ (`a·s` is monotone in s: the
    // maximum decides whether any score clears τ).
    if !tau.is_finite() || a * smax64 <= tau {
        tau = exact(sc, cand);
    }
    // Weights of the pages that clear τ, Σ per chunk of 256 tokens (as the full routine).
    let code = alpha_code(alpha);
    let beta = 1.0 / a;
    let (mut sum, mut part, mut chunk, mut support) = (0.0f64, 0.0f64, usize::MAX, 0u32);
    rlist.clear();
    let mut weigh = |u: usize, i: usize, len: usize| {
        rlist.push((u as u32, i as u32));
        for (t, x) in sc[i..i + len].iter_mut().enumerate() {
            let c = (i + t) >> 8;
            if c != chunk {
                sum += part;
                part = 0.0;
                chunk = c;
            }
            let y = (a * *x as f64 - tau).max(0.0);
            let w = match code {
                2 => y,
                15 => y * y,
                13 => y * y * y,
                _ if y > 0.0 => y.powf(beta),
                _ => 0.0,
            };
            support += (w > 0.0) as u32;
            part += w;
            *x = w as f32;
        }
    };
    visit_pages(&head, plist, rest, |x| a * x as f64 > tau, &mut weigh);
    sum += part;
    Ok(Some(HeadResult {
        tau,
        support,
        mass: sum,
    }))
}

/// Entmax pass 2: V of the (page, kv head) pairs where some head of the kv head has weight,
/// from the heads' lists of pages with weight (`ws.rlist`): the pairs in kv-head order, then
/// page order, cut into blocks of at least [`V_BLOCK`] pairs (as many as the union has
/// blocks at most; the cut depends on the data only) that run in parallel, their V sums
/// combined in block order. Results into `ws.out` and `ws.v_rows`.
#[allow(clippy::too_many_arguments)]
fn v_pass_reached<T: KvElem>(
    v: &[T],
    geom: PoolGeometry,
    h: usize,
    nu: usize,
    stride: usize,
    alpha: f64,
    ws: &mut SparseWorkspace,
) {
    let (hkv, ps, d) = (geom.num_kv_heads, geom.page_size, geom.head_dim);
    let g = h / hkv;
    // The (kv head, union page, token index) pairs: each kv head's heads' lists merged.
    ws.vpairs.clear();
    for kvh in 0..hkv {
        let lists = &ws.rlist[kvh * g..(kvh + 1) * g];
        if g == 1 {
            ws.vpairs
                .extend(lists[0].iter().map(|&(u, i)| (kvh as u32, u, i)));
            continue;
        }
        let at = &mut ws.vat[..g];
        at.fill(0);
        loop {
            let mut best: Option<(u32, u32)> = None;
            for (hg, l) in lists.iter().enumerate() {
                if let Some(&e) = l.get(at[hg]) {
                    if best.is_none_or(|b| e.0 < b.0) {
                        best = Some(e);
                    }
                }
            }
            let Some((u, i)) = best else { break };
            for (hg, l) in lists.iter().enumerate() {
                if l.get(at[hg]).is_some_and(|e| e.0 == u) {
                    at[hg] += 1;
                }
            }
            ws.vpairs.push((kvh as u32, u, i));
        }
    }
    let r = ws.vpairs.len();
    let nb = nu.div_ceil(UNION_BLOCK).max(1);
    let bs = r.div_ceil(nb).max(V_BLOCK);
    let nvb = r.div_ceil(bs);
    let (scores, page_max) = (&ws.scores[..h * stride], &ws.page_max[..h * nu]);
    let (res, upages, pairs) = (&ws.res[..h], &ws.upages[..nu], &ws.vpairs[..r]);
    let a = alpha - 1.0;
    let slice = |u: u32, kvh: u32| {
        let p = &upages[u as usize];
        let off = geom.kv_offset(p.page, kvh as usize);
        off..off + p.len as usize * d
    };
    let v_block = |b: usize, part: &mut Part| {
        part.acc[..h * d].fill(0.0);
        part.v_rows[..hkv].fill(0);
        let range = b * bs..((b + 1) * bs).min(r);
        for j in range.start..(range.start + V_AHEAD).min(range.end) {
            let (kvh, u, _) = pairs[j];
            prefetch_l2(&v[slice(u, kvh)]);
        }
        for j in range.clone() {
            if let Some(&(kvh, u, _)) = pairs.get(j + V_AHEAD).filter(|_| j + V_AHEAD < range.end) {
                prefetch_l2(&v[slice(u, kvh)]);
            }
            let (kvh, u, idx) = pairs[j];
            let (kvh, uu, idx) = (kvh as usize, u as usize, idx as usize);
            let len = upages[uu].len as usize;
            let h0 = kvh * g;
            let any = group_weights(
                &mut part.w,
                h0,
                g,
                ps,
                len,
                scores,
                stride,
                idx,
                res,
                |hh| a * page_max[hh * nu + uu] as f64 > res[hh].tau,
            );
            if !any {
                continue;
            }
            part.v_rows[kvh] += len as u64;
            let w = &part.w;
            accum_page(
                &v[slice(u, kvh as u32)],
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
    };
    let parts = &mut ws.parts[..nvb];
    if nvb > 1 {
        parts
            .par_iter_mut()
            .enumerate()
            .for_each(|(b, part)| v_block(b, part));
    } else if nvb == 1 {
        v_block(0, &mut parts[0]);
    }
    // Combine the blocks in block order.
    let out = &mut ws.out[..h * d];
    out.fill(0.0);
    if let Some((p0, rest)) = ws.parts[..nvb].split_first() {
        out.copy_from_slice(&p0.acc[..h * d]);
        for p in rest {
            for (o, &x) in out.iter_mut().zip(&p.acc[..h * d]) {
                *o += x;
            }
        }
    }
    ws.v_rows[..hkv].fill(0);
    for p in &ws.parts[..nvb] {
        for (r, &x) in ws.v_rows[..hkv].iter_mut().zip(&p.v_rows[..hkv]) {
            *r += x;
        }
    }
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
    // The slot of a page start: a shift for the usual power-of-two page sizes.
    let shift = ps.trailing_zeros();
    let pow2 = ps.is_power_of_two();
    for kvh in 0..hkv {
        let mut n = 0;
        for p in lists(kvh) {
            let slot = if pow2 {
                p.start as usize >> shift
            } else {
                p.start as usize / ps
            };
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

    let all_kv = if hkv == 64 {
        u64::MAX
    } else {
        (1u64 << hkv) - 1
    };
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
                // The heads whose kv head did not keep the page: no score, maximum −∞.
                let mut off = !m & all_kv;
                while off != 0 {
                    let kvh = off.trailing_zeros() as usize;
                    off &= off - 1;
                    for hh in kvh * g..(kvh + 1) * g {
                        // SAFETY: (head, u) of `[H, nu]`, this block's union range.
                        unsafe { *pmax.at(hh * nu + u) = f32::NEG_INFINITY };
                    }
                }
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

    // τ per head on its cached scores (as the group kernel would solve it on all of them),
    // the scores of the pages with weight become weights (entmax: only those pages are
    // read, found from the page maxima; the other pages' scores are never read again).
    {
        let ntok = &ws.ntok[..hkv];
        let page_max = &ws.page_max[..h * nu];
        ws.scores[..h * stride]
            .par_chunks_mut(stride)
            .zip(ws.cand[..h].par_iter_mut())
            .zip(ws.plist[..h].par_iter_mut())
            .zip(ws.rlist[..h].par_iter_mut())
            .zip(ws.res[..h].par_iter_mut())
            .enumerate()
            .try_for_each(|(hh, ((((sc, cand), plist), rlist), res))| -> Result<()> {
                let sc = &mut sc[..ntok[hh / g]];
                if alpha == 1.0 {
                    *res = head_weights(sc, alpha, mode, tau_hat(hh), cand)?;
                    return Ok(());
                }
                let pm = &page_max[hh * nu..(hh + 1) * nu];
                let head = PagedHead {
                    pm,
                    kvh: hh / g,
                    umask,
                    upages,
                };
                let th = tau_hat(hh);
                if let Some(r) = head_weights_paged(sc, head, alpha, mode, th, cand, plist, rlist)?
                {
                    *res = r;
                    return Ok(());
                }
                *res = head_weights(sc, alpha, mode, th, cand)?;
                let (a, tau) = (alpha - 1.0, res.tau);
                rlist.clear();
                head.each(
                    |x| a * x as f64 > tau,
                    |u, i, _| rlist.push((u as u32, i as u32)),
                );
                Ok(())
            })?;
    }

    if alpha > 1.0 {
        v_pass_reached(v, geom, h, nu, stride, alpha, ws);
        return Ok(());
    }
    // Softmax. Pass 2: V of every (page, kv head) pair, union pages in order.
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
                    let any = group_weights(
                        &mut part.w,
                        h0,
                        g,
                        ps,
                        len,
                        scores,
                        stride,
                        idx,
                        res,
                        |hh| reach(hh, u),
                    );
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

/// The V weights of one (kv head, page) slice for the kv head's query heads `h0..h0 + g`
/// into `w` (`[g, ps]`, the first `len` of each row): a head whose page `reaches` its τ gets
/// its (unnormalised) weights `scores[hh·stride + idx..][..len]` times 1/mass, every other
/// head zeros. True when any weight is nonzero (the slice's V must be read).
#[allow(clippy::too_many_arguments)]
fn group_weights(
    w: &mut [f32],
    h0: usize,
    g: usize,
    ps: usize,
    len: usize,
    scores: &[f32],
    stride: usize,
    idx: usize,
    res: &[HeadResult],
    reaches: impl Fn(usize) -> bool,
) -> bool {
    let mut any = false;
    for hg in 0..g {
        let hh = h0 + hg;
        let w = &mut w[hg * ps..hg * ps + len];
        if reaches(hh) {
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
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `head_weights_paged` equals `head_weights` on all the scores bit for bit — τ, Σ
    /// weights, support and the weights of the pages with weight — for every τ mode, over
    /// unions where the head's kv head kept some pages and not others, with τ̂ near, below
    /// (large supports: every page visited) and above the scores.
    #[test]
    fn paged_head_weights_equal_full() {
        let mut seed = 17u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let ps = 16usize;
        for case in 0..600 {
            let alpha = [4.0 / 3.0, 1.5, 2.0, 3.0, 1.7][case % 5];
            let a = alpha - 1.0;
            let nu = 1 + (rnd() * 300.0) as usize;
            let kvh = case % 3;
            let (mut umask, mut upages) = (Vec::new(), Vec::new());
            for u in 0..nu {
                // The head's kv head keeps about 60% of the union pages (the last always).
                let mut m = ((rnd() * 8.0) as u64) & !(1 << kvh);
                if rnd() < 0.6 || u + 1 == nu {
                    m |= 1 << kvh;
                }
                if m == 0 {
                    m = 1 << ((kvh + 1) % 3);
                }
                umask.push(m);
                let len = if u + 1 == nu {
                    1 + (rnd() * 15.0) as usize
                } else {
                    ps
                };
                upages.push(PageRef {
                    page: u as u32,
                    len: len as u32,
                    start: (u * ps) as u32,
                });
            }
            let spread = [0.5, 3.0, 12.0][case % 3];
            let mut sc = Vec::new();
            let mut pm = vec![f32::NEG_INFINITY; nu];
            for u in 0..nu {
                if (umask[u] >> kvh) & 1 != 0 {
                    let len = upages[u].len as usize;
                    let s: Vec<f32> = (0..len).map(|_| ((rnd() - 0.5) * spread) as f32).collect();
                    pm[u] = s.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    sc.extend(s);
                }
            }
            let smax = pm.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let tau_hat = match case % 4 {
                0 => f64::NAN,
                1 => a * smax - 0.3 * rnd(),       // near the exact τ
                2 => a * smax - 3.0 * rnd() - 1.0, // below: large supports
                _ => a * smax + 0.1,               // above every score
            };
            for mode in [
                TauMode::Exact,
                TauMode::Fixed,
                TauMode::Corrected(1),
                TauMode::Corrected(4),
            ] {
                let mut full = sc.clone();
                let mut cand = Vec::with_capacity(sc.len());
                let want = head_weights(&mut full, alpha, mode, tau_hat, &mut cand).unwrap();
                let mut got_sc = sc.clone();
                let (mut plist, mut rlist) = (Vec::with_capacity(nu), Vec::with_capacity(nu));
                let head = PagedHead {
                    pm: &pm,
                    kvh,
                    umask: &umask,
                    upages: &upages,
                };
                let got = head_weights_paged(
                    &mut got_sc,
                    head,
                    alpha,
                    mode,
                    tau_hat,
                    &mut cand,
                    &mut plist,
                    &mut rlist,
                )
                .unwrap();
                let Some(got) = got else {
                    assert!(
                        matches!(mode, TauMode::Corrected(_)) && a > 1.0,
                        "case {case}"
                    );
                    continue;
                };
                let tag = format!("case {case} alpha {alpha} {mode:?} tau_hat {tau_hat}");
                assert_eq!(got.tau.to_bits(), want.tau.to_bits(), "tau, {tag}");
                assert_eq!(got.mass.to_bits(), want.mass.to_bits(), "mass, {tag}");
                assert_eq!(got.support, want.support, "support, {tag}");
                // The pages with weight: listed, in page order, their weights as the full
                // routine's; every other page has no weight.
                let mut idx = 0;
                let mut listed = rlist.iter().peekable();
                for u in 0..nu {
                    if (umask[u] >> kvh) & 1 == 0 {
                        continue;
                    }
                    let len = upages[u].len as usize;
                    let reach = a * pm[u] as f64 > got.tau;
                    assert_eq!(
                        reach,
                        listed.peek().is_some_and(|e| e.0 as usize == u),
                        "{tag}"
                    );
                    if reach {
                        assert_eq!(listed.next().unwrap().1 as usize, idx, "{tag}");
                        for t in idx..idx + len {
                            assert_eq!(got_sc[t].to_bits(), full[t].to_bits(), "{tag}");
                        }
                    } else {
                        assert!(full[idx..idx + len].iter().all(|&w| w == 0.0), "{tag}");
                    }
                    idx += len;
                }
                assert!(listed.next().is_none(), "{tag}");
            }
        }
    }
}
