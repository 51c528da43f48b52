//! Typed errors. Every public function validates its inputs and returns one of these,
//! naming the operation, the argument and the offending values. Bad input never panics
//! and never leaves a cache half-updated.

use std::fmt;

/// The result type of every fallible entmaxkv call.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in entmaxkv, with enough context to act on it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A tensor or slice has the wrong number of elements for the shape the call implies.
    #[error("{op}: `{arg}` has {got} elements, expected {expected} (shape {shape})")]
    Length {
        op: &'static str,
        arg: &'static str,
        expected: usize,
        got: usize,
        shape: Shape,
    },
    /// Two dimensions that must agree do not.
    #[error("{op}: `{arg}` = {got} does not match {what} = {expected}")]
    Mismatch {
        op: &'static str,
        arg: &'static str,
        got: usize,
        what: &'static str,
        expected: usize,
    },
    /// A scalar argument is outside its valid range.
    #[error("{op}: invalid `{arg}` = {value}: {reason}")]
    InvalidArgument {
        op: &'static str,
        arg: &'static str,
        value: String,
        reason: String,
    },
    /// An input contains NaN or ±Inf.
    #[error("{op}: `{arg}` holds a non-finite value {value} at index {index}")]
    NonFinite {
        op: &'static str,
        arg: &'static str,
        index: usize,
        value: f64,
    },
    /// A sequence id that the cache does not know (never created, or released).
    #[error("{op}: unknown sequence id {id}")]
    UnknownSequence { op: &'static str, id: u64 },
    /// Attention over a sequence that holds no tokens.
    #[error("{op}: sequence {id} is empty (no tokens cached)")]
    EmptySequence { op: &'static str, id: u64 },
    /// The page pool has too few free pages for the request.
    #[error("{op}: page pool exhausted: need {needed} more pages, {free} free of {capacity}")]
    OutOfPages {
        op: &'static str,
        needed: usize,
        free: usize,
        capacity: usize,
    },
    /// A page id outside the pool.
    #[error("{op}: page id {page} out of range (pool has {capacity} pages)")]
    PageOutOfRange {
        op: &'static str,
        page: usize,
        capacity: usize,
    },
    /// A GPU was asked for but none can be used (no driver, no device, build without CUDA).
    #[error("{op}: no usable CUDA device: {reason}")]
    NoCuda { op: &'static str, reason: String },
    /// A CUDA driver / NVRTC call failed.
    #[error("{op}: CUDA error: {msg}")]
    Cuda { op: &'static str, msg: String },
    /// Device memory could not be allocated.
    #[error("{op}: out of device memory allocating {bytes} bytes")]
    DeviceOutOfMemory { op: &'static str, bytes: usize },
    /// A combination of options that this build or backend does not implement.
    #[error("{op}: unsupported: {what}")]
    Unsupported { op: &'static str, what: String },
    /// File or format errors (traces, results).
    #[error("{op}: {msg}")]
    Io { op: &'static str, msg: String },
}

/// A shape for error messages, printed as `[a, b, c]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape(pub Vec<usize>);

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl Error {
    pub(crate) fn invalid(
        op: &'static str,
        arg: &'static str,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            op,
            arg,
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Checks that `data` has exactly `shape.iter().product()` elements.
pub(crate) fn check_len(
    op: &'static str,
    arg: &'static str,
    got: usize,
    shape: &[usize],
) -> Result<()> {
    let expected: usize = shape.iter().product();
    if got != expected {
        return Err(Error::Length {
            op,
            arg,
            expected,
            got,
            shape: Shape(shape.to_vec()),
        });
    }
    Ok(())
}

/// Reports the first NaN/Inf of `data`.
pub(crate) fn check_finite<T: Copy + Into<f64>>(
    op: &'static str,
    arg: &'static str,
    data: &[T],
) -> Result<()> {
    for (index, &x) in data.iter().enumerate() {
        let v: f64 = x.into();
        if !v.is_finite() {
            return Err(Error::NonFinite {
                op,
                arg,
                index,
                value: v,
            });
        }
    }
    Ok(())
}

/// α must be finite and ≥ 1 (α = 1 is softmax).
pub(crate) fn check_alpha(op: &'static str, alpha: f64) -> Result<()> {
    if !alpha.is_finite() || alpha < 1.0 {
        return Err(Error::invalid(
            op,
            "alpha",
            alpha,
            "alpha must be finite and >= 1 (1 = softmax, 1.5 = entmax15, 2 = sparsemax)",
        ));
    }
    Ok(())
}
