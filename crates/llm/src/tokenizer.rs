//! The Hugging Face tokenizer of a model directory (`tokenizer.json`), its `tokenizer_config.json` (special tokens,
//! chat template), the set of stop tokens, and UTF-8-safe incremental detokenisation for streaming.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::chat_template::{ChatTemplate, ChatTemplateOptions, Message};
use crate::error::{LlmError, Result};

/// Tokens that end a reply in common chat models; each is a stop token when the vocabulary has it.
pub const COMMON_STOP_TOKENS: [&str; 4] = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"];

/// Special-token names of `tokenizer_config.json` passed to chat templates as variables.
const SPECIAL_TOKEN_KEYS: [&str; 7] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "sep_token",
    "cls_token",
    "mask_token",
];

/// A tokenizer with its special tokens, stop tokens and (optional) chat template.
#[derive(Debug)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    special_tokens: BTreeMap<String, String>,
    chat_template: Option<ChatTemplate>,
    /// Why the model's chat template could not be compiled, reported when it is used.
    chat_template_error: Option<String>,
    stop_tokens: BTreeSet<u32>,
}

/// Reads a JSON file, or `None` when it does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| LlmError::Json {
            path: path.to_path_buf(),
            source,
        })
}

/// A token written either as a string or as an added-token object `{"content": ...}`.
fn token_text(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// Token ids written as one integer or a list (`eos_token_id` in generation_config.json / config.json).
fn token_ids(value: Option<&serde_json::Value>) -> Vec<u32> {
    match value {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .into_iter()
            .collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The chat template of a model directory: `chat_template.jinja`, else `chat_template.json`, else
/// `tokenizer_config.json` `chat_template` (a string, or a list of named templates where `default` is used).
fn find_chat_template(dir: &Path, config: Option<&serde_json::Value>) -> Result<Option<String>> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja)
            .map(Some)
            .map_err(|source| LlmError::Io {
                path: jinja,
                source,
            });
    }
    let from_value = |v: &serde_json::Value| -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Array(list) => list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        }
    };
    if let Some(json) = read_json(&dir.join("chat_template.json"))? {
        if let Some(t) = json.get("chat_template").and_then(from_value) {
            return Ok(Some(t));
        }
    }
    Ok(config
        .and_then(|c| c.get("chat_template"))
        .and_then(from_value))
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, `tokenizer_config.json` and (when present) `generation_config.json` and `config.json`
    /// from a model directory.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<TextTokenizer> {
        let dir = dir.as_ref();
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(LlmError::Tokenizer(format!(
                "{}: not found (a Hugging Face fast tokenizer file is required)",
                tokenizer_path.display()
            )));
        }
        let inner = tokenizers::Tokenizer::from_file(&tokenizer_path)
            .map_err(|e| LlmError::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
        let config = read_json(&dir.join("tokenizer_config.json"))?;
        let mut special_tokens = BTreeMap::new();
        if let Some(config) = &config {
            for key in SPECIAL_TOKEN_KEYS {
                if let Some(text) = config.get(key).and_then(token_text) {
                    special_tokens.insert(key.to_string(), text);
                }
            }
        }
        // A template this engine cannot compile must not prevent raw-text generation: report it when used.
        let (chat_template, chat_template_error) = match find_chat_template(dir, config.as_ref())? {
            None => (None, None),
            Some(source) => match ChatTemplate::new(&source, special_tokens.clone()) {
                Ok(t) => (Some(t), None),
                Err(e) => {
                    tracing::warn!("{}: {e}", dir.display());
                    let message = match e {
                        LlmError::ChatTemplate(m) => m,
                        other => other.to_string(),
                    };
                    (
                        None,
                        Some(format!(
                            "the model's template cannot be compiled: {message}"
                        )),
                    )
                }
            },
        };
        let mut extra_stop_ids = Vec::new();
        for file in ["generation_config.json", "config.json"] {
            if let Some(json) = read_json(&dir.join(file))? {
                extra_stop_ids.extend(token_ids(json.get("eos_token_id")));
            }
        }
        let mut tokenizer = TextTokenizer {
            inner,
            special_tokens,
            chat_template,
            chat_template_error,
            stop_tokens: BTreeSet::new(),
        };
        tokenizer.stop_tokens = tokenizer.default_stop_tokens(&extra_stop_ids, &tokenizer_path);
        Ok(tokenizer)
    }

    /// The union of the configured `eos_token`, the given ids and [`COMMON_STOP_TOKENS`] found in the vocabulary.
    /// An `eos_token` missing from the vocabulary is reported as a warning and skipped.
    fn default_stop_tokens(&self, ids: &[u32], tokenizer_path: &Path) -> BTreeSet<u32> {
        let mut stops: BTreeSet<u32> = ids.iter().copied().collect();
        if let Some(eos) = self.special_tokens.get("eos_token") {
            match self.inner.token_to_id(eos) {
                Some(id) => {
                    stops.insert(id);
                }
                None => tracing::warn!(
                    "{}: eos_token `{eos}` of tokenizer_config.json is not in the vocabulary",
                    tokenizer_path.display()
                ),
            }
        }
        for token in COMMON_STOP_TOKENS {
            if let Some(id) = self.inner.token_to_id(token) {
                stops.insert(id);
            }
        }
        stops
    }

    /// Token ids of `text`; `add_special_tokens` applies the tokenizer's post-processor (e.g. a BOS).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| LlmError::Tokenizer(format!("encoding failed: {e}")))
    }

    /// Text of `ids`; `skip_special_tokens` leaves out special tokens such as `<|im_end|>`.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| LlmError::Tokenizer(format!("decoding failed: {e}")))
    }

    /// The id of a token, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The stop (end-of-reply) token ids.
    pub fn stop_tokens(&self) -> &BTreeSet<u32> {
        &self.stop_tokens
    }

    /// Adds a stop token id.
    pub fn add_stop_token(&mut self, id: u32) {
        self.stop_tokens.insert(id);
    }

    /// Special tokens of `tokenizer_config.json` (`bos_token`, `eos_token`, ...) by name.
    pub fn special_tokens(&self) -> &BTreeMap<String, String> {
        &self.special_tokens
    }

    /// The chat template, when the model has one that compiled.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Why the model's chat template could not be compiled, if it could not.
    pub fn chat_template_error(&self) -> Option<&str> {
        self.chat_template_error.as_deref()
    }

    /// Renders a conversation with the chat template (error when the model has none).
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        options: &ChatTemplateOptions,
    ) -> Result<String> {
        let template = match (&self.chat_template, &self.chat_template_error) {
            (Some(t), _) => t,
            (None, Some(error)) => return Err(LlmError::ChatTemplate(error.clone())),
            (None, None) => {
                return Err(LlmError::ChatTemplate(
                    "the model has no chat template (tokenizer_config.json `chat_template`, \
                     chat_template.jinja or chat_template.json)"
                        .to_string(),
                ))
            }
        };
        template.render(messages, options)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// Turns a growing token sequence into text pieces without splitting a UTF-8 character: a byte-level token can
/// hold part of a character, so text is released only once the decoded suffix no longer ends in U+FFFD.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// An empty decoder.
    pub fn new() -> IncrementalDecoder {
        IncrementalDecoder::default()
    }

    /// Adds a token; returns the new complete text, if any. Special tokens are left out.
    pub fn push(&mut self, tokenizer: &TextTokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let window = self.ids.get(self.prefix_offset..).unwrap_or_default();
        let read = self
            .ids
            .get(self.prefix_offset..self.read_offset)
            .unwrap_or_default();
        let prefix_text = tokenizer.decode(read, true)?;
        let full_text = tokenizer.decode(window, true)?;
        if full_text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        match full_text.get(prefix_text.len()..) {
            Some(new) if !new.is_empty() => {
                let new = new.to_string();
                self.prefix_offset = self.read_offset;
                self.read_offset = self.ids.len();
                Ok(Some(new))
            }
            _ => Ok(None),
        }
    }

    /// The text held back so far (an incomplete character at the end), released as it is; call at the end.
    pub fn finish(&mut self, tokenizer: &TextTokenizer) -> Result<Option<String>> {
        let window = self.ids.get(self.prefix_offset..).unwrap_or_default();
        let read = self
            .ids
            .get(self.prefix_offset..self.read_offset)
            .unwrap_or_default();
        let prefix_text = tokenizer.decode(read, true)?;
        let full_text = tokenizer.decode(window, true)?;
        self.prefix_offset = self.ids.len();
        self.read_offset = self.ids.len();
        Ok(full_text
            .get(prefix_text.len()..)
            .filter(|rest| !rest.is_empty())
            .map(str::to_string))
    }
}
