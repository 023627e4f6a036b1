//! Helpers shared by the integration tests: fixture locations and expected.json readers.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `fixtures/anemll` at the repository root.
pub fn anemll_fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll"
    ))
}

/// One ANEMLL fixture set.
pub fn anemll_set(set: &str) -> PathBuf {
    anemll_fixtures().join(set)
}

/// One toy set in `tests/data` (made by `tools/make_toy_anemll.py`).
pub fn toy_set(set: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data")).join(set)
}

/// A JSON file.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `expected.json` of a set directory.
pub fn expected_in(dir: &Path) -> serde_json::Value {
    read_json(&dir.join("expected.json"))
}

/// A JSON array of token ids.
pub fn ids(value: &serde_json::Value) -> Vec<u32> {
    value
        .as_array()
        .expect("an array of token ids")
        .iter()
        .map(|v| u32::try_from(v.as_u64().expect("a token id")).expect("a u32 token id"))
        .collect()
}
