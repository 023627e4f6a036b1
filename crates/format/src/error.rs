//! Errors of the file-format layer. Every variant names the file it concerns.

use std::path::PathBuf;

/// A syntax error in `model.mil` text, with its 1-based position and the offending token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message} (at `{token}`)")]
pub struct MilSyntaxError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The token where the error was detected (shortened when long; empty at end of input).
    pub token: String,
    /// What was expected or what is wrong.
    pub message: String,
}

/// Errors raised while reading Core ML model files.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A protobuf message could not be decoded (corrupt or truncated file).
    #[error("{path}: corrupt or truncated protobuf: {source}")]
    Protobuf {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: prost::DecodeError,
    },
    /// `model.mil` text is malformed.
    #[error("{path}:{source}")]
    MilSyntax {
        /// The file.
        path: PathBuf,
        /// Position and message.
        #[source]
        source: MilSyntaxError,
    },
    /// A weight blob file or record is malformed or a reference points outside it.
    #[error("{path}: weight blob at offset {offset}: {message}")]
    Blob {
        /// The weight file.
        path: PathBuf,
        /// Offset of the record (or header) concerned.
        offset: u64,
        /// What is wrong.
        message: String,
    },
    /// A JSON file (`Manifest.json`, `metadata.json`) could not be parsed.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A zip archive is malformed or unsafe to extract.
    #[error("{path}: zip archive: {message}")]
    Zip {
        /// The archive.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model is of a kind this library does not execute or read (e.g. `neuralNetwork`).
    #[error(
        "{path}: unsupported model type `{kind}` (only ML Programs, `mlProgram`, are supported)"
    )]
    UnsupportedModelType {
        /// The file.
        path: PathBuf,
        /// The specification's model type.
        kind: String,
    },
    /// The file is well-formed but its content is inconsistent or incomplete.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
