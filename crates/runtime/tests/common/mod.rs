//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
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
