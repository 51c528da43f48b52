//! The `certified` decode strategy: exact dense α-entmax from the key sketch, K read only
//! for the tokens that can reach the threshold, V only for the support.
//!
//! For one task (a sequence and kv head, the G query heads it serves):
//!
//! 1. [`certified_select`]: rigorous score intervals `[l_i, u_i]` for every token — the
//!    sketch interval (intersected with the page box) on closed pages, the exact score
//!    (K read) on the open last page; `τ_lb` = exact entmax τ of the lower ends (a lower
//!    bound of the dense τ, τ being monotone in the scores); candidates = closed-page
//!    tokens with `(α−1)·u_i + margin > τ_lb` for some head of the group.
//! 2. [`certified_attend`]: K rows of the candidates only (token granular), in two rounds.
//!    The probe: the [`PROBE`] candidates with the largest upper ends; the entmax τ of their
//!    exact scores (and the open page's) is a lower bound of the dense τ as well (a subset's
//!    τ never exceeds the whole's), usually far tighter than `τ_lb` since the probe holds
//!    the support, so the other candidates are tested again against it and most are
//!    excluded without reading their K. Then τ solved exactly on what was read — it equals
//!    the dense τ, since every other token is provably outside the dense support — and V
//!    rows of the support only.
//!
//! α = 1 is rejected with [`Error::Unsupported`]: softmax gives every token weight, so an
//! exact softmax must read every K and V (that is `dense`); the α = 1 deliverable is the
//! proven bound on the mass a selector leaves out ([`super::check`]).
//!
//! Everything is sized by [`CertifiedWorkspace::new`]; a step allocates nothing.

use super::bounds::{
    above_mask, alibi, dots_ups, f32_down, has_avx512, page_bounds, page_bounds_batched,
    push_lows_dots, tokens_from, BoundUnit, PageBound, PageRows, BATCH, PREFETCH_PAGES,
};
use super::{margin, z_scale, CertBytes};
use crate::attention::cpu::{
    alpha_code, axpy, dot, entmax_weights_in_place, HeadResult, SharedMut,
};
use crate::cache::{PagedKvCache, SeqView};
use crate::dtype::KvElem;
use crate::error::{check_len, Error, Result};
use crate::stats::{sketch, Stat};
use crate::tau::{entmax_threshold_f32, entmax_threshold_f64};
use crate::with_kv;
use crate::workspace::grow;
use rayon::prelude::*;

/// Scratch and phase-1 state of the `certified` strategy for one task.
#[derive(Debug, Clone, Default)]
pub struct CertifiedWorkspace {
    /// `[closed pages, G, page_size]` upper ends of every closed-page token's score
    /// (widened, ALiBi added), rounded up to f32.
    upper: Vec<f32>,
    /// `[pages, G]` the largest of a page's `upper` entries per head.
    page_umax: Vec<f32>,
    /// Per head: the lower ends that can still reach the entmax candidate range of τ_lb
    /// (`(α−1)·(l − max l) > −1` against the running maximum), f64.
    lows: Vec<Vec<f64>>,
    /// `[G, page_size]` lower ends of one page.
    page_lows: Vec<f64>,
    tau_f64: Vec<f64>,
    tau_f32: Vec<f32>,
    /// The probe's scores and the open page's of one head (input of its τ).
    tau_f32_in: Vec<f32>,
    /// Closed-page candidate positions, ascending.
    cand: Vec<u32>,
    /// Closed-page positions whose K the last attend read (the probe and the candidates that
    /// survived its bound), ascending once the attend has merged them.
    kread: Vec<u32>,
    /// The probe's positions (ascending) while they are merged into `kread`.
    ppos: Vec<u32>,
    /// `(largest upper end over the group, position)` of each candidate, for choosing the probe.
    rank: Vec<(f32, u32)>,
    /// `[G, PROBE]` exact scores of the probe.
    pscores: Vec<f32>,
    /// Whether `kread` belongs to the last select (an attend ran after it).
    attended: bool,
    /// Probe size (0: no probe, every candidate read), [`PROBE`] unless `ENTMAXKV_CERT_PROBE`;
    /// set by the first `reserve`.
    probe: Option<usize>,
    /// `(group, max_tokens, page_size)` of the last `reserve` (to size a new probe).
    reserved: (usize, usize, usize),
    /// `[G, page_size]` f32 scores of the open page.
    open_scores: Vec<f32>,
    /// `[G, candidates + open]` scores, then weights.
    scores: Vec<f32>,
    /// Scratch of the bound pass, one per block of [`BLOCK_PAGES`] closed pages.
    blocks: Vec<BlockScratch>,
    row: Vec<f32>,
    /// `[candidate blocks, D]` K rows of the parallel candidate pass.
    krows: Vec<f32>,
    acc: Vec<f32>,
    mag: Vec<f64>,
    lmax: Vec<f64>,
    tau_lb: Vec<f64>,
    marg: Vec<f64>,
    /// `[G]` f32 candidate thresholds `(τ_lb − margin)/a`, rounded down.
    thr: Vec<f32>,
    // Phase-1 results.
    group: usize,
    /// Page size of the last select.
    ps: usize,
    n: usize,
    open_start: usize,
    open_len: usize,
    pages_touched: u32,
    bytes: CertBytes,
}

impl CertifiedWorkspace {
    /// Sized for `group` query heads over up to `max_tokens` tokens.
    pub fn new(group: usize, max_tokens: usize, page_size: usize, head_dim: usize) -> Self {
        let mut w = CertifiedWorkspace::default();
        w.reserve(group, max_tokens, page_size, head_dim);
        w
    }

    /// Grows (only ever grows) to the given sizes.
    pub fn reserve(&mut self, group: usize, max_tokens: usize, page_size: usize, d: usize) {
        fn cap<T>(v: &mut Vec<T>, n: usize) {
            if v.capacity() < n {
                v.reserve(n - v.len());
            }
        }
        grow(&mut self.upper, group * max_tokens);
        grow(
            &mut self.page_umax,
            group * max_tokens.div_ceil(page_size.max(1)),
        );
        grow(&mut self.scores, group * max_tokens);
        grow(&mut self.open_scores, group * page_size);
        grow(&mut self.page_lows, group * page_size);
        grow(&mut self.row, d);
        grow(&mut self.krows, (max_tokens.div_ceil(CAND_BLOCK) + 1) * d);
        grow(&mut self.acc, group * d);
        grow(&mut self.mag, group);
        let blocks = max_tokens.div_ceil(page_size.max(1)).div_ceil(BLOCK_PAGES);
        if self.blocks.len() < blocks {
            self.blocks.resize_with(blocks, BlockScratch::default);
        }
        for b in &mut self.blocks {
            b.reserve(group, page_size, d);
        }
        grow(&mut self.lmax, group);
        grow(&mut self.tau_lb, group);
        grow(&mut self.marg, group);
        grow(&mut self.thr, group);
        if self.lows.len() < group {
            self.lows.resize_with(group, Vec::new);
        }
        for l in &mut self.lows {
            cap(l, max_tokens);
        }
        cap(&mut self.tau_f64, max_tokens);
        cap(&mut self.tau_f32, max_tokens);
        cap(&mut self.cand, max_tokens);
        self.reserved = (group, max_tokens, page_size);
        cap(&mut self.kread, max_tokens);
        cap(&mut self.rank, max_tokens);
        let probe = *self.probe.get_or_insert_with(probe_size);
        self.set_probe(probe);
    }

    /// Sets the probe size of [`certified_attend`] (0: read every candidate; default
    /// [`PROBE`]). Plan-time: it sizes the probe's buffers.
    pub fn set_probe(&mut self, probe: usize) {
        let (group, max_tokens, page_size) = self.reserved;
        self.probe = Some(probe);
        grow(&mut self.pscores, group * probe.min(max_tokens));
        grow(&mut self.ppos, probe.min(max_tokens));
        grow(&mut self.tau_f32_in, probe.min(max_tokens) + page_size);
    }

    /// Bytes held.
    pub fn bytes_held(&self) -> usize {
        8 * (self.tau_f64.capacity()
            + self.page_lows.len()
            + self.lows.iter().map(|l| l.capacity()).sum::<usize>()
            + 5 * self.mag.len())
            + 4 * (self.upper.len()
                + self.page_umax.len()
                + self.scores.len()
                + self.open_scores.len()
                + self.tau_f32.capacity()
                + self.tau_f32_in.len()
                + self.cand.capacity()
                + self.kread.capacity()
                + 2 * self.rank.capacity()
                + self.pscores.len()
                + self.ppos.len()
                + self.row.len()
                + self.krows.len()
                + self.acc.len())
            + self.blocks.iter().map(BlockScratch::bytes).sum::<usize>()
    }

    /// Tokens whose K the last step reads: after [`certified_attend`] the closed-page tokens
    /// it read (probe and survivors) plus the open page; after [`certified_select`] alone
    /// its candidates plus the open page.
    pub fn candidates(&self) -> usize {
        if self.attended {
            self.kread.len() + self.open_len
        } else {
            self.cand.len() + self.open_len
        }
    }

    /// Closed-page positions whose K the last [`certified_attend`] read.
    pub fn read_positions(&self) -> &[u32] {
        &self.kread
    }

    /// Closed-page candidate positions of the last [`certified_select`].
    pub fn candidate_positions(&self) -> &[u32] {
        &self.cand
    }

    /// `[G]` τ lower bounds of the last [`certified_select`] (z-space).
    pub fn tau_lb(&self) -> &[f64] {
        &self.tau_lb[..self.group]
    }

    /// Pages with at least one K row read (the open page included).
    pub fn pages_touched(&self) -> u32 {
        self.pages_touched
    }

    /// Statistics and sketch bytes the bound pass read.
    pub fn bound_bytes(&self) -> CertBytes {
        self.bytes
    }
}

/// Candidates per block of the parallel K pass of [`certified_attend`].
const CAND_BLOCK: usize = 1024;

/// Tokens ahead whose K (or V) row [`certified_attend`] prefetches: its rows are scattered,
/// one 2·D-byte row here and there.
const AHEAD: usize = 16;

/// Probe size of [`certified_attend`]: enough to hold the dense support of every head we
/// measured (tens of tokens at 128K on iid keys), small next to the candidates it prunes
/// (thousands there).
pub const PROBE: usize = 256;

/// [`PROBE`], or `ENTMAXKV_CERT_PROBE` (a development knob read when a workspace is made;
/// 0 reads every candidate).
fn probe_size() -> usize {
    std::env::var("ENTMAXKV_CERT_PROBE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PROBE)
}

/// Closed pages per block of the bound pass: blocks run in parallel (rayon), each with
/// its own scratch, so one long sequence uses every core.
const BLOCK_PAGES: usize = 128;

/// One block's scratch and its slices of the upper ends and their per-page maxima.
type BlockItem<'a> = (
    usize,
    ((&'a mut BlockScratch, &'a mut [f32]), &'a mut [f32]),
);

/// Scratch of one block of the bound pass.
#[derive(Debug, Clone, Default)]
struct BlockScratch {
    rows: PageRows,
    /// `[G, D]` quantised sketch weights of the current page, `[G]` its bounds.
    qw: Vec<i16>,
    pbs: Vec<PageBound>,
    /// `[page_size]` sketch dots and lower ends of one page and head.
    sdot: Vec<i32>,
    page_lows: Vec<f64>,
    codes: Vec<u8>,
    /// Per head: the block's lower ends that can still enter the τ_lb solve.
    lows: Vec<Vec<f64>>,
    /// `[G]` running maximum of the lower ends, largest magnitude.
    lmax: Vec<f64>,
    mag: Vec<f64>,
}

impl BlockScratch {
    fn reserve(&mut self, group: usize, page_size: usize, d: usize) {
        self.rows.reserve(d);
        grow(&mut self.qw, group * d);
        grow(&mut self.pbs, group);
        grow(&mut self.sdot, page_size);
        grow(&mut self.page_lows, page_size);
        grow(&mut self.codes, d);
        grow(&mut self.lmax, group);
        grow(&mut self.mag, group);
        if self.lows.len() < group {
            self.lows.resize_with(group, Vec::new);
        }
        let cap = BLOCK_PAGES * page_size;
        for l in &mut self.lows {
            if l.capacity() < cap {
                l.reserve(cap - l.len());
            }
        }
    }

    fn bytes(&self) -> usize {
        16 * self.rows.lo.len()
            + 2 * self.qw.len()
            + 4 * self.sdot.len()
            + 8 * self.page_lows.len()
            + self.codes.len()
            + 8 * self.lows.iter().map(|l| l.capacity()).sum::<usize>()
            + 16 * self.lmax.len()
    }
}

/// The bound pass over closed pages `first..last` of one task: `up` receives the upper
/// ends `[pages, G, page_size]`, `pu` their per-(page, head) maxima, `part` the lower
/// ends that can matter and the magnitudes.
#[allow(clippy::too_many_arguments)]
fn bound_block(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    a: f64,
    first: usize,
    last: usize,
    part: &mut BlockScratch,
    up: &mut [f32],
    pu: &mut [f32],
) {
    let (d, ps) = (cache.head_dim(), cache.page_size());
    let stats = cache.stats();
    let bits = cache.config().sketch_bits;
    let rb = sketch::row_bytes(d, bits);
    let fast = has_avx512();
    for slot in first..last {
        if let Some(&next) = seq.pages.get(slot + PREFETCH_PAGES) {
            let nb = cache.stats_offset(next, kv_head);
            stats.prefetch_row(Stat::Min, nb, d);
            stats.prefetch_row(Stat::Max, nb, d);
            if bits > 0 {
                let sb = cache.sketch_offset(next, kv_head);
                crate::attention::cpu::prefetch(&cache.sketch()[sb..sb + ps * rb]);
            }
        }
        bound_slot(
            fast, cache, seq, kv_head, q_scaled, slopes, a, slot, first, part, up, pu,
        );
    }
}

/// The bound pass of one closed page (`slot`) of one task, inside the block starting at
/// page `first` (see [`bound_block`]). `fast`: [`has_avx512`] (same bits either way).
#[allow(clippy::too_many_arguments)]
#[inline]
fn bound_slot(
    fast: bool,
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    a: f64,
    slot: usize,
    first: usize,
    part: &mut BlockScratch,
    up: &mut [f32],
    pu: &mut [f32],
) {
    slot_rows(fast, cache, seq, kv_head, slot, part);
    slot_bounds(q_scaled, slopes.len(), cache.head_dim(), part);
    slot_tokens(
        fast, cache, seq, kv_head, slopes, a, slot, first, part, up, pu,
    );
}

/// [`bound_slot`], phase 1: the page's min/max rows of the task's kv head.
#[inline]
fn slot_rows(
    fast: bool,
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    slot: usize,
    part: &mut BlockScratch,
) {
    let d = cache.head_dim();
    let bits = cache.config().sketch_bits;
    let off = cache.stats_offset(seq.pages[slot], kv_head);
    part.rows.load_fast(fast, cache.stats(), off, d, bits);
}

/// [`bound_slot`], phase 2: every head's page bound and quantised weights. (The phases
/// are separate so that the page-major pass runs each over all tasks of a page back to
/// back: the tasks' long dependency chains then overlap in the out-of-order core.)
#[inline]
fn slot_bounds(q_scaled: &[f32], g: usize, d: usize, part: &mut BlockScratch) {
    let mut h0 = 0;
    while h0 < g {
        let n = (g - h0).min(BATCH);
        let rows: *const PageRows = &part.rows;
        let units: [BoundUnit; BATCH] = std::array::from_fn(|i| BoundUnit {
            w: q_scaled[((h0 + i).min(g - 1)) * d..].as_ptr(),
            rows,
            q: part.qw[((h0 + i).min(g - 1)) * d..].as_mut_ptr(),
        });
        // SAFETY: head h0 + i's query and weights (D each, distinct heads), the block's rows.
        unsafe { page_bounds(d, &units[..n], &mut part.pbs[h0..h0 + n]) };
        h0 += n;
    }
}

/// [`bound_slot`], phase 3: sketch dots, token ends, lower ends. Without ALiBi the lower
/// ends come from the dots only where the page's largest can enter the τ_lb solve (the
/// largest is that of the largest dot: every end is non-decreasing in the dot), formed and
/// filtered in one step ([`push_lows_dots`]); the same values as [`tokens_from`]'s.
#[allow(clippy::too_many_arguments)]
#[inline]
fn slot_tokens(
    fast: bool,
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    slopes: &[f32],
    a: f64,
    slot: usize,
    first: usize,
    part: &mut BlockScratch,
    up: &mut [f32],
    pu: &mut [f32],
) {
    let g = slopes.len();
    let (d, ps) = (cache.head_dim(), cache.page_size());
    let bits = cache.config().sketch_bits;
    let rb = sketch::row_bytes(d, bits);
    let q_pos = seq.len as f64 - 1.0;
    let sk = if bits > 0 {
        let sb = cache.sketch_offset(seq.pages[slot], kv_head);
        &cache.sketch()[sb..sb + ps * rb]
    } else {
        &[][..]
    };
    let s0 = (slot * ps) as f64 - q_pos;
    for hg in 0..g {
        let pc = part.pbs[hg];
        let o = (slot - first) * g + hg;
        let lows = &mut part.page_lows[..ps];
        let (qw, sdot) = (&part.qw[hg * d..(hg + 1) * d], &mut part.sdot[..ps]);
        let up = &mut up[o * ps..(o + 1) * ps];
        part.mag[hg] = part.mag[hg].max(pc.mag);
        let slope = slopes[hg] as f64;
        if slope == 0.0 {
            let (umax, smax) = dots_ups(fast, &pc, qw, sk, rb, bits, sdot, &mut part.codes, up);
            pu[o] = umax;
            let lmx = pc.interval(smax).0;
            // `push_lows`' filter without its branch on the page's largest end (taken
            // for ~80% of the pages at 128K: a branch the predictor misses often, and
            // whose misses flush the next head's dots): where that test fails, the
            // largest is at most the running maximum (which then stays) and every end is
            // dropped by the per-token test (a > 0, every step monotone), so the same
            // list either way.
            let lmax = &mut part.lmax[hg];
            *lmax = lmax.max(lmx);
            push_lows_dots(fast, &mut part.lows[hg], &pc, sdot, a, *lmax);
        } else {
            let (umax, lmx) = tokens_from(
                fast,
                &pc,
                qw,
                sk,
                rb,
                bits,
                slope,
                s0,
                sdot,
                &mut part.codes,
                up,
                lows,
            );
            pu[o] = umax;
            push_lows(fast, a, lows, lmx, &mut part.lmax[hg], &mut part.lows[hg]);
        }
    }
}

/// Whether a page whose largest lower end is `pmax` can add lower ends to a head's τ_lb
/// candidates, whose running maximum is `lmax` ([`push_lows`]' test).
#[inline(always)]
fn lows_may_enter(a: f64, pmax: f64, lmax: f64) -> bool {
    pmax > lmax || a * (pmax - lmax) > -1.0
}

/// Adds lower ends to a head's τ_lb candidates: only those within `1/(α−1)` of the running
/// maximum can enter the entmax solve (its candidates are `(α−1)·(l − max) > −1`, and the
/// maximum only grows), so the rest are dropped here. Exactly the same τ_lb as a solve on
/// every lower end (f64 rounding is monotone, so a value failing the test against the
/// running maximum fails it against the final one). `pmax` is the largest of `vals`.
#[inline]
fn push_lows(fast: bool, a: f64, vals: &[f64], pmax: f64, lmax: &mut f64, lows: &mut Vec<f64>) {
    if !lows_may_enter(a, pmax, *lmax) {
        return;
    }
    *lmax = lmax.max(pmax);
    let m = *lmax;
    #[cfg(target_arch = "x86_64")]
    if fast && lows.capacity() - lows.len() >= vals.len() {
        // SAFETY: `fast` only where `has_avx512()` holds; room for every value checked.
        unsafe { super::bounds::avx512::compact_f64(lows, vals, a, m) };
        return;
    }
    // Branch-free compaction into the reserved tail (the capacity holds every token).
    let n0 = lows.len();
    lows.resize(n0 + vals.len(), 0.0);
    let tail = &mut lows[n0..];
    let mut k = 0;
    for &l in vals {
        tail[k] = l;
        k += (a * (l - m) > -1.0) as usize;
    }
    lows.truncate(n0 + k);
}

/// Phase 1 of the `certified` strategy for one task: score intervals, `τ_lb` and the
/// candidates (kept in `ws`). `q_scaled` is `[G, D]` (scale applied), `slopes` `[G]`.
///
/// The interval of a closed-page token comes from the sketch (`certificate/bounds.rs`: f32 page
/// constants and an exact integer sketch dot, widened by a proven rounding bound); only
/// its upper end is stored (f32, rounded up), while its lower end feeds the running
/// τ_lb candidate list. Then τ_lb per head and the candidate test on the stored upper ends.
pub fn certified_select(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
    ws: &mut CertifiedWorkspace,
) -> Result<()> {
    select_begin(cache, seq, kv_head, q_scaled, slopes, alpha, ws)?;
    let g = slopes.len();
    let ps = cache.page_size();
    let closed = seq.pages.len() - 1;
    let a = z_scale(alpha);
    if closed > 0 && g > 0 {
        let nb = closed.div_ceil(BLOCK_PAGES);
        let run = |(bi, ((part, up), pu)): BlockItem<'_>| {
            let first = bi * BLOCK_PAGES;
            let last = (first + BLOCK_PAGES).min(closed);
            bound_block(
                cache, seq, kv_head, q_scaled, slopes, a, first, last, part, up, pu,
            );
        };
        let blocks = &mut ws.blocks[..nb];
        let upper = &mut ws.upper[..closed * g * ps];
        let page_umax = &mut ws.page_umax[..closed * g];
        if nb > 1 {
            blocks
                .par_iter_mut()
                .zip(upper.par_chunks_mut(BLOCK_PAGES * g * ps))
                .zip(page_umax.par_chunks_mut(BLOCK_PAGES * g))
                .enumerate()
                .for_each(run);
        } else {
            run((0, ((&mut blocks[0], upper), page_umax)));
        }
    }
    select_finish(seq, slopes, alpha, ws)
}

/// [`certified_select`] up to the closed pages' bound pass: checks, the open page, the
/// byte counts, the blocks' scratch reset.
#[allow(clippy::too_many_arguments)]
pub(crate) fn select_begin(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
    ws: &mut CertifiedWorkspace,
) -> Result<()> {
    const OP: &str = "certificate::certified_select";
    crate::error::check_alpha(OP, alpha)?;
    if alpha == 1.0 {
        return Err(unsupported_softmax(OP));
    }
    let g = slopes.len();
    let (d, ps) = (cache.head_dim(), cache.page_size());
    check_len(OP, "q_scaled", q_scaled.len(), &[g, d])?;
    if kv_head >= cache.num_kv_heads() {
        return Err(Error::invalid(
            OP,
            "kv_head",
            kv_head,
            "kv head out of range",
        ));
    }
    if seq.len == 0 {
        return Err(Error::EmptySequence {
            op: OP,
            id: seq.id.0,
        });
    }
    let n = seq.len;
    let np = seq.pages.len();
    ws.reserve(g, n, ps, d);
    let stats = cache.stats();
    let stat_row = stats.row_bytes(d) as u64;
    let bits = cache.config().sketch_bits;
    let rb = sketch::row_bytes(d, bits);
    let q_pos = n as f64 - 1.0;
    let open_slot = np - 1;
    let a = z_scale(alpha);
    ws.group = g;
    ws.ps = ps;
    ws.n = n;
    ws.open_start = open_slot * ps;
    ws.open_len = n - ws.open_start;
    ws.bytes = CertBytes::default();
    ws.mag[..g].fill(0.0);
    ws.lmax[..g].fill(f64::NEG_INFINITY);
    for l in &mut ws.lows[..g] {
        l.clear();
    }

    // The open page first (its exact scores set a high running maximum for the lower-end
    // filter early). Its K is read once here; phase 2 reuses the f32 scores.
    let any_alibi = slopes.iter().any(|&s| s != 0.0);
    let q_pos_f32 = n as f32 - 1.0;
    let (open_start, open_len) = (ws.open_start, ws.open_len);
    let off = cache.kv_offset(seq.pages[open_slot], kv_head);
    with_kv!(cache.kv(), |k, _v| {
        for t in 0..open_len {
            let src = &k[off + t * d..off + (t + 1) * d];
            KvElem::slice_to_f32(src, &mut ws.row[..d]);
            let pos = open_start + t;
            for hg in 0..g {
                let w = &q_scaled[hg * d..(hg + 1) * d];
                let mut s = dot(w, &ws.row[..d]);
                if any_alibi {
                    s += slopes[hg] * (pos as f32 - q_pos_f32);
                }
                ws.open_scores[hg * ps + t] = s;
                let (mut s64, mut m) = (0.0f64, 0.0f64);
                for c in 0..d {
                    let p = w[c] as f64 * ws.row[c] as f64;
                    s64 += p;
                    m += p.abs();
                }
                // Exact products, f64 sums: BOUND_ERR·m covers the rest (module docs).
                ws.page_lows[hg * ps + t] =
                    s64 + alibi(slopes[hg], pos, q_pos) - super::BOUND_ERR * m;
                ws.mag[hg] = ws.mag[hg].max(m);
            }
        }
    });
    for hg in 0..g {
        let vals = &ws.page_lows[hg * ps..hg * ps + open_len];
        let pmax = vals.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
        push_lows(false, a, vals, pmax, &mut ws.lmax[hg], &mut ws.lows[hg]);
    }

    // Closed pages: statistics and sketch only, blocks of pages in parallel. Each block
    // filters its lower ends against its own running maximum, seeded with the open page's.
    let closed = open_slot;
    ws.bytes.meta = closed as u64 * 2 * stat_row;
    if bits > 0 {
        ws.bytes.sketch = (closed * ps * rb) as u64;
    }
    if closed > 0 && g > 0 {
        let nb = closed.div_ceil(BLOCK_PAGES);
        for part in &mut ws.blocks[..nb] {
            part.lmax[..g].copy_from_slice(&ws.lmax[..g]);
            part.mag[..g].fill(0.0);
            for l in &mut part.lows[..g] {
                l.clear();
            }
        }
    }
    Ok(())
}

/// [`certified_select`] after the bound pass: the blocks' lower ends merged, τ_lb, the
/// candidates.
pub(crate) fn select_finish(
    seq: SeqView<'_>,
    slopes: &[f32],
    alpha: f64,
    ws: &mut CertifiedWorkspace,
) -> Result<()> {
    let g = slopes.len();
    let ps = ws.ps;
    let np = seq.pages.len();
    let closed = np - 1;
    let open_slot = closed;
    let q_pos = seq.len as f64 - 1.0;
    let a = z_scale(alpha);
    if closed > 0 && g > 0 {
        let nb = closed.div_ceil(BLOCK_PAGES);
        for hg in 0..g {
            for part in &ws.blocks[..nb] {
                ws.lows[hg].extend_from_slice(&part.lows[hg]);
                ws.mag[hg] = ws.mag[hg].max(part.mag[hg]);
            }
        }
    }

    // τ_lb and the rounding margin per head; a token is a candidate iff some head has
    // `a·u + margin > τ_lb`, i.e. `u > (τ_lb − margin)/a`.
    for hg in 0..g {
        let tau = entmax_threshold_f64(&ws.lows[hg], alpha, &mut ws.tau_f64)?;
        let m = ws.mag[hg] + (slopes[hg] as f64).abs() * q_pos;
        ws.tau_lb[hg] = tau;
        ws.marg[hg] = margin(alpha, m, tau);
    }
    // f32 thresholds rounded down: the test `u > thr` keeps a superset of the f64 test.
    let thr = &mut ws.thr[..g];
    for (hg, t) in thr.iter_mut().enumerate() {
        *t = f32_down((ws.tau_lb[hg] - ws.marg[hg]) / a);
    }
    ws.cand.clear();
    ws.attended = false;
    ws.pages_touched = 1;
    for slot in 0..open_slot {
        let pu = &ws.page_umax[slot * g..(slot + 1) * g];
        if !(0..g).any(|hg| pu[hg] > thr[hg]) {
            continue;
        }
        ws.pages_touched += 1;
        let start = slot * ps;
        if ps <= 64 {
            let mut mask = 0u64;
            for hg in 0..g {
                if pu[hg] > thr[hg] {
                    let o = (slot * g + hg) * ps;
                    mask |= above_mask(&ws.upper[o..o + ps], thr[hg]);
                }
            }
            while mask != 0 {
                ws.cand
                    .push((start + mask.trailing_zeros() as usize) as u32);
                mask &= mask - 1;
            }
        } else {
            for t in 0..ps {
                if (0..g).any(|hg| ws.upper[(slot * g + hg) * ps + t] > thr[hg]) {
                    ws.cand.push((start + t) as u32);
                }
            }
        }
    }
    Ok(())
}

/// Phase 2 of the `certified` strategy (after [`certified_select`] on the same task and
/// cache state): K of the candidates, exact τ, V of the support. `out` is `[G, D]`, `res`
/// `[G]`. Returns the number of V rows read.
pub fn certified_attend(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
    ws: &mut CertifiedWorkspace,
    out: &mut [f32],
    res: &mut [HeadResult],
) -> Result<u64> {
    const OP: &str = "certificate::certified_attend";
    let g = slopes.len();
    let (d, ps) = (cache.head_dim(), cache.page_size());
    if ws.group != g || ws.n != seq.len || seq.len == 0 {
        return Err(Error::invalid(
            OP,
            "ws",
            format!("planned for {} heads, {} tokens", ws.group, ws.n),
            "run certified_select on the same task first",
        ));
    }
    if alpha == 1.0 {
        return Err(unsupported_softmax(OP));
    }
    check_len(OP, "q_scaled", q_scaled.len(), &[g, d])?;
    if out.len() < g * d || res.len() < g {
        return Err(Error::Mismatch {
            op: OP,
            arg: "out.len() / res.len()",
            got: out.len().min(res.len() * d),
            what: "[G, D] / [G] for the task's query heads",
            expected: g * d,
        });
    }
    let nk = ws.cand.len();
    let open_len = ws.open_len;
    let probe = ws.probe.unwrap_or(PROBE);
    let any_alibi = slopes.iter().any(|&s| s != 0.0);
    let code = alpha_code(alpha);
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let mut v_rows = 0u64;
    let row_off = |pos: usize| cache.kv_offset(seq.pages[pos / ps], kv_head) + (pos % ps) * d;
    let ctx = ScoreCtx {
        d,
        q_scaled,
        slopes: any_alibi.then_some(slopes),
        q_pos: seq.len as f32 - 1.0,
    };
    ws.kread.clear();
    with_kv!(cache.kv(), |k, v| {
        let mut np = 0;
        if probe > 0 && nk > probe {
            // The probe: the candidates with the largest upper ends (over the group).
            ws.rank.clear();
            for &pos in &ws.cand {
                let (slot, t) = (pos as usize / ps, pos as usize % ps);
                let mut m = f32::NEG_INFINITY;
                for hg in 0..g {
                    m = m.max(ws.upper[(slot * g + hg) * ps + t]);
                }
                ws.rank.push((m, pos));
            }
            ws.rank
                .select_nth_unstable_by(probe - 1, |x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
            ws.kread
                .extend(ws.rank[..probe].iter().map(|&(_, pos)| pos));
            ws.kread.sort_unstable();
            np = probe;
            score_list(
                k,
                &row_off,
                &ws.kread[..np],
                &ctx,
                &mut ws.pscores[..g * np],
                np,
                0,
                &mut ws.krows,
            );
            // The τ of the probe and the open page is a lower bound of the dense τ too
            // (f32 scores: up to the rounding the margin covers, so it is taken one margin
            // down); the other candidates are tested against the larger bound.
            for hg in 0..g {
                let tin = &mut ws.tau_f32_in[..np + open_len];
                tin[..np].copy_from_slice(&ws.pscores[hg * np..(hg + 1) * np]);
                tin[np..].copy_from_slice(&ws.open_scores[hg * ps..hg * ps + open_len]);
                let t1 = entmax_threshold_f32(tin, alpha, &mut ws.tau_f32)?;
                let lb = ws.tau_lb[hg].max(t1 - ws.marg[hg]);
                ws.thr[hg] = f32_down((lb - ws.marg[hg]) / a);
            }
            let mut pi = 0;
            for j in 0..nk {
                let pos = ws.cand[j];
                while pi < np && ws.kread[pi] < pos {
                    pi += 1;
                }
                if pi < np && ws.kread[pi] == pos {
                    continue;
                }
                let (slot, t) = (pos as usize / ps, pos as usize % ps);
                if (0..g).any(|hg| ws.upper[(slot * g + hg) * ps + t] > ws.thr[hg]) {
                    ws.kread.push(pos);
                }
            }
        } else {
            ws.kread.extend_from_slice(&ws.cand);
        }
        let nread = ws.kread.len();
        let nc = nread + open_len;
        // Scores `[G, nc]`: the others read now (after the probe's columns), the open page's.
        for hg in 0..g {
            let (dst, src) = (hg * nc + nread, hg * ps);
            ws.scores[dst..dst + open_len].copy_from_slice(&ws.open_scores[src..src + open_len]);
        }
        score_list(
            k,
            &row_off,
            &ws.kread[np..],
            &ctx,
            &mut ws.scores[..g * nc],
            nc,
            np,
            &mut ws.krows,
        );
        if np > 0 {
            // The probe's columns merged in, so that columns run in position order as they
            // do with no probe: τ's sums and the V accumulation then take the same order
            // whichever candidates the probe spared (f32 sums in another order differ at
            // rounding, which an output with cancellation magnifies).
            merge_probe(ws, g, np, nread, nc);
        }
        // Exact τ on what was read (= the dense τ), weights in place.
        for hg in 0..g {
            let sc = &mut ws.scores[hg * nc..(hg + 1) * nc];
            let tau = entmax_threshold_f32(sc, alpha, &mut ws.tau_f32)?;
            let (mass, support) = entmax_weights_in_place(sc, a, tau, beta, code);
            res[hg] = HeadResult { tau, support, mass };
        }
        // V of the support only.
        let acc = &mut ws.acc[..g * d];
        acc.fill(0.0);
        let pos_of = |j: usize| {
            if j < nread {
                ws.kread[j] as usize
            } else {
                ws.open_start + (j - nread)
            }
        };
        let weighted = |j: usize| (0..g).any(|hg| ws.scores[hg * nc + j] > 0.0);
        for j in 0..nc {
            let ahead = j + AHEAD;
            if ahead < nc && weighted(ahead) {
                let o = row_off(pos_of(ahead));
                crate::attention::cpu::prefetch(&v[o..o + d]);
            }
            if !weighted(j) {
                continue;
            }
            let off = row_off(pos_of(j));
            KvElem::slice_to_f32(&v[off..off + d], &mut ws.row[..d]);
            v_rows += 1;
            for hg in 0..g {
                let w = ws.scores[hg * nc + j];
                if w > 0.0 {
                    let norm = (1.0 / res[hg].mass) as f32;
                    axpy(&mut acc[hg * d..(hg + 1) * d], w * norm, &ws.row[..d]);
                }
            }
        }
        out[..g * d].copy_from_slice(acc);
        // Pages with a K row read (`kread` ascending) and the open page.
        ws.pages_touched = 1 + distinct_pages(&ws.kread, ps);
    });
    ws.attended = true;
    Ok(v_rows)
}

/// What [`score_list`] needs of the query: head dim, scaled queries `[G, D]`, ALiBi slopes
/// (`None` without) and the query position.
struct ScoreCtx<'a> {
    d: usize,
    q_scaled: &'a [f32],
    slopes: Option<&'a [f32]>,
    q_pos: f32,
}

/// Exact scores of the closed-page tokens `list`, every head of the group from one K read,
/// into columns `col0..col0 + list.len()` of the `[G, stride]` matrix `dst`; blocks of
/// [`CAND_BLOCK`] tokens in parallel, each with its own `krows` row (K rows are scattered:
/// each fetched [`AHEAD`] tokens early).
#[allow(clippy::too_many_arguments)]
fn score_list<T: KvElem + Sync>(
    k: &[T],
    row_off: &(dyn Fn(usize) -> usize + Sync),
    list: &[u32],
    ctx: &ScoreCtx<'_>,
    dst: &mut [f32],
    stride: usize,
    col0: usize,
    krows: &mut [f32],
) {
    let (d, n) = (ctx.d, list.len());
    let g = ctx.q_scaled.len() / d;
    let scores = SharedMut::new(dst);
    let block = |(c, row): (usize, &mut [f32])| {
        let first = c * CAND_BLOCK;
        for j in first..(first + CAND_BLOCK).min(n) {
            if let Some(&ahead) = list.get(j + AHEAD) {
                let o = row_off(ahead as usize);
                crate::attention::cpu::prefetch(&k[o..o + d]);
            }
            let pos = list[j] as usize;
            let off = row_off(pos);
            KvElem::slice_to_f32(&k[off..off + d], row);
            let rel = pos as f32 - ctx.q_pos;
            for hg in 0..g {
                let mut s = dot(&ctx.q_scaled[hg * d..(hg + 1) * d], row);
                if let Some(sl) = ctx.slopes {
                    s += sl[hg] * rel;
                }
                // SAFETY: hg < G and col0 + j < stride: inside the `[G, stride]` slice
                // shared above; blocks own disjoint j ranges and nothing reads `dst` during
                // this loop.
                unsafe { *scores.at(hg * stride + col0 + j) = s };
            }
        }
    };
    let nb = n.div_ceil(CAND_BLOCK);
    let rows = &mut krows[..nb.max(1) * d];
    if nb > 1 {
        rows.par_chunks_mut(d).enumerate().for_each(block);
    } else if nb == 1 {
        block((0, rows));
    }
}

/// Merges the probe (`kread[..np]`, scores in `pscores`) into the survivors read after it
/// (`kread[np..nread]`, scores in columns `np..nread` of `scores`): both ascending, disjoint.
/// A front merge in place: write index `i + j` never passes the unread survivor `np + i`,
/// and once the probe is used up the remaining survivors already sit in their columns.
fn merge_probe(ws: &mut CertifiedWorkspace, g: usize, np: usize, nread: usize, nc: usize) {
    ws.ppos[..np].copy_from_slice(&ws.kread[..np]);
    let (mut i, mut j) = (0, 0);
    while j < np {
        let w = i + j;
        if np + i < nread && ws.kread[np + i] < ws.ppos[j] {
            ws.kread[w] = ws.kread[np + i];
            for hg in 0..g {
                ws.scores[hg * nc + w] = ws.scores[hg * nc + np + i];
            }
            i += 1;
        } else {
            ws.kread[w] = ws.ppos[j];
            for hg in 0..g {
                ws.scores[hg * nc + w] = ws.pscores[hg * np + j];
            }
            j += 1;
        }
    }
}

/// Distinct pages of an ascending position list.
fn distinct_pages(pos: &[u32], ps: usize) -> u32 {
    let mut n = 0u32;
    let mut last = u32::MAX;
    for &p in pos {
        let page = p / ps as u32;
        if page != last {
            n += 1;
            last = page;
        }
    }
    n
}

/// Both phases of the `certified` strategy for one task; returns the V rows read.
pub fn certified_decode_group(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    kv_head: usize,
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
    ws: &mut CertifiedWorkspace,
    out: &mut [f32],
    res: &mut [HeadResult],
) -> Result<u64> {
    certified_select(cache, seq, kv_head, q_scaled, slopes, alpha, ws)?;
    certified_attend(cache, seq, kv_head, q_scaled, slopes, alpha, ws, out, res)
}

fn unsupported_softmax(op: &'static str) -> Error {
    Error::Unsupported {
        op,
        what: "the certified strategy needs alpha > 1: softmax (alpha = 1) gives every token \
               weight, so exact softmax reads all of K and V (use dense); for alpha = 1 use \
               a certificate (CertificateLevel::Page/Token) for a proven bound on the mass \
               a selector leaves out"
            .into(),
    }
}

/// One task of [`bound_pass_seq`]: its kv head, query heads `h0..h0 + group` of the
/// sequence, and raw pointers to its workspace's block scratch, upper ends and page maxima
/// (taken by [`CertifiedWorkspace::seq_task`] after [`select_begin`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct SeqBoundTask {
    kv_head: usize,
    h0: usize,
    group: usize,
    blocks: *mut BlockScratch,
    upper: *mut f32,
    page_umax: *mut f32,
}

// SAFETY: the pointers are only dereferenced by `bound_pass_seq`, whose blocks touch
// disjoint block scratch and disjoint ranges of the upper ends and page maxima.
unsafe impl Send for SeqBoundTask {}
unsafe impl Sync for SeqBoundTask {}

impl CertifiedWorkspace {
    /// This workspace as task `(kv_head, h0..h0 + group)` of [`bound_pass_seq`]. The
    /// workspace must have been prepared by [`select_begin`] for the same sequence, and must
    /// not be touched otherwise until the pass is over.
    pub(crate) fn seq_task(&mut self, kv_head: usize, h0: usize, group: usize) -> SeqBoundTask {
        SeqBoundTask {
            kv_head,
            h0,
            group,
            blocks: self.blocks.as_mut_ptr(),
            upper: self.upper.as_mut_ptr(),
            page_umax: self.page_umax.as_mut_ptr(),
        }
    }
}

/// The closed-page bound pass of every task of one sequence, page-major: a page's min/max
/// rows (`[H_kv, D]` each) and sketch rows (`[H_kv, page_size, row_bytes]`) of all kv heads
/// are contiguous, so one walk over the pages reads them as three forward streams (which
/// the hardware prefetchers follow) and bounds every task's tokens from it, where the per-task pass reads one scattered slice per page and task. Each
/// task's results are exactly those of its own pass ([`bound_slot`] on the same pages in
/// the same block order). `q_scaled` is the sequence's `[H, D]`, `slopes` its `[H]`.
///
/// # Safety
/// Every task's pointers come from [`CertifiedWorkspace::seq_task`] of distinct workspaces
/// prepared by [`select_begin`] for `seq` (so their buffers hold the closed pages' blocks),
/// alive and otherwise untouched for the duration of the call.
pub(crate) unsafe fn bound_pass_seq(
    cache: &PagedKvCache,
    seq: SeqView<'_>,
    tasks: &[SeqBoundTask],
    q_scaled: &[f32],
    slopes: &[f32],
    alpha: f64,
) {
    let (d, ps) = (cache.head_dim(), cache.page_size());
    let closed = seq.pages.len().saturating_sub(1);
    if closed == 0 || tasks.is_empty() {
        return;
    }
    let a = z_scale(alpha);
    let nb = closed.div_ceil(BLOCK_PAGES);
    let fast = has_avx512();
    let run = |bi: usize| {
        let first = bi * BLOCK_PAGES;
        let last = (first + BLOCK_PAGES).min(closed);
        for slot in first..last {
            // SAFETY (the caller's contract): block `bi` of every task is touched by this
            // job only; its upper ends and page maxima are pages first..last.
            let part = |t: &SeqBoundTask| unsafe { &mut *t.blocks.add(bi) };
            // Phase 1 for every task: the rows. No software prefetch: a page's rows and
            // sketch blocks of all kv heads are three forward streams, which the hardware
            // prefetchers follow; the earlier steady software prefetch (one line per line
            // consumed, 32 KiB ahead) stalled on full fill buffers once the kernels got
            // faster and measured slower here, and 12–16 KiB ahead gained nothing beyond
            // the noise in alternated runs (2 threads, 128K).
            for t in tasks {
                slot_rows(fast, cache, seq, t.kv_head, slot, part(t));
            }
            // Phase 2 for every task (batches of heads across tasks), then phase 3 (see
            // `slot_bounds`).
            let units = tasks.iter().enumerate().flat_map(|(ti, t)| {
                let b = part(t);
                (0..t.group).map(move |hg| {
                    let unit = BoundUnit {
                        w: q_scaled[(t.h0 + hg) * d..].as_ptr(),
                        rows: &b.rows,
                        q: b.qw[hg * d..].as_mut_ptr(),
                    };
                    (unit, (ti, hg))
                })
            });
            // SAFETY: distinct (task, head) units: their queries, their block's rows
            // and weights (D each) of this job's block.
            unsafe { page_bounds_batched(d, units, |(ti, hg), pb| part(&tasks[ti]).pbs[hg] = pb) };
            for t in tasks {
                let g = t.group;
                // SAFETY: as `part` above.
                let (up, pu) = unsafe {
                    (
                        std::slice::from_raw_parts_mut(
                            t.upper.add(first * g * ps),
                            (last - first) * g * ps,
                        ),
                        std::slice::from_raw_parts_mut(
                            t.page_umax.add(first * g),
                            (last - first) * g,
                        ),
                    )
                };
                slot_tokens(
                    fast,
                    cache,
                    seq,
                    t.kv_head,
                    &slopes[t.h0..t.h0 + g],
                    a,
                    slot,
                    first,
                    part(t),
                    up,
                    pu,
                );
            }
        }
    };
    if nb > 1 {
        (0..nb).into_par_iter().for_each(run);
    } else {
        run(0);
    }
}
