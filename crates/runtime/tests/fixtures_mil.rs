//! The hand-built MIL packages of `fixtures/mil/` against `fixtures/mil/expected.json`.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_coreml_runtime::CoreMLModel;
use common::{fixture, json_tensor, max_abs_diff, read_json, values};

#[test]
fn stateful_accumulator_is_exact() {
    let expected = read_json(&fixture("mil/expected.json"));
    let model = CoreMLModel::load(fixture("mil/stateful_accumulator.mlpackage")).unwrap();
    let mut state = model.make_state().unwrap();
    for call in expected["stateful_accumulator"].as_array().unwrap() {
        let x = json_tensor(&call["x"], DType::F16);
        let out = model.predict_with_state(&[("x", &x)], &mut state).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.dtype(), DType::F16);
        let want = json_tensor(&call["y"], DType::F64);
        assert_eq!(out[0].1.dims(), want.dims());
        assert_eq!(values(&out[0].1), values(&want));
    }
}

#[test]
fn stateful_kv_update_matches() {
    let expected = read_json(&fixture("mil/expected.json"));
    let model = CoreMLModel::load(fixture("mil/stateful_kv_update.mlpackage")).unwrap();
    let mut state = model.make_state().unwrap();
    for call in expected["stateful_kv_update"].as_array().unwrap() {
        let x = json_tensor(&call["x"], DType::F16);
        // Positions given as int64: converted (and range-checked) to the declared int32.
        let pos = json_tensor(&call["pos"], DType::I64);
        let out = model
            .predict_with_state(&[("x", &x), ("pos", &pos)], &mut state)
            .unwrap();
        let got = out
            .iter()
            .find(|(n, _)| n == "rowsum_out")
            .expect("rowsum_out");
        let want = values(&json_tensor(&call["rowsum_out"], DType::F64));
        let diff = max_abs_diff(&values(&got.1), &want);
        assert!(diff < 2e-2, "rowsum_out differs by {diff}");
    }
}

#[test]
fn multifunction_direct_functions_match() {
    let expected = read_json(&fixture("mil/expected.json"));
    let relu = CoreMLModel::load(fixture("mil/multifunction_direct.mlpackage")).unwrap();
    assert_eq!(relu.function_name(), "relu_fn");
    let gelu = relu.with_function("gelu_fn").unwrap();
    for (model, key) in [(&relu, "relu_fn"), (&gelu, "gelu_fn")] {
        let case = &expected["multifunction_direct"][key];
        let x = json_tensor(&case["x"], DType::F32);
        let out = model.forward(&[&x]).unwrap();
        assert_eq!(out.dtype(), DType::F32);
        let diff = max_abs_diff(
            &values(&out),
            &values(&json_tensor(&case["out"], DType::F64)),
        );
        assert!(diff < 1e-4, "{key}: differs by {diff}");
    }
}

#[test]
fn multifunction_saved_functions_share_weights_and_match() {
    let expected = read_json(&fixture("mil/expected.json"));
    let infer = CoreMLModel::load(fixture("mil/multifunction_saved.mlpackage")).unwrap();
    assert_eq!(infer.function_name(), "infer");
    let (count_before, _) = infer.constant_stats();
    let prefill = infer.with_function("prefill").unwrap();
    let (count_after, _) = prefill.constant_stats();
    assert_eq!(
        count_before, count_after,
        "the deduplicated weight must be materialised once"
    );
    for (model, key) in [(&infer, "infer"), (&prefill, "prefill")] {
        let case = &expected["multifunction_saved"][key];
        // Given as f32; converted to the declared fp16.
        let x = json_tensor(&case["x"], DType::F32);
        let out = model.forward(&[&x]).unwrap();
        assert_eq!(out.dtype(), DType::F16);
        let diff = max_abs_diff(
            &values(&out),
            &values(&json_tensor(&case["out"], DType::F64)),
        );
        assert!(diff < 3e-2, "{key}: differs by {diff}");
    }
}

#[test]
fn missing_and_misshaped_inputs_are_named() {
    let model = CoreMLModel::load(fixture("mil/multifunction_saved.mlpackage")).unwrap();
    let err = model.predict(&[]).unwrap_err().to_string();
    assert!(err.contains("`x`") && err.contains("missing"), "{err}");
    let wrong = Tensor::zeros((2, 64), DType::F16, &Device::Cpu).unwrap();
    let err = model.predict(&[("x", &wrong)]).unwrap_err().to_string();
    assert!(err.contains("`x`") && err.contains("[2, 64]"), "{err}");
}

#[test]
fn state_shared_between_functions_is_validated() {
    let acc = CoreMLModel::load(fixture("mil/stateful_accumulator.mlpackage")).unwrap();
    let kv = CoreMLModel::load(fixture("mil/stateful_kv_update.mlpackage")).unwrap();
    let mut wrong = acc.make_state().unwrap();
    let x = Tensor::zeros((1, 64), DType::F16, &Device::Cpu).unwrap();
    let pos = Tensor::new(&[0i32], &Device::Cpu).unwrap();
    let err = kv
        .predict_with_state(&[("x", &x), ("pos", &pos)], &mut wrong)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kv"), "{err}");
    let stateless = acc.predict(&[("x", &x)]).unwrap_err().to_string();
    assert!(stateless.contains("stateful"), "{stateless}");
}

#[test]
fn integer_inputs_are_range_checked() {
    let kv = CoreMLModel::load(fixture("mil/stateful_kv_update.mlpackage")).unwrap();
    let mut state = kv.make_state().unwrap();
    let x = Tensor::zeros((1, 64), DType::F16, &Device::Cpu).unwrap();
    let pos = Tensor::new(&[1i64 << 40], &Device::Cpu).unwrap();
    let err = kv
        .predict_with_state(&[("x", &x), ("pos", &pos)], &mut state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("pos") && err.contains("int32"), "{err}");
    let far = Tensor::new(&[100i32], &Device::Cpu).unwrap();
    let err = kv
        .predict_with_state(&[("x", &x), ("pos", &far)], &mut state)
        .unwrap_err()
        .to_string();
    assert!(err.contains("slice_update"), "{err}");
}
