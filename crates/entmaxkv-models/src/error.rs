//! Typed errors for the model side. Bad input (missing files, wrong checksums, missing or
//! mis-shaped tensors, malformed metadata, out-of-range token ids) is reported, never a panic.

use std::path::PathBuf;

/// Result alias used throughout this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong loading, running or tracing a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be opened, read or written.
    #[error("{op}: I/O error on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's sha256 does not match the expected one.
    #[error("checksum mismatch for {}: expected sha256 {expected}, got {got}", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        got: String,
    },
    /// The GGUF container itself could not be parsed.
    #[error("GGUF parse error in {}: {msg}", path.display())]
    Gguf { path: PathBuf, msg: String },
    /// A metadata key the model needs is absent.
    #[error("GGUF metadata key `{key}` is missing")]
    MissingMetadata { key: String },
    /// A metadata key has the wrong type or an unsupported value.
    #[error("GGUF metadata key `{key}`: {reason}")]
    BadMetadata { key: String, reason: String },
    /// A tensor the model needs is absent from the file.
    #[error("tensor `{name}` is missing from the model file")]
    MissingTensor { name: String },
    /// A tensor has an unexpected shape.
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    /// An error inside candle (tensor ops, dequantisation).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// Tokenizer construction or use failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A caller-supplied argument is invalid.
    #[error("{op}: invalid `{arg}`: {reason}")]
    InvalidArgument {
        op: &'static str,
        arg: &'static str,
        reason: String,
    },
    /// A pluggable [`crate::DecodeAttention`] implementation failed.
    #[error("attention backend failed at layer {layer}: {source}")]
    Attention {
        layer: usize,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// safetensors (de)serialisation failed.
    #[error("safetensors: {0}")]
    Safetensors(#[from] safetensors::SafeTensorError),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A trace file is internally inconsistent (names, shapes, sidecar).
    #[error("trace {}: {reason}", path.display())]
    BadTrace { path: PathBuf, reason: String },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(op: &'static str, arg: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            op,
            arg,
            reason: reason.into(),
        }
    }
}
