//! Model files and dimensions of the fixture sets, read from meta.yaml and the packages' descriptions; checked
//! against the fixtures' expected.json `conversion` block (written by the converter run, independent of this code).

use std::path::{Path, PathBuf};

use candle_coreml_format::ModelFile;
use candle_coreml_llm::files::ModelFiles;
use candle_coreml_llm::layout::{LmHeadOutputs, ModelLayout, PartDescriptions};

fn fixtures() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/anemll"
    ))
}

fn layout_of(files: &ModelFiles) -> ModelLayout {
    let emb = ModelFile::open(&files.embeddings).unwrap();
    let head = ModelFile::open(&files.lm_head).unwrap();
    let chunk_files: Vec<ModelFile> = files
        .ffn_chunks
        .iter()
        .map(|p| ModelFile::open(p).unwrap())
        .collect();
    let chunks: Vec<(PathBuf, &_)> = chunk_files
        .iter()
        .map(|m| (m.path.clone(), &m.description))
        .collect();
    ModelLayout::from_descriptions(
        PartDescriptions {
            embeddings: (&files.embeddings, &emb.description),
            chunks: &chunks,
            lm_head: (&files.lm_head, &head.description),
        },
        files.meta.as_ref(),
    )
    .unwrap()
}

fn conversion(set: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(set.join("expected.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["conversion"].clone()
}

#[test]
fn fixture_layouts_match_the_conversion_record() {
    for name in [
        "qwen3-tiny-fp16-c1",
        "qwen3-tiny-lut6-c2",
        "llama-tiny-fp16-c2",
    ] {
        let set = fixtures().join(name);
        let conv = conversion(&set);
        let files = ModelFiles::locate(&set).unwrap();
        assert_eq!(
            files.ffn_chunks.len(),
            conv["num_chunks"].as_u64().unwrap() as usize,
            "{name}"
        );
        let listed: Vec<&str> = conv["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for part in files
            .ffn_chunks
            .iter()
            .chain([&files.embeddings, &files.lm_head])
        {
            let file_name = part.file_name().unwrap().to_str().unwrap();
            assert!(
                listed.contains(&file_name),
                "{name}: {file_name} not in {listed:?}"
            );
        }
        let layout = layout_of(&files);
        assert_eq!(
            layout.context_length,
            conv["context_length"].as_u64().unwrap() as usize,
            "{name}"
        );
        assert_eq!(
            layout.batch_size,
            conv["batch_size"].as_u64().unwrap() as usize,
            "{name}"
        );
        assert_eq!(
            layout.state_length,
            conv["state_length"].as_u64().unwrap() as usize,
            "{name}"
        );
        let state_shape: Vec<usize> = conv["kv_state_shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(layout.state_shape, state_shape, "{name}");
        assert!(
            layout.has_prefill && layout.embeddings_accept_batch,
            "{name}"
        );
        match &layout.lm_head {
            LmHeadOutputs::Logits { names, .. } => {
                assert_eq!(
                    names.len(),
                    conv["split_lm_head"].as_u64().unwrap() as usize,
                    "{name}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
        // Vocabulary 3072 in every set (expected.json `model.vocab_size`).
        assert_eq!(layout.vocab_size, Some(3072), "{name}");
        assert!(layout.warnings.is_empty(), "{name}: {:?}", layout.warnings);
    }
}

/// Copies a fixture set's part directories by symlink into a temporary directory, with a replaced meta.yaml.
fn linked_copy(set: &Path, meta: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(set).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "meta.yaml" {
            continue;
        }
        std::os::unix::fs::symlink(entry.path(), dir.path().join(&name)).unwrap();
    }
    if let Some(meta) = meta {
        std::fs::write(dir.path().join("meta.yaml"), meta).unwrap();
    }
    dir
}

#[test]
fn parts_are_discovered_without_meta_yaml() {
    let set = fixtures().join("qwen3-tiny-lut6-c2");
    let dir = linked_copy(&set, None);
    let files = ModelFiles::locate(dir.path()).unwrap();
    assert!(files.meta.is_none());
    let names: Vec<String> = files
        .ffn_chunks
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "qwen_FFN_PF_lut6_chunk_01of02.mlpackage",
            "qwen_FFN_PF_lut6_chunk_02of02.mlpackage"
        ]
    );
    assert!(files.embeddings.ends_with("qwen_embeddings.mlpackage"));
    assert!(files.lm_head.ends_with("qwen_lm_head_lut6.mlpackage"));
    assert_eq!(layout_of(&files).context_length, 256);
}

#[test]
fn ffn_name_with_chunk_suffix_and_prefix_only_meta() {
    let set = fixtures().join("llama-tiny-fp16-c2");
    let with_suffix = "model_info:\n  parameters:\n    ffn: llama_FFN_PF_chunk_01of02.mlmodelc\n    \
                       embeddings: llama_embeddings.mlmodelc\n    lm_head: llama_lm_head.mlmodelc\n";
    let dir = linked_copy(&set, Some(with_suffix));
    let files = ModelFiles::locate(dir.path()).unwrap();
    assert_eq!(files.ffn_chunks.len(), 2);
    assert!(files.ffn_chunks[1].ends_with("llama_FFN_PF_chunk_02of02.mlpackage"));
    // Only the prefix and LUT settings: names are built as the converter does.
    let prefix_only = "model_info:\n  parameters:\n    model_prefix: llama\n    num_chunks: 2\n    lut_ffn: none\n";
    let dir = linked_copy(&set, Some(prefix_only));
    let files = ModelFiles::locate(dir.path()).unwrap();
    assert!(files.ffn_chunks[0].ends_with("llama_FFN_PF_chunk_01of02.mlpackage"));
    assert!(files.lm_head.ends_with("llama_lm_head.mlpackage"));
}

#[test]
fn contradictions_with_meta_yaml_are_reported() {
    let set = fixtures().join("qwen3-tiny-fp16-c1");
    let original = std::fs::read_to_string(set.join("meta.yaml")).unwrap();
    let wrong_context = original.replace("context_length: 256", "context_length: 512");
    let dir = linked_copy(&set, Some(&wrong_context));
    let files = ModelFiles::locate(dir.path()).unwrap();
    let emb = ModelFile::open(&files.embeddings).unwrap();
    let head = ModelFile::open(&files.lm_head).unwrap();
    let chunk = ModelFile::open(&files.ffn_chunks[0]).unwrap();
    let chunks = vec![(chunk.path.clone(), &chunk.description)];
    let err = ModelLayout::from_descriptions(
        PartDescriptions {
            embeddings: (&files.embeddings, &emb.description),
            chunks: &chunks,
            lm_head: (&files.lm_head, &head.description),
        },
        files.meta.as_ref(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("context_length") && err.contains("512") && err.contains("256"),
        "{err}"
    );

    // A 0.3.5 state_length that disagrees with the state is only a warning (the state decides).
    let other_state = format!("{original}    state_length: 1024\n");
    let dir = linked_copy(&set, Some(&other_state));
    let files = ModelFiles::locate(dir.path()).unwrap();
    let layout = layout_of(&files);
    assert_eq!(layout.state_length, 256);
    assert_eq!(layout.warnings.len(), 1, "{:?}", layout.warnings);

    // meta.yaml naming a chunk count whose files do not exist.
    let three = original.replace("num_chunks: 1", "num_chunks: 3");
    let dir = linked_copy(&set, Some(&three));
    let err = ModelFiles::locate(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("chunk 1 of 3") && err.contains("qwen_FFN_PF_chunk_01of03"),
        "{err}"
    );
}

#[test]
fn mlmodelc_names_map_to_zipped_and_package_files() {
    // Placeholder files stand for the parts: only the names matter to ModelFiles.
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "m_embeddings.mlmodelc.zip",
        "m_lm_head_lut8.mlpackage",
        "m_FFN_PF_lut4_chunk_01of02.mlmodelc.zip",
        "m_FFN_PF_lut4_chunk_02of02.mlmodelc",
    ] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    let meta = "model_info:\n  version: 0.3.5\n  parameters:\n    num_chunks: 2\n    model_prefix: m\n    \
                embeddings: m_embeddings.mlmodelc\n    lm_head: m_lm_head_lut8.mlmodelc\n    \
                ffn: m_FFN_PF_lut4.mlmodelc\n";
    std::fs::write(dir.path().join("meta.yaml"), meta).unwrap();
    let files = ModelFiles::locate(dir.path()).unwrap();
    assert!(files.embeddings.ends_with("m_embeddings.mlmodelc.zip"));
    assert!(files.lm_head.ends_with("m_lm_head_lut8.mlpackage"));
    assert!(files.ffn_chunks[0].ends_with("m_FFN_PF_lut4_chunk_01of02.mlmodelc.zip"));
    assert!(files.ffn_chunks[1].ends_with("m_FFN_PF_lut4_chunk_02of02.mlmodelc"));
    // The same directory without meta.yaml is discovered from the names.
    std::fs::remove_file(dir.path().join("meta.yaml")).unwrap();
    let discovered = ModelFiles::locate(dir.path()).unwrap();
    assert_eq!(discovered.ffn_chunks, files.ffn_chunks);
    assert_eq!(discovered.lm_head, files.lm_head);
}

#[test]
fn parts_with_unusual_names_are_recognised_by_their_descriptions() {
    let set = fixtures().join("llama-tiny-fp16-c2");
    let dir = tempfile::tempdir().unwrap();
    // Chunk 2 sorts before chunk 1 by name: the order must come from the metadata (com.anemll.chunk_no).
    for (from, to) in [
        ("llama_embeddings.mlpackage", "tok.mlpackage"),
        ("llama_lm_head.mlpackage", "head.mlpackage"),
        ("llama_FFN_PF_chunk_01of02.mlpackage", "layers-b.mlpackage"),
        ("llama_FFN_PF_chunk_02of02.mlpackage", "layers-a.mlpackage"),
    ] {
        std::os::unix::fs::symlink(set.join(from), dir.path().join(to)).unwrap();
    }
    let files = ModelFiles::locate(dir.path()).unwrap();
    assert!(files.embeddings.ends_with("tok.mlpackage"));
    assert!(files.lm_head.ends_with("head.mlpackage"));
    let chunks: Vec<&str> = files
        .ffn_chunks
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(chunks, ["layers-b.mlpackage", "layers-a.mlpackage"]);
    assert_eq!(layout_of(&files).state_length, 512);

    // Without any LM head the error says what was looked for both ways.
    std::fs::remove_file(dir.path().join("head.mlpackage")).unwrap();
    let err = ModelFiles::locate(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("by file name") && err.contains("0 LM head models"),
        "{err}"
    );
}
