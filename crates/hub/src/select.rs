//! Which files of a hub repo a model needs.
//!
//! Kept: the Core ML parts (files inside `*.mlmodelc/` and `*.mlpackage/` directories, `*.mlmodelc.zip` archives and
//! `*.mlmodel` files), ANEMLL's `meta.yaml`, tokenizer files and config JSON. Skipped: everything else (README, images,
//! Python scripts, the whole-folder `.zip` that ANEMLL's `prepare_hf.sh` adds, `.gitattributes`). When one part is
//! published in several forms, only one is kept, in this order of preference: `.mlmodelc` directory,
//! `.mlmodelc.zip`, `.mlpackage`, `.mlmodel`.

use std::collections::BTreeMap;

/// Small non-model files a model directory may need (tokenizer, chat template, runtime configuration).
pub const SUPPORT_FILES: &[&str] = &[
    "meta.yaml",
    "config.json",
    "model_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
];

/// The form a Core ML part is published in, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PartForm {
    /// A compiled `.mlmodelc` directory.
    Compiled,
    /// A zipped `.mlmodelc`.
    CompiledZip,
    /// An `.mlpackage` directory.
    Package,
    /// A single `.mlmodel` file.
    Spec,
}

/// For a path in a repo: the Core ML part it belongs to (its path without the extension) and the part's form.
pub fn model_part(path: &str) -> Option<(String, PartForm)> {
    let mut prefix = String::new();
    for component in path.split('/') {
        let lower = component.to_ascii_lowercase();
        let form = if lower.ends_with(".mlmodelc.zip") {
            Some((".mlmodelc.zip".len(), PartForm::CompiledZip))
        } else if lower.ends_with(".mlmodelc") {
            Some((".mlmodelc".len(), PartForm::Compiled))
        } else if lower.ends_with(".mlpackage") {
            Some((".mlpackage".len(), PartForm::Package))
        } else if lower.ends_with(".mlmodel") {
            Some((".mlmodel".len(), PartForm::Spec))
        } else {
            None
        };
        if let Some((ext_len, form)) = form {
            let stem = &component[..component.len() - ext_len];
            return Some((format!("{prefix}{stem}"), form));
        }
        prefix.push_str(component);
        prefix.push('/');
    }
    None
}

/// Whether a path is one of the [`SUPPORT_FILES`] (at any depth).
pub fn is_support_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    SUPPORT_FILES.contains(&name)
}

/// The files of `paths` a model needs, sorted.
pub fn select_model_files<'a>(paths: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let paths: Vec<&str> = paths.into_iter().collect();
    let mut best: BTreeMap<String, PartForm> = BTreeMap::new();
    for path in &paths {
        if let Some((part, form)) = model_part(path) {
            best.entry(part)
                .and_modify(|f| *f = (*f).min(form))
                .or_insert(form);
        }
    }
    let mut selected: Vec<String> = paths
        .iter()
        .filter(|path| match model_part(path) {
            Some((part, form)) => best.get(&part) == Some(&form),
            None => is_support_file(path),
        })
        .map(|p| p.to_string())
        .collect();
    selected.sort();
    selected.dedup();
    selected
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_parts_and_support_files_and_skips_the_rest() {
        let listing = [
            ".gitattributes",
            "README.md",
            "chat.py",
            "anemll-model_0.3.4.zip",
            "meta.yaml",
            "tokenizer.json",
            "qwen_embeddings.mlmodelc.zip",
            "qwen_lm_head.mlmodelc/model.mil",
            "qwen_lm_head.mlmodelc/weights/weight.bin",
            "qwen_lm_head.mlmodelc.zip",
            "qwen_FFN_PF_chunk_01of01.mlpackage/Manifest.json",
            "qwen_FFN_PF_chunk_01of01.mlpackage/Data/com.apple.CoreML/model.mlmodel",
            "images/logo.png",
        ];
        assert_eq!(
            select_model_files(listing),
            vec![
                "meta.yaml",
                "qwen_FFN_PF_chunk_01of01.mlpackage/Data/com.apple.CoreML/model.mlmodel",
                "qwen_FFN_PF_chunk_01of01.mlpackage/Manifest.json",
                "qwen_embeddings.mlmodelc.zip",
                "qwen_lm_head.mlmodelc/model.mil",
                "qwen_lm_head.mlmodelc/weights/weight.bin",
                "tokenizer.json",
            ]
        );
    }

    #[test]
    fn part_names_include_their_folder() {
        assert_eq!(
            model_part("sub/a.mlpackage/Manifest.json"),
            Some(("sub/a".to_string(), PartForm::Package))
        );
        assert_eq!(
            model_part("a.mlmodelc.zip"),
            Some(("a".to_string(), PartForm::CompiledZip))
        );
        assert_eq!(model_part("weights/weight.bin"), None);
    }
}
