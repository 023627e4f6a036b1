//! An ANEMLL chunk laid out as a compiled `.mlmodelc` (its program printed as `model.mil`, its weight file copied)
//! and as a `.mlmodelc.zip` opens to the same program and weights as the `.mlpackage`, and the description derived
//! from the function signatures equals the package's declared one.

use std::io::Write;
use std::path::Path;

use candle_coreml_format::blob::program_blob_refs;
use candle_coreml_format::container::ModelFormat;
use candle_coreml_format::mil::text::print_program;
use candle_coreml_format::ModelFile;

const CHUNK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/anemll/llama-tiny-fp16-c2/llama_FFN_PF_chunk_02of02.mlpackage"
);

fn write_bundle(package: &ModelFile, bundle: &Path) {
    std::fs::create_dir_all(bundle.join("weights")).unwrap();
    std::fs::write(
        bundle.join("model.mil"),
        print_program(&package.program).unwrap(),
    )
    .unwrap();
    let weights = package.weights.files().values().next().unwrap();
    std::fs::copy(weights.path(), bundle.join("weights/weight.bin")).unwrap();
}

fn assert_same_model(a: &ModelFile, b: &ModelFile) {
    assert_eq!(a.program.functions, b.program.functions);
    assert_eq!(a.weights.total_bytes(), b.weights.total_bytes());
    for r in program_blob_refs(&a.program) {
        assert_eq!(
            a.weights.resolve(r).unwrap().bytes(),
            b.weights.resolve(r).unwrap().bytes()
        );
    }
    for f in &a.description.functions {
        let g = b.description.function(&f.name).unwrap();
        assert_eq!(
            (&f.inputs, &f.outputs, &f.states),
            (&g.inputs, &g.outputs, &g.states),
            "{}",
            f.name
        );
    }
}

#[test]
fn compiled_and_zipped_chunk_match_the_package() {
    let package = ModelFile::open(CHUNK).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("chunk.mlmodelc");
    write_bundle(&package, &bundle);

    let compiled = ModelFile::open(&bundle).unwrap();
    assert_eq!(compiled.format, ModelFormat::MlModelc);
    assert_same_model(&package, &compiled);

    let zip_path = dir.path().join("zipped").join("chunk.mlmodelc.zip");
    std::fs::create_dir_all(zip_path.parent().unwrap()).unwrap();
    let mut w = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    w.add_directory("chunk.mlmodelc/weights/", opts).unwrap();
    for rel in ["model.mil", "weights/weight.bin"] {
        w.start_file(format!("chunk.mlmodelc/{rel}"), opts).unwrap();
        w.write_all(&std::fs::read(bundle.join(rel)).unwrap())
            .unwrap();
    }
    w.finish().unwrap();
    let zipped = ModelFile::open(&zip_path).unwrap();
    assert_eq!(zipped.format, ModelFormat::MlModelcZip);
    assert_same_model(&package, &zipped);
}
