//! Gaussian-aware page selection (SPEC §4): an adaptive page budget from a Gaussian model
//! of the scores, read from per-page key statistics only (mean and std rows), never K.
//!
//! Pipeline of one task (one sequence, one kv head, G query heads):
//! 1. **Page model** ([`model`]): for each closed page p and head h,
//!    `μ_p = Σ_d q_d·mean_{p,d}`, `σ_p² = Σ_d q_d²·std_{p,d}²` (q already scaled).
//! 2. **Head moments**: `μ_g`, `σ_g² = mean_p σ_p² + Var_p(μ_p)` (the equal-weight page
//!    mixture; the variance of the means is two-pass, not `E[x²]−E[x]²`, SPEC §8.1.16).
//! 3. **τ̂**: without ALiBi, `n·E[(aS − τ)_+^β] = 1` for `S ~ N(μ_g, σ_g²)`, n = tokens of
//!    the closed pages; with ALiBi, the page mixture with each μ_p shifted to its page
//!    centre (see [`GaussianOpts::alibi_within_page`]).
//! 4. **Criterion** ([`Criterion`]): the original's margin-shrunk threshold against a
//!    Gaussian likely page maximum, or the robust per-token bound test ([`robust`]).
//! 5. **τ clamp** (original criterion, `clamp_tau`): `τ̂` is lowered towards the
//!    selected pages' typical maximum so it cannot sit above every token read.
//!
//! How the τ modes of the attention use the result: `exact` ignores `τ̂` (τ is solved on
//! the scores read), `fixed` uses the written `τ̂` as is, `corrected` refines it with a few
//! bracketed Halley steps. Unlike the original, fixed/corrected weights are always
//! renormalised over the tokens read, so the output is a convex combination of kept values
//! even when `τ̂` is off (the original summed unnormalised weights: Σp ≈ 3–4.5 in fixed
//! mode, SPEC §8.1.6).
//!
//! Departures from the original, each because SPEC §8 calls the original's behaviour a bug:
//! every public knob is honoured (§8.1.2); margins are derived per head from the task's
//! own σ_g rather than a batch-wide mean (a task sees one head group, and a head's pages
//! then do not depend on what else is in the batch); a single-page sequence keeps its page
//! (§8.1.8); GQA works (shared mode keeps the union of the heads' pages, τ̂ per head).

pub mod model;
pub mod robust;

use super::{SelectScratch, Selection, SelectionContext};
use crate::error::{Error, Result};
use crate::tau::{page_max_quantile_z, TauHatOpts};
use serde::{Deserialize, Serialize};

/// Which page test the selector applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Criterion {
    /// The original (SPEC §4.7): keep p iff `a·(μ_p + z_page·σ_p) > τ̂ − a·Δ`. Tight on
    /// unstructured keys, but the diagonal-variance page max underestimates a page holding
    /// one coherent outlier key (an attention sink) by up to √D, which then gets dropped.
    #[default]
    Original,
    /// Outlier-proof (see [`robust`]): τ̂ unshrunk, trusted only where it passes a necessary mass test, raised to a rigorous lower bound of the
    /// true τ, against rigorous per-token score upper bounds; sink pages always kept.
    Robust,
}

/// Options of the Gaussian-aware selector. Defaults reproduce the original's behaviour
/// (SPEC §4, appendix A); `None` means "derive automatically as the original does".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GaussianOpts {
    /// Page test.
    pub criterion: Criterion,
    /// Threshold margin `Δσ = safety_margin_z·σ_g` (score units). `None`: the original's
    /// automatic value, `0.01·σ_g` if `σ_g < 1.5` else `0.05·σ_g` (so `Δσ ∝ σ_g²`, SPEC
    /// §8.1.14), with σ_g the head's own (the original used the batch mean). Must be ≥ 0.
    pub safety_margin_z: Option<f64>,
    /// Quantile of the page maximum used as the page's likely max,
    /// `z_page = Φ⁻¹(q^{1/page_size})`. `None`: 0.99 if `σ_g < 1.5` else 0.995. In (0, 1).
    pub max_quantile: Option<f64>,
    /// `Δτ = f·max(τ̂/a − U, 0)`, U the mean of `μ_p + 1.5σ_p`: lowers the threshold in
    /// proportion to how far τ̂ sits above a typical page. ≥ 0; default 0.2.
    pub threshold_excess_margin_fraction: f64,
    /// Clamp τ̂ to the selected pages' typical maximum (SPEC §4.8; used by fixed/corrected
    /// τ modes, ignored by exact). Default true.
    pub clamp_tau: bool,
    /// Quantile of the page max in the clamp's cap `μ_p + z_c·s·σ_p`. In (0, 1); default 0.5.
    pub tau_clamp_page_max_quantile: f64,
    /// The factor s in the clamp's cap; the original's unexplained `1/3` (SPEC §8.1.15) is
    /// the default. ≥ 0.
    pub tau_clamp_sigma_scale: f64,
    /// With ALiBi, account for the bias varying inside a page: the mixture τ̂ adds the
    /// bias' within-page variance `slope²(L²−1)/12` to σ_p² (moment matching), and the
    /// page test adds the bias' largest offset from the centre, `|slope|·(L−1)/2` (the
    /// page max sits at its last token, not its centre). The original ignored both
    /// (SPEC §8.1.16); `false` reproduces it. Default true.
    pub alibi_within_page: bool,
    /// τ̂ solver: stop when the expected Σp is within `tau_tol` of 1. ≥ 0; default 1e-6.
    pub tau_tol: f64,
    /// τ̂ solver iteration cap. `None`: 120 (single Gaussian) / 40 (mixture), as the
    /// original. ≥ 1.
    pub tau_max_iter: Option<usize>,
    /// Robust criterion only: the first this many pages are always kept (attention sinks
    /// live at the start of the sequence). Default 1.
    pub sink_pages: usize,
}

impl Default for GaussianOpts {
    fn default() -> Self {
        GaussianOpts {
            criterion: Criterion::Original,
            safety_margin_z: None,
            max_quantile: None,
            threshold_excess_margin_fraction: 0.2,
            clamp_tau: true,
            tau_clamp_page_max_quantile: 0.5,
            tau_clamp_sigma_scale: 1.0 / 3.0,
            alibi_within_page: true,
            tau_tol: 1e-6,
            tau_max_iter: None,
            sink_pages: 1,
        }
    }
}

/// Below this σ_g the automatic margins use the "low σ" regime (SPEC §4.5).
const LOW_SIGMA: f64 = 1.5;
/// The "typical page upper score" is `μ_p + TYPICAL_Z·σ_p` (SPEC §4.7).
const TYPICAL_Z: f64 = 1.5;
/// The clamp keeps τ this far (z-space) below the cap (SPEC §4.8).
const CLAMP_EPS: f64 = 1e-4;

impl GaussianOpts {
    pub fn with_criterion(mut self, c: Criterion) -> Self {
        self.criterion = c;
        self
    }

    /// Checks every knob; `op` names the caller in the error.
    pub fn validate(&self, op: &'static str) -> Result<()> {
        let nonneg = |arg: &'static str, x: f64| {
            if x.is_finite() && x >= 0.0 {
                Ok(())
            } else {
                Err(Error::invalid(op, arg, x, "must be finite and >= 0"))
            }
        };
        let quantile = |arg: &'static str, q: f64| {
            if q > 0.0 && q < 1.0 {
                Ok(())
            } else {
                Err(Error::invalid(op, arg, q, "a quantile must lie in (0, 1)"))
            }
        };
        if let Some(m) = self.safety_margin_z {
            nonneg("safety_margin_z", m)?;
        }
        if let Some(q) = self.max_quantile {
            quantile("max_quantile", q)?;
        }
        nonneg(
            "threshold_excess_margin_fraction",
            self.threshold_excess_margin_fraction,
        )?;
        quantile(
            "tau_clamp_page_max_quantile",
            self.tau_clamp_page_max_quantile,
        )?;
        nonneg("tau_clamp_sigma_scale", self.tau_clamp_sigma_scale)?;
        nonneg("tau_tol", self.tau_tol)?;
        if self.tau_max_iter == Some(0) {
            return Err(Error::invalid(op, "tau_max_iter", 0, "must be >= 1"));
        }
        Ok(())
    }

    fn solver(&self, mixture: bool) -> TauHatOpts {
        TauHatOpts {
            tol: self.tau_tol,
            rtol: 0.0,
            max_iter: self.tau_max_iter.unwrap_or(if mixture { 40 } else { 120 }),
        }
    }

    /// (Δσ, max quantile) for a head with mixture std `sigma_g`.
    fn margins(&self, sigma_g: f64) -> (f64, f64) {
        let low = sigma_g < LOW_SIGMA;
        let smz = self
            .safety_margin_z
            .unwrap_or(if low { 0.01 } else { 0.05 } * sigma_g);
        let q = self.max_quantile.unwrap_or(if low { 0.99 } else { 0.995 });
        (smz * sigma_g, q)
    }
}

/// Gaussian-aware selection for one task: writes the kept pages (ascending, then the last
/// page), `τ̂` per query head (z-space; NaN when there is no model: α = 1, a single page,
/// or non-finite statistics — attention then solves τ exactly) and the metadata bytes read.
pub fn select(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    const OP: &str = "gaussian::select";
    opts.validate(OP)?;
    let g = ctx.group();
    out.reset(g);
    let closed = ctx.closed_pages();
    let keep_all = |out: &mut Selection| {
        out.pages.clear();
        for i in 0..ctx.seq.pages.len() {
            out.pages.push(ctx.page_ref(i));
        }
    };
    // Nothing to drop (a single page), or softmax with the original criterion (full
    // support: no page can be dropped without losing mass, and there is no threshold to
    // predict). The robust criterion has a softmax mode (bounded dropped mass).
    if closed == 0 || (ctx.alpha == 1.0 && opts.criterion == Criterion::Original) {
        keep_all(out);
        return Ok(());
    }
    scratch.reserve_pages(g, closed);
    if ctx.alpha == 1.0 {
        return robust::select_softmax(ctx, opts, scratch, out);
    }
    out.meta_bytes = model::page_moments(ctx, scratch);
    if !scratch.mu.iter().chain(&scratch.sd).all(|x| x.is_finite()) {
        // Overflowed statistics (keys beyond the stats dtype): no model, read everything.
        keep_all(out);
        return Ok(());
    }
    match opts.criterion {
        Criterion::Original => original(ctx, opts, scratch, out)?,
        Criterion::Robust => robust::select(ctx, opts, scratch, out)?,
    }
    Ok(())
}

/// [`select`] from page moments already computed (e.g. by [`model::seq_page_moments`] for
/// a whole sequence): `mu` / `sd` are the task's `[G, closed]` unshifted μ_p and σ_p as
/// [`model::page_moments`] forms them, `meta_bytes` is reported as read. Same pages and τ̂
/// as [`select`] on the same moments. Only the original criterion (the robust one reads
/// more than the moments); α = 1 and a sequence without closed pages keep every page, as
/// in [`select`].
pub fn select_from_moments(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    mu: &[f64],
    sd: &[f64],
    meta_bytes: usize,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    const OP: &str = "gaussian::select_from_moments";
    opts.validate(OP)?;
    if opts.criterion != Criterion::Original {
        return Err(Error::Unsupported {
            op: OP,
            what: "page moments given in advance serve the original criterion only".into(),
        });
    }
    let g = ctx.group();
    out.reset(g);
    let closed = ctx.closed_pages();
    if closed == 0 || ctx.alpha == 1.0 {
        out.pages.clear();
        for i in 0..ctx.seq.pages.len() {
            out.pages.push(ctx.page_ref(i));
        }
        return Ok(());
    }
    crate::error::check_len(OP, "mu", mu.len(), &[g, closed])?;
    crate::error::check_len(OP, "sd", sd.len(), &[g, closed])?;
    if g == 1 && ctx.slopes[0] == 0.0 {
        out.meta_bytes = meta_bytes;
        return original_one_head(ctx, opts, mu, sd, out);
    }
    scratch.reserve_pages(g, closed);
    scratch.mu.clear();
    scratch.mu.extend_from_slice(mu);
    scratch.sd.clear();
    scratch.sd.extend_from_slice(sd);
    out.meta_bytes = meta_bytes;
    if !scratch.mu.iter().chain(&scratch.sd).all(|x| x.is_finite()) {
        // Overflowed statistics (keys beyond the stats dtype): no model, read everything.
        out.pages.clear();
        for i in 0..ctx.seq.pages.len() {
            out.pages.push(ctx.page_ref(i));
        }
        return Ok(());
    }
    original(ctx, opts, scratch, out)
}

/// [`original`] (after [`select`]'s finiteness check) for a task of one head without ALiBi,
/// on its moments `mu` / `sd` (`[closed]`) as given: the same arithmetic in the same order
/// (each sum a left-to-right fold from the neutral element `Iterator::sum` starts from),
/// fused into three passes over the pages — the model's sums and the finiteness check, the
/// variance of the means, then the page test, the clamp's cap and the kept pages together
/// (with one head the union is the head's own set).
fn original_one_head(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    mu: &[f64],
    sd: &[f64],
    out: &mut Selection,
) -> Result<()> {
    let closed = ctx.closed_pages();
    let ps = ctx.cache.page_size();
    let a = ctx.alpha - 1.0;
    let n = closed as f64;
    let (mu, sd) = (&mu[..closed], &sd[..closed]);
    // Pass 1: Σμ_p, Σσ_p², Σ(μ_p + 1.5σ_p), and whether every moment is finite.
    let zero = std::iter::empty::<f64>().sum::<f64>();
    let (mut s_mu, mut s_var, mut s_typ, mut finite) = (zero, zero, zero, true);
    for (&m, &s) in mu.iter().zip(sd) {
        finite &= m.is_finite() & s.is_finite();
        s_mu += m;
        s_var += s * s;
        s_typ += m + TYPICAL_Z * s;
    }
    if !finite {
        // Overflowed statistics (keys beyond the stats dtype): no model, read everything.
        out.pages.clear();
        for i in 0..ctx.seq.pages.len() {
            out.pages.push(ctx.page_ref(i));
        }
        return Ok(());
    }
    // The head's model (`model::head_model` without ALiBi).
    let mu_g = s_mu / n;
    let mut s_dev = zero;
    for &m in mu {
        s_dev += (m - mu_g) * (m - mu_g);
    }
    let var_mu = s_dev / n;
    let mean_var = s_var / n;
    let sigma_g = (mean_var + var_mu).sqrt().max(crate::tau::SIGMA_FLOOR);
    let tau_hat = crate::tau::tau_hat_single(
        mu_g,
        sigma_g,
        (closed * ps) as f64,
        ctx.alpha,
        &opts.solver(false),
    )?
    .tau;
    let bias_half_width = 0.0;
    // The page test (as `original`).
    let (d_sigma, q_max) = opts.margins(sigma_g);
    let z_page = page_max_quantile_z(q_max, ps)?;
    let typical = s_typ / closed as f64;
    let d_tau = opts.threshold_excess_margin_fraction * (tau_hat / a - typical).max(0.0);
    let tau_floor = tau_hat - a * d_sigma.max(d_tau);
    let z_c = page_max_quantile_z(opts.tau_clamp_page_max_quantile, ps)?;
    // Pass 3: kept pages (branch-free into the planned capacity) and the clamp's cap.
    out.pages.clear();
    out.pages.reserve(closed + 1);
    let spare = out.pages.spare_capacity_mut();
    let (mut kept, mut cap) = (0usize, f64::NEG_INFINITY);
    for i in 0..closed {
        let likely_max = mu[i] + bias_half_width + z_page * sd[i];
        let take = a * likely_max > tau_floor;
        let c = mu[i] + z_c * opts.tau_clamp_sigma_scale * sd[i];
        cap = if take { cap.max(c) } else { cap };
        spare[kept].write(ctx.page_ref(i));
        kept += take as usize;
    }
    // SAFETY: the first `kept` elements of the spare capacity were written above.
    unsafe { out.pages.set_len(kept) };
    out.pages.push(ctx.page_ref(closed));
    let mut tau = tau_hat;
    if opts.clamp_tau && cap > f64::NEG_INFINITY {
        tau = tau_hat.min((a * cap - CLAMP_EPS).max(tau_floor));
    }
    out.tau_hat[0] = tau;
    Ok(())
}

/// The original criterion and clamp (SPEC §4.5–4.8), per head, keeping the union.
fn original(
    ctx: &SelectionContext<'_>,
    opts: &GaussianOpts,
    scratch: &mut SelectScratch,
    out: &mut Selection,
) -> Result<()> {
    let g = ctx.group();
    let closed = ctx.closed_pages();
    let ps = ctx.cache.page_size();
    let a = ctx.alpha - 1.0;
    scratch.keep.clear();
    scratch.keep.resize(closed, false);
    scratch.head.clear();
    scratch.head.resize(2 * g, 0.0);
    for hg in 0..g {
        let m = model::head_model(ctx, opts, scratch, hg)?;
        let (d_sigma, q_max) = opts.margins(m.sigma_g);
        let z_page = page_max_quantile_z(q_max, ps)?;
        let (mu, sd) = (
            &scratch.mu[hg * closed..(hg + 1) * closed],
            &scratch.sd[hg * closed..(hg + 1) * closed],
        );
        let typical = mu
            .iter()
            .zip(sd)
            .map(|(&m, &s)| m + TYPICAL_Z * s)
            .sum::<f64>()
            / closed as f64;
        let d_tau = opts.threshold_excess_margin_fraction * (m.tau_hat / a - typical).max(0.0);
        let tau_floor = m.tau_hat - a * d_sigma.max(d_tau);
        for i in 0..closed {
            let likely_max = mu[i] + m.bias_half_width + z_page * sd[i];
            if a * likely_max > tau_floor {
                scratch.keep[i] = true;
            }
        }
        scratch.head[2 * hg] = m.tau_hat;
        scratch.head[2 * hg + 1] = tau_floor;
    }
    // τ clamp over the pages actually read (the union), last page excluded as in the
    // original: τ ∈ [τ_floor, τ̂].
    let z_c = page_max_quantile_z(opts.tau_clamp_page_max_quantile, ps)?;
    for hg in 0..g {
        let (tau_hat, tau_floor) = (scratch.head[2 * hg], scratch.head[2 * hg + 1]);
        let mut tau = tau_hat;
        if opts.clamp_tau {
            let (mu, sd) = (
                &scratch.mu[hg * closed..(hg + 1) * closed],
                &scratch.sd[hg * closed..(hg + 1) * closed],
            );
            let cap = (0..closed)
                .filter(|&i| scratch.keep[i])
                .map(|i| mu[i] + z_c * opts.tau_clamp_sigma_scale * sd[i])
                .fold(f64::NEG_INFINITY, f64::max);
            if cap > f64::NEG_INFINITY {
                tau = tau_hat.min((a * cap - CLAMP_EPS).max(tau_floor));
            }
        }
        out.tau_hat[hg] = tau;
    }
    push_kept(ctx, &scratch.keep, out);
    Ok(())
}

/// Writes the kept closed pages in ascending order, then the last page.
fn push_kept(ctx: &SelectionContext<'_>, keep: &[bool], out: &mut Selection) {
    out.pages.clear();
    for (i, &k) in keep.iter().enumerate() {
        if k {
            out.pages.push(ctx.page_ref(i));
        }
    }
    out.pages.push(ctx.page_ref(ctx.closed_pages()));
}
