//! Every single-op case of `tests/data/op_cases.json` (expected values computed with numpy by
//! `tools/gen_op_cases.py`) run through the executor: the op is wrapped in a one-op MIL function whose run-time
//! inputs are function inputs and whose other parameters are inline constants.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::{
    Binding, Block, DataType, Function, NamedType, Operation, TensorData, Value, ValueData,
    ValueType,
};
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::{FunctionPlan, ModelState};
use common::{flatten, values};
use serde_json::Value as Json;

fn dtype_of(j: &Json) -> DataType {
    DataType::from_mil_name(j["dtype"].as_str().expect("dtype")).expect("known dtype")
}

fn shape_of(j: &Json) -> Vec<u64> {
    j["shape"]
        .as_array()
        .map(|a| a.iter().map(|d| d.as_u64().expect("dim")).collect())
        .unwrap_or_default()
}

/// The flat data of a JSON tensor as f64 (inf/nan spelled as strings).
fn data_of(j: &Json) -> Vec<f64> {
    flatten(&j["data"]).0
}

/// An inline MIL constant from a JSON tensor or string.
fn mil_value(j: &Json) -> Value {
    let dtype = dtype_of(j);
    if dtype == DataType::String {
        return Value::string(j["data"].as_str().expect("string"));
    }
    let data = data_of(j);
    let payload = if dtype.is_float() {
        TensorData::Float(data)
    } else if dtype == DataType::Bool {
        TensorData::Bool(data.iter().map(|&v| v != 0.0).collect())
    } else {
        TensorData::Int(data.iter().map(|&v| v as i64).collect())
    };
    Value {
        ty: ValueType::tensor(dtype, &shape_of(j)),
        data: ValueData::Tensor(payload),
    }
}

/// A caller-side candle tensor for a JSON tensor (ints as I64, bools as U8; the executor converts).
fn input_tensor(j: &Json) -> Tensor {
    let dtype = dtype_of(j);
    let shape: Vec<usize> = shape_of(j).into_iter().map(|d| d as usize).collect();
    let t = Tensor::from_vec(data_of(j), shape, &Device::Cpu).expect("tensor");
    let target = match dtype {
        DataType::Float16 => DType::F16,
        DataType::Float32 => DType::F32,
        _ => DType::I64,
    };
    t.to_dtype(target).expect("dtype")
}

struct Built {
    function: Function,
    feeds: Vec<(String, Tensor)>,
}

fn build(case: &Json) -> Built {
    let mut inputs = Vec::new();
    let mut feeds = Vec::new();
    let mut op_inputs: BTreeMap<String, Vec<Binding>> = BTreeMap::new();
    if let Some(map) = case["inputs"].as_object() {
        for (param, v) in map {
            let items: Vec<&Json> = match v.as_array() {
                Some(list) => list.iter().collect(),
                None => vec![v],
            };
            let mut bindings = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let name = format!("{param}_{i}");
                inputs.push(NamedType {
                    name: name.clone(),
                    ty: ValueType::tensor(dtype_of(item), &shape_of(item)),
                });
                feeds.push((name.clone(), input_tensor(item)));
                bindings.push(Binding::Name(name));
            }
            op_inputs.insert(param.clone(), bindings);
        }
    }
    if let Some(map) = case["params"].as_object() {
        for (param, v) in map {
            op_inputs.insert(param.clone(), vec![Binding::Value(mil_value(v))]);
        }
    }
    let outs = case
        .get("outputs")
        .or_else(|| case.get("out_types"))
        .and_then(Json::as_array)
        .expect("outputs");
    let outputs: Vec<NamedType> = outs
        .iter()
        .map(|o| NamedType {
            name: o["name"].as_str().expect("name").to_string(),
            ty: ValueType::tensor(dtype_of(o), &shape_of(o)),
        })
        .collect();
    let op = Operation {
        op_type: case["op"].as_str().expect("op").to_string(),
        inputs: op_inputs,
        outputs: outputs.clone(),
        attributes: BTreeMap::from([("name".to_string(), Value::string("op_under_test"))]),
        blocks: Vec::new(),
    };
    let function = Function {
        inputs,
        opset: "CoreML8".to_string(),
        attributes: BTreeMap::new(),
        block: Block {
            inputs: Vec::new(),
            operations: vec![op],
            outputs: outputs.iter().map(|o| o.name.clone()).collect(),
        },
    };
    Built { function, feeds }
}

/// Runs one case; returns a failure message.
fn run_case(case: &Json) -> Option<String> {
    let name = case["name"].as_str().unwrap_or("?");
    let built = build(case);
    let result = FunctionPlan::build(
        name,
        &built.function,
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .and_then(|plan| {
        let feeds: Vec<(&str, &Tensor)> =
            built.feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
        plan.run_named(&feeds, &mut ModelState::new())
    });
    if let Some(expected_error) = case["error"].as_str() {
        return match result {
            Ok(_) => Some(format!(
                "{name}: expected an error containing `{expected_error}`, got outputs"
            )),
            Err(e) if e.to_string().contains(expected_error) => None,
            Err(e) => Some(format!(
                "{name}: expected an error containing `{expected_error}`, got `{e}`"
            )),
        };
    }
    let outs = match result {
        Ok(o) => o,
        Err(e) => return Some(format!("{name}: {e}")),
    };
    let atol = case["atol"].as_f64().unwrap_or(0.0);
    let rtol = case["rtol"].as_f64().unwrap_or(0.0);
    for (want, (_, got)) in case["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .zip(&outs)
    {
        let want_shape: Vec<usize> = shape_of(want).into_iter().map(|d| d as usize).collect();
        if got.dims() != want_shape.as_slice() {
            return Some(format!(
                "{name}: shape {:?}, expected {want_shape:?}",
                got.dims()
            ));
        }
        let got = values(got);
        for (i, (&g, &w)) in got.iter().zip(&data_of(want)).enumerate() {
            let ok = if w.is_nan() {
                g.is_nan()
            } else if w.is_infinite() {
                g == w
            } else {
                // serde_json's default float parsing may be 1 ulp off in f64, hence the 1e-12 floor.
                (g - w).abs() <= atol + rtol.max(1e-12) * w.abs()
            };
            if !ok {
                return Some(format!(
                    "{name}: element {i} is {g}, expected {w} (atol {atol}, rtol {rtol})"
                ));
            }
        }
    }
    None
}

#[test]
fn op_cases_match_numpy() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/op_cases.json");
    let all: Json =
        serde_json::from_str(&std::fs::read_to_string(path).expect("op_cases.json")).expect("json");
    let cases = all["cases"].as_array().expect("cases");
    assert!(cases.len() > 300, "expected the generated case set");
    let failures: Vec<String> = cases.iter().filter_map(run_case).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
