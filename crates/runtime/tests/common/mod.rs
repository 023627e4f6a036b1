//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::{
    Binding, Block, DataType, Function, NamedType, Operation, TensorData, Value as MilValue,
    ValueData, ValueType,
};
use serde_json::Value;

/// Path of a file under the repository's `fixtures/` directory.
pub fn fixture(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).join(rel)
}

/// Reads a JSON file.
pub fn read_json(path: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Flattens a nested JSON array of numbers into values and a shape.
pub fn flatten(v: &Value) -> (Vec<f64>, Vec<usize>) {
    fn walk(v: &Value, depth: usize, shape: &mut Vec<usize>, out: &mut Vec<f64>) {
        match v {
            Value::Array(items) => {
                if shape.len() <= depth {
                    shape.push(items.len());
                }
                for item in items {
                    walk(item, depth + 1, shape, out);
                }
            }
            Value::Number(n) => out.push(n.as_f64().expect("number")),
            Value::Bool(b) => out.push(if *b { 1.0 } else { 0.0 }),
            Value::String(s) if s == "-inf" => out.push(f64::NEG_INFINITY),
            Value::String(s) if s == "inf" => out.push(f64::INFINITY),
            Value::String(s) if s == "nan" => out.push(f64::NAN),
            other => panic!("unexpected JSON value {other}"),
        }
    }
    let mut shape = Vec::new();
    let mut out = Vec::new();
    walk(v, 0, &mut shape, &mut out);
    (out, shape)
}

/// A tensor of `dtype` from a nested JSON array.
pub fn json_tensor(v: &Value, dtype: DType) -> Tensor {
    let (values, shape) = flatten(v);
    Tensor::from_vec(values, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(dtype))
        .expect("tensor")
}

/// All values of a tensor as f64, row-major.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// Largest absolute difference (NaN/inf must agree exactly).
pub fn max_abs_diff(got: &[f64], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len(), "element counts differ");
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            if w.is_nan() {
                if g.is_nan() {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else if w.is_infinite() {
                if g == w {
                    0.0
                } else {
                    f64::INFINITY
                }
            } else {
                (g - w).abs()
            }
        })
        .fold(0.0, f64::max)
}

/// A constant int32 vector binding.
pub fn ints(v: &[i64]) -> Binding {
    Binding::Value(MilValue {
        ty: ValueType::tensor(DataType::Int32, &[v.len() as u64]),
        data: ValueData::Tensor(TensorData::Int(v.to_vec())),
    })
}

/// A constant bool scalar binding.
pub fn boolean(b: bool) -> Binding {
    Binding::Value(MilValue {
        ty: ValueType::scalar(DataType::Bool),
        data: ValueData::Tensor(TensorData::Bool(vec![b])),
    })
}

/// A binding to the value named `n`.
pub fn name(n: &str) -> Binding {
    Binding::Name(n.to_string())
}

/// An operation with single-binding inputs and one output of type `dtype` and shape `output.1`.
pub fn op(
    op_type: &str,
    inputs: &[(&str, Binding)],
    output: (&str, &[u64]),
    dtype: DataType,
) -> Operation {
    Operation {
        op_type: op_type.to_string(),
        inputs: inputs
            .iter()
            .map(|(k, b)| (k.to_string(), vec![b.clone()]))
            .collect(),
        outputs: vec![NamedType {
            name: output.0.to_string(),
            ty: ValueType::tensor(dtype, output.1),
        }],
        attributes: BTreeMap::new(),
        blocks: Vec::new(),
    }
}

/// A CoreML8 function of `inputs` running `operations` and returning the values named in `outputs`.
pub fn function(inputs: Vec<NamedType>, operations: Vec<Operation>, outputs: &[&str]) -> Function {
    Function {
        inputs,
        opset: "CoreML8".into(),
        attributes: BTreeMap::new(),
        block: Block {
            inputs: Vec::new(),
            operations,
            outputs: outputs.iter().map(|o| o.to_string()).collect(),
        },
    }
}
