//! Tokenizer tests on the synthetic vocabulary (no fetched data needed).
mod common;

use entmaxkv_models::tokenizer::{bytes_to_unicode, Tokenizer};
use entmaxkv_models::GgufFile;

fn tiny_tok() -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.gguf");
    common::write_tiny_gguf(&p, &common::Tweak::default());
    Tokenizer::from_gguf(&GgufFile::open(&p).unwrap()).unwrap()
}

#[test]
fn byte_table_is_gpt2() {
    let t = bytes_to_unicode();
    let mut seen = std::collections::HashSet::new();
    assert!(t.iter().all(|c| seen.insert(*c)));
    assert_eq!(t[b' ' as usize], 'Ġ');
    assert_eq!(t[b'\n' as usize], 'Ċ');
    assert_eq!(t[b'a' as usize], 'a');
    assert_eq!(t[0], 'Ā');
}

#[test]
fn pre_tokenizer_matches_hf_smollm() {
    let tok = tiny_tok();
    // Reference: HF tokenizers Sequence[Digits(individual), ByteLevel(use_regex)].
    let pieces = tok.pre_tokenize("Hello  world 123's\n\nfoo").unwrap();
    assert_eq!(
        pieces,
        ["Hello", " ", " world", " ", "1", "2", "3", "'s", "\n", "\n", "foo"]
    );
}

#[test]
fn merges_apply_by_rank() {
    let tok = tiny_tok();
    let id = |s: &str| tok.token_id(s).unwrap();
    assert_eq!(tok.encode("the").unwrap(), vec![id("t"), id("he")]);
    assert_eq!(tok.encode(" the").unwrap(), vec![id("Ġthe")]);
    assert_eq!(
        tok.encode("the the").unwrap(),
        vec![id("t"), id("he"), id("Ġthe")]
    );
}

#[test]
fn round_trip_and_specials() {
    let tok = tiny_tok();
    for s in [
        "",
        "plain ascii, with punctuation!?",
        "digits 0123456789 and ½ ² ٣",
        "tabs\tand\r\nnewlines\n\n\n   indented",
        "unicode: café ══ über 日本語 🦀",
        "   leading and trailing   ",
    ] {
        let ids = tok.encode(s).unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), s);
    }
    assert_eq!(tok.decode(&[1, 2]).unwrap(), "<|im_start|><|im_end|>");
    assert!(tok.decode(&[tok.vocab_size() as u32]).is_err());
    assert_eq!(
        tok.encode_with_special("x").unwrap(),
        tok.encode("x").unwrap()
    );
    // A split multi-byte char is not valid UTF-8: decode errs, decode_lossy does not.
    let ids = tok.encode("é").unwrap();
    assert_eq!(ids.len(), 2);
    assert!(tok.decode(&ids[..1]).is_err());
    assert_eq!(tok.decode_lossy(&ids[..1]).unwrap(), "\u{fffd}");
}
