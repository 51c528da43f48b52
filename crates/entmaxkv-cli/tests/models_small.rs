//! Small end-to-end run of the real-model path through the `entmaxkv` binary: trace
//! capture (1K tokens, a few layers), trace eval, and eval (perplexity, greedy agreement,
//! needle) with dense and sparse decode attention. Needs `entmaxkv fetch`
//! (scripts/fetch_models.sh) to have filled `.data` (or `$ENTMAXKV_DATA`); otherwise it
//! prints a loud SKIPPED line and passes.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ENTMAXKV_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.data"));
    let need = ["SmolLM2-135M-Instruct.Q4_1.gguf", "kjv.txt", "jargon.txt"];
    let missing: Vec<_> = need.iter().filter(|f| !dir.join(f).is_file()).collect();
    if missing.is_empty() {
        Some(dir)
    } else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED models_small: missing {missing:?} in {} (run `entmaxkv fetch` or scripts/fetch_models.sh) ***\n",
            dir.display()
        );
        None
    }
}

fn entmaxkv(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_entmaxkv"))
        .args(args)
        .output()
        .expect("run entmaxkv");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "entmaxkv {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(p: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn group<'a>(r: &'a Value, method: &str, alpha: f64) -> &'a Value {
    r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["method"] == method && g["alpha"] == alpha && g["layer"].is_null())
        .unwrap_or_else(|| panic!("no group {method} α={alpha}"))
}

#[test]
fn small_real_model_path() {
    let Some(data) = data_dir() else { return };
    let data_s = data.to_string_lossy().to_string();
    let tmp = std::env::temp_dir().join(format!("entmaxkv-models-small-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let trace = tmp.join("kjv-1024.safetensors");
    let trace_s = trace.to_string_lossy().to_string();

    entmaxkv(&[
        "trace", "capture", "--data", &data_s, "--text", "kjv", "--tokens", "1024", "--layers",
        "0,2,14", "--last", "2", "--out", &trace_s,
    ]);
    assert!(trace.is_file() && tmp.join("kjv-1024.json").is_file());

    let tj = tmp.join("trace_eval.json");
    entmaxkv(&[
        "trace",
        "eval",
        &trace_s,
        "--alpha",
        "1,1.5",
        "--methods",
        "dense-entmax,topk,topk-full,gaussian-exact,gaussian-robust,certified",
        "--json",
        &tj.to_string_lossy(),
    ]);
    let r = json(&tj);
    for (m, a) in [
        ("dense-entmax", 1.0),
        ("dense-entmax", 1.5),
        ("topk-full", 1.5),
        ("certified", 1.5),
    ] {
        let s = &group(&r, m, a)["summary"];
        assert!(
            s["cosine"]["min"].as_f64().unwrap() > 0.99999,
            "{m} α={a}: {s}"
        );
        assert_eq!(s["n"], 3 * 2 * 9);
    }
    assert_eq!(
        group(&r, "certified", 1.5)["summary"]["certified_frac"],
        1.0
    );
    let robust = &group(&r, "gaussian-robust", 1.5)["summary"];
    assert!(robust["pages_kept"]["mean"].as_f64().unwrap() < 1.0);
    assert!(robust["recall"]["median"].as_f64().unwrap() > 0.99);

    let ej = tmp.join("eval.json");
    entmaxkv(&[
        "eval",
        "--data",
        &data_s,
        "--texts",
        "kjv",
        "--ppl-tokens",
        "300",
        "--ppl-prefix",
        "272",
        "--methods",
        "dense-softmax,topk-softmax@0.25,topk-softmax@1",
        "--needle-lengths",
        "256",
        "--needle-depths",
        "0.5",
        "--needle-gen",
        "6",
        "--json",
        &ej.to_string_lossy(),
    ]);
    let r = json(&ej);
    let tf = r["teacher_forced"][0][1].as_f64().unwrap();
    let rows = r["ppl"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let dense = &rows[0];
    assert_eq!(dense["method"], "dense-softmax");
    // The decode path with an f16 cache reproduces the f32 teacher-forced perplexity.
    let d = dense["ppl"].as_f64().unwrap();
    assert!(
        (d / tf - 1.0).abs() < 0.01,
        "decode ppl {d} vs teacher-forced {tf}"
    );
    assert_eq!(dense["greedy_agreement"], 1.0);
    // A full budget is dense (a top-k step that keeps every page runs the dense kernel).
    let full = &rows[2];
    assert!(
        (full["ppl"].as_f64().unwrap() / d - 1.0).abs() < 1e-4,
        "{full}"
    );
    assert!(rows[1]["pages_kept_frac"].as_f64().unwrap() < 0.5);
    assert_eq!(r["needle"].as_array().unwrap().len(), 3);
    let _ = std::fs::remove_dir_all(&tmp);
}
