//! Method names used on the command line, shared by `bench` and `check`.
//!
//! `dense-softmax`, `dense-entmax`, `topk-softmax`, `topk`, `gaussian-exact`,
//! `gaussian-fixed`, `gaussian-corrected`; a `-full` suffix on a sparse method sets the
//! budget to the whole cache (the output must then equal dense); `-sink` and `-local`
//! suffixes on a top-k method always keep the first page (the attention sink) and the last
//! closed page (the local window before the open page) inside the budget; `-sketch` (before
//! `-sink`/`-local`) scores top-k pages by the per-token key-sketch bound instead of Quest's
//! key-range box.

use anyhow::{bail, Result};
use entmaxkv::attention::cpu::TauMode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::decode::{DecodeConfig, Method};
use entmaxkv::selection::gaussian::{Criterion, GaussianOpts};
use entmaxkv::selection::topk::{Budget, TopkScoring};
use entmaxkv::selection::GqaMode;

pub const METHODS: &[&str] = &[
    "dense-softmax",
    "dense-entmax",
    "topk-softmax",
    "topk",
    "gaussian-exact",
    "gaussian-fixed",
    "gaussian-corrected",
    "gaussian-robust",
    "gaussian-robust-corrected",
    "robust-softmax",
    "certified",
];

/// A parsed method name.
#[derive(Debug, Clone)]
pub struct MethodSpec {
    pub name: String,
    /// Softmax methods force α = 1.
    pub softmax: bool,
    pub method: Method,
    pub tau_mode: TauMode,
    /// Top-k budget fraction, if any.
    pub budget: Option<f64>,
    /// The output must equal dense (full budget or a dense method).
    pub exact: bool,
    /// Pages at the start of the sequence top-k always keeps (`-sink`: 1).
    pub sink_pages: usize,
    /// Closed pages at the end top-k always keeps (`-local`: 1).
    pub recent_pages: usize,
    /// Top-k page scores (`-sketch`: the per-token key-sketch bound).
    pub topk_scoring: TopkScoring,
}

impl MethodSpec {
    pub fn parse(name: &str, budget: f64) -> Result<MethodSpec> {
        let (name_nl, local) = match name.strip_suffix("-local") {
            Some(b) => (b, true),
            None => (name, false),
        };
        let (name_ns, sink) = match name_nl.strip_suffix("-sink") {
            Some(b) => (b, true),
            None => (name_nl, false),
        };
        let (name_nm, sketch_mass) = match name_ns.strip_suffix("-sketchmass") {
            Some(b) => (b, true),
            None => (name_ns, false),
        };
        let (name_nk, sketch) = match name_nm.strip_suffix("-sketch") {
            Some(b) => (b, true),
            None => (name_nm, false),
        };
        let (base, full) = match name_nk.strip_suffix("-full") {
            Some(b) => (b, true),
            None => (name_nk, false),
        };
        let topk_budget = if full {
            Budget::Fraction(1.0)
        } else {
            Budget::Fraction(budget)
        };
        let (method, tau_mode, softmax, b) = match base {
            "dense-softmax" => (Method::Dense, TauMode::Exact, true, None),
            "dense-entmax" => (Method::Dense, TauMode::Exact, false, None),
            "topk-softmax" => (
                Method::TopK(topk_budget),
                TauMode::Exact,
                true,
                Some(budget),
            ),
            "topk" => (
                Method::TopK(topk_budget),
                TauMode::Exact,
                false,
                Some(budget),
            ),
            "gaussian-exact" => (
                Method::Gaussian(GaussianOpts::default()),
                TauMode::Exact,
                false,
                None,
            ),
            "gaussian-fixed" => (
                Method::Gaussian(GaussianOpts::default()),
                TauMode::Fixed,
                false,
                None,
            ),
            "gaussian-corrected" => (
                Method::Gaussian(GaussianOpts::default()),
                TauMode::Corrected(1),
                false,
                None,
            ),
            "gaussian-robust" => (Method::Gaussian(robust()), TauMode::Exact, false, None),
            "gaussian-robust-corrected" => (
                Method::Gaussian(robust()),
                TauMode::Corrected(1),
                false,
                None,
            ),
            // α = 1: the robust criterion's softmax mode (drops pages with a proven bound
            // of 1e-3 on the mass they carry).
            "robust-softmax" => (Method::Gaussian(robust()), TauMode::Exact, true, None),
            "certified" => (Method::Certified, TauMode::Exact, false, None),
            _ => bail!(
                "unknown method `{name}` (one of {}, optionally with -full, -sketch, -sink, -local)",
                METHODS.join(", ")
            ),
        };
        if (full || sketch || sketch_mass || sink || local) && !matches!(method, Method::TopK(_)) {
            bail!(
                "`-full`, `-sketch`, `-sink` and `-local` apply to top-k methods only, not `{name}`"
            );
        }
        Ok(MethodSpec {
            name: name.to_string(),
            softmax,
            exact: matches!(method, Method::Dense | Method::Certified) || full,
            budget: if full { Some(1.0) } else { b },
            method,
            tau_mode,
            sink_pages: sink as usize,
            recent_pages: local as usize,
            topk_scoring: match (sketch, sketch_mass) {
                (_, true) => TopkScoring::SketchMass,
                (true, _) => TopkScoring::Sketch,
                _ => TopkScoring::Box,
            },
        })
    }

    /// Whether the method is defined at this α (`certified` needs α > 1).
    pub fn supports_alpha(&self, alpha: f64) -> bool {
        !(matches!(self.method, Method::Certified) && alpha <= 1.0)
    }

    /// The decoder configuration for `alpha` (ignored by softmax methods) and `heads`.
    pub fn config(
        &self,
        alpha: f64,
        heads: usize,
        gqa: GqaMode,
        alibi: Option<Vec<f32>>,
    ) -> DecodeConfig {
        let mut p = AttentionParams::new(heads, if self.softmax { 1.0 } else { alpha });
        p.alibi_slopes = alibi;
        DecodeConfig::new(p, self.method.clone())
            .with_tau_mode(self.tau_mode)
            .with_gqa(gqa)
            .with_sink_pages(self.sink_pages)
            .with_recent_pages(self.recent_pages)
            .with_topk_scoring(self.topk_scoring)
    }
}

fn robust() -> GaussianOpts {
    GaussianOpts {
        criterion: Criterion::Robust,
        ..GaussianOpts::default()
    }
}

/// NAPE-style ALiBi slopes (SPEC §6.1): the first half of the heads get `2^{-8i/(H/2)}`,
/// the rest 0; with odd H the middle head gets a slope too.
pub fn nape_slopes(h: usize) -> Vec<f32> {
    let half = h.div_ceil(2);
    (0..h)
        .map(|i| {
            if i < half {
                2f32.powf(-8.0 * (i + 1) as f32 / half as f32)
            } else {
                0.0
            }
        })
        .collect()
}
