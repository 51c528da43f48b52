//! Print a GGUF file's metadata and tensor table: `cargo run --example gguf_info -- FILE`.
use entmaxkv_models::gguf::GgufFile;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: gguf_info FILE.gguf")?;
    let f = GgufFile::open(&path)?;
    for k in f.meta_keys() {
        let v = f.meta(k)?;
        let s = format!("{v:?}");
        let s: String = s.chars().take(160).collect();
        println!("{k} = {s}");
    }
    for n in f.tensor_names() {
        println!(
            "{n}: {:?} {}",
            f.tensor_shape(n).unwrap_or_default(),
            f.tensor_dtype(n).unwrap_or_default()
        );
    }
    Ok(())
}
