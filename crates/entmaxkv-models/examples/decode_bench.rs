//! Time prefill and per-token decode steps through `DenseAttention`:
//! `cargo run --release -p entmaxkv-models --example decode_bench -- [PREFIX] [STEPS]`.
use entmaxkv_models::{first_tokens, DataFiles, DenseAttention, Model};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let prefix = args.first().copied().unwrap_or(512);
    let steps = args.get(1).copied().unwrap_or(32);
    let files = DataFiles::default_location();
    let model = Model::load(&files.gguf)?;
    let text = DataFiles::read_text(&files.kjv)?;
    let toks = first_tokens(&model, &text, prefix + steps, false)?;
    let mut attn = DenseAttention::new(model.attention_shape())?;
    let t0 = Instant::now();
    model.prefill(&toks[..prefix], &mut attn)?;
    let t_prefill = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for (i, &t) in toks[prefix..].iter().enumerate() {
        model.step(t, prefix + i, &mut attn)?;
    }
    let t_steps = t1.elapsed().as_secs_f64();
    println!(
        "prefill {prefix} tokens: {t_prefill:.2}s; {steps} decode steps: {:.1} ms/step",
        1e3 * t_steps / steps as f64
    );
    Ok(())
}
