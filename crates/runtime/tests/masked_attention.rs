//! Grouped-query attention whose softmax mask closes trailing KV positions: the score and value products skip
//! those positions (`FunctionPlan::masked_kv_products`), and the result must equal the definition computed here
//! in f64 — `softmax(q·kᵀ·scale + mask)·v` with query head h reading KV head h / R — even though the skipped
//! positions hold keys and values that would change it if they were read.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::{
    Binding, DataType, Function, NamedType, TensorData, Value, ValueData, ValueType,
};
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::FunctionPlan;
use common::{boolean, function, ints, name, op, values};

const G: usize = 2;
const R: usize = 2;
const H: usize = G * R;
const S: usize = 8;
const D: usize = 16;
const SCALE: f64 = 0.25;

fn scalar(v: f64) -> Binding {
    Binding::Value(Value {
        ty: ValueType::scalar(DataType::Float16),
        data: ValueData::Tensor(TensorData::Float(vec![v])),
    })
}

fn input(n: &str, shape: &[usize]) -> NamedType {
    let dims: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    NamedType {
        name: n.into(),
        ty: ValueType::tensor(DataType::Float16, &dims),
    }
}

/// `softmax(matmul(q, repeat(k), transpose_y) * SCALE + mask) @ repeat(v)` for `t` query rows, in fp16.
fn program(t: usize) -> Function {
    let f16 = DataType::Float16;
    let (g, r, s, d, h, t64) = (G as u64, R as u64, S as u64, D as u64, H as u64, t as u64);
    let mut ops = Vec::new();
    for kv in ["k", "v"] {
        ops.push(op(
            "expand_dims",
            &[("x", name(kv)), ("axes", ints(&[1]))],
            (&format!("{kv}_e"), &[g, 1, s, d]),
            f16,
        ));
        ops.push(op(
            "tile",
            &[
                ("x", name(&format!("{kv}_e"))),
                ("reps", ints(&[1, R as i64, 1, 1])),
            ],
            (&format!("{kv}_t"), &[g, r, s, d]),
            f16,
        ));
        ops.push(op(
            "reshape",
            &[
                ("x", name(&format!("{kv}_t"))),
                ("shape", ints(&[1, H as i64, S as i64, D as i64])),
            ],
            (&format!("{kv}_rep"), &[1, h, s, d]),
            f16,
        ));
    }
    ops.push(op(
        "matmul",
        &[
            ("x", name("q")),
            ("y", name("k_rep")),
            ("transpose_x", boolean(false)),
            ("transpose_y", boolean(true)),
        ],
        ("scores", &[1, h, t64, s]),
        f16,
    ));
    ops.push(op(
        "mul",
        &[("x", name("scores")), ("y", scalar(SCALE))],
        ("scaled", &[1, h, t64, s]),
        f16,
    ));
    ops.push(op(
        "add",
        &[("x", name("scaled")), ("y", name("mask"))],
        ("masked", &[1, h, t64, s]),
        f16,
    ));
    ops.push(op(
        "softmax",
        &[("x", name("masked")), ("axis", ints(&[-1]))],
        ("probs", &[1, h, t64, s]),
        f16,
    ));
    ops.push(op(
        "matmul",
        &[
            ("x", name("probs")),
            ("y", name("v_rep")),
            ("transpose_x", boolean(false)),
            ("transpose_y", boolean(false)),
        ],
        ("out", &[1, h, t64, d]),
        f16,
    ));
    function(
        vec![
            input("q", &[1, H, t, D]),
            input("k", &[G, S, D]),
            input("v", &[G, S, D]),
            input("mask", &[1, 1, t, S]),
        ],
        ops,
        &["out"],
    )
}

/// fp16 tensor of `shape` with values `f(flat index)`.
fn tensor(shape: &[usize], f: impl Fn(usize) -> f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| f(i) as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
        .and_then(|t| t.to_dtype(DType::F16))
        .unwrap()
}

/// Query row `i` sees KV positions `0..open[i]`; positions from `open.max()` on hold keys and values far larger
/// than the others, so reading them would show.
fn check(open: &[usize]) {
    let t = open.len();
    let plan =
        FunctionPlan::build("f", &program(t), None, &ConstCache::default(), &Device::Cpu).unwrap();
    assert_eq!(
        plan.masked_kv_products(),
        2,
        "both products skip closed positions"
    );
    let used = open.iter().copied().max().unwrap();
    let big = |j: usize| if j >= used { 300.0 } else { 1.0 };
    let q = tensor(&[1, H, t, D], |i| ((i * 7 % 11) as f64 - 5.0) / 8.0);
    let k = tensor(&[G, S, D], |i| {
        big(i / D % S) * ((i * 5 % 13) as f64 - 6.0) / 16.0
    });
    let v = tensor(&[G, S, D], |i| {
        big(i / D % S) * ((i * 3 % 7) as f64 - 3.0) / 4.0
    });
    let mask = tensor(&[1, 1, t, S], |i| {
        if i % S < open[i / S] {
            0.0
        } else {
            f64::NEG_INFINITY
        }
    });
    let mut state = plan.make_state().unwrap();
    let out = plan
        .run_named(
            &[("q", &q), ("k", &k), ("v", &v), ("mask", &mask)],
            &mut state,
        )
        .unwrap();
    let (qv, kv, vv) = (values(&q), values(&k), values(&v));
    let got = values(&out[0].1);
    for head in 0..H {
        let group = head / R;
        for row in 0..t {
            let qr = &qv[(head * t + row) * D..(head * t + row + 1) * D];
            let scores: Vec<f64> = (0..open[row])
                .map(|j| {
                    let kr = &kv[(group * S + j) * D..(group * S + j + 1) * D];
                    qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() * SCALE
                })
                .collect();
            let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
            let total: f64 = weights.iter().sum();
            for c in 0..D {
                let want: f64 = weights
                    .iter()
                    .enumerate()
                    .map(|(j, w)| w / total * vv[(group * S + j) * D + c])
                    .sum();
                let g = got[(head * t + row) * D + c];
                assert!(
                    (g - want).abs() <= 0.01 + want.abs() / 64.0,
                    "head {head} row {row} col {c}: {g} vs {want}"
                );
            }
        }
    }
}

#[test]
fn one_query_row_reads_only_the_open_positions() {
    check(&[5]);
}

#[test]
fn causal_rows_read_up_to_the_last_open_position() {
    check(&[3, 4, 5, 6]);
}

#[test]
fn several_rows_use_the_widened_head_path() {
    check(&[1, 2, 3, 4, 5, 6]);
}
