//! Grouped-query attention: `matmul(x, reshape(tile(expand_dims(kv, 1), [1, R, 1, 1]), [1, G*R, S, D]))` is run
//! without materialising the repeated KV heads; the results must equal the definition (query head h uses KV head
//! h / R), computed here with plain loops, on the fast path and on the fallback for other `x` shapes.

mod common;

use candle_core::{Device, Tensor};
use candle_coreml_format::mil::{DataType, Function, NamedType, ValueType};
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::FunctionPlan;
use common::{boolean, function, ints, name, op, values};

const G: usize = 2;
const R: usize = 2;
const S: usize = 3;
const D: usize = 2;

fn dims(v: &[usize]) -> Vec<u64> {
    v.iter().map(|&d| d as u64).collect()
}

/// x: input of shape `x_shape`; kv: input [G, S, D]; out = matmul(x, repeated kv, transpose_y); all of `dtype`.
fn program(x_shape: &[usize], transpose_y: bool, out_shape: &[usize], dtype: DataType) -> Function {
    let (g, r, s, d) = (G as u64, R as u64, S as u64, D as u64);
    // A rank-3 x multiplies the repeated KV reshaped to rank 3.
    let (reshape_to, repeated): (Vec<i64>, Vec<u64>) = if x_shape.len() == 3 {
        (vec![-1, S as i64, D as i64], vec![g * r, s, d])
    } else {
        (vec![1, -1, S as i64, D as i64], vec![1, g * r, s, d])
    };
    let ops = vec![
        op(
            "expand_dims",
            &[("x", name("kv")), ("axes", ints(&[1]))],
            ("e", &[g, 1, s, d]),
            dtype,
        ),
        op(
            "tile",
            &[("x", name("e")), ("reps", ints(&[1, R as i64, 1, 1]))],
            ("t", &[g, r, s, d]),
            dtype,
        ),
        op(
            "reshape",
            &[("x", name("t")), ("shape", ints(&reshape_to[..]))],
            ("y", &repeated[..]),
            dtype,
        ),
        op(
            "matmul",
            &[
                ("x", name("x")),
                ("y", name("y")),
                ("transpose_x", boolean(false)),
                ("transpose_y", boolean(transpose_y)),
            ],
            ("out", &dims(out_shape)),
            dtype,
        ),
    ];
    function(
        vec![
            NamedType {
                name: "x".into(),
                ty: ValueType::tensor(dtype, &dims(x_shape)),
            },
            NamedType {
                name: "kv".into(),
                ty: ValueType::tensor(dtype, &[g, s, d]),
            },
        ],
        ops,
        &["out"],
    )
}

/// Distinct small values 1, 2, 3, ... (exact in f32 products and sums).
fn ramp(shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (1..=n).map(|i| i as f32 * scale).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// Runs the program for `x` of shape [B, G*R, T, K] (B = 0: rank-3 `x [G*R, T, K]`) and checks it against the
/// definition (exactly in f32; in fp16, within the rounding of the fp16 result).
fn check(batch: usize, t: usize, transpose_y: bool, dtype: DataType) {
    let (k, n) = if transpose_y { (D, S) } else { (S, D) };
    let lead = usize::from(batch == 0);
    let x_shape = &[batch, G * R, t, k][lead..];
    let out_shape = &[batch, G * R, t, n][lead..];
    let batch = batch.max(1);
    let plan = FunctionPlan::build(
        "f",
        &program(x_shape, transpose_y, out_shape, dtype),
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(plan.fused_repeated_kv(), 1);
    assert_eq!(
        plan.step_count(),
        1,
        "expand_dims, tile and reshape are gone"
    );
    let x = ramp(x_shape, 1.0);
    let kv = ramp(&[G, S, D], 0.5);
    let mut state = plan.make_state().unwrap();
    let out = plan
        .run_named(&[("x", &x), ("kv", &kv)], &mut state)
        .unwrap();
    assert_eq!(out[0].1.dims(), out_shape);
    let xv = values(&x);
    let kvv = values(&kv);
    let mut expected = Vec::new();
    for b in 0..batch {
        for h in 0..G * R {
            let group = h / R;
            for row in 0..t {
                for col in 0..n {
                    let mut acc = 0.0;
                    for i in 0..k {
                        let xe = xv[((b * G * R + h) * t + row) * k + i];
                        let (si, di) = if transpose_y { (col, i) } else { (i, col) };
                        acc += xe * kvv[(group * S + si) * D + di];
                    }
                    expected.push(acc);
                }
            }
        }
    }
    let got = values(&out[0].1);
    if dtype == DataType::Float32 {
        assert_eq!(got, expected);
    } else {
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= e.abs() / 1024.0, "{g} vs {e}");
        }
    }
}

#[test]
fn keys_transposed_one_query_row() {
    check(1, 1, true, DataType::Float32);
    check(1, 1, true, DataType::Float16);
}

#[test]
fn keys_transposed_several_query_rows() {
    check(1, 3, true, DataType::Float32);
    check(1, 3, true, DataType::Float16);
}

#[test]
fn values_one_query_row() {
    check(1, 1, false, DataType::Float32);
    check(1, 1, false, DataType::Float16);
}

#[test]
fn values_several_query_rows() {
    check(1, 2, false, DataType::Float32);
    check(1, 2, false, DataType::Float16);
}

#[test]
fn a_query_batch_of_two_falls_back_to_repeating() {
    check(2, 2, true, DataType::Float32);
    check(2, 2, true, DataType::Float16);
}

#[test]
fn many_query_rows_in_fp16_use_the_widened_head() {
    check(1, 5, true, DataType::Float16);
    check(1, 5, false, DataType::Float16);
}

#[test]
fn rank_three_queries_use_the_rank_three_repeat() {
    for dtype in [DataType::Float32, DataType::Float16] {
        check(0, 3, false, dtype);
        check(0, 5, true, dtype);
    }
}
