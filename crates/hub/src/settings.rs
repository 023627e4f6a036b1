//! Where the hub is and where its files go, read from the same environment variables as Python's `huggingface_hub`.

use std::path::{Path, PathBuf};

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Hub endpoint, cache directory, token and offline flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Base URL of the hub (`HF_ENDPOINT`), without a trailing slash.
    pub endpoint: String,
    /// The hub cache holding `models--org--name` folders (`HF_HUB_CACHE`, else `$HF_HOME/hub`).
    pub cache_dir: PathBuf,
    /// Bearer token (`HF_TOKEN`, else the token file `HF_TOKEN_PATH` or `$HF_HOME/token`).
    pub token: Option<String>,
    /// Use the cache only, never the network (`HF_HUB_OFFLINE`).
    pub offline: bool,
}

impl HubSettings {
    /// Settings for an explicit endpoint and cache directory: no token, online.
    pub fn new(endpoint: impl Into<String>, cache_dir: impl Into<PathBuf>) -> HubSettings {
        HubSettings {
            endpoint: endpoint.into().trim_end_matches('/').to_string(),
            cache_dir: cache_dir.into(),
            token: None,
            offline: false,
        }
    }

    /// Reads the process environment (see [`HubSettings::from_vars`]).
    pub fn from_env() -> HubSettings {
        HubSettings::from_vars(|name| std::env::var(name).ok(), dirs::home_dir().as_deref())
    }

    /// Builds settings from a variable lookup and the home directory, with `huggingface_hub`'s rules:
    /// - `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - the cache is `HF_HUB_CACHE` (or the legacy `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`;
    /// - the endpoint is `HF_ENDPOINT`, else `https://huggingface.co`;
    /// - the token is `HF_TOKEN` (or the legacy `HUGGING_FACE_HUB_TOKEN`), else the trimmed contents of the file
    ///   `HF_TOKEN_PATH` (default `$HF_HOME/token`) when it exists and is not empty;
    /// - offline when `HF_HUB_OFFLINE` is `1`, `ON`, `YES` or `TRUE` (any case).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>, home: Option<&Path>) -> HubSettings {
        let non_empty = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let hf_home = non_empty("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            match non_empty("XDG_CACHE_HOME") {
                Some(xdg) => PathBuf::from(xdg).join("huggingface"),
                None => home
                    .map(|h| h.join(".cache"))
                    .unwrap_or_else(|| PathBuf::from(".cache"))
                    .join("huggingface"),
            }
        });
        let cache_dir = non_empty("HF_HUB_CACHE")
            .or_else(|| non_empty("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = non_empty("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = non_empty("HF_TOKEN")
            .or_else(|| non_empty("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                let path = non_empty("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| hf_home.join("token"));
                std::fs::read_to_string(path)
                    .ok()
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            });
        let offline = var("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_uppercase().as_str(),
                "1" | "ON" | "YES" | "TRUE"
            )
        });
        HubSettings {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            cache_dir,
            token,
            offline,
        }
    }

    /// The cache folder of a model repo: `<cache>/models--org--name`.
    pub fn repo_dir(&self, repo_id: &str) -> PathBuf {
        self.cache_dir
            .join(model_repo(repo_id, "main").folder_name())
    }
}

/// hf-hub's description of a model repo at a revision (it knows the cache and URL naming).
pub(crate) fn model_repo(repo_id: &str, revision: &str) -> hf_hub::Repo {
    hf_hub::Repo::with_revision(
        repo_id.to_string(),
        hf_hub::RepoType::Model,
        revision.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)], home: &Path) -> HubSettings {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HubSettings::from_vars(|name| map.get(name).cloned(), Some(home))
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let s = settings(&[], Path::new("/home/u"));
        assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(s.endpoint, "https://huggingface.co");
        assert!(!s.offline);
        let s = settings(&[("XDG_CACHE_HOME", "/xdg")], Path::new("/home/u"));
        assert_eq!(s.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
    }

    #[test]
    fn hf_hub_cache_wins_over_hf_home() {
        let s = settings(&[("HF_HOME", "/h")], Path::new("/home/u"));
        assert_eq!(s.cache_dir, PathBuf::from("/h/hub"));
        let s = settings(
            &[("HF_HOME", "/h"), ("HF_HUB_CACHE", "/c")],
            Path::new("/home/u"),
        );
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        assert_eq!(
            s.repo_dir("org/name"),
            PathBuf::from("/c/models--org--name")
        );
    }

    #[test]
    fn endpoint_token_and_offline() {
        let s = settings(
            &[
                ("HF_ENDPOINT", "http://127.0.0.1:9/"),
                ("HF_TOKEN", " secret "),
                ("HF_HUB_OFFLINE", "yes"),
            ],
            Path::new("/home/u"),
        );
        assert_eq!(s.endpoint, "http://127.0.0.1:9");
        assert_eq!(s.token.as_deref(), Some("secret"));
        assert!(s.offline);
        assert!(!settings(&[("HF_HUB_OFFLINE", "0")], Path::new("/h")).offline);
    }

    #[test]
    fn token_file_under_hf_home() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "file-token\n").unwrap();
        let home = dir.path().to_str().unwrap();
        let s = settings(&[("HF_HOME", home)], Path::new("/home/u"));
        assert_eq!(s.token.as_deref(), Some("file-token"));
    }
}
