//! Every fixture model opens, and what the reader sees agrees with independent references: the fixtures'
//! `meta.yaml` / `expected.json`, and `fixtures/coremltools_view.json` (written by `tools/record_coremltools_view.py`
//! with coremltools 9.0's protobuf classes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_coreml_format::description::{FeatureDescription, FeatureKind, ShapeFlexibility};
use candle_coreml_format::inspect::InspectReport;
use candle_coreml_format::mil::Block;
use candle_coreml_format::{blob, FormatError, ModelFile};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).to_path_buf()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn anemll_sets() -> Vec<PathBuf> {
    let mut sets: Vec<PathBuf> = std::fs::read_dir(fixtures().join("anemll"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sets.sort();
    sets
}

fn packages_in(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mlpackage"))
        .collect();
    out.sort();
    out
}

fn all_packages() -> Vec<PathBuf> {
    let mut out = packages_in(&fixtures().join("mil"));
    for set in anemll_sets() {
        out.extend(packages_in(&set));
    }
    out
}

fn open(p: &Path) -> ModelFile {
    ModelFile::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `parameters.<key>` of a meta.yaml, read line by line (the format crate has no YAML dependency).
fn meta_param(set: &Path, key: &str) -> String {
    let text = std::fs::read_to_string(set.join("meta.yaml")).unwrap();
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{key}:"))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("{}: no {key}", set.display()))
}

fn array_of(f: &FeatureDescription) -> (&[i64], &ShapeFlexibility, Option<&'static str>) {
    match &f.kind {
        FeatureKind::Array(a) | FeatureKind::State(a) => {
            (&a.shape, &a.flexibility, a.dtype.map(|d| d.mil_name()))
        }
        other => panic!("{}: not an array: {other:?}", f.name),
    }
}

#[test]
fn every_package_opens_and_every_blob_reference_is_a_record() {
    let packages = all_packages();
    assert_eq!(packages.len(), 15, "fixture packages: {packages:?}");
    for p in packages {
        let m = open(&p);
        let refs = blob::program_blob_refs(&m.program);
        for file in m.weights.files().values() {
            let records = file.record_offsets().unwrap();
            assert_eq!(records.len() as u32, file.blob_count());
        }
        for r in &refs {
            let b = m.weights.resolve(r).unwrap_or_else(|e| panic!("{e}"));
            let file = m.weights.files().get(&r.path).unwrap();
            assert!(
                file.record_offsets().unwrap().contains(&r.offset),
                "{}: offset {} is not a record",
                p.display(),
                r.offset
            );
            assert!(b.element_count() > 0);
        }
    }
}

#[test]
fn embeddings_input_has_enumerated_shapes_from_meta_batch_size() {
    for set in anemll_sets() {
        let batch: i64 = meta_param(&set, "batch_size").parse().unwrap();
        let prefix = meta_param(&set, "model_prefix");
        let m = open(&set.join(format!("{prefix}_embeddings.mlpackage")));
        let main = m.description.function("main").unwrap();
        let (shape, flex, dtype) = array_of(main.input("input_ids").unwrap());
        assert_eq!(dtype, Some("int32"));
        assert_eq!(shape, &[1, 1]);
        assert_eq!(
            flex,
            &ShapeFlexibility::Enumerated(vec![vec![1, 1], vec![1, batch]]),
            "{}",
            set.display()
        );
    }
}

#[test]
fn ffn_chunks_have_infer_and_prefill_sharing_the_kv_state() {
    for set in anemll_sets() {
        let expected = read_json(&set.join("expected.json"));
        let kv: Vec<i64> =
            serde_json::from_value(expected["conversion"]["kv_state_shape"].clone()).unwrap();
        let batch = expected["conversion"]["batch_size"].as_i64().unwrap();
        let chunks: Vec<PathBuf> = packages_in(&set)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("_FFN_PF"))
            .collect();
        assert_eq!(
            chunks.len() as u64,
            expected["conversion"]["num_chunks"].as_u64().unwrap()
        );
        for chunk in chunks {
            let m = open(&chunk);
            let names: Vec<&str> = m
                .description
                .functions
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            assert_eq!(names, ["infer", "prefill"], "{}", chunk.display());
            assert_eq!(m.description.default_function, "infer");
            for f in &m.description.functions {
                assert_eq!(m.program.functions[&f.name].opset, "CoreML8");
                assert_eq!(f.states.len(), 1);
                let state = &f.states[0];
                assert_eq!(state.name, "model_model_kv_cache_0");
                assert!(matches!(state.kind, FeatureKind::State(_)));
                let (shape, _, dtype) = array_of(state);
                assert_eq!(shape, kv.as_slice(), "{} {}", chunk.display(), f.name);
                assert_eq!(dtype, Some("fp16"));
            }
            let (prefill_ids, _, _) = array_of(
                m.description
                    .function("prefill")
                    .unwrap()
                    .input("position_ids")
                    .unwrap(),
            );
            assert_eq!(prefill_ids, &[batch]);
        }
    }
}

fn count_ops(block: &Block, into: &mut BTreeMap<String, u64>) {
    for op in &block.operations {
        *into.entry(op.op_type.clone()).or_default() += 1;
        for b in &op.blocks {
            count_ops(b, into);
        }
    }
}

fn feature_view(f: &FeatureDescription) -> Value {
    let kind = match f.kind {
        FeatureKind::Array(_) => "multiArrayType",
        FeatureKind::State(_) => "stateType",
        _ => "other",
    };
    let (shape, flex, dtype) = array_of(f);
    let (enumerated, ranges) = match flex {
        ShapeFlexibility::Fixed => (Value::Null, Value::Null),
        ShapeFlexibility::Enumerated(s) => (serde_json::json!(s), Value::Null),
        ShapeFlexibility::Range(r) => (
            Value::Null,
            serde_json::json!(r
                .iter()
                .map(|d| serde_json::json!([d.lower, d.upper]))
                .collect::<Vec<_>>()),
        ),
    };
    serde_json::json!({
        "name": f.name, "kind": kind, "optional": f.optional, "dtype": dtype, "shape": shape,
        "enumerated_shapes": enumerated, "ranges": ranges,
    })
}

#[test]
fn matches_the_coremltools_view() {
    let view = read_json(&fixtures().join("coremltools_view.json"));
    let packages = view["packages"].as_object().unwrap();
    assert_eq!(packages.len(), all_packages().len());
    for (rel, expected) in packages {
        let m = open(&fixtures().join(rel));
        assert_eq!(
            m.description.spec_version,
            expected["spec_version"].as_i64().map(|v| v as i32),
            "{rel}"
        );
        assert_eq!(
            m.description.default_function,
            expected["default_function"].as_str().unwrap(),
            "{rel}"
        );
        let functions = expected["functions"].as_object().unwrap();
        assert_eq!(m.description.functions.len(), functions.len(), "{rel}");
        for (name, ef) in functions {
            let f = m
                .description
                .function(name)
                .unwrap_or_else(|| panic!("{rel}: no {name}"));
            let pf = &m.program.functions[name];
            assert_eq!(pf.opset, ef["opset"].as_str().unwrap(), "{rel} {name}");
            let mut ops = BTreeMap::new();
            count_ops(&pf.block, &mut ops);
            let expected_ops: BTreeMap<String, u64> =
                serde_json::from_value(ef["ops"].clone()).unwrap();
            assert_eq!(ops, expected_ops, "{rel} {name}");
            for (list, key) in [
                (&f.inputs, "inputs"),
                (&f.outputs, "outputs"),
                (&f.states, "states"),
            ] {
                let ours: Vec<Value> = list.iter().map(feature_view).collect();
                assert_eq!(Value::Array(ours), ef[key], "{rel} {name} {key}");
            }
            let report = InspectReport::new(&m, Some(name)).unwrap();
            let non_const: u64 = expected_ops
                .iter()
                .filter(|(k, _)| *k != "const")
                .map(|(_, v)| v)
                .sum();
            assert_eq!(
                report.functions[0].non_const_ops.values().sum::<u64>(),
                non_const
            );
        }
    }
}

#[test]
fn mil_text_bundles_open_and_resolve_blobs_or_name_their_missing_weights() {
    let root = fixtures().join("mil-text");
    let mut opened = 0;
    for e in std::fs::read_dir(&root).unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let has_weights = dir.join("weights").is_dir();
        let m = ModelFile::open(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        opened += 1;
        assert_eq!(
            m.weights.missing_files().is_empty(),
            has_weights || blob::program_blob_refs(&m.program).is_empty(),
            "{}",
            dir.display()
        );
        for r in blob::program_blob_refs(&m.program) {
            match m.weights.resolve(r) {
                Ok(_) => assert!(has_weights, "{}", dir.display()),
                Err(FormatError::Io { path, source }) => {
                    assert!(!has_weights, "{}: {source}", dir.display());
                    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
                    assert!(path.starts_with(dir.join("weights")), "{}", path.display());
                }
                Err(e) => panic!("{}: {e}", dir.display()),
            }
        }
        let metadata = dir.join("metadata.json");
        if metadata.is_file() {
            let json = read_json(&metadata);
            let declared = json[0]["inputSchema"].as_array().map_or(0, Vec::len);
            let default = m.description.default().unwrap();
            assert_eq!(default.inputs.len(), declared, "{}", dir.display());
        }
    }
    assert_eq!(opened, 10, "every mil-text bundle opens");
}
