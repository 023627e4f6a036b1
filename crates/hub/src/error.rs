//! Errors of the hub crate.

use std::path::PathBuf;

/// Everything that can go wrong resolving, downloading, configuring or cleaning.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `--model` is neither an existing path nor a hub repo id.
    #[error("`{spec}` is not an existing local path and not a hub repo id of the form `org/name`")]
    InvalidModelSpec {
        /// What was given.
        spec: String,
    },
    /// `--revision` is not a usable branch, tag or commit name.
    #[error("`{revision}` is not a valid revision (letters, digits, `-`, `_`, `.`, `/`; no `..` or empty segments)")]
    InvalidRevision {
        /// What was given.
        revision: String,
    },
    /// The hub could not be reached (DNS, connection refused, TLS, timeout).
    #[error("cannot reach {url}: {message} (set HF_HUB_OFFLINE=1 to use the local cache only)")]
    Connect {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The hub answered with an HTTP error status.
    #[error("GET {url}: HTTP {status}{}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default(), status_hint(*status))]
    Http {
        /// The URL requested.
        url: String,
        /// The status code.
        status: u16,
        /// The server's error message (`X-Error-Message` header or JSON `error` field), when it sent one.
        message: Option<String>,
    },
    /// The hub sent something this client cannot use (bad JSON, unsafe file name, missing hash).
    #[error("unexpected answer from {url}: {message}")]
    Protocol {
        /// The URL requested.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The connection broke during a file transfer; the partial file is kept for the next run to resume.
    #[error("download of `{file}` from {repo} stopped after {received} of {expected} bytes: {message}; run again to resume")]
    Interrupted {
        /// Repo id.
        repo: String,
        /// Path of the file in the repo.
        file: String,
        /// Bytes on disk so far.
        received: u64,
        /// Expected size.
        expected: u64,
        /// What went wrong.
        message: String,
    },
    /// A downloaded file does not match the size or sha256 the hub listed; it was deleted.
    #[error("downloaded `{file}` from {repo} is corrupt: expected {expected}, got {actual}; the file was deleted")]
    Integrity {
        /// Repo id.
        repo: String,
        /// Path of the file in the repo.
        file: String,
        /// What the hub listed (`sha256 <hex>` or `<n> bytes`).
        expected: String,
        /// What arrived.
        actual: String,
    },
    /// Offline mode and the repo/revision is not in the cache.
    #[error("offline mode (HF_HUB_OFFLINE): {repo} at revision `{revision}` is not in the cache {cache}")]
    OfflineNotCached {
        /// Repo id.
        repo: String,
        /// Revision asked for.
        revision: String,
        /// The hub cache directory searched.
        cache: PathBuf,
    },
    /// Offline mode and the cached snapshot lacks files the model needs.
    #[error("offline mode (HF_HUB_OFFLINE): the cached snapshot {snapshot} of {repo} lacks {}: {}", if missing.len() == 1 { "1 file" } else { "these files" }, missing.join(", "))]
    OfflineIncomplete {
        /// Repo id.
        repo: String,
        /// Snapshot directory.
        snapshot: PathBuf,
        /// Paths (relative to the snapshot) that are missing.
        missing: Vec<String>,
    },
    /// Another process holds the download lock of this repo.
    #[error(
        "{path} is locked by another process downloading the same repo; waited {waited_ms} ms"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// How long this process waited.
        waited_ms: u128,
    },
    /// The listing selected no file a model needs.
    #[error("{repo} at revision `{revision}` holds no model files (no .mlmodelc, .mlmodelc.zip, .mlpackage or .mlmodel)")]
    NoModelFiles {
        /// Repo id.
        repo: String,
        /// Revision.
        revision: String,
    },
    /// Several files failed; the first error is shown, the count says how many.
    #[error("{count} files failed; first: {first}")]
    Several {
        /// How many files failed.
        count: usize,
        /// The first failure.
        first: Box<HubError>,
    },
    /// Opening or unpacking a model file failed.
    #[error(transparent)]
    Format(#[from] candle_coreml_format::FormatError),
    /// A ModelConfig JSON could not be parsed.
    #[error("{path}: invalid ModelConfig JSON: {source}")]
    ConfigJson {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A ModelConfig is inconsistent or incomplete.
    #[error("invalid ModelConfig: {0}")]
    ConfigInvalid(String),
    /// A model directory could not be turned into a ModelConfig.
    #[error("{dir}: cannot generate a ModelConfig: {message}")]
    ConfigGeneration {
        /// The model directory.
        dir: PathBuf,
        /// What was missing or inconsistent.
        message: String,
    },
    /// A cache operation was refused by a safety check.
    #[error("refusing to touch {path}: {reason}")]
    UnsafeCachePath {
        /// The path.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A duration such as `7d` could not be parsed.
    #[error(
        "invalid duration `{0}`: expected a number followed by s, m, h, d or w (e.g. 30m, 7d)"
    )]
    InvalidDuration(String),
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (authentication required: set HF_TOKEN for private or gated repositories)",
        403 => " (access denied: a gated repository needs its terms accepted on the hub and HF_TOKEN set)",
        404 => " (not found: check the repo id, the revision and that the file exists)",
        416 => " (range not satisfiable)",
        429 => " (rate limited: try again later)",
        500..=599 => " (server error: try again later)",
        _ => "",
    }
}

/// `Result` with [`HubError`].
pub type Result<T, E = HubError> = std::result::Result<T, E>;

/// A closure mapping an I/O error on `path` to [`HubError::Io`].
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Io {
        path: path.to_path_buf(),
        source,
    }
}
