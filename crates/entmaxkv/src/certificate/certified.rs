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
//! 2. [`certified_attend`]: K rows of the candidates only (token granular), τ solved
//!    exactly on the candidates and the open page — it equals the dense τ, since every
//!    other token is provably outside the dense support — then V rows of the support only.
//!
//! α = 1 is rejected with [`Error::Unsupported`]: softmax gives every token weight, so an
//! exact softmax must read every K and V (that is `dense`); the α = 1 deliverable is the
//! proven bound on the mass a selector leaves out ([`super::check`]).
//!
//! Everything is sized by [`CertifiedWorkspace::new`]; a step allocates nothing.

use super::bounds::{alibi, decode_codes, page_box, page_consts, token_bounds, PageConsts};
use super::{margin, z_scale, CertBytes, BOUND_ERR};
use crate::attention::cpu::{alpha_code, axpy, dot, entmax_weights_in_place, HeadResult};
use crate::cache::{PagedKvCache, SeqView};
use crate::dtype::KvElem;
use crate::error::{check_len, Error, Result};
use crate::stats::{sketch, Stat};
use crate::tau::{entmax_threshold_f32, entmax_threshold_f64};
use crate::with_kv;

/// Scratch and phase-1 state of the `certified` strategy for one task.
#[derive(Debug, Clone, Default)]
pub struct CertifiedWorkspace {
    /// `[G, n]` widened lower / upper ends of every token's score.
    lower: Vec<f64>,
    upper: Vec<f64>,
    tau_f64: Vec<f64>,
    tau_f32: Vec<f32>,
    /// Closed-page candidate positions, ascending.
    cand: Vec<u32>,
    /// `[G, page_size]` f32 scores of the open page.
    open_scores: Vec<f32>,
    /// `[G, candidates + open]` scores, then weights.
    scores: Vec<f32>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    row: Vec<f32>,
    ws: Vec<f32>,
    codes: Vec<f32>,
    acc: Vec<f32>,
    pcs: Vec<PageConsts>,
    mag: Vec<f64>,
    tau_lb: Vec<f64>,
    marg: Vec<f64>,
    // Phase-1 results.
    group: usize,
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
        fn grow<T: Clone + Default>(v: &mut Vec<T>, n: usize) {
            if v.len() < n {
                v.resize(n, T::default());
            }
        }
        grow(&mut self.lower, group * max_tokens);
        grow(&mut self.upper, group * max_tokens);
        grow(&mut self.scores, group * max_tokens);
        grow(&mut self.open_scores, group * page_size);
        grow(&mut self.lo, d);
        grow(&mut self.hi, d);
        grow(&mut self.row, d);
        grow(&mut self.ws, group * d);
        grow(&mut self.codes, d);
        grow(&mut self.acc, group * d);
        grow(&mut self.pcs, group);
        grow(&mut self.mag, group);
        grow(&mut self.tau_lb, group);
        grow(&mut self.marg, group);
        if self.tau_f64.capacity() < max_tokens {
            self.tau_f64.reserve(max_tokens - self.tau_f64.len());
        }
        if self.tau_f32.capacity() < max_tokens {
            self.tau_f32.reserve(max_tokens - self.tau_f32.len());
        }
        if self.cand.capacity() < max_tokens {
            self.cand.reserve(max_tokens - self.cand.len());
        }
    }

    /// Bytes held.
    pub fn bytes_held(&self) -> usize {
        8 * (self.lower.len() + self.upper.len() + self.tau_f64.capacity() + 3 * self.mag.len())
            + 4 * (self.scores.len()
                + self.open_scores.len()
                + self.tau_f32.capacity()
                + self.cand.capacity()
                + self.lo.len()
                + self.hi.len()
                + self.row.len()
                + self.ws.len()
                + self.codes.len()
                + self.acc.len())
            + std::mem::size_of::<PageConsts>() * self.pcs.len()
    }

    /// Tokens whose K the last step reads: closed-page candidates plus the open page.
    pub fn candidates(&self) -> usize {
        self.cand.len() + self.open_len
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

/// Phase 1 of the `certified` strategy for one task: score intervals, `τ_lb` and the
/// candidates (kept in `ws`). `q_scaled` is `[G, D]` (scale applied), `slopes` `[G]`.
pub fn certified_select(
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
    ws.group = g;
    ws.n = n;
    ws.open_start = open_slot * ps;
    ws.open_len = n - ws.open_start;
    ws.bytes = CertBytes::default();
    ws.mag[..g].fill(0.0);

    // Closed pages: statistics and sketch only.
    for slot in 0..open_slot {
        let page = seq.pages[slot];
        let base = cache.stats_offset(page, kv_head);
        stats.read_row(Stat::Min, base, &mut ws.lo[..d]);
        stats.read_row(Stat::Max, base, &mut ws.hi[..d]);
        ws.bytes.meta += 2 * stat_row;
        for hg in 0..g {
            let w = &q_scaled[hg * d..(hg + 1) * d];
            let pc = if bits > 0 {
                page_consts(
                    w,
                    &ws.lo[..d],
                    &ws.hi[..d],
                    bits,
                    &mut ws.ws[hg * d..(hg + 1) * d],
                )
            } else {
                page_box(w, &ws.lo[..d], &ws.hi[..d])
            };
            ws.mag[hg] = ws.mag[hg].max(pc.mag);
            ws.pcs[hg] = pc;
        }
        let sk_base = cache.sketch_offset(page, kv_head);
        if bits > 0 {
            ws.bytes.sketch += (ps * rb) as u64;
        }
        for t in 0..ps {
            if bits > 0 {
                let row = &cache.sketch()[sk_base + t * rb..sk_base + (t + 1) * rb];
                decode_codes(row, bits, &mut ws.codes[..d]);
            }
            let pos = slot * ps + t;
            for hg in 0..g {
                let pc = &ws.pcs[hg];
                let (l, u) = if bits > 0 {
                    token_bounds(pc, &ws.ws[hg * d..(hg + 1) * d], &ws.codes[..d])
                } else {
                    (pc.box_lo, pc.box_hi)
                };
                let (al, e) = (alibi(slopes[hg], pos, q_pos), pc.err());
                ws.lower[hg * n + pos] = l + al - e;
                ws.upper[hg * n + pos] = u + al + e;
            }
        }
    }

    // The open page: exact scores (its K is read once here; phase 2 reuses the f32 scores).
    let any_alibi = slopes.iter().any(|&s| s != 0.0);
    let q_pos_f32 = n as f32 - 1.0;
    let (open_start, open_len) = (ws.open_start, ws.open_len);
    let off = cache.kv_offset(seq.pages[open_slot], kv_head);
    with_kv!(cache.kv(), |k, _v| {
        for t in 0..open_len {
            let src = &k[off + t * d..off + (t + 1) * d];
            KvElem::slice_to_f32(src, &mut ws.row[..d]);
            let pos = open_start + t;
            let rel = pos as f32 - q_pos_f32;
            for hg in 0..g {
                let w = &q_scaled[hg * d..(hg + 1) * d];
                let mut s = dot(w, &ws.row[..d]);
                if any_alibi {
                    s += slopes[hg] * rel;
                }
                ws.open_scores[hg * ps + t] = s;
                let (mut s64, mut m) = (0.0f64, 0.0f64);
                for c in 0..d {
                    let p = w[c] as f64 * ws.row[c] as f64;
                    s64 += p;
                    m += p.abs();
                }
                let (al, e) = (alibi(slopes[hg], pos, q_pos), BOUND_ERR * m);
                ws.lower[hg * n + pos] = s64 + al - e;
                ws.upper[hg * n + pos] = s64 + al + e;
                ws.mag[hg] = ws.mag[hg].max(m);
            }
        }
    });

    // τ_lb and the rounding margin per head.
    let a = z_scale(alpha);
    for hg in 0..g {
        let tau = entmax_threshold_f64(&ws.lower[hg * n..(hg + 1) * n], alpha, &mut ws.tau_f64)?;
        let m = ws.mag[hg] + (slopes[hg] as f64).abs() * q_pos;
        ws.tau_lb[hg] = tau;
        ws.marg[hg] = margin(alpha, m, tau);
    }

    // Candidates: closed-page tokens some head's upper end can push over τ_lb.
    ws.cand.clear();
    ws.pages_touched = 1;
    for slot in 0..open_slot {
        let mut touched = false;
        for pos in slot * ps..(slot + 1) * ps {
            let reach = (0..g).any(|hg| a * ws.upper[hg * n + pos] + ws.marg[hg] > ws.tau_lb[hg]);
            if reach {
                ws.cand.push(pos as u32);
                touched = true;
            }
        }
        ws.pages_touched += touched as u32;
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
    let nc = nk + ws.open_len;
    let any_alibi = slopes.iter().any(|&s| s != 0.0);
    let q_pos_f32 = seq.len as f32 - 1.0;
    let code = alpha_code(alpha);
    let a = alpha - 1.0;
    let beta = 1.0 / a;
    let mut v_rows = 0u64;
    with_kv!(cache.kv(), |k, v| {
        // K of the candidates, every head of the group from one read.
        for j in 0..nk {
            let pos = ws.cand[j] as usize;
            let off = cache.kv_offset(seq.pages[pos / ps], kv_head) + (pos % ps) * d;
            KvElem::slice_to_f32(&k[off..off + d], &mut ws.row[..d]);
            let rel = pos as f32 - q_pos_f32;
            for hg in 0..g {
                let mut s = dot(&q_scaled[hg * d..(hg + 1) * d], &ws.row[..d]);
                if any_alibi {
                    s += slopes[hg] * rel;
                }
                ws.scores[hg * nc + j] = s;
            }
        }
        for hg in 0..g {
            let (dst, src) = (hg * nc + nk, hg * ps);
            ws.scores[dst..dst + ws.open_len]
                .copy_from_slice(&ws.open_scores[src..src + ws.open_len]);
        }
        // Exact τ on the candidates (= the dense τ), weights in place.
        for hg in 0..g {
            let sc = &mut ws.scores[hg * nc..(hg + 1) * nc];
            let tau = entmax_threshold_f32(sc, alpha, &mut ws.tau_f32)?;
            let (mass, support) = entmax_weights_in_place(sc, a, tau, beta, code);
            res[hg] = HeadResult { tau, support, mass };
        }
        // V of the support only.
        let acc = &mut ws.acc[..g * d];
        acc.fill(0.0);
        for j in 0..nc {
            if !(0..g).any(|hg| ws.scores[hg * nc + j] > 0.0) {
                continue;
            }
            let pos = if j < nk {
                ws.cand[j] as usize
            } else {
                ws.open_start + (j - nk)
            };
            let off = cache.kv_offset(seq.pages[pos / ps], kv_head) + (pos % ps) * d;
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
    });
    Ok(v_rows)
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
