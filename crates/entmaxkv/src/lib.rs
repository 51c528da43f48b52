//! # entmaxkv
//!
//! Sparse α-entmax attention for LLM decoding over a paged KV cache.
//!
//! The crate reads like the decode pipeline:
//!
//! * [`cache`] — the page pool, block tables, append and release;
//! * [`stats`] — per-page key statistics (min, max, mean, std) and the per-token key sketch;
//! * [`selection`] — which pages a step reads: top-k (key-range bound) and Gaussian-aware;
//! * [`tau`] — the entmax threshold: exact solves on score vectors and the distributional τ̂;
//! * [`attention`] — the f64 oracle, dense and sparse decode over kept pages;
//! * [`certificate`] — proofs that the kept tokens hold the whole dense support;
//! * [`gpu`] — the CUDA backend (device cache, planned decode steps, CUDA graphs).
//!
//! Conventions (as in the original's SPEC §2.1): scores are `s_i = scale·q·k_i (+ ALiBi)`,
//! kernel space `z_i = (α−1)·s_i`, weights `p_i = [z_i − τ]_+^{1/(α−1)}`; α = 1 is softmax
//! (and there τ is the log-sum-exp of the scores).

pub mod attention;
pub mod cache;
pub mod certificate;
pub mod decode;
pub mod dtype;
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod error;
pub mod gpu;
pub mod metrics;
pub mod selection;
pub mod stats;
pub mod synth;
pub mod tau;
pub mod timing;
mod workspace;

pub use dtype::{DType, KvElem};
pub use error::{Error, Result};
/// A zeroed vector backed by transparent huge pages where the kernel allows (the cache's own
/// allocation): for buffers that must stream like the cache does (the bandwidth probe).
pub use workspace::huge_zeroed;
