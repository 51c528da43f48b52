//! A tiny synthetic LLaMA GGUF (random f32 weights, byte-level vocab) so the model code is
//! tested without the fetched data.
#![allow(dead_code)]

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use entmaxkv_models::tokenizer::bytes_to_unicode;
use std::path::Path;

pub const LAYERS: usize = 2;
pub const D_MODEL: usize = 32;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 8;
pub const D_FF: usize = 48;

/// Vocab: 3 specials, 256 byte tokens (in byte order), then `Ġt`, `he`, `Ġthe`.
pub fn tiny_vocab() -> (Vec<String>, Vec<String>, Vec<i32>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![3, 3, 3];
    for c in bytes_to_unicode() {
        tokens.push(c.to_string());
        types.push(1);
    }
    for t in ["Ġt", "he", "Ġthe"] {
        tokens.push(t.to_string());
        types.push(1);
    }
    let merges = ["Ġ t", "h e", "Ġt he"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    (tokens, merges, types)
}

pub fn vocab_size() -> usize {
    tiny_vocab().0.len()
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.next() * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// Options to break the file on purpose.
#[derive(Default, Clone)]
pub struct Tweak {
    /// Leave this tensor out.
    pub drop_tensor: Option<String>,
    /// Give `blk.0.attn_q.weight` a wrong shape.
    pub bad_q_shape: bool,
    /// Leave out this metadata key.
    pub drop_meta: Option<String>,
}

pub fn write_tiny_gguf(path: &Path, tweak: &Tweak) {
    let (tokens, merges, types) = tiny_vocab();
    let v = tokens.len();
    let mut rng = Lcg(42);
    let mut tensors: Vec<(String, Tensor)> = vec![
        ("token_embd.weight".into(), rng.tensor(&[v, D_MODEL], 1.0)),
        (
            "output_norm.weight".into(),
            Tensor::ones(D_MODEL, candle_core::DType::F32, &Device::Cpu).unwrap(),
        ),
    ];
    let dq = HEADS * HEAD_DIM;
    let dkv = KV_HEADS * HEAD_DIM;
    for l in 0..LAYERS {
        let s = 0.3;
        let q_shape = if tweak.bad_q_shape && l == 0 {
            vec![dq + 1, D_MODEL]
        } else {
            vec![dq, D_MODEL]
        };
        tensors.extend([
            (
                format!("blk.{l}.attn_norm.weight"),
                (rng.tensor(&[D_MODEL], 0.1) + 1.0).unwrap(),
            ),
            (format!("blk.{l}.attn_q.weight"), rng.tensor(&q_shape, s)),
            (
                format!("blk.{l}.attn_k.weight"),
                rng.tensor(&[dkv, D_MODEL], s),
            ),
            (
                format!("blk.{l}.attn_v.weight"),
                rng.tensor(&[dkv, D_MODEL], s),
            ),
            (
                format!("blk.{l}.attn_output.weight"),
                rng.tensor(&[D_MODEL, dq], s),
            ),
            (
                format!("blk.{l}.ffn_norm.weight"),
                (rng.tensor(&[D_MODEL], 0.1) + 1.0).unwrap(),
            ),
            (
                format!("blk.{l}.ffn_gate.weight"),
                rng.tensor(&[D_FF, D_MODEL], s),
            ),
            (
                format!("blk.{l}.ffn_up.weight"),
                rng.tensor(&[D_FF, D_MODEL], s),
            ),
            (
                format!("blk.{l}.ffn_down.weight"),
                rng.tensor(&[D_MODEL, D_FF], s),
            ),
        ]);
    }
    tensors.retain(|(n, _)| Some(n) != tweak.drop_tensor.as_ref());
    let q: Vec<(String, QTensor)> = tensors
        .into_iter()
        .map(|(n, t)| (n, QTensor::quantize(&t, GgmlDType::F32).unwrap()))
        .collect();
    let strs = |v: &[String]| Value::Array(v.iter().map(|s| Value::String(s.clone())).collect());
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String("tiny-test".into())),
        ("llama.block_count".into(), Value::U32(LAYERS as u32)),
        ("llama.embedding_length".into(), Value::U32(D_MODEL as u32)),
        ("llama.feed_forward_length".into(), Value::U32(D_FF as u32)),
        (
            "llama.attention.head_count".into(),
            Value::U32(HEADS as u32),
        ),
        (
            "llama.attention.head_count_kv".into(),
            Value::U32(KV_HEADS as u32),
        ),
        ("llama.context_length".into(), Value::U32(256)),
        ("llama.rope.freq_base".into(), Value::F32(10000.0)),
        (
            "llama.rope.dimension_count".into(),
            Value::U32(HEAD_DIM as u32),
        ),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.vocab_size".into(), Value::U32(v as u32)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        ("tokenizer.ggml.tokens".into(), strs(&tokens)),
        ("tokenizer.ggml.merges".into(), strs(&merges)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.iter().map(|&t| Value::I32(t)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ];
    meta.retain(|(k, _)| Some(k) != tweak.drop_meta.as_ref());
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = q.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &meta_refs, &t_refs).unwrap();
}
