//! Every class of bad input returns a typed error naming the argument, and leaves the
//! cache unchanged.

use entmaxkv::attention::dense::{dense_decode, DenseDecoder};
use entmaxkv::attention::oracle::oracle_decode;
use entmaxkv::attention::AttentionParams;
use entmaxkv::cache::{CacheConfig, ChunkLayout, PagedKvCache, SeqId};
use entmaxkv::{DType, Error};

fn cache() -> (PagedKvCache, SeqId) {
    let mut c = PagedKvCache::new(
        CacheConfig::new(2, 4, 4)
            .with_page_size(4)
            .with_kv_dtype(DType::F32),
    )
    .unwrap();
    let id = c.add_sequence();
    let x: Vec<f32> = (0..5 * 8).map(|i| (i as f32 * 0.37).sin()).collect();
    c.append(id, &x, &x, ChunkLayout::TokenMajor).unwrap();
    (c, id)
}

fn assert_unchanged_after(
    f: impl FnOnce(&mut PagedKvCache, SeqId) -> Error,
    check: impl Fn(&Error) -> bool,
) {
    let (mut c, id) = cache();
    let before = c.clone();
    let e = f(&mut c, id);
    assert!(check(&e), "unexpected error: {e}");
    assert!(!e.to_string().is_empty());
    assert_eq!(c, before, "cache changed after a rejected call ({e})");
}

#[test]
fn append_shape_mismatch() {
    assert_unchanged_after(
        |c, id| {
            c.append(id, &[0.0f32; 7], &[0.0f32; 7], ChunkLayout::TokenMajor)
                .unwrap_err()
        },
        |e| matches!(e, Error::Length { arg: "k", .. }),
    );
    assert_unchanged_after(
        |c, id| {
            c.append(id, &[0.0f32; 8], &[0.0f32; 16], ChunkLayout::TokenMajor)
                .unwrap_err()
        },
        |e| matches!(e, Error::Length { arg: "v", .. }),
    );
    assert_unchanged_after(
        |c, id| {
            c.append(id, &[0.0f32; 0], &[0.0f32; 0], ChunkLayout::TokenMajor)
                .unwrap_err()
        },
        |e| matches!(e, Error::Length { arg: "k", .. }),
    );
}

#[test]
fn append_non_finite() {
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        assert_unchanged_after(
            |c, id| {
                let mut k = vec![0.0f32; 8];
                k[5] = bad;
                c.append(id, &k, &[0.0f32; 8], ChunkLayout::TokenMajor)
                    .unwrap_err()
            },
            |e| {
                matches!(
                    e,
                    Error::NonFinite {
                        arg: "k",
                        index: 5,
                        ..
                    }
                )
            },
        );
        assert_unchanged_after(
            |c, id| {
                let mut v = vec![0.0f32; 8];
                v[0] = bad;
                c.append(id, &[0.0f32; 8], &v, ChunkLayout::TokenMajor)
                    .unwrap_err()
            },
            |e| matches!(e, Error::NonFinite { arg: "v", .. }),
        );
    }
}

#[test]
fn append_unknown_sequence_and_capacity() {
    assert_unchanged_after(
        |c, _| {
            c.append(
                SeqId(99),
                &[0.0f32; 8],
                &[0.0f32; 8],
                ChunkLayout::TokenMajor,
            )
            .unwrap_err()
        },
        |e| matches!(e, Error::UnknownSequence { id: 99, .. }),
    );
    // 4 pages of 4 tokens, 2 used: 9 more tokens need 3 pages beyond the open one's slots.
    assert_unchanged_after(
        |c, id| {
            c.append(
                id,
                &[0.0f32; 8 * 12],
                &[0.0f32; 8 * 12],
                ChunkLayout::TokenMajor,
            )
            .unwrap_err()
        },
        |e| matches!(e, Error::OutOfPages { .. }),
    );
    assert_unchanged_after(
        |c, _| c.release(SeqId(42)).unwrap_err(),
        |e| matches!(e, Error::UnknownSequence { .. }),
    );
}

#[test]
fn bad_config() {
    let base = CacheConfig::new(2, 4, 4);
    for (cfg, arg) in [
        (base.clone().with_page_size(0), "page_size"),
        (CacheConfig::new(0, 4, 4), "num_kv_heads"),
        (CacheConfig::new(2, 0, 4), "head_dim"),
        (CacheConfig::new(2, 4, 0), "num_pages"),
        (base.clone().with_sketch_bits(9), "sketch_bits"),
    ] {
        match PagedKvCache::new(cfg) {
            Err(Error::InvalidArgument { arg: a, .. }) => assert_eq!(a, arg),
            other => panic!("expected InvalidArgument for {arg}, got {other:?}"),
        }
    }
}

fn decode_err(
    params: AttentionParams,
    q_len: usize,
    q_bad: Option<f32>,
    out_len: usize,
    seqs: Vec<SeqId>,
) -> Error {
    let (mut c, id) = cache();
    let seqs = if seqs.is_empty() { vec![id] } else { seqs };
    let mut q = vec![0.1f32; q_len];
    if let Some(b) = q_bad {
        q[1] = b;
    }
    let mut out = vec![0.0f32; out_len];
    let before = c.clone();
    let e1 = dense_decode(&c, &seqs, &q, &params, &mut out).unwrap_err();
    let e2 = oracle_decode(&c, &seqs, &q, &params).unwrap_err();
    assert_eq!(std::mem::discriminant(&e1), std::mem::discriminant(&e2));
    assert_eq!(c, before);
    let _ = &mut c;
    e1
}

#[test]
fn decode_bad_alpha() {
    for a in [0.5, 0.999, f64::NAN, f64::INFINITY, -1.0] {
        let e = decode_err(AttentionParams::new(2, a), 8, None, 8, vec![]);
        assert!(
            matches!(e, Error::InvalidArgument { arg: "alpha", .. }),
            "{e}"
        );
    }
}

#[test]
fn decode_heads_not_multiple_of_kv_heads() {
    let e = decode_err(AttentionParams::new(3, 1.5), 12, None, 12, vec![]);
    assert!(
        matches!(
            e,
            Error::Mismatch {
                arg: "num_heads",
                got: 3,
                expected: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn decode_shape_mismatch() {
    let e = decode_err(AttentionParams::new(2, 1.5), 7, None, 8, vec![]);
    assert!(matches!(e, Error::Length { arg: "q", .. }), "{e}");
}

#[test]
fn decode_non_finite_query() {
    let e = decode_err(AttentionParams::new(2, 1.5), 8, Some(f32::NAN), 8, vec![]);
    assert!(
        matches!(
            e,
            Error::NonFinite {
                arg: "q",
                index: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn decode_unknown_and_empty_sequence() {
    let e = decode_err(AttentionParams::new(2, 1.5), 8, None, 8, vec![SeqId(77)]);
    assert!(matches!(e, Error::UnknownSequence { id: 77, .. }), "{e}");
    let (mut c, _) = cache();
    let empty = c.add_sequence();
    let mut out = vec![0.0; 8];
    let e = dense_decode(
        &c,
        &[empty],
        &[0.1; 8],
        &AttentionParams::new(2, 1.5),
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, Error::EmptySequence { .. }), "{e}");
}

#[test]
fn decode_bad_scale_and_alibi() {
    let e = decode_err(
        AttentionParams::new(2, 1.5).with_scale(0.0),
        8,
        None,
        8,
        vec![],
    );
    assert!(
        matches!(e, Error::InvalidArgument { arg: "scale", .. }),
        "{e}"
    );
    let e = decode_err(
        AttentionParams::new(2, 1.5).with_alibi(vec![0.1]),
        8,
        None,
        8,
        vec![],
    );
    assert!(
        matches!(
            e,
            Error::Length {
                arg: "alibi_slopes",
                ..
            }
        ),
        "{e}"
    );
    let e = decode_err(
        AttentionParams::new(2, 1.5).with_alibi(vec![0.1, f32::NAN]),
        8,
        None,
        8,
        vec![],
    );
    assert!(
        matches!(
            e,
            Error::NonFinite {
                arg: "alibi_slopes",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn planned_decoder_rejects_other_batch_size() {
    let (c, id) = cache();
    let mut dec = DenseDecoder::new(&c, 2, 16, AttentionParams::new(2, 1.5)).unwrap();
    let mut out = vec![0.0; 8];
    let e = dec.run(&c, &[id], &[0.1; 8], &mut out).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Mismatch {
                arg: "seqs.len()",
                ..
            }
        ),
        "{e}"
    );
}
