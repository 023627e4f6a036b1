//! ModelConfig: seed-schema loading, generation from the fixtures, validation and JSON round trips. Expected
//! shapes come from `fixtures/README.md` (hidden 128, vocab 3072 in 16 logits parts, context 256, batch 32,
//! KV state [8, 2, 256, 32]).

use std::path::{Path, PathBuf};

use candle_coreml_format::container::resolve_model_file;
use candle_coreml_hub::model_config::{EMBEDDINGS, FFN_INFER, FFN_PREFILL, LM_HEAD};
use candle_coreml_hub::{HubError, ModelConfig};

fn fixture(set: &str) -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll"
    ))
    .join(set)
}

fn seed_config_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/seed-qwen3-tiny-fp16-c1.json"
    ))
}

fn logits_names() -> Vec<String> {
    (1..=16).map(|i| format!("logits{i}")).collect()
}

#[test]
fn a_seed_style_config_loads_and_names_the_fixture_files() {
    let config = ModelConfig::load(seed_config_path()).unwrap();
    let dir = fixture("qwen3-tiny-fp16-c1");
    assert_eq!(config.shapes.vocab_size, 3072);
    assert!(
        !config.ffn_is_split(),
        "same file for prefill and infer is unified"
    );
    assert_eq!(config.logits_outputs(), logits_names());
    // `.mlmodelc` names resolve to the `.mlpackage` parts the fixture holds.
    let embeddings = config.component_paths(&dir, EMBEDDINGS).unwrap();
    assert_eq!(embeddings, vec![dir.join("qwen_embeddings.mlpackage")]);
    let prefill = config.component_paths(&dir, FFN_PREFILL).unwrap();
    let infer = config.component_paths(&dir, FFN_INFER).unwrap();
    assert_eq!(
        prefill,
        vec![dir.join("qwen_FFN_PF_chunk_01of01.mlpackage")]
    );
    assert_eq!(prefill, infer);
    assert_eq!(
        config.component(FFN_PREFILL).unwrap().function(),
        Some("prefill")
    );
    assert_eq!(
        config.component(FFN_INFER).unwrap().function(),
        Some("infer")
    );
    assert_eq!(config.component(EMBEDDINGS).unwrap().function(), None);
    assert_eq!(
        config.tensor_shape(FFN_PREFILL, "causal_mask", true),
        Some(&[1, 1, 32, 256][..])
    );
    config.validate_files(&dir).unwrap();
    let parts = config.part_paths(&dir).unwrap();
    assert_eq!(parts.lm_head, dir.join("qwen_lm_head.mlpackage"));
    assert_eq!(parts.ffn_infer, parts.ffn_prefill);
    assert!(config.validate_files(Path::new("/nonexistent")).is_err());
}

#[test]
fn generated_from_the_single_chunk_fixture() {
    let dir = fixture("qwen3-tiny-fp16-c1");
    let config = ModelConfig::generate(&dir, Some("anemll/tiny-qwen3")).unwrap();
    assert_eq!(config.model_info.model_type, "qwen3");
    assert_eq!(
        config.model_info.model_id.as_deref(),
        Some("anemll/tiny-qwen3")
    );
    let s = config.shapes;
    assert_eq!(
        (s.batch_size, s.context_length, s.hidden_size, s.vocab_size),
        (32, 256, 128, 3072)
    );
    assert_eq!(config.ffn_execution.as_deref(), Some("unified"));
    assert!(!config.ffn_is_split());
    let keys: Vec<&str> = config.components.keys().map(String::as_str).collect();
    assert_eq!(keys, vec![EMBEDDINGS, FFN_INFER, FFN_PREFILL, LM_HEAD]);

    let emb = config.component(EMBEDDINGS).unwrap();
    assert_eq!(emb.file_path.as_deref(), Some("qwen_embeddings.mlpackage"));
    assert_eq!(emb.inputs["input_ids"].shape, vec![1, 32]);
    assert_eq!(emb.inputs["input_ids"].data_type, "INT32");
    assert_eq!(emb.outputs["hidden_states"].shape, vec![1, 32, 128]);

    let order = [
        "hidden_states",
        "position_ids",
        "causal_mask",
        "current_pos",
    ];
    for (key, function, tokens) in [(FFN_PREFILL, "prefill", 32), (FFN_INFER, "infer", 1)] {
        let c = config.component(key).unwrap();
        assert_eq!(
            c.file_path.as_deref(),
            Some("qwen_FFN_PF_chunk_01of01.mlpackage")
        );
        assert_eq!(c.function(), Some(function));
        assert_eq!(c.ordered_inputs(), order);
        assert_eq!(c.inputs["hidden_states"].shape, vec![1, tokens, 128]);
        assert_eq!(c.inputs["causal_mask"].shape, vec![1, 1, tokens, 256]);
        assert_eq!(
            c.states["model_model_kv_cache_0"].shape,
            vec![8, 2, 256, 32]
        );
        assert_eq!(c.states["model_model_kv_cache_0"].data_type, "FLOAT16");
        assert!(c.chunk_files.is_empty());
    }
    let head = config.component(LM_HEAD).unwrap();
    assert_eq!(config.logits_outputs(), logits_names());
    assert!(head.outputs.values().all(|t| t.shape == vec![1, 1, 192]));
}

#[test]
fn generated_from_the_two_chunk_fixture_lists_chunks_in_order() {
    let dir = fixture("qwen3-tiny-lut6-c2");
    let config = ModelConfig::generate(&dir, None).unwrap();
    let chunks = vec![
        "qwen_FFN_PF_lut6_chunk_01of02.mlpackage".to_string(),
        "qwen_FFN_PF_lut6_chunk_02of02.mlpackage".to_string(),
    ];
    for key in [FFN_PREFILL, FFN_INFER] {
        let c = config.component(key).unwrap();
        assert_eq!(c.chunk_files, chunks);
        assert_eq!(c.file_path.as_deref(), Some(chunks[0].as_str()));
        assert_eq!(
            config.component_paths(&dir, key).unwrap(),
            chunks.iter().map(|c| dir.join(c)).collect::<Vec<_>>()
        );
    }
    assert_eq!(config.part_paths(&dir).unwrap().ffn_prefill.len(), 2);
    assert_eq!(
        config.component(LM_HEAD).unwrap().file_path.as_deref(),
        Some("qwen_lm_head_lut6.mlpackage")
    );
    assert_eq!(config.shapes.vocab_size, 3072);
}

#[test]
fn a_generated_config_round_trips_through_json_and_files() {
    let dir = fixture("qwen3-tiny-lut6-c2");
    let config = ModelConfig::generate(&dir, Some("org/name")).unwrap();
    let json = config.to_json();
    let back = ModelConfig::from_json(&json, Path::new("<memory>")).unwrap();
    assert_eq!(back, config);
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("model_config.json");
    config.save(&path).unwrap();
    assert_eq!(ModelConfig::load(&path).unwrap(), config);
    assert_eq!(ModelConfig::find_in_dir(out.path()).unwrap(), Some(config));
    assert_eq!(ModelConfig::find_in_dir(&dir).unwrap(), None);
    // The seed schema's keys are all present in the generated JSON.
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    for key in [
        "model_info",
        "shapes",
        "components",
        "naming",
        "ffn_execution",
    ] {
        assert!(value.get(key).is_some(), "{key}");
    }
    let prefill = &value["components"]["ffn_prefill"];
    for key in [
        "file_path",
        "inputs",
        "outputs",
        "functions",
        "input_order",
        "chunk_files",
        "states",
    ] {
        assert!(prefill.get(key).is_some(), "{key}");
    }
}

#[test]
fn validation_names_what_is_wrong() {
    let base = ModelConfig::load(seed_config_path()).unwrap();
    let check = |edit: &dyn Fn(&mut ModelConfig), needle: &str| {
        let mut c = base.clone();
        edit(&mut c);
        let err = c.validate().unwrap_err();
        assert!(matches!(err, HubError::ConfigInvalid(_)), "{err}");
        assert!(
            err.to_string().contains(needle),
            "`{err}` should mention `{needle}`"
        );
    };
    check(&|c| c.shapes.vocab_size = 3000, "add up to 3072");
    check(&|c| c.shapes.hidden_size = 64, "hidden_size is 64");
    check(&|c| c.shapes.context_length = 512, "context_length is 512");
    check(&|c| c.shapes.batch_size = 0, "batch_size");
    check(
        &|c| {
            c.components.remove(LM_HEAD);
        },
        "lm_head",
    );
    check(&|c| c.ffn_execution = Some("parallel".into()), "parallel");
    check(
        &|c| c.components.get_mut(FFN_INFER).unwrap().input_order = Some(vec!["nope".into()]),
        "nope",
    );
    check(
        &|c| {
            c.components
                .get_mut(LM_HEAD)
                .unwrap()
                .outputs
                .get_mut("logits3")
                .unwrap()
                .shape = vec![]
        },
        "logits3",
    );
    let err = ModelConfig::from_json("{\"shapes\": 1}", Path::new("bad.json")).unwrap_err();
    assert!(err.to_string().contains("bad.json"), "{err}");
}

#[test]
fn generation_reports_a_directory_without_parts() {
    let dir = tempfile::tempdir().unwrap();
    let err = ModelConfig::generate(dir.path(), None).unwrap_err();
    assert!(matches!(err, HubError::ConfigGeneration { .. }), "{err}");
    assert!(err.to_string().contains("embeddings"), "{err}");
    assert_eq!(resolve_model_file(dir.path(), "x.mlmodelc"), None);
}
