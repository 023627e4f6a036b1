//! Errors of the runtime layer. Every variant names the model, function, op, input or state it concerns.

use candle_coreml_format::FormatError;

/// Errors raised while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model file could not be read.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A tensor operation failed inside candle.
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    /// The program uses operations this executor does not implement; lists every type with its count.
    #[error("function `{function}` uses unsupported operations: {ops}")]
    UnsupportedOps {
        /// The function being loaded.
        function: String,
        /// `type (count)` entries, comma separated.
        ops: String,
    },
    /// An operation received invalid arguments or failed while running.
    #[error("op `{op_name}` ({op_type}): {message}")]
    Op {
        /// The op's type (e.g. `slice_update`).
        op_type: String,
        /// The op's `name` attribute, or its first output name.
        op_name: String,
        /// What is wrong.
        message: String,
    },
    /// The program is malformed (undefined value, bad constant, missing function ...).
    #[error("{0}")]
    Program(String),
    /// A caller-supplied input is missing, unknown, or has the wrong dtype or shape.
    #[error("input `{name}`: {message}")]
    Input {
        /// The input name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A state is missing from a `ModelState` or has the wrong dtype or shape.
    #[error("state `{name}`: {message}")]
    State {
        /// The state name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The requested backend cannot run here.
    #[error("backend unavailable: {0}")]
    Backend(String),
}

/// Result alias for this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Shorthand for a [`RuntimeError::Program`].
pub(crate) fn program_error(message: impl Into<String>) -> RuntimeError {
    RuntimeError::Program(message.into())
}
