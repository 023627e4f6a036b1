//! The ANEMLL model: embeddings → FFN chunks (`prefill` / `infer`, one shared KV state) → LM head.
//!
//! The driving sequence is ANEMLL's reference loop (`tests/chat.py`, 0.3.4):
//! - prefill in batches of B tokens at batch-aligned positions, right-padded with token 0, with absolute
//!   `position_ids`, rows `p..p+B` of the causal mask M (`M[i][j] = 0` for `j <= i`, `-inf` elsewhere, fp16) and
//!   `current_pos = [p]`; prefill outputs are discarded;
//! - the logits for the next token come from running the last token of the sequence through every chunk's
//!   `infer` (`position_ids = current_pos = [pos]`, mask row `pos`) and the LM head, whose split outputs are
//!   concatenated (or, with an in-model argmax, the best split's index plus that split's offset).
//!
//! The model remembers which tokens its KV state holds. A later call whose sequence shares a prefix with them
//! (a chat's next turn, the next decode step) only computes what is new: it restarts prefill at the batch
//! boundary at or before the first differing position (so batches line up with those of a fresh prefill), or,
//! when only the last token is new, runs just `infer`.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_coreml_hub::ModelConfig;
use candle_coreml_runtime::{CoreMLModel, LoadOptions, ModelState};
use half::f16;

use crate::error::{LlmError, Result};
use crate::files::ModelFiles;
use crate::layout::{
    names, LmHeadOutputs, ModelLayout, PartDescriptions, INFER_FUNCTION, PREFILL_FUNCTION,
};

/// What the LM head gives for the next token.
#[derive(Debug, Clone, PartialEq)]
pub enum NextToken {
    /// The logits over the vocabulary (concatenated splits), as f32.
    Logits(Vec<f32>),
    /// The token chosen by an in-model argmax (the model outputs no logits).
    Argmax(u32),
}

/// The FFN functions of one chunk.
#[derive(Debug, Clone)]
struct FfnChunk {
    infer: CoreMLModel,
    prefill: Option<CoreMLModel>,
}

/// An ANEMLL model loaded for generation, with its KV state.
#[derive(Debug)]
pub struct AnemllModel {
    files: ModelFiles,
    layout: ModelLayout,
    device: Device,
    embeddings: CoreMLModel,
    chunks: Vec<FfnChunk>,
    lm_head: CoreMLModel,
    state: ModelState,
    /// The tokens whose keys and values the state holds, at positions `0..len`.
    cached: Vec<u32>,
    /// Tokens run through the FFN chunks since the last [`AnemllModel::take_computed_tokens`].
    computed_tokens: usize,
    /// Whether to fill the KV state with `prefill` batches (else one token at a time through `infer`).
    batched_prefill: bool,
}

fn interface(path: &Path, message: String) -> LlmError {
    LlmError::Interface {
        path: path.to_path_buf(),
        message,
    }
}

/// The output called `name` among `outputs`, or an error naming the model.
fn output<'a>(
    outputs: &'a [(String, Tensor)],
    name: &str,
    model: &CoreMLModel,
) -> Result<&'a Tensor> {
    outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| {
            interface(
                model.path(),
                format!(
                    "function `{}` returned no output `{name}`",
                    model.function_name()
                ),
            )
        })
}

/// Checks a ModelConfig's `shapes` against the dimensions read from the model files: a config written for another
/// model (or another conversion of it) is refused rather than silently trusted.
fn check_config_shapes(config: &ModelConfig, layout: &ModelLayout, dir: &Path) -> Result<()> {
    let shapes = &config.shapes;
    let mut checks = vec![
        (
            "context_length",
            shapes.context_length,
            Some(layout.context_length),
        ),
        ("hidden_size", shapes.hidden_size, Some(layout.hidden_size)),
        ("vocab_size", shapes.vocab_size, layout.vocab_size),
    ];
    if layout.has_prefill {
        checks.push(("batch_size", shapes.batch_size, Some(layout.batch_size)));
    }
    for (name, configured, found) in checks {
        if let Some(found) = found.filter(|f| *f != configured) {
            return Err(LlmError::Config {
                dir: dir.to_path_buf(),
                message: format!(
                    "shapes.{name} is {configured}, but the model files declare {found}"
                ),
            });
        }
    }
    Ok(())
}

impl AnemllModel {
    /// Loads the ANEMLL model in `dir` on the CPU with the portable executor.
    pub fn load(dir: impl AsRef<Path>) -> Result<AnemllModel> {
        AnemllModel::load_with(dir, &LoadOptions::default())
    }

    /// Loads the ANEMLL model in `dir` with the given backend and device (`options.function` is ignored: each part's
    /// functions are chosen here). The parts are found by [`ModelFiles::locate`].
    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<AnemllModel> {
        AnemllModel::from_files(ModelFiles::locate(dir)?, options)
    }

    /// Loads the parts listed in `files` with the given backend and device (`options.function` is ignored). When the
    /// files came from a ModelConfig, its shapes must agree with what the model files declare.
    pub fn from_files(files: ModelFiles, options: &LoadOptions) -> Result<AnemllModel> {
        let part_options = |function: Option<&str>| LoadOptions {
            function: function.map(str::to_string),
            ..options.clone()
        };
        let embeddings = CoreMLModel::load_with(&files.embeddings, &part_options(None))?;
        let lm_head = CoreMLModel::load_with(&files.lm_head, &part_options(None))?;
        let mut chunks = Vec::with_capacity(files.ffn_chunks.len());
        for path in &files.ffn_chunks {
            let infer = CoreMLModel::load_with(path, &part_options(Some(INFER_FUNCTION)))?;
            let prefill = if infer.description().function(PREFILL_FUNCTION).is_some() {
                Some(infer.with_function(PREFILL_FUNCTION)?)
            } else {
                None
            };
            chunks.push(FfnChunk { infer, prefill });
        }
        let chunk_descriptions: Vec<(std::path::PathBuf, &_)> = chunks
            .iter()
            .map(|c| (c.infer.path().to_path_buf(), c.infer.description()))
            .collect();
        let layout = ModelLayout::from_descriptions(
            PartDescriptions {
                embeddings: (embeddings.path(), embeddings.description()),
                chunks: &chunk_descriptions,
                lm_head: (lm_head.path(), lm_head.description()),
            },
            files.meta.as_ref(),
        )?;
        tracing::info!(
            "{}: context {}, prefill batch {}{}, {} chunk(s), KV state `{}` {:?}, vocabulary {}",
            files.dir.display(),
            layout.context_length,
            layout.batch_size,
            if layout.has_prefill {
                ""
            } else {
                " (no prefill function)"
            },
            chunks.len(),
            layout.state_name,
            layout.state_shape,
            layout
                .vocab_size
                .map(|v| v.to_string())
                .unwrap_or_else(|| "undeclared".to_string()),
        );
        for warning in &layout.warnings {
            tracing::warn!("{}: {warning}", files.dir.display());
        }
        if let Some(config) = &files.config {
            check_config_shapes(config, &layout, &files.dir)?;
        }
        let first = chunks
            .first()
            .ok_or_else(|| interface(&files.dir, "the model has no FFN chunks".to_string()))?;
        // One state for every chunk and both functions, made from chunk 1's prefill (as the reference does).
        let state = first
            .prefill
            .as_ref()
            .unwrap_or(&first.infer)
            .make_state()?;
        Ok(AnemllModel {
            files,
            batched_prefill: layout.has_prefill,
            layout,
            device: options.device.clone(),
            embeddings,
            chunks,
            lm_head,
            state,
            cached: Vec::new(),
            computed_tokens: 0,
        })
    }

    /// Where the parts were found.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }

    /// Dimensions and interface.
    pub fn layout(&self) -> &ModelLayout {
        &self.layout
    }

    /// Context length C: the most tokens a sequence passed to [`AnemllModel::next_token`] may hold.
    pub fn context_length(&self) -> usize {
        self.layout.context_length
    }

    /// The tokens whose keys and values the KV state holds (positions `0..len`).
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the KV state (zero-filled again).
    pub fn reset(&mut self) -> Result<()> {
        let first = self
            .chunks
            .first()
            .ok_or_else(|| interface(&self.files.dir, "the model has no FFN chunks".to_string()))?;
        self.state = first
            .prefill
            .as_ref()
            .unwrap_or(&first.infer)
            .make_state()?;
        self.cached.clear();
        Ok(())
    }

    /// Chooses how prompts are written into the KV state: `prefill` batches (the default when the chunks have a
    /// `prefill` function) or one token at a time through `infer` (as batch-1 models do).
    pub fn set_batched_prefill(&mut self, enabled: bool) -> Result<()> {
        if enabled && !self.layout.has_prefill {
            return Err(LlmError::InvalidRequest(
                "the FFN chunks have no `prefill` function".to_string(),
            ));
        }
        self.batched_prefill = enabled;
        Ok(())
    }

    /// How many tokens went through the FFN chunks (prefill and infer) since the last call; resets the count.
    pub fn take_computed_tokens(&mut self) -> usize {
        std::mem::take(&mut self.computed_tokens)
    }

    /// The LM head's answer for the token after `sequence` (positions `0..len`, at most the context length).
    /// Only what the KV state does not already hold is computed.
    pub fn next_token(&mut self, sequence: &[u32]) -> Result<NextToken> {
        let n = sequence.len();
        let c = self.layout.context_length;
        let last = match n.checked_sub(1) {
            Some(last) if n <= c => last,
            _ => {
                return Err(LlmError::InvalidRequest(format!(
                    "a sequence of {n} tokens does not fit the model (1 to {c} tokens)"
                )))
            }
        };
        let common = self
            .cached
            .iter()
            .zip(sequence)
            .take_while(|(a, b)| a == b)
            .count();
        self.cached.truncate(common);
        if common < last {
            self.fill(sequence, common)?;
        }
        let token = sequence.get(last).copied().unwrap_or_default();
        let hidden = self.infer(token, last)?;
        self.cached.truncate(last);
        self.cached.push(token);
        self.run_lm_head(&hidden)
    }

    /// The logits for the token after `sequence` (see [`AnemllModel::next_token`]); an error for models with an
    /// in-model argmax, which output no logits.
    pub fn logits_for_next_token(&mut self, sequence: &[u32]) -> Result<Vec<f32>> {
        match self.next_token(sequence)? {
            NextToken::Logits(l) => Ok(l),
            NextToken::Argmax(_) => Err(interface(
                &self.files.lm_head,
                "the LM head computes the argmax in the model and outputs no logits".to_string(),
            )),
        }
    }

    /// Writes the keys and values of `sequence[from..]` into the state (positions from `from` on; the last token
    /// included, as the reference prefill does).
    fn fill(&mut self, sequence: &[u32], from: usize) -> Result<()> {
        let n = sequence.len();
        let b = self.layout.batch_size;
        let c = self.layout.context_length;
        let s = self.layout.state_length;
        // 0.3.5 models (declared update_mask) prefill only full batches; the rest goes through infer.
        let full_batches_only = self.layout.prefill_update_mask.is_some();
        let mut position = from;
        if self.batched_prefill {
            // Restart at the batch boundary so that batches line up with those of a fresh prefill.
            let mut batch_start = from / b * b;
            while batch_start < n {
                let end = (batch_start + b).min(n);
                if batch_start + b > c
                    || batch_start + b > s
                    || (full_batches_only && end - batch_start < b)
                {
                    break;
                }
                let tokens = sequence.get(batch_start..end).unwrap_or_default();
                self.prefill_batch(tokens, batch_start)?;
                self.cached.truncate(batch_start);
                self.cached.extend_from_slice(tokens);
                batch_start = end;
                position = end;
            }
        }
        // Without prefill (or for what does not fit a batch): one token at a time, all but the last, which the
        // caller runs through infer for the logits.
        while position + 1 < n {
            let token = sequence.get(position).copied().unwrap_or_default();
            self.infer(token, position)?;
            self.cached.truncate(position);
            self.cached.push(token);
            position += 1;
        }
        Ok(())
    }

    /// Runs one prefill batch: `tokens` (at most B) at positions `position..`, right-padded with token 0.
    fn prefill_batch(&mut self, tokens: &[u32], position: usize) -> Result<()> {
        let b = self.layout.batch_size;
        let mut ids: Vec<u32> = tokens.to_vec();
        ids.resize(b, 0);
        let mut hidden = self.embed(&ids)?;
        let position_ids = self.int_tensor(&(position..position + b).collect::<Vec<_>>(), &[b])?;
        let current_pos = self.int_tensor(&[position], &[1])?;
        let mask = self.mask_rows(position, b)?;
        let update_mask = match &self.layout.prefill_update_mask {
            Some(m) => Some(self.one_hot_update_mask(&m.shape, position, b)?),
            None => None,
        };
        let chunk_count = self.chunks.len();
        for (index, chunk) in self.chunks.iter().enumerate() {
            let prefill = chunk.prefill.as_ref().ok_or_else(|| {
                interface(
                    chunk.infer.path(),
                    format!("chunk {} has no `{PREFILL_FUNCTION}` function", index + 1),
                )
            })?;
            let mut inputs: Vec<(&str, &Tensor)> = vec![
                (names::HIDDEN_STATES, &hidden),
                (names::POSITION_IDS, &position_ids),
                (names::CAUSAL_MASK, &mask),
                (names::CURRENT_POS, &current_pos),
            ];
            if let Some(m) = &update_mask {
                inputs.push((names::UPDATE_MASK, m));
            }
            let outputs = prefill.predict_with_state(&inputs, &mut self.state)?;
            // The last chunk's prefill output is not used (it may hold only one row).
            if index + 1 < chunk_count {
                hidden = output(&outputs, names::OUTPUT_HIDDEN_STATES, prefill)?.clone();
            }
        }
        self.computed_tokens += tokens.len();
        Ok(())
    }

    /// Runs one token at `position` through every chunk's `infer`; returns the last chunk's hidden state.
    fn infer(&mut self, token: u32, position: usize) -> Result<Tensor> {
        let mut hidden = self.embed(&[token])?;
        let position_ids = self.int_tensor(&[position], &[1])?;
        let mask = self.mask_rows(position, 1)?;
        let update_mask = match &self.layout.infer_update_mask {
            Some(m) => Some(self.one_hot_update_mask(&m.shape, position, 1)?),
            None => None,
        };
        for chunk in &self.chunks {
            let mut inputs: Vec<(&str, &Tensor)> = vec![
                (names::HIDDEN_STATES, &hidden),
                (names::POSITION_IDS, &position_ids),
                (names::CAUSAL_MASK, &mask),
                (names::CURRENT_POS, &position_ids),
            ];
            if let Some(m) = &update_mask {
                inputs.push((names::UPDATE_MASK, m));
            }
            let outputs = chunk.infer.predict_with_state(&inputs, &mut self.state)?;
            hidden = output(&outputs, names::OUTPUT_HIDDEN_STATES, &chunk.infer)?.clone();
        }
        self.computed_tokens += 1;
        Ok(hidden)
    }

    /// Hidden states `[1, n, H]` of `ids`: one embeddings call, or one per token when the embeddings accept only
    /// `[1, 1]`.
    fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let run = |ids: &[u32]| -> Result<Tensor> {
            let input = self.int_tensor(ids, &[1, ids.len()])?;
            let outputs = self.embeddings.predict(&[(names::INPUT_IDS, &input)])?;
            let hidden = outputs
                .iter()
                .find(|(n, _)| n == names::HIDDEN_STATES)
                .or_else(|| outputs.first())
                .map(|(_, t)| t.clone())
                .ok_or_else(|| {
                    interface(
                        self.embeddings.path(),
                        "the embeddings returned no output".to_string(),
                    )
                })?;
            Ok(hidden)
        };
        if ids.len() == 1 || self.layout.embeddings_accept_batch {
            run(ids)
        } else {
            let parts = ids
                .iter()
                .map(|&id| run(&[id]))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&parts, 1)?)
        }
    }

    /// The next-token answer of the LM head for the hidden state `[1, 1, H]`.
    fn run_lm_head(&self, hidden: &Tensor) -> Result<NextToken> {
        let outputs = self.lm_head.predict(&[(names::HIDDEN_STATES, hidden)])?;
        match &self.layout.lm_head {
            LmHeadOutputs::Logits { names: parts, .. } => {
                let mut logits = Vec::new();
                for name in parts {
                    let t = output(&outputs, name, &self.lm_head)?;
                    logits.extend(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?);
                }
                Ok(NextToken::Logits(logits))
            }
            LmHeadOutputs::Argmax { offsets } => {
                let idx = output(&outputs, names::ARGMAX_IDX, &self.lm_head)?
                    .flatten_all()?
                    .to_dtype(DType::I64)?
                    .to_vec1::<i64>()?;
                let val = output(&outputs, names::ARGMAX_VAL, &self.lm_head)?
                    .flatten_all()?
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?;
                if idx.len() != offsets.len() || val.len() != offsets.len() {
                    return Err(interface(
                        self.lm_head.path(),
                        format!(
                            "argmax outputs hold {} indices and {} values for {} splits",
                            idx.len(),
                            val.len(),
                            offsets.len()
                        ),
                    ));
                }
                let token = token_from_split_argmax(&idx, &val, offsets).ok_or_else(|| {
                    interface(
                        self.lm_head.path(),
                        format!("argmax outputs {idx:?} / {val:?} give no valid token id"),
                    )
                })?;
                Ok(NextToken::Argmax(token))
            }
        }
    }

    /// An int32 tensor of `values` with `shape`.
    fn int_tensor(&self, values: &[impl Copy + TryInto<i32>], shape: &[usize]) -> Result<Tensor> {
        let data = values
            .iter()
            .map(|&v| {
                v.try_into().map_err(|_| {
                    LlmError::InvalidRequest(
                        "token id or position beyond the int32 range".to_string(),
                    )
                })
            })
            .collect::<Result<Vec<i32>>>()?;
        Ok(Tensor::from_vec(data, shape, &self.device)?)
    }

    /// Rows `first..first+rows` of the causal mask M (`[1, 1, rows, C]`, fp16): 0 where column ≤ row, −inf
    /// elsewhere.
    fn mask_rows(&self, first: usize, rows: usize) -> Result<Tensor> {
        let c = self.layout.context_length;
        let mut data = vec![f16::NEG_INFINITY; rows * c];
        for (r, row) in data.chunks_mut(c).enumerate() {
            let visible = (first + r + 1).min(c);
            for v in row.iter_mut().take(visible) {
                *v = f16::ZERO;
            }
        }
        Ok(Tensor::from_vec(data, (1, 1, rows, c), &self.device)?)
    }

    /// The one-hot `update_mask` (`[1, 1, P, T]`, fp16): 1 at `[position + i, i]` for each of the `tokens` columns.
    fn one_hot_update_mask(
        &self,
        shape: &[usize],
        position: usize,
        tokens: usize,
    ) -> Result<Tensor> {
        let (rows, cols) = match shape {
            [1, 1, rows, cols] => (*rows, *cols),
            _ => {
                return Err(interface(
                    &self.files.dir,
                    format!("update_mask shape {shape:?} is not [1, 1, positions, tokens]"),
                ))
            }
        };
        let mut data = vec![f16::ZERO; rows * cols];
        for i in 0..tokens.min(cols) {
            if let Some(v) = data.get_mut((position + i) * cols + i) {
                *v = f16::ONE;
            }
        }
        Ok(Tensor::from_vec(data, (1, 1, rows, cols), &self.device)?)
    }
}

/// The token chosen by an in-model argmax: the split with the largest value (the first on ties), its local index
/// plus the split's vocabulary offset. `None` when the values are all NaN or an index is negative.
pub fn token_from_split_argmax(indices: &[i64], values: &[f32], offsets: &[usize]) -> Option<u32> {
    let best = crate::sampling::argmax(values).ok()? as usize;
    let local = u32::try_from(*indices.get(best)?).ok()?;
    let offset = u32::try_from(*offsets.get(best)?).ok()?;
    local.checked_add(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_argmax_adds_the_split_offset() {
        // Splits of 10, 10, 9 tokens: offsets 0, 10, 20. Split 1 holds the largest value at local index 7.
        let offsets = [0, 10, 20];
        assert_eq!(
            token_from_split_argmax(&[3, 7, 8], &[1.0, 2.5, -1.0], &offsets),
            Some(17)
        );
        assert_eq!(
            token_from_split_argmax(&[3, 7, 8], &[1.0, 2.5, 2.5], &offsets),
            Some(17)
        );
        assert_eq!(
            token_from_split_argmax(&[3, 7, 8], &[1.0, 0.5, 4.0], &offsets),
            Some(28)
        );
        assert_eq!(
            token_from_split_argmax(&[-1, 0, 0], &[9.0, 0.0, 0.0], &offsets),
            None
        );
        assert_eq!(token_from_split_argmax(&[0], &[f32::NAN], &[0]), None);
    }
}
