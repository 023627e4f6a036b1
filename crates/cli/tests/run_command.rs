//! `candle-coreml run` on the stateful accumulator fixture: outputs written as .npy, state carried between two
//! invocations through --state-out / --state-in (expected values from fixtures/mil/expected.json).

use std::path::Path;
use std::process::Command;

use candle_core::{DType, Device, Tensor};

fn fixture(rel: &str) -> std::path::PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).join(rel)
}

fn run(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn run_writes_outputs_and_carries_state() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("mil/stateful_accumulator.mlpackage");
    let x_path = dir.path().join("x.npy");
    // The first two calls of expected.json: x = [1,2,3,4] then [2,4,6,8]; y = [1,2,3,4] then [3,6,9,12].
    let x1 = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu).unwrap();
    x1.write_npy(&x_path).unwrap();
    let state = dir.path().join("state.safetensors");
    let out1 = dir.path().join("out1");
    let input = format!("x={}", x_path.display());
    let stdout = run(&[
        model.as_os_str(),
        "--input".as_ref(),
        input.as_ref(),
        "--state-out".as_ref(),
        state.as_os_str(),
        "--output-dir".as_ref(),
        out1.as_os_str(),
    ]);
    assert!(stdout.contains("y: [1, 4] F16"), "{stdout}");
    let y1 = Tensor::read_npy(out1.join("y.npy")).unwrap();
    assert_eq!(
        y1.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![1., 2., 3., 4.]]
    );

    let x2 = Tensor::new(&[[2f32, 4., 6., 8.]], &Device::Cpu).unwrap();
    x2.write_npy(&x_path).unwrap();
    let out2 = dir.path().join("out2");
    run(&[
        model.as_os_str(),
        "--input".as_ref(),
        input.as_ref(),
        "--state-in".as_ref(),
        state.as_os_str(),
        "--output-dir".as_ref(),
        out2.as_os_str(),
    ]);
    let y2 = Tensor::read_npy(out2.join("y.npy")).unwrap();
    assert_eq!(
        y2.to_dtype(DType::F32).unwrap().to_vec2::<f32>().unwrap(),
        vec![vec![3., 6., 9., 12.]]
    );
}

#[test]
fn run_names_a_missing_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_candle-coreml"))
        .arg("run")
        .arg(fixture("mil/stateful_accumulator.mlpackage"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("input `x`") && err.contains("missing"),
        "{err}"
    );
}
