//! `ModelConfig`: a JSON description of a multi-part Core ML LLM (which file is which component, the tensors each
//! takes and returns, and the model's overall shapes).
//!
//! The schema is the seed `candle-coreml` crate's: `model_info` (`model_id`, `path`, `model_type`,
//! `discovered_at`), `shapes` (`batch_size`, `context_length`, `hidden_size`, `vocab_size`), `components` keyed by
//! role (`embeddings`, `ffn_prefill`, `ffn_infer`, `lm_head`) with `file_path`, `inputs`/`outputs` (name → `{name,
//! shape, data_type}`), `functions` and `input_order`, `naming` (deprecated file patterns) and `ffn_execution`
//! (`unified`: one multifunction file for prefill and infer; `split`: separate files). Old files load unchanged
//! (unknown keys such as `file_pattern` are ignored). Optional extensions, omitted from the JSON when unused:
//! - `chunk_files` on FFN components: every chunk's file, in execution order (the seed could express one file only);
//! - `states` on a component: the state tensors its functions read and write (e.g. the KV cache);
//! - `output_order` on a component: the declared output order, which fixes how split logits (`logits1..N`) are
//!   concatenated.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use candle_coreml_format::container::{resolve_model_file, strip_model_extension};
use candle_coreml_format::description::{
    FeatureDescription, FeatureKind, FunctionDescription, ShapeFlexibility,
};
use candle_coreml_format::mil::DataType;
use candle_coreml_format::ModelFile;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, HubError, Result};

/// File name under which a model directory may carry its ModelConfig.
pub const CONFIG_FILE_NAME: &str = "model_config.json";

/// Component key of the embeddings part.
pub const EMBEDDINGS: &str = "embeddings";
/// Component key of the FFN part run on a batch of prompt tokens.
pub const FFN_PREFILL: &str = "ffn_prefill";
/// Component key of the FFN part run on one token.
pub const FFN_INFER: &str = "ffn_infer";
/// Component key of the LM head.
pub const LM_HEAD: &str = "lm_head";

/// A whole model: identification, overall shapes and components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Where the model came from and its architecture.
    pub model_info: ModelInfo,
    /// Overall shapes.
    pub shapes: ShapeConfig,
    /// Components keyed by role (`embeddings`, `ffn_prefill`, `ffn_infer`, `lm_head`).
    pub components: BTreeMap<String, ComponentConfig>,
    /// Deprecated file-name patterns (kept so old files round-trip).
    #[serde(default)]
    pub naming: NamingConfig,
    /// `unified` (one multifunction FFN file) or `split` (separate prefill and infer files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_execution: Option<String>,
}

/// Model identification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Hub repo id, when known.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Local directory the config was generated from, when known.
    #[serde(default)]
    pub path: Option<String>,
    /// Architecture (`qwen`, `qwen3`, `llama`, ...).
    pub model_type: String,
    /// When the config was generated, if recorded.
    #[serde(default)]
    pub discovered_at: Option<String>,
}

/// Overall shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShapeConfig {
    /// Tokens per prefill call.
    pub batch_size: usize,
    /// Maximum sequence length (width of the causal mask).
    pub context_length: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Vocabulary size (sum of the split logits).
    pub vocab_size: usize,
}

/// One component (a model file, or one function of it, or a chain of chunk files).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentConfig {
    /// The file, relative to the model directory (or absolute); the first chunk for chunked components.
    #[serde(default)]
    pub file_path: Option<String>,
    /// Inputs by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, TensorConfig>,
    /// Outputs by name.
    #[serde(default)]
    pub outputs: BTreeMap<String, TensorConfig>,
    /// The functions of the file this component uses (empty: the default function).
    #[serde(default)]
    pub functions: Vec<String>,
    /// Positional order of the inputs.
    #[serde(default)]
    pub input_order: Option<Vec<String>>,
    /// Extension: declared order of the outputs (split logits are concatenated in this order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_order: Option<Vec<String>>,
    /// Extension: every chunk's file in execution order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunk_files: Vec<String>,
    /// Extension: state tensors by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub states: BTreeMap<String, TensorConfig>,
}

/// A tensor's name, shape and element type (`FLOAT16`, `FLOAT32`, `INT32`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorConfig {
    /// Feature name.
    pub name: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Element type.
    pub data_type: String,
}

/// Deprecated glob patterns for finding component files (explicit `file_path`s replace them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamingConfig {
    /// Embeddings file pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings_pattern: Option<String>,
    /// Prefill FFN file pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_prefill_pattern: Option<String>,
    /// Infer FFN file pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn_infer_pattern: Option<String>,
    /// LM head file pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lm_head_pattern: Option<String>,
}

/// The model files a config names, resolved in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartPaths {
    /// The embeddings part.
    pub embeddings: PathBuf,
    /// FFN chunks for single-token inference, in order.
    pub ffn_infer: Vec<PathBuf>,
    /// FFN chunks for batched prefill, in order (the same files as `ffn_infer` for unified models).
    pub ffn_prefill: Vec<PathBuf>,
    /// The LM head.
    pub lm_head: PathBuf,
}

fn invalid(message: impl Into<String>) -> HubError {
    HubError::ConfigInvalid(message.into())
}

impl ComponentConfig {
    /// The component's files in execution order: `chunk_files` when present, else `file_path`.
    pub fn files(&self) -> Vec<&str> {
        if self.chunk_files.is_empty() {
            self.file_path.iter().map(String::as_str).collect()
        } else {
            self.chunk_files.iter().map(String::as_str).collect()
        }
    }

    /// The function to call: the first of `functions`, or `None` for the file's default function.
    pub fn function(&self) -> Option<&str> {
        self.functions.first().map(String::as_str)
    }

    /// Input names in positional order: `input_order` when given, else sorted by name.
    pub fn ordered_inputs(&self) -> Vec<&str> {
        match &self.input_order {
            Some(order) => order.iter().map(String::as_str).collect(),
            None => self.inputs.keys().map(String::as_str).collect(),
        }
    }

    /// Output names in order: `output_order` when given; otherwise names ending in a number sort by that number
    /// (`logits2` before `logits10`), then the rest by name.
    pub fn ordered_outputs(&self) -> Vec<&str> {
        if let Some(order) = &self.output_order {
            return order.iter().map(String::as_str).collect();
        }
        let mut names: Vec<&str> = self.outputs.keys().map(String::as_str).collect();
        names.sort_by_key(|n| {
            let digits = n.len() - n.trim_end_matches(|c: char| c.is_ascii_digit()).len();
            let number: Option<u64> = n[n.len() - digits..].parse().ok();
            (
                number.is_none(),
                n[..n.len() - digits].to_string(),
                number,
                n.to_string(),
            )
        });
        names
    }
}

impl ModelConfig {
    /// Parses a ModelConfig JSON document; `path` names it in errors. Does not validate.
    pub fn from_json(text: &str, path: &Path) -> Result<ModelConfig> {
        serde_json::from_str(text).map_err(|source| HubError::ConfigJson {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Reads, parses and validates a ModelConfig file.
    pub fn load(path: impl AsRef<Path>) -> Result<ModelConfig> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        let config = ModelConfig::from_json(&text, path)?;
        config.validate()?;
        Ok(config)
    }

    /// The config a model directory carries (`model_config.json`), validated, or `None` when it has none.
    pub fn find_in_dir(dir: impl AsRef<Path>) -> Result<Option<ModelConfig>> {
        let path = dir.as_ref().join(CONFIG_FILE_NAME);
        if path.is_file() {
            ModelConfig::load(&path).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Serialising plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the pretty-printed JSON to `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        fs::write(path, self.to_json() + "\n").map_err(io_err(path))
    }

    /// A component by key.
    pub fn component(&self, key: &str) -> Option<&ComponentConfig> {
        self.components.get(key)
    }

    /// A component by key, or an error naming it.
    pub fn require_component(&self, key: &str) -> Result<&ComponentConfig> {
        self.component(key)
            .ok_or_else(|| invalid(format!("no `{key}` component")))
    }

    /// The shape of a component's input or output.
    pub fn tensor_shape(&self, component: &str, tensor: &str, is_input: bool) -> Option<&[usize]> {
        let c = self.component(component)?;
        let map = if is_input { &c.inputs } else { &c.outputs };
        map.get(tensor).map(|t| t.shape.as_slice())
    }

    /// Whether prefill and infer live in separate files: `ffn_execution` when set, else whether the two components
    /// name different files.
    pub fn ffn_is_split(&self) -> bool {
        match self.ffn_execution.as_deref() {
            Some(mode) => mode == "split",
            None => match (self.component(FFN_PREFILL), self.component(FFN_INFER)) {
                (Some(p), Some(i)) => p.files() != i.files(),
                _ => false,
            },
        }
    }

    /// The LM head's logits outputs in concatenation order.
    pub fn logits_outputs(&self) -> Vec<&str> {
        self.component(LM_HEAD)
            .map(|c| c.ordered_outputs())
            .unwrap_or_default()
    }

    /// The files of a component resolved against the model directory (see [`resolve_model_file`]); an error names a
    /// missing file.
    pub fn component_paths(&self, dir: &Path, key: &str) -> Result<Vec<PathBuf>> {
        let component = self.require_component(key)?;
        let files = component.files();
        if files.is_empty() {
            return Err(invalid(format!(
                "component `{key}` names no file (`file_path`/`chunk_files`)"
            )));
        }
        files
            .into_iter()
            .map(|f| {
                resolve_model_file(dir, f).ok_or_else(|| {
                    invalid(format!(
                        "component `{key}`: file `{f}` not found in {}",
                        dir.display()
                    ))
                })
            })
            .collect()
    }

    /// The files of the embeddings, FFN (infer and prefill chains) and LM head, resolved against `dir`. A model
    /// with only one FFN component uses its chain for both.
    pub fn part_paths(&self, dir: &Path) -> Result<PartPaths> {
        let single = |key: &str| -> Result<PathBuf> {
            let mut paths = self.component_paths(dir, key)?;
            if paths.len() != 1 {
                return Err(invalid(format!(
                    "component `{key}` names {} files; expected one",
                    paths.len()
                )));
            }
            Ok(paths.remove(0))
        };
        let infer_key = if self.component(FFN_INFER).is_some() {
            FFN_INFER
        } else {
            FFN_PREFILL
        };
        let prefill_key = if self.component(FFN_PREFILL).is_some() {
            FFN_PREFILL
        } else {
            FFN_INFER
        };
        let ffn_infer = self.component_paths(dir, infer_key)?;
        let ffn_prefill = self.component_paths(dir, prefill_key)?;
        if ffn_infer.len() != ffn_prefill.len() {
            return Err(invalid(format!(
                "{} infer chunk(s) but {} prefill chunk(s)",
                ffn_infer.len(),
                ffn_prefill.len()
            )));
        }
        Ok(PartPaths {
            embeddings: single(EMBEDDINGS)?,
            ffn_infer,
            ffn_prefill,
            lm_head: single(LM_HEAD)?,
        })
    }

    /// Checks the config for consistency: the embeddings and LM head components and at least one FFN component
    /// exist; shapes are positive; every tensor has a non-empty shape of positive sizes; `ffn_execution` is
    /// `unified` or `split`; `input_order`/`output_order` name existing tensors; `file_path` is the first of
    /// `chunk_files`; hidden sizes, the causal-mask width and the split logits agree with `shapes`.
    pub fn validate(&self) -> Result<()> {
        for key in [EMBEDDINGS, LM_HEAD] {
            self.require_component(key)?;
        }
        if self.component(FFN_PREFILL).is_none() && self.component(FFN_INFER).is_none() {
            return Err(invalid("no `ffn_prefill` or `ffn_infer` component"));
        }
        let s = &self.shapes;
        for (name, value) in [
            ("batch_size", s.batch_size),
            ("context_length", s.context_length),
            ("hidden_size", s.hidden_size),
            ("vocab_size", s.vocab_size),
        ] {
            if value == 0 {
                return Err(invalid(format!("shapes.{name} must be greater than 0")));
            }
        }
        if let Some(mode) = &self.ffn_execution {
            if mode != "unified" && mode != "split" {
                return Err(invalid(format!(
                    "ffn_execution is `{mode}`; expected `unified` or `split`"
                )));
            }
        }
        for (key, c) in &self.components {
            for (kind, map) in [
                ("inputs", &c.inputs),
                ("outputs", &c.outputs),
                ("states", &c.states),
            ] {
                for (name, t) in map {
                    if t.shape.is_empty() || t.shape.contains(&0) {
                        return Err(invalid(format!(
                            "{key}.{kind}.{name}: shape {:?} is empty or has a 0",
                            t.shape
                        )));
                    }
                }
            }
            for (kind, order, map) in [
                ("input_order", &c.input_order, &c.inputs),
                ("output_order", &c.output_order, &c.outputs),
            ] {
                if let Some(order) = order {
                    if let Some(unknown) = order.iter().find(|n| !map.contains_key(*n)) {
                        return Err(invalid(format!(
                            "{key}.{kind} names `{unknown}`, which is not declared"
                        )));
                    }
                }
            }
            if let (Some(first), Some(path)) = (c.chunk_files.first(), &c.file_path) {
                if first != path {
                    return Err(invalid(format!(
                        "{key}: file_path `{path}` is not the first of chunk_files (`{first}`)"
                    )));
                }
            }
        }
        let hidden_checks = [
            (EMBEDDINGS, "hidden_states", false),
            (FFN_PREFILL, "hidden_states", true),
            (FFN_INFER, "hidden_states", true),
            (LM_HEAD, "hidden_states", true),
        ];
        for (key, tensor, is_input) in hidden_checks {
            if let Some(&last) = self
                .tensor_shape(key, tensor, is_input)
                .and_then(|s| s.last())
            {
                if last != s.hidden_size {
                    return Err(invalid(format!(
                        "{key}.{}.{tensor} ends in {last}, but shapes.hidden_size is {}",
                        if is_input { "inputs" } else { "outputs" },
                        s.hidden_size
                    )));
                }
            }
        }
        for key in [FFN_PREFILL, FFN_INFER] {
            if let Some(&last) = self
                .tensor_shape(key, "causal_mask", true)
                .and_then(|s| s.last())
            {
                if last != s.context_length {
                    return Err(invalid(format!(
                        "{key}.inputs.causal_mask is {last} wide, but shapes.context_length is {}",
                        s.context_length
                    )));
                }
            }
        }
        let head = self.require_component(LM_HEAD)?;
        let logits: Vec<&TensorConfig> = head
            .ordered_outputs()
            .into_iter()
            .filter(|n| n.starts_with("logits"))
            .filter_map(|n| head.outputs.get(n))
            .collect();
        if !logits.is_empty() {
            let total: usize = logits.iter().filter_map(|t| t.shape.last()).sum();
            if total != s.vocab_size {
                return Err(invalid(format!(
                    "the LM head's logits outputs add up to {total}, but shapes.vocab_size is {}",
                    s.vocab_size
                )));
            }
        }
        Ok(())
    }

    /// Checks that every component's files exist in `dir`.
    pub fn validate_files(&self, dir: &Path) -> Result<()> {
        for key in self.components.keys() {
            self.component_paths(dir, key)?;
        }
        Ok(())
    }

    /// Generates the config of an ANEMLL-style model directory by reading each part's model description: the
    /// embeddings, LM head and FFN chunk files are found by name (narrowed by `meta.yaml`'s `embeddings`,
    /// `lm_head` and `ffn` entries when present); a multifunction FFN file (functions `prefill` and `infer`) gives
    /// both FFN components over the same files (`unified`), separate prefill/infer files give `split`. Shapes come
    /// from the tensors: batch from the prefill hidden states, context from the causal mask, hidden size from the
    /// LM head input, vocabulary from the sum of the logits outputs.
    pub fn generate(dir: impl AsRef<Path>, model_id: Option<&str>) -> Result<ModelConfig> {
        let dir = dir.as_ref();
        let fail = |message: String| HubError::ConfigGeneration {
            dir: dir.to_path_buf(),
            message,
        };
        let meta = read_meta(dir);
        let parts = list_parts(dir)?;
        let pick = |role: &str, test: &dyn Fn(&str) -> bool, meta_key: &str| -> Result<String> {
            let wanted = meta
                .as_ref()
                .and_then(|m| meta_string(m, meta_key))
                .map(|s| strip_model_extension(&s).to_string());
            let mut found: Vec<&String> = parts
                .iter()
                .filter(|p| test(&p.to_ascii_lowercase()))
                .collect();
            if let Some(w) = &wanted {
                let narrowed: Vec<&String> = found
                    .iter()
                    .copied()
                    .filter(|p| strip_model_extension(p) == w)
                    .collect();
                if !narrowed.is_empty() {
                    found = narrowed;
                }
            }
            match found.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(fail(format!(
                    "no {role} part (a file whose name contains `{role}`)"
                ))),
                many => Err(fail(format!(
                    "several {role} parts: {}",
                    many.iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        };
        let embeddings_file = pick("embeddings", &|p| p.contains("embeddings"), "embeddings")?;
        let lm_head_file = pick("lm_head", &|p| p.contains("lm_head"), "lm_head")?;
        let ffn_base = meta
            .as_ref()
            .and_then(|m| meta_string(m, "ffn"))
            .map(|s| strip_model_extension(&s).to_string());
        let chunks: Vec<(String, usize, usize)> = parts
            .iter()
            .filter(|p| {
                ffn_base.as_ref().is_none_or(|b| {
                    strip_model_extension(p).starts_with(b.as_str()) || !p.contains("FFN_PF")
                })
            })
            .filter_map(|p| chunk_numbers(p, false).map(|(i, n)| (p.clone(), i, n)))
            .collect();
        if chunks.is_empty() {
            return Err(fail("no FFN chunk files (`*_chunk_NNofMM.*`)".into()));
        }

        let open = |file: &str| -> Result<ModelFile> { Ok(ModelFile::open(dir.join(file))?) };
        let embeddings = open(&embeddings_file)?;
        let lm_head = open(&lm_head_file)?;
        let emb_fn = default_function(&embeddings, &embeddings_file, &fail)?;
        let head_fn = default_function(&lm_head, &lm_head_file, &fail)?;

        // Group chunk files into prefill-capable and infer-capable chains.
        let mut prefill_chain: Vec<(usize, usize, String, String)> = Vec::new();
        let mut infer_chain: Vec<(usize, usize, String, String)> = Vec::new();
        let mut opened: BTreeMap<String, ModelFile> = BTreeMap::new();
        for (file, index, count) in &chunks {
            let model = open(file)?;
            let names: Vec<&str> = model
                .description
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            let lower = file.to_ascii_lowercase();
            if names.contains(&"prefill") {
                prefill_chain.push((*index, *count, file.clone(), "prefill".into()));
            }
            if names.contains(&"infer") {
                infer_chain.push((*index, *count, file.clone(), "infer".into()));
            }
            if !names.contains(&"prefill") && !names.contains(&"infer") {
                let function = model.description.default_function.clone();
                if lower.contains("prefill") {
                    prefill_chain.push((*index, *count, file.clone(), function));
                } else {
                    infer_chain.push((*index, *count, file.clone(), function));
                }
            }
            opened.insert(file.clone(), model);
        }

        let mut components = BTreeMap::new();
        components.insert(
            EMBEDDINGS.to_string(),
            component_from(&embeddings_file, &[], emb_fn, Vec::new()),
        );
        components.insert(
            LM_HEAD.to_string(),
            component_from(&lm_head_file, &[], head_fn, Vec::new()),
        );
        for (key, chain) in [
            (FFN_PREFILL, &mut prefill_chain),
            (FFN_INFER, &mut infer_chain),
        ] {
            if chain.is_empty() {
                continue;
            }
            chain.sort();
            check_chunk_sequence(chain, &fail)?;
            let (_, _, first_file, function) = &chain[0];
            let model = opened
                .get(first_file)
                .ok_or_else(|| fail(format!("{first_file} was not opened")))?;
            let description = model
                .description
                .function(function)
                .ok_or_else(|| fail(format!("{first_file} has no function `{function}`")))?;
            let files: Vec<String> = chain.iter().map(|(_, _, f, _)| f.clone()).collect();
            let functions = if model.description.functions.len() > 1 {
                vec![function.clone()]
            } else {
                Vec::new()
            };
            let mut component = component_from(first_file, &functions, description, files);
            // The chain's outputs are its last chunk's (a last prefill chunk may return only the final position).
            if let Some((_, _, last_file, last_fn)) = chain.last() {
                if let Some(out) = opened
                    .get(last_file)
                    .and_then(|m| m.description.function(last_fn))
                {
                    component.outputs = tensors(&out.outputs);
                    component.output_order =
                        Some(out.outputs.iter().map(|f| f.name.clone()).collect());
                }
            }
            components.insert(key.to_string(), component);
        }

        // Embeddings may leave their output shape undeclared: it is [1, tokens, hidden].
        let hidden_size = lm_head_hidden(&components)
            .ok_or_else(|| fail("the LM head has no `hidden_states` input shape".into()))?;
        let batch_size = components
            .get(FFN_PREFILL)
            .and_then(|c| c.inputs.get("hidden_states"))
            .and_then(|t| t.shape.get(1).copied())
            .unwrap_or(1);
        if let Some(emb) = components.get_mut(EMBEDDINGS) {
            let tokens = emb
                .inputs
                .get("input_ids")
                .and_then(|t| t.shape.get(1).copied())
                .unwrap_or(batch_size);
            for t in emb.outputs.values_mut() {
                if t.shape.is_empty() {
                    t.shape = vec![1, tokens, hidden_size];
                }
            }
        }
        let context_length = [FFN_INFER, FFN_PREFILL]
            .iter()
            .filter_map(|k| components.get(*k))
            .filter_map(|c| c.inputs.get("causal_mask"))
            .filter_map(|t| t.shape.last().copied())
            .next()
            .ok_or_else(|| {
                fail("no FFN `causal_mask` input to read the context length from".into())
            })?;
        let head = components
            .get(LM_HEAD)
            .ok_or_else(|| fail("no LM head".into()))?;
        let vocab_size: usize = head
            .ordered_outputs()
            .iter()
            .filter_map(|n| head.outputs.get(*n))
            .filter_map(|t| t.shape.last())
            .sum();
        let unified = match (components.get(FFN_PREFILL), components.get(FFN_INFER)) {
            (Some(p), Some(i)) => p.files() == i.files(),
            _ => true,
        };
        let model_type = meta
            .as_ref()
            .and_then(|m| {
                m.get("model_info")
                    .and_then(|i| i.get("architecture"))
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| {
                embeddings_file
                    .split('_')
                    .next()
                    .unwrap_or("unknown")
                    .to_string()
            });
        let config = ModelConfig {
            model_info: ModelInfo {
                model_id: model_id.map(str::to_string),
                path: Some(dir.display().to_string()),
                model_type,
                discovered_at: None,
            },
            shapes: ShapeConfig {
                batch_size,
                context_length,
                hidden_size,
                vocab_size,
            },
            components,
            naming: NamingConfig::default(),
            ffn_execution: Some(if unified { "unified" } else { "split" }.to_string()),
        };
        config
            .validate()
            .map_err(|e| fail(format!("the generated config is inconsistent: {e}")))?;
        Ok(config)
    }
}

fn lm_head_hidden(components: &BTreeMap<String, ComponentConfig>) -> Option<usize> {
    components
        .get(LM_HEAD)?
        .inputs
        .get("hidden_states")?
        .shape
        .last()
        .copied()
}

fn default_function<'a>(
    model: &'a ModelFile,
    file: &str,
    fail: &dyn Fn(String) -> HubError,
) -> Result<&'a FunctionDescription> {
    model
        .description
        .function(&model.description.default_function)
        .or_else(|| model.description.functions.first())
        .ok_or_else(|| fail(format!("{file} declares no function")))
}

fn check_chunk_sequence(
    chain: &[(usize, usize, String, String)],
    fail: &dyn Fn(String) -> HubError,
) -> Result<()> {
    let count = chain.first().map(|c| c.1).unwrap_or(0);
    for (position, (index, n, file, _)) in chain.iter().enumerate() {
        if *n != count || *index != position + 1 {
            return Err(fail(format!(
                "FFN chunks are not numbered 1..{count} consistently (at {file}); expected chunk {} of {count}",
                position + 1
            )));
        }
    }
    if chain.len() != count {
        return Err(fail(format!(
            "{} of {count} FFN chunks present",
            chain.len()
        )));
    }
    Ok(())
}

/// Seed-style element type name of a MIL data type (`FLOAT16`, `FLOAT32`, `INT32`, ...).
pub fn data_type_name(dtype: Option<DataType>) -> String {
    match dtype {
        Some(DataType::Float16) => "FLOAT16".into(),
        Some(DataType::Float32) => "FLOAT32".into(),
        Some(DataType::Float64) => "FLOAT64".into(),
        Some(DataType::Int32) => "INT32".into(),
        Some(DataType::Int64) => "INT64".into(),
        Some(other) => other.to_string().to_ascii_uppercase(),
        None => "UNKNOWN".into(),
    }
}

/// The largest shape a feature accepts (the last enumerated shape, else the default), with unknown sizes dropped
/// to an empty shape.
fn feature_shape(feature: &FeatureDescription) -> Option<(Vec<usize>, String)> {
    let array = match &feature.kind {
        FeatureKind::Array(a) | FeatureKind::State(a) => a,
        _ => return None,
    };
    let shape = match &array.flexibility {
        ShapeFlexibility::Enumerated(shapes) => shapes
            .iter()
            .max_by_key(|s| s.iter().product::<i64>())
            .cloned()
            .unwrap_or_else(|| array.shape.clone()),
        _ => array.shape.clone(),
    };
    let dims: Option<Vec<usize>> = shape.iter().map(|&d| usize::try_from(d).ok()).collect();
    Some((dims.unwrap_or_default(), data_type_name(array.dtype)))
}

fn tensors(features: &[FeatureDescription]) -> BTreeMap<String, TensorConfig> {
    features
        .iter()
        .filter_map(|f| {
            let (shape, data_type) = feature_shape(f)?;
            Some((
                f.name.clone(),
                TensorConfig {
                    name: f.name.clone(),
                    shape,
                    data_type,
                },
            ))
        })
        .collect()
}

fn component_from(
    file: &str,
    functions: &[String],
    description: &FunctionDescription,
    chunk_files: Vec<String>,
) -> ComponentConfig {
    ComponentConfig {
        file_path: Some(file.to_string()),
        inputs: tensors(&description.inputs),
        outputs: tensors(&description.outputs),
        functions: functions.to_vec(),
        input_order: Some(description.inputs.iter().map(|f| f.name.clone()).collect()),
        output_order: Some(description.outputs.iter().map(|f| f.name.clone()).collect()),
        chunk_files: if chunk_files.len() > 1 {
            chunk_files
        } else {
            Vec::new()
        },
        states: tensors(&description.states),
    }
}

/// `(i, n)` from an ANEMLL chunk file name (`..._chunk_IIofNN...`); with `require_ffn_pf`, only after `FFN_PF` in the
/// name (`FFN_PF.*_chunk_(\d+)of(\d+)`). The last match wins, as with a greedy `.*` in a regex.
pub fn chunk_numbers(name: &str, require_ffn_pf: bool) -> Option<(usize, usize)> {
    let search_from = if require_ffn_pf {
        name.find("FFN_PF")? + "FFN_PF".len()
    } else {
        0
    };
    let rest = name.get(search_from..)?;
    let mut found = None;
    let mut offset = 0;
    while let Some(at) = rest.get(offset..).and_then(|r| r.find("_chunk_")) {
        let start = offset + at + "_chunk_".len();
        if let Some(numbers) = rest.get(start..).and_then(parse_n_of_m) {
            found = Some(numbers);
        }
        offset = start;
    }
    found
}

/// Parses `NNofMM` at the start of `text`.
fn parse_n_of_m(text: &str) -> Option<(usize, usize)> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let n_len = digits(text);
    if n_len == 0 {
        return None;
    }
    let index = text.get(..n_len)?.parse().ok()?;
    let after = text.get(n_len..)?.strip_prefix("of")?;
    let m_len = digits(after);
    if m_len == 0 {
        return None;
    }
    let count = after.get(..m_len)?.parse().ok()?;
    Some((index, count))
}

/// The model parts in a directory (one name per stem, preferring `.mlmodelc`, then `.mlpackage`, `.mlmodelc.zip`,
/// `.mlmodel`), sorted.
fn list_parts(dir: &Path) -> Result<Vec<String>> {
    let mut by_stem: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        let rank = if lower.ends_with(".mlmodelc.zip") {
            2
        } else if lower.ends_with(".mlmodelc") {
            0
        } else if lower.ends_with(".mlpackage") {
            1
        } else if lower.ends_with(".mlmodel") {
            3
        } else {
            continue;
        };
        let stem = strip_model_extension(&name).to_string();
        match by_stem.get(&stem) {
            Some((r, _)) if *r <= rank => {}
            _ => {
                by_stem.insert(stem, (rank, name));
            }
        }
    }
    Ok(by_stem.into_values().map(|(_, n)| n).collect())
}

fn read_meta(dir: &Path) -> Option<serde_norway::Value> {
    let text = fs::read_to_string(dir.join("meta.yaml")).ok()?;
    serde_norway::from_str(&text).ok()
}

fn meta_string(meta: &serde_norway::Value, key: &str) -> Option<String> {
    meta.get("model_info")?
        .get("parameters")?
        .get(key)?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_numbers_match_the_anemll_pattern() {
        assert_eq!(
            chunk_numbers("qwen_FFN_PF_lut6_chunk_02of03.mlmodelc", true),
            Some((2, 3))
        );
        assert_eq!(
            chunk_numbers("llama_FFN_PF_chunk_1of12.mlpackage", true),
            Some((1, 12))
        );
        assert_eq!(
            chunk_numbers("llama_FFN_chunk_01of02.mlpackage", true),
            None
        );
        assert_eq!(chunk_numbers("llama_FFN_PF.mlmodelc", true), None);
        assert_eq!(chunk_numbers("x_FFN_PF_chunk_of02", true), None);
        assert_eq!(chunk_numbers("x_FFN_PF_chunk_01of", true), None);
        assert_eq!(
            chunk_numbers("a_chunk_01of02_chunk_03of04", false),
            Some((3, 4))
        );
        assert_eq!(chunk_numbers("qwen_lm_head.mlpackage", false), None);
    }

    #[test]
    fn extensions_are_stripped() {
        assert_eq!(strip_model_extension("a_lm_head.mlmodelc"), "a_lm_head");
        assert_eq!(strip_model_extension("a_lm_head.mlmodelc.zip"), "a_lm_head");
        assert_eq!(strip_model_extension("a_lm_head.mlpackage"), "a_lm_head");
        assert_eq!(strip_model_extension("a_lm_head"), "a_lm_head");
    }

    #[test]
    fn numbered_outputs_sort_numerically() {
        let mut c = ComponentConfig {
            file_path: None,
            inputs: BTreeMap::new(),
            outputs: BTreeMap::new(),
            functions: Vec::new(),
            input_order: None,
            output_order: None,
            chunk_files: Vec::new(),
            states: BTreeMap::new(),
        };
        for n in ["logits10", "logits2", "logits1"] {
            c.outputs.insert(
                n.into(),
                TensorConfig {
                    name: n.into(),
                    shape: vec![1],
                    data_type: "FLOAT16".into(),
                },
            );
        }
        assert_eq!(c.ordered_outputs(), vec!["logits1", "logits2", "logits10"]);
    }
}
