//! Blob contents decoded from the fixture packages agree with the values the fixtures were built from
//! (`fixtures/mil/expected.json` and the documented `linspace(-1, 1, 2048).reshape(32, 64)` weight).

use std::path::Path;

use candle_coreml_format::mil::{Binding, BlobRef, Operation, TensorData, ValueData};
use candle_coreml_format::ModelFile;

fn mil(name: &str) -> ModelFile {
    let p = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/mil")).join(name);
    ModelFile::open(&p).unwrap_or_else(|e| panic!("{e}"))
}

fn op<'a>(m: &'a ModelFile, function: &str, output: &str) -> &'a Operation {
    m.program.functions[function]
        .block
        .operations
        .iter()
        .find(|o| o.outputs.first().is_some_and(|n| n.name == output))
        .unwrap_or_else(|| panic!("no op producing {output}"))
}

fn blob_of<'a>(o: &'a Operation, param: &str) -> &'a BlobRef {
    match &o.constant(param).expect("constant").data {
        ValueData::Blob(b) => b,
        other => panic!("{param} is not a blob: {other:?}"),
    }
}

fn linspace_weight() -> Vec<f64> {
    let step = 2.0 / 2047.0;
    (0..2048)
        .map(|i| {
            if i == 2047 {
                1.0
            } else {
                -1.0 + i as f64 * step
            }
        })
        .collect()
}

#[test]
fn uint2_palettized_weight_matches_expected_dequantized_values() {
    let m = mil("stateful_kv_update.mlpackage");
    let lut_op = op(&m, "main", "proj_w_palettized");
    assert_eq!(lut_op.op_type, "constexpr_lut_to_dense");
    let indices = m.weights.resolve(blob_of(lut_op, "indices")).unwrap();
    let indices = indices.unpack_unsigned().unwrap();
    assert_eq!(indices.len(), 4 * 64);
    let lut = match &lut_op.inputs["lut"][..] {
        [Binding::Value(v)] => match &v.data {
            ValueData::Tensor(TensorData::Float(f)) => f.clone(),
            other => panic!("lut: {other:?}"),
        },
        other => panic!("lut: {other:?}"),
    };
    assert_eq!(lut.len(), 4);
    let dense: Vec<f64> = indices.iter().map(|&i| lut[i as usize]).collect();

    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/mil/expected.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let w: Vec<Vec<f64>> =
        serde_json::from_value(expected["stateful_kv_update_weights"]["W_dequantized"].clone())
            .unwrap();
    let w: Vec<f64> = w.into_iter().flatten().collect();
    assert_eq!(dense, w);
}

#[test]
fn multifunction_weights_hold_the_linspace_matrix() {
    let reference = linspace_weight();
    let direct = mil("multifunction_direct.mlpackage");
    let relu = blob_of(op(&direct, "relu_fn", "lin_a_weight_0"), "val");
    let gelu = blob_of(op(&direct, "gelu_fn", "lin_b_weight_0"), "val");
    assert_ne!(
        relu.offset, gelu.offset,
        "multifunction_direct stores the weight twice"
    );
    for r in [relu, gelu] {
        let values = direct.weights.resolve(r).unwrap();
        let values = values.as_f32().unwrap();
        assert_eq!(values.len(), 2048);
        for (a, b) in values.iter().zip(&reference) {
            assert!((f64::from(*a) - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }

    let saved = mil("multifunction_saved.mlpackage");
    let infer = blob_of(op(&saved, "infer", "out_weight_0"), "val");
    let prefill = blob_of(op(&saved, "prefill", "out_weight_0"), "val");
    assert_eq!(infer, prefill, "multifunction_saved stores the weight once");
    let values = saved.weights.resolve(infer).unwrap();
    for (a, b) in values.as_f16().unwrap().iter().zip(&reference) {
        assert!((a.to_f64() - b).abs() <= 5e-4, "{a} vs {b}");
    }
}
