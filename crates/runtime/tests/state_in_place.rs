//! In-place state updates (`read_state` -> `slice_update` -> `write_state` fused by the planner) must never be
//! observable: values that still view the old buffer keep their contents, and tensors handed to the caller are not
//! modified by later calls.

mod common;

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::{
    Binding, DataType, Function, NamedType, Operation, TensorData, Value, ValueData, ValueType,
};
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::{CoreMLModel, FunctionPlan};
use common::{fixture, function, values};

fn ints(v: &[i64]) -> Binding {
    Binding::Value(Value {
        ty: ValueType::tensor(DataType::Int32, &[v.len() as u64]),
        data: ValueData::Tensor(TensorData::Int(v.to_vec())),
    })
}

fn name(n: &str) -> Binding {
    Binding::Name(n.to_string())
}

fn op(op_type: &str, inputs: &[(&str, Binding)], outputs: &[(&str, &[u64])]) -> Operation {
    Operation {
        op_type: op_type.to_string(),
        inputs: inputs
            .iter()
            .map(|(k, b)| (k.to_string(), vec![b.clone()]))
            .collect(),
        outputs: outputs
            .iter()
            .map(|(n, shape)| NamedType {
                name: n.to_string(),
                ty: ValueType::tensor(DataType::Float32, shape),
            })
            .collect(),
        attributes: BTreeMap::new(),
        blocks: Vec::new(),
    }
}

/// s: state [2, 3]; u: input [1, 3]. r = read_state(s); v = reshape(r, [6]) (a view of the buffer);
/// y = slice_update(r, u, begin=[row,0], end=[row+1,3]); write_state(s, y); out = add(v, 0) uses v afterwards.
fn program(view_used_after_update: bool) -> Function {
    let mut ops = vec![
        op("read_state", &[("input", name("s"))], &[("r", &[2, 3])]),
        op(
            "reshape",
            &[("x", name("r")), ("shape", ints(&[6]))],
            &[("v", &[6])],
        ),
        op(
            "slice_update",
            &[
                ("x", name("r")),
                ("update", name("u")),
                ("begin", ints(&[1, 0])),
                ("end", ints(&[2, 3])),
            ],
            &[("y", &[2, 3])],
        ),
        op(
            "write_state",
            &[("input", name("s")), ("data", name("y"))],
            &[],
        ),
    ];
    let zero = Binding::Value(Value {
        ty: ValueType::scalar(DataType::Float32),
        data: ValueData::Tensor(TensorData::Float(vec![0.0])),
    });
    let out_src = if view_used_after_update { "v" } else { "u" };
    let out_shape: &[u64] = if view_used_after_update {
        &[6]
    } else {
        &[1, 3]
    };
    ops.push(op(
        "add",
        &[("x", name(out_src)), ("y", zero)],
        &[("out", out_shape)],
    ));
    function(
        vec![
            NamedType {
                name: "u".into(),
                ty: ValueType::tensor(DataType::Float32, &[1, 3]),
            },
            NamedType {
                name: "s".into(),
                ty: ValueType::State(Box::new(ValueType::tensor(DataType::Float32, &[2, 3]))),
            },
        ],
        ops,
        &["out"],
    )
}

#[test]
fn a_live_view_of_the_old_buffer_blocks_the_in_place_update() {
    let plan = FunctionPlan::build(
        "f",
        &program(true),
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(plan.fused_state_updates(), 0);
    let mut state = plan.make_state().unwrap();
    state
        .set(
            "s",
            Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu).unwrap(),
        )
        .unwrap();
    let u = Tensor::new(&[[7f32, 8., 9.]], &Device::Cpu).unwrap();
    let out = plan.run_named(&[("u", &u)], &mut state).unwrap();
    assert_eq!(
        values(&out[0].1),
        [1., 2., 3., 4., 5., 6.],
        "the view must see the contents before the update"
    );
    assert_eq!(values(state.get("s").unwrap()), [1., 2., 3., 7., 8., 9.]);
}

#[test]
fn views_read_from_the_state_do_not_force_copies_once_dead() {
    let plan = FunctionPlan::build(
        "f",
        &program(false),
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(plan.fused_state_updates(), 1);
    let mut state = plan.make_state().unwrap();
    for row in [7f32, 10.] {
        let u = Tensor::new(&[[row, row + 1., row + 2.]], &Device::Cpu).unwrap();
        plan.run_named(&[("u", &u)], &mut state).unwrap();
    }
    assert_eq!(
        state.buffer_copies(),
        0,
        "the read's views were dead at each update, so the buffer is updated without a copy"
    );
    let snapshot = state.get("s").unwrap().clone();
    assert_eq!(values(&snapshot), [0., 0., 0., 10., 11., 12.]);
    let u = Tensor::new(&[[1f32, 2., 3.]], &Device::Cpu).unwrap();
    plan.run_named(&[("u", &u)], &mut state).unwrap();
    assert_eq!(
        state.buffer_copies(),
        1,
        "a tensor from get() shares the buffer"
    );
    assert_eq!(values(&snapshot), [0., 0., 0., 10., 11., 12.]);
    assert_eq!(values(state.get("s").unwrap()), [0., 0., 0., 1., 2., 3.]);
}

#[test]
fn caller_tensors_are_not_modified_by_in_place_updates() {
    let plan = FunctionPlan::build(
        "f",
        &program(false),
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(plan.fused_state_updates(), 1);
    let mut state = plan.make_state().unwrap();
    let given = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu).unwrap();
    state.set("s", given.clone()).unwrap();
    let u = Tensor::new(&[[7f32, 8., 9.]], &Device::Cpu).unwrap();
    plan.run_named(&[("u", &u)], &mut state).unwrap();
    assert_eq!(
        values(&given),
        [1., 2., 3., 4., 5., 6.],
        "the tensor passed to set() changed"
    );
    let snapshot = state.get("s").unwrap().clone();
    let cloned_state = state.clone();
    let u2 = Tensor::new(&[[10f32, 11., 12.]], &Device::Cpu).unwrap();
    plan.run_named(&[("u", &u2)], &mut state).unwrap();
    assert_eq!(
        values(&snapshot),
        [1., 2., 3., 7., 8., 9.],
        "a tensor returned by get() changed"
    );
    assert_eq!(
        values(cloned_state.get("s").unwrap()),
        [1., 2., 3., 7., 8., 9.],
        "a cloned state changed"
    );
    assert_eq!(values(state.get("s").unwrap()), [1., 2., 3., 10., 11., 12.]);
}

#[test]
fn kv_fixture_updates_in_place_and_keeps_snapshots() {
    let model = CoreMLModel::load(fixture("mil/stateful_kv_update.mlpackage")).unwrap();
    assert_eq!(model.plan().fused_state_updates(), 1);
    let mut state = model.make_state().unwrap();
    let x = Tensor::ones((1, 64), DType::F16, &Device::Cpu).unwrap();
    let pos0 = Tensor::new(&[0i32], &Device::Cpu).unwrap();
    model
        .predict_with_state(&[("x", &x), ("pos", &pos0)], &mut state)
        .unwrap();
    let before = values(state.get("kv").unwrap());
    let snapshot = state.get("kv").unwrap().clone();
    let pos5 = Tensor::new(&[5i32], &Device::Cpu).unwrap();
    model
        .predict_with_state(&[("x", &x), ("pos", &pos5)], &mut state)
        .unwrap();
    assert_eq!(values(&snapshot), before);
    assert_ne!(values(state.get("kv").unwrap()), before);
}

#[test]
fn reset_zeroes_every_state_and_keeps_snapshots() {
    let model = CoreMLModel::load(fixture("mil/stateful_accumulator.mlpackage")).unwrap();
    let mut state = model.make_state().unwrap();
    let x = Tensor::new(&[[1f32, 2., 3., 4.]], &Device::Cpu).unwrap();
    model.predict_with_state(&[("x", &x)], &mut state).unwrap();
    let snapshot = state.get("acc").unwrap().clone();
    state.reset().unwrap();
    assert_eq!(values(&snapshot), [1., 2., 3., 4.]);
    assert_eq!(values(state.get("acc").unwrap()), [0., 0., 0., 0.]);
    let y = model.predict_with_state(&[("x", &x)], &mut state).unwrap();
    assert_eq!(values(&y[0].1), [1., 2., 3., 4.]);
}
