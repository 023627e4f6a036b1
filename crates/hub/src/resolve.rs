//! `--model` resolution: a local path, or a hub repo id downloaded (or found in the cache) on demand.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::download::download_repo;
use crate::error::{HubError, Result};
use crate::settings::HubSettings;

/// How to resolve and download a model.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Branch, tag or commit (`--revision`); `None` means `main`.
    pub revision: Option<String>,
    /// Hub endpoint, cache, token and offline flag.
    pub settings: HubSettings,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// Files downloaded at once.
    pub parallel: usize,
    /// Extra attempts per file after a cut connection (each resumes where the last stopped).
    pub retries: usize,
    /// How long to wait for another process downloading the same repo; `None` waits as long as it takes.
    pub lock_timeout: Option<Duration>,
}

impl ResolveOptions {
    /// Options from the environment (`HF_*` variables), revision `main`, progress bars on, 4 parallel downloads,
    /// 3 retries, no lock timeout.
    pub fn from_env() -> ResolveOptions {
        ResolveOptions::with_settings(HubSettings::from_env())
    }

    /// Default options with explicit hub settings.
    pub fn with_settings(settings: HubSettings) -> ResolveOptions {
        ResolveOptions {
            revision: None,
            settings,
            progress: true,
            parallel: 4,
            retries: 3,
            lock_timeout: None,
        }
    }
}

/// What a `--model` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// An existing file or directory.
    Local(PathBuf),
    /// A hub repo id `org/name`.
    Hub(String),
}

/// Whether `s` has the form of a hub repo id: `org/name` with letters, digits, `-`, `_`, `.` (no `..`, and not
/// starting or ending with `-` or `.`).
pub fn is_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    [org, name].iter().all(|part| {
        !part.is_empty()
            && part.len() <= 96
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !part.contains("..")
            && !part.starts_with(['-', '.'])
            && !part.ends_with(['-', '.'])
    })
}

impl ModelSpec {
    /// Classifies `spec`: an existing path wins; otherwise it must be a repo id.
    pub fn parse(spec: &str) -> Result<ModelSpec> {
        let path = Path::new(spec);
        if path.exists() {
            Ok(ModelSpec::Local(path.to_path_buf()))
        } else if is_repo_id(spec) {
            Ok(ModelSpec::Hub(spec.to_string()))
        } else {
            Err(HubError::InvalidModelSpec {
                spec: spec.to_string(),
            })
        }
    }
}

/// Resolves `--model`: an existing local path is returned as it is; a hub repo id is downloaded into the cache (or,
/// offline, found there) and its snapshot directory returned.
pub fn resolve_model(spec: &str, options: &ResolveOptions) -> Result<PathBuf> {
    match ModelSpec::parse(spec)? {
        ModelSpec::Local(path) => Ok(path),
        ModelSpec::Hub(id) => Ok(download_repo(&id, options)?.dir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert!(is_repo_id(
            "anemll/anemll-Qwen-Qwen3-0.6B-LUT888-ctx512_0.3.4"
        ));
        for bad in [
            "name",
            "a/b/c",
            "/abs",
            "a/",
            "../x",
            "a/..",
            "a/b c",
            "a/.hidden",
            "-a/b",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn local_paths_win_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().to_str().unwrap();
        assert_eq!(
            ModelSpec::parse(spec).unwrap(),
            ModelSpec::Local(dir.path().to_path_buf())
        );
        assert_eq!(
            resolve_model(
                spec,
                &ResolveOptions::with_settings(HubSettings::new("http://127.0.0.1:9", dir.path()))
            )
            .unwrap(),
            dir.path()
        );
        assert!(matches!(
            ModelSpec::parse("no such dir"),
            Err(HubError::InvalidModelSpec { .. })
        ));
    }
}
