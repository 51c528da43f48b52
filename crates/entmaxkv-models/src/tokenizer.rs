//! Byte-level BPE tokenizer (GPT-2 style) built from a GGUF's `tokenizer.ggml.*` metadata.
//!
//! Pre-tokenisation follows llama.cpp's `smollm` pre-tokenizer (= the HF tokenizer.json of
//! SmolLM2: `Digits(individual_digits)` then `ByteLevel(use_regex)`):
//! 1. every `\p{N}` character is split off on its own;
//! 2. the GPT-2 regex
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
//!    splits the remaining pieces.
//!
//! Each piece's UTF-8 bytes are mapped through GPT-2's byte-to-unicode table and merged by
//! BPE rank. No BOS/EOS is added by [`Tokenizer::encode`]; the GGUF's
//! `tokenizer.ggml.add_bos_token` is exposed as [`Tokenizer::add_bos`] and honoured by
//! [`Tokenizer::encode_with_special`].

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use fancy_regex::Regex;
use std::collections::HashMap;

/// The GPT-2 pre-tokenizer regex (HF ByteLevel, `use_regex = true`).
pub const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// GPT-2's reversible byte -> printable unicode char table.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

/// Byte-level BPE tokenizer.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    tokens: Vec<String>,
    token_to_id: HashMap<String, u32>,
    /// (left, right) -> (rank, merged id)
    merges: HashMap<(u32, u32), (u32, u32)>,
    /// Per-id: true for control/special tokens (decoded literally).
    special: Vec<bool>,
    byte_to_char: [char; 256],
    char_to_byte: HashMap<char, u8>,
    /// Token id of each single byte (a few control bytes may be absent from the vocab).
    byte_id: [Option<u32>; 256],
    unk: Option<u32>,
    regex: Regex,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    pre: String,
}

impl Tokenizer {
    /// Build from a GGUF's metadata (`tokenizer.ggml.model` must be `gpt2`).
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let model = f.meta_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(Error::BadMetadata {
                key: "tokenizer.ggml.model".into(),
                reason: format!("only byte-level BPE (`gpt2`) is supported, got `{model}`"),
            });
        }
        let pre = if f.has_meta("tokenizer.ggml.pre") {
            f.meta_str("tokenizer.ggml.pre")?.to_string()
        } else {
            "default".to_string()
        };
        if pre != "smollm" && pre != "default" && pre != "gpt-2" {
            return Err(Error::BadMetadata {
                key: "tokenizer.ggml.pre".into(),
                reason: format!("unsupported pre-tokenizer `{pre}` (supported: smollm, gpt-2)"),
            });
        }
        let tokens: Vec<String> = f
            .meta_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(String::from)
            .collect();
        let merges = f.meta_str_array("tokenizer.ggml.merges")?;
        let types = if f.has_meta("tokenizer.ggml.token_type") {
            f.meta_int_array("tokenizer.ggml.token_type")?
        } else {
            vec![1; tokens.len()]
        };
        if types.len() != tokens.len() {
            return Err(Error::BadMetadata {
                key: "tokenizer.ggml.token_type".into(),
                reason: format!("{} entries for {} tokens", types.len(), tokens.len()),
            });
        }
        let opt_id = |key: &str| -> Result<Option<u32>> {
            if f.has_meta(key) {
                Ok(Some(f.meta_usize(key)? as u32))
            } else {
                Ok(None)
            }
        };
        let opt_bool = |key: &str, default: bool| -> Result<bool> {
            if f.has_meta(key) {
                f.meta_bool(key)
            } else {
                Ok(default)
            }
        };
        let mut tok = Self::new(
            tokens,
            &merges,
            // llama.cpp token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte
            types.iter().map(|&t| t == 3 || t == 4).collect(),
            pre == "smollm",
        )?;
        tok.bos = opt_id("tokenizer.ggml.bos_token_id")?;
        tok.eos = opt_id("tokenizer.ggml.eos_token_id")?;
        tok.unk = opt_id("tokenizer.ggml.unknown_token_id")?;
        tok.add_bos = opt_bool("tokenizer.ggml.add_bos_token", false)?;
        tok.add_eos = opt_bool("tokenizer.ggml.add_eos_token", false)?;
        tok.pre = pre;
        for (key, id) in [("bos", tok.bos), ("eos", tok.eos)] {
            if let Some(id) = id {
                if id as usize >= tok.tokens.len() {
                    return Err(Error::BadMetadata {
                        key: format!("tokenizer.ggml.{key}_token_id"),
                        reason: format!("id {id} >= vocab size {}", tok.tokens.len()),
                    });
                }
            }
        }
        Ok(tok)
    }

    /// Build from a vocabulary, merges (`"a b"` strings, in rank order) and a special flag
    /// per token. `split_digits` isolates every `\p{N}` char before the GPT-2 regex.
    pub fn new(
        tokens: Vec<String>,
        merges: &[&str],
        special: Vec<bool>,
        split_digits: bool,
    ) -> Result<Self> {
        if special.len() != tokens.len() {
            return Err(Error::Tokenizer(format!(
                "{} special flags for {} tokens",
                special.len(),
                tokens.len()
            )));
        }
        let mut token_to_id = HashMap::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            // First occurrence wins on duplicates.
            token_to_id.entry(t.clone()).or_insert(i as u32);
        }
        let byte_to_char = bytes_to_unicode();
        let mut char_to_byte = HashMap::with_capacity(256);
        let mut byte_id = [None; 256];
        for (b, &c) in byte_to_char.iter().enumerate() {
            char_to_byte.insert(c, b as u8);
            byte_id[b] = token_to_id.get(&c.to_string()).copied();
        }
        let n_bytes = byte_id.iter().filter(|b| b.is_some()).count();
        if n_bytes < 200 {
            return Err(Error::Tokenizer(format!(
                "only {n_bytes} of 256 single-byte tokens in the vocabulary: not a byte-level BPE vocab"
            )));
        }
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let (a, b) = m
                .split_once(' ')
                .ok_or_else(|| Error::Tokenizer(format!("merge {rank} `{m}` has no space")))?;
            let lookup = |s: &str| {
                token_to_id.get(s).copied().ok_or_else(|| {
                    Error::Tokenizer(format!("merge {rank} `{m}`: `{s}` not in vocabulary"))
                })
            };
            let (ia, ib) = (lookup(a)?, lookup(b)?);
            let merged = lookup(&format!("{a}{b}"))?;
            merge_map.entry((ia, ib)).or_insert((rank as u32, merged));
        }
        let regex = Regex::new(GPT2_PATTERN)
            .map_err(|e| Error::Tokenizer(format!("bad pre-tokenizer regex: {e}")))?;
        Ok(Self {
            tokens,
            token_to_id,
            merges: merge_map,
            special,
            byte_to_char,
            char_to_byte,
            byte_id,
            regex,
            bos: None,
            eos: None,
            unk: None,
            add_bos: false,
            add_eos: false,
            pre: if split_digits { "smollm" } else { "gpt-2" }.to_string(),
        })
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
    /// BOS id from metadata.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }
    /// Unknown-token id from metadata (used for bytes missing from the vocabulary).
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }
    /// EOS id from metadata.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    /// `tokenizer.ggml.add_bos_token` (false for SmolLM2).
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }
    /// `tokenizer.ggml.add_eos_token` (false when absent).
    pub fn add_eos(&self) -> bool {
        self.add_eos
    }
    /// Switch the pre-tokenizer: `true` = `smollm` (isolate every `\p{N}` char first; what
    /// the GGUF's `tokenizer.ggml.pre = "smollm"` and llama.cpp / HF specify), `false` =
    /// plain GPT-2 regex (digits grouped as ` ?\p{N}+`). Only for comparisons with tools
    /// that ignore the digit split.
    pub fn set_split_digits(&mut self, split: bool) {
        self.pre = if split { "smollm" } else { "gpt-2" }.to_string();
    }

    /// Pre-tokenizer name (`smollm` or `gpt-2`).
    pub fn pre_tokenizer(&self) -> &str {
        &self.pre
    }
    /// The vocabulary string of a token id (byte-level encoded, e.g. `Ġthe`).
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(|s| s.as_str())
    }
    /// The id of a vocabulary string, if present.
    pub fn token_id(&self, s: &str) -> Option<u32> {
        self.token_to_id.get(s).copied()
    }

    /// Split `text` into pre-tokenizer pieces (exposed for testing).
    pub fn pre_tokenize<'a>(&self, text: &'a str) -> Result<Vec<&'a str>> {
        let mut out = Vec::new();
        let split_digits = self.pre == "smollm";
        let regex_pieces = |piece: &'a str, out: &mut Vec<&'a str>| -> Result<()> {
            let mut last = 0;
            for m in self.regex.find_iter(piece) {
                let m = m.map_err(|e| Error::Tokenizer(format!("pre-tokenizer regex: {e}")))?;
                if m.start() > last {
                    out.push(&piece[last..m.start()]);
                }
                out.push(m.as_str());
                last = m.end();
            }
            if last < piece.len() {
                out.push(&piece[last..]);
            }
            Ok(())
        };
        if !split_digits {
            regex_pieces(text, &mut out)?;
            return Ok(out);
        }
        let mut start = 0;
        for (i, c) in text.char_indices() {
            if c.is_numeric() {
                if i > start {
                    regex_pieces(&text[start..i], &mut out)?;
                }
                let end = i + c.len_utf8();
                out.push(&text[i..end]);
                start = end;
            }
        }
        if start < text.len() {
            regex_pieces(&text[start..], &mut out)?;
        }
        Ok(out)
    }

    fn bpe_piece(&self, piece: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut syms = Vec::with_capacity(piece.len());
        for b in piece.bytes() {
            match self.byte_id[b as usize].or(self.unk) {
                Some(id) => syms.push(id),
                None => {
                    return Err(Error::Tokenizer(format!(
                        "byte {b:#04x} has no token and there is no unknown token"
                    )))
                }
            }
        }
        loop {
            let mut best: Option<(u32, usize, u32)> = None;
            for i in 0..syms.len().saturating_sub(1) {
                if let Some(&(rank, merged)) = self.merges.get(&(syms[i], syms[i + 1])) {
                    if best.is_none_or(|(r, _, _)| rank < r) {
                        best = Some((rank, i, merged));
                    }
                }
            }
            let Some((rank, _, merged)) = best else { break };
            // Merge every non-overlapping occurrence of this pair, left to right.
            let mut j = 0;
            let mut next = Vec::with_capacity(syms.len());
            while j < syms.len() {
                if j + 1 < syms.len()
                    && self.merges.get(&(syms[j], syms[j + 1])) == Some(&(rank, merged))
                {
                    next.push(merged);
                    j += 2;
                } else {
                    next.push(syms[j]);
                    j += 1;
                }
            }
            syms = next;
        }
        out.extend_from_slice(&syms);
        Ok(())
    }

    /// Encode plain text (special-token strings in `text` are treated as ordinary text).
    /// Adds no BOS/EOS.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut cache: HashMap<&str, Vec<u32>> = HashMap::new();
        let mut out = Vec::with_capacity(text.len() / 3);
        for piece in self.pre_tokenize(text)? {
            if let Some(ids) = cache.get(piece) {
                out.extend_from_slice(ids);
                continue;
            }
            let mut ids = Vec::new();
            self.bpe_piece(piece, &mut ids)?;
            out.extend_from_slice(&ids);
            if cache.len() < 1 << 20 {
                cache.insert(piece, ids);
            }
        }
        Ok(out)
    }

    /// Encode, then add BOS / EOS as the GGUF metadata says (`add_bos_token`, `add_eos_token`).
    pub fn encode_with_special(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend(self.encode(text)?);
        if self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Decode to raw bytes. Special tokens are rendered as their literal text.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            let tok = self.tokens.get(id as usize).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "token id {id} out of range (vocab {})",
                    self.tokens.len()
                ))
            })?;
            if self.special[id as usize] {
                out.extend_from_slice(tok.as_bytes());
                continue;
            }
            for c in tok.chars() {
                match self.char_to_byte.get(&c) {
                    Some(&b) => out.push(b),
                    None => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
        }
        Ok(out)
    }

    /// Decode to a string; fails if the ids do not form valid UTF-8 (e.g. a split character).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        String::from_utf8(self.decode_bytes(ids)?)
            .map_err(|e| Error::Tokenizer(format!("decoded bytes are not valid UTF-8: {e}")))
    }

    /// Decode, replacing invalid UTF-8 with U+FFFD.
    pub fn decode_lossy(&self, ids: &[u32]) -> Result<String> {
        Ok(String::from_utf8_lossy(&self.decode_bytes(ids)?).into_owned())
    }

    /// The byte-level char used for byte `b` (e.g. `Ġ` for space).
    pub fn byte_char(&self, b: u8) -> char {
        self.byte_to_char[b as usize]
    }
}
