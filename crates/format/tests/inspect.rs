//! The inspect report's JSON keys are exactly the ones documented in `docs/inspect-json.md`, and its text form
//! lists what the model declares.

use std::collections::BTreeSet;
use std::path::Path;

use candle_coreml_format::inspect::InspectReport;
use candle_coreml_format::ModelFile;
use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");

/// Field names in the first column of the document's tables (`| `a`, `b` | ...`).
fn documented_fields() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/inspect-json.md")).unwrap();
    let mut out = BTreeSet::new();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let first_cell = format!("`{}", rest.split('|').next().unwrap_or_default());
        for name in first_cell.split(',') {
            out.insert(name.trim().trim_matches('`').to_string());
        }
    }
    for sub in [
        "program_path",
        "path",
        "bytes",
        "blobs",
        "kind",
        "shapes",
        "ranges",
        "lower",
        "upper",
    ] {
        assert!(doc.contains(&format!("`{sub}`")), "{sub} is not documented");
        out.insert(sub.to_string());
    }
    out
}

/// Every object key of the report, except the keys of data maps (metadata, op histograms).
fn keys(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                out.insert(k.clone());
                if !matches!(k.as_str(), "user_defined" | "ops" | "non_const_ops") {
                    keys(child, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| keys(i, out)),
        _ => {}
    }
}

#[test]
fn json_keys_match_the_documentation() {
    let mut seen = BTreeSet::new();
    for p in [
        "fixtures/anemll/qwen3-tiny-lut6-c2/qwen_embeddings.mlpackage",
        "fixtures/anemll/qwen3-tiny-lut6-c2/qwen_FFN_PF_lut6_chunk_01of02.mlpackage",
        "fixtures/mil-text/FluidInference__FluidAudio__transpose-encoder-flexible",
    ] {
        let m = ModelFile::open(Path::new(ROOT).join(p)).unwrap();
        let report = InspectReport::new(&m, None).unwrap();
        keys(&serde_json::to_value(&report).unwrap(), &mut seen);
    }
    assert_eq!(seen, documented_fields());
}

#[test]
fn text_lists_functions_states_and_flexibility() {
    let m = ModelFile::open(
        Path::new(ROOT)
            .join("fixtures/anemll/llama-tiny-fp16-c2/llama_FFN_PF_chunk_01of02.mlpackage"),
    )
    .unwrap();
    let text = InspectReport::new(&m, Some("prefill")).unwrap().to_text();
    assert!(text.contains("function prefill  opset CoreML8"), "{text}");
    assert!(!text.contains("function infer"), "{text}");
    let state = text
        .lines()
        .find(|l| l.contains("model_model_kv_cache_0"))
        .unwrap();
    assert!(
        state.contains("fp16") && state.contains("[8, 2, 512, 32]"),
        "{state}"
    );

    let m = ModelFile::open(
        Path::new(ROOT).join("fixtures/anemll/llama-tiny-fp16-c2/llama_embeddings.mlpackage"),
    )
    .unwrap();
    let text = InspectReport::new(&m, None).unwrap().to_text();
    let ids = text.lines().find(|l| l.contains("input_ids")).unwrap();
    assert!(ids.contains("one of [1, 1] [1, 32]"), "{ids}");
    assert!(InspectReport::new(&m, Some("prefill")).is_err());
}
