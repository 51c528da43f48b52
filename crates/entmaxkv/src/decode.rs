//! The decode step: selection → τ → attention (→ certificate), planned once, run many.
//!
//! A [`Decoder`] is made once per batch shape: it sizes every workspace for the longest
//! sequence it will see, so [`Decoder::step`] allocates nothing. A step runs in phases,
//! each rayon-parallel over tasks and timed by wall clock: selection (page metadata only),
//! attention (kept K once, τ on cached scores, V only for the support), and optionally a
//! certificate ([`crate::certificate`]) that proves per head whether the kept pages hold the
//! whole dense support.
//!
//! [`Method::Certified`] is exact dense α-entmax (α > 1) at a fraction of the bytes: its
//! selection phase bounds every token's score from the key sketch and picks the tokens that
//! can reach the threshold; its attention phase reads K of those tokens only and V of the
//! support only ([`crate::certificate::certified_select`], `certified_attend`).
//!
//! Page-major paths: dense decode walks each sequence's pages once for all kv heads
//! ([`crate::attention::stream`]); top-k computes every task's page bounds in one walk over
//! the statistics ([`crate::selection::topk::seq_page_bounds`]), Gaussian selection with
//! the original criterion every query head's page moments
//! ([`crate::selection::gaussian::model::seq_page_moments`]), and both, with one task per
//! kv head, attend in one walk over the union of the kept pages
//! ([`crate::attention::sparse`]); `certified` runs its sketch bound pass for all tasks of
//! a sequence in one walk over the pages, and the robust Gaussian criterion (α ≠ 1) its
//! page moments and its fused box/token pass (`selection::gaussian::robust::seq_begin`,
//! `moments_seq`, `pass_seq`). Each gives the per-task path's pages, τ and support (the
//! bound passes and moments bit for bit), tested in `tests/sparse_union.rs`,
//! `tests/gaussian_page_major.rs` and the robust module.

use crate::attention::cpu::{
    attend_group, GroupTask, HeadResult, PoolGeometry, TauMode, Workspace,
};
use crate::attention::sparse::{attend_sparse_seq, SparseWorkspace};
use crate::attention::stream::{attend_dense_seq, StreamWorkspace};
use crate::attention::{validate_batch, AttentionParams};
use crate::cache::{PagedKvCache, SeqId};
use crate::certificate::{
    self, certified_attend, CertBytes, CertificateLevel, CertifiedWorkspace, CheckScratch,
    CheckTask, HeadCertificate,
};
use crate::error::{Error, Result};
use crate::selection::gaussian::{self, model, robust, Criterion, GaussianOpts};
use crate::selection::topk::{self, Budget, TaskHeads, TopkScoring};
use crate::selection::{GqaMode, SelectScratch, Selection, SelectionContext};
use crate::with_kv;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Which pages a step reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Every page (dense decode).
    Dense,
    /// Quest-style top-k by the key-range bound within a budget.
    TopK(Budget),
    /// Gaussian-aware adaptive selection.
    Gaussian(GaussianOpts),
    /// Exact dense α-entmax (α > 1) from the key sketch: K only for the tokens whose
    /// score bound can reach a proven lower bound of τ, V only for the support. τ is always
    /// solved exactly (the τ mode is ignored); α = 1 is [`Error::Unsupported`].
    Certified,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::Dense => "dense".into(),
            Method::TopK(Budget::Tokens(t)) => format!("topk-{t}t"),
            Method::TopK(Budget::Fraction(f)) => format!("topk-{f}"),
            Method::Gaussian(_) => "gaussian".into(),
            Method::Certified => "certified".into(),
        }
    }
}

/// Everything a decoder needs besides the cache.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeConfig {
    pub attention: AttentionParams,
    pub method: Method,
    pub tau_mode: TauMode,
    pub gqa: GqaMode,
    /// Certificate run after attention (methods other than `certified`; default off).
    #[serde(default)]
    pub certificate: CertificateLevel,
    /// Top-k only: the first `sink_pages` pages are always kept (inside the budget), as the
    /// attention-sink tokens at the start of a sequence usually matter (StreamingLLM). 0 =
    /// Quest's plain ranking (the default and the original's behaviour).
    #[serde(default)]
    pub sink_pages: usize,
    /// Top-k only: the last `recent_pages` closed pages (the local window before the
    /// always-kept last page) are always kept, inside the budget. 0 = plain ranking.
    #[serde(default)]
    pub recent_pages: usize,
    /// Top-k only: how pages are scored (Quest's key-range bound by default).
    #[serde(default)]
    pub topk_scoring: TopkScoring,
}

impl DecodeConfig {
    pub fn new(attention: AttentionParams, method: Method) -> Self {
        DecodeConfig {
            attention,
            method,
            tau_mode: TauMode::Exact,
            gqa: GqaMode::PerHead,
            certificate: CertificateLevel::Off,
            sink_pages: 0,
            recent_pages: 0,
            topk_scoring: TopkScoring::Box,
        }
    }
    /// Scores top-k pages by `s` (see [`TopkScoring`]).
    pub fn with_topk_scoring(mut self, s: TopkScoring) -> Self {
        self.topk_scoring = s;
        self
    }
    /// Keeps the last `n` closed pages in every top-k selection (see
    /// [`DecodeConfig::recent_pages`]).
    pub fn with_recent_pages(mut self, n: usize) -> Self {
        self.recent_pages = n;
        self
    }
    /// Keeps the first `n` pages in every top-k selection (see [`DecodeConfig::sink_pages`]).
    pub fn with_sink_pages(mut self, n: usize) -> Self {
        self.sink_pages = n;
        self
    }
    pub fn with_tau_mode(mut self, m: TauMode) -> Self {
        self.tau_mode = m;
        self
    }
    pub fn with_gqa(mut self, g: GqaMode) -> Self {
        self.gqa = g;
        self
    }
    /// Adds a certificate phase (page or token level) after attention. With α > 1 it
    /// needs the exact τ of the kept tokens, so the τ mode must be exact.
    pub fn with_certificate(mut self, level: CertificateLevel) -> Self {
        self.certificate = level;
        self
    }
}

/// Per (b, h) outcome of a step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HeadReport {
    /// τ used (z-space; softmax: log-sum-exp).
    pub tau: f64,
    /// τ̂ from the selector (NaN if none).
    pub tau_hat: f64,
    /// Tokens with nonzero weight.
    pub support: u32,
    /// Pages read (last page included) and pages in the sequence. For `certified`: pages
    /// with at least one K row read.
    pub pages_kept: u32,
    pub pages_total: u32,
    /// Whether the output provably equals dense attention: `Some` when a certificate ran
    /// (always `Some(true)` for `certified`), `None` otherwise.
    pub certified: Option<bool>,
    /// `certified`: tokens whose K was read (candidates plus the open page). Certificate:
    /// dropped tokens the bounds could not exclude. 0 when nothing ran.
    pub candidates: u32,
    /// Proven upper bound of the dense attention mass on the tokens not read (softmax:
    /// the α = 1 deliverable); 0 for `certified`; NaN when no certificate ran.
    pub mass_bound: f64,
}

/// Wall-clock time of each phase of a step, nanoseconds. For `certified`, selection is the
/// bound pass (statistics, sketch, open-page K, τ_lb, candidates) and attention the
/// candidates' K, the τ solve and the support's V.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTimes {
    pub selection_ns: u64,
    pub attention_ns: u64,
    /// The certificate phase (0 when off).
    pub certificate_ns: u64,
}

/// Bytes a step read, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ByteCount {
    /// Page statistics read by selection and the certificate.
    pub meta: u64,
    /// Keys read.
    pub k: u64,
    /// Values read.
    pub v: u64,
    /// Per-token key-sketch rows read (`certified`, token-level certificate).
    pub sketch: u64,
}

impl ByteCount {
    pub fn total(&self) -> u64 {
        self.meta + self.k + self.v + self.sketch
    }
}

/// What a step reports.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StepReport {
    /// `[B, H]`.
    pub heads: Vec<HeadReport>,
    pub times: StageTimes,
    pub bytes: ByteCount,
}

struct Task {
    selection: Selection,
    scratch: SelectScratch,
    ws: Workspace,
    results: Vec<HeadResult>,
    out: Vec<f32>,
    b: usize,
    kv_head: usize,
    /// First query head of the task.
    h0: usize,
    group: usize,
    v_pages: u64,
    /// `certified` strategy state (only for that method).
    certified: Option<CertifiedWorkspace>,
    /// Certificate scratch and results (only with a certificate).
    check: Option<CheckScratch>,
    certs: Vec<HeadCertificate>,
    cert_bytes: CertBytes,
    tau_kept: Vec<f64>,
    /// Gaussian robust (α ≠ 1): this step's task of the page-major fused pass (`None`:
    /// selection complete without it).
    robust: Option<robust::SeqTask>,
}

/// A planned decode (see the module docs).
pub struct Decoder {
    cfg: DecodeConfig,
    batch: usize,
    tasks: Vec<Task>,
    q_scaled: Vec<f32>,
    slopes: Vec<f32>,
    report: StepReport,
    /// [`Method::Dense`]: one page-major workspace per sequence (the tasks then hold none):
    /// a walk over the pages reads each page's K/V for all kv heads as one block.
    stream: Vec<StreamWorkspace>,
    /// [`Method::TopK`]: the heads of each task of a sequence (the same for every
    /// sequence), and per sequence the page-major bounds `[tasks, closed]` with their
    /// rows scratch: one walk over the statistics serves every task.
    topk_tasks: Vec<TaskHeads>,
    topk_bounds: Vec<(Vec<f32>, Vec<f32>)>,
    /// [`Method::TopK`] and [`Method::Gaussian`] with one task per kv head (G = 1 or shared
    /// page sets): one page-major walk over the union of the kv heads' kept pages per
    /// sequence.
    sparse: Vec<SparseWorkspace>,
    /// [`Method::Certified`]: the tasks of one sequence for the page-major bound pass
    /// (capacity planned; refilled every step).
    cert_tasks: Vec<certificate::SeqBoundTask>,
    /// [`Method::Gaussian`] with the original criterion (α > 1): per sequence the page
    /// moments of every query head `[H, closed]` (μ_p, σ_p) and the rows scratch of the one
    /// walk over the statistics that computes them for all tasks.
    gauss_moments: Vec<(Vec<f64>, Vec<f64>, Vec<f32>)>,
    /// Gaussian robust (α ≠ 1): the tasks of one sequence for the page-major fused pass
    /// (capacity planned; refilled every step).
    robust_tasks: Vec<robust::SeqTask>,
}

impl Decoder {
    /// Plans steps over `batch` sequences of up to `max_tokens` tokens each.
    pub fn new(
        cache: &PagedKvCache,
        batch: usize,
        max_tokens: usize,
        cfg: DecodeConfig,
    ) -> Result<Self> {
        const OP: &str = "Decoder::new";
        cfg.attention.validate(OP, cache)?;
        if batch == 0 {
            return Err(Error::invalid(OP, "batch", 0, "must be >= 1"));
        }
        if let Method::Gaussian(o) = &cfg.method {
            o.validate(OP)?;
        }
        if let Method::TopK(b) = &cfg.method {
            b.validate(OP)?;
        }
        let is_certified = cfg.method == Method::Certified;
        // The bound kernels' CPU check, decided once here (not in a step).
        crate::certificate::bounds::has_avx512();
        let is_dense = cfg.method == Method::Dense;
        if is_certified && cfg.attention.alpha == 1.0 {
            return Err(Error::Unsupported {
                op: OP,
                what: "method `certified` needs alpha > 1 (exact softmax reads every token: \
                       use dense; for alpha = 1 a certificate bounds the mass a selector drops)"
                    .into(),
            });
        }
        let check = !is_certified && cfg.certificate != CertificateLevel::Off;
        if check && cfg.attention.alpha > 1.0 && cfg.tau_mode != TauMode::Exact {
            return Err(Error::Unsupported {
                op: OP,
                what: "a certificate needs the exact tau of the kept tokens (tau mode exact)"
                    .into(),
            });
        }
        let hkv = cache.num_kv_heads();
        let h = cfg.attention.num_heads;
        let g = cfg.attention.group_size(hkv);
        let (ps, d) = (cache.page_size(), cache.head_dim());
        let max_pages = max_tokens.div_ceil(ps).max(1);
        let (per_task, n_tasks) = match cfg.gqa {
            GqaMode::PerHead => (1, batch * h),
            GqaMode::Shared => (g, batch * hkv),
        };
        let union_attn = matches!(cfg.method, Method::TopK(_)) && n_tasks / batch == hkv;
        let tasks: Vec<Task> = (0..n_tasks)
            .map(|i| {
                let per_b = n_tasks / batch;
                let (b, j) = (i / per_b, i % per_b);
                let h0 = j * per_task;
                Task {
                    selection: Selection::with_capacity(max_pages, per_task),
                    scratch: {
                        let mut s = SelectScratch::new(max_pages, d);
                        if matches!(cfg.method, Method::Gaussian(_)) {
                            // The per-head page arrays a Gaussian selection fills.
                            s.reserve_pages(per_task, max_pages);
                        }
                        s
                    },
                    ws: if is_certified || is_dense || union_attn {
                        Workspace::default()
                    } else {
                        Workspace::new(per_task, max_tokens.max(1), ps, d)
                    },
                    results: vec![HeadResult::default(); per_task],
                    out: vec![0.0; per_task * d],
                    b,
                    kv_head: h0 / g,
                    h0,
                    group: per_task,
                    v_pages: 0,
                    certified: is_certified
                        .then(|| CertifiedWorkspace::new(per_task, max_tokens.max(1), ps, d)),
                    check: check.then(|| CheckScratch::new(per_task, max_pages, d)),
                    certs: vec![HeadCertificate::default(); per_task],
                    cert_bytes: CertBytes::default(),
                    tau_kept: vec![0.0; per_task],
                    robust: None,
                }
            })
            .collect();
        let is_topk = matches!(cfg.method, Method::TopK(_));
        let per_b = tasks.len() / batch;
        let topk_tasks: Vec<TaskHeads> = if is_topk {
            tasks[..per_b]
                .iter()
                .map(|t| TaskHeads {
                    kv_head: t.kv_head,
                    h0: t.h0,
                    group: t.group,
                })
                .collect()
        } else {
            Vec::new()
        };
        let closed_max = max_pages.saturating_sub(1);
        let topk_bounds = if is_topk {
            (0..batch)
                .map(|_| {
                    (
                        vec![0.0; per_b * closed_max],
                        vec![0.0; topk::seq_bounds_rows_len(closed_max, hkv, d)],
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        // One task per kv head: the union walk serves the attention (top-k and Gaussian
        // selections; τ̂ of the latter feeds the fixed and corrected τ modes).
        let is_gaussian = matches!(cfg.method, Method::Gaussian(_));
        let union = (is_topk || is_gaussian) && per_b == hkv && hkv <= 64;
        let seq_moments = matches!(&cfg.method, Method::Gaussian(o) if o.criterion == Criterion::Original)
            && cfg.attention.alpha > 1.0;
        let gauss_moments = if seq_moments {
            (0..batch)
                .map(|_| {
                    (
                        vec![0.0; h * closed_max],
                        vec![0.0; h * closed_max],
                        vec![0.0; model::seq_moments_rows_len(closed_max, hkv, d)],
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let sparse = if union {
            (0..batch)
                .map(|_| SparseWorkspace::new(h, hkv, max_tokens.max(1), ps, d))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Decoder {
            batch,
            topk_tasks,
            topk_bounds,
            sparse,
            cert_tasks: Vec::with_capacity(if is_certified { per_b } else { 0 }),
            gauss_moments,
            robust_tasks: Vec::with_capacity(if is_gaussian { per_b } else { 0 }),
            tasks,
            q_scaled: vec![0.0; batch * h * d],
            slopes: (0..h).map(|i| cfg.attention.slope(i)).collect(),
            report: StepReport {
                heads: vec![HeadReport::default(); batch * h],
                ..Default::default()
            },
            // Top-k plans the dense kernel too: a step whose selection keeps every page (a
            // budget at least the cache) is dense decode and runs as such, bit for bit.
            stream: if is_dense || matches!(cfg.method, Method::TopK(_)) {
                (0..batch)
                    .map(|_| StreamWorkspace::new(h, hkv, max_tokens.max(1), ps, d))
                    .collect()
            } else {
                Vec::new()
            },
            cfg,
        })
    }

    pub fn config(&self) -> &DecodeConfig {
        &self.cfg
    }

    /// Workspace bytes held by the plan.
    pub fn workspace_bytes(&self) -> usize {
        self.tasks
            .iter()
            .map(|t| {
                t.ws.bytes()
                    + t.certified.as_ref().map_or(0, |c| c.bytes_held())
                    + t.check.as_ref().map_or(0, |c| c.bytes())
            })
            .sum::<usize>()
            + self.stream.iter().map(|s| s.bytes()).sum::<usize>()
            + self.sparse.iter().map(|s| s.bytes()).sum::<usize>()
            + self
                .topk_bounds
                .iter()
                .map(|(b, r)| 4 * (b.len() + r.len()))
                .sum::<usize>()
            + self
                .gauss_moments
                .iter()
                .map(|(m, s, r)| 8 * (m.len() + s.len()) + 4 * r.len())
                .sum::<usize>()
    }

    /// One decode step: `q` and `out` are `[B, H, D]`; sequence `b` is `seqs[b]`, its
    /// query the last cached token.
    pub fn step(
        &mut self,
        cache: &PagedKvCache,
        seqs: &[SeqId],
        q: &[f32],
        out: &mut [f32],
    ) -> Result<&StepReport> {
        const OP: &str = "Decoder::step";
        validate_batch(OP, cache, seqs, q, out.len(), &self.cfg.attention)?;
        if seqs.len() != self.batch {
            return Err(Error::Mismatch {
                op: OP,
                arg: "seqs.len()",
                got: seqs.len(),
                what: "the planned batch",
                expected: self.batch,
            });
        }
        let d = cache.head_dim();
        let h = self.cfg.attention.num_heads;
        let scale = self.cfg.attention.scale_for(d);
        for (o, &x) in self.q_scaled.iter_mut().zip(q) {
            *o = x * scale;
        }
        // Block tables are looked up per task (no per-step allocation); `validate_batch`
        // has already checked every id.
        let view = |b: usize| cache.seq_op(OP, seqs[b]);
        let alpha = self.cfg.attention.alpha;
        let (qs, slopes) = (&self.q_scaled, &self.slopes);
        let method = &self.cfg.method;
        let (sinks, recent) = (self.cfg.sink_pages, self.cfg.recent_pages);
        let scoring = self.cfg.topk_scoring;

        // Phase 1: selection.
        let t0 = Instant::now();
        // Top-k: the bounds of every task of a sequence in one walk over its statistics.
        let per_b = self.tasks.len() / self.batch;
        // (Quest's box scores only; sketch scores are computed per task.)
        let seq_bounds = matches!(method, Method::TopK(_)) && scoring == TopkScoring::Box;
        if let (Method::TopK(budget), true) = (method, seq_bounds) {
            for (b, (bounds, rows)) in self.topk_bounds.iter_mut().enumerate() {
                let seq = view(b)?;
                let closed = seq.pages.len().saturating_sub(1);
                if budget.pages(closed, cache.page_size()) >= closed {
                    continue;
                }
                let meta = topk::seq_page_bounds(
                    cache,
                    seq,
                    &self.topk_tasks,
                    &qs[b * h * d..(b + 1) * h * d],
                    slopes,
                    bounds,
                    rows,
                ) / cache.num_kv_heads();
                // The statistics rows of a kv head are read once, for its first task.
                for (i, t) in self.tasks[b * per_b..(b + 1) * per_b]
                    .iter_mut()
                    .enumerate()
                {
                    t.selection.meta_bytes =
                        if i == 0 || self.topk_tasks[i - 1].kv_head != t.kv_head {
                            meta
                        } else {
                            0
                        };
                }
            }
        }
        // Certified: per sequence, the closed pages' bound pass of all tasks in one walk
        // over the pages (between each task's own begin and finish).
        if matches!(method, Method::Certified) {
            for b in 0..self.batch {
                let seq = view(b)?;
                let qb = &qs[b * h * d..(b + 1) * h * d];
                let ts = &mut self.tasks[b * per_b..(b + 1) * per_b];
                ts.par_iter_mut().try_for_each(|t| -> Result<()> {
                    let ws = t.certified.as_mut().expect("planned for certified");
                    certificate::select_begin(
                        cache,
                        seq,
                        t.kv_head,
                        &qb[t.h0 * d..(t.h0 + t.group) * d],
                        &slopes[t.h0..t.h0 + t.group],
                        alpha,
                        ws,
                    )
                })?;
                self.cert_tasks.clear();
                for t in ts.iter_mut() {
                    let ws = t.certified.as_mut().expect("planned for certified");
                    self.cert_tasks.push(ws.seq_task(t.kv_head, t.h0, t.group));
                }
                // SAFETY: distinct tasks' workspaces, each prepared by `select_begin` for
                // this sequence just above, untouched until the pass returns.
                unsafe {
                    certificate::bound_pass_seq(cache, seq, &self.cert_tasks, qb, slopes, alpha)
                };
                ts.par_iter_mut().try_for_each(|t| -> Result<()> {
                    let ws = t.certified.as_mut().expect("planned for certified");
                    certificate::select_finish(seq, &slopes[t.h0..t.h0 + t.group], alpha, ws)
                })?;
            }
        }
        // Gaussian (original criterion): the page moments of every query head of a sequence
        // in one walk over its statistics.
        if !self.gauss_moments.is_empty() {
            let hkv = cache.num_kv_heads();
            for (b, (mu, sd, rows)) in self.gauss_moments.iter_mut().enumerate() {
                let seq = view(b)?;
                let meta = model::seq_page_moments(
                    cache,
                    seq,
                    &qs[b * h * d..(b + 1) * h * d],
                    mu,
                    sd,
                    rows,
                ) / hkv;
                // The statistics rows of a kv head are read once, for its first task.
                let ts = &mut self.tasks[b * per_b..(b + 1) * per_b];
                for i in 0..ts.len() {
                    let first = i == 0 || ts[i - 1].kv_head != ts[i].kv_head;
                    ts[i].selection.meta_bytes = if first { meta } else { 0 };
                }
            }
        }
        // Gaussian robust (α ≠ 1): per sequence, the page moments of all tasks in one walk
        // over the pages, each task's τ̂, then the fused box/token pass of all tasks in one
        // walk, then each task's rest.
        let robust_seq = matches!(method, Method::Gaussian(o) if o.criterion == Criterion::Robust)
            && alpha != 1.0;
        if let (Method::Gaussian(o), true) = (method, robust_seq) {
            for b in 0..self.batch {
                let seq = view(b)?;
                let qb = &qs[b * h * d..(b + 1) * h * d];
                let ts = &mut self.tasks[b * per_b..(b + 1) * per_b];
                let ctx_of = |t: &Task| SelectionContext {
                    cache,
                    seq,
                    kv_head: t.kv_head,
                    q_scaled: &qb[t.h0 * d..(t.h0 + t.group) * d],
                    slopes: &slopes[t.h0..t.h0 + t.group],
                    alpha,
                };
                ts.par_iter_mut().try_for_each(|t| -> Result<()> {
                    let ctx = ctx_of(t);
                    t.robust = robust::seq_begin(&ctx, o, &mut t.scratch, &mut t.selection, t.h0)?;
                    Ok(())
                })?;
                self.robust_tasks.clear();
                self.robust_tasks.extend(ts.iter().filter_map(|t| t.robust));
                // SAFETY: distinct tasks' scratches, each prepared by `seq_begin` for this
                // sequence just above, untouched until the pass returns.
                unsafe { robust::moments_seq(cache, seq, &self.robust_tasks, qb) };
                ts.par_iter_mut().try_for_each(|t| -> Result<()> {
                    if t.robust.is_some() {
                        let ctx = ctx_of(t);
                        t.robust = robust::seq_begin_pass(
                            &ctx,
                            o,
                            &mut t.scratch,
                            &mut t.selection,
                            t.h0,
                        )?;
                    }
                    Ok(())
                })?;
                self.robust_tasks.clear();
                self.robust_tasks.extend(ts.iter().filter_map(|t| t.robust));
                // SAFETY: distinct tasks' scratches, each prepared by `seq_begin` for this
                // sequence just above, untouched until the pass returns.
                unsafe { robust::pass_seq(cache, seq, &self.robust_tasks, qb, slopes, alpha) };
                ts.par_iter_mut().try_for_each(|t| -> Result<()> {
                    if t.robust.take().is_some() {
                        let ctx = ctx_of(t);
                        robust::seq_finish(&ctx, &mut t.scratch, &mut t.selection)?;
                    }
                    Ok(())
                })?;
            }
        }
        let topk_bounds = &self.topk_bounds;
        let gauss_moments = &self.gauss_moments;
        self.tasks
            .par_iter_mut()
            .enumerate()
            .try_for_each(|(ti, t)| -> Result<()> {
                let ctx = SelectionContext {
                    cache,
                    seq: view(t.b)?,
                    kv_head: t.kv_head,
                    q_scaled: &qs[(t.b * h + t.h0) * d..(t.b * h + t.h0 + t.group) * d],
                    slopes: &slopes[t.h0..t.h0 + t.group],
                    alpha,
                };
                match method {
                    Method::Dense => {
                        t.selection.reset(t.group);
                        for i in 0..ctx.seq.pages.len() {
                            t.selection.pages.push(ctx.page_ref(i));
                        }
                        Ok(())
                    }
                    Method::TopK(b) if seq_bounds => {
                        let i = ti % per_b;
                        let closed = ctx.closed_pages();
                        let meta = t.selection.meta_bytes;
                        topk::select_from_bounds(
                            &ctx,
                            *b,
                            sinks,
                            recent,
                            topk_bounds[t.b]
                                .0
                                .get(i * closed..(i + 1) * closed)
                                .unwrap_or(&[]),
                            meta,
                            &mut t.scratch,
                            &mut t.selection,
                        )
                    }
                    Method::TopK(b) => topk::select_scored(
                        &ctx,
                        *b,
                        sinks,
                        recent,
                        scoring,
                        &mut t.scratch,
                        &mut t.selection,
                    ),
                    Method::Gaussian(o) if !gauss_moments.is_empty() => {
                        let closed = ctx.closed_pages();
                        let (mu, sd, _) = &gauss_moments[t.b];
                        let r = t.h0 * closed..(t.h0 + t.group) * closed;
                        let meta = t.selection.meta_bytes;
                        gaussian::select_from_moments(
                            &ctx,
                            o,
                            mu.get(r.clone()).unwrap_or(&[]),
                            sd.get(r).unwrap_or(&[]),
                            meta,
                            &mut t.scratch,
                            &mut t.selection,
                        )
                    }
                    // Done above, page-major.
                    Method::Gaussian(_) if robust_seq => Ok(()),
                    Method::Gaussian(o) => {
                        gaussian::select(&ctx, o, &mut t.scratch, &mut t.selection)
                    }
                    // Done above, page-major.
                    Method::Certified => Ok(()),
                }
            })?;
        let t1 = Instant::now();

        // Phase 2: attention over the kept pages.
        let geom = PoolGeometry {
            num_kv_heads: cache.num_kv_heads(),
            page_size: cache.page_size(),
            head_dim: d,
        };
        let mode = self.cfg.tau_mode;
        let g = self.cfg.attention.group_size(cache.num_kv_heads());
        // Dense decode (or a top-k step that kept every page): page-major over all heads of a
        // sequence (τ is exact: dense has no τ̂).
        let all_kept = !self.stream.is_empty()
            && self
                .tasks
                .iter()
                .all(|t| view(t.b).is_ok_and(|s| t.selection.pages.len() == s.pages.len()));
        if all_kept {
            let per_b = self.tasks.len() / self.batch;
            with_kv!(cache.kv(), |k, v| {
                self.stream
                    .par_iter_mut()
                    .zip(self.tasks.par_chunks_mut(per_b))
                    .enumerate()
                    .try_for_each(|(b, (ws, ts))| -> Result<()> {
                        attend_dense_seq(
                            k,
                            v,
                            geom,
                            &ts[0].selection.pages,
                            &qs[b * h * d..(b + 1) * h * d],
                            slopes,
                            view(b)?.len as f32 - 1.0,
                            alpha,
                            ws,
                        )?;
                        for t in ts.iter_mut() {
                            let (h0, gt) = (t.h0, t.group);
                            t.out[..gt * d].copy_from_slice(&ws.out[h0 * d..(h0 + gt) * d]);
                            t.results[..gt].copy_from_slice(&ws.res[h0..h0 + gt]);
                            // V (and K) rows are read once per kv head.
                            t.v_pages = if h0 % g == 0 { ws.v_rows[t.kv_head] } else { 0 };
                        }
                        Ok(())
                    })
            })?;
        } else if !self.sparse.is_empty() {
            // Top-k, one task per kv head: one walk over the union of the kept pages.
            with_kv!(cache.kv(), |k, v| {
                for (b, ws) in self.sparse.iter_mut().enumerate() {
                    let ts = &mut self.tasks[b * per_b..(b + 1) * per_b];
                    {
                        let ts_r = &*ts;
                        attend_sparse_seq(
                            k,
                            v,
                            geom,
                            |kvh| &ts_r[kvh].selection.pages[..],
                            view(b)?.pages.len(),
                            &qs[b * h * d..(b + 1) * h * d],
                            slopes,
                            view(b)?.len as f32 - 1.0,
                            alpha,
                            mode,
                            |hh| {
                                let t = &ts_r[hh / g];
                                t.selection.tau_hat.get(hh % g).copied().unwrap_or(f64::NAN)
                            },
                            ws,
                        )?;
                    }
                    for t in ts.iter_mut() {
                        let (h0, gt) = (t.h0, t.group);
                        t.out[..gt * d].copy_from_slice(&ws.out[h0 * d..(h0 + gt) * d]);
                        t.results[..gt].copy_from_slice(&ws.res[h0..h0 + gt]);
                        t.v_pages = ws.v_rows[t.kv_head];
                    }
                }
                Ok::<(), Error>(())
            })?;
        } else {
            with_kv!(cache.kv(), |k, v| {
                self.tasks.par_iter_mut().try_for_each(|t| -> Result<()> {
                    let q_t = &qs[(t.b * h + t.h0) * d..(t.b * h + t.h0 + t.group) * d];
                    if let Some(cw) = t.certified.as_mut() {
                        t.v_pages = certified_attend(
                            cache,
                            view(t.b)?,
                            t.kv_head,
                            q_t,
                            &slopes[t.h0..t.h0 + t.group],
                            alpha,
                            cw,
                            &mut t.out,
                            &mut t.results,
                        )?;
                        return Ok(());
                    }
                    let task = GroupTask {
                        kv_head: t.kv_head,
                        pages: &t.selection.pages,
                        q_scaled: &qs[(t.b * h + t.h0) * d..(t.b * h + t.h0 + t.group) * d],
                        slopes: &slopes[t.h0..t.h0 + t.group],
                        q_pos: view(t.b)?.len as f32 - 1.0,
                        tau_hat: if mode == TauMode::Exact {
                            None
                        } else {
                            Some(&t.selection.tau_hat)
                        },
                    };
                    t.v_pages = attend_group(
                        k,
                        v,
                        geom,
                        &task,
                        alpha,
                        mode,
                        &mut t.ws,
                        &mut t.out,
                        &mut t.results,
                    )?;
                    Ok(())
                })
            })?;
        }
        let t2 = Instant::now();

        // Phase 3: the certificate of the kept pages (other methods, when asked for).
        let level = self.cfg.certificate;
        if self.tasks.iter().any(|t| t.check.is_some()) {
            self.tasks.par_iter_mut().try_for_each(|t| -> Result<()> {
                let Some(scratch) = t.check.as_mut() else {
                    return Ok(());
                };
                for (tk, r) in t.tau_kept.iter_mut().zip(&t.results) {
                    *tk = r.tau;
                }
                let task = CheckTask {
                    seq: view(t.b)?,
                    kv_head: t.kv_head,
                    kept: &t.selection.pages,
                    q_scaled: &qs[(t.b * h + t.h0) * d..(t.b * h + t.h0 + t.group) * d],
                    slopes: &slopes[t.h0..t.h0 + t.group],
                    tau_kept: &t.tau_kept,
                };
                t.cert_bytes =
                    certificate::check(cache, &task, alpha, level, scratch, &mut t.certs)?;
                Ok(())
            })?;
        }
        let t3 = Instant::now();

        // Gather outputs and the report.
        let kv_elem = cache.kv_dtype().size() as u64;
        let mut bytes = ByteCount::default();
        for t in &self.tasks {
            let base = (t.b * h + t.h0) * d;
            out[base..base + t.group * d].copy_from_slice(&t.out[..t.group * d]);
            bytes.v += t.v_pages * d as u64 * kv_elem;
            let pages_total = view(t.b)?.pages.len() as u32;
            if let Some(cw) = &t.certified {
                let bb = cw.bound_bytes();
                bytes.meta += bb.meta;
                bytes.sketch += bb.sketch;
                bytes.k += cw.candidates() as u64 * d as u64 * kv_elem;
                for hg in 0..t.group {
                    let r = t.results[hg];
                    self.report.heads[t.b * h + t.h0 + hg] = HeadReport {
                        tau: r.tau,
                        tau_hat: f64::NAN,
                        support: r.support,
                        pages_kept: cw.pages_touched(),
                        pages_total,
                        certified: Some(true),
                        candidates: cw.candidates() as u32,
                        mass_bound: 0.0,
                    };
                }
                continue;
            }
            let kept_tokens: u64 = t.selection.pages.iter().map(|p| p.len as u64).sum();
            bytes.meta += t.selection.meta_bytes as u64;
            if !all_kept || t.h0 % g == 0 {
                // Dense reads each K row once per kv head, whatever the GQA mode.
                bytes.k += kept_tokens * d as u64 * kv_elem;
            }
            if t.check.is_some() {
                bytes.meta += t.cert_bytes.meta;
                bytes.sketch += t.cert_bytes.sketch;
            }
            for hg in 0..t.group {
                let r = t.results[hg];
                let c = t.check.is_some().then(|| t.certs[hg]);
                self.report.heads[t.b * h + t.h0 + hg] = HeadReport {
                    tau: r.tau,
                    tau_hat: t.selection.tau_hat.get(hg).copied().unwrap_or(f64::NAN),
                    support: r.support,
                    pages_kept: t.selection.pages.len() as u32,
                    pages_total,
                    certified: c.map(|c| c.certified),
                    candidates: c.map_or(0, |c| c.candidates),
                    mass_bound: c.map_or(f64::NAN, |c| c.mass_bound),
                };
            }
        }
        self.report.times = StageTimes {
            selection_ns: (t1 - t0).as_nanos() as u64,
            attention_ns: (t2 - t1).as_nanos() as u64,
            certificate_ns: (t3 - t2).as_nanos() as u64,
        };
        self.report.bytes = bytes;
        Ok(&self.report)
    }
}
