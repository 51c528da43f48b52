//! Selection: which pages a decode step reads.
//!
//! A selector sees one task — a sequence and a kv head, with the G query heads it serves
//! (G = 1 for per-query-head selection) — and writes the pages to read in token order,
//! the last (open) page always included, plus optionally a threshold estimate τ̂ per head.
//! It reads only page metadata, never K/V.

pub mod gaussian;
pub mod topk;
pub mod topk_sketch;

use crate::attention::cpu::PageRef;
use crate::cache::{PagedKvCache, SeqView};
use serde::{Deserialize, Serialize};

/// How query heads of a GQA group share pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum GqaMode {
    /// Each query head picks its own pages (the original's semantics). A page kept by
    /// several heads of a group is read once per head.
    #[default]
    PerHead,
    /// One page set per kv head serves the whole query group (the union of what the heads
    /// need, by the group's best bound), so each kept K/V page is read once per step.
    Shared,
}

/// The inputs of one selection task.
pub struct SelectionContext<'a> {
    pub cache: &'a PagedKvCache,
    pub seq: SeqView<'a>,
    pub kv_head: usize,
    /// `[G, D]` queries multiplied by the score scale.
    pub q_scaled: &'a [f32],
    /// `[G]` ALiBi slopes (zeros without ALiBi).
    pub slopes: &'a [f32],
    pub alpha: f64,
}

impl SelectionContext<'_> {
    /// Query heads in this task.
    pub fn group(&self) -> usize {
        self.slopes.len()
    }
    /// Pages before the last one: the ones a selector may drop.
    pub fn closed_pages(&self) -> usize {
        self.seq.pages.len().saturating_sub(1)
    }
    pub fn q_pos(&self) -> f64 {
        self.seq.len as f64 - 1.0
    }
    /// The page ref of slot `i` of the sequence.
    pub fn page_ref(&self, i: usize) -> PageRef {
        let ps = self.cache.page_size();
        PageRef {
            page: self.seq.pages[i],
            len: self.seq.page_len(i, ps) as u32,
            start: (i * ps) as u32,
        }
    }
}

/// What a selector produced for one task.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Pages to read in token order; the last page is always the final entry.
    pub pages: Vec<PageRef>,
    /// `[G]` τ̂ in z-space, NaN when the selector gives none.
    pub tau_hat: Vec<f64>,
    /// Bytes of page metadata the selector read.
    pub meta_bytes: usize,
}

impl Selection {
    pub fn with_capacity(pages: usize, group: usize) -> Self {
        Selection {
            pages: Vec::with_capacity(pages),
            tau_hat: vec![f64::NAN; group],
            meta_bytes: 0,
        }
    }

    pub(crate) fn reset(&mut self, group: usize) {
        self.pages.clear();
        self.tau_hat.clear();
        self.tau_hat.resize(group, f64::NAN);
        self.meta_bytes = 0;
    }
}

/// Reusable scratch of a selector (sized once per plan).
#[derive(Debug, Clone, Default)]
pub struct SelectScratch {
    /// (score, page slot) pairs.
    pub scored: Vec<(f32, u32)>,
    /// Per-page f32 values (e.g. μ_p, σ_p).
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    /// Two f32 rows of length D.
    pub row0: Vec<f32>,
    pub row1: Vec<f32>,
    /// Slot flags.
    pub keep: Vec<bool>,
    /// `[G, pages]` per-head page values (Gaussian: μ_p, σ_p).
    pub mu: Vec<f64>,
    pub sd: Vec<f64>,
    /// Per-head values (Gaussian: τ̂, τ_floor, …).
    pub head: Vec<f64>,
    /// Per-token f32 values (Gaussian robust: score lower bounds).
    pub tok: Vec<f32>,
    /// Scratch of an exact τ solve on `tok`.
    pub tok_scratch: Vec<f32>,
    /// The robust criterion's sketch-bound scratch.
    pub(crate) robust: gaussian::robust::RobustScratch,
    /// Gaussian page moments: `[closed, 2G]` page-major results and `[blocks, 2D]` rows of
    /// the blocks computing them in parallel.
    pub(crate) pm: Vec<f64>,
    pub(crate) pm_rows: Vec<f32>,
    /// Top-k sketch scores' scratch.
    pub(crate) sketch_score: topk_sketch::SketchScoreScratch,
}

impl SelectScratch {
    pub fn new(max_pages: usize, d: usize) -> Self {
        SelectScratch {
            scored: Vec::with_capacity(max_pages),
            a: Vec::with_capacity(max_pages),
            b: Vec::with_capacity(max_pages),
            row0: vec![0.0; d],
            row1: vec![0.0; d],
            keep: Vec::with_capacity(max_pages),
            mu: Vec::new(),
            sd: Vec::new(),
            head: Vec::new(),
            tok: Vec::new(),
            tok_scratch: Vec::new(),
            robust: Default::default(),
            pm: Vec::new(),
            pm_rows: Vec::new(),
            sketch_score: Default::default(),
        }
    }

    /// Grows (never shrinks) the per-head page arrays to hold `group × pages` values, so a
    /// selector allocates at most on the first call of a plan, never afterwards.
    pub fn reserve_pages(&mut self, group: usize, pages: usize) {
        fn grow<T>(v: &mut Vec<T>, n: usize) {
            if v.capacity() < n {
                v.reserve(n - v.len());
            }
        }
        grow(&mut self.mu, group * pages);
        grow(&mut self.sd, group * pages);
        grow(&mut self.a, pages);
        grow(&mut self.b, pages);
        grow(&mut self.keep, pages);
        grow(&mut self.head, 4 * group);
    }
}
