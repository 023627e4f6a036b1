//! The dimensions and interface of an ANEMLL model, read from the descriptions of its parts and cross-checked with
//! `meta.yaml`.
//!
//! | what | where it comes from |
//! |---|---|
//! | context length C | last dim of the FFN `infer` `causal_mask` input |
//! | prefill batch B | dim 1 of the FFN `prefill` `hidden_states` input (1 without a `prefill` function) |
//! | KV state | the FFN functions' state (name, shape; state length = dim 2) |
//! | hidden size H | last dim of the FFN `infer` `hidden_states` input |
//! | LM head | `logits1..N` outputs (sizes from their shapes) or the `argmax_idx`/`argmax_val` pair |
//! | embeddings batching | whether `input_ids` accepts `[1, B]` (enumerated or ranged shapes) |

use std::path::{Path, PathBuf};

use candle_coreml_format::description::{
    ArrayFeature, FeatureDescription, FunctionDescription, ModelDescription, ShapeFlexibility,
};

use crate::error::{LlmError, Result};
use crate::meta::AnemllMeta;

/// Name of the FFN single-token function.
pub const INFER_FUNCTION: &str = "infer";
/// Name of the FFN batched function.
pub const PREFILL_FUNCTION: &str = "prefill";

/// Input and output names of the parts, as ANEMLL writes them.
pub mod names {
    /// Embeddings input: token ids.
    pub const INPUT_IDS: &str = "input_ids";
    /// FFN input (and embeddings / LM head tensor name): hidden states.
    pub const HIDDEN_STATES: &str = "hidden_states";
    /// FFN input: absolute positions of the tokens.
    pub const POSITION_IDS: &str = "position_ids";
    /// FFN input: rows of the causal mask.
    pub const CAUSAL_MASK: &str = "causal_mask";
    /// FFN input: position of the (first) token.
    pub const CURRENT_POS: &str = "current_pos";
    /// Optional FFN input (0.3.5): one-hot KV write positions.
    pub const UPDATE_MASK: &str = "update_mask";
    /// FFN output.
    pub const OUTPUT_HIDDEN_STATES: &str = "output_hidden_states";
    /// In-model argmax output: index within each split.
    pub const ARGMAX_IDX: &str = "argmax_idx";
    /// In-model argmax output: the split's largest logit.
    pub const ARGMAX_VAL: &str = "argmax_val";
    /// Prefix of the split logits outputs (`logits1` ... `logitsN`).
    pub const LOGITS_PREFIX: &str = "logits";
}

/// What the LM head outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmHeadOutputs {
    /// Logits split over several outputs, concatenated in this order; `sizes` holds each one's width when declared.
    Logits {
        /// Output names in vocabulary order.
        names: Vec<String>,
        /// Declared widths (last dim), `None` where undeclared.
        sizes: Vec<Option<usize>>,
    },
    /// In-model argmax (0.3.5): `argmax_idx[k]` is an index within split k, whose first token id is `offsets[k]`.
    Argmax {
        /// Vocabulary offset of each split.
        offsets: Vec<usize>,
    },
}

/// Shape of the optional `update_mask` input of one FFN function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateMaskShape {
    /// The declared shape, e.g. `[1, 1, C, 1]` (infer) or `[1, 1, C, B]` (prefill).
    pub shape: Vec<usize>,
}

/// The dimensions and interface of an ANEMLL model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelLayout {
    /// Maximum sequence length C (width of the causal mask).
    pub context_length: usize,
    /// Tokens per `prefill` call B (1 when the chunks have no `prefill` function).
    pub batch_size: usize,
    /// True when every chunk has a `prefill` function.
    pub has_prefill: bool,
    /// Hidden size H.
    pub hidden_size: usize,
    /// Name of the KV-cache state.
    pub state_name: String,
    /// Shape of the KV-cache state, e.g. `[2L, KVH, S, D]`.
    pub state_shape: Vec<usize>,
    /// State length S (dim 2 of the state), at least C.
    pub state_length: usize,
    /// True when the embeddings accept `[1, B]` input ids (else one token per call).
    pub embeddings_accept_batch: bool,
    /// `update_mask` of the `infer` functions, when declared.
    pub infer_update_mask: Option<UpdateMaskShape>,
    /// `update_mask` of the `prefill` functions, when declared.
    pub prefill_update_mask: Option<UpdateMaskShape>,
    /// What the LM head outputs.
    pub lm_head: LmHeadOutputs,
    /// Vocabulary size (the logits width) when known from the files or meta.yaml.
    pub vocab_size: Option<usize>,
    /// Contradictions with meta.yaml that are not fatal, for the user.
    pub warnings: Vec<String>,
}

/// The descriptions of the parts, with the files they came from (for messages).
#[derive(Debug, Clone, Copy)]
pub struct PartDescriptions<'a> {
    /// The embeddings model.
    pub embeddings: (&'a Path, &'a ModelDescription),
    /// The FFN chunks in order.
    pub chunks: &'a [(PathBuf, &'a ModelDescription)],
    /// The LM head model.
    pub lm_head: (&'a Path, &'a ModelDescription),
}

fn interface(path: &Path, message: String) -> LlmError {
    LlmError::Interface {
        path: path.to_path_buf(),
        message,
    }
}

/// The array description of an input/output, or an error naming it.
fn array<'a>(
    path: &Path,
    function: &str,
    feature: Option<&'a FeatureDescription>,
    name: &str,
    role: &str,
) -> Result<&'a ArrayFeature> {
    let feature = feature.ok_or_else(|| {
        interface(
            path,
            format!("function `{function}` has no {role} `{name}` (expected for an ANEMLL model)"),
        )
    })?;
    feature.kind.array().ok_or_else(|| {
        interface(
            path,
            format!("function `{function}` {role} `{name}` is not a tensor"),
        )
    })
}

/// Dimension `axis` of a declared shape (negative counts from the end); `None` when undeclared or dynamic.
fn dim(shape: &[i64], axis: isize) -> Option<usize> {
    let index = if axis < 0 {
        shape.len().checked_sub(axis.unsigned_abs())?
    } else {
        axis as usize
    };
    shape
        .get(index)
        .copied()
        .filter(|&d| d > 0)
        .map(|d| d as usize)
}

/// Whether an array input accepts `shape`.
fn accepts(feature: &ArrayFeature, shape: &[i64]) -> bool {
    if feature.shape.is_empty() || feature.shape == shape {
        return true;
    }
    match &feature.flexibility {
        ShapeFlexibility::Fixed => false,
        ShapeFlexibility::Enumerated(shapes) => shapes.iter().any(|s| s == shape),
        ShapeFlexibility::Range(ranges) => {
            ranges.len() == shape.len()
                && ranges.iter().zip(shape).all(|(r, &d)| {
                    d >= 0 && (d as u64) >= r.lower && r.upper.is_none_or(|u| d as u64 <= u)
                })
        }
    }
}

/// The logits outputs `logits1..N` in numeric order, or `None` if the function has none.
fn logits_outputs(function: &FunctionDescription) -> Option<Vec<(usize, &FeatureDescription)>> {
    let mut found: Vec<(usize, &FeatureDescription)> = function
        .outputs
        .iter()
        .filter_map(|o| {
            o.name
                .strip_prefix(names::LOGITS_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .map(|n| (n, o))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    (!found.is_empty()).then_some(found)
}

/// Vocabulary offsets of `n` splits of `vocab` tokens as ANEMLL sizes them: `vocab / n` each, the first
/// `vocab % n` one larger.
pub fn split_offsets(vocab: usize, n: usize) -> Vec<usize> {
    let base = vocab / n.max(1);
    let extra = vocab % n.max(1);
    let mut offsets = Vec::with_capacity(n);
    let mut at = 0;
    for k in 0..n {
        offsets.push(at);
        at += base + usize::from(k < extra);
    }
    offsets
}

impl ModelLayout {
    /// Reads the layout from the parts' descriptions and checks it against `meta` (when given).
    pub fn from_descriptions(
        parts: PartDescriptions<'_>,
        meta: Option<&AnemllMeta>,
    ) -> Result<ModelLayout> {
        let mut warnings = Vec::new();
        let (first_path, _) = parts.chunks.first().ok_or_else(|| {
            interface(
                parts.embeddings.0,
                "the model has no FFN chunks".to_string(),
            )
        })?;

        // FFN: context, batch, hidden size, state, update masks.
        let mut context_length = None;
        let mut batch_size = None;
        let mut hidden_size = None;
        let mut state: Option<(String, Vec<usize>)> = None;
        let mut has_prefill = true;
        let mut infer_update_mask = None;
        let mut prefill_update_mask = None;
        for (index, (path, description)) in parts.chunks.iter().enumerate() {
            let chunk_label = format!("chunk {} of {}", index + 1, parts.chunks.len());
            let infer = description.function(INFER_FUNCTION).ok_or_else(|| {
                interface(
                    path,
                    format!(
                        "{chunk_label} has no `{INFER_FUNCTION}` function (functions: {})",
                        description
                            .functions
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?;
            let mask = array(
                path,
                INFER_FUNCTION,
                infer.input(names::CAUSAL_MASK),
                names::CAUSAL_MASK,
                "input",
            )?;
            let c = dim(&mask.shape, -1).ok_or_else(|| {
                interface(
                    path,
                    format!(
                        "`{INFER_FUNCTION}` input `causal_mask` has no declared width (shape {:?}); \
                         the context length cannot be read",
                        mask.shape
                    ),
                )
            })?;
            same(
                path,
                &chunk_label,
                "context length (causal_mask width)",
                &mut context_length,
                c,
            )?;
            let hidden = array(
                path,
                INFER_FUNCTION,
                infer.input(names::HIDDEN_STATES),
                names::HIDDEN_STATES,
                "input",
            )?;
            if let Some(h) = dim(&hidden.shape, -1) {
                same(path, &chunk_label, "hidden size", &mut hidden_size, h)?;
            }
            array(
                path,
                INFER_FUNCTION,
                infer.input(names::POSITION_IDS),
                names::POSITION_IDS,
                "input",
            )?;
            array(
                path,
                INFER_FUNCTION,
                infer.input(names::CURRENT_POS),
                names::CURRENT_POS,
                "input",
            )?;
            if infer.output(names::OUTPUT_HIDDEN_STATES).is_none() {
                return Err(interface(
                    path,
                    format!(
                        "`{INFER_FUNCTION}` has no output `{}`",
                        names::OUTPUT_HIDDEN_STATES
                    ),
                ));
            }
            let chunk_state = single_state(path, infer)?;
            match &state {
                None => state = Some(chunk_state),
                Some(s) if *s == chunk_state => {}
                Some((name, shape)) => {
                    return Err(interface(
                        path,
                        format!(
                            "{chunk_label} declares state `{}` {:?}, but chunk 1 ({}) declares `{name}` {shape:?}; \
                             all chunks must share one KV state",
                            chunk_state.0,
                            chunk_state.1,
                            first_path.display()
                        ),
                    ))
                }
            }
            if let Some(m) = infer.input(names::UPDATE_MASK) {
                infer_update_mask = Some(update_mask_shape(path, INFER_FUNCTION, m)?);
            }
            match description.function(PREFILL_FUNCTION) {
                Some(prefill) => {
                    let hidden = array(
                        path,
                        PREFILL_FUNCTION,
                        prefill.input(names::HIDDEN_STATES),
                        names::HIDDEN_STATES,
                        "input",
                    )?;
                    let mask = array(
                        path,
                        PREFILL_FUNCTION,
                        prefill.input(names::CAUSAL_MASK),
                        names::CAUSAL_MASK,
                        "input",
                    )?;
                    array(
                        path,
                        PREFILL_FUNCTION,
                        prefill.input(names::POSITION_IDS),
                        names::POSITION_IDS,
                        "input",
                    )?;
                    array(
                        path,
                        PREFILL_FUNCTION,
                        prefill.input(names::CURRENT_POS),
                        names::CURRENT_POS,
                        "input",
                    )?;
                    let b = dim(&hidden.shape, 1)
                        .or_else(|| dim(&mask.shape, 2))
                        .ok_or_else(|| {
                            interface(
                                path,
                                format!(
                                    "`{PREFILL_FUNCTION}` input `hidden_states` has no declared batch \
                                     dimension (shape {:?})",
                                    hidden.shape
                                ),
                            )
                        })?;
                    if let Some(mask_rows) = dim(&mask.shape, 2) {
                        if mask_rows != b {
                            return Err(interface(
                                path,
                                format!(
                                    "`{PREFILL_FUNCTION}`: causal_mask has {mask_rows} rows but hidden_states \
                                     holds {b} tokens"
                                ),
                            ));
                        }
                    }
                    if let Some(w) = dim(&mask.shape, -1) {
                        if w != c {
                            return Err(interface(
                                path,
                                format!(
                                    "`{PREFILL_FUNCTION}` causal_mask width {w} differs from `{INFER_FUNCTION}`'s {c}"
                                ),
                            ));
                        }
                    }
                    same(path, &chunk_label, "prefill batch size", &mut batch_size, b)?;
                    let prefill_state = single_state(path, prefill)?;
                    if Some(&prefill_state) != state.as_ref() {
                        return Err(interface(
                            path,
                            format!(
                                "`{PREFILL_FUNCTION}` state `{}` {:?} differs from `{INFER_FUNCTION}`'s",
                                prefill_state.0, prefill_state.1
                            ),
                        ));
                    }
                    if let Some(m) = prefill.input(names::UPDATE_MASK) {
                        prefill_update_mask = Some(update_mask_shape(path, PREFILL_FUNCTION, m)?);
                    }
                }
                None => has_prefill = false,
            }
        }
        let context_length = context_length.unwrap_or(0);
        let (state_name, state_shape) = state.unwrap_or_default();
        let state_length = state_shape.get(2).copied().ok_or_else(|| {
            interface(
                first_path,
                format!("state `{state_name}` has shape {state_shape:?}; expected [2L, KV heads, length, head dim]"),
            )
        })?;
        if state_length < context_length {
            return Err(interface(
                first_path,
                format!(
                    "state `{state_name}` holds {state_length} positions, fewer than the context length {context_length}"
                ),
            ));
        }
        if !has_prefill && batch_size.is_some() {
            return Err(interface(
                first_path,
                "some chunks have a `prefill` function and others do not".to_string(),
            ));
        }
        let batch_size = batch_size.unwrap_or(1);
        if batch_size == 0 || batch_size > context_length {
            return Err(interface(
                first_path,
                format!(
                    "prefill batch {batch_size} is not within 1..=context length {context_length}"
                ),
            ));
        }

        // Embeddings.
        let (emb_path, emb) = parts.embeddings;
        let emb_main = emb.default().ok_or_else(|| {
            interface(
                emb_path,
                format!("default function `{}` not described", emb.default_function),
            )
        })?;
        let ids = array(
            emb_path,
            &emb_main.name,
            emb_main.input(names::INPUT_IDS),
            names::INPUT_IDS,
            "input",
        )?;
        let embeddings_accept_batch = accepts(ids, &[1, batch_size as i64]);
        if !accepts(ids, &[1, 1]) && !embeddings_accept_batch {
            return Err(interface(
                emb_path,
                format!(
                    "input `input_ids` accepts neither [1, 1] nor [1, {batch_size}] (shape {:?})",
                    ids.shape
                ),
            ));
        }
        let emb_out_hidden = emb_main
            .output(names::HIDDEN_STATES)
            .or_else(|| emb_main.outputs.first())
            .and_then(|o| o.kind.array())
            .and_then(|a| dim(&a.shape, -1));
        let hidden_size = match (hidden_size, emb_out_hidden) {
            (Some(h), Some(e)) if h != e => {
                return Err(interface(
                    emb_path,
                    format!("embeddings produce hidden size {e}, the FFN chunks expect {h}"),
                ))
            }
            (Some(h), _) | (None, Some(h)) => h,
            (None, None) => 0,
        };

        // LM head.
        let (head_path, head) = parts.lm_head;
        let head_main = head.default().ok_or_else(|| {
            interface(
                head_path,
                format!("default function `{}` not described", head.default_function),
            )
        })?;
        if let Some(h) = head_main
            .input(names::HIDDEN_STATES)
            .and_then(|i| i.kind.array())
            .and_then(|a| dim(&a.shape, -1))
        {
            if hidden_size != 0 && h != hidden_size {
                return Err(interface(
                    head_path,
                    format!("LM head takes hidden size {h}, the FFN chunks produce {hidden_size}"),
                ));
            }
        }
        let meta_vocab = meta.and_then(|m| m.vocab_size);
        let (lm_head, vocab_size) = if let Some(outputs) = logits_outputs(head_main) {
            let numbers: Vec<usize> = outputs.iter().map(|(n, _)| *n).collect();
            if numbers != (1..=outputs.len()).collect::<Vec<_>>() {
                return Err(interface(
                    head_path,
                    format!(
                        "LM head outputs are logits{numbers:?}; expected logits1..logits{}",
                        outputs.len()
                    ),
                ));
            }
            let sizes: Vec<Option<usize>> = outputs
                .iter()
                .map(|(_, o)| o.kind.array().and_then(|a| dim(&a.shape, -1)))
                .collect();
            let declared: Option<usize> = sizes.iter().copied().sum();
            if let (Some(d), Some(m)) = (declared, meta_vocab) {
                if d != m {
                    return Err(interface(
                        head_path,
                        format!("LM head outputs {d} logits, but meta.yaml vocab_size is {m}"),
                    ));
                }
            }
            if let Some(meta_sizes) = meta.and_then(|m| m.lm_head_chunk_sizes.as_ref()) {
                let known: Vec<usize> = sizes.iter().flatten().copied().collect();
                if known.len() == sizes.len() && known != *meta_sizes {
                    return Err(interface(
                        head_path,
                        format!("LM head split sizes {known:?} contradict meta.yaml lm_head_chunk_sizes {meta_sizes:?}"),
                    ));
                }
            }
            let names = outputs.iter().map(|(_, o)| o.name.clone()).collect();
            (
                LmHeadOutputs::Logits { names, sizes },
                declared.or(meta_vocab),
            )
        } else if head_main.output(names::ARGMAX_IDX).is_some()
            && head_main.output(names::ARGMAX_VAL).is_some()
        {
            let splits = head_main
                .output(names::ARGMAX_IDX)
                .and_then(|o| o.kind.array())
                .and_then(|a| dim(&a.shape, -1))
                .or(meta.and_then(|m| m.split_lm_head))
                .ok_or_else(|| {
                    interface(
                        head_path,
                        "in-model argmax: the number of splits is neither declared (argmax_idx shape) nor in \
                         meta.yaml (split_lm_head)"
                            .to_string(),
                    )
                })?;
            let offsets = match (meta.and_then(|m| m.lm_head_chunk_sizes.clone()), meta_vocab) {
                (Some(sizes), _) => {
                    if sizes.len() != splits {
                        return Err(interface(
                            head_path,
                            format!("meta.yaml lm_head_chunk_sizes has {} entries, the LM head {splits} splits", sizes.len()),
                        ));
                    }
                    sizes
                        .iter()
                        .scan(0usize, |at, s| {
                            let start = *at;
                            *at += s;
                            Some(start)
                        })
                        .collect()
                }
                (None, Some(v)) => split_offsets(v, splits),
                (None, None) => {
                    return Err(interface(
                        head_path,
                        "in-model argmax needs meta.yaml lm_head_chunk_sizes or vocab_size to map split indices \
                         to token ids"
                            .to_string(),
                    ))
                }
            };
            let vocab = meta_vocab.or_else(|| {
                meta.and_then(|m| m.lm_head_chunk_sizes.as_ref())
                    .map(|s| s.iter().sum())
            });
            (LmHeadOutputs::Argmax { offsets }, vocab)
        } else if head_main.outputs.len() == 1 {
            let only = head_main
                .outputs
                .first()
                .map(|o| o.name.clone())
                .unwrap_or_default();
            let size = head_main
                .outputs
                .first()
                .and_then(|o| o.kind.array())
                .and_then(|a| dim(&a.shape, -1));
            (
                LmHeadOutputs::Logits {
                    names: vec![only],
                    sizes: vec![size],
                },
                size.or(meta_vocab),
            )
        } else {
            return Err(interface(
                head_path,
                format!(
                    "LM head outputs [{}]: expected logits1..logitsN or argmax_idx/argmax_val",
                    head_main
                        .outputs
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };

        let layout = ModelLayout {
            context_length,
            batch_size,
            has_prefill,
            hidden_size,
            state_name,
            state_shape,
            state_length,
            embeddings_accept_batch,
            infer_update_mask,
            prefill_update_mask,
            lm_head,
            vocab_size,
            warnings: Vec::new(),
        };
        if let Some(meta) = meta {
            layout.check_meta(meta, parts, &mut warnings)?;
        }
        layout.check_user_metadata(parts, &mut warnings);
        Ok(ModelLayout { warnings, ..layout })
    }

    /// Compares the layout with meta.yaml: contradictions about what the files are (context, batch, chunks, splits)
    /// are errors; others are warnings.
    fn check_meta(
        &self,
        meta: &AnemllMeta,
        parts: PartDescriptions<'_>,
        warnings: &mut Vec<String>,
    ) -> Result<()> {
        let contradiction =
            |key: &str, meta_value: usize, file_value: usize, source: &str| LlmError::Meta {
                path: meta.path.clone(),
                key: key.to_string(),
                message: format!("meta.yaml says {meta_value}, but {source} says {file_value}"),
            };
        if let Some(c) = meta.context_length {
            if c != self.context_length {
                return Err(contradiction(
                    "context_length",
                    c,
                    self.context_length,
                    "the FFN causal_mask width",
                ));
            }
        }
        if let Some(b) = meta.batch_size {
            if self.has_prefill && b != self.batch_size {
                return Err(contradiction(
                    "batch_size",
                    b,
                    self.batch_size,
                    "the FFN prefill hidden_states",
                ));
            }
            if !self.has_prefill && b != 1 {
                warnings.push(format!(
                    "meta.yaml batch_size is {b}, but the FFN chunks have no `prefill` function: prefilling one token \
                     at a time"
                ));
            }
        }
        if let Some(n) = meta.num_chunks {
            if n != parts.chunks.len() {
                return Err(contradiction(
                    "num_chunks",
                    n,
                    parts.chunks.len(),
                    "the number of FFN chunk files",
                ));
            }
        }
        if let Some(n) = meta.split_lm_head {
            let found = match &self.lm_head {
                LmHeadOutputs::Logits { names, .. } => names.len(),
                LmHeadOutputs::Argmax { offsets } => offsets.len(),
            };
            if n != found && found > 1 {
                return Err(contradiction(
                    "split_lm_head",
                    n,
                    found,
                    "the LM head outputs",
                ));
            }
        }
        if let Some(s) = meta.state_length {
            if s != self.state_length {
                warnings.push(format!(
                    "meta.yaml state_length is {s}, but the KV state `{}` holds {} positions; using the state's",
                    self.state_name, self.state_length
                ));
            }
        }
        let argmax = matches!(self.lm_head, LmHeadOutputs::Argmax { .. });
        if let Some(a) = meta.argmax_in_model {
            if a != argmax {
                warnings.push(format!(
                    "meta.yaml argmax_in_model is {a}, but the LM head {} argmax_idx/argmax_val; following the LM head",
                    if argmax { "outputs" } else { "does not output" }
                ));
            }
        }
        if meta.update_mask_prefill == Some(true) && self.prefill_update_mask.is_none() {
            warnings.push(
                "meta.yaml update_mask_prefill is true, but the prefill functions declare no update_mask input".to_string(),
            );
        }
        Ok(())
    }

    /// Compares `com.anemll.context_length` / `com.anemll.batch_size` of the parts' metadata with the layout.
    fn check_user_metadata(&self, parts: PartDescriptions<'_>, warnings: &mut Vec<String>) {
        let all = std::iter::once(parts.embeddings)
            .chain(parts.chunks.iter().map(|(p, d)| (p.as_path(), *d)))
            .chain(std::iter::once(parts.lm_head));
        for (path, description) in all {
            let user = &description.metadata.user_defined;
            let checks = [
                ("com.anemll.context_length", self.context_length),
                ("com.anemll.batch_size", self.batch_size),
            ];
            for (key, expected) in checks {
                if key == "com.anemll.batch_size" && !self.has_prefill {
                    continue;
                }
                if let Some(value) = user.get(key) {
                    if value.trim().parse::<usize>().ok() != Some(expected) {
                        warnings.push(format!(
                            "{}: metadata {key} = {value}, but the model's tensors say {expected}",
                            path.display()
                        ));
                    }
                }
            }
        }
    }
}

/// Records `value` as the dimension all chunks must share.
fn same(
    path: &Path,
    chunk: &str,
    what: &str,
    slot: &mut Option<usize>,
    value: usize,
) -> Result<()> {
    match slot {
        None => {
            *slot = Some(value);
            Ok(())
        }
        Some(v) if *v == value => Ok(()),
        Some(v) => Err(interface(
            path,
            format!("{chunk}: {what} {value} differs from chunk 1's {v}"),
        )),
    }
}

/// The single KV state of an FFN function: name and concrete shape.
fn single_state(path: &Path, function: &FunctionDescription) -> Result<(String, Vec<usize>)> {
    let state = match function.states.as_slice() {
        [one] => one,
        [] => {
            return Err(interface(
                path,
                format!(
                    "function `{}` declares no state (expected the KV cache)",
                    function.name
                ),
            ))
        }
        many => {
            return Err(interface(
                path,
                format!(
                    "function `{}` declares {} states ({}); one shared KV cache is expected",
                    function.name,
                    many.len(),
                    many.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    };
    let shape = state
        .kind
        .array()
        .map(|a| a.shape.clone())
        .unwrap_or_default();
    let dims: Option<Vec<usize>> = shape
        .iter()
        .map(|&d| (d > 0).then_some(d as usize))
        .collect();
    match dims {
        Some(d) if d.len() == 4 => Ok((state.name.clone(), d)),
        _ => Err(interface(
            path,
            format!(
                "function `{}` state `{}` has shape {shape:?}; expected a fixed [2L, KV heads, length, head dim]",
                function.name, state.name
            ),
        )),
    }
}

/// The declared shape of an `update_mask` input.
fn update_mask_shape(
    path: &Path,
    function: &str,
    feature: &FeatureDescription,
) -> Result<UpdateMaskShape> {
    let a = feature.kind.array().ok_or_else(|| {
        interface(
            path,
            format!("function `{function}` input `update_mask` is not a tensor"),
        )
    })?;
    let shape: Option<Vec<usize>> = a
        .shape
        .iter()
        .map(|&d| (d > 0).then_some(d as usize))
        .collect();
    match shape {
        Some(s) if s.len() == 4 => Ok(UpdateMaskShape { shape: s }),
        _ => Err(interface(
            path,
            format!(
                "function `{function}` input `update_mask` has shape {:?}; expected 4 fixed dims",
                a.shape
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_offsets_follow_anemll_sizes() {
        assert_eq!(split_offsets(10, 3), vec![0, 4, 7]);
        assert_eq!(split_offsets(151_936, 16)[1], 9496);
        assert_eq!(split_offsets(64, 8), vec![0, 8, 16, 24, 32, 40, 48, 56]);
    }

    #[test]
    fn dims_from_the_end() {
        assert_eq!(dim(&[1, 1, 1, 256], -1), Some(256));
        assert_eq!(dim(&[1, -1, 128], 1), None);
        assert_eq!(dim(&[], -1), None);
    }
}
