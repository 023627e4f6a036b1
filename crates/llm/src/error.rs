//! Errors of the LLM layer. Each variant names the file, part or value it concerns.

use std::path::PathBuf;

/// Errors raised while loading or running an ANEMLL model, its tokenizer or chat template.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `meta.yaml` could not be parsed.
    #[error("{path}: invalid YAML: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_norway::Error,
    },
    /// A JSON file (tokenizer_config.json, generation_config.json) could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A value in `meta.yaml` has the wrong type or is out of range.
    #[error("{path}: `{key}`: {message}")]
    Meta {
        /// The meta.yaml file.
        path: PathBuf,
        /// The key concerned.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// A model part (embeddings, FFN chunk, LM head) could not be found on disk.
    #[error("{dir}: {message}")]
    MissingPart {
        /// The model directory.
        dir: PathBuf,
        /// Which part and which names were tried.
        message: String,
    },
    /// The model files do not have the interface an ANEMLL pipeline needs, or they contradict each other or
    /// `meta.yaml`.
    #[error("{path}: {message}")]
    Interface {
        /// The model file (or meta.yaml) concerned.
        path: PathBuf,
        /// What was expected and what was found.
        message: String,
    },
    /// A ModelConfig names parts or settings the ANEMLL pipeline cannot use, or contradicts the model files.
    #[error("{dir}: model config: {message}")]
    Config {
        /// The model directory.
        dir: PathBuf,
        /// What the config says and what was expected.
        message: String,
    },
    /// The tokenizer could not be loaded or failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A generation setting or request is invalid (e.g. a negative temperature, an empty prompt).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The Core ML runtime failed.
    #[error(transparent)]
    Runtime(#[from] candle_coreml_runtime::RuntimeError),
    /// Resolving or downloading the model, or reading its ModelConfig, failed.
    #[error(transparent)]
    Hub(#[from] candle_coreml_hub::HubError),
    /// The file-format layer failed.
    #[error(transparent)]
    Format(#[from] candle_coreml_format::FormatError),
    /// A tensor operation on model outputs failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Result alias for this crate.
pub type Result<T, E = LlmError> = std::result::Result<T, E>;
