//! The GPU decode step: a plan per shape ([`GpuDecoder`]) owns every workspace and launch
//! shape; a step is a fixed sequence of kernel launches on the cache's stream with no host
//! synchronisation and no allocation, so it can be captured once into a CUDA graph and
//! replayed ([`GpuDecoder::capture`], [`GpuDecoder::replay`]).
//!
//! Launch sequence of a step:
//! * top-k only: `topk_score` (the key-range bound of every closed page, one pass over a kv
//!   head's page metadata for its whole query group), `topk_select` (exact radix top-k, slot
//!   list with the last page appended);
//! * Gaussian only: `gauss_moments` (μ_p and σ_p² of every closed page for each query head
//!   of a kv head's group, one pass over its mean/std rows, plus per-CTA partial sums of the
//!   head moments), `gauss_count` (every chunk CTA merges the partials, solves τ̂ in
//!   standardised space by interpolating the plan's table of the root t*(c)
//!   (`tau::TstarTable`; Newton on ln M_β outside it or with `ENTMAXKV_TSTAR=0`), applies the
//!   original criterion's margins and counts its kept pages), `gauss_pack` (kept pages written in order after the counts of the chunks
//!   before; chunk 0 appends the last page and applies the τ clamp);
//! * Gaussian, original criterion, exact τ, no ALiBi, caches up to 64K tokens
//!   (`ENTMAXKV_GAUSS_FUSED=<tokens>`: up to that length at any α, 0 never): the
//!   selection fused with the K pass
//!   (`kernels/gauss_fused.cu`), since there the criterion keeps most pages and the
//!   separate launches cost more than the K rows they save: `gauss_fused_scores` (per
//!   task, moment CTAs publish the page moments and their partials, and the last of
//!   them merges them and solves τ̂ and the floors; meanwhile chunk CTAs score every K
//!   row, wait for the solve, keep-test their own pages and write the rows of kept pages
//!   within the entmax range of the running maximum over kept pages as candidates; the
//!   last chunk of a task writes the kept list and the τ clamp), `attn_entmax_filter` (as
//!   in dense entmax: the running maximum is now the kept pages' maximum), then the
//!   attention's tail (and refilter / values) as below;
//! * Gaussian with the robust criterion (α > 1): `gauss_moments` (and `gauss_mix` with
//!   ALiBi), `gauss_count` (`robust = 1`: one CTA per task solves and publishes τ̂, no
//!   counting), then `kernels/robust.cu`: `rob_box` (box bound of every closed page and
//!   head; with one query head per task `rob_tok1` forms it instead, `fuse_box`),
//!   `rob_tok1` (pass 1: sink pages and pages whose box reaches τ̂ get the CPU's
//!   token intervals, bit for bit), `rob_cmax1`/`rob_ccnt1`/`rob_cpack1` (per chunk of 256
//!   pages: largest lower end, candidate count, candidates written in page order),
//!   `rob_solve1` (τ_lb of the pass-1 lower ends, the trust test of τ̂, the threshold),
//!   `rob_tok2` (pass 2: the pages whose box still reaches it), `rob_cmax2`/`rob_ccnt2`/
//!   `rob_cpack2`, `rob_solve2` (τ_lb of both passes, T into τ̂), `rob_pcnt` (per chunk:
//!   kept and bounded pages), `rob_pack` (kept slots after the chunks before, last page last);
//! * the robust criterion's softmax mode (α = 1, `RobustParams.softmax`; the CPU's
//!   `select_softmax`): no moments and no τ̂; `rob_box`, `rob_bmax` (one CTA per task: each
//!   head's best box, τ̂ = NaN, the task's "box not finite" flag), `rob_tok1` (sink pages and
//!   pages whose box is within 2 of the head's best), `rob_cmax1` (largest lower end M),
//!   `rob_cpack1` (no list: per chunk Σ exp(l − M)), `rob_solve1` (L = M + ln Σ, the
//!   log-sum-exp of the pass-1 lower ends, a rigorous lower bound of the dense one),
//!   `rob_tok2` (pages with ps·exp(box − L) > 1e-3 / closed for some head), `rob_cmax2`,
//!   `rob_cpack2`, `rob_solve2` (L over both passes), `rob_pcnt`, `rob_pack` (keep
//!   where ps·exp(u − L) > 1e-3 / closed, u the final page bound; sinks kept); the attention
//!   stage is `attn_softmax` over the kept lists, as for every α = 1 selection;
//! * α > 1: `attn_entmax_scores` (K once, chunk candidates against a running maximum),
//!   `attn_entmax_filter` (each chunk's candidates against the final maximum, in place, one
//!   warp per chunk, and a count histogram of them), with the exact τ at α < 1.5
//!   `attn_entmax_refilter` (each chunk's survivors above the histogram bracket's lower end,
//!   in place: at α = 4/3 the survivors reach ~10⁵ at 1M, which one tail CTA would walk),
//!   `attn_entmax_tail` (one CTA per task: a
//!   bracket of τ from the histogram, the survivors that can matter into shared memory,
//!   the exact τ (power sums for β ∈ {1, 2, 3}, else safeguarded Halley), and V for small
//!   supports; lists of at most 1536 survivors at α ∈ {2, 1.5, 4/3} skip the bracket and
//!   take safeguarded Halley from t = −1 with one barrier a step, `ENTMAXKV_TAIL_LEAN`,
//!   ending as soon as a pass's support is the root's, whose root is then solved in closed
//!   form, `ENTMAXKV_LEAN_CLOSED`),
//!   `attn_entmax_values` (V for large supports; exits at once otherwise; not launched at
//!   all where every list's tokens fit the tail's shared memory, 10240 by default: the tail
//!   then gathers V for any support itself, `ENTMAXKV_V_IN_TAIL=0` to keep the launch);
//! * α = 1: `attn_softmax` (split-K online softmax, log-sum-exp merge).
//! * `certified` (selection stage, then the α > 1 attention kernels over its candidates):
//!   `cert_bounds` (rigorous score intervals of every token from the key sketch and page
//!   min/max, the last page exact), the filter and tail in their `cert_phase = 1` form
//!   (`cert_filter`, `cert_tau_lb`: τ_lb = entmax τ of the lower ends), `cert_exact` (K of
//!   the tokens whose upper end reaches τ_lb, exact scores in place); see `kernels/cert.cu`.
//!
//! The plan binds a batch of sequences; lengths are read from the device at run time, so
//! the same graph serves every step while the sequences grow (up to the planned length).
//!
//! At α = 1.5 with the exact τ the tail and the fused Gaussian step run as kernels compiled
//! for that α (`attn_entmax_tail15`, `gauss_fused_scores15`): after an L2 flush a step's
//! code is cold, and the other α's code cost time even where it did not run
//! (`ENTMAXKV_TAIL_SPEC=0` for the general ones). Where every list's tokens fit the tail's
//! shared memory (top-k with short lists), the tail is `attn_entmax_tail15_lean`, with only
//! the lean τ solve compiled in (64 KB of SASS instead of 128; top-k 1/8 at 32K 0.0495 →
//! 0.0437 ms, session 16; `ENTMAXKV_TAIL_LEAN_KERNEL=0` for `attn_entmax_tail15`).
//!
//! On sm_90+ the step's kernels are launched with programmatic dependent launch: each may be
//! scheduled while its predecessor drains and waits for it (`PDL_ENTRY` in common.cuh), so
//! order is that of the stream and only launch latency overlaps (`ENTMAXKV_NO_PDL` turns it
//! off). Before the wait a kernel reads only what the previous launch does not write
//! (`PDL_PRE`): the tail its task and running maxima, `topk_select` and the scores pass
//! after a selection the sequence's row and length (`ENTMAXKV_PRE_WAIT=0` for the scores
//! pass reading them after it). Page-statistics passes dispatch the kv heads of a page
//! range side by side (`kv_fast`; `ENTMAXKV_KV_FAST=0` for the page-range-major order), and
//! a selection's kept list is spread over one resident wave of attention chunks rather than
//! over every planned chunk (`chunk_range` in attn.cu).

use super::cache::{check_gpu_config, CacheBufs, DeviceKvCache};
use super::ctx::{launch_ex, DevBuf, Event, Family, Gpu, Graph, Kernels, ModuleKey, Stream};
use super::params::{AttnParams, FusedGaussParams, GaussParams, RobustParams, TopkParams};
use crate::attention::cpu::TauMode;
use crate::cache::SeqId;
use crate::decode::{ByteCount, DecodeConfig, HeadReport, Method, StepReport};
use crate::error::{check_finite, check_len, Error, Result};
use crate::selection::gaussian::{Criterion, GaussianOpts};
use crate::selection::topk::{Budget, TopkScoring};
use crate::selection::GqaMode;
use crate::stats::sketch;
use crate::tau::{page_max_quantile_z, TstarTable};
use std::sync::Arc;

/// Which part of a step to launch (for stage timings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Page selection (nothing for dense decode). The fused Gaussian step
    /// ([`GpuDecoder::fused_gauss`]) scores every page's K here too.
    Selection,
    /// Attention over the selected pages. After a fused Gaussian selection only the τ solve
    /// and V remain, and they consume the running maximum and histogram the selection left:
    /// replayed without it, as stage timings do, they time the same kernels on reset state.
    Attention,
}

const BLOCK: u32 = 256;
const SEL_THREADS: u32 = 1024;
const PPC_CAP: usize = 256;
const NCH_MAX: usize = 2048;

/// The entmax attention stage (α > 1), in launch order; `attn_entmax_refilter` runs only
/// where the plan says so (`GpuDecoder::refilter`), `attn_entmax_scores` not after the
/// certified selection (its candidates' exact scores are already in the lists).
const ATTN_ENTMAX: [&str; 5] = [
    "attn_entmax_scores",
    "attn_entmax_filter",
    "attn_entmax_refilter",
    "attn_entmax_tail",
    "attn_entmax_values",
];
const SMALL_SUPPORT: usize = 1024;
/// The longest survivor list the tail's lean exact-τ path takes (attn.cu `lean_solve`).
const TAIL_LEAN_MAX: usize = 1536;
/// Chunks per CTA of the filter and values kernels.
const CPB: usize = 8;
/// Dynamic shared memory of `attn_entmax_tail`: candidate capacity of the τ solve held in
/// shared memory (8 bytes each); more candidates are streamed from the chunk lists.
const SCORES_DYN: usize = 80 * 1024;
/// The dynamic shared-memory limit set on the attention kernels.
const DYN_LIMIT: usize = 96 * 1024;
/// The largest dynamic shared memory `ENTMAXKV_SOLVE_DYN_KB` may give the tail (its static
/// arrays take ~12 KB of the 227 KB an sm_90 CTA may have).
const SOLVE_DYN_MAX: usize = 200 * 1024;

struct TopkPlan {
    params: TopkParams,
    grid_x: u32,
    smem: usize,
    keys: DevBuf<u32>,
    lists: DevBuf<u32>,
    counts: DevBuf<i32>,
}

struct GaussPlan {
    params: GaussParams,
    grid_x: u32,
    smem: usize,
    mu: DevBuf<f32>,
    var: DevBuf<f32>,
    lists: DevBuf<u32>,
    counts: DevBuf<i32>,
    tau_hat: DevBuf<f64>,
    /// Partial sums, chunk counts and maxima, per-head floors: scratch of the selection.
    scratch: Vec<DevBuf<u8>>,
    /// Nodes of t*(c) for the τ̂ solve (tau::TstarTable), if used.
    tstar: Option<DevBuf<f64>>,
}

/// The robust Gaussian criterion's kernels (`kernels/robust.cu`) and their workspaces; the
/// moments, τ̂ and the kept lists are the Gaussian plan's.
struct RobustPlan {
    params: RobustParams,
    /// The selection stage's kernels, in launch order (fixed by the plan).
    kernels: Vec<&'static str>,
    /// Units grid (x) of rob_box / rob_tok*: `(max_pages · tg) / 32` CTAs per task.
    grid_x: u32,
    /// `[tasks]` pages bounded per token in the last step (bytes report).
    bounded: DevBuf<i32>,
    bufs: Vec<DevBuf<u8>>,
}

/// Workspaces of the certified strategy (addresses of plan-owned `work` buffers, and the
/// per-step results the report reads).
struct CertPlan {
    cand_u: u64,
    cand_lpos: u64,
    tau_lb: u64,
    gmag: u64,
    gslack: u64,
    /// `[tasks, nch, TG]` candidates scored exactly, and the pages they lie on.
    cnt: DevBuf<i32>,
    pages: DevBuf<i32>,
    /// `[B, H]` 1 where the exclusion margins held.
    flag: DevBuf<i32>,
    row_bytes: usize,
    dyn_bytes: usize,
}

/// Closed pages per CTA of `gauss_count` / `gauss_pack`.
const GAUSS_SPC: usize = 2048;
// gauss_pack gives each thread PACK_PPT = 8 consecutive pages of its chunk (gauss.cu).
const _: () = assert!(GAUSS_SPC <= 8 * BLOCK as usize);
/// Longest cache (tokens) whose Gaussian step is fused with the K pass by default, at any
/// α (`ENTMAXKV_GAUSS_FUSED=<tokens>` sets it; 0: never); see `kernels/gauss_fused.cu`.
/// Session 14 run 2 (ms, fused / separate or session 13's fused form): α = 1.5 32K 0.0629
/// / 0.0677, 64K 0.0814 / 0.0998; α = 2 32K 0.0595 / 0.0710, 64K 0.0756 / 0.0763.
/// Session 14 run 1 (the second form, forced): 128K 0.160 against 0.104 separate.
const GAUSS_FUSED_MAX: usize = 65536;
/// Most pages a fused plan takes, whatever `ENTMAXKV_GAUSS_FUSED` asks (reading every K
/// row stops paying long before: session 14 run 1, forced at 128K, 0.160 against 0.104 ms).
const GAUSS_FUSED_PAGES: usize = 16384;

/// The fused Gaussian step's launch parameters and workspaces (`kernels/gauss_fused.cu`).
struct FusedPlan {
    params: FusedGaussParams,
    /// Dynamic shared memory of `gauss_fused_scores`.
    dyn_scores: usize,
}

/// A planned GPU decode step (see the module docs).
pub struct GpuDecoder {
    gpu: Arc<Gpu>,
    stream: Arc<Stream>,
    bufs: Arc<CacheBufs>,
    module: Kernels,
    cfg: DecodeConfig,
    seqs: Vec<SeqId>,
    rows_host: Vec<usize>,
    max_tokens: usize,
    heads: usize,
    hkv: usize,
    d: usize,
    ps: usize,
    kv_size: usize,
    st_size: usize,
    softmax: bool,
    tg: usize,
    tasks: usize,
    nch: usize,
    dyn_scores: usize,
    dyn_solve: usize,
    dyn_values: usize,
    dyn_softmax: usize,
    attn: AttnParams,
    /// `attn` with `cert_phase = 1` (the certified strategy's τ_lb pass).
    attn_cert: AttnParams,
    topk: Option<TopkPlan>,
    gauss: Option<GaussPlan>,
    robust: Option<RobustPlan>,
    cert: Option<CertPlan>,
    /// The Gaussian selection fused with the K pass (short caches), replacing the moments,
    /// count and pack launches and the attention's scores and filter.
    fused: Option<FusedPlan>,
    _rows: DevBuf<i32>,
    q: DevBuf<f32>,
    out: DevBuf<f32>,
    _slopes: Option<DevBuf<f32>>,
    tau: DevBuf<f64>,
    support: DevBuf<i32>,
    /// Raised by the kernels when a score or an output element is not finite: `[flags,
    /// !(first b·H + h)]` (flags: 1 score, 2 output); read and cleared by `check_finite`.
    status: DevBuf<u32>,
    work: Vec<DevBuf<u8>>,
    graph: Option<Graph>,
    /// Recorded on the cache's stream before a step that must follow its queued appends,
    /// and on the plan's stream after it (`launch_step`).
    order_in: Event,
    order_out: Event,
    report: StepReport,
    /// Launch the step's kernels with programmatic dependent launch (sm_90+, unless
    /// `ENTMAXKV_NO_PDL` is set): each may be scheduled while its predecessor drains.
    pdl: bool,
    /// The tail gathers V for every support: `attn_entmax_values` is not launched.
    v_in_tail: bool,
    /// Run `attn_entmax_refilter` between the filter and the tail (exact τ at α < 1.5, and
    /// for full lists of 512K tokens or more; `ENTMAXKV_REFILTER=0` never, `=2` whenever the
    /// τ is exact, `=3` at α < 1.5 only — session 9's rule —, for comparison).
    refilter: bool,
    /// The fused Gaussian kernel the plan launches: at α = 1.5 with the exact τ the one
    /// compiled for it, `gauss_fused_scores15` (less code, which is cold after an L2 flush;
    /// `ENTMAXKV_TAIL_SPEC=0`: never), else `gauss_fused_scores`.
    fused_kernel: &'static str,
    /// The tail kernel the plan launches: `attn_entmax_tail`, `attn_entmax_tail15`, or,
    /// where every list's candidates fit its shared memory (`v_in_tail`),
    /// `attn_entmax_tail15_lean` (only the lean τ solve compiled in;
    /// `ENTMAXKV_TAIL_LEAN_KERNEL=0`: never).
    tail_kernel: &'static str,
}

/// A development knob read from the environment at plan time (`default` when unset or not a
/// number).
fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(default)
}

/// Grid of a page-statistics pass: page ranges × (sequence, kv head), or the transpose when
/// `kv_fast` (CTAs dispatched in x order then read the kv heads of a page range together).
fn stat_grid(parts: u32, rows: usize, kv_fast: i32) -> (u32, u32, u32) {
    if kv_fast != 0 {
        (rows as u32, parts, 1)
    } else {
        (parts, rows as u32, 1)
    }
}

fn alpha_code(alpha: f64) -> i32 {
    if alpha == 1.0 {
        1
    } else if alpha == 2.0 {
        2
    } else if alpha == 1.5 {
        15
    } else if (alpha - 4.0 / 3.0).abs() < 1e-15 {
        13
    } else {
        0
    }
}

/// `(kint, β)` of the Gaussian kernels for α > 1: `kint` = β where β is 1, 2 or 3 within
/// the CPU's tolerance (`tau/gaussian.rs` `int_beta`; the closed forms, with β passed as that
/// integer), else 0 with β = 1/(α−1) (quadrature). The CPU also has closed forms for β = 4;
/// the device uses quadrature there (the two agree to ~5e-12, `integer_paths_match_quadrature`).
fn gauss_beta(alpha: f64) -> (i32, f64) {
    let beta = 1.0 / (alpha - 1.0);
    let k = beta.round();
    if (1.0..=3.0).contains(&k) && (beta - k).abs() <= 1e-12 * k {
        (k as i32, k)
    } else {
        (0, beta)
    }
}

impl GpuDecoder {
    /// Plans steps over the sequences `seqs` of `cache` (batch entry b = `seqs[b]`), each up
    /// to `max_tokens` tokens. Supports [`Method::Dense`] and [`Method::TopK`] (box or
    /// sketch page scores), any α ≥ 1, [`Method::Certified`] for α > 1 (any sketch width whose rows are
    /// whole 4-byte words), and [`Method::Gaussian`] with the original or the robust criterion
    /// at any α > 1 (with or without ALiBi; exact, fixed or corrected τ), with the original
    /// at α = 1 (every page kept, as on the CPU) and with the robust criterion's softmax mode
    /// at α = 1 (pages dropped only with a proven bound on their mass, as on the CPU).
    pub fn new(
        cache: &DeviceKvCache,
        seqs: &[SeqId],
        max_tokens: usize,
        cfg: DecodeConfig,
    ) -> Result<GpuDecoder> {
        const OP: &str = "GpuDecoder::new";
        let ccfg = cache.config().clone();
        check_gpu_config(OP, &ccfg)?;
        cfg.attention.validate_for(OP, ccfg.num_kv_heads)?;
        if seqs.is_empty() {
            return Err(Error::invalid(OP, "seqs", "[]", "at least one sequence"));
        }
        if max_tokens == 0 || max_tokens > i32::MAX as usize {
            return Err(Error::invalid(
                OP,
                "max_tokens",
                max_tokens,
                "must be in 1..2^31",
            ));
        }
        let mut rows_host = Vec::with_capacity(seqs.len());
        for (i, id) in seqs.iter().enumerate() {
            if seqs[..i].contains(id) {
                return Err(Error::invalid(OP, "seqs", id, "sequence listed twice"));
            }
            rows_host.push(cache.seq_row(*id)?);
        }
        let mut gauss_opts: Option<GaussianOpts> = None;
        let mut certified = false;
        let budget = match &cfg.method {
            Method::Dense => None,
            Method::TopK(b) => {
                b.validate(OP)?;
                Some(*b)
            }
            // Softmax with the original criterion keeps every page (selection/gaussian: no
            // threshold to predict, nothing droppable): the dense softmax step.
            Method::Gaussian(o)
                if cfg.attention.alpha == 1.0 && o.criterion == Criterion::Original =>
            {
                o.validate(OP)?;
                None
            }
            Method::Gaussian(o) => {
                o.validate(OP)?;
                // Any α > 1: β ∈ {1, 2, 3} by closed forms, other β by quadrature
                // (kernels/gauss_beta.cuh). The robust criterion adds kernels/robust.cu; at
                // α = 1 its softmax mode (a bound on the dropped mass, no τ̂: the Gaussian
                // plan only lends its kept lists, τ̂ output and task flags).
                gauss_opts = Some(o.clone());
                None
            }
            Method::Certified => {
                if cfg.attention.alpha == 1.0 {
                    return Err(Error::Unsupported {
                        op: OP,
                        what: "the certified strategy at alpha = 1 (softmax weights are never \
                               exactly zero: exact softmax reads every token, use dense)"
                            .into(),
                    });
                }
                let rb = sketch::row_bytes(ccfg.head_dim, ccfg.sketch_bits);
                if ccfg.sketch_bits > 0 && !rb.is_multiple_of(4) {
                    return Err(Error::Unsupported {
                        op: OP,
                        what: format!(
                            "the certified strategy on the GPU with sketch rows of {rb} bytes \
                             (head_dim * sketch_bits must be a multiple of 32)"
                        ),
                    });
                }
                certified = true;
                None
            }
        };
        let gpu = cache.gpu().clone();
        // Candidate rows are addressed as page id · page_size + row in a u32.
        if ccfg.num_pages.saturating_mul(ccfg.page_size) > u32::MAX as usize {
            return Err(Error::Unsupported {
                op: OP,
                what: format!(
                    "a pool of {} pages of {} tokens (more than 2^32 token rows)",
                    ccfg.num_pages, ccfg.page_size
                ),
            });
        }
        let batch = seqs.len();
        let heads = cfg.attention.num_heads;
        let hkv = ccfg.num_kv_heads;
        let group = heads / hkv;
        let (d, ps) = (ccfg.head_dim, ccfg.page_size);
        let kv_size = ccfg.kv_dtype.size();
        let st_size = ccfg.resolved_stats_dtype().size();
        let alpha = cfg.attention.alpha;
        let softmax = alpha == 1.0;
        let per_head = (budget.is_some() || gauss_opts.is_some()) && cfg.gqa == GqaMode::PerHead;
        let tg = if per_head { 1 } else { group };
        let tasks_per_b = heads / tg;
        let tasks = batch * tasks_per_b;
        if tg > 8 {
            return Err(Error::Unsupported {
                op: OP,
                what: format!(
                    "GQA groups of {tg} query heads per kv head (the GPU kernels take up to 8)"
                ),
            });
        }
        let max_pages = max_tokens.div_ceil(ps).max(1);
        // The Gaussian step fused with the K pass (kernels/gauss_fused.cu): on short caches
        // the original criterion keeps most pages, and the separate selection's launches
        // cost more than the K rows it lets the attention skip. Exact τ, no ALiBi (the
        // mixture's τ̂ is a launch of its own). `ENTMAXKV_GAUSS_FUSED=<tokens>`: the
        // longest cache fused (0: never); unset, GAUSS_FUSED_MAX.
        let fused_limit = std::env::var("ENTMAXKV_GAUSS_FUSED")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(GAUSS_FUSED_MAX);
        let fused_gauss = gauss_opts.as_ref().is_some_and(|o| {
            o.criterion == Criterion::Original
                && !softmax
                && cfg.tau_mode == TauMode::Exact
                && cfg.attention.alibi_slopes.is_none()
                && max_pages <= GAUSS_FUSED_PAGES
                && max_tokens <= fused_limit
        });
        // The kernel families the plan can launch from (ctx::Family; each kernel is in one).
        let families: &[Family] = if certified {
            &[Family::Cert, Family::Attn]
        } else if fused_gauss {
            &[Family::Fused, Family::Attn]
        } else if gauss_opts
            .as_ref()
            .is_some_and(|o| o.criterion == Criterion::Robust)
        {
            &[Family::Robust, Family::Gauss, Family::Attn]
        } else if gauss_opts.is_some() {
            &[Family::Gauss, Family::Attn]
        } else if budget.is_some() {
            &[Family::Topk, Family::Attn]
        } else {
            &[Family::Attn]
        };
        let module = Kernels::load(
            &gpu,
            ModuleKey::Decode {
                family: Family::All,
                kv: ccfg.kv_dtype,
                stats: ccfg.resolved_stats_dtype(),
                head_dim: d,
                tg,
                unroll: super::ctx::unroll_rows(tg),
                // The quadrature only where the Gaussian τ̂ needs it (kint = 0).
                gauss_generic: gauss_opts.is_some() && alpha > 1.0 && gauss_beta(alpha).0 == 0,
            },
            families,
        )?;
        for k in [
            "attn_entmax_scores",
            "attn_entmax_filter",
            "attn_entmax_values",
            "attn_softmax",
            "cert_bounds",
        ] {
            module.set_max_dynamic_smem(k, DYN_LIMIT)?;
        }
        // The tail's limit is the largest any plan gives it: the attribute belongs to the
        // module, which every plan of the process with the same shape shares, so a plan
        // must never lower it under another's launches.
        module.set_max_dynamic_smem("attn_entmax_tail", SOLVE_DYN_MAX)?;
        module.set_max_dynamic_smem("attn_entmax_tail15", SOLVE_DYN_MAX)?;
        module.set_max_dynamic_smem("attn_entmax_tail15_lean", SOLVE_DYN_MAX)?;
        // `ENTMAXKV_SOLVE_DYN_KB` (development knob, default SCORES_DYN): the tail's shared
        // memory for candidates, 8 bytes each; more are streamed from the chunk lists.
        let solve_dyn_knob = (knob("ENTMAXKV_SOLVE_DYN_KB", SCORES_DYN / 1024) * 1024)
            .clamp(16 * 1024, SOLVE_DYN_MAX);

        // Launch shapes.
        let lanes = (d * kv_size / 16).next_power_of_two().min(32);
        let red_floats = (BLOCK as usize / lanes) * d;
        let ppc_lim = (32768 / (tg * ps * 4)).min(128);
        if ppc_lim == 0 {
            return Err(Error::Unsupported {
                op: OP,
                what: format!("page_size {ps} with {tg} heads per task (a chunk needs one page)"),
            });
        }
        let need = max_pages.div_ceil(ppc_lim);
        if need > NCH_MAX {
            return Err(Error::Unsupported {
                op: OP,
                what: format!(
                    "{max_tokens} tokens per sequence need {need} chunks per task (at most {NCH_MAX})"
                ),
            });
        }
        // α = 1.5 with the exact τ: the kernels compiled for it (GpuDecoder::fused_kernel,
        // GpuDecoder::tail_kernel).
        let spec15 = !softmax
            && alpha_code(alpha) == 15
            && cfg.tau_mode == TauMode::Exact
            && knob("ENTMAXKV_TAIL_SPEC", 1) != 0;
        // One resident wave of attention CTAs when the context is short; more chunks only
        // when a chunk would exceed its shared-memory page budget.
        let (main_kernel, main_smem) = if softmax {
            ("attn_softmax", (tg * ppc_lim * ps + red_floats) * 4)
        } else if fused_gauss {
            module.set_max_dynamic_smem("gauss_fused_scores", DYN_LIMIT)?;
            module.set_max_dynamic_smem("gauss_fused_scores15", DYN_LIMIT)?;
            // The grid is sized by the general kernel's occupancy even where the one for
            // α = 1.5 runs: that one needs fewer registers (64 against 124), and the wider
            // wave it would allow was slower at 64K (session 15 run 1).
            (
                "gauss_fused_scores",
                (tg * ppc_lim * ps).max(tg * d + 2 * tg * PPC_CAP) * 4,
            )
        } else {
            ("attn_entmax_scores", (tg * ppc_lim * ps + red_floats) * 4)
        };
        let occ = module.occupancy(main_kernel, BLOCK, main_smem)?;
        // `ENTMAXKV_WAVES` (default 1) resident waves of chunks, for experiments.
        let waves = knob("ENTMAXKV_WAVES", 1).clamp(1, 16);
        let target = waves * occ * gpu.info().sm_count;
        // Fused, each task also has its moment CTAs, one per `ENTMAXKV_GAUSS_FUSED_PPB`
        // (default 128) closed pages. `ENTMAXKV_GAUSS_FUSED_WAVE`: 1 (default) one wave
        // holds them and the chunks, 2 one wave of chunks besides them, 0 the attention's
        // chunks (for comparison).
        let fused_ppb = knob("ENTMAXKV_GAUSS_FUSED_PPB", 128).clamp(16, PPC_CAP);
        let nmom = (max_pages.saturating_sub(1)).max(1).div_ceil(fused_ppb);
        let per_task = (target / tasks).max(1);
        // Chunks per task that fill one resident wave of CTAs.
        let wave_chunks = target.div_ceil(tasks).max(1);
        let nch = match (fused_gauss, knob("ENTMAXKV_GAUSS_FUSED_WAVE", 1)) {
            (true, 1) => need.max(per_task.saturating_sub(nmom).max(1)),
            (true, 2) => need.max(per_task),
            _ => need.max(wave_chunks),
        }
        .min(max_pages)
        .min(NCH_MAX);
        let ppc_max = max_pages.div_ceil(nch);
        debug_assert!(ppc_max <= PPC_CAP && ppc_max <= ppc_lim);
        let caprows = ppc_max * ps;
        let dyn_scores = tg * caprows * 4;
        // cert_bounds holds lower and upper ends.
        let dyn_cert = 2 * dyn_scores;
        let dyn_cands = solve_dyn_knob.max(red_floats * 4);
        let cap = dyn_cands / 8;
        // Where every list is short enough that all its survivors fit the tail's shared
        // memory, the tail gathers V for any support itself (its support list after the
        // survivors, 8 bytes a token) and `attn_entmax_values` is not launched: launched,
        // it costs 1–2 µs a step even when it exits at once (session 12 run 7: dense entmax
        // 32K 0.0402 → 0.0381 ms, top-k 1/8 0.0527 → 0.0515, certified 0.0621 → 0.0610).
        // `ENTMAXKV_V_IN_TAIL=0` keeps the launch.
        let list_tokens = match budget {
            Some(b) => (b.pages(max_pages - 1, ps) + 1) * ps,
            None => max_pages * ps,
        };
        let v_in_tail = !softmax
            && list_tokens <= cap
            && dyn_cands + 8 * list_tokens <= SOLVE_DYN_MAX
            && knob("ENTMAXKV_V_IN_TAIL", 1) != 0;
        let dyn_solve = dyn_cands + if v_in_tail { 8 * list_tokens } else { 0 };
        let dyn_values = (2 * caprows + red_floats) * 4;
        let dyn_softmax = (tg * caprows + red_floats).max(nch) * 4;
        for (what, bytes) in [
            ("scores", dyn_scores),
            ("certificate bounds", if certified { dyn_cert } else { 0 }),
            ("solve", dyn_solve),
            ("values", dyn_values),
            ("softmax", dyn_softmax),
        ] {
            let limit = if what == "solve" {
                SOLVE_DYN_MAX.max(DYN_LIMIT)
            } else {
                DYN_LIMIT
            };
            if bytes > limit {
                return Err(Error::Unsupported {
                    op: OP,
                    what: format!(
                        "the {what} kernel would need {bytes} bytes of shared memory (page_size {ps})"
                    ),
                });
            }
        }

        let stream = cache.stream().clone();
        let rows: Vec<i32> = rows_host.iter().map(|&r| r as i32).collect();
        let rows_dev = gpu.upload(&rows)?;
        let q = gpu.zeros::<f32>(batch * heads * d)?;
        let out = gpu.zeros::<f32>(batch * heads * d)?;
        let slopes = match &cfg.attention.alibi_slopes {
            Some(s) => Some(gpu.upload(s)?),
            None => None,
        };
        let tau = gpu.zeros::<f64>(batch * heads)?;
        let support = gpu.zeros::<i32>(batch * heads)?;
        let status = gpu.zeros::<u32>(2)?;
        let slot_n = tasks * nch * tg;
        let mut work: Vec<DevBuf<u8>> = Vec::new();
        let mut alloc = |bytes: usize, zero: bool| -> Result<u64> {
            let b = if zero {
                gpu.zeros::<u8>(bytes)?
            } else {
                gpu.alloc::<u8>(bytes)?
            };
            let p = b.ptr();
            work.push(b);
            Ok(p)
        };
        let cand_n = if softmax { 1 } else { slot_n * caprows };
        let bufs = cache.bufs.clone();
        let topk = match budget {
            None => None,
            Some(b) => {
                let (mode, frac, tokens) = match b {
                    Budget::Fraction(f) => (0, f, 0),
                    Budget::Tokens(t) => (1, 0.0, t.min(i32::MAX as usize) as i32),
                };
                // Rows padded to 16 bytes: topk_select reads keys as 4-wide vectors.
                let stride = max_pages.next_multiple_of(4);
                let keys = gpu.alloc::<u32>(tasks * stride)?;
                let lists = gpu.alloc::<u32>(tasks * stride)?;
                let counts = gpu.zeros::<i32>(tasks)?;
                let per_b = ((8 * gpu.info().sm_count).div_ceil(batch * hkv)).max(1);
                let ppb = max_pages.div_ceil(per_b).clamp(16, 256);
                let params = TopkParams {
                    kmin: bufs.stats[0].ptr(),
                    kmax: bufs.stats[1].ptr(),
                    block_tables: bufs.block_tables.ptr(),
                    seq_lens: bufs.lens.ptr(),
                    rows: rows_dev.ptr(),
                    q: q.ptr(),
                    slopes: slopes.as_ref().map_or(0, |s| s.ptr()),
                    keys: keys.ptr(),
                    lists: lists.ptr(),
                    list_counts: counts.ptr(),
                    budget_frac: frac,
                    scale: cfg.attention.scale_for(d),
                    budget_mode: mode,
                    budget_tokens: tokens,
                    num_heads: heads as i32,
                    num_kv_heads: hkv as i32,
                    group: group as i32,
                    per_head: (tg == 1) as i32,
                    page_size: ps as i32,
                    bt_stride: bufs.bt_stride as i32,
                    list_stride: stride as i32,
                    ppb: ppb as i32,
                    has_alibi: slopes.is_some() as i32,
                    sinks: cfg.sink_pages.min(i32::MAX as usize) as i32,
                    recent: cfg.recent_pages.min(i32::MAX as usize) as i32,
                    sketch: bufs.sketch.ptr(),
                    scoring: match cfg.topk_scoring {
                        TopkScoring::Box => 0,
                        TopkScoring::Sketch => 1,
                        TopkScoring::SketchMass => 2,
                    },
                    sketch_bits: ccfg.sketch_bits as i32,
                    sketch_rb: sketch::row_bytes(d, ccfg.sketch_bits) as i32,
                    // gridDim.y holds the page ranges then, at most 65535.
                    kv_fast: (knob("ENTMAXKV_KV_FAST", 1) != 0 && max_pages.div_ceil(ppb) <= 65535)
                        as i32,
                };
                Some(TopkPlan {
                    params,
                    grid_x: max_pages.div_ceil(ppb) as u32,
                    smem: group * d * 4,
                    keys,
                    lists,
                    counts,
                })
            }
        };
        let gauss = match &gauss_opts {
            None => None,
            Some(o) => {
                let stride = max_pages.next_multiple_of(4);
                let mu = gpu.alloc::<f32>(batch * heads * stride)?;
                let var = gpu.alloc::<f32>(batch * heads * stride)?;
                let lists = gpu.alloc::<u32>(tasks * stride)?;
                let counts = gpu.zeros::<i32>(tasks)?;
                let tau_hat = gpu.zeros::<f64>(batch * heads)?;
                // `ENTMAXKV_STAT_CTAS` (development, default 8): gauss_moments CTAs per SM
                // the page ranges aim at (at most 256 pages a CTA).
                let stat_ctas = knob("ENTMAXKV_STAT_CTAS", 8).clamp(1, 64);
                let per_b = ((stat_ctas * gpu.info().sm_count).div_ceil(batch * hkv)).max(1);
                let ppb = max_pages.div_ceil(per_b).clamp(16, 256);
                let n_part = max_pages.div_ceil(ppb);
                let nsel = max_pages.div_ceil(GAUSS_SPC);
                let mut scratch = Vec::new();
                let mut salloc = |bytes: usize| -> Result<u64> {
                    let b = gpu.zeros::<u8>(bytes)?;
                    let p = b.ptr();
                    scratch.push(b);
                    Ok(p)
                };
                let (zp_low, zp_high) = match o.max_quantile {
                    Some(q) => {
                        let z = page_max_quantile_z(q, ps)?;
                        (z, z)
                    }
                    None => (
                        page_max_quantile_z(0.99, ps)?,
                        page_max_quantile_z(0.995, ps)?,
                    ),
                };
                let (kint, beta) = gauss_beta(alpha);
                // τ̂ by the tabulated standardised root (any β; `ENTMAXKV_TSTAR=0`: Newton
                // on the device, for comparison). Softmax modes solve no τ̂. A β whose
                // table cannot be built (none known) keeps Newton. Both criteria: session
                // 13's unfinished `gaussian_robust_matches_cpu` was the JIT of its modules
                // (session 14 run 1: it passed with the table in 126 s, 17–32 s for each new
                // configuration); the robust step gains 5–6 µs (run 2: 32K 0.1265 → 0.1199 ms,
                // 1M 0.7730 → 0.7680).
                let use_tstar = alpha > 1.0 && knob("ENTMAXKV_TSTAR", 1) != 0;
                let tstar = match use_tstar.then(|| TstarTable::build(beta)) {
                    Some(Ok(tab)) => {
                        let flat: Vec<f64> = tab.nodes.iter().flatten().copied().collect();
                        Some((gpu.upload(&flat)?, tab))
                    }
                    _ => None,
                };
                let params = GaussParams {
                    smean: bufs.stats[2].ptr(),
                    sstd: bufs.stats[3].ptr(),
                    block_tables: bufs.block_tables.ptr(),
                    seq_lens: bufs.lens.ptr(),
                    rows: rows_dev.ptr(),
                    q: q.ptr(),
                    mu: mu.ptr(),
                    var: var.ptr(),
                    lists: lists.ptr(),
                    list_counts: counts.ptr(),
                    tau_hat: tau_hat.ptr(),
                    part: salloc(batch * heads * n_part * 4 * 8)?,
                    chunk_cnt: salloc(tasks * nsel * 4)?,
                    chunk_cap: salloc(tasks * nsel * 8 * 8)?,
                    head_floor: salloc(batch * heads * 8)?,
                    head_z: salloc(batch * heads * 8)?,
                    task_bad: salloc(tasks * 4)?,
                    slopes: slopes.as_ref().map_or(0, |s| s.ptr()),
                    tau_mix: salloc(batch * heads * 8)?,
                    tstar: tstar.as_ref().map_or(0, |t| t.0.ptr()),
                    a: alpha - 1.0,
                    beta,
                    zp_low,
                    zp_high,
                    z_clamp: page_max_quantile_z(o.tau_clamp_page_max_quantile, ps)?,
                    excess_frac: o.threshold_excess_margin_fraction,
                    clamp_scale: o.tau_clamp_sigma_scale,
                    smz: o.safety_margin_z.unwrap_or(-1.0),
                    tstar_c0: tstar.as_ref().map_or(0.0, |t| t.1.c0),
                    tstar_inv_h: tstar.as_ref().map_or(0.0, |t| 1.0 / t.1.h),
                    scale: cfg.attention.scale_for(d),
                    kint,
                    clamp_tau: o.clamp_tau as i32,
                    num_heads: heads as i32,
                    num_kv_heads: hkv as i32,
                    group: group as i32,
                    tg: tg as i32,
                    page_size: ps as i32,
                    bt_stride: bufs.bt_stride as i32,
                    list_stride: stride as i32,
                    ws_stride: stride as i32,
                    ppb: ppb as i32,
                    n_part: n_part as i32,
                    spc: GAUSS_SPC as i32,
                    nsel: nsel as i32,
                    has_alibi: slopes.is_some() as i32,
                    within_page: o.alibi_within_page as i32,
                    kv_fast: (knob("ENTMAXKV_KV_FAST", 1) != 0 && n_part <= 65535) as i32,
                    robust: (o.criterion == Criterion::Robust) as i32,
                    tstar_n: tstar.as_ref().map_or(0, |t| t.1.nodes.len() as i32),
                };
                Some(GaussPlan {
                    params,
                    grid_x: n_part as u32,
                    smem: group * (d + 2 * ppb) * 4,
                    mu,
                    var,
                    lists,
                    counts,
                    tau_hat,
                    scratch,
                    tstar: tstar.map(|t| t.0),
                })
            }
        };
        let robust = match (&gauss, &gauss_opts) {
            (Some(g), Some(o)) if o.criterion == Criterion::Robust => {
                let stride = g.params.ws_stride as usize;
                let bh = batch * heads;
                let tok = bh * stride * ps;
                let mut rbufs = Vec::new();
                let mut ralloc = |bytes: usize| -> Result<u64> {
                    // Zeroed once: every value a step reads is written earlier in that step.
                    let b = gpu.zeros::<u8>(bytes.max(1))?;
                    let p = b.ptr();
                    rbufs.push(b);
                    Ok(p)
                };
                let bounded = gpu.zeros::<i32>(tasks)?;
                // Chunks of BLOCK closed pages (kernels/robust.cu RB_CH) of the τ_lb
                // compaction (rob_cmax/rob_ccnt/rob_cpack) and of the kept list (rob_pcnt/rob_pack).
                let nch_stride = max_pages.div_ceil(BLOCK as usize);
                let (gam, lv, qmax, inv_qmax, inv_levels) =
                    crate::certificate::bounds::device_consts(d, ccfg.sketch_bits);
                let sm = alpha == 1.0;
                let params = RobustParams {
                    smin: bufs.stats[0].ptr(),
                    smax: bufs.stats[1].ptr(),
                    sketch: bufs.sketch.ptr(),
                    block_tables: bufs.block_tables.ptr(),
                    seq_lens: bufs.lens.ptr(),
                    rows: rows_dev.ptr(),
                    q: q.ptr(),
                    slopes: slopes.as_ref().map_or(0, |s| s.ptr()),
                    tau_hat: g.tau_hat.ptr(),
                    task_bad: g.params.task_bad,
                    box_hi: ralloc(bh * stride * 8)?,
                    best: ralloc(bh * stride * 8)?,
                    lmax: ralloc(bh * stride * 4)?,
                    mass: ralloc(bh * stride * 8)?,
                    lows: ralloc(tok * 4)?,
                    cand: ralloc(tok * 4)?,
                    want: ralloc(tasks * stride * 4)?,
                    thr: ralloc(bh * 8)?,
                    trust: ralloc(bh * 4)?,
                    lists: g.lists.ptr(),
                    list_counts: g.counts.ptr(),
                    bounded: bounded.ptr(),
                    cmax: ralloc(bh * nch_stride * 4)?,
                    ccnt: ralloc(bh * nch_stride * 4)?,
                    pcnt: ralloc(tasks * 2 * nch_stride * 4)?,
                    a: alpha - 1.0,
                    // Softmax mode: no β (the kernels' entmax solve and mass do not run).
                    beta: if sm { 1.0 } else { 1.0 / (alpha - 1.0) },
                    gam,
                    lv,
                    drop_mass: crate::selection::gaussian::robust::SOFTMAX_DROP_MASS,
                    scale: cfg.attention.scale_for(d),
                    inv_levels,
                    qmax,
                    inv_qmax,
                    kint: g.params.kint,
                    num_heads: heads as i32,
                    num_kv_heads: hkv as i32,
                    group: group as i32,
                    tg: tg as i32,
                    page_size: ps as i32,
                    bt_stride: bufs.bt_stride as i32,
                    list_stride: g.params.list_stride,
                    ws_stride: stride as i32,
                    sketch_bits: ccfg.sketch_bits as i32,
                    sketch_rb: sketch::row_bytes(d, ccfg.sketch_bits) as i32,
                    sinks: o.sink_pages.min(i32::MAX as usize) as i32,
                    has_alibi: slopes.is_some() as i32,
                    nch_stride: nch_stride as i32,
                    softmax: sm as i32,
                    // `ENTMAXKV_ROB_HIST=0`: Newton from aM − 1 (for comparison).
                    hist_start: (knob("ENTMAXKV_ROB_HIST", 1) != 0) as i32,
                    // One query head per task (α > 1): rob_tok1 forms the box bound itself
                    // (its `want` test needs no other head's), so the rows are read once and
                    // rob_box does not run. `ENTMAXKV_ROB_FUSE=0` keeps the separate pass.
                    fuse_box: (!sm && tg == 1 && knob("ENTMAXKV_ROB_FUSE", 1) != 0) as i32,
                };
                let mut kernels: Vec<&'static str> = Vec::new();
                if sm {
                    // Softmax mode: no moments, no τ̂; the best boxes instead.
                    kernels.extend(["rob_box", "rob_bmax"]);
                } else {
                    // τ̂ (no counting in gauss_count), then the bound passes.
                    kernels.push("gauss_moments");
                    if slopes.is_some() {
                        kernels.push("gauss_mix");
                    }
                    kernels.push("gauss_count");
                    if params.fuse_box == 0 {
                        kernels.push("rob_box");
                    }
                }
                for k in [
                    "rob_tok1",
                    "rob_cmax1",
                    "rob_ccnt1",
                    "rob_cpack1",
                    "rob_solve1",
                ] {
                    // The softmax mode's chunk sums need no candidate counts.
                    if !(sm && k == "rob_ccnt1") {
                        kernels.push(k);
                    }
                }
                for k in [
                    "rob_tok2",
                    "rob_cmax2",
                    "rob_ccnt2",
                    "rob_cpack2",
                    "rob_solve2",
                ] {
                    if !(sm && k == "rob_ccnt2") {
                        kernels.push(k);
                    }
                }
                kernels.extend(["rob_pcnt", "rob_pack"]);
                Some(RobustPlan {
                    params,
                    kernels,
                    grid_x: (max_pages * tg).div_ceil(32) as u32,
                    bounded,
                    bufs: rbufs,
                })
            }
            _ => None,
        };
        // The attention reads every page when fused (the kept list is only reported).
        let (sel_lists, sel_counts, sel_stride) = match (&topk, &gauss) {
            (Some(t), _) => (t.lists.ptr(), t.counts.ptr(), t.params.list_stride),
            (_, Some(_)) if fused_gauss => (0, 0, 0),
            (_, Some(g)) => (g.lists.ptr(), g.counts.ptr(), g.params.list_stride),
            _ => (0, 0, 0),
        };
        let cert = if certified {
            Some(CertPlan {
                cand_u: alloc(cand_n * 4, false)?,
                cand_lpos: if slopes.is_some() {
                    alloc(cand_n * 4, false)?
                } else {
                    0
                },
                tau_lb: alloc(batch * heads * 8, true)?,
                gmag: alloc(tasks * tg * 4, true)?,
                gslack: alloc(tasks * tg * 4, true)?,
                cnt: gpu.zeros::<i32>(slot_n)?,
                pages: gpu.zeros::<i32>(slot_n)?,
                flag: gpu.zeros::<i32>(batch * heads)?,
                row_bytes: sketch::row_bytes(d, ccfg.sketch_bits),
                dyn_bytes: dyn_cert,
            })
        } else {
            None
        };
        let a = alpha - 1.0;
        let attn = AttnParams {
            k: bufs.k.ptr(),
            v: bufs.v.ptr(),
            block_tables: bufs.block_tables.ptr(),
            seq_lens: bufs.lens.ptr(),
            rows: rows_dev.ptr(),
            lists: sel_lists,
            list_counts: sel_counts,
            q: q.ptr(),
            slopes: slopes.as_ref().map_or(0, |s| s.ptr()),
            cand_s: alloc(cand_n * 4, false)?,
            cand_pos: alloc(cand_n * 4, false)?,
            cand_cnt: alloc(slot_n * 4, false)?,
            gmax: alloc(tasks * tg * 4, true)?,
            hist: alloc(tasks * tg * 256 * 4, true)?,
            // `ENTMAXKV_PROFILE_TAIL`: clocks of the tail's phases; `ENTMAXKV_PROFILE_SCORES`
            // (with a module built with `SCORES_PROF=1`): also four global-timer stamps per
            // K-pass CTA after them (development aids).
            prof: if std::env::var_os("ENTMAXKV_PROFILE_SCORES").is_some() {
                alloc((16 + 4 * tasks * nch) * 8, true)?
            } else if std::env::var_os("ENTMAXKV_PROFILE_TAIL").is_some() {
                alloc(16 * 8, true)?
            } else {
                0
            },
            counters: alloc(tasks * 4, true)?,
            vcounters: alloc(tasks * 4, true)?,
            vflag: alloc(batch * heads * 4, true)?,
            part_o: alloc(slot_n * d * 4, false)?,
            part_m: alloc(slot_n * 4, false)?,
            part_l: alloc(slot_n * 4, false)?,
            part_flag: alloc(slot_n * 4, false)?,
            head_m: alloc(batch * heads * 4, true)?,
            head_t: alloc(batch * heads * 4, true)?,
            head_inv: alloc(batch * heads * 4, true)?,
            tau: tau.ptr(),
            support: support.ptr(),
            out: out.ptr(),
            cand_u: cert.as_ref().map_or(0, |c| c.cand_u),
            cand_lpos: cert.as_ref().map_or(0, |c| c.cand_lpos),
            tau_lb: cert.as_ref().map_or(0, |c| c.tau_lb),
            gmag: cert.as_ref().map_or(0, |c| c.gmag),
            gslack: cert.as_ref().map_or(0, |c| c.gslack),
            cert_cnt: cert.as_ref().map_or(0, |c| c.cnt.ptr()),
            cert_pages: cert.as_ref().map_or(0, |c| c.pages.ptr()),
            cert_flag: cert.as_ref().map_or(0, |c| c.flag.ptr()),
            smin: bufs.stats[0].ptr(),
            smax: bufs.stats[1].ptr(),
            sketch: bufs.sketch.ptr(),
            // τ̂ for the fixed / corrected τ modes (Gaussian selection only; elsewhere there is
            // no τ̂ and τ is exact, as on the CPU).
            tau_hat: gauss.as_ref().map_or(0, |g| g.tau_hat.ptr()),
            status: status.ptr(),
            a_d: a,
            beta_d: if softmax { 1.0 } else { 1.0 / a },
            scale: cfg.attention.scale_for(d),
            a: a as f32,
            beta: if softmax { 1.0 } else { (1.0 / a) as f32 },
            alpha_code: alpha_code(alpha),
            num_heads: heads as i32,
            num_kv_heads: hkv as i32,
            group: group as i32,
            tasks_per_b: tasks_per_b as i32,
            page_size: ps as i32,
            bt_stride: bufs.bt_stride as i32,
            list_stride: sel_stride,
            nch: nch as i32,
            ppc_max: ppc_max as i32,
            cap: cap as i32,
            // `ENTMAXKV_SMALL_SUPPORT` overrides it for experiments (0: V always by
            // attn_entmax_values, over the chunks).
            small_support: if v_in_tail {
                list_tokens as i32
            } else {
                knob("ENTMAXKV_SMALL_SUPPORT", SMALL_SUPPORT).min(SMALL_SUPPORT) as i32
            },
            has_alibi: slopes.is_some() as i32,
            sketch_bits: ccfg.sketch_bits as i32,
            sketch_row_bytes: sketch::row_bytes(d, ccfg.sketch_bits) as i32,
            cert_phase: 0,
            tau_mode: match (cfg.tau_mode, gauss.is_some()) {
                (TauMode::Fixed, true) => 1,
                (TauMode::Corrected(_), true) => 2,
                _ => 0,
            },
            tau_iters: match cfg.tau_mode {
                TauMode::Corrected(n) => n.min(1000) as i32,
                _ => 0,
            },
            wave_chunks: wave_chunks as i32,
            // `ENTMAXKV_TAU_CLOSED=0`: Halley steps only (for comparison).
            tau_closed: (knob("ENTMAXKV_TAU_CLOSED", 1) != 0) as i32,
            // The lean path's passes walk every survivor (3–4 of them against the full
            // path's bracketed two), so it wins on short lists only: session 11 run 5 swept
            // the limit over 0 / 768 / 1024 / 1536 / 2048 (BENCHMARKS "GPU, session 11").
            // `ENTMAXKV_TAIL_LEAN=<n>` sets the longest list it takes (0: never).
            tail_lean: knob("ENTMAXKV_TAIL_LEAN", TAIL_LEAN_MAX).min(1 << 20) as i32,
            // `ENTMAXKV_LEAN_CLOSED=0`: Halley to convergence (for comparison).
            lean_closed: (knob("ENTMAXKV_LEAN_CLOSED", 1) != 0) as i32,
            // The scores pass follows a selection kernel (top-k, Gaussian, robust); dense
            // entmax launches it first, and the certified and fused steps do not launch it.
            // `ENTMAXKV_PRE_WAIT=0`: every read after the wait (for comparison).
            pre_wait: (topk.is_some() || gauss.is_some()) as i32
                * (knob("ENTMAXKV_PRE_WAIT", 1) != 0) as i32,
            // After a selection, with one head a task (the modules of 2–4 heads a task do
            // not compile the order in: attn.cu `cta_task_chunk`), where the grid is more
            // than one resident wave: within one wave the order decides no dispatch, and at
            // 128K it was 1% slower (session 21 run 1). `ENTMAXKV_CHUNK_MAJOR=0`: task-major
            // always (for comparison).
            chunk_major: (sel_lists != 0 && tg == 1 && nch > wave_chunks) as i32
                * (knob("ENTMAXKV_CHUNK_MAJOR", 1) != 0) as i32,
        };
        let fused = match &gauss {
            Some(g) if fused_gauss => {
                let keep_stride = max_pages.next_multiple_of(4);
                let params = FusedGaussParams {
                    a: attn,
                    g: g.params,
                    part: alloc(batch * heads * nmom * 4 * 8, true)?,
                    keep: alloc(tasks * keep_stride, true)?,
                    ccnt: alloc(tasks * nch * 4, true)?,
                    ccap: alloc(tasks * nch * tg * 8, true)?,
                    // The counters only grow (never reset between steps): zeroed once here.
                    arrived: alloc(tasks * 8, true)?,
                    ready: alloc(tasks * 8, true)?,
                    done: alloc(tasks * 8, true)?,
                    ticket: alloc(8, true)?,
                    prof: if attn.prof != 0 {
                        alloc(16 * 8, true)?
                    } else {
                        0
                    },
                    nmom: nmom as i32,
                    ppb: fused_ppb as i32,
                    keep_stride: keep_stride as i32,
                    pad_: 0,
                };
                // A chunk CTA's scores, or a moment CTA's queries and page moments.
                let dyn_scores = (tg * caprows).max(tg * d + tg * 2 * fused_ppb) * 4;
                if dyn_scores > DYN_LIMIT {
                    return Err(Error::Unsupported {
                        op: OP,
                        what: format!(
                            "the fused Gaussian kernel would need {dyn_scores} bytes of shared memory (page_size {ps})"
                        ),
                    });
                }
                Some(FusedPlan { params, dyn_scores })
            }
            _ => None,
        };
        // The certified strategy's τ_lb pass runs the filter and tail on the score bounds.
        let attn_cert = AttnParams {
            cert_phase: 1,
            ..attn
        };
        let pdl = gpu.info().cc.0 >= 9 && std::env::var_os("ENTMAXKV_NO_PDL").is_none();
        // At α < 1.5 the filter's survivors (scores within 1/(α−1) of the maximum) reach
        // tens of thousands at long contexts, which one tail CTA would walk (dev run 6:
        // 0.28 ms at 1M, α = 4/3); in the fixed and corrected τ modes every survivor counts.
        // At α = 1.5 a full K pass of 512K tokens or more gains from it too (dense entmax and
        // the certified strategy; same-run A/Bs: session 9 −2.6% / −3.3% dense entmax at 512K
        // / 1M, session 10 run 1 −2.2% / −2.6%; at 128K it costs 3–4%), not the short lists of
        // a selection (session 9: Gaussian +1%).
        let exact_tau = !softmax && attn.tau_mode == 0;
        let full_lists = budget.is_none() && gauss_opts.is_none();
        let refilter = match knob("ENTMAXKV_REFILTER", 1) {
            0 => false,
            2 => exact_tau,
            3 => exact_tau && alpha < 1.5,
            _ => exact_tau && (alpha < 1.5 || (full_lists && max_tokens >= 1 << 19)),
        };
        let (order_in, order_out) = (Event::new(&gpu)?, Event::new(&gpu)?);
        Ok(GpuDecoder {
            pdl,
            refilter,
            fused_kernel: if spec15 {
                "gauss_fused_scores15"
            } else {
                "gauss_fused_scores"
            },
            tail_kernel: match (spec15, v_in_tail && attn.tail_lean > 0) {
                (true, true) if knob("ENTMAXKV_TAIL_LEAN_KERNEL", 1) != 0 => {
                    "attn_entmax_tail15_lean"
                }
                (true, _) => "attn_entmax_tail15",
                _ => "attn_entmax_tail",
            },
            v_in_tail,
            gpu,
            stream,
            bufs,
            module,
            seqs: seqs.to_vec(),
            rows_host,
            max_tokens,
            heads,
            hkv,
            d,
            ps,
            kv_size,
            st_size,
            softmax,
            tg,
            tasks,
            nch,
            dyn_scores,
            dyn_solve,
            dyn_values,
            dyn_softmax,
            attn,
            attn_cert,
            topk,
            gauss,
            robust,
            cert,
            fused,
            _rows: rows_dev,
            q,
            out,
            _slopes: slopes,
            tau,
            support,
            status,
            work,
            graph: None,
            order_in,
            order_out,
            report: StepReport {
                heads: vec![HeadReport::default(); batch * heads],
                ..Default::default()
            },
            cfg,
        })
    }

    pub fn config(&self) -> &DecodeConfig {
        &self.cfg
    }
    pub fn batch(&self) -> usize {
        self.seqs.len()
    }
    /// The stream the step runs on (the cache's).
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
    /// Device bytes of the plan's workspaces.
    pub fn workspace_bytes(&self) -> usize {
        self.work.iter().map(|b| b.bytes()).sum::<usize>()
            + self
                .topk
                .as_ref()
                .map_or(0, |t| t.keys.bytes() + t.lists.bytes() + t.counts.bytes())
            + self.robust.as_ref().map_or(0, |r| {
                r.bounded.bytes() + r.bufs.iter().map(|b| b.bytes()).sum::<usize>()
            })
            + self.gauss.as_ref().map_or(0, |g| {
                g.mu.bytes()
                    + g.var.bytes()
                    + g.lists.bytes()
                    + g.counts.bytes()
                    + g.scratch.iter().map(|b| b.bytes()).sum::<usize>()
                    + g.tstar.as_ref().map_or(0, |t| t.bytes())
            })
    }

    /// The kept-slot lists and counts of the selection, if any: (lists, counts, stride).
    fn sel_lists(&self) -> Option<(&DevBuf<u32>, &DevBuf<i32>, usize)> {
        match (&self.topk, &self.gauss) {
            (Some(t), _) => Some((&t.lists, &t.counts, t.params.list_stride as usize)),
            (_, Some(g)) => Some((&g.lists, &g.counts, g.params.list_stride as usize)),
            _ => None,
        }
    }
    /// SM clocks at the phases of `attn_entmax_tail` (task 0, head 0) and (n_c, n_s,
    /// support, Halley iterations) of the last step, when `ENTMAXKV_PROFILE_TAIL` was set at
    /// plan time (development aid).
    pub fn tail_profile(&self) -> Result<Option<Vec<i64>>> {
        if self.attn.prof == 0 {
            return Ok(None);
        }
        let raw = self.read_prof("tail_profile", self.attn.prof, 0, 16)?;
        Ok(Some(raw.iter().map(|&x| x as i64).collect()))
    }

    /// Global-timer stamps (ns) of every `attn_entmax_scores` CTA that had pages in the
    /// last step: (start, pages loaded, K summed, end), in (task, chunk) order; when
    /// `ENTMAXKV_PROFILE_SCORES` was set at plan time and the module was built with
    /// `ENTMAXKV_DEFINES="SCORES_PROF=1"` (development aid; empty otherwise).
    pub fn scores_profile(&self) -> Result<Option<Vec<[u64; 4]>>> {
        if self.attn.prof == 0 || std::env::var_os("ENTMAXKV_PROFILE_SCORES").is_none() {
            return Ok(None);
        }
        let w = self.read_prof(
            "scores_profile",
            self.attn.prof,
            16,
            4 * self.tasks * self.nch,
        )?;
        Ok(Some(
            w.chunks_exact(4)
                .filter(|c| c[0] != 0 && c[3] != 0)
                .map(|c| [c[0], c[1], c[2], c[3]])
                .collect(),
        ))
    }

    /// `n` u64 words from word `at` of the development stamp buffer at `ptr` (one of `work`).
    fn read_prof(&self, op: &'static str, ptr: u64, at: usize, n: usize) -> Result<Vec<u64>> {
        let buf = self
            .work
            .iter()
            .find(|b| b.ptr() == ptr)
            .ok_or_else(|| Error::invalid(op, "prof", "?", "buffer not found"))?;
        let mut raw = vec![0u8; 8 * n];
        buf.read_at(&self.stream, 8 * at, &mut raw)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect())
    }

    /// Whether the plan fuses the Gaussian selection with the K pass (short caches,
    /// `kernels/gauss_fused.cu`).
    pub fn fused_gauss(&self) -> bool {
        self.fused.is_some()
    }

    /// Phase times (µs from the first CTA's start) of the last fused Gaussian step: the
    /// latest moment publish, solve end, chunk scores done, chunk wait done, chunk
    /// candidates out and kept list written, then the longest solve and merge (µs); when
    /// `ENTMAXKV_PROFILE_TAIL` was set at plan time (development aid).
    pub fn fused_profile(&self) -> Result<Option<Vec<f64>>> {
        let Some(f) = self.fused.as_ref().filter(|f| f.params.prof != 0) else {
            return Ok(None);
        };
        let t = self.read_prof("fused_profile", f.params.prof, 0, 16)?;
        let rel = |x: u64| (x as f64 - t[0] as f64) * 1e-3;
        Ok(Some(
            (1..7)
                .map(|i| rel(t[i]))
                .chain([t[7], t[9]].iter().map(|&x| x as f64 * 1e-3))
                .collect(),
        ))
    }

    /// Whether the attention's CTAs take their (task, chunk) chunk-major (one head a task
    /// after a selection, on a grid of more than one resident wave: attn.cu
    /// `cta_task_chunk`).
    pub fn chunk_major(&self) -> bool {
        self.attn.chunk_major != 0
    }

    /// Chunks per task and tasks: the attention grid.
    pub fn grid(&self) -> (usize, usize) {
        (self.nch, self.tasks)
    }

    /// Checks that `cache` is the planned one and every bound sequence fits the plan.
    fn check(&self, op: &'static str, cache: &DeviceKvCache) -> Result<()> {
        if !Arc::ptr_eq(&self.bufs, &cache.bufs) {
            return Err(Error::invalid(
                op,
                "cache",
                "?",
                "not the cache this decoder was planned on",
            ));
        }
        for (id, &row) in self.seqs.iter().zip(&self.rows_host) {
            if cache.seq_row(*id)? != row {
                return Err(Error::UnknownSequence { op, id: id.0 });
            }
            let len = cache.seq_len(*id)?;
            if len == 0 {
                return Err(Error::EmptySequence { op, id: id.0 });
            }
            if len > self.max_tokens {
                return Err(Error::invalid(
                    op,
                    "seqs",
                    id,
                    format!(
                        "holds {len} tokens, the plan was made for {}",
                        self.max_tokens
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Copies the queries `[B, H, D]` (f32, unscaled) to the device.
    pub fn set_query(&mut self, q: &[f32]) -> Result<()> {
        const OP: &str = "GpuDecoder::set_query";
        check_len(OP, "q", q.len(), &[self.seqs.len(), self.heads, self.d])?;
        check_finite(OP, "q", q)?;
        self.q.write_at(&self.stream, 0, q)
    }

    /// Fills the output with NaN (tests: every element must be written by a step).
    pub fn poison_output(&self) -> Result<()> {
        self.out.memset_async(&self.stream, 0xff)?;
        self.stream.sync()
    }

    /// Queues one stage of a step on the stream (asynchronous).
    pub fn enqueue_stage(&self, cache: &DeviceKvCache, stage: Stage) -> Result<()> {
        self.check("GpuDecoder::enqueue_stage", cache)?;
        self.launch_stage(stage)
    }

    /// The kernels of a stage, in launch order.
    fn kernels(&self, stage: Stage) -> &[&'static str] {
        match stage {
            Stage::Selection if self.topk.is_some() => &["topk_score", "topk_select"],
            Stage::Selection if self.fused.is_some() => {
                &["gauss_fused_scores", "attn_entmax_filter"]
            }
            // Robust criterion: the list its plan made.
            Stage::Selection if self.robust.is_some() => {
                &self.robust.as_ref().expect("robust plan").kernels
            }
            Stage::Selection if self.gauss.as_ref().is_some_and(|g| g.params.has_alibi != 0) => {
                &["gauss_moments", "gauss_mix", "gauss_count", "gauss_pack"]
            }
            Stage::Selection if self.gauss.is_some() => {
                &["gauss_moments", "gauss_count", "gauss_pack"]
            }
            Stage::Selection if self.cert.is_some() => {
                &["cert_bounds", "cert_filter", "cert_tau_lb", "cert_exact"]
            }
            Stage::Selection => &[],
            Stage::Attention if self.softmax => &["attn_softmax"],
            // The certified selection leaves exact scores of its candidates in the lists.
            Stage::Attention if self.cert.is_some() => &ATTN_ENTMAX[1..],
            // Fused: the selection stage scored and filtered every page.
            Stage::Attention if self.fused.is_some() => &ATTN_ENTMAX[2..],
            Stage::Attention => &ATTN_ENTMAX,
        }
    }

    /// The kernels of a stage this plan launches, in order: [`Self::kernels`] without the
    /// refilter where the plan does not run it.
    fn launched(&self, stage: Stage) -> impl Iterator<Item = &'static str> + '_ {
        self.kernels(stage)
            .iter()
            .copied()
            .filter(|&k| self.refilter || k != "attn_entmax_refilter")
            .filter(|&k| !self.v_in_tail || k != "attn_entmax_values")
    }

    /// Names of the kernels of a step, in launch order.
    pub fn kernel_names(&self) -> Vec<&'static str> {
        self.launched(Stage::Selection)
            .chain(self.launched(Stage::Attention))
            .collect()
    }

    fn launch_kernel(&self, name: &'static str) -> Result<()> {
        let m = &self.module;
        let s = &self.stream;
        let grid = (self.nch as u32, self.tasks as u32, 1);
        let grid8 = (self.nch.div_ceil(CPB) as u32, self.tasks as u32, 1);
        unsafe {
            match name {
                "topk_score" | "topk_select" => {
                    let t = self.topk.as_ref().expect("top-k plan");
                    if name == "topk_score" && t.params.scoring != 0 {
                        // Sketch page scores: the scaled queries, then a weight row per warp.
                        let g = stat_grid(t.grid_x, self.seqs.len() * self.hkv, t.params.kv_fast);
                        let smem = t.smem + (BLOCK as usize / 32) * self.d * 4;
                        launch_ex(
                            m.func("topk_sketch_score"),
                            g,
                            BLOCK,
                            smem,
                            s,
                            &t.params,
                            self.pdl,
                        )
                    } else if name == "topk_score" {
                        let g = stat_grid(t.grid_x, self.seqs.len() * self.hkv, t.params.kv_fast);
                        launch_ex(m.func(name), g, BLOCK, t.smem, s, &t.params, self.pdl)
                    } else {
                        let g = (self.tasks as u32, 1, 1);
                        launch_ex(m.func(name), g, SEL_THREADS, 0, s, &t.params, self.pdl)
                    }
                }
                "gauss_moments" | "gauss_mix" | "gauss_count" | "gauss_pack" => {
                    let t = self.gauss.as_ref().expect("Gaussian plan");
                    if name == "gauss_mix" {
                        let g = ((self.seqs.len() * self.heads) as u32, 1, 1);
                        launch_ex(m.func(name), g, BLOCK, 0, s, &t.params, self.pdl)
                    } else if name == "gauss_moments" {
                        let g = stat_grid(t.grid_x, self.seqs.len() * self.hkv, t.params.kv_fast);
                        launch_ex(m.func(name), g, BLOCK, t.smem, s, &t.params, self.pdl)
                    } else {
                        let g = (t.params.nsel as u32, self.tasks as u32, 1);
                        launch_ex(m.func(name), g, BLOCK, 0, s, &t.params, self.pdl)
                    }
                }
                "gauss_fused_scores" => {
                    let f = self.fused.as_ref().expect("fused plan");
                    // Per task its moment CTAs and one CTA per chunk, roles by start order.
                    let per_task = self.nch + f.params.nmom as usize;
                    let g = ((per_task * self.tasks) as u32, 1, 1);
                    launch_ex(
                        m.func(self.fused_kernel),
                        g,
                        BLOCK,
                        f.dyn_scores,
                        s,
                        &f.params,
                        self.pdl,
                    )
                }
                "rob_box" | "rob_bmax" | "rob_tok1" | "rob_tok2" | "rob_cmax1" | "rob_ccnt1"
                | "rob_cpack1" | "rob_solve1" | "rob_cmax2" | "rob_ccnt2" | "rob_cpack2"
                | "rob_solve2" | "rob_pcnt" | "rob_pack" => {
                    let r = self.robust.as_ref().expect("robust plan");
                    let nch = r.params.nch_stride as u32;
                    let g = match name {
                        // One (page, head) unit per 8 lanes.
                        "rob_box" | "rob_tok1" | "rob_tok2" => (r.grid_x, self.tasks as u32, 1),
                        // One CTA per chunk of BLOCK closed pages and head of a task.
                        "rob_cmax1" | "rob_ccnt1" | "rob_cpack1" | "rob_cmax2" | "rob_ccnt2"
                        | "rob_cpack2" => (nch, self.tasks as u32, self.tg as u32),
                        // One CTA per head of a task.
                        "rob_solve1" | "rob_solve2" => (self.tg as u32, self.tasks as u32, 1),
                        // One CTA per task (softmax mode).
                        "rob_bmax" => (1, self.tasks as u32, 1),
                        // rob_pcnt, rob_pack: one CTA per chunk of a task.
                        _ => (nch, self.tasks as u32, 1),
                    };
                    launch_ex(m.func(name), g, BLOCK, 0, s, &r.params, self.pdl)
                }
                "attn_softmax" => launch_ex(
                    m.func(name),
                    grid,
                    BLOCK,
                    self.dyn_softmax,
                    s,
                    &self.attn,
                    self.pdl,
                ),
                "attn_entmax_scores" => launch_ex(
                    m.func(name),
                    grid,
                    BLOCK,
                    self.dyn_scores,
                    s,
                    &self.attn,
                    self.pdl,
                ),
                "attn_entmax_tail" => {
                    let g = (self.tasks as u32, 1, 1);
                    launch_ex(
                        m.func(self.tail_kernel),
                        g,
                        BLOCK,
                        self.dyn_solve,
                        s,
                        &self.attn,
                        self.pdl,
                    )
                }
                "cert_bounds" => {
                    let c = self.cert.as_ref().expect("certified plan");
                    launch_ex(
                        m.func(name),
                        grid,
                        BLOCK,
                        c.dyn_bytes,
                        s,
                        &self.attn,
                        self.pdl,
                    )
                }
                // The filter and tail on the score bounds (cert_phase 1).
                "cert_filter" => launch_ex(
                    m.func("attn_entmax_filter"),
                    grid8,
                    BLOCK,
                    0,
                    s,
                    &self.attn_cert,
                    self.pdl,
                ),
                "cert_tau_lb" => {
                    let g = (self.tasks as u32, 1, 1);
                    let f = m.func("attn_entmax_tail");
                    launch_ex(f, g, BLOCK, self.dyn_solve, s, &self.attn_cert, self.pdl)
                }
                "cert_exact" => launch_ex(m.func(name), grid8, BLOCK, 0, s, &self.attn, self.pdl),
                // One warp per chunk, CPB chunks per CTA.
                "attn_entmax_filter" | "attn_entmax_refilter" => {
                    launch_ex(m.func(name), grid8, BLOCK, 0, s, &self.attn, self.pdl)
                }
                // CPB chunks per CTA.
                "attn_entmax_values" => launch_ex(
                    m.func(name),
                    grid8,
                    BLOCK,
                    self.dyn_values,
                    s,
                    &self.attn,
                    self.pdl,
                ),
                _ => unreachable!("unknown kernel {name}"),
            }
        }
    }

    fn launch_stage(&self, stage: Stage) -> Result<()> {
        self.gpu.bind()?;
        for k in self.launched(stage) {
            self.launch_kernel(k)?;
        }
        Ok(())
    }

    /// Queues a step with `events[i]` recorded before kernel `i` of [`Self::kernel_names`]
    /// and the last event after the last kernel (per-kernel timings; not for capture).
    pub fn enqueue_timed(&self, cache: &DeviceKvCache, events: &[Event]) -> Result<()> {
        self.check("GpuDecoder::enqueue_timed", cache)?;
        let names = self.kernel_names();
        if events.len() != names.len() + 1 {
            return Err(Error::Mismatch {
                op: "GpuDecoder::enqueue_timed",
                arg: "events.len()",
                got: events.len(),
                what: "kernels + 1",
                expected: names.len() + 1,
            });
        }
        self.gpu.bind()?;
        for (i, k) in names.iter().enumerate() {
            events[i].record(&self.stream)?;
            self.launch_kernel(k)?;
        }
        events[names.len()].record(&self.stream)
    }

    /// Queues a whole step (asynchronous).
    pub fn enqueue(&self, cache: &DeviceKvCache) -> Result<()> {
        self.check("GpuDecoder::enqueue", cache)?;
        self.launch_step(cache, cache.has_async_appends(), false)
    }

    /// The step's launches (the captured graph where `graph`), ordered on the device after
    /// the work queued on the cache's stream and before the cache's later work where
    /// `ordered` (events; the host does not wait).
    fn launch_step(&self, cache: &DeviceKvCache, ordered: bool, graph: bool) -> Result<()> {
        if ordered {
            self.order_in.record(cache.stream())?;
            self.stream.wait(&self.order_in)?;
        }
        match self.graph.as_ref().filter(|_| graph) {
            Some(g) => g.launch()?,
            None => {
                self.launch_stage(Stage::Selection)?;
                self.launch_stage(Stage::Attention)?;
            }
        }
        if ordered {
            self.order_out.record(&self.stream)?;
            cache.stream().wait(&self.order_out)?;
        }
        Ok(())
    }

    /// One step with its input and output on the device, for engines: the queries are read
    /// from [`Self::query_ptr`] and the output written to [`Self::output_ptr`], on
    /// [`Self::stream`]; the step runs after every append queued on the cache
    /// ([`DeviceKvCache::append_device`]) and before every later one, ordered on the device
    /// (the host does not wait). Replays the captured graph where there is one.
    pub fn step_async(&self, cache: &DeviceKvCache) -> Result<()> {
        self.check("GpuDecoder::step_async", cache)?;
        self.launch_step(cache, true, true)
    }

    /// Device address of the plan's query buffer, `[B, H, D]` f32 (unscaled), which every
    /// step reads: an engine writes its queries there (on [`Self::stream`], or ordered
    /// before the step by an event that stream waits for) instead of calling
    /// [`Self::set_query`]. Values written there are not checked for NaN/Inf.
    pub fn query_ptr(&self) -> u64 {
        self.q.ptr()
    }

    /// Device address of the plan's output buffer, `[B, H, D]` f32, written by every step
    /// (read it on [`Self::stream`] or after an event recorded there).
    pub fn output_ptr(&self) -> u64 {
        self.out.ptr()
    }

    /// Captures a step into a CUDA graph kept by the plan; [`Self::replay`] runs it.
    pub fn capture(&mut self, cache: &DeviceKvCache) -> Result<()> {
        self.check("GpuDecoder::capture", cache)?;
        self.graph = None;
        let g = Graph::capture(&self.stream, || {
            self.launch_stage(Stage::Selection)?;
            self.launch_stage(Stage::Attention)
        })?;
        self.graph = Some(g);
        Ok(())
    }

    /// Captures one stage into a separate graph (stage timings).
    pub fn capture_stage(&self, cache: &DeviceKvCache, stage: Stage) -> Result<Graph> {
        self.check("GpuDecoder::capture_stage", cache)?;
        Graph::capture(&self.stream, || self.launch_stage(stage))
    }

    /// Replays the captured step (asynchronous); plain launches if none was captured.
    /// After [`DeviceKvCache::append_device`] it is ordered on the device against the
    /// cache's stream, as [`Self::step_async`] is.
    pub fn replay(&self, cache: &DeviceKvCache) -> Result<()> {
        self.check("GpuDecoder::replay", cache)?;
        self.launch_step(cache, cache.has_async_appends(), true)
    }

    /// Waits for the queued work and copies the output `[B, H, D]` out; then reports, as
    /// [`Self::check_finite`] does, a score or output element that was not finite in the
    /// steps since the last check (the output is copied out all the same: such a head's
    /// output is NaN).
    pub fn read_output(&self, out: &mut [f32]) -> Result<()> {
        const OP: &str = "GpuDecoder::read_output";
        check_len(OP, "out", out.len(), &[self.seqs.len(), self.heads, self.d])?;
        self.out.read_at(&self.stream, 0, out)?;
        self.finite_status(OP)
    }

    /// Waits for the queued steps and reports whether any of them, since the last check,
    /// met a score that was not finite (q·k beyond f32's range, or a NaN/Inf key or value
    /// written by [`DeviceKvCache::append_device`], which is not checked on the host) or
    /// wrote an output element that was not finite: `Error::NonFinite` with `arg` "scores"
    /// (or "output" when only an output element was) and `index` the first such head,
    /// b·H + h. Clears the record. Such a head's output is NaN and its τ NaN, as the CPU
    /// pipeline returns `Error::NonFinite` for it; the other heads are unaffected, and the
    /// next step is not (the plan's running state is reset as on any step). For engines
    /// that run [`Self::step_async`] and read [`Self::output_ptr`] themselves;
    /// [`Self::read_output`] checks it too.
    pub fn check_finite(&self) -> Result<()> {
        self.finite_status("GpuDecoder::check_finite")
    }

    fn finite_status(&self, op: &'static str) -> Result<()> {
        let mut st = [0u32; 2];
        self.status.read_at(&self.stream, 0, &mut st)?;
        if st[0] == 0 {
            return Ok(());
        }
        self.status.write_at(&self.stream, 0, &[0u32; 2])?;
        Err(Error::NonFinite {
            op,
            arg: if st[0] & 1 != 0 { "scores" } else { "output" },
            index: !st[1] as usize,
            value: f64::NAN,
        })
    }

    /// The kept page slots of task `task` after a top-k step (token order, last page last);
    /// every slot for dense decode.
    pub fn kept_slots(&self, cache: &DeviceKvCache, task: usize) -> Result<Vec<u32>> {
        if task >= self.tasks {
            return Err(Error::invalid(
                "GpuDecoder::kept_slots",
                "task",
                task,
                "out of range",
            ));
        }
        match self.sel_lists() {
            None => {
                let b = task / (self.tasks / self.seqs.len());
                let n = cache.seq_len(self.seqs[b])?.div_ceil(self.ps);
                Ok((0..n as u32).collect())
            }
            Some((lists, counts, stride)) => {
                let mut c = [0i32];
                counts.read_at(&self.stream, task, &mut c)?;
                let mut v = vec![0u32; c[0].max(0) as usize];
                lists.read_at(&self.stream, task * stride, &mut v)?;
                Ok(v)
            }
        }
    }

    /// Tasks of a step: `(b, first query head, heads)`; a task's pages are shared by its heads.
    pub fn task_heads(&self, task: usize) -> (usize, usize, usize) {
        let per_b = self.tasks / self.seqs.len();
        (task / per_b, (task % per_b) * self.tg, self.tg)
    }

    /// Reads τ, support and pages kept of the last step (waits for it).
    pub fn report(&mut self, cache: &DeviceKvCache) -> Result<&StepReport> {
        let bh = self.seqs.len() * self.heads;
        let mut tau = vec![0.0f64; bh];
        let mut sup = vec![0i32; bh];
        self.tau.read_at(&self.stream, 0, &mut tau)?;
        self.support.read_at(&self.stream, 0, &mut sup)?;
        let mut counts = vec![0i32; self.tasks];
        if let Some((_, c, _)) = self.sel_lists() {
            c.read_at(&self.stream, 0, &mut counts)?;
        }
        let mut tau_hat = vec![f64::NAN; bh];
        if let Some(g) = &self.gauss {
            g.tau_hat.read_at(&self.stream, 0, &mut tau_hat)?;
        }
        // Certified: per-head candidates and pages (summed over chunks), certificate flags.
        let mut cert_heads: Option<(Vec<u64>, Vec<u64>, Vec<i32>)> = None;
        if let Some(c) = &self.cert {
            let mut cnt = vec![0i32; self.tasks * self.nch * self.tg];
            let mut pages = vec![0i32; cnt.len()];
            let mut flag = vec![0i32; bh];
            c.cnt.read_at(&self.stream, 0, &mut cnt)?;
            c.pages.read_at(&self.stream, 0, &mut pages)?;
            c.flag.read_at(&self.stream, 0, &mut flag)?;
            let (mut hc, mut hp) = (vec![0u64; bh], vec![0u64; bh]);
            for task in 0..self.tasks {
                let (b, h0, tg) = self.task_heads(task);
                for ci in 0..self.nch {
                    for g in 0..tg {
                        let i = (task * self.nch + ci) * self.tg + g;
                        hc[b * self.heads + h0 + g] += cnt[i].max(0) as u64;
                        hp[b * self.heads + h0 + g] += pages[i].max(0) as u64;
                    }
                }
            }
            cert_heads = Some((hc, hp, flag));
        }
        let selected = self.sel_lists().is_some();
        let per_b = self.tasks / self.seqs.len();
        let mut bytes = ByteCount::default();
        let (d, ps) = (self.d as u64, self.ps);
        for task in 0..self.tasks {
            let b = task / per_b;
            let len = cache.seq_len(self.seqs[b])?;
            let npages = len.div_ceil(ps);
            let kept = if selected {
                counts[task] as usize
            } else {
                npages
            };
            let last = len - (npages - 1) * ps;
            let row = d * self.kv_size as u64;
            if let Some(c) = &self.cert {
                // Statistics and sketch of the closed pages once per task, the last page's K
                // in the bound pass; the candidates' K is counted per head below.
                let closed = (npages - 1) as u64;
                bytes.meta += closed * 2 * d * self.st_size as u64;
                bytes.sketch += closed * (ps * c.row_bytes) as u64;
                bytes.k += last as u64 * row;
            } else {
                // Fused with the K pass, the step reads every page's K.
                let k_pages = if self.fused.is_some() { npages } else { kept };
                let tokens = ((k_pages.max(1) - 1) * ps + last) as u64;
                bytes.k += tokens * row;
                if self.softmax {
                    bytes.v += tokens * row;
                }
            }
            let h0 = (task % per_b) * self.tg;
            for g in 0..self.tg {
                let i = b * self.heads + h0 + g;
                let (pages_kept, certified, candidates) = match &cert_heads {
                    Some((hc, hp, flag)) => {
                        bytes.k += hc[i] * row;
                        (hp[i] as u32, Some(flag[i] == 1), hc[i] as u32)
                    }
                    None => (kept as u32, None, 0),
                };
                self.report.heads[i] = HeadReport {
                    tau: tau[i],
                    tau_hat: tau_hat[i],
                    support: sup[i] as u32,
                    pages_kept,
                    pages_total: npages as u32,
                    certified,
                    candidates,
                    mass_bound: if certified == Some(true) {
                        0.0
                    } else {
                        f64::NAN
                    },
                };
                if !self.softmax {
                    bytes.v += sup[i] as u64 * row;
                }
            }
        }
        if let Some(t) = &self.topk {
            // The bound reads each closed page's min and max once per (sequence, kv head).
            for &id in &self.seqs {
                let len = cache.seq_len(id)?;
                let closed = len.div_ceil(ps).saturating_sub(1);
                let k = match (t.params.budget_mode, t.params.budget_frac) {
                    (1, _) => ((t.params.budget_tokens as usize) / ps).min(closed),
                    (_, f) => Budget::Fraction(f).pages(closed, ps),
                };
                if k < closed {
                    bytes.meta += (closed * 2 * self.d * self.st_size * self.hkv) as u64;
                    // Sketch page scores also read every closed page's sketch rows.
                    if t.params.scoring != 0 {
                        bytes.sketch +=
                            (closed * ps * t.params.sketch_rb as usize * self.hkv) as u64;
                    }
                }
            }
        }
        let robust_softmax = self.robust.as_ref().is_some_and(|r| r.params.softmax != 0);
        if self.gauss.is_some() && !robust_softmax {
            // The moments read each closed page's mean and std once per (sequence, kv head).
            for &id in &self.seqs {
                let closed = cache.seq_len(id)?.div_ceil(ps).saturating_sub(1);
                bytes.meta += (closed * 2 * self.d * self.st_size * self.hkv) as u64;
            }
        }
        if let Some(r) = &self.robust {
            // The box pass reads every closed page's min and max rows once per task (as the
            // CPU's per-task count), the token passes the sketch of the pages they bound.
            let mut nb = vec![0i32; self.tasks];
            r.bounded.read_at(&self.stream, 0, &mut nb)?;
            let rb = sketch::row_bytes(self.d, r.params.sketch_bits as u32);
            for (task, &n) in nb.iter().enumerate() {
                let closed = cache
                    .seq_len(self.seqs[task / per_b])?
                    .div_ceil(ps)
                    .saturating_sub(1);
                bytes.meta += (closed * 2 * self.d * self.st_size) as u64;
                bytes.sketch += (n.max(0) as usize * ps * rb) as u64;
            }
        }
        self.report.bytes = bytes;
        Ok(&self.report)
    }

    /// One step: queries in, output out, report back (replays the graph if captured).
    pub fn step(
        &mut self,
        cache: &DeviceKvCache,
        q: &[f32],
        out: &mut [f32],
    ) -> Result<&StepReport> {
        self.set_query(q)?;
        self.replay(cache)?;
        self.read_output(out)?;
        self.report(cache)
    }
}
