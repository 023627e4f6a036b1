//! 8-bit quantized weights (`constexpr_blockwise_shift_scale` feeding a `linear`, `constexpr_affine_dequantize`
//! feeding a 1×1 `conv`) are kept packed and dequantized inside the product; the results must equal the
//! definition computed here: `w = fp16(scale · (q − offset))` per element, then `Σ w · x` in f64.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::{
    Binding, DataType, NamedType, Operation, TensorData, Value, ValueData, ValueType,
};
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::FunctionPlan;
use common::{function, name, values};

fn ints(dtype: DataType, shape: &[u64], v: Vec<i64>) -> Binding {
    Binding::Value(Value {
        ty: ValueType::tensor(dtype, shape),
        data: ValueData::Tensor(TensorData::Int(v)),
    })
}

fn halves(shape: &[u64], v: &[f32]) -> Binding {
    Binding::Value(Value {
        ty: ValueType::tensor(DataType::Float16, shape),
        data: ValueData::Tensor(TensorData::Float(
            v.iter()
                .map(|&x| f64::from(half::f16::from_f32(x).to_f32()))
                .collect(),
        )),
    })
}

fn operation(op_type: &str, inputs: Vec<(&str, Binding)>, out: &str, shape: &[u64]) -> Operation {
    Operation {
        op_type: op_type.into(),
        inputs: inputs
            .into_iter()
            .map(|(k, b)| (k.to_string(), vec![b]))
            .collect(),
        outputs: vec![NamedType {
            name: out.into(),
            ty: ValueType::tensor(DataType::Float16, shape),
        }],
        attributes: BTreeMap::new(),
        blocks: Vec::new(),
    }
}

fn input(n: &str, shape: &[u64]) -> NamedType {
    NamedType {
        name: n.into(),
        ty: ValueType::tensor(DataType::Float16, shape),
    }
}

/// Runs `f` on `x` and checks it is packed and equals `Σ_c w(r, c) · x[c, j]` (`x` as `[cols, m]`).
fn check(
    f: candle_coreml_format::mil::Function,
    x: Tensor,
    rows: usize,
    w: impl Fn(usize, usize) -> f32,
) {
    let plan = FunctionPlan::build("f", &f, None, &ConstCache::default(), &Device::Cpu).unwrap();
    assert_eq!(plan.packed_weights(), 1, "the quantized weight is packed");
    let mut state = plan.make_state().unwrap();
    let out = plan.run_named(&[("x", &x)], &mut state).unwrap();
    let got = values(&out[0].1);
    let xs = values(&x);
    let cols = xs.len() / (got.len() / rows);
    let m = xs.len() / cols;
    for r in 0..rows {
        for j in 0..m {
            let want: f64 = (0..cols).map(|c| f64::from(w(r, c)) * xs[c * m + j]).sum();
            let g = got[r * m + j];
            assert!(
                (g - want).abs() <= 1e-3 + want.abs() / 512.0,
                "row {r} col {j}: {g} vs {want}"
            );
        }
    }
}

#[test]
fn blockwise_int8_linear_weight() {
    let (rows, cols, groups) = (8usize, 64usize, 2usize);
    let q: Vec<i64> = (0..rows * cols)
        .map(|i| (i as i64 * 37) % 255 - 127)
        .collect();
    let scale: Vec<f32> = (0..rows * groups)
        .map(|i| 0.002 + i as f32 * 0.0007)
        .collect();
    let offset: Vec<i64> = (0..rows * groups).map(|i| i as i64 % 5 - 2).collect();
    let ops = vec![
        operation(
            "constexpr_blockwise_shift_scale",
            vec![
                ("data", ints(DataType::Int8, &[8, 64], q.clone())),
                ("scale", halves(&[8, 2], &scale)),
                ("offset", ints(DataType::Int8, &[8, 2], offset.clone())),
            ],
            "w",
            &[8, 64],
        ),
        operation(
            "linear",
            vec![("x", name("x")), ("weight", name("w"))],
            "out",
            &[1, 8],
        ),
    ];
    let f = function(vec![input("x", &[1, 64])], ops, &["out"]);
    let x = Tensor::from_vec(
        (0..cols)
            .map(|i| (i % 9) as f32 / 4.0 - 1.0)
            .collect::<Vec<_>>(),
        (1, cols),
        &Device::Cpu,
    )
    .and_then(|t| t.to_dtype(DType::F16))
    .unwrap();
    check(f, x, rows, |r, c| {
        let b = r * groups + c / (cols / groups);
        let s = half::f16::from_f32(scale[b]).to_f32();
        half::f16::from_f32(s * (q[r * cols + c] as f32 - offset[b] as f32)).to_f32()
    });
}

#[test]
fn affine_uint8_pointwise_conv_weight() {
    let (rows, cols, len) = (8usize, 32usize, 3usize);
    let q: Vec<i64> = (0..rows * cols).map(|i| (i as i64 * 53) % 256).collect();
    let zero: Vec<i64> = (0..rows).map(|i| 120 + i as i64).collect();
    let scale: Vec<f32> = (0..rows).map(|i| 0.01 - i as f32 * 0.0005).collect();
    let ops = vec![
        operation(
            "constexpr_affine_dequantize",
            vec![
                (
                    "quantized_data",
                    ints(DataType::UInt8, &[8, 32, 1, 1], q.clone()),
                ),
                ("zero_point", ints(DataType::UInt8, &[8], zero.clone())),
                ("scale", halves(&[8], &scale)),
                ("axis", ints(DataType::Int32, &[], vec![0])),
            ],
            "w",
            &[8, 32, 1, 1],
        ),
        operation(
            "conv",
            vec![("x", name("x")), ("weight", name("w"))],
            "out",
            &[1, 8, 1, 3],
        ),
    ];
    let f = function(vec![input("x", &[1, 32, 1, 3])], ops, &["out"]);
    let x = Tensor::from_vec(
        (0..cols * len)
            .map(|i| (i % 7) as f32 / 3.0 - 1.0)
            .collect::<Vec<_>>(),
        (1, cols, 1, len),
        &Device::Cpu,
    )
    .and_then(|t| t.to_dtype(DType::F16))
    .unwrap();
    check(f, x, rows, |r, c| {
        let s = half::f16::from_f32(scale[r]).to_f32();
        half::f16::from_f32(s * (q[r * cols + c] as f32 - zero[r] as f32)).to_f32()
    });
}
