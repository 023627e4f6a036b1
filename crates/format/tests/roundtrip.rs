//! Every fixture package's program, read from protobuf, prints as `model.mil` text and parses back to the same
//! program: the protobuf and text readers agree on the IR.

use std::path::{Path, PathBuf};

use candle_coreml_format::mil::text::{parse_program, print_program};
use candle_coreml_format::ModelFile;

fn packages() -> Vec<PathBuf> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures"));
    let mut dirs = vec![root.join("mil")];
    for e in std::fs::read_dir(root.join("anemll")).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            dirs.push(p);
        }
    }
    let mut out: Vec<PathBuf> = dirs
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "mlpackage"))
        .collect();
    out.sort();
    out
}

#[test]
fn protobuf_programs_round_trip_through_text() {
    let packages = packages();
    assert_eq!(packages.len(), 15);
    for p in packages {
        let m = ModelFile::open(&p).unwrap();
        let text = print_program(&m.program).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let back = parse_program(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!(back, m.program, "{}", p.display());
    }
}
