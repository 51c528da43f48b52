//! Perplexity of SmolLM2 on the fetched texts:
//! `cargo run --release -p entmaxkv-models --example ppl -- [N_TOKENS] [--bos] [--half-split] [--no-digit-split] [--ascii]`
//! (`--ascii` drops every non-ASCII character of the texts before tokenizing).
use entmaxkv_models::{first_tokens, perplexity, DataFiles, Model, RopeLayout};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(1024);
    let bos = args.iter().any(|a| a == "--bos");
    let files = DataFiles::default_location();
    if !files.missing().is_empty() {
        return Err(format!("missing {:?}: run scripts/fetch_models.sh", files.missing()).into());
    }
    let t0 = Instant::now();
    let mut model = Model::load(&files.gguf)?;
    if args.iter().any(|a| a == "--half-split") {
        model.set_rope_layout(RopeLayout::HalfSplit);
    }
    if args.iter().any(|a| a == "--no-digit-split") {
        model.tokenizer_mut().set_split_digits(false);
    }
    println!(
        "loaded in {:.2}s: {:?}",
        t0.elapsed().as_secs_f64(),
        model.config()
    );
    for (name, path) in [("kjv", &files.kjv), ("jargon", &files.jargon)] {
        let mut text = DataFiles::read_text(path)?;
        if args.iter().any(|a| a == "--ascii") {
            text.retain(|c| c.is_ascii());
        }
        let t1 = Instant::now();
        let toks = first_tokens(&model, &text, n, bos)?;
        let t_tok = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let p = perplexity(&model, &toks)?;
        println!(
            "{name}: first {n} tokens (bos={bos}) ppl {:.4} mean_nll {:.4} over {} predictions; tokenize {:.3}s forward {:.2}s",
            p.ppl,
            p.mean_nll,
            p.n_predicted,
            t_tok,
            t2.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
