//! ANEMLL `meta.yaml`.
//!
//! A ModelConfig JSON (`model_config.json` in the directory, or one given explicitly) takes precedence over it when
//! the parts are located ([`crate::files::ModelFiles`]).
//!
//! `meta.yaml` (written by ANEMLL's `generate_meta_yaml.py`) holds everything under `model_info:`; the runtime
//! keys sit under `model_info.parameters`. It names the parts with `.mlmodelc` file names, which are mapped to what
//! is on disk (`.mlmodelc`, `.mlmodelc.zip`, `.mlpackage`). Without a `meta.yaml` the parts are discovered from
//! file names. Dimensions are *not* taken from here: see [`crate::layout`], which reads them from the model files
//! and cross-checks them against this file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{LlmError, Result};

/// File name of the ANEMLL model description inside a model directory.
pub const META_FILE_NAME: &str = "meta.yaml";

/// A YAML scalar whose type varies between writers (`version: 0.3.4` is a string, `version: 0.4` a float,
/// `lut_ffn: 8` an integer, `lut_ffn: none` a string).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// A string.
    Str(String),
}

impl Scalar {
    /// The value as text, the way it was written (numbers in their shortest form).
    pub fn to_text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => s.clone(),
        }
    }
}

/// LUT (palettisation) setting of one part: bits per weight index, and the group size when written as
/// `"bits,group"` (0.3.5 `lut_*` strings such as `"6,4"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LutSetting {
    /// Bits per index (table size 2^bits).
    pub bits: u32,
    /// Channels per table, when given.
    pub group_size: Option<u32>,
}

/// The raw `model_info` mapping as written in the file.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawModelInfo {
    name: Option<Scalar>,
    version: Option<Scalar>,
    description: Option<Scalar>,
    architecture: Option<Scalar>,
    model_type: Option<Scalar>,
    #[serde(default)]
    parameters: RawParameters,
}

/// The raw `model_info.parameters` mapping: every field optional and loosely typed.
#[derive(Debug, Clone, Default, Deserialize)]
struct RawParameters {
    context_length: Option<Scalar>,
    batch_size: Option<Scalar>,
    state_length: Option<Scalar>,
    vocab_size: Option<Scalar>,
    num_chunks: Option<Scalar>,
    model_prefix: Option<Scalar>,
    lut_embeddings: Option<Scalar>,
    lut_ffn: Option<Scalar>,
    lut_lmhead: Option<Scalar>,
    embeddings: Option<Scalar>,
    lm_head: Option<Scalar>,
    ffn: Option<Scalar>,
    split_lm_head: Option<Scalar>,
    num_logits: Option<Scalar>,
    argmax_in_model: Option<Scalar>,
    lm_head_chunk_sizes: Option<Vec<Scalar>>,
    update_mask_prefill: Option<Scalar>,
    prefill_dynamic_slice: Option<Scalar>,
    sliding_window: Option<Scalar>,
    tokenizer_path: Option<Scalar>,
}

/// Top level of `meta.yaml`.
#[derive(Debug, Clone, Deserialize)]
struct RawMeta {
    model_info: RawModelInfo,
}

/// The parsed `meta.yaml` of an ANEMLL model (0.3.4 keys and the 0.3.5 additions).
///
/// Every field is optional: readers fall back to the model files for anything missing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AnemllMeta {
    /// The file this was read from.
    pub path: PathBuf,
    /// `name`.
    pub name: Option<String>,
    /// `version` (ANEMLL version), as text.
    pub version: Option<String>,
    /// `description`.
    pub description: Option<String>,
    /// `architecture` (`qwen3`, `qwen2`, `llama`, ...).
    pub architecture: Option<String>,
    /// `model_type` (0.3.5: `monolithic` for single-file models).
    pub model_type: Option<String>,
    /// `context_length`.
    pub context_length: Option<usize>,
    /// `batch_size`: tokens per `prefill` call.
    pub batch_size: Option<usize>,
    /// `state_length` (0.3.5).
    pub state_length: Option<usize>,
    /// `vocab_size` (0.3.5).
    pub vocab_size: Option<usize>,
    /// `num_chunks`.
    pub num_chunks: Option<usize>,
    /// `model_prefix`.
    pub model_prefix: Option<String>,
    /// `lut_embeddings` (`None` when absent or `none`).
    pub lut_embeddings: Option<LutSetting>,
    /// `lut_ffn`.
    pub lut_ffn: Option<LutSetting>,
    /// `lut_lmhead`.
    pub lut_lmhead: Option<LutSetting>,
    /// `embeddings` file name (usually ending in `.mlmodelc`).
    pub embeddings: Option<String>,
    /// `lm_head` file name.
    pub lm_head: Option<String>,
    /// `ffn` file name, with or without the `_chunk_NNofMM` suffix.
    pub ffn: Option<String>,
    /// `split_lm_head` (or the legacy `num_logits`): number of LM-head outputs.
    pub split_lm_head: Option<usize>,
    /// `argmax_in_model` (0.3.5): the LM head outputs `argmax_idx`/`argmax_val` instead of logits.
    pub argmax_in_model: Option<bool>,
    /// `lm_head_chunk_sizes` (0.3.5): vocabulary size of each LM-head split.
    pub lm_head_chunk_sizes: Option<Vec<usize>>,
    /// `update_mask_prefill` (0.3.5).
    pub update_mask_prefill: Option<bool>,
    /// `prefill_dynamic_slice` (0.3.5).
    pub prefill_dynamic_slice: Option<bool>,
    /// `sliding_window` (0.3.5).
    pub sliding_window: Option<usize>,
    /// `tokenizer_path`.
    pub tokenizer_path: Option<String>,
}

impl AnemllMeta {
    /// Reads and parses a `meta.yaml` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<AnemllMeta> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| LlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        AnemllMeta::parse(&text, path)
    }

    /// Parses `meta.yaml` text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<AnemllMeta> {
        let raw: RawMeta = serde_norway::from_str(text).map_err(|source| LlmError::Yaml {
            path: path.to_path_buf(),
            source,
        })?;
        let info = raw.model_info;
        let p = info.parameters;
        let conv = Converter { path };
        let split_lm_head = match p.split_lm_head {
            Some(v) => Some(conv.count("split_lm_head", &v)?),
            None => p
                .num_logits
                .map(|v| conv.count("num_logits", &v))
                .transpose()?,
        };
        let lm_head_chunk_sizes = p
            .lm_head_chunk_sizes
            .map(|sizes| {
                sizes
                    .iter()
                    .map(|v| conv.count("lm_head_chunk_sizes", v))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        Ok(AnemllMeta {
            path: path.to_path_buf(),
            name: info.name.map(|v| v.to_text()),
            version: info.version.map(|v| v.to_text()),
            description: info.description.map(|v| v.to_text()),
            architecture: info.architecture.map(|v| v.to_text()),
            model_type: info.model_type.map(|v| v.to_text()),
            context_length: conv.opt_count("context_length", p.context_length)?,
            batch_size: conv.opt_count("batch_size", p.batch_size)?,
            state_length: conv.opt_count("state_length", p.state_length)?,
            vocab_size: conv.opt_count("vocab_size", p.vocab_size)?,
            num_chunks: conv.opt_count("num_chunks", p.num_chunks)?,
            model_prefix: conv.opt_name("model_prefix", p.model_prefix)?,
            lut_embeddings: conv.lut("lut_embeddings", p.lut_embeddings)?,
            lut_ffn: conv.lut("lut_ffn", p.lut_ffn)?,
            lut_lmhead: conv.lut("lut_lmhead", p.lut_lmhead)?,
            embeddings: conv.opt_name("embeddings", p.embeddings)?,
            lm_head: conv.opt_name("lm_head", p.lm_head)?,
            ffn: conv.opt_name("ffn", p.ffn)?,
            split_lm_head,
            argmax_in_model: conv.opt_bool("argmax_in_model", p.argmax_in_model)?,
            lm_head_chunk_sizes,
            update_mask_prefill: conv.opt_bool("update_mask_prefill", p.update_mask_prefill)?,
            prefill_dynamic_slice: conv
                .opt_bool("prefill_dynamic_slice", p.prefill_dynamic_slice)?,
            sliding_window: conv.opt_count("sliding_window", p.sliding_window)?,
            tokenizer_path: conv.opt_name("tokenizer_path", p.tokenizer_path)?,
        })
    }
}

/// Typed conversion of loosely typed scalars, with errors naming the file and key.
struct Converter<'a> {
    path: &'a Path,
}

impl Converter<'_> {
    fn error(&self, key: &str, message: String) -> LlmError {
        LlmError::Meta {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            message,
        }
    }

    fn count(&self, key: &str, value: &Scalar) -> Result<usize> {
        let parsed = match value {
            Scalar::Int(i) => usize::try_from(*i).ok(),
            Scalar::Str(s) => s.trim().parse::<usize>().ok(),
            Scalar::Float(f) if f.fract() == 0.0 && *f >= 0.0 && *f < 1e15 => Some(*f as usize),
            _ => None,
        };
        parsed.ok_or_else(|| {
            self.error(
                key,
                format!(
                    "expected a non-negative integer, found `{}`",
                    value.to_text()
                ),
            )
        })
    }

    fn opt_count(&self, key: &str, value: Option<Scalar>) -> Result<Option<usize>> {
        value.map(|v| self.count(key, &v)).transpose()
    }

    fn opt_name(&self, key: &str, value: Option<Scalar>) -> Result<Option<String>> {
        match value {
            None => Ok(None),
            Some(Scalar::Str(s)) if s.trim().is_empty() => Ok(None),
            Some(Scalar::Str(s)) => Ok(Some(s.trim().to_string())),
            Some(other) => {
                Err(self.error(key, format!("expected a name, found `{}`", other.to_text())))
            }
        }
    }

    fn opt_bool(&self, key: &str, value: Option<Scalar>) -> Result<Option<bool>> {
        match value {
            None => Ok(None),
            Some(Scalar::Bool(b)) => Ok(Some(b)),
            Some(Scalar::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(Some(true)),
                "false" | "no" | "0" => Ok(Some(false)),
                _ => Err(self.error(key, format!("expected true or false, found `{s}`"))),
            },
            Some(Scalar::Int(0)) => Ok(Some(false)),
            Some(Scalar::Int(1)) => Ok(Some(true)),
            Some(other) => Err(self.error(
                key,
                format!("expected true or false, found `{}`", other.to_text()),
            )),
        }
    }

    fn lut(&self, key: &str, value: Option<Scalar>) -> Result<Option<LutSetting>> {
        let bad = |found: &str| {
            self.error(
                key,
                format!("expected LUT bits (e.g. 6, \"6,4\") or `none`, found `{found}`"),
            )
        };
        match value {
            None | Some(Scalar::Bool(false)) => Ok(None),
            Some(Scalar::Int(i)) => {
                let bits = u32::try_from(i)
                    .ok()
                    .filter(|b| (1..=16).contains(b))
                    .ok_or_else(|| bad(&i.to_string()))?;
                Ok(Some(LutSetting {
                    bits,
                    group_size: None,
                }))
            }
            Some(Scalar::Str(s)) => {
                let t = s.trim();
                if t.is_empty() || t.eq_ignore_ascii_case("none") || t.eq_ignore_ascii_case("false")
                {
                    return Ok(None);
                }
                let (bits_text, group_text) = match t.split_once(',') {
                    Some((b, g)) => (b.trim(), Some(g.trim())),
                    None => (t, None),
                };
                let bits = bits_text
                    .parse::<u32>()
                    .ok()
                    .filter(|b| (1..=16).contains(b))
                    .ok_or_else(|| bad(t))?;
                let group_size = group_text
                    .map(|g| {
                        g.parse::<u32>()
                            .ok()
                            .filter(|g| *g > 0)
                            .ok_or_else(|| bad(t))
                    })
                    .transpose()?;
                Ok(Some(LutSetting { bits, group_size }))
            }
            Some(other) => Err(bad(&other.to_text())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_and_lut_fields_accept_strings_and_numbers() {
        let text = "model_info:\n  version: 0.4\n  parameters:\n    context_length: 512\n    \
                    batch_size: '64'\n    lut_embeddings: none\n    lut_ffn: 4\n    lut_lmhead: \"6,4\"\n    \
                    argmax_in_model: true\n    lm_head_chunk_sizes: [10, 10, 9]\n    num_logits: 3\n";
        let meta = AnemllMeta::parse(text, Path::new("meta.yaml")).unwrap();
        assert_eq!(meta.version.as_deref(), Some("0.4"));
        assert_eq!(meta.context_length, Some(512));
        assert_eq!(meta.batch_size, Some(64));
        assert_eq!(meta.lut_embeddings, None);
        assert_eq!(
            meta.lut_ffn,
            Some(LutSetting {
                bits: 4,
                group_size: None
            })
        );
        assert_eq!(
            meta.lut_lmhead,
            Some(LutSetting {
                bits: 6,
                group_size: Some(4)
            })
        );
        assert_eq!(meta.argmax_in_model, Some(true));
        assert_eq!(meta.lm_head_chunk_sizes, Some(vec![10, 10, 9]));
        assert_eq!(meta.split_lm_head, Some(3));
    }

    #[test]
    fn bad_values_name_the_key() {
        let text = "model_info:\n  parameters:\n    context_length: lots\n";
        let err = AnemllMeta::parse(text, Path::new("m/meta.yaml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("context_length") && msg.contains("lots"),
            "{msg}"
        );
        let text = "model_info:\n  parameters:\n    lut_ffn: 99\n";
        let msg = AnemllMeta::parse(text, Path::new("meta.yaml"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("lut_ffn"), "{msg}");
    }
}
