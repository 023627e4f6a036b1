use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::text::parse_program;
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::FunctionPlan;

fn plan(text: &str) -> FunctionPlan {
    let program = parse_program(text).unwrap();
    FunctionPlan::build(
        "main",
        &program.functions["main"],
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap()
}
fn t(dims: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, dims, &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap()
}
fn time(name: &str, p: &FunctionPlan, inputs: &[(&str, &Tensor)]) {
    let mut st = p.make_state().unwrap();
    for _ in 0..100 {
        p.run_named(inputs, &mut st).unwrap();
    }
    let n = 2000;
    let s = std::time::Instant::now();
    for _ in 0..n {
        p.run_named(inputs, &mut st).unwrap();
    }
    println!(
        "{name}: {:.2} us (steps {})",
        s.elapsed().as_secs_f64() * 1e6 / n as f64,
        p.step_count()
    );
}
#[test]
fn bench() {
    let rope = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 16, 1, 128]> x, tensor<fp16, [1, 1, 1, 128]> cos, tensor<fp16, [1, 1, 1, 128]> sin) {
            tensor<fp16, [1, 16, 1, 128]> xc = mul(x = x, y = cos);
            tensor<fp16, [1, 16, 1, 64]> x1 = slice_by_index(begin = tensor<int32, [4]>([0, 0, 0, 0]), end = tensor<int32, [4]>([1, 16, 1, 64]), end_mask = tensor<bool, [4]>([true, true, true, false]), x = x);
            tensor<fp16, [1, 16, 1, 64]> x2 = slice_by_index(begin = tensor<int32, [4]>([0, 0, 0, 64]), end = tensor<int32, [4]>([1, 16, 1, 128]), end_mask = tensor<bool, [4]>([true, true, true, true]), x = x);
            tensor<fp16, [1, 16, 1, 64]> nx2 = mul(x = x2, y = fp16(-1.0));
            tensor<fp16, [1, 16, 1, 128]> rot = concat(axis = int32(-1), interleave = bool(false), values = (nx2, x1));
            tensor<fp16, [1, 16, 1, 128]> rs = mul(x = rot, y = sin);
            tensor<fp16, [1, 16, 1, 128]> out = add(x = xc, y = rs);
        } -> (out);\n}";
    let (x, c, s) = (t(&[1, 16, 1, 128]), t(&[1, 1, 1, 128]), t(&[1, 1, 1, 128]));
    time(
        "rope fused",
        &plan(rope),
        &[("x", &x), ("cos", &c), ("sin", &s)],
    );
    time(
        "rope unfused",
        &plan(&rope.replace("-> (out)", "-> (out, rot)")),
        &[("x", &x), ("cos", &c), ("sin", &s)],
    );
    let sm = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 16, 1, 256]> scores, tensor<fp16, [1, 1, 1, 256]> mask) {
            tensor<fp16, [1, 16, 1, 256]> scaled = mul(x = scores, y = fp16(0.08837890625));
            tensor<fp16, [1, 16, 1, 256]> masked = add(x = scaled, y = mask);
            tensor<fp16, [1, 16, 1, 256]> out = softmax(axis = int32(-1), x = masked);
        } -> (out);\n}";
    let m: Vec<f32> = (0..256)
        .map(|i| if i < 80 { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    let m = Tensor::from_vec(m, (1, 1, 1, 256), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    let sc = t(&[1, 16, 1, 256]);
    time("softmax fused", &plan(sm), &[("scores", &sc), ("mask", &m)]);
    time(
        "softmax unfused",
        &plan(&sm.replace("-> (out)", "-> (out, masked)")),
        &[("scores", &sc), ("mask", &m)],
    );
    let rms = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 1, 1024]> x) {
            tensor<fp16, [1, 1, 1024]> neg = mul(x = x, y = fp16(-1.0));
            tensor<fp16, [1, 1, 2048]> both = concat(axis = int32(-1), interleave = bool(false), values = (x, neg));
            tensor<fp16, [1, 1, 2048]> normed = layer_norm(axes = tensor<int32, [1]>([-1]), epsilon = fp16(0.00001), x = both);
            tensor<fp16, [1, 1, 1024]> out = slice_by_index(begin = tensor<int32, [3]>([0, 0, 0]), end = tensor<int32, [3]>([1, 1, 1024]), end_mask = tensor<bool, [3]>([true, true, false]), x = normed);
        } -> (out);\n}";
    let xr = t(&[1, 1, 1024]);
    time("rms fused", &plan(rms), &[("x", &xr)]);
    time(
        "rms unfused",
        &plan(&rms.replace("-> (out)", "-> (out, both)")),
        &[("x", &xr)],
    );
    let sl = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 3072, 1, 1]> g, tensor<fp16, [1, 3072, 1, 1]> u) {
            tensor<fp16, [1, 3072, 1, 1]> a = silu(x = g);
            tensor<fp16, [1, 3072, 1, 1]> out = mul(x = a, y = u);
        } -> (out);\n}";
    let (g, u) = (t(&[1, 3072, 1, 1]), t(&[1, 3072, 1, 1]));
    time("silu_mul fused", &plan(sl), &[("g", &g), ("u", &u)]);
    time(
        "silu_mul unfused",
        &plan(&sl.replace("-> (out)", "-> (out, a)")),
        &[("g", &g), ("u", &u)],
    );
    let id = "program(1.3)\n{\n    func main<ios18>(tensor<fp16, [1, 1, 1024]> x) {
            tensor<fp16, [1, 1, 1024]> out = identity(x = x);
        } -> (out);\n}";
    time("identity", &plan(id), &[("x", &xr)]);
}
