//! The entmax threshold τ: exact solves on score vectors and the distributional τ̂.
//!
//! * [`entmax`] / [`entmax_threshold_f32`] are the ground truth every approximate path is
//!   measured against, so they are exact (sort-based or bracketed to rounding), never a
//!   fixed iteration count.
//! * [`halley_correct`] and [`moments`] mirror what a decode kernel does with a τ estimate:
//!   a few bracketed Halley steps from three reductions, never able to leave the root's
//!   bracket (the original's unbracketed steps could).
//! * [`tau_hat_single`] / [`tau_hat_mixture`] predict τ before any score is read, from a
//!   Gaussian model of the scores, so pages can be selected first (SPEC §4.6, §5).
//! * [`normal`] holds the tail-accurate Φ, Φ⁻¹ those need.

mod entmax;
mod gaussian;
pub mod normal;
mod quad;

pub use entmax::{
    entmax, entmax_threshold_candidates, entmax_threshold_f32, entmax_threshold_f64,
    entmax_weights_f32, halley_correct, halley_correct_candidates, moments, Entmax, CORRECT_TOL,
};
pub use gaussian::{
    page_max_quantile_z, tau_hat_mixture, tau_hat_single, trunc_gauss_moments, TauHat, TauHatOpts,
    TruncGaussMoments, TstarTable, SIGMA_FLOOR,
};
