//! Capture Q/K/V traces from SmolLM2 on a fetched text.
//!
//! `cargo run --release -p entmaxkv-models --example capture -- \
//!     [--text kjv|jargon|PATH] [--tokens 8192] [--layers all|0,15,29] [--last 4 | --positions 100,200] \
//!     [--dtype f16|f32] [--bos] [--out .data/traces/kjv-8k.safetensors]`
use entmaxkv_models::{
    capture_traces, first_tokens, DataFiles, Model, Trace, TraceDtype, TraceSpec,
};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |k: &str| {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let files = DataFiles::default_location();
    let text_arg = get("--text").unwrap_or_else(|| "kjv".into());
    let text_path = match text_arg.as_str() {
        "kjv" => files.kjv.clone(),
        "jargon" => files.jargon.clone(),
        p => PathBuf::from(p),
    };
    let n: usize = get("--tokens")
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(8192);
    let bos = args.iter().any(|a| a == "--bos");
    let dtype = match get("--dtype").as_deref() {
        Some("f32") => TraceDtype::F32,
        None | Some("f16") => TraceDtype::F16,
        Some(o) => return Err(format!("--dtype {o}: expected f16 or f32").into()),
    };
    let model = Model::load(&files.gguf)?;
    let layers: Vec<usize> = match get("--layers").as_deref() {
        None | Some("all") => (0..model.config().n_layers).collect(),
        Some(s) => s
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()?,
    };
    let text = DataFiles::read_text(&text_path)?;
    let tokens = first_tokens(&model, &text, n, bos)?;
    let positions: Vec<usize> = match get("--positions") {
        Some(s) => s
            .split(',')
            .map(|x| x.trim().parse())
            .collect::<Result<_, _>>()?,
        None => TraceSpec::last_positions(
            tokens.len(),
            get("--last").map(|s| s.parse()).transpose()?.unwrap_or(4),
        ),
    };
    let out = get("--out").map(PathBuf::from).unwrap_or_else(|| {
        files
            .dir
            .join("traces")
            .join(format!("{text_arg}-{n}.safetensors"))
    });
    let spec = TraceSpec {
        layers,
        positions,
        dtype,
        source: format!(
            "{} tokens 0..{n}{}",
            text_path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            if bos { " (BOS prepended)" } else { "" }
        ),
        bos,
    };
    let t0 = Instant::now();
    let meta = capture_traces(&model, &tokens, &spec, &out)?;
    let dt = t0.elapsed().as_secs_f64();
    let size = std::fs::metadata(&out)?.len();
    println!(
        "wrote {} ({:.1} MB, {} layers, {} positions, T={}) in {dt:.1}s",
        out.display(),
        size as f64 / 1e6,
        meta.layers.len(),
        meta.positions.len(),
        meta.n_tokens
    );
    let t1 = Instant::now();
    let tr = Trace::load(&out)?;
    println!(
        "reloaded in {:.2}s: {} layers",
        t1.elapsed().as_secs_f64(),
        tr.layers.len()
    );
    Ok(())
}
