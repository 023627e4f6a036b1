//! Load-time checks: unsupported ops are all reported at load with their counts, the Core ML framework backend
//! is refused off macOS, and enumerated input shapes are enforced with an error naming the input.

mod common;

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};
use candle_coreml_format::mil::{Block, DataType, Function, NamedType, Operation, ValueType};
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::{Backend, CoreMLModel, FunctionPlan, LoadOptions};
use common::fixture;

fn unary(op_type: &str, x: &str, out: &str) -> Operation {
    Operation {
        op_type: op_type.to_string(),
        inputs: BTreeMap::from([(
            "x".to_string(),
            vec![candle_coreml_format::mil::Binding::Name(x.to_string())],
        )]),
        outputs: vec![NamedType {
            name: out.to_string(),
            ty: ValueType::tensor(DataType::Float32, &[2]),
        }],
        attributes: BTreeMap::new(),
        blocks: Vec::new(),
    }
}

#[test]
fn every_unsupported_op_type_is_listed_with_its_count() {
    let function = Function {
        inputs: vec![NamedType {
            name: "x".into(),
            ty: ValueType::tensor(DataType::Float32, &[2]),
        }],
        opset: "CoreML8".into(),
        attributes: BTreeMap::new(),
        block: Block {
            inputs: Vec::new(),
            operations: vec![
                unary("frobnicate", "x", "a"),
                unary("relu", "a", "b"),
                unary("frobnicate", "b", "c"),
                unary("quux", "c", "d"),
            ],
            outputs: vec!["d".into()],
        },
    };
    let err = FunctionPlan::build(
        "main",
        &function,
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("frobnicate (2)") && err.contains("quux (1)") && !err.contains("relu"),
        "{err}"
    );
}

#[test]
fn coreml_backend_is_refused_here() {
    if cfg!(target_os = "macos") {
        return;
    }
    let options = LoadOptions {
        backend: Backend::CoreML,
        ..LoadOptions::default()
    };
    let err = CoreMLModel::load_with(fixture("mil/stateful_accumulator.mlpackage"), &options)
        .unwrap_err();
    assert!(err.to_string().contains("macOS"), "{err}");
}

#[test]
fn enumerated_input_shapes_are_enforced() {
    let model = CoreMLModel::load(fixture(
        "anemll/qwen3-tiny-fp16-c1/qwen_embeddings.mlpackage",
    ))
    .unwrap();
    let ok = Tensor::new(&[[1i32]], &Device::Cpu).unwrap();
    assert_eq!(model.forward(&[&ok]).unwrap().dims(), &[1, 1, 128]);
    let bad = Tensor::new(&[[1i32, 2, 3]], &Device::Cpu).unwrap();
    let err = model.forward(&[&bad]).unwrap_err().to_string();
    assert!(
        err.contains("input_ids") && err.contains("[1, 3]") && err.contains("[1, 32]"),
        "{err}"
    );
    let out_of_vocab = Tensor::new(&[[100_000i32]], &Device::Cpu).unwrap();
    let err = model.forward(&[&out_of_vocab]).unwrap_err().to_string();
    assert!(err.contains("out of bounds"), "{err}");
}

#[test]
fn unknown_function_is_named() {
    let model = CoreMLModel::load(fixture("mil/multifunction_saved.mlpackage")).unwrap();
    let err = model.with_function("decode").unwrap_err().to_string();
    assert!(
        err.contains("decode") && err.contains("infer") && err.contains("prefill"),
        "{err}"
    );
}

#[test]
fn models_and_states_can_move_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CoreMLModel>();
    assert_send_sync::<candle_coreml_runtime::ModelState>();
    let model = CoreMLModel::load(fixture("mil/multifunction_saved.mlpackage")).unwrap();
    let x = Tensor::zeros((1, 64), candle_core::DType::F16, &Device::Cpu).unwrap();
    let handle = std::thread::spawn(move || model.forward(&[&x]).map(|t| t.dims().to_vec()));
    assert_eq!(handle.join().unwrap().unwrap(), [1, 32]);
}
