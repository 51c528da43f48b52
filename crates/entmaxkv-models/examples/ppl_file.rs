//! Perplexity of the first N tokens of any text file:
//! `cargo run --release -p entmaxkv-models --example ppl_file -- FILE [N] [--bos]`.
use entmaxkv_models::{first_tokens, perplexity, DataFiles, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args.first().ok_or("usage: ppl_file FILE [N] [--bos]")?;
    let n: usize = args
        .iter()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1024);
    let bos = args.iter().any(|a| a == "--bos");
    let model = Model::load(DataFiles::default_location().gguf)?;
    let text = std::fs::read_to_string(file)?;
    let toks = first_tokens(&model, &text, n, bos)?;
    let p = perplexity(&model, &toks)?;
    println!(
        "{file}: n={n} bos={bos} ppl {:.4} ({} predictions)",
        p.ppl, p.n_predicted
    );
    Ok(())
}
