//! Decode attention: the f64 oracle, and fast dense and sparse decode over a page list.
//!
//! A decode step attends one query per (sequence, query head) over that sequence's cache,
//! the query being the last cached token (`q_pos = len − 1`). Scores are
//! `s_i = scale·q·k_i + slope_h·(i − q_pos)` (ALiBi only when slopes are given), the GQA
//! map is `kv_head = h / (H / H_kv)`, and the weights are α-entmax of the scores.

pub mod cpu;
pub mod dense;
pub mod oracle;
pub mod sparse;
pub mod stream;

use crate::cache::{PagedKvCache, SeqId};
use crate::error::{check_alpha, check_finite, check_len, Error, Result};
use serde::{Deserialize, Serialize};

/// What every decode call needs besides the cache and the queries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionParams {
    /// Query heads H (a multiple of the cache's kv heads).
    pub num_heads: usize,
    /// α ≥ 1: 1 = softmax, 1.5 = entmax15 (default), 2 = sparsemax.
    pub alpha: f64,
    /// Score scale; `None` = 1/√D.
    pub scale: Option<f32>,
    /// Per-query-head ALiBi slopes `[H]`; `None` = no positional bias.
    pub alibi_slopes: Option<Vec<f32>>,
}

impl AttentionParams {
    pub fn new(num_heads: usize, alpha: f64) -> Self {
        AttentionParams {
            num_heads,
            alpha,
            scale: None,
            alibi_slopes: None,
        }
    }
    pub fn with_scale(mut self, scale: f32) -> Self {
        self.scale = Some(scale);
        self
    }
    pub fn with_alibi(mut self, slopes: Vec<f32>) -> Self {
        self.alibi_slopes = Some(slopes);
        self
    }

    /// The scale actually used for head dim `d`.
    pub fn scale_for(&self, d: usize) -> f32 {
        self.scale.unwrap_or(1.0 / (d as f32).sqrt())
    }

    /// ALiBi slope of query head `h` (0 without ALiBi).
    #[inline]
    pub fn slope(&self, h: usize) -> f32 {
        self.alibi_slopes.as_ref().map_or(0.0, |s| s[h])
    }

    /// Query heads per kv head.
    pub fn group_size(&self, num_kv_heads: usize) -> usize {
        self.num_heads / num_kv_heads
    }

    /// Validates against a cache; `op` names the calling operation.
    pub fn validate(&self, op: &'static str, cache: &PagedKvCache) -> Result<()> {
        self.validate_for(op, cache.num_kv_heads())
    }

    /// Validates against a cache with `hkv` kv heads (any backend).
    pub fn validate_for(&self, op: &'static str, hkv: usize) -> Result<()> {
        check_alpha(op, self.alpha)?;
        if self.num_heads == 0 || !self.num_heads.is_multiple_of(hkv) {
            return Err(Error::Mismatch {
                op,
                arg: "num_heads",
                got: self.num_heads,
                what: "a positive multiple of the cache's num_kv_heads",
                expected: hkv,
            });
        }
        if let Some(s) = self.scale {
            if !s.is_finite() || s <= 0.0 {
                return Err(Error::invalid(op, "scale", s, "must be finite and > 0"));
            }
        }
        if let Some(sl) = &self.alibi_slopes {
            check_len(op, "alibi_slopes", sl.len(), &[self.num_heads])?;
            check_finite(op, "alibi_slopes", sl)?;
        }
        Ok(())
    }
}

/// Validates a decode batch: parameters, every sequence known and non-empty, q `[B, H, D]`
/// finite, `out` `[B, H, D]`. Returns the sequences' views' lengths.
pub(crate) fn validate_batch(
    op: &'static str,
    cache: &PagedKvCache,
    seqs: &[SeqId],
    q: &[f32],
    out_len: usize,
    params: &AttentionParams,
) -> Result<()> {
    params.validate(op, cache)?;
    if seqs.is_empty() {
        return Err(Error::invalid(op, "seqs", "[]", "at least one sequence"));
    }
    let shape = [seqs.len(), params.num_heads, cache.head_dim()];
    check_len(op, "q", q.len(), &shape)?;
    check_len(op, "out", out_len, &shape)?;
    check_finite(op, "q", q)?;
    for &id in seqs {
        let s = cache.seq_op(op, id)?;
        if s.len == 0 {
            return Err(Error::EmptySequence { op, id: id.0 });
        }
    }
    Ok(())
}
