//! Perplexity of 1024-token (or N) windows of any text file:
//! `cargo run --release -p entmaxkv-models --example ppl_file -- FILE [N] [--windows K] [--bos] [--no-digit-split]`
//! prints the perplexity of tokens `[k*N, (k+1)*N)` for `k < K` (each window a fresh sequence).
use entmaxkv_models::{perplexity, DataFiles, Model};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let file = args
        .first()
        .ok_or("usage: ppl_file FILE [N] [--windows K] [--bos]")?;
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let windows: usize = get("--windows")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    let bos = args.iter().any(|a| a == "--bos");
    let mut model = Model::load(DataFiles::default_location().gguf)?;
    if args.iter().any(|a| a == "--no-digit-split") {
        model.tokenizer_mut().set_split_digits(false);
    }
    let text = std::fs::read_to_string(file)?;
    let all = model.tokenizer().encode(&text)?;
    for k in 0..windows {
        let Some(w) = all.get(k * n..(k + 1) * n) else {
            break;
        };
        let mut toks = w.to_vec();
        if bos {
            toks.insert(0, model.tokenizer().bos_id().ok_or("no BOS")?);
        }
        let p = perplexity(&model, &toks)?;
        println!(
            "{file}: tokens {}..{} bos={bos} ppl {:.4}",
            k * n,
            (k + 1) * n,
            p.ppl
        );
    }
    Ok(())
}
