//! Opening the other container forms: a single `.mlmodel` file, a `.mlmodelc` directory, a `.mlmodelc.zip`
//! (including hostile archives), and model types that are not ML Programs.

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_coreml_format::container::{extract_mlmodelc_zip, ModelFormat};
use candle_coreml_format::proto::spec;
use candle_coreml_format::{FormatError, ModelFile};
use prost::Message;

fn fixtures() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).to_path_buf()
}

const MEL: &str = "mil-text/alifarpl__Aksera-WhisperKit__whisper-melspectrogram";

fn zip_bundle(zip_path: &Path, prefix: &str, extra: &[(&str, &[u8])]) {
    let bundle = fixtures().join(MEL);
    let file = std::fs::File::create(zip_path).unwrap();
    let mut w = zip::ZipWriter::new(file);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for rel in ["model.mil", "metadata.json", "weights/weight.bin"] {
        w.start_file(format!("{prefix}{rel}"), opts).unwrap();
        w.write_all(&std::fs::read(bundle.join(rel)).unwrap())
            .unwrap();
    }
    for (name, data) in extra {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn single_mlmodel_file_with_weights_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = fixtures().join("mil/stateful_kv_update.mlpackage/Data/com.apple.CoreML");
    std::fs::copy(data.join("model.mlmodel"), dir.path().join("kv.mlmodel")).unwrap();
    std::fs::create_dir(dir.path().join("weights")).unwrap();
    std::fs::copy(
        data.join("weights/weight.bin"),
        dir.path().join("weights/weight.bin"),
    )
    .unwrap();
    let m = ModelFile::open(dir.path().join("kv.mlmodel")).unwrap();
    assert_eq!(m.format, ModelFormat::MlModel);
    let package = ModelFile::open(fixtures().join("mil/stateful_kv_update.mlpackage")).unwrap();
    assert_eq!(m.program, package.program);
    assert_eq!(m.description, package.description);
    assert_eq!(m.weights.total_bytes(), package.weights.total_bytes());

    std::fs::remove_file(dir.path().join("weights/weight.bin")).unwrap();
    let without_weights = ModelFile::open(dir.path().join("kv.mlmodel")).unwrap();
    let missing: Vec<_> = without_weights.weights.missing_files().keys().collect();
    assert_eq!(missing, ["@model_path/weights/weight.bin"]);
    let blob = candle_coreml_format::blob::program_blob_refs(&without_weights.program)[0];
    match without_weights.weights.resolve(blob) {
        Err(FormatError::Io { path, .. }) => assert!(path.ends_with("weights/weight.bin")),
        other => panic!("expected a missing-weights error, got {other:?}"),
    }
}

#[test]
fn non_ml_program_specs_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nn.mlmodel");
    let model = spec::Model {
        specification_version: 4,
        r#type: Some(spec::model::Type::NeuralNetwork(vec![])),
        ..Default::default()
    };
    std::fs::write(&path, model.encode_to_vec()).unwrap();
    match ModelFile::open(&path) {
        Err(FormatError::UnsupportedModelType { kind, path: p }) => {
            assert_eq!(kind, "neuralNetwork");
            assert_eq!(p, path);
        }
        other => panic!("expected UnsupportedModelType, got {other:?}"),
    }
    std::fs::write(&path, b"\xff\xff\xff\xff garbage").unwrap();
    assert!(matches!(
        ModelFile::open(&path),
        Err(FormatError::Protobuf { .. })
    ));

    let pipeline = dir.path().join("p.mlmodelc");
    std::fs::create_dir_all(pipeline.join("model0")).unwrap();
    match ModelFile::open(&pipeline) {
        Err(FormatError::UnsupportedModelType { kind, .. }) => assert_eq!(kind, "pipeline"),
        other => panic!("expected UnsupportedModelType, got {other:?}"),
    }
}

#[test]
fn mlmodelc_zip_is_extracted_beside_the_archive_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = ModelFile::open(fixtures().join(MEL)).unwrap();
    assert_eq!(bundle.format, ModelFormat::MlModelc);
    for (name, prefix) in [
        ("nested.mlmodelc.zip", "nested.mlmodelc/"),
        ("flat.mlmodelc.zip", ""),
    ] {
        let zip = dir.path().join(name);
        zip_bundle(&zip, prefix, &[]);
        let m = ModelFile::open(&zip).unwrap();
        assert_eq!(m.format, ModelFormat::MlModelcZip);
        assert_eq!(m.program, bundle.program);
        assert_eq!(m.description, bundle.description);
        let extracted = dir.path().join(name.trim_end_matches(".zip"));
        assert!(extracted.join("weights/weight.bin").is_file());
        std::fs::write(extracted.join("marker"), b"x").unwrap();
        assert_eq!(extract_mlmodelc_zip(&zip, dir.path()).unwrap(), extracted);
        assert!(
            extracted.join("marker").is_file(),
            "an existing extraction is reused"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary directories left: {leftovers:?}"
    );
}

#[test]
fn hostile_zips_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for (i, evil) in ["../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"]
        .iter()
        .enumerate()
    {
        let zip = dir.path().join(format!("bad{i}.mlmodelc.zip"));
        zip_bundle(&zip, "", &[(evil, b"x")]);
        match extract_mlmodelc_zip(&zip, &dir.path().join("out")) {
            Err(FormatError::Zip { path, message }) => {
                assert_eq!(path, zip);
                assert!(message.contains("path"), "{message}");
            }
            other => panic!("{evil}: expected a zip error, got {other:?}"),
        }
        assert!(!dir.path().join("evil.txt").exists());
        assert!(!dir.path().join(format!("out/bad{i}.mlmodelc")).exists());
    }

    let zip = dir.path().join("link.mlmodelc.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
    w.add_symlink(
        "model.mil",
        "/etc/passwd",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    w.finish().unwrap();
    match extract_mlmodelc_zip(&zip, dir.path()) {
        Err(FormatError::Zip { message, .. }) => assert!(message.contains("symlink"), "{message}"),
        other => panic!("expected a symlink error, got {other:?}"),
    }

    let zip = dir.path().join("empty.mlmodelc.zip");
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip).unwrap());
    w.start_file("readme.txt", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.finish().unwrap();
    assert!(matches!(
        extract_mlmodelc_zip(&zip, dir.path()),
        Err(FormatError::Zip { .. })
    ));

    let zip = dir.path().join("junk.mlmodelc.zip");
    std::fs::write(&zip, b"PK\x03\x04 not really").unwrap();
    assert!(matches!(
        ModelFile::open(&zip),
        Err(FormatError::Zip { .. })
    ));
}
