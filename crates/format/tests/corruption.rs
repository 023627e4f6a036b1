//! Truncated and bit-flipped copies of a real package's `model.mlmodel` and `weight.bin` give errors, never panics.

use std::path::Path;

use candle_coreml_format::blob::program_blob_refs;
use candle_coreml_format::inspect::InspectReport;
use candle_coreml_format::mil::DataType;
use candle_coreml_format::ModelFile;

const PACKAGE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../fixtures/mil/stateful_kv_update.mlpackage"
);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Opens the package and touches everything a runtime would read; returns whether it opened.
fn exercise(package: &Path) -> bool {
    let Ok(m) = ModelFile::open(package) else {
        return false;
    };
    let _ = InspectReport::new(&m, None).map(|r| r.to_text());
    for r in program_blob_refs(&m.program) {
        if let Ok(b) = m.weights.resolve(r) {
            let _ = match b.dtype {
                DataType::Float16 => b.as_f16().map(|v| v.len()),
                DataType::Int4 => b.unpack_int4().map(|v| v.len()),
                _ => b.unpack_unsigned().map(|v| v.len()),
            };
        }
    }
    true
}

/// A small deterministic generator (xorshift) so the corpus is the same on every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Truncations (about 150, shortest first) followed by `flips` single-bit flips.
fn corpus(original: &[u8], rng: &mut Rng, flips: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let step = (original.len() / 150).max(1);
    for len in (0..original.len()).step_by(step) {
        out.push(original[..len].to_vec());
    }
    for _ in 0..flips {
        let mut v = original.to_vec();
        let at = rng.below(v.len());
        v[at] ^= 1 << rng.below(8);
        out.push(v);
    }
    out
}

#[test]
fn corrupted_model_and_weights_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let package = dir.path().join("m.mlpackage");
    copy_dir(Path::new(PACKAGE), &package);
    assert!(exercise(&package), "the pristine copy must open");
    let data = package.join("Data/com.apple.CoreML");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for file in [data.join("model.mlmodel"), data.join("weights/weight.bin")] {
        let original = std::fs::read(&file).unwrap();
        let variants = corpus(&original, &mut rng, 300);
        assert!(variants.len() >= 300);
        for v in &variants {
            std::fs::write(&file, v).unwrap();
            let opened = exercise(&package);
            assert!(
                !(opened && v.len() < original.len() / 2),
                "{}: truncated to {} of {} bytes and still opened",
                file.display(),
                v.len(),
                original.len()
            );
        }
        std::fs::write(&file, &original).unwrap();
    }
}
