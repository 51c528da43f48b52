//! Dense decode on the CPU: the page-major kernel ([`super::stream`]) over every page of
//! every sequence, one walk over the pages for all heads, blocks of pages in parallel.
//! Softmax and α-entmax.

use super::cpu::{HeadResult, PageRef, PoolGeometry};
use super::stream::{attend_dense_seq, StreamWorkspace};
use super::{validate_batch, AttentionParams};
use crate::cache::{PagedKvCache, SeqId};
use crate::error::Result;
use crate::with_kv;
use rayon::prelude::*;

/// Fills `out` with the pages of a sequence in token order.
pub fn all_pages(cache: &PagedKvCache, id: SeqId, out: &mut Vec<PageRef>) -> Result<()> {
    let s = cache.seq_op("all_pages", id)?;
    let ps = cache.page_size();
    out.clear();
    for (i, &p) in s.pages.iter().enumerate() {
        out.push(PageRef {
            page: p,
            len: s.page_len(i, ps) as u32,
            start: (i * ps) as u32,
        });
    }
    Ok(())
}

/// Per-step results of a decode: per (b, h) τ and support size.
#[derive(Debug, Clone, Default)]
pub struct DecodeReport {
    /// `[B, H]`.
    pub heads: Vec<HeadResult>,
}

/// A planned dense decode: workspaces sized once, reused every step.
pub struct DenseDecoder {
    params: AttentionParams,
    batch: usize,
    /// One per sequence of the batch.
    workspaces: Vec<StreamWorkspace>,
    pages: Vec<Vec<PageRef>>,
    q_scaled: Vec<f32>,
    slopes: Vec<f32>,
    lens: Vec<usize>,
    report: DecodeReport,
}

impl DenseDecoder {
    /// Plans a decode of `batch` sequences of up to `max_tokens` tokens each.
    pub fn new(
        cache: &PagedKvCache,
        batch: usize,
        max_tokens: usize,
        params: AttentionParams,
    ) -> Result<Self> {
        params.validate("DenseDecoder::new", cache)?;
        let hkv = cache.num_kv_heads();
        let (ps, d) = (cache.page_size(), cache.head_dim());
        let slopes = (0..params.num_heads).map(|h| params.slope(h)).collect();
        Ok(DenseDecoder {
            batch,
            workspaces: (0..batch)
                .map(|_| StreamWorkspace::new(params.num_heads, hkv, max_tokens, ps, d))
                .collect(),
            pages: (0..batch)
                .map(|_| Vec::with_capacity(max_tokens.div_ceil(ps)))
                .collect(),
            q_scaled: vec![0.0; batch * params.num_heads * d],
            slopes,
            lens: vec![0; batch],
            report: DecodeReport {
                heads: vec![HeadResult::default(); batch * params.num_heads],
            },
            params,
        })
    }

    pub fn params(&self) -> &AttentionParams {
        &self.params
    }

    /// One decode step: `q` and `out` are `[B, H, D]`.
    pub fn run(
        &mut self,
        cache: &PagedKvCache,
        seqs: &[SeqId],
        q: &[f32],
        out: &mut [f32],
    ) -> Result<&DecodeReport> {
        const OP: &str = "DenseDecoder::run";
        validate_batch(OP, cache, seqs, q, out.len(), &self.params)?;
        if seqs.len() != self.batch {
            return Err(crate::Error::Mismatch {
                op: OP,
                arg: "seqs.len()",
                got: seqs.len(),
                what: "the planned batch",
                expected: self.batch,
            });
        }
        for (b, &id) in seqs.iter().enumerate() {
            all_pages(cache, id, &mut self.pages[b])?;
            self.lens[b] = cache.seq_op(OP, id)?.len;
        }
        let d = cache.head_dim();
        let scale = self.params.scale_for(d);
        for (o, &x) in self.q_scaled.iter_mut().zip(q) {
            *o = x * scale;
        }
        let hkv = cache.num_kv_heads();
        let h = self.params.num_heads;
        let geom = PoolGeometry {
            num_kv_heads: hkv,
            page_size: cache.page_size(),
            head_dim: d,
        };
        let alpha = self.params.alpha;
        let (pages, qs, slopes, lens) = (&self.pages, &self.q_scaled, &self.slopes, &self.lens);
        with_kv!(cache.kv(), |k, v| {
            out.par_chunks_mut(h * d)
                .zip(self.workspaces.par_iter_mut())
                .zip(self.report.heads.par_chunks_mut(h))
                .enumerate()
                .try_for_each(|(b, ((o, ws), res))| {
                    attend_dense_seq(
                        k,
                        v,
                        geom,
                        &pages[b],
                        &qs[b * h * d..(b + 1) * h * d],
                        slopes,
                        lens[b] as f32 - 1.0,
                        alpha,
                        ws,
                    )?;
                    o.copy_from_slice(&ws.out[..h * d]);
                    res.copy_from_slice(&ws.res[..h]);
                    Ok::<(), crate::Error>(())
                })
        })?;
        Ok(&self.report)
    }
}

/// One-shot dense decode (plans, runs once). For repeated steps keep a [`DenseDecoder`].
pub fn dense_decode(
    cache: &PagedKvCache,
    seqs: &[SeqId],
    q: &[f32],
    params: &AttentionParams,
    out: &mut [f32],
) -> Result<DecodeReport> {
    let max_tokens = seqs
        .iter()
        .map(|&id| cache.seq_len(id))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    let mut dec = DenseDecoder::new(cache, seqs.len(), max_tokens, params.clone())?;
    Ok(dec.run(cache, seqs, q, out)?.clone())
}
