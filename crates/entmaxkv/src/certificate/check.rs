//! The certificate of a selector's output: page-level and token-level checks.

use super::bounds::{alibi, alibi_max, page_bound, sketch_dots, PageRows};
use super::{
    entmax_mass, margin, softmax_mass, z_scale, CertBytes, CertificateLevel, HeadCertificate, Lse,
};
use crate::attention::cpu::PageRef;
use crate::cache::{PagedKvCache, SeqView};
use crate::error::{check_len, Error, Result};
use crate::stats::sketch;
use crate::workspace::grow;

/// One task to certify: a sequence and kv head, the G query heads it serves, the pages a
/// selector kept and the exact τ attention found on them.
pub struct CheckTask<'a> {
    pub seq: SeqView<'a>,
    pub kv_head: usize,
    /// Kept pages (any subset of the sequence's pages, any order; the last page need not
    /// be among them).
    pub kept: &'a [PageRef],
    /// `[G, D]` queries multiplied by the score scale.
    pub q_scaled: &'a [f32],
    /// `[G]` ALiBi slopes (zeros without ALiBi).
    pub slopes: &'a [f32],
    /// `[G]` the exact τ of the kept tokens (z-space; α = 1: their log-sum-exp), e.g.
    /// [`crate::attention::cpu::HeadResult::tau`] of an exact-τ attention over `kept`.
    pub tau_kept: &'a [f64],
}

/// Scratch of [`check`], sized once (grows, never shrinks, if a task is larger).
#[derive(Debug, Clone, Default)]
pub struct CheckScratch {
    keep: Vec<bool>,
    /// `[pages, G]` page upper bounds (score units, widened, max ALiBi of the page).
    page_u: Vec<f64>,
    rows: PageRows,
    /// `[G, D]` quantised sketch weights of the current page.
    qw: Vec<i16>,
    /// `[page_size]` sketch dots of one page and head.
    sdot: Vec<i32>,
    codes: Vec<u8>,
    /// `[G]` per-head state.
    mag: Vec<f64>,
    marg: Vec<f64>,
    cand: Vec<u32>,
    mass: Vec<f64>,
    lse: Vec<Lse>,
    fail: Vec<bool>,
}

impl CheckScratch {
    pub fn new(group: usize, max_pages: usize, d: usize) -> Self {
        let mut s = CheckScratch::default();
        s.reserve(group, max_pages, d);
        s
    }

    fn reserve(&mut self, group: usize, pages: usize, d: usize) {
        grow(&mut self.keep, pages);
        grow(&mut self.page_u, pages * group);
        self.rows.reserve(d);
        grow(&mut self.qw, group * d);
        grow(&mut self.codes, d);
        grow(&mut self.mag, group);
        grow(&mut self.marg, group);
        grow(&mut self.cand, group);
        grow(&mut self.mass, group);
        grow(&mut self.lse, group);
        grow(&mut self.fail, group);
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.keep.len()
            + 8 * self.page_u.len()
            + 16 * self.rows.lo.len()
            + 2 * self.qw.len()
            + 4 * self.sdot.len()
            + self.codes.len()
            + 80 * self.mag.len()
    }
}

/// Certifies one task at `level` (page or token), writing one [`HeadCertificate`] per query
/// head into `out[..G]`; returns the bytes read (statistics of every page of the sequence,
/// for the bounds and the rounding margin, plus the sketch rows the token level reads).
///
/// A head is certified when every token of every dropped page is provably outside the
/// dense support (α > 1), so attention over the kept pages with exact τ equals dense
/// attention; `mass_bound` bounds the dense mass of the dropped tokens for every α.
pub fn check(
    cache: &PagedKvCache,
    task: &CheckTask<'_>,
    alpha: f64,
    level: CertificateLevel,
    scratch: &mut CheckScratch,
    out: &mut [HeadCertificate],
) -> Result<CertBytes> {
    const OP: &str = "certificate::check";
    crate::error::check_alpha(OP, alpha)?;
    if level == CertificateLevel::Off {
        return Err(Error::invalid(
            OP,
            "level",
            "off",
            "a check needs page or token level",
        ));
    }
    let g = task.slopes.len();
    let (d, ps) = (cache.head_dim(), cache.page_size());
    check_len(OP, "q_scaled", task.q_scaled.len(), &[g, d])?;
    check_len(OP, "tau_kept", task.tau_kept.len(), &[g])?;
    if out.len() < g {
        return Err(Error::Mismatch {
            op: OP,
            arg: "out.len()",
            got: out.len(),
            what: "the query heads of the task",
            expected: g,
        });
    }
    if task.kv_head >= cache.num_kv_heads() {
        return Err(Error::invalid(
            OP,
            "kv_head",
            task.kv_head,
            "kv head out of range",
        ));
    }
    let seq = task.seq;
    let np = seq.pages.len();
    scratch.reserve(g, np, d);
    let s = scratch;
    if s.sdot.len() < ps {
        s.sdot.resize(ps, 0);
    }
    s.keep[..np].fill(false);
    let mut kept_tokens = 0usize;
    for p in task.kept {
        let slot = p.start as usize / ps;
        let ok = (p.start as usize).is_multiple_of(ps)
            && slot < np
            && seq.pages[slot] == p.page
            && p.len as usize == seq.page_len(slot, ps)
            && !s.keep[slot];
        if !ok {
            return Err(Error::invalid(
                OP,
                "kept",
                format!("{p:?}"),
                "not a distinct page of the sequence",
            ));
        }
        s.keep[slot] = true;
        kept_tokens += p.len as usize;
    }
    for hg in 0..g {
        if !task.tau_kept[hg].is_finite() {
            return Err(Error::invalid(
                OP,
                "tau_kept",
                task.tau_kept[hg],
                "must be finite",
            ));
        }
    }
    if kept_tokens == seq.len {
        for o in &mut out[..g] {
            *o = HeadCertificate {
                certified: true,
                candidates: 0,
                mass_bound: 0.0,
            };
        }
        return Ok(CertBytes::default());
    }

    let stats = cache.stats();
    let stat_row = stats.row_bytes(d) as u64;
    let bits = cache.config().sketch_bits;
    let rb = sketch::row_bytes(d, bits);
    let q_pos = seq.len as f64 - 1.0;
    let a = z_scale(alpha);
    let mut bytes = CertBytes::default();

    // Pass 1: every page's box bound and magnitude (the kept ones set the rounding margin).
    s.mag[..g].fill(0.0);
    for slot in 0..np {
        let base = cache.stats_offset(seq.pages[slot], task.kv_head);
        s.rows.load(stats, base, d, 0);
        bytes.meta += 2 * stat_row;
        let first = slot * ps;
        let last = first + seq.page_len(slot, ps) - 1;
        for hg in 0..g {
            let w = &task.q_scaled[hg * d..(hg + 1) * d];
            let pc = page_bound(w, &s.rows, false, &mut s.qw[hg * d..(hg + 1) * d]);
            s.mag[hg] = s.mag[hg].max(pc.mag);
            s.page_u[slot * g + hg] = pc.box_hi + alibi_max(task.slopes[hg], first, last, q_pos);
        }
    }
    for hg in 0..g {
        let m = s.mag[hg] + (task.slopes[hg] as f64).abs() * q_pos;
        s.marg[hg] = margin(alpha, m, task.tau_kept[hg]);
        s.cand[hg] = 0;
        s.mass[hg] = 0.0;
        s.lse[hg] = Lse::default();
    }

    // Pass 2: the dropped pages.
    for slot in 0..np {
        if s.keep[slot] {
            continue;
        }
        let len = seq.page_len(slot, ps);
        let mut any_fail = false;
        for hg in 0..g {
            let zu = a * s.page_u[slot * g + hg] + s.marg[hg];
            s.fail[hg] = alpha == 1.0 || zu > task.tau_kept[hg];
            any_fail |= s.fail[hg];
        }
        if !any_fail {
            continue;
        }
        if level == CertificateLevel::Page {
            for hg in 0..g {
                if !s.fail[hg] {
                    continue;
                }
                let zu = a * s.page_u[slot * g + hg] + s.marg[hg];
                s.cand[hg] += len as u32;
                if alpha == 1.0 {
                    s.lse[hg].add(zu, len as f64);
                } else {
                    s.mass[hg] += entmax_mass(alpha, zu, task.tau_kept[hg], len as f64);
                }
            }
            continue;
        }
        // Token level. The statistics were read in pass 1 (a kernel keeps them on chip).
        let page = seq.pages[slot];
        let base = cache.stats_offset(page, task.kv_head);
        let sketched = bits > 0 && len == ps;
        let b = if sketched { bits } else { 0 };
        s.rows.load(stats, base, d, b);
        let sk = if sketched {
            bytes.sketch += (len * rb) as u64;
            let sb = cache.sketch_offset(page, task.kv_head);
            &cache.sketch()[sb..sb + len * rb]
        } else {
            &[][..]
        };
        for hg in 0..g {
            if !s.fail[hg] {
                continue;
            }
            let w = &task.q_scaled[hg * d..(hg + 1) * d];
            let qw = &mut s.qw[hg * d..(hg + 1) * d];
            let pc = page_bound(w, &s.rows, sketched, qw);
            let sdot = &mut s.sdot[..len];
            if sketched {
                sketch_dots(qw, sk, rb, bits, sdot, &mut s.codes);
            } else {
                sdot.fill(0);
            }
            for t in 0..len {
                let pos = slot * ps + t;
                let u = pc.interval(sdot[t]).1 + alibi(task.slopes[hg], pos, q_pos);
                let zu = a * u + s.marg[hg];
                if alpha == 1.0 {
                    s.cand[hg] += 1;
                    s.lse[hg].add(zu, 1.0);
                } else if zu > task.tau_kept[hg] {
                    s.cand[hg] += 1;
                    s.mass[hg] += entmax_mass(alpha, zu, task.tau_kept[hg], 1.0);
                }
            }
        }
    }

    for hg in 0..g {
        out[hg] = if alpha == 1.0 {
            HeadCertificate {
                certified: false,
                candidates: s.cand[hg],
                mass_bound: softmax_mass(s.lse[hg].value(), task.tau_kept[hg] - s.marg[hg]),
            }
        } else {
            HeadCertificate {
                certified: s.cand[hg] == 0,
                candidates: s.cand[hg],
                mass_bound: s.mass[hg].min(1.0),
            }
        };
    }
    Ok(bytes)
}
