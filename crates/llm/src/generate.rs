//! Text generation: a [`TextModel`] (an [`AnemllModel`] with its tokenizer) turns a prompt or a conversation into
//! text, streaming it as it is produced, with stop tokens, stop strings, sampling and timings.
//!
//! When the context fills up, the oldest tokens are dropped the way ANEMLL's `chat_full.py` does it: once the
//! sequence reaches C − 2 tokens, the last `min(max(1, C/B − 2)·B, C − B)` are kept (C/2 for models without a
//! batched prefill), moved to positions 0.., and re-prefilled; generation then continues.

use std::path::Path;
use std::time::{Duration, Instant};

use candle_coreml_hub::{resolve_model, ResolveOptions};
use candle_coreml_runtime::LoadOptions;

use crate::chat_template::{ChatTemplateOptions, Message};
use crate::error::{LlmError, Result};
use crate::files::ModelFiles;
use crate::pipeline::{AnemllModel, NextToken};
use crate::sampling::{Sampler, SamplingConfig};
use crate::tokenizer::{IncrementalDecoder, TextTokenizer};

/// Settings of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// The most tokens to generate.
    pub max_new_tokens: usize,
    /// How to pick each token.
    pub sampling: SamplingConfig,
    /// Generation stops when the text contains one of these; the text is cut before it.
    pub stop_strings: Vec<String>,
    /// Stop at the tokenizer's stop tokens (end of reply); `false` generates through them.
    pub stop_at_eos: bool,
    /// `enable_thinking` for chat templates that know it (Qwen3); `None` leaves it undefined.
    pub enable_thinking: Option<bool>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            max_new_tokens: 256,
            sampling: SamplingConfig::default(),
            stop_strings: Vec::new(),
            stop_at_eos: true,
            enable_thinking: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token (end of reply) was produced; it is not part of the output.
    StopToken(u32),
    /// The text reached this stop string; the text ends before it.
    StopString(String),
    /// `max_new_tokens` tokens were generated.
    MaxTokens,
}

impl StopReason {
    /// A short name: `stop_token`, `stop_string` or `max_tokens`.
    pub fn name(&self) -> &'static str {
        match self {
            StopReason::StopToken(_) => "stop_token",
            StopReason::StopString(_) => "stop_string",
            StopReason::MaxTokens => "max_tokens",
        }
    }
}

/// How long generation took.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Timings {
    /// Tokens of the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens actually computed (the rest was already in the KV state from an earlier call).
    pub prefilled_tokens: usize,
    /// Tokens generated (stop token excluded).
    pub generated_tokens: usize,
    /// From the start to the first generated token (prefill and the first decode step).
    pub time_to_first_token: Duration,
    /// From the first generated token to the end.
    pub decode_time: Duration,
    /// Context shifts (drop oldest tokens, re-prefill) during generation.
    pub context_shifts: usize,
}

impl Timings {
    /// Prompt tokens computed per second, up to the first token.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        per_second(self.prefilled_tokens, self.time_to_first_token)
    }

    /// Tokens generated per second after the first one.
    pub fn decode_tokens_per_second(&self) -> f64 {
        per_second(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn per_second(count: usize, time: Duration) -> f64 {
    let seconds = time.as_secs_f64();
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// The prompt's token ids.
    pub prompt_ids: Vec<u32>,
    /// The generated token ids (stop token excluded).
    pub token_ids: Vec<u32>,
    /// The generated text (cut before a stop string).
    pub text: String,
    /// Why generation ended.
    pub stop_reason: StopReason,
    /// The sampler's seed.
    pub seed: u64,
    /// Timings.
    pub timings: Timings,
}

/// How many tokens to keep when the context is full (see the module documentation).
pub fn tokens_kept_on_shift(context_length: usize, batch_size: usize) -> usize {
    if batch_size <= 1 {
        return (context_length / 2).max(1);
    }
    let batches = (context_length / batch_size).saturating_sub(2).max(1);
    (batches * batch_size)
        .min(context_length.saturating_sub(batch_size))
        .max(1)
}

/// Holds back text that may be the start of a stop string, and finds stop strings.
#[derive(Debug, Default)]
struct StopStrings {
    stops: Vec<String>,
    longest: usize,
    text: String,
    emitted: usize,
}

impl StopStrings {
    fn new(stops: &[String]) -> StopStrings {
        let stops: Vec<String> = stops.iter().filter(|s| !s.is_empty()).cloned().collect();
        let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
        StopStrings {
            stops,
            longest,
            ..StopStrings::default()
        }
    }

    /// Adds text; returns what may be shown now and the stop string reached, if any.
    fn push(&mut self, piece: &str) -> (String, Option<String>) {
        let search_from = self.text.len().saturating_sub(self.longest);
        self.text.push_str(piece);
        let mut found: Option<(usize, &String)> = None;
        for stop in &self.stops {
            let start = floor_char_boundary(&self.text, search_from);
            if let Some(at) = self.text.get(start..).and_then(|t| t.find(stop.as_str())) {
                let at = start + at;
                if found.is_none_or(|(f, _)| at < f) {
                    found = Some((at, stop));
                }
            }
        }
        if let Some((at, stop)) = found {
            let stop = stop.clone();
            self.text.truncate(at);
            return (self.release(at), Some(stop));
        }
        let safe = if self.longest > 0 {
            floor_char_boundary(&self.text, self.text.len().saturating_sub(self.longest - 1))
        } else {
            self.text.len()
        };
        (self.release(safe), None)
    }

    /// Releases the text up to `end` not shown yet.
    fn release(&mut self, end: usize) -> String {
        let end = end.max(self.emitted);
        let out = self
            .text
            .get(self.emitted..end)
            .unwrap_or_default()
            .to_string();
        self.emitted = end;
        out
    }

    /// Releases everything held back.
    fn finish(&mut self) -> String {
        self.release(self.text.len())
    }
}

/// The largest char boundary of `text` at or before `index`.
fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut i = index.min(text.len());
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// An ANEMLL model with its tokenizer: generation from text, token ids or a conversation.
#[derive(Debug)]
pub struct TextModel {
    model: AnemllModel,
    tokenizer: TextTokenizer,
}

/// The old seed crate's name for a text model.
pub type QwenModel = TextModel;

impl TextModel {
    /// Loads the model and tokenizer in `dir` on the CPU.
    pub fn load(dir: impl AsRef<Path>) -> Result<TextModel> {
        TextModel::load_with(dir, &LoadOptions::default())
    }

    /// Loads the model (with the given backend and device) and tokenizer in `dir`; the parts are found by
    /// [`ModelFiles::locate`] (`model_config.json`, else `meta.yaml`, else file names).
    pub fn load_with(dir: impl AsRef<Path>, options: &LoadOptions) -> Result<TextModel> {
        TextModel::from_files(ModelFiles::locate(dir)?, options)
    }

    /// Loads the parts listed in `files` (with the given backend and device) and the tokenizer of their directory
    /// (or of `meta.yaml`'s `tokenizer_path` under it).
    pub fn from_files(files: ModelFiles, options: &LoadOptions) -> Result<TextModel> {
        let dir = files.dir.clone();
        let tokenizer_dir = files
            .meta
            .as_ref()
            .and_then(|m| m.tokenizer_path.as_ref())
            .map(|p| dir.join(p))
            .filter(|p| p.join("tokenizer.json").is_file())
            .unwrap_or(dir);
        let model = AnemllModel::from_files(files, options)?;
        let tokenizer = TextTokenizer::from_dir(tokenizer_dir)?;
        Ok(TextModel { model, tokenizer })
    }

    /// Loads a model named by a local directory or a Hugging Face repo id (`org/name`, downloaded into the hub
    /// cache when needed, at `options.revision`) on the CPU.
    pub fn from_pretrained(spec: &str, options: &ResolveOptions) -> Result<TextModel> {
        let dir = resolve_model(spec, options)?;
        TextModel::load(dir)
    }

    /// A text model from parts already loaded.
    pub fn new(model: AnemllModel, tokenizer: TextTokenizer) -> TextModel {
        TextModel { model, tokenizer }
    }

    /// The model.
    pub fn model(&self) -> &AnemllModel {
        &self.model
    }

    /// The model, mutably (e.g. to reset its KV state).
    pub fn model_mut(&mut self) -> &mut AnemllModel {
        &mut self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// The prompt for a conversation: the chat template applied with `add_generation_prompt`.
    pub fn chat_prompt(
        &self,
        messages: &[Message],
        enable_thinking: Option<bool>,
    ) -> Result<String> {
        self.tokenizer.apply_chat_template(
            messages,
            &ChatTemplateOptions {
                add_generation_prompt: true,
                enable_thinking,
                ..ChatTemplateOptions::default()
            },
        )
    }

    /// Generates a reply to a conversation (chat template applied). The KV state keeps what an earlier call left,
    /// so a conversation's next turn only computes its new tokens.
    pub fn chat(&mut self, messages: &[Message], config: &GenerationConfig) -> Result<Generation> {
        self.chat_stream(messages, config, &mut |_| {})
    }

    /// [`TextModel::chat`], calling `on_text` with each new piece of text.
    pub fn chat_stream(
        &mut self,
        messages: &[Message],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let prompt = self.chat_prompt(messages, config.enable_thinking)?;
        let ids = self.tokenizer.encode(&prompt, false)?;
        self.generate_ids(&ids, config, on_text)
    }

    /// Generates a continuation of raw `prompt` text (no chat template; the tokenizer's own special tokens, such as
    /// a BOS, are added).
    pub fn generate(&mut self, prompt: &str, config: &GenerationConfig) -> Result<Generation> {
        self.generate_stream(prompt, config, &mut |_| {})
    }

    /// [`TextModel::generate`], calling `on_text` with each new piece of text.
    pub fn generate_stream(
        &mut self,
        prompt: &str,
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let ids = self.tokenizer.encode(prompt, true)?;
        self.generate_ids(&ids, config, on_text)
    }

    /// Generates from prompt token ids, calling `on_text` with each new piece of text (never a partial UTF-8
    /// character, never text past a stop string).
    pub fn generate_ids(
        &mut self,
        prompt_ids: &[u32],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        if prompt_ids.is_empty() {
            return Err(LlmError::InvalidRequest(
                "the prompt has no tokens".to_string(),
            ));
        }
        let mut sampler = Sampler::new(config.sampling.clone())?;
        if config.sampling.temperature > 0.0
            && matches!(
                self.model.layout().lm_head,
                crate::layout::LmHeadOutputs::Argmax { .. }
            )
        {
            return Err(LlmError::InvalidRequest(
                "this model computes the argmax inside its LM head; only greedy decoding (temperature 0) is possible"
                    .to_string(),
            ));
        }
        let context = self.model.context_length();
        let keep = tokens_kept_on_shift(context, self.model.layout().batch_size);
        let shift_at = context.saturating_sub(2).max(keep + 1);
        let mut timings = Timings {
            prompt_tokens: prompt_ids.len(),
            ..Timings::default()
        };
        let mut window: Vec<u32> = prompt_ids.to_vec();
        if window.len() >= shift_at {
            tracing::warn!(
                "the prompt has {} tokens, the context {context}: keeping its last {keep}",
                window.len()
            );
            window.drain(..window.len() - keep);
            timings.context_shifts += 1;
        }
        // The repetition penalty looks at the prompt and everything generated, not just the window.
        let mut history: Vec<u32> = prompt_ids.to_vec();
        let mut generated = Vec::new();
        let mut decoder = IncrementalDecoder::new();
        let mut stops = StopStrings::new(&config.stop_strings);
        let mut stop_reason = StopReason::MaxTokens;
        let start = Instant::now();
        let mut first_token_at = None;
        self.model.take_computed_tokens();
        while generated.len() < config.max_new_tokens {
            if window.len() >= shift_at {
                window.drain(..window.len() - keep);
                timings.context_shifts += 1;
            }
            let next = match self.model.next_token(&window)? {
                NextToken::Logits(logits) => sampler.sample(&logits, &history)?,
                NextToken::Argmax(token) => token,
            };
            if first_token_at.is_none() {
                first_token_at = Some(Instant::now());
                timings.prefilled_tokens = self.model.take_computed_tokens();
            }
            if config.stop_at_eos && self.tokenizer.stop_tokens().contains(&next) {
                stop_reason = StopReason::StopToken(next);
                break;
            }
            generated.push(next);
            history.push(next);
            window.push(next);
            if let Some(piece) = decoder.push(&self.tokenizer, next)? {
                let (shown, reached) = stops.push(&piece);
                if !shown.is_empty() {
                    on_text(&shown);
                }
                if let Some(stop) = reached {
                    stop_reason = StopReason::StopString(stop);
                    break;
                }
            }
        }
        if !matches!(stop_reason, StopReason::StopString(_)) {
            if let Some(rest) = decoder.finish(&self.tokenizer)? {
                let (shown, reached) = stops.push(&rest);
                if !shown.is_empty() {
                    on_text(&shown);
                }
                if let Some(stop) = reached {
                    stop_reason = StopReason::StopString(stop);
                }
            }
            let rest = stops.finish();
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        let end = Instant::now();
        let first = first_token_at.unwrap_or(end);
        timings.time_to_first_token = first - start;
        timings.decode_time = end - first;
        timings.generated_tokens = generated.len();
        Ok(Generation {
            prompt_ids: prompt_ids.to_vec(),
            token_ids: generated,
            text: stops.text,
            stop_reason,
            seed: sampler.seed(),
            timings,
        })
    }

    /// Greedy continuation of raw `prompt` text, at most `max_tokens` tokens (the old seed crate's API).
    pub fn complete_text(&mut self, prompt: &str, max_tokens: usize) -> Result<String> {
        let config = GenerationConfig {
            max_new_tokens: max_tokens,
            ..GenerationConfig::default()
        };
        Ok(self.generate(prompt, &config)?.text)
    }

    /// Token ids continuing raw `prompt` text, sampled with `temperature` and optional top-k (the old seed crate's
    /// API).
    pub fn generate_tokens_topk_temp(
        &mut self,
        prompt: &str,
        max_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
    ) -> Result<Vec<u32>> {
        let config = GenerationConfig {
            max_new_tokens: max_tokens,
            sampling: SamplingConfig {
                temperature,
                top_k,
                ..SamplingConfig::default()
            },
            ..GenerationConfig::default()
        };
        Ok(self.generate(prompt, &config)?.token_ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_keeps_what_chat_full_keeps() {
        // C = 256, B = 32: min(6 * 32, 224) = 192. C = 512, B = 64: min(6 * 64, 448) = 384.
        assert_eq!(tokens_kept_on_shift(256, 32), 192);
        assert_eq!(tokens_kept_on_shift(512, 64), 384);
        // C = 128, B = 64: max(1, 0) * 64 = 64, min(64, 64) = 64.
        assert_eq!(tokens_kept_on_shift(128, 64), 64);
        assert_eq!(tokens_kept_on_shift(256, 1), 128);
    }

    #[test]
    fn stop_strings_hold_back_possible_starts_and_cut_the_text() {
        let mut s = StopStrings::new(&["STOP".to_string()]);
        assert_eq!(s.push("abc S"), ("ab".to_string(), None));
        assert_eq!(s.push("T"), ("c".to_string(), None));
        assert_eq!(s.push("é"), (" S".to_string(), None));
        let (shown, reached) = s.push("xSTOPyz");
        assert_eq!(shown, "Téx");
        assert_eq!(reached.as_deref(), Some("STOP"));
        assert_eq!(s.text, "abc STéx");
        let mut none = StopStrings::new(&[]);
        assert_eq!(none.push("abc"), ("abc".to_string(), None));
    }

    #[test]
    fn stop_string_split_over_pieces_is_found() {
        let mut s = StopStrings::new(&["</answer>".to_string(), "##".to_string()]);
        let mut shown = String::new();
        let mut reached = None;
        for piece in ["The ans", "wer is 4.</an", "swer> more"] {
            let (text, stop) = s.push(piece);
            shown.push_str(&text);
            if stop.is_some() {
                reached = stop;
                break;
            }
        }
        assert_eq!(reached.as_deref(), Some("</answer>"));
        assert_eq!(shown, "The answer is 4.");
    }
}
