//! Model descriptions of compiled bundles: from `metadata.json`, and derived from function signatures (with Apple's
//! `FlexibleShapeInformation`) when `metadata.json` is missing.

use std::path::{Path, PathBuf};

use candle_coreml_format::description::{DimRange, FeatureKind, ShapeFlexibility};
use candle_coreml_format::mil::DataType;
use candle_coreml_format::{FormatError, ModelFile};

fn mil_text(name: &str) -> PathBuf {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/mil-text"
    ))
    .join(name)
}

fn array(kind: &FeatureKind) -> (&[i64], &ShapeFlexibility, Option<DataType>) {
    let a = kind.array().expect("array feature");
    (&a.shape, &a.flexibility, a.dtype)
}

#[test]
fn derived_from_flexible_shape_information() {
    let m = ModelFile::open(mil_text(
        "rebeckerspecialties__mlmodelc-export__flexible-enumerated",
    ))
    .unwrap();
    assert_eq!(m.description.spec_version, None);
    let main = m.description.function("main").unwrap();
    let (shape, flex, dtype) = array(&main.input("input").unwrap().kind);
    assert_eq!((shape, dtype), (&[4][..], Some(DataType::Float32)));
    assert_eq!(
        flex,
        &ShapeFlexibility::Enumerated(vec![vec![1], vec![2], vec![4]])
    );
    let (shape, _, _) = array(&main.output("output").unwrap().kind);
    assert_eq!(shape, &[-1]);

    let m = ModelFile::open(mil_text(
        "rebeckerspecialties__mlmodelc-export__flexible-gather",
    ))
    .unwrap();
    let main = m.description.function("main").unwrap();
    let (shape, flex, _) = array(&main.input("indices").unwrap().kind);
    assert_eq!(shape, &[2, 4]);
    assert_eq!(
        flex,
        &ShapeFlexibility::Range(vec![
            DimRange {
                lower: 0,
                upper: Some(2)
            },
            DimRange {
                lower: 0,
                upper: Some(4)
            }
        ])
    );
    let (shape, flex, _) = array(&main.input("data").unwrap().kind);
    assert_eq!((shape, flex), (&[3, 2][..], &ShapeFlexibility::Fixed));
    let (shape, _, dtype) = array(&main.output("output").unwrap().kind);
    assert_eq!((shape, dtype), (&[-1, -1, 2][..], Some(DataType::Float32)));
}

#[test]
fn metadata_json_functions_ranges_and_metadata() {
    let m = ModelFile::open(mil_text(
        "rebeckerspecialties__mlmodelc-export__flexible-multifunction",
    ))
    .unwrap();
    assert_eq!(m.description.spec_version, Some(9));
    assert_eq!(m.description.default_function, "second");
    let names: Vec<&str> = m
        .description
        .functions
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["first", "second"]);
    let (shape, flex, _) = array(
        &m.description
            .function("second")
            .unwrap()
            .input("input")
            .unwrap()
            .kind,
    );
    assert_eq!(shape, &[2]);
    assert_eq!(
        flex,
        &ShapeFlexibility::Range(vec![DimRange {
            lower: 0,
            upper: Some(4)
        }])
    );

    let m = ModelFile::open(mil_text(
        "FluidInference__FluidAudio__transpose-encoder-flexible",
    ))
    .unwrap();
    let md = &m.description.metadata;
    assert_eq!(md.author, "FluidAudio");
    assert_eq!(md.version, "1.0");
    assert_eq!(
        md.short_description,
        "Efficient tensor transpose for ASR encoder output"
    );
    assert_eq!(
        md.user_defined["com.github.apple.coremltools.version"],
        "8.3.0"
    );
}

const STATEFUL_MIL: &str = r#"program(1.3)
[buildInfo = dict<string, string>({{"coremltools-version", "9.0"}})]
{
    func main<ios18>(tensor<int32, [1, ?]> input_ids, state<tensor<fp16, [2, 4]>> kv) {
            tensor<int32, [1, ?]> out = identity(x = input_ids)[name = string("out")];
        } -> (out);
}"#;

const STATEFUL_METADATA: &str = r#"[{
  "specificationVersion": 9,
  "inputSchema": [{"name": "input_ids", "type": "MultiArray", "dataType": "Int32", "shape": "[1, 1]",
                   "hasShapeFlexibility": "1", "enumeratedShapes": "[[1, 1], [1, 64]]", "isOptional": "0"}],
  "outputSchema": [{"name": "out", "type": "MultiArray", "dataType": "Int32", "shape": "[]"}],
  "stateSchema": [{"name": "kv", "type": "State", "dataType": "Float16", "shape": "[2, 4]"}],
  "userDefinedMetadata": {"com.anemll.context_length": "512"},
  "license": "MIT"
}]"#;

fn bundle(dir: &Path, mil: &str, metadata: Option<&str>) -> PathBuf {
    let b = dir.join("m.mlmodelc");
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(b.join("model.mil"), mil).unwrap();
    if let Some(m) = metadata {
        std::fs::write(b.join("metadata.json"), m).unwrap();
    }
    b
}

#[test]
fn metadata_json_enumerated_shapes_and_states() {
    let dir = tempfile::tempdir().unwrap();
    let m = ModelFile::open(bundle(dir.path(), STATEFUL_MIL, Some(STATEFUL_METADATA))).unwrap();
    let main = m.description.default().unwrap();
    assert_eq!(main.name, "main");
    let (shape, flex, dtype) = array(&main.input("input_ids").unwrap().kind);
    assert_eq!((shape, dtype), (&[1, 1][..], Some(DataType::Int32)));
    assert_eq!(
        flex,
        &ShapeFlexibility::Enumerated(vec![vec![1, 1], vec![1, 64]])
    );
    let kv = main.state("kv").unwrap();
    assert!(matches!(kv.kind, FeatureKind::State(_)));
    assert_eq!(array(&kv.kind).0, &[2, 4]);
    assert_eq!(m.description.metadata.license, "MIT");
    assert_eq!(
        m.description.metadata.user_defined["com.anemll.context_length"],
        "512"
    );
}

#[test]
fn metadata_json_shape_flexibility_text_is_read_when_it_is_all_there_is() {
    let dir = tempfile::tempdir().unwrap();
    for (flexibility, expected) in [
        (
            "1 × 1 | 1 × 64",
            ShapeFlexibility::Enumerated(vec![vec![1, 1], vec![1, 64]]),
        ),
        (
            "1 × 1...-1",
            ShapeFlexibility::Range(vec![
                DimRange {
                    lower: 1,
                    upper: Some(1),
                },
                DimRange {
                    lower: 1,
                    upper: None,
                },
            ]),
        ),
    ] {
        let metadata = format!(
            r#"[{{"inputSchema": [{{"name": "input_ids", "dataType": "Int32", "shape": "[1, 1]",
                 "hasShapeFlexibility": "1", "shapeFlexibility": "{flexibility}"}}]}}]"#
        );
        let m = ModelFile::open(bundle(dir.path(), STATEFUL_MIL, Some(&metadata))).unwrap();
        let input = m.description.default().unwrap().input("input_ids").unwrap();
        assert_eq!(array(&input.kind).1, &expected, "{flexibility}");
    }
}

#[test]
fn derived_states_and_bad_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let b = bundle(dir.path(), STATEFUL_MIL, None);
    let m = ModelFile::open(&b).unwrap();
    let main = m.description.function("main").unwrap();
    assert_eq!(main.inputs.len(), 1);
    assert_eq!(array(&main.input("input_ids").unwrap().kind).0, &[1, -1]);
    let (shape, _, dtype) = array(&main.state("kv").unwrap().kind);
    assert_eq!((shape, dtype), (&[2, 4][..], Some(DataType::Float16)));

    std::fs::write(
        b.join("metadata.json"),
        "[{\"inputSchema\": [{\"name\": \"x\", \"dataType\": \"Complex64\"}]}]",
    )
    .unwrap();
    match ModelFile::open(&b) {
        Err(FormatError::Invalid { path, message }) => {
            assert!(path.ends_with("metadata.json"));
            assert!(message.contains("Complex64"), "{message}");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    std::fs::write(
        b.join("metadata.json"),
        r#"[{"inputSchema": [{"name": "tokens", "dataType": "Int32", "shape": "[1, 1]"}]}]"#,
    )
    .unwrap();
    match ModelFile::open(&b) {
        Err(FormatError::Invalid { message, .. }) => {
            assert!(message.contains("`tokens` is not a parameter"), "{message}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    std::fs::write(b.join("metadata.json"), "{not json").unwrap();
    assert!(matches!(ModelFile::open(&b), Err(FormatError::Json { .. })));
    std::fs::write(
        b.join("metadata.json"),
        r#"[{"functions": [{"name": "nope"}]}]"#,
    )
    .unwrap();
    assert!(matches!(
        ModelFile::open(&b),
        Err(FormatError::Invalid { .. })
    ));
}
