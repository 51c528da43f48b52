//! Every bad command line ends in one readable error line and a nonzero exit, never a panic.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_entmaxkv"))
        .args(args)
        .output()
        .expect("run entmaxkv");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn assert_clean_error(args: &[&str], needle: &str) {
    let (code, _out, err) = run(args);
    assert_ne!(code, 0, "{args:?} succeeded");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{args:?}: {err}");
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "{args:?}: expected `{needle}` in: {err}"
    );
}

#[test]
fn bench_bad_arguments() {
    assert_clean_error(&["bench", "--contexts", "0"], "context lengths");
    assert_clean_error(&["bench", "--contexts", "12Q"], "bad context length");
    assert_clean_error(
        &["bench", "--heads", "3", "--kv-heads", "2"],
        "not a multiple",
    );
    assert_clean_error(&["bench", "--alpha", "0.5"], "alpha");
    assert_clean_error(&["bench", "--alpha", "NaN"], "alpha");
    assert_clean_error(&["bench", "--budget", "0"], "budget");
    assert_clean_error(&["bench", "--page-size", "0"], "page-size");
    assert_clean_error(&["bench", "--dtype", "f8"], "dtype");
    assert_clean_error(&["bench", "--methods", "nonsense"], "unknown method");
    assert_clean_error(&["bench", "--preset", "huge"], "unknown preset");
    assert_clean_error(&["bench", "--gqa", "sometimes"], "gqa");
    assert_clean_error(&["bench", "--heads", "0"], "must be >= 1");
}

#[test]
fn check_bad_arguments() {
    assert_clean_error(&["check", "--methods", "topk-nonsense"], "unknown method");
    assert_clean_error(&["check", "--heads", "6"], "multiple of 4");
    assert_clean_error(&["check", "--methods", "gaussian-exact-full"], "-full");
}

#[test]
fn figure_bad_input() {
    assert_clean_error(&["figure", "/nonexistent/results.json"], "reading");
    let dir = std::env::temp_dir().join(format!("entmaxkv-fig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert_clean_error(&["figure", bad.to_str().unwrap()], "parsing");
}

#[test]
fn gpu_without_gpu_is_a_clean_error() {
    // On a machine with a GPU these may succeed; on CI (no GPU) they must fail cleanly.
    for args in [
        &[
            "bench",
            "--device",
            "cuda",
            "--contexts",
            "1K",
            "--iters",
            "1",
        ][..],
        &[
            "check",
            "--device",
            "cuda",
            "--contexts",
            "1K",
            "--dtypes",
            "f32",
        ][..],
        &["soak", "--device", "cuda", "--steps", "100"][..],
    ] {
        let (code, _out, err) = run(args);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        if code != 0 {
            assert!(
                err.starts_with("entmaxkv: error:") || err.contains("\nentmaxkv: error:"),
                "{args:?}: {err}"
            );
        }
    }
}

#[test]
fn unknown_subcommand_is_rejected() {
    let (code, _o, err) = run(&["frobnicate"]);
    assert_ne!(code, 0);
    assert!(!err.contains("panicked"));
}
