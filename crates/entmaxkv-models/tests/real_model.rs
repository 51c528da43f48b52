//! End-to-end checks on the real SmolLM2-135M GGUF and texts. They need
//! `scripts/fetch_models.sh` to have run; otherwise each test prints a loud SKIPPED line
//! (with the missing paths) and returns.

use entmaxkv_models::*;
use std::time::Instant;

fn data() -> Option<DataFiles> {
    let f = DataFiles::default_location();
    let missing = f.missing();
    if missing.is_empty() {
        Some(f)
    } else {
        // Written straight to the process's stderr so libtest's output capture cannot hide it.
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED: run scripts/fetch_models.sh (missing {missing:?}; set ENTMAXKV_DATA to override {}) ***\n",
            f.dir.display()
        );
        None
    }
}

fn load(f: &DataFiles) -> Model {
    Model::load_verified(&f.gguf, SMOLLM2_GGUF_SHA256).expect("load SmolLM2")
}

#[test]
fn real_metadata_and_tokenizer() {
    let Some(f) = data() else { return };
    let m = load(&f);
    let c = m.config();
    assert_eq!(c.architecture, "llama");
    assert_eq!(c.n_layers, 30);
    assert_eq!((c.n_heads, c.n_kv_heads, c.head_dim), (9, 3, 64));
    assert_eq!((c.d_model, c.d_ff, c.vocab_size), (576, 1536, 49152));
    assert_eq!(c.context_length, 8192);
    assert_eq!(c.rope_theta, 1e5);
    assert!((c.rms_eps - 1e-5).abs() < 1e-12);
    assert!(c.tied_embeddings);
    let tok = m.tokenizer();
    assert_eq!(tok.pre_tokenizer(), "smollm");
    assert_eq!((tok.bos_id(), tok.eos_id()), (Some(1), Some(2)));
    assert!(!tok.add_bos());
    assert_eq!(tok.token(1), Some("<|im_start|>"));
    // Reference ids from HF `tokenizers` built from the same GGUF vocab/merges.
    let cases: [(&str, &[u32]); 5] = [
        (
            "In the beginning God created the heaven and the earth.",
            &[788, 260, 3616, 1839, 2312, 260, 10419, 284, 260, 3103, 30],
        ),
        ("Hello world", &[19556, 905]),
        (
            "The year 2024 had 365 days.",
            &[
                504, 713, 216, 34, 32, 34, 36, 761, 216, 35, 38, 37, 2009, 30,
            ],
        ),
        ("don't  stop\n\n  now", &[12420, 982, 216, 2853, 8866, 1209]),
        (
            "caf\u{e9} \u{2550}\u{2550} \u{fc}ber",
            &[83, 1939, 2756, 4636, 239, 234, 28916, 5549, 137, 593],
        ),
    ];
    for (s, want) in cases {
        assert_eq!(tok.encode(s).unwrap(), want, "{s:?}");
    }
    for path in [&f.kjv, &f.jargon] {
        let text = DataFiles::read_text(path).unwrap();
        let t0 = Instant::now();
        let ids = tok.encode(&text).unwrap();
        let dt = t0.elapsed().as_secs_f64();
        assert_eq!(
            tok.decode(&ids).unwrap(),
            text,
            "round trip {}",
            path.display()
        );
        eprintln!(
            "{}: {} tokens, encoded in {dt:.2}s",
            path.display(),
            ids.len()
        );
    }
}

#[test]
fn real_perplexity_and_decode_path() {
    let Some(f) = data() else { return };
    let m = load(&f);
    let kjv = DataFiles::read_text(&f.kjv).unwrap();
    let jargon = DataFiles::read_text(&f.jargon).unwrap();
    // First 1024 tokens of each file, no BOS (the GGUF says add_bos_token = false).
    let t0 = Instant::now();
    let kt = first_tokens(&m, &kjv, 1024, false).unwrap();
    let nll = m.token_nlls(&kt).unwrap();
    let p = Perplexity::from_nlls(&nll).unwrap();
    eprintln!("KJV ppl {:.4} ({:.1}s)", p.ppl, t0.elapsed().as_secs_f64());
    assert!((p.ppl - 3.7386).abs() < 0.02, "KJV ppl {}", p.ppl);
    let t0 = Instant::now();
    let jt = first_tokens(&m, &jargon, 1024, false).unwrap();
    let pj = perplexity(&m, &jt).unwrap();
    eprintln!(
        "Jargon ppl {:.4} ({:.1}s)",
        pj.ppl,
        t0.elapsed().as_secs_f64()
    );
    assert!((pj.ppl - 25.970).abs() < 0.15, "Jargon ppl {}", pj.ppl);

    // The plain GPT-2 regex (no digit isolation) reproduces the reference number 3.67 quoted
    // in the [models] issue; the GGUF's own `smollm` pre-tokenizer gives 3.7386 above.
    let mut m2 = load(&f);
    m2.tokenizer_mut().set_split_digits(false);
    let kt2 = first_tokens(&m2, &kjv, 1024, false).unwrap();
    let p2 = perplexity(&m2, &kt2).unwrap();
    eprintln!("KJV ppl, GPT-2 pre-tokenizer: {:.4}", p2.ppl);
    assert!(
        (p2.ppl - 3.6724).abs() < 0.02,
        "KJV ppl (gpt-2 pre) {}",
        p2.ppl
    );
    // The Jargon value (~32) with the same split once the text's non-ASCII
    // characters (box drawing, curly quotes, no-break spaces) are dropped, as an ASCII
    // decode with errors ignored does; the KJV text is pure ASCII, so this reading changes
    // nothing there (session 9: 32.9488; the file as it is gives 26.01).
    let jargon_ascii: String = jargon.chars().filter(char::is_ascii).collect();
    let jt2 = first_tokens(&m2, &jargon_ascii, 1024, false).unwrap();
    let pj2 = perplexity(&m2, &jt2).unwrap();
    eprintln!(
        "Jargon ppl, ASCII only, GPT-2 pre-tokenizer: {:.4}",
        pj2.ppl
    );
    assert!(
        (pj2.ppl - 32.949).abs() < 0.15,
        "Jargon ppl (ASCII, gpt-2 pre) {}",
        pj2.ppl
    );
    assert!(kjv.is_ascii(), "the KJV text is pure ASCII");
    drop(m2);

    // Decode path through DenseAttention: prefill 992 tokens, step the last 32.
    let prefix = 992;
    let mut attn = DenseAttention::new(m.attention_shape()).unwrap();
    let t0 = Instant::now();
    let dec = m.decode_nlls(&kt, prefix, &mut attn).unwrap();
    eprintln!(
        "decode path: prefill {prefix} + {} steps in {:.1}s",
        dec.len() - 1,
        t0.elapsed().as_secs_f64()
    );
    let max_diff = dec
        .iter()
        .zip(&nll[prefix - 1..])
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    eprintln!("decode vs teacher-forced max |dNLL| = {max_diff:.2e}");
    assert!(max_diff < 2e-3, "max |dNLL| {max_diff}");
}

#[test]
fn real_trace_capture() {
    let Some(f) = data() else { return };
    let m = load(&f);
    let kjv = DataFiles::read_text(&f.kjv).unwrap();
    let toks = first_tokens(&m, &kjv, 512, false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kjv-512.safetensors");
    let spec = TraceSpec {
        layers: vec![0, 29],
        positions: vec![100, 511],
        dtype: TraceDtype::F16,
        source: "kjv.txt tokens 0..512".into(),
        bos: false,
    };
    capture_traces(&m, &toks, &spec, &out).unwrap();
    let tr = Trace::load(&out).unwrap();
    assert_eq!(tr.meta.layers, vec![0, 29]);
    assert_eq!(tr.meta.n_tokens, 512);
    assert_eq!(tr.meta.rope_layout, RopeLayout::Interleaved);
    assert_eq!(tr.meta.scale, 0.125);
    assert_eq!(tr.tokens, toks);
    // Causality: a trace of a 101-token prefix has the same layer-0 keys on its rows.
    let spec2 = TraceSpec {
        layers: vec![0],
        positions: vec![100],
        ..spec
    };
    let out2 = dir.path().join("kjv-101.safetensors");
    capture_traces(&m, &toks[..101], &spec2, &out2).unwrap();
    let tr2 = Trace::load(&out2).unwrap();
    let (a, b) = (tr.layer(0).unwrap(), tr2.layer(0).unwrap());
    let close = |x: &[f32], y: &[f32]| {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|(a, b)| (a - b).abs() <= 1e-2 * (1.0 + b.abs()))
    };
    for kvh in 0..3 {
        let (x, y) = (a.keys(&tr.meta, kvh, 101), b.keys(&tr2.meta, kvh, 101));
        assert!(
            close(x.unwrap(), y.unwrap()),
            "keys of kv head {kvh} differ"
        );
    }
    for h in 0..9 {
        let (x, y) = (a.query(&tr.meta, 0, h), b.query(&tr2.meta, 0, h));
        assert!(close(x.unwrap(), y.unwrap()), "query of head {h} differs");
    }
}
