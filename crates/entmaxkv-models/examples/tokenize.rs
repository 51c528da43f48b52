//! Tokenise a text file with the GGUF's tokenizer and print the ids as JSON:
//! `cargo run --release -p entmaxkv-models --example tokenize -- MODEL.gguf FILE [> ids.json]`.
use entmaxkv_models::{GgufFile, Tokenizer};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(model), Some(file)) = (args.next(), args.next()) else {
        return Err("usage: tokenize MODEL.gguf FILE".into());
    };
    let tok = Tokenizer::from_gguf(&GgufFile::open(model)?)?;
    let text = std::fs::read_to_string(&file)?;
    let t0 = Instant::now();
    let ids = tok.encode(&text)?;
    let dt = t0.elapsed().as_secs_f64();
    let back = tok.decode(&ids)?;
    eprintln!(
        "{file}: {} bytes -> {} tokens in {dt:.2}s; round trip {}",
        text.len(),
        ids.len(),
        if back == text { "OK" } else { "MISMATCH" }
    );
    println!("{}", serde_json::to_string(&ids)?);
    Ok(())
}
