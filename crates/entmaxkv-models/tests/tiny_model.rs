//! Model, decode path, trace and error handling on a synthetic tiny GGUF (no fetched data).
mod common;

use common::*;
use entmaxkv_models::*;

fn tiny(tweak: &Tweak) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    write_tiny_gguf(&p, tweak);
    (dir, p)
}

fn sample_tokens(n: usize) -> Vec<u32> {
    let v = vocab_size() as u32;
    (0..n as u32).map(|i| (i * 37 + 11) % v).collect()
}

#[test]
fn config_and_shapes() {
    let (_d, p) = tiny(&Tweak::default());
    let m = Model::load(&p).unwrap();
    let c = m.config();
    assert_eq!(c.n_layers, LAYERS);
    assert_eq!(
        (c.n_heads, c.n_kv_heads, c.head_dim),
        (HEADS, KV_HEADS, HEAD_DIM)
    );
    assert_eq!(c.d_ff, D_FF);
    assert_eq!(c.vocab_size, vocab_size());
    assert!(c.tied_embeddings);
    assert_eq!(c.rope_layout, RopeLayout::Interleaved);
    let a = m.attention_shape();
    assert_eq!(a.group(), 2);
    assert_eq!(a.kv_head(3), 1);
    assert!((a.scale - 1.0 / (HEAD_DIM as f32).sqrt()).abs() < 1e-7);
    let toks = sample_tokens(10);
    let logits = m.forward(&toks).unwrap();
    assert_eq!(logits.dims(), &[10, vocab_size()]);
    assert_eq!(m.tokenizer().bos_id(), Some(1));
    assert!(!m.tokenizer().add_bos());
}

#[test]
fn attention_chunking_does_not_change_results() {
    let (_d, p) = tiny(&Tweak::default());
    let mut m = Model::load(&p).unwrap();
    let toks = sample_tokens(23);
    let a = m.token_nlls(&toks).unwrap();
    m.attn_chunk = 4;
    let b = m.token_nlls(&toks).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "{x} vs {y}");
    }
}

#[test]
fn decode_path_matches_teacher_forced() {
    let (_d, p) = tiny(&Tweak::default());
    let m = Model::load(&p).unwrap();
    let toks = sample_tokens(30);
    let tf = m.token_nlls(&toks).unwrap();
    for prefix in [1, 7, 29] {
        let mut attn = DenseAttention::new(m.attention_shape()).unwrap();
        let dec = m.decode_nlls(&toks, prefix, &mut attn).unwrap();
        assert_eq!(dec.len(), toks.len() - prefix);
        assert_eq!(attn.len(0), toks.len() - 1);
        for (i, (x, y)) in dec.iter().zip(&tf[prefix - 1..]).enumerate() {
            assert!((x - y).abs() < 1e-4, "prefix {prefix} pos {i}: {x} vs {y}");
        }
    }
}

/// Records what the model hands to a DecodeAttention backend (delegating to dense).
struct Recorder {
    inner: DenseAttention,
    prefill_k: Vec<Vec<f32>>,
}

impl DecodeAttention for Recorder {
    fn prefill(&mut self, layer: usize, k: &[f32], v: &[f32], t: usize) -> Result<()> {
        self.prefill_k.push(k.to_vec());
        self.inner.prefill(layer, k, v, t)
    }
    fn step(&mut self, l: usize, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32]) -> Result<()> {
        self.inner.step(l, q, k, v, out)
    }
}

#[test]
fn trace_round_trip_f32_and_f16() {
    let (d, p) = tiny(&Tweak::default());
    let m = Model::load(&p).unwrap();
    let toks = sample_tokens(40);
    let mut rec = Recorder {
        inner: DenseAttention::new(m.attention_shape()).unwrap(),
        prefill_k: vec![],
    };
    m.prefill(&toks, &mut rec).unwrap();
    for dtype in [TraceDtype::F32, TraceDtype::F16] {
        let out = d.path().join(format!("t-{dtype:?}.safetensors"));
        let spec = TraceSpec {
            layers: vec![1, 0, 1],
            positions: TraceSpec::last_positions(toks.len(), 3),
            dtype,
            source: "synthetic".into(),
            bos: false,
        };
        let meta = capture_traces(&m, &toks, &spec, &out).unwrap();
        assert!(sidecar_path(&out).is_file());
        let tr = Trace::load(&out).unwrap();
        assert_eq!(tr.meta, meta);
        assert_eq!(tr.meta.layers, vec![0, 1]);
        assert_eq!(tr.meta.positions, vec![37, 38, 39]);
        assert_eq!(tr.meta.gqa_group, 2);
        assert_eq!(tr.tokens, toks);
        let tol = if dtype == TraceDtype::F32 { 1e-6 } else { 1e-2 };
        for l in 0..LAYERS {
            let lt = tr.layer(l).unwrap();
            assert_eq!(lt.q.len(), 3 * HEADS * HEAD_DIM);
            assert_eq!(lt.k.len(), KV_HEADS * 40 * HEAD_DIM);
            for (a, b) in lt.k.iter().zip(&rec.prefill_k[l]) {
                assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{a} vs {b}");
            }
            assert_eq!(lt.keys(&tr.meta, 1, 5).unwrap().len(), 5 * HEAD_DIM);
            assert_eq!(lt.values(&tr.meta, 1, 40).unwrap().len(), 40 * HEAD_DIM);
            assert_eq!(lt.query(&tr.meta, 2, 3).unwrap().len(), HEAD_DIM);
            assert!(lt.query(&tr.meta, 3, 0).is_none());
            assert!(lt.query(&tr.meta, 0, HEADS).is_none());
            assert!(lt.keys(&tr.meta, KV_HEADS, 1).is_none());
            assert!(lt.keys(&tr.meta, 0, 41).is_none());
        }
        // Without the sidecar the header copy is used.
        std::fs::remove_file(sidecar_path(&out)).unwrap();
        assert_eq!(Trace::load(&out).unwrap().meta, meta);
    }
}

#[test]
fn trace_rejects_bad_spec() {
    let (d, p) = tiny(&Tweak::default());
    let m = Model::load(&p).unwrap();
    let toks = sample_tokens(8);
    let out = d.path().join("x.safetensors");
    let base = TraceSpec {
        layers: vec![0],
        positions: vec![7],
        dtype: TraceDtype::F32,
        source: String::new(),
        bos: false,
    };
    let bad = [
        TraceSpec {
            positions: vec![8],
            ..base.clone()
        },
        TraceSpec {
            positions: vec![],
            ..base.clone()
        },
        TraceSpec {
            layers: vec![LAYERS],
            ..base.clone()
        },
        TraceSpec {
            layers: vec![],
            ..base.clone()
        },
    ];
    for s in bad {
        assert!(matches!(
            capture_traces(&m, &toks, &s, &out),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        capture_traces(&m, &[], &base, &out),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        Trace::load(d.path().join("missing.safetensors")),
        Err(Error::Io { .. })
    ));
    std::fs::write(d.path().join("junk.safetensors"), b"not a safetensors file").unwrap();
    assert!(Trace::load(d.path().join("junk.safetensors")).is_err());
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Model::load(dir.path().join("nope.gguf")),
        Err(Error::Io { .. })
    ));
    let junk = dir.path().join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").unwrap();
    assert!(matches!(Model::load(&junk), Err(Error::Gguf { .. })));

    let (_d, p) = tiny(&Tweak {
        drop_tensor: Some("blk.1.ffn_up.weight".into()),
        ..Default::default()
    });
    match Model::load(&p) {
        Err(Error::MissingTensor { name }) => assert_eq!(name, "blk.1.ffn_up.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    let (_d, p) = tiny(&Tweak {
        bad_q_shape: true,
        ..Default::default()
    });
    assert!(matches!(Model::load(&p), Err(Error::TensorShape { .. })));
    let (_d, p) = tiny(&Tweak {
        drop_meta: Some("llama.block_count".into()),
        ..Default::default()
    });
    assert!(matches!(
        Model::load(&p),
        Err(Error::MissingMetadata { .. })
    ));

    let (_d, p) = tiny(&Tweak::default());
    assert!(matches!(
        Model::load_verified(&p, SMOLLM2_GGUF_SHA256),
        Err(Error::Checksum { .. })
    ));
    let sha = sha256_file(&p).unwrap();
    let m = Model::load_verified(&p, &sha).unwrap();
    let v = vocab_size() as u32;
    assert!(matches!(
        m.forward(&[0, v]),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(m.forward(&[]), Err(Error::InvalidArgument { .. })));
    assert!(matches!(
        m.token_nlls(&[3]),
        Err(Error::InvalidArgument { .. })
    ));
    let mut attn = DenseAttention::new(m.attention_shape()).unwrap();
    assert!(matches!(
        m.decode_nlls(&[1, 2, 3], 3, &mut attn),
        Err(Error::InvalidArgument { .. })
    ));
    let mut out = vec![0.0; HEADS * HEAD_DIM];
    assert!(matches!(
        attn.step(0, &[0.0; 3], &[0.0; 16], &[0.0; 16], &mut out),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        attn.step(LAYERS, &out.clone(), &[0.0; 16], &[0.0; 16], &mut out),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn dense_attention_matches_naive() {
    let shape = AttentionShape {
        n_layers: 1,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 3,
        scale: 0.5,
    };
    let mut a = DenseAttention::new(shape).unwrap();
    let t = 5;
    let f = |i: usize| ((i * 7919) % 23) as f32 / 7.0 - 1.5;
    let k: Vec<f32> = (0..2 * t * 3).map(f).collect();
    let v: Vec<f32> = (0..2 * t * 3).map(|i| f(i + 5)).collect();
    a.prefill(0, &k, &v, t).unwrap();
    let q: Vec<f32> = (0..12).map(|i| f(i + 11)).collect();
    let kn: Vec<f32> = (0..6).map(|i| f(i + 3)).collect();
    let vn: Vec<f32> = (0..6).map(|i| f(i + 9)).collect();
    let mut out = vec![0.0; 12];
    a.step(0, &q, &kn, &vn, &mut out).unwrap();
    for h in 0..4 {
        let kvh = h / 2;
        let keys: Vec<&[f32]> = (0..t)
            .map(|j| &k[(kvh * t + j) * 3..(kvh * t + j + 1) * 3])
            .chain([&kn[kvh * 3..kvh * 3 + 3]])
            .collect();
        let vals: Vec<&[f32]> = (0..t)
            .map(|j| &v[(kvh * t + j) * 3..(kvh * t + j + 1) * 3])
            .chain([&vn[kvh * 3..kvh * 3 + 3]])
            .collect();
        let s: Vec<f64> = keys
            .iter()
            .map(|kk| 0.5 * (0..3).map(|i| (q[h * 3 + i] * kk[i]) as f64).sum::<f64>())
            .collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
        for i in 0..3 {
            let want: f64 = s
                .iter()
                .zip(&vals)
                .map(|(x, vv)| (x - m).exp() / z * vv[i] as f64)
                .sum();
            assert!((out[h * 3 + i] as f64 - want).abs() < 1e-5);
        }
    }
    assert_eq!(a.len(0), t + 1);
}
