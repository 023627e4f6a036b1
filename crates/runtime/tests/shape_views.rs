//! `expand_dims` and `squeeze` return views of strided inputs (no copy); the values seen through them must be
//! those of the definition, also when an op reads the view without making it contiguous first.

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::text::parse_program;
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::FunctionPlan;

/// `x [2, 3, 4]` -> transpose to `[4, 2, 3]` -> expand_dims at 1 and 3 -> `[4, 1, 2, 1, 3]` -> add `y [3]` ->
/// squeeze axes 1 and 3 -> `[4, 2, 3]`, also returned before the squeeze.
const PROGRAM: &str = "program(1.3)
{
    func main<ios18>(tensor<fp32, [2, 3, 4]> x, tensor<fp32, [3]> y) {
            tensor<fp32, [4, 2, 3]> t = transpose(perm = tensor<int32, [3]>([2, 0, 1]), x = x);
            tensor<fp32, [4, 1, 2, 1, 3]> e = expand_dims(axes = tensor<int32, [2]>([1, 3]), x = t);
            tensor<fp32, [4, 1, 2, 1, 3]> s = add(x = e, y = y);
            tensor<fp32, [4, 2, 3]> q = squeeze(axes = tensor<int32, [2]>([3, 1]), x = s);
            tensor<fp32, [4, 2, 3]> r = squeeze(axes = tensor<int32, [2]>([1, 3]), x = e);
        } -> (q, r, e);
}";

#[test]
fn expand_dims_and_squeeze_of_a_transposed_tensor() {
    let program = parse_program(PROGRAM).unwrap();
    let plan = FunctionPlan::build(
        "main",
        &program.functions["main"],
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap();
    let xs: Vec<f32> = (0..24).map(|i| i as f32).collect();
    let x = Tensor::from_vec(xs.clone(), (2, 3, 4), &Device::Cpu).unwrap();
    let y = Tensor::from_vec(vec![100f32, 200.0, 300.0], 3, &Device::Cpu).unwrap();
    let mut state = plan.make_state().unwrap();
    let out = plan.run_named(&[("x", &x), ("y", &y)], &mut state).unwrap();
    let values = |t: &Tensor| -> Vec<f32> {
        t.to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    // t[a, b, c] = x[b, c, a].
    let mut t = Vec::new();
    for a in 0..4 {
        for b in 0..2 {
            for c in 0..3 {
                t.push(xs[(b * 3 + c) * 4 + a]);
            }
        }
    }
    let q: Vec<f32> = t
        .iter()
        .enumerate()
        .map(|(i, v)| v + [100.0, 200.0, 300.0][i % 3])
        .collect();
    assert_eq!(out[0].1.dims(), [4, 2, 3]);
    assert_eq!(values(&out[0].1), q);
    assert_eq!(out[1].1.dims(), [4, 2, 3]);
    assert_eq!(values(&out[1].1), t);
    assert_eq!(out[2].1.dims(), [4, 1, 2, 1, 3]);
    assert_eq!(values(&out[2].1), t);
}
