//! The files of a converted ANEMLL model: the embeddings, FFN chunks and LM head parts, found from a ModelConfig
//! JSON, from `meta.yaml`, or from file names (`*_embeddings*`, `*_FFN_PF*_chunk_NNofMM*`, `*_lm_head*`), and
//! mapped to what is on disk (`.mlmodelc`, `.mlmodelc.zip`, `.mlpackage`).

use std::path::{Path, PathBuf};

use candle_coreml_format::container::{
    resolve_model_file as resolve_part, strip_model_extension, MODEL_EXTENSIONS,
};
use candle_coreml_hub::model_config::chunk_numbers;
use candle_coreml_hub::ModelConfig;

use crate::error::{LlmError, Result};
use crate::layout::{INFER_FUNCTION, PREFILL_FUNCTION};
use crate::meta::{AnemllMeta, LutSetting, META_FILE_NAME};

/// Where the parts of an ANEMLL model are on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFiles {
    /// The model directory.
    pub dir: PathBuf,
    /// The embeddings part.
    pub embeddings: PathBuf,
    /// The FFN (transformer) chunks, in order (chunk 1 first).
    pub ffn_chunks: Vec<PathBuf>,
    /// The LM head part.
    pub lm_head: PathBuf,
    /// The parsed `meta.yaml`, when the directory has one.
    pub meta: Option<AnemllMeta>,
    /// The ModelConfig the parts were found by, when one was used; its shapes are checked against the files.
    pub config: Option<ModelConfig>,
}

/// The names of the model files (any of [`MODEL_EXTENSIONS`]) in `dir`, sorted.
fn model_names_in(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|source| LlmError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LlmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if let Some(name) = entry.file_name().to_str() {
            if MODEL_EXTENSIONS.iter().any(|ext| name.ends_with(ext)) {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Builds a `_lutN` suffix for a part from its LUT setting.
fn lut_suffix(lut: Option<LutSetting>) -> String {
    lut.map(|l| format!("_lut{}", l.bits)).unwrap_or_default()
}

impl ModelFiles {
    /// Locates the parts of the ANEMLL model in `dir`: from its ModelConfig (`model_config.json`) when present, else
    /// from `meta.yaml` when present, else from file names.
    pub fn locate(dir: impl AsRef<Path>) -> Result<ModelFiles> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(LlmError::MissingPart {
                dir: dir.to_path_buf(),
                message: "not a directory (expected an ANEMLL model directory with model_config.json, meta.yaml \
                          or *_embeddings, *_FFN_PF*_chunk_NNofMM and *_lm_head model files)"
                    .to_string(),
            });
        }
        if let Some(config) = ModelConfig::find_in_dir(dir)? {
            return ModelFiles::from_config(dir, config);
        }
        let meta_path = dir.join(META_FILE_NAME);
        if meta_path.is_file() {
            let meta = AnemllMeta::from_file(&meta_path)?;
            ModelFiles::from_meta(dir, meta)
        } else {
            ModelFiles::discover(dir)
        }
    }

    /// Locates the parts named by a ModelConfig, resolved against `dir` (absolute names are taken as they are). The
    /// FFN must be unified (one multifunction file per chunk with `prefill` and `infer`, or `infer` alone): configs
    /// whose prefill and infer live in separate files are refused. `meta.yaml` in `dir`, when present, is read for
    /// its cross-checks and tokenizer path.
    pub fn from_config(dir: &Path, config: ModelConfig) -> Result<ModelFiles> {
        let refuse = |message: String| LlmError::Config {
            dir: dir.to_path_buf(),
            message,
        };
        let parts = config.part_paths(dir)?;
        if config.ffn_is_split() || parts.ffn_infer != parts.ffn_prefill {
            return Err(refuse(format!(
                "the FFN is split into separate prefill ({}) and infer ({}) files; the pipeline needs combined \
                 multifunction chunks (functions `{PREFILL_FUNCTION}` and `{INFER_FUNCTION}` in one file)",
                file_list(&parts.ffn_prefill),
                file_list(&parts.ffn_infer)
            )));
        }
        for (key, expected) in [
            (candle_coreml_hub::model_config::FFN_INFER, INFER_FUNCTION),
            (
                candle_coreml_hub::model_config::FFN_PREFILL,
                PREFILL_FUNCTION,
            ),
        ] {
            if let Some(function) = config.component(key).and_then(|c| c.function()) {
                if function != expected {
                    return Err(refuse(format!(
                        "component `{key}` calls function `{function}`; the pipeline calls `{expected}`"
                    )));
                }
            }
        }
        let meta_path = dir.join(META_FILE_NAME);
        let meta = if meta_path.is_file() {
            Some(AnemllMeta::from_file(&meta_path)?)
        } else {
            None
        };
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            embeddings: parts.embeddings,
            ffn_chunks: parts.ffn_infer,
            lm_head: parts.lm_head,
            meta,
            config: Some(config),
        })
    }

    /// Locates the parts named (or implied) by `meta`.
    pub fn from_meta(dir: &Path, meta: AnemllMeta) -> Result<ModelFiles> {
        if meta
            .model_type
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("monolithic"))
        {
            return Err(LlmError::Meta {
                path: meta.path.clone(),
                key: "model_type".to_string(),
                message:
                    "monolithic (single-file) ANEMLL models are not supported; expected separate \
                          embeddings, FFN chunk and LM head files"
                        .to_string(),
            });
        }
        let names = model_names_in(dir)?;
        let missing = |what: &str, tried: &str| {
            LlmError::MissingPart {
            dir: dir.to_path_buf(),
            message: format!(
                "{what} named by {} (`{tried}`) not found as .mlmodelc, .mlmodelc.zip or .mlpackage; \
                 model files present: [{}]",
                meta.path.display(),
                names.join(", ")
            ),
        }
        };
        let prefix = meta.model_prefix.clone();
        let embeddings_name = match (&meta.embeddings, &prefix) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => format!("{p}_embeddings{}", lut_suffix(meta.lut_embeddings)),
            (None, None) => return ModelFiles::discover_with_meta(dir, Some(meta)),
        };
        let lm_head_name = match (&meta.lm_head, &prefix) {
            (Some(n), _) => n.clone(),
            (None, Some(p)) => format!("{p}_lm_head{}", lut_suffix(meta.lut_lmhead)),
            (None, None) => return ModelFiles::discover_with_meta(dir, Some(meta)),
        };
        let ffn_stem = match (&meta.ffn, &prefix) {
            (Some(n), _) => strip_model_extension(n).to_string(),
            (None, Some(p)) => format!("{p}_FFN_PF{}", lut_suffix(meta.lut_ffn)),
            (None, None) => return ModelFiles::discover_with_meta(dir, Some(meta)),
        };
        let embeddings = resolve_part(dir, &embeddings_name)
            .ok_or_else(|| missing("embeddings", &embeddings_name))?;
        let lm_head =
            resolve_part(dir, &lm_head_name).ok_or_else(|| missing("LM head", &lm_head_name))?;

        // `ffn` may carry a chunk suffix (`..._chunk_01of02`); the base is what precedes it.
        let (ffn_base, suffix_count) = match ffn_stem.rfind("_chunk_") {
            Some(at) if chunk_numbers(&ffn_stem, false).is_some() => (
                ffn_stem.get(..at).unwrap_or(&ffn_stem).to_string(),
                chunk_numbers(&ffn_stem, false).map(|(_, m)| m),
            ),
            _ => (ffn_stem.clone(), None),
        };
        let on_disk = chunks_with_base(&names, &ffn_base);
        let count = match (meta.num_chunks, suffix_count) {
            (Some(n), Some(m)) if n != m => {
                return Err(LlmError::Meta {
                    path: meta.path.clone(),
                    key: "num_chunks".to_string(),
                    message: format!(
                        "{n} contradicts the `ffn` file name `{ffn_stem}` ({m} chunks)"
                    ),
                })
            }
            (Some(n), _) => n,
            (None, Some(m)) => m,
            (None, None) => on_disk.first().map(|(_, m, _)| *m).unwrap_or(1),
        };
        if count == 0 {
            return Err(LlmError::Meta {
                path: meta.path.clone(),
                key: "num_chunks".to_string(),
                message: "must be at least 1".to_string(),
            });
        }
        let mut ffn_chunks = Vec::with_capacity(count);
        for index in 1..=count {
            let name = format!("{ffn_base}_chunk_{index:02}of{count:02}");
            let path = resolve_part(dir, &name)
                .or_else(|| {
                    // Unpadded or differently padded numbers: match by value.
                    on_disk
                        .iter()
                        .find(|(n, m, _)| *n == index && *m == count)
                        .map(|(_, _, file)| dir.join(file))
                })
                .or_else(|| {
                    // A single-chunk model whose `ffn` names the file without any chunk suffix.
                    (count == 1).then(|| resolve_part(dir, &ffn_base)).flatten()
                })
                .ok_or_else(|| missing(&format!("FFN chunk {index} of {count}"), &name))?;
            ffn_chunks.push(path);
        }
        let other_counts: Vec<usize> = on_disk
            .iter()
            .map(|(_, m, _)| *m)
            .filter(|m| *m != count)
            .collect();
        if !other_counts.is_empty() {
            tracing::warn!(
                "{}: FFN files with other chunk counts ({other_counts:?}) are present beside the {count} chunk(s) used",
                dir.display()
            );
        }
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            embeddings,
            ffn_chunks,
            lm_head,
            meta: Some(meta),
            config: None,
        })
    }

    /// Locates the parts from file names (`*_embeddings*`, `*FFN_PF*_chunk_NNofMM*`, `*_lm_head*`), or, when the
    /// names do not follow that pattern, from what each model file's description says it is.
    pub fn discover(dir: &Path) -> Result<ModelFiles> {
        ModelFiles::discover_with_meta(dir, None)
    }

    fn discover_with_meta(dir: &Path, meta: Option<AnemllMeta>) -> Result<ModelFiles> {
        match ModelFiles::discover_by_name(dir, meta.clone()) {
            Ok(files) => Ok(files),
            Err(by_name) => {
                ModelFiles::discover_by_description(dir, meta).map_err(|by_description| {
                    let inner = |e: LlmError| match e {
                        LlmError::MissingPart { message, .. } => message,
                        other => other.to_string(),
                    };
                    LlmError::MissingPart {
                        dir: dir.to_path_buf(),
                        message: format!(
                            "by file name: {}; by model description: {}",
                            inner(by_name),
                            inner(by_description)
                        ),
                    }
                })
            }
        }
    }

    /// Classifies every model file in `dir` by its description: embeddings (`input_ids` in, no state), FFN chunk
    /// (an `infer` function or a KV state with a `causal_mask` input; ordered by `com.anemll.chunk_no`, else by
    /// the chunk numbers or the order of the names), LM head (`logitsN` or `argmax_idx` outputs).
    fn discover_by_description(dir: &Path, meta: Option<AnemllMeta>) -> Result<ModelFiles> {
        let names = model_names_in(dir)?;
        let mut embeddings = Vec::new();
        let mut lm_heads = Vec::new();
        let mut chunks: Vec<((usize, usize), PathBuf)> = Vec::new();
        for (position, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let description = candle_coreml_format::ModelFile::open(&path)?.description;
            let is_ffn = description
                .function(crate::layout::INFER_FUNCTION)
                .is_some()
                || description.functions.iter().any(|f| {
                    !f.states.is_empty() && f.input(crate::layout::names::CAUSAL_MASK).is_some()
                });
            let Some(main) = description.default() else {
                continue;
            };
            if is_ffn {
                let chunk_no = description
                    .metadata
                    .user_defined
                    .get("com.anemll.chunk_no")
                    .and_then(|v| v.trim().parse::<usize>().ok());
                let order = chunk_no
                    .or_else(|| chunk_numbers(name, false).map(|(i, _)| i))
                    .unwrap_or(position);
                chunks.push(((order, position), path));
            } else if main.input(crate::layout::names::INPUT_IDS).is_some()
                && main.states.is_empty()
            {
                embeddings.push(path);
            } else if main.outputs.iter().any(|o| {
                o.name == crate::layout::names::ARGMAX_IDX
                    || o.name
                        .strip_prefix(crate::layout::names::LOGITS_PREFIX)
                        .is_some_and(|n| n.is_empty() || n.parse::<usize>().is_ok())
            }) {
                lm_heads.push(path);
            }
        }
        let single = |what: &str, found: Vec<PathBuf>| -> Result<PathBuf> {
            let count = found.len();
            let mut found = found.into_iter();
            match (found.next(), count) {
                (Some(one), 1) => Ok(one),
                _ => Err(LlmError::MissingPart {
                    dir: dir.to_path_buf(),
                    message: format!("{count} {what} models found (expected one)"),
                }),
            }
        };
        let embeddings = single("embeddings", embeddings)?;
        let lm_head = single("LM head", lm_heads)?;
        if chunks.is_empty() {
            return Err(LlmError::MissingPart {
                dir: dir.to_path_buf(),
                message: "no FFN chunk model found".to_string(),
            });
        }
        chunks.sort();
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            embeddings,
            ffn_chunks: chunks.into_iter().map(|(_, p)| p).collect(),
            lm_head,
            meta,
            config: None,
        })
    }

    fn discover_by_name(dir: &Path, meta: Option<AnemllMeta>) -> Result<ModelFiles> {
        let names = model_names_in(dir)?;
        let listing = || format!("model files present: [{}]", names.join(", "));
        let pick = |what: &str, pattern: &str| -> Result<PathBuf> {
            let found: Vec<&String> = names
                .iter()
                .filter(|n| n.contains(pattern))
                .filter(|n| chunk_numbers(n, false).is_none())
                .collect();
            match found.as_slice() {
                [one] => Ok(dir.join(one)),
                [] => Err(LlmError::MissingPart {
                    dir: dir.to_path_buf(),
                    message: format!("no {what} model (`*{pattern}*`) found; {}", listing()),
                }),
                many => Err(LlmError::MissingPart {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "several {what} models ({}); add a meta.yaml or model_config.json naming the one to use",
                        many.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            }
        };
        let embeddings = pick("embeddings", "_embeddings")?;
        let lm_head = pick("LM head", "_lm_head")?;
        let mut chunk_files: Vec<(usize, usize, String)> = names
            .iter()
            .filter_map(|n| chunk_numbers(n, true).map(|(i, m)| (i, m, n.clone())))
            .collect();
        chunk_files.sort();
        let count = match chunk_files.first() {
            Some((_, m, _)) => *m,
            None => {
                return Err(LlmError::MissingPart {
                    dir: dir.to_path_buf(),
                    message: format!(
                        "no FFN chunk (`*FFN_PF*_chunk_NNofMM*`) found; {}",
                        listing()
                    ),
                })
            }
        };
        if chunk_files.iter().any(|(_, m, _)| *m != count) {
            return Err(LlmError::MissingPart {
                dir: dir.to_path_buf(),
                message: format!(
                    "FFN chunk files of different chunk counts; add a meta.yaml or model_config.json: [{}]",
                    chunk_files
                        .iter()
                        .map(|c| c.2.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut ffn_chunks = Vec::with_capacity(count);
        for index in 1..=count {
            let same: Vec<&(usize, usize, String)> =
                chunk_files.iter().filter(|(i, _, _)| *i == index).collect();
            match same.as_slice() {
                [one] => ffn_chunks.push(dir.join(&one.2)),
                [] => {
                    return Err(LlmError::MissingPart {
                        dir: dir.to_path_buf(),
                        message: format!("FFN chunk {index} of {count} is missing; {}", listing()),
                    })
                }
                many => {
                    return Err(LlmError::MissingPart {
                        dir: dir.to_path_buf(),
                        message: format!(
                            "several files for FFN chunk {index} of {count} ({}); add a meta.yaml or model_config.json",
                            many.iter()
                                .map(|c| c.2.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    })
                }
            }
        }
        Ok(ModelFiles {
            dir: dir.to_path_buf(),
            embeddings,
            ffn_chunks,
            lm_head,
            meta,
            config: None,
        })
    }
}

/// Paths joined by `, ` for messages.
fn file_list(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The FFN chunk files among `names` whose name starts with `base` followed by the chunk suffix:
/// `(index, count, file name)`.
fn chunks_with_base(names: &[String], base: &str) -> Vec<(usize, usize, String)> {
    let mut found: Vec<(usize, usize, String)> = names
        .iter()
        .filter(|n| {
            n.strip_prefix(base)
                .is_some_and(|rest| rest.starts_with("_chunk_"))
        })
        .filter_map(|n| chunk_numbers(n, false).map(|(i, m)| (i, m, n.clone())))
        .collect();
    found.sort();
    found
}
