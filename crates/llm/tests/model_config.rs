//! ModelConfig-driven loading: a seed-crate config and a generated one find the parts of a fixture set in a
//! directory where file names and model descriptions alone cannot (a second model's parts sit beside them), and
//! generation reproduces the set's greedy reference; configs the pipeline cannot run are refused with clear errors;
//! `TextModel::from_pretrained` resolves a hub repo id through a loopback mock hub.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use candle_coreml_hub::mock_hub::{MockHub, MockRepo};
use candle_coreml_hub::settings::HubSettings;
use candle_coreml_llm::{
    GenerationConfig, LlmError, ModelConfig, ModelFiles, ResolveOptions, TextModel,
};
use candle_coreml_runtime::LoadOptions;

use common::{anemll_fixtures as fixtures, ids};

const SET: &str = "qwen3-tiny-fp16-c1";
const DECOY_SET: &str = "llama-tiny-fp16-c2";

fn seed_config_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../hub/tests/data/seed-qwen3-tiny-fp16-c1.json"
    ))
}

fn expected() -> serde_json::Value {
    common::expected_in(&fixtures().join(SET))
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        fs::create_dir_all(to).unwrap();
        for entry in fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        fs::copy(from, to).unwrap();
    }
}

/// A directory with the set's parts and tokenizer (no meta.yaml) and, beside them, the decoy set's parts: two
/// embeddings, two LM heads and FFN chunks of two chunk counts, which neither file names nor descriptions resolve.
fn ambiguous_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (set, keep_support_files) in [(SET, true), (DECOY_SET, false)] {
        for entry in fs::read_dir(fixtures().join(set)).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_part = name.ends_with(".mlpackage");
            if name == "meta.yaml" || name == "expected.json" || !(is_part || keep_support_files) {
                continue;
            }
            copy_tree(&entry.path(), &dir.path().join(&name));
        }
    }
    dir
}

/// Greedy generation from the reference prompt ids.
fn greedy_ids(model: &mut TextModel) -> Vec<u32> {
    let exp = expected();
    let config = GenerationConfig {
        max_new_tokens: 24,
        ..GenerationConfig::default()
    };
    model
        .generate_ids(&ids(&exp["prompt"]["ids"]), &config, &mut |_| {})
        .unwrap()
        .token_ids
}

#[test]
fn the_ambiguous_directory_cannot_be_resolved_without_a_config() {
    let dir = ambiguous_dir();
    let err = ModelFiles::locate(dir.path()).unwrap_err();
    assert!(matches!(err, LlmError::MissingPart { .. }), "{err}");
}

#[test]
fn a_seed_config_drives_part_discovery_and_generation() {
    let dir = ambiguous_dir();
    let config = ModelConfig::load(seed_config_path()).unwrap();
    let files = ModelFiles::from_config(dir.path(), config).unwrap();
    // The seed names `.mlmodelc` parts; the directory holds them as `.mlpackage`.
    let file_name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(file_name(&files.embeddings), "qwen_embeddings.mlpackage");
    assert_eq!(
        files
            .ffn_chunks
            .iter()
            .map(|p| file_name(p))
            .collect::<Vec<_>>(),
        ["qwen_FFN_PF_chunk_01of01.mlpackage"]
    );
    assert_eq!(file_name(&files.lm_head), "qwen_lm_head.mlpackage");
    assert!(files.embeddings.starts_with(dir.path()));

    let mut model = TextModel::from_files(files, &LoadOptions::default()).unwrap();
    assert_eq!(
        greedy_ids(&mut model),
        ids(&expected()["decode"]["greedy_ids"])
    );
}

#[test]
fn a_generated_config_round_trips_and_drives_generation_from_the_directory() {
    let generated = ModelConfig::generate(fixtures().join(SET), Some("anemll/tiny-qwen3")).unwrap();
    assert_eq!(
        ModelConfig::from_json(&generated.to_json(), Path::new("generated.json")).unwrap(),
        generated
    );
    assert!(!generated.ffn_is_split());
    assert_eq!(generated.shapes.context_length, 256);
    assert_eq!(generated.shapes.batch_size, 32);

    let dir = ambiguous_dir();
    let saved = dir.path().join("model_config.json");
    generated.save(&saved).unwrap();
    assert_eq!(ModelConfig::load(&saved).unwrap(), generated);
    // `model_config.json` in the directory is found by the plain loader.
    let mut model = TextModel::load(dir.path()).unwrap();
    assert!(model.model().files().config.is_some());
    assert_eq!(
        greedy_ids(&mut model),
        ids(&expected()["decode"]["greedy_ids"])
    );
}

#[test]
fn split_ffn_configs_are_refused() {
    let dir = ambiguous_dir();
    let mut config = ModelConfig::load(seed_config_path()).unwrap();
    config.ffn_execution = Some("split".to_string());
    let err = ModelFiles::from_config(dir.path(), config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("split") && err.contains("multifunction"),
        "{err}"
    );

    // Separate files for the two components also make it split when `ffn_execution` is absent.
    let mut config = ModelConfig::load(seed_config_path()).unwrap();
    if let Some(prefill) = config.components.get_mut("ffn_prefill") {
        prefill.file_path = Some("llama_FFN_PF_chunk_01of02.mlpackage".to_string());
    }
    let err = ModelFiles::from_config(dir.path(), config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("llama_FFN_PF_chunk_01of02"), "{err}");
}

#[test]
fn configs_that_contradict_the_files_are_refused() {
    let dir = ambiguous_dir();
    let mut config = ModelConfig::load(seed_config_path()).unwrap();
    config.shapes.context_length = 512;
    for component in config.components.values_mut() {
        for tensor in component.inputs.values_mut() {
            if tensor.name == "causal_mask" {
                if let Some(last) = tensor.shape.last_mut() {
                    *last = 512;
                }
            }
        }
    }
    config.validate().unwrap();
    let files = ModelFiles::from_config(dir.path(), config).unwrap();
    let err = TextModel::from_files(files, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("context_length") && err.contains("512") && err.contains("256"),
        "{err}"
    );

    let mut config = ModelConfig::load(seed_config_path()).unwrap();
    if let Some(infer) = config.components.get_mut("ffn_infer") {
        infer.functions = vec!["decode".to_string()];
    }
    let err = ModelFiles::from_config(dir.path(), config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`decode`") && err.contains("`infer`"), "{err}");

    let mut config = ModelConfig::load(seed_config_path()).unwrap();
    if let Some(head) = config.components.get_mut("lm_head") {
        head.file_path = Some("absent_lm_head.mlmodelc".to_string());
    }
    let err = ModelFiles::from_config(dir.path(), config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent_lm_head"), "{err}");
}

#[test]
fn from_pretrained_downloads_a_repo_id_and_generates_the_reference() {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let hub = MockHub::start(vec![MockRepo::from_dir(
        "anemll/tiny-qwen3",
        commit,
        &fixtures().join(SET),
    )
    .unwrap()])
    .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut options = ResolveOptions::with_settings(HubSettings::new(hub.endpoint(), cache.path()));
    options.progress = false;
    options.revision = Some(commit.to_string());
    let mut model = TextModel::from_pretrained("anemll/tiny-qwen3", &options).unwrap();
    assert!(model
        .model()
        .files()
        .dir
        .starts_with(cache.path().join("models--anemll--tiny-qwen3")));
    assert_eq!(
        greedy_ids(&mut model),
        ids(&expected()["decode"]["greedy_ids"])
    );

    options.revision = Some("no-such-branch".to_string());
    let err = TextModel::from_pretrained("anemll/tiny-qwen3", &options).unwrap_err();
    assert!(matches!(err, LlmError::Hub(_)), "{err}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");
}
