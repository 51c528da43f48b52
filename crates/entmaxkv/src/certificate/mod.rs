//! Exactness certificates: proofs that the tokens a step read hold the whole dense
//! α-entmax support, and the `certified` decode strategy built on them.
//!
//! # The argument
//!
//! Write `z_i = (α−1)·s_i` and let `τ(S)` be the entmax threshold of a token set `S`
//! (`Σ_{i∈S} [z_i − τ]_+^β = 1`, β = 1/(α−1)). Two monotonicity facts:
//!
//! * `τ(S) ≤ τ(all)` for every subset `S` (dropping tokens can only lower τ);
//! * τ never rises when any score is lowered.
//!
//! So for *any* lower bound `τ_lb ≤ τ(all)` — the exact τ of the kept tokens, or the τ of
//! rigorous lower ends of every token's score — a token whose score upper bound `u_i`
//! satisfies `(α−1)·u_i ≤ τ_lb` has zero dense weight. If every token outside `S` is
//! excluded that way, the dense support lies inside `S`, and then `τ(S) = τ(all)` exactly
//! (the equation restricted to `S` has the same root), so attention over `S` *is* dense
//! attention. The bounds come from two places:
//!
//! * page level: the key-range box `[kmin, kmax]` of a page gives
//!   `u_p = Σ_d max(w_d·kmin_d, w_d·kmax_d) + max_{i∈p} ALiBi_i`;
//! * token level: the per-token b-bit key sketch ([`crate::stats::sketch`]) gives
//!   `w·k̃ ± Σ_d |w_d|·step_d/2`, intersected with the box, plus the token's exact ALiBi.
//!
//! For α = 1 (softmax) nothing is exactly zero; the same bounds give a proven upper bound on
//! the attention mass the kept tokens miss ([`HeadCertificate::mass_bound`]). For α > 1 the
//! same quantity is `Σ_dropped [(α−1)u_i − τ_kept]_+^β`, zero exactly when certified.
//!
//! # Rounding
//!
//! * Soundness is stated for the f64 oracle ([`crate::attention::oracle`]): its scores are
//!   `scale·(q·k)` in f64 from the stored keys, the decoder's are `fl(scale·q)·k`. Every
//!   bound is widened by [`BOUND_ERR`]`·Σ_d |w_d|·max(|kmin_d|, |kmax_d|)`, which covers
//!   the rounding of `fl(scale·q)` (2⁻²⁴ relative) and the f64 sums; lower ends are thus
//!   rigorous lower bounds of the oracle's scores, upper ends rigorous upper bounds. The
//!   page and sketch bounds themselves are computed in f32 with an exact integer sketch
//!   dot, and widened first by a proven bound on that arithmetic (`certificate/bounds.rs`);
//!   stored upper ends are rounded up to f32, lower ends kept in f64.
//! * Robustness to f32 evaluation: the attention kernel computes kept scores and τ in f32
//!   dot products, whose error is up to ~`(D/16 + 17)·2⁻²⁴·Σ|w_d·k_d|`. A token is excluded
//!   only with a margin `REL_SLACK·((α−1)·M + |τ|)` in z-space (`M` the largest score
//!   magnitude `Σ|w_d|·max|k_d| + max|ALiBi|` of the task); with [`REL_SLACK`] = 1e-5 this
//!   covers the f32 error for head dims up to ~1000 and costs nothing measurable in power.
//!   (For α = 1 the z-space is the score space and `(α−1)` reads as 1; the margin there
//!   also covers the f32 sums of the kernel's log-sum-exp, [`SOFTMAX_LSE_ERR`].)

pub(crate) mod bounds;
mod certified;
mod check;

pub(crate) use certified::{bound_pass_seq, select_begin, select_finish, SeqBoundTask};
pub use certified::{
    certified_attend, certified_decode_group, certified_select, CertifiedWorkspace, PROBE,
};
pub use check::{check, CheckScratch, CheckTask};

use serde::{Deserialize, Serialize};

/// Relative slack of every exclusion test (see the module docs, "Rounding").
pub const REL_SLACK: f64 = 1e-5;

/// Relative widening of every score bound for the rounding of `fl(scale·q)` and the f64
/// sums (2⁻²², four times the f32 unit roundoff of the query scaling).
pub const BOUND_ERR: f64 = 1.0 / (1u64 << 22) as f64;

/// Which certificate a decode step runs after attention (methods other than `certified`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CertificateLevel {
    /// No certificate (default).
    #[default]
    Off,
    /// Key-range bounds of the dropped pages only (page statistics).
    Page,
    /// Page bounds, then per-token sketch bounds for the dropped pages the page bound
    /// cannot exclude (every dropped page for α = 1). Without a sketch (`sketch_bits = 0`)
    /// or on a partly filled page the token bound is the page box plus the token's ALiBi.
    Token,
}

/// The certificate of one query head.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct HeadCertificate {
    /// The kept tokens provably hold the whole dense support, so the output is dense
    /// attention (to rounding). For α = 1: only when nothing was dropped.
    pub certified: bool,
    /// Dropped tokens the bounds could not exclude (page level: all tokens of the dropped
    /// pages that fail the page test). For the `certified` strategy: tokens whose K was read.
    pub candidates: u32,
    /// Proven upper bound of the dense attention mass on the dropped tokens (in [0, 1]);
    /// 0 when certified with α > 1.
    pub mass_bound: f64,
}

/// Bytes a certificate (or the `certified` strategy's bound pass) read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CertBytes {
    /// Page statistics (min and max rows).
    pub meta: u64,
    /// Key-sketch rows.
    pub sketch: u64,
}

/// `α − 1`, read as 1 for softmax (z-space is the score space there).
#[inline]
pub(crate) fn z_scale(alpha: f64) -> f64 {
    if alpha == 1.0 {
        1.0
    } else {
        alpha - 1.0
    }
}

/// The exclusion margin in z-space for a task of score magnitude `m` and threshold `tau`.
#[inline]
pub(crate) fn margin(alpha: f64, m: f64, tau: f64) -> f64 {
    let base = REL_SLACK * (z_scale(alpha) * m + tau.abs()) + f64::MIN_POSITIVE;
    if alpha == 1.0 {
        // The kernel's softmax log-sum-exp adds exponentials in f32 chunks of 256 (relative
        // error up to 256·2⁻²⁴ of the sum, hence of ln Σ): covered twice over.
        base + SOFTMAX_LSE_ERR
    } else {
        base
    }
}

/// Absolute error allowance of the kernel's f32 softmax log-sum-exp (512·2⁻²⁴).
pub const SOFTMAX_LSE_ERR: f64 = 512.0 / (1u64 << 24) as f64;

/// Proven bound on the dense weight of tokens whose score is at most `u` (z-space
/// `a·u + margin`), given `tau_lb ≤ τ(all)`, `count` such tokens: α > 1 only.
#[inline]
pub(crate) fn entmax_mass(alpha: f64, z_up: f64, tau_lb: f64, count: f64) -> f64 {
    let x = z_up - tau_lb;
    if x <= 0.0 {
        return 0.0;
    }
    let beta = 1.0 / (alpha - 1.0);
    count * x.powf(beta)
}

/// A streaming log-sum-exp (for the softmax mass bound).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lse {
    m: f64,
    s: f64,
}

impl Default for Lse {
    fn default() -> Self {
        Lse {
            m: f64::NEG_INFINITY,
            s: 0.0,
        }
    }
}

impl Lse {
    /// Adds `count·e^x`.
    #[inline]
    pub fn add(&mut self, x: f64, count: f64) {
        if count <= 0.0 {
            return;
        }
        if x > self.m {
            self.s = self.s * (self.m - x).exp() + count;
            self.m = x;
        } else {
            self.s += count * (x - self.m).exp();
        }
    }
    /// ln Σ (−∞ when empty).
    pub fn value(&self) -> f64 {
        if self.s > 0.0 {
            self.m + self.s.ln()
        } else {
            f64::NEG_INFINITY
        }
    }
}

/// Softmax mass bound: dropped mass ≤ U/(K + U) with `ln U = lse_dropped`, `ln K ≥ tau_kept`.
#[inline]
pub(crate) fn softmax_mass(lse_dropped: f64, tau_kept: f64) -> f64 {
    if lse_dropped == f64::NEG_INFINITY {
        return 0.0;
    }
    // 1 / (1 + e^{τ − L}), evaluated without overflow.
    let x = tau_kept - lse_dropped;
    if x > 0.0 {
        let e = (-x).exp();
        e / (1.0 + e)
    } else {
        1.0 / (1.0 + x.exp())
    }
}
