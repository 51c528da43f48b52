//! The Gaussian score model of a task's closed pages (SPEC §4.2–4.6).
//!
//! Keys of page p are modelled as independent per channel with the page's mean and std, so
//! a token's score is `N(μ_p, σ_p²)` with `μ_p = q·mean_p`, `σ_p² = Σ_d q_d² std_{p,d}²`
//! (diagonal covariance: cross-channel correlation is ignored, which is what makes a page
//! holding one coherent outlier look harmless; see [`super::robust`]).

use super::GaussianOpts;
use crate::certificate::bounds::PREFETCH_PAGES;
use crate::error::Result;
use crate::selection::{SelectScratch, SelectionContext};
use crate::stats::Stat;
use crate::tau::{tau_hat_mixture, tau_hat_single, SIGMA_FLOOR};
use crate::workspace::grow;
use rayon::prelude::*;

/// Closed pages per block of [`page_moments`] (blocks run in parallel).
const BLOCK_PAGES: usize = 256;

/// Fills `scratch.mu` / `scratch.sd` (`[G, closed]`, unshifted μ_p and σ_p) from the mean
/// and std rows of every closed page, each row read once for the whole group; blocks of
/// pages run in parallel. Returns the statistics bytes read.
pub fn page_moments(ctx: &SelectionContext<'_>, scratch: &mut SelectScratch) -> usize {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let d = ctx.cache.head_dim();
    scratch.mu.clear();
    scratch.mu.resize(g * closed, 0.0);
    scratch.sd.clear();
    scratch.sd.resize(g * closed, 0.0);
    let nb = closed.div_ceil(BLOCK_PAGES);
    grow(&mut scratch.pm, closed * 2 * g);
    grow(&mut scratch.pm_rows, nb * 2 * d);
    let stats = ctx.cache.stats();
    let run = |(bi, (out, rows)): (usize, (&mut [f64], &mut [f32]))| {
        let (r0, r1) = rows.split_at_mut(d);
        let first = bi * BLOCK_PAGES;
        for i in first..(first + BLOCK_PAGES).min(closed) {
            // Rows of consecutive pages are scattered through the pool: fetch ahead.
            if let Some(&next) = ctx.seq.pages.get(i + PREFETCH_PAGES) {
                let nb = ctx.cache.stats_offset(next, ctx.kv_head);
                stats.prefetch_row(Stat::Mean, nb, d);
                stats.prefetch_row(Stat::Std, nb, d);
            }
            let base = ctx.cache.stats_offset(ctx.seq.pages[i], ctx.kv_head);
            stats.read_row(Stat::Mean, base, r0);
            stats.read_row(Stat::Std, base, r1);
            let o = (i - first) * 2 * g;
            for hg in 0..g {
                let q = &ctx.q_scaled[hg * d..(hg + 1) * d];
                let (mu, var) = mean_var(q, r0, r1);
                out[o + 2 * hg] = mu as f64;
                out[o + 2 * hg + 1] = (var as f64).sqrt();
            }
        }
    };
    if g > 0 && closed > 0 {
        let out = &mut scratch.pm[..closed * 2 * g];
        let rows = &mut scratch.pm_rows[..nb * 2 * d];
        if nb > 1 {
            out.par_chunks_mut(BLOCK_PAGES * 2 * g)
                .zip(rows.par_chunks_mut(2 * d))
                .enumerate()
                .for_each(run);
        } else {
            run((0, (out, rows)));
        }
    }
    for i in 0..closed {
        for hg in 0..g {
            scratch.mu[hg * closed + i] = scratch.pm[i * 2 * g + 2 * hg];
            scratch.sd[hg * closed + i] = scratch.pm[i * 2 * g + 2 * hg + 1];
        }
    }
    closed * 2 * ctx.cache.stats().row_bytes(d)
}

/// Closed pages per block of [`seq_page_moments`] (fixed: which thread computes a value
/// never changes it).
const SEQ_BLOCK_PAGES: usize = 128;

/// How far ahead of the statistics rows being read [`seq_page_moments`] prefetches.
const SEQ_PREFETCH_BYTES: usize = 4 * 1024;

/// Length of the `rows` scratch [`seq_page_moments`] needs for `closed` closed pages (to
/// size it at plan time).
pub fn seq_moments_rows_len(closed: usize, num_kv_heads: usize, head_dim: usize) -> usize {
    closed.div_ceil(SEQ_BLOCK_PAGES) * 2 * num_kv_heads * head_dim
}

/// A raw pointer the blocks of [`seq_page_moments`] share to write disjoint elements.
#[derive(Clone, Copy)]
struct SharedF64(*mut f64);
// SAFETY: only used for writes to disjoint elements from different threads.
unsafe impl Send for SharedF64 {}
unsafe impl Sync for SharedF64 {}
impl SharedF64 {
    #[inline(always)]
    fn at(self, i: usize) -> *mut f64 {
        self.0.wrapping_add(i)
    }
}

/// The Gaussian page moments of every query head of one sequence in one walk over its
/// closed pages: each page's mean (and std) rows of all kv heads are one contiguous
/// `[H_kv, D]` block, read once for every head, widened in registers where the CPU has
/// F16C, with a steady prefetch (into L2) of the rows a fixed distance down the page list.
/// `mu[hh · closed + i]` / `sd[hh · closed + i]` get query head hh's unshifted μ_p and σ_p
/// of closed page i (kv head `hh / (H / H_kv)`), bit-identical to what [`page_moments`]
/// writes for that head in any task holding it (same rows, same `mean_var` lanes and
/// reduction). `q_scaled` is the sequence's `[H, D]`. Blocks of pages run in parallel; every
/// value is computed by one thread, so nothing depends on the thread count. `mu`, `sd` and
/// `rows` are grown (never shrunk) when smaller than needed. Returns the statistics bytes
/// read (every kv head's rows once).
pub fn seq_page_moments(
    cache: &crate::cache::PagedKvCache,
    seq: crate::cache::SeqView<'_>,
    q_scaled: &[f32],
    mu: &mut Vec<f64>,
    sd: &mut Vec<f64>,
    rows: &mut Vec<f32>,
) -> usize {
    let (hkv, d) = (cache.num_kv_heads(), cache.head_dim());
    let h = q_scaled.len() / d.max(1);
    let g = h / hkv.max(1);
    let closed = seq.pages.len().saturating_sub(1);
    if closed == 0 || h == 0 {
        return 0;
    }
    grow(mu, h * closed);
    grow(sd, h * closed);
    let nb = closed.div_ceil(SEQ_BLOCK_PAGES);
    let row = 2 * hkv * d;
    grow(rows, nb * row);
    let (mu_p, sd_p) = (SharedF64(mu.as_mut_ptr()), SharedF64(sd.as_mut_ptr()));
    crate::with_stats!(cache.stats(), |a| {
        let (mean, std) = (&a[Stat::Mean as usize], &a[Stat::Std as usize]);
        let elem = std::mem::size_of_val(&mean[0]);
        let ahead = (SEQ_PREFETCH_BYTES / (2 * hkv * d * elem)).max(1);
        let run = |b: usize, buf: &mut [f32]| {
            let (r0, r1) = buf.split_at_mut(hkv * d);
            for i in b * SEQ_BLOCK_PAGES..((b + 1) * SEQ_BLOCK_PAGES).min(closed) {
                // The rows of the page `ahead` pages on, prefetched one kv head's rows per
                // kv head computed (a burst of the whole block stalls on full fill buffers).
                let pf = seq.pages.get(i + ahead).map(|&p| cache.stats_offset(p, 0));
                let fetch = |kvh: usize| {
                    if let Some(nb) = pf {
                        let r = nb + kvh * d..nb + (kvh + 1) * d;
                        prefetch_l2(&mean[r.clone()]);
                        prefetch_l2(&std[r]);
                    }
                };
                let base = cache.stats_offset(seq.pages[i], 0);
                let (mn, sdr) = (&mean[base..base + hkv * d], &std[base..base + hkv * d]);
                #[cfg(all(
                    target_arch = "x86_64",
                    target_feature = "avx2",
                    target_feature = "fma",
                    target_feature = "f16c"
                ))]
                if d.is_multiple_of(8) {
                    // The rows stay in their storage type, widened in registers.
                    for hh in 0..h {
                        let kvh = hh / g;
                        if hh % g == 0 {
                            fetch(kvh);
                        }
                        let q = &q_scaled[hh * d..(hh + 1) * d];
                        let (m, v) = mean_var_typed(
                            q,
                            &mn[kvh * d..(kvh + 1) * d],
                            &sdr[kvh * d..(kvh + 1) * d],
                        );
                        // SAFETY: hh < H and i < closed: inside `mu`/`sd` (grown above);
                        // blocks write disjoint page ranges, nothing reads them meanwhile.
                        unsafe {
                            *mu_p.at(hh * closed + i) = m as f64;
                            *sd_p.at(hh * closed + i) = (v as f64).sqrt();
                        }
                    }
                    continue;
                }
                (0..hkv).for_each(fetch);
                crate::dtype::KvElem::slice_to_f32(mn, r0);
                crate::dtype::KvElem::slice_to_f32(sdr, r1);
                for hh in 0..h {
                    let kvh = hh / g;
                    let q = &q_scaled[hh * d..(hh + 1) * d];
                    let (m, v) =
                        mean_var(q, &r0[kvh * d..(kvh + 1) * d], &r1[kvh * d..(kvh + 1) * d]);
                    // SAFETY: as above.
                    unsafe {
                        *mu_p.at(hh * closed + i) = m as f64;
                        *sd_p.at(hh * closed + i) = (v as f64).sqrt();
                    }
                }
            }
        };
        if nb > 1 {
            rows[..nb * row]
                .par_chunks_mut(row)
                .enumerate()
                .for_each(|(b, buf)| run(b, buf));
        } else {
            run(0, &mut rows[..row]);
        }
    });
    closed * 2 * hkv * cache.stats().row_bytes(d)
}

/// Prefetches `data` into L2, one line per 64 bytes.
#[inline(always)]
fn prefetch_l2<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr() as *const i8;
        let mut off = 0;
        while off < bytes {
            // SAFETY: prefetch never faults and `off` stays inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(base.add(off)) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// [`mean_var`] of rows in their storage type (`m.len() == s.len() == q.len()`, a multiple
/// of 8), bit for bit: the same eight lanes (one fused multiply-add per lane and chunk for
/// the mean, a product then a fused multiply-add for the variance), reduced by the same
/// `iter().sum()`. The widening (f16 by F16C, bf16 by a shift) is exact, as `slice_to_f32`.
#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    target_feature = "f16c"
))]
#[inline(always)]
pub(super) fn mean_var_typed<T: crate::dtype::KvElem>(q: &[f32], m: &[T], s: &[T]) -> (f32, f32) {
    use std::arch::x86_64::*;
    #[inline(always)]
    unsafe fn load8<T: crate::dtype::KvElem>(p: *const T) -> __m256 {
        match T::DTYPE {
            crate::dtype::DType::F32 => _mm256_loadu_ps(p.cast::<f32>()),
            crate::dtype::DType::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.cast::<__m128i>())),
            crate::dtype::DType::Bf16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(
                _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast::<__m128i>())),
            )),
        }
    }
    let d = q.len();
    debug_assert!(d.is_multiple_of(8) && m.len() >= d && s.len() >= d);
    let (mut am, mut av) = ([0.0f32; 8], [0.0f32; 8]);
    // SAFETY: every load reads 8 elements at c < d, inside the three slices (the element
    // type matches `T::DTYPE`: KvElem is implemented for f32, f16 and bf16 only).
    unsafe {
        let (mut vm, mut vv) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut c = 0;
        while c < d {
            let qv = _mm256_loadu_ps(q.as_ptr().add(c));
            vm = _mm256_fmadd_ps(qv, load8(m.as_ptr().add(c)), vm);
            let x = _mm256_mul_ps(qv, load8(s.as_ptr().add(c)));
            vv = _mm256_fmadd_ps(x, x, vv);
            c += 8;
        }
        _mm256_storeu_ps(am.as_mut_ptr(), vm);
        _mm256_storeu_ps(av.as_mut_ptr(), vv);
    }
    (am.iter().sum::<f32>(), av.iter().sum::<f32>())
}

/// `(Σ q_d·m_d, Σ (q_d·s_d)²)` with eight f32 lanes (vectorises; the model is an estimate,
/// f32 is ample).
#[inline]
fn mean_var(q: &[f32], m: &[f32], s: &[f32]) -> (f32, f32) {
    let (mut am, mut av) = ([0.0f32; 8], [0.0f32; 8]);
    let (qc, mc, sc) = (q.chunks_exact(8), m.chunks_exact(8), s.chunks_exact(8));
    let (qr, mr, sr) = (qc.remainder(), mc.remainder(), sc.remainder());
    for ((q8, m8), s8) in qc.zip(mc).zip(sc) {
        for j in 0..8 {
            am[j] = q8[j].mul_add(m8[j], am[j]);
            let x = q8[j] * s8[j];
            av[j] = x.mul_add(x, av[j]);
        }
    }
    let (mut mu, mut var) = (am.iter().sum::<f32>(), av.iter().sum::<f32>());
    for j in 0..qr.len() {
        mu += qr[j] * mr[j];
        var += (qr[j] * sr[j]) * (qr[j] * sr[j]);
    }
    (mu, var)
}

/// One head's model after [`head_model`].
#[derive(Debug, Clone, Copy)]
pub struct HeadModel {
    /// τ̂ in z-space.
    pub tau_hat: f64,
    /// Mixture mean and std of the unshifted page scores.
    pub mu_g: f64,
    pub sigma_g: f64,
    /// Largest ALiBi offset inside a page from its centre (0 without ALiBi, or when
    /// `alibi_within_page` is off): added to a page's likely max.
    pub bias_half_width: f64,
}

/// Head `hg`'s mixture moments and τ̂. With ALiBi, shifts the head's `scratch.mu` row in
/// place to each page's centre position (SPEC §4.4); μ_g, σ_g stay unshifted, as in the
/// original, since they only size the margins.
pub fn head_model(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    hg: usize,
) -> Result<HeadModel> {
    let closed = ctx.closed_pages();
    let ps = ctx.cache.page_size();
    let n = closed as f64;
    let mu = &mut scratch.mu[hg * closed..(hg + 1) * closed];
    let sd = &scratch.sd[hg * closed..(hg + 1) * closed];
    // Two-pass moments: Var_μ = mean (μ_p − μ_g)², no cancellation (SPEC §8.1.16).
    let mu_g = mu.iter().sum::<f64>() / n;
    let var_mu = mu.iter().map(|&m| (m - mu_g) * (m - mu_g)).sum::<f64>() / n;
    let mean_var = sd.iter().map(|&s| s * s).sum::<f64>() / n;
    let sigma_g = (mean_var + var_mu).sqrt().max(SIGMA_FLOOR);

    let slope = ctx.slopes[hg] as f64;
    if slope == 0.0 {
        let t = tau_hat_single(
            mu_g,
            sigma_g,
            (closed * ps) as f64,
            ctx.alpha,
            &opts.solver(false),
        )?;
        return Ok(HeadModel {
            tau_hat: t.tau,
            mu_g,
            sigma_g,
            bias_half_width: 0.0,
        });
    }
    let q_pos = ctx.q_pos();
    let half = (ps as f64 - 1.0) / 2.0;
    for (i, m) in mu.iter_mut().enumerate() {
        *m += slope * ((i * ps) as f64 + half - q_pos);
    }
    let (spread_var, bias_half_width) = if opts.alibi_within_page {
        let l = ps as f64;
        (slope * slope * (l * l - 1.0) / 12.0, slope.abs() * half)
    } else {
        (0.0, 0.0)
    };
    scratch.a.clear();
    scratch
        .a
        .extend(sd.iter().map(|&s| (s * s + spread_var).sqrt()));
    let t = tau_hat_mixture(
        mu,
        &scratch.a,
        None,
        ps as f64,
        ctx.alpha,
        &opts.solver(true),
    )?;
    Ok(HeadModel {
        tau_hat: t.tau,
        mu_g,
        sigma_g,
        bias_half_width,
    })
}
