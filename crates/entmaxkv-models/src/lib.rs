//! Real-model side of entmaxkv: SmolLM2-135M (LLaMA architecture) from a GGUF file,
//! dequantised to f32 and run with candle-core on the CPU; a byte-level BPE tokenizer built
//! from the GGUF metadata; a pluggable [`DecodeAttention`] trait so decode attention can be
//! routed through entmaxkv; perplexity; and Q/K/V trace capture to safetensors.
//!
//! Fetch the data first: `scripts/fetch_models.sh` (writes `.data/`).

pub mod attention;
pub mod entmax_attention;
pub mod error;
pub mod eval;
pub mod gguf;
pub mod model;
pub mod tokenizer;
pub mod trace;

pub use attention::{AttentionShape, DecodeAttention, DenseAttention};
pub use entmax_attention::{Backend, EntmaxKvAttention, EntmaxKvOptions, StepTotals};
pub use error::{Error, Result};
pub use eval::{first_tokens, perplexity, DataFiles, Perplexity};
pub use gguf::{sha256_file, verify_sha256, GgufFile, SMOLLM2_GGUF_NAME, SMOLLM2_GGUF_SHA256};
pub use model::{nll_of, Config, LayerQkv, Model, RopeLayout};
pub use tokenizer::Tokenizer;
pub use trace::{
    capture_traces, sidecar_path, LayerTrace, Trace, TraceDtype, TraceMeta, TraceSpec, TRACE_FORMAT,
};
