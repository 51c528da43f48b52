//! τ: the entmax threshold (interim bisection version; replaced by the exact solvers).
pub mod entmax;
