//! Perplexity and data-file helpers.

use crate::error::{Error, Result};
use crate::gguf::SMOLLM2_GGUF_NAME;
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Result of a perplexity run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Perplexity {
    /// exp(mean NLL).
    pub ppl: f64,
    /// Mean negative log-likelihood (nats / token).
    pub mean_nll: f64,
    /// Number of predicted tokens (= tokens - 1).
    pub n_predicted: usize,
}

impl Perplexity {
    /// Summarise a list of per-token NLLs.
    pub fn from_nlls(nlls: &[f64]) -> Result<Self> {
        if nlls.is_empty() {
            return Err(Error::invalid("Perplexity::from_nlls", "nlls", "empty"));
        }
        let mean = nlls.iter().sum::<f64>() / nlls.len() as f64;
        Ok(Self {
            ppl: mean.exp(),
            mean_nll: mean,
            n_predicted: nlls.len(),
        })
    }
}

/// Teacher-forced perplexity of `tokens` (every token but the first is predicted).
/// Prepend a BOS yourself if you want one (SmolLM2's GGUF says `add_bos_token = false`).
pub fn perplexity(model: &Model, tokens: &[u32]) -> Result<Perplexity> {
    Perplexity::from_nlls(&model.token_nlls(tokens)?)
}

/// Tokenise `text` and keep its first `n` tokens (error if the text is shorter),
/// optionally prepending the tokenizer's BOS (then `n + 1` tokens are returned).
pub fn first_tokens(model: &Model, text: &str, n: usize, bos: bool) -> Result<Vec<u32>> {
    // The whole text is tokenised (under a second for the KJV) so the first n tokens are
    // exactly those of the full text, with no boundary effects from cutting it.
    let mut ids = model.tokenizer().encode(text)?;
    if ids.len() < n {
        return Err(Error::invalid(
            "first_tokens",
            "n",
            format!("text has only {} tokens, asked for {n}", ids.len()),
        ));
    }
    ids.truncate(n);
    if bos {
        let b = model.tokenizer().bos_id().ok_or_else(|| {
            Error::invalid("first_tokens", "bos", "tokenizer has no BOS id in metadata")
        })?;
        ids.insert(0, b);
    }
    Ok(ids)
}

/// Locations of the files `scripts/fetch_models.sh` produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFiles {
    pub dir: PathBuf,
    pub gguf: PathBuf,
    pub kjv: PathBuf,
    pub jargon: PathBuf,
}

impl DataFiles {
    /// Files under `dir`.
    pub fn in_dir(dir: impl AsRef<Path>) -> Self {
        let dir = dir.as_ref().to_path_buf();
        Self {
            gguf: dir.join(SMOLLM2_GGUF_NAME),
            kjv: dir.join("kjv.txt"),
            jargon: dir.join("jargon.txt"),
            dir,
        }
    }

    /// `$ENTMAXKV_DATA` if set, else `<workspace root>/.data`.
    pub fn default_location() -> Self {
        match std::env::var_os("ENTMAXKV_DATA") {
            Some(d) => Self::in_dir(d),
            None => Self::in_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.data")),
        }
    }

    /// The files that are missing (empty when everything was fetched).
    pub fn missing(&self) -> Vec<&Path> {
        [&self.gguf, &self.kjv, &self.jargon]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.as_path())
            .collect()
    }

    /// Read a text file.
    pub fn read_text(path: &Path) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| Error::io("read text", path, e))
    }
}
