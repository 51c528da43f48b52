//! The f64 dense decode oracle: every other path is tested against it.
//!
//! Scores, exact α-entmax ([`crate::tau::entmax`]) and the weighted sum of values,
//! all in f64 from the stored (rounded) K/V.

use super::{validate_batch, AttentionParams};
use crate::cache::{PagedKvCache, SeqId};
use crate::dtype::KvElem;
use crate::error::Result;
use crate::tau::entmax;
use crate::with_kv;

/// The oracle's answer for a batch: `out [B, H, D]`, `tau [B, H]`, `support [B, H]`.
#[derive(Debug, Clone)]
pub struct OracleOutput {
    pub out: Vec<f64>,
    /// τ per (b, h) in z-space (softmax: log-sum-exp of the scores).
    pub tau: Vec<f64>,
    /// Tokens with nonzero weight per (b, h).
    pub support: Vec<usize>,
}

/// Exact f64 scores of query head `h` of sequence `seq` against all its cached keys.
pub fn oracle_scores(
    cache: &PagedKvCache,
    seq: SeqId,
    h: usize,
    q_row: &[f32],
    params: &AttentionParams,
) -> Result<Vec<f64>> {
    let s = cache.seq_op("oracle_scores", seq)?;
    let (d, ps) = (cache.head_dim(), cache.page_size());
    let g = params.group_size(cache.num_kv_heads());
    let kvh = h / g;
    let scale = params.scale_for(d) as f64;
    let slope = params.slope(h) as f64;
    let q_pos = s.len as f64 - 1.0;
    let mut scores = Vec::with_capacity(s.len);
    with_kv!(cache.kv(), |k, _v| {
        for t in 0..s.len {
            let off = cache.kv_offset(s.pages[t / ps], kvh) + (t % ps) * d;
            let mut dot = 0.0f64;
            for c in 0..d {
                dot += q_row[c] as f64 * k[off + c].to_f32() as f64;
            }
            scores.push(scale * dot + slope * (t as f64 - q_pos));
        }
    });
    Ok(scores)
}

/// Dense α-entmax decode in f64 over every cached token.
pub fn oracle_decode(
    cache: &PagedKvCache,
    seqs: &[SeqId],
    q: &[f32],
    params: &AttentionParams,
) -> Result<OracleOutput> {
    let h = params.num_heads;
    let d = cache.head_dim();
    let n_out = seqs.len() * h * d;
    validate_batch("oracle_decode", cache, seqs, q, n_out, params)?;
    let g = params.group_size(cache.num_kv_heads());
    let ps = cache.page_size();
    let mut out = vec![0.0f64; n_out];
    let mut tau = vec![0.0f64; seqs.len() * h];
    let mut support = vec![0usize; seqs.len() * h];
    for (b, &id) in seqs.iter().enumerate() {
        let s = cache.seq_op("oracle_decode", id)?;
        for hh in 0..h {
            let row = (b * h + hh) * d;
            let scores = oracle_scores(cache, id, hh, &q[row..row + d], params)?;
            let e = entmax(&scores, params.alpha)?;
            tau[b * h + hh] = e.tau;
            support[b * h + hh] = e.support;
            let kvh = hh / g;
            with_kv!(cache.kv(), |_k, v| {
                for (t, &p) in e.p.iter().enumerate() {
                    if p == 0.0 {
                        continue;
                    }
                    let off = cache.kv_offset(s.pages[t / ps], kvh) + (t % ps) * d;
                    for c in 0..d {
                        out[row + c] += p * v[off + c].to_f32() as f64;
                    }
                }
            });
        }
    }
    Ok(OracleOutput { out, tau, support })
}
