//! ANEMLL's fp16 idioms that the planner fuses into single kernels (RMSNorm as layer_norm over concat([x, -x]),
//! rotate-half rotary embedding, scaled and masked softmax, silu-gated product) must give the values of the ops they
//! replace. Each program is planned twice: as written (fused), and with an intermediate of the chain also returned
//! as an output, which keeps the ops unfused. Both are also checked against the ops' definitions computed here in
//! f64 with fp16 rounding where the program rounds. The fp16 fast paths of `add`/`sub`/`mul`/`real_div` are checked
//! against candle's own fp16 ops.

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::text::parse_program;
use candle_coreml_runtime::consts::ConstCache;
use candle_coreml_runtime::ops::activation::softmax_f32;
use candle_coreml_runtime::FunctionPlan;
use half::f16;

fn plan(text: &str) -> FunctionPlan {
    let program = parse_program(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    FunctionPlan::build(
        "main",
        &program.functions["main"],
        None,
        &ConstCache::default(),
        &Device::Cpu,
    )
    .unwrap()
}

/// A one-function program: `main(inputs) { statements } -> (outputs)`.
fn program(inputs: &str, statements: &[String], outputs: &str) -> String {
    let body: String = statements
        .iter()
        .map(|s| format!("            {s}\n"))
        .collect();
    format!(
        "program(1.3)\n{{\n    func main<ios18>({inputs}) {{\n{body}        }} -> ({outputs});\n}}"
    )
}

/// Deterministic fp16 values in [-range, range).
fn values(n: usize, seed: u64, range: f64) -> Vec<f16> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let unit = (s >> 11) as f64 / (1u64 << 53) as f64;
            f16::from_f64((unit * 2.0 - 1.0) * range)
        })
        .collect()
}

fn tensor(v: &[f16], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).unwrap()
}

fn f16s(t: &Tensor) -> Vec<f16> {
    assert_eq!(t.dtype(), DType::F16);
    t.flatten_all().unwrap().to_vec1::<f16>().unwrap()
}

fn shape_text(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn fp16_list(v: &[f16]) -> String {
    v.iter()
        .map(|x| format!("{:?}", x.to_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a plan on named fp16 inputs; returns the first output's values.
fn run(plan: &FunctionPlan, inputs: &[(&str, &Tensor)]) -> Vec<f16> {
    let mut state = plan.make_state().unwrap();
    let out = plan.run_named(inputs, &mut state).unwrap();
    f16s(&out[0].1)
}

/// Distance in representable fp16 values.
fn ulps(a: f16, b: f16) -> u32 {
    let key = |v: f16| {
        let bits = i32::from(v.to_bits());
        if bits & 0x8000 != 0 {
            -(bits & 0x7fff)
        } else {
            bits
        }
    };
    key(a).abs_diff(key(b))
}

fn round16(v: f64) -> f64 {
    f16::from_f64(v).to_f64()
}

fn assert_close(what: &str, got: &[f16], want: &[f16], max_ulps: u32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ulps(*g, *w) <= max_ulps,
            "{what}: element {i}: got {g}, expected {w}"
        );
    }
}

fn rms_norm_program(dims: &[usize], gain: &[f16], extra_output: &str) -> String {
    let rank = dims.len();
    let n = dims[rank - 1];
    let mut both = dims.to_vec();
    both[rank - 1] = 2 * n;
    let (x, b) = (shape_text(dims), shape_text(&both));
    let zeros = vec!["0"; rank].join(", ");
    let mut end: Vec<String> = dims[..rank - 1].iter().map(|d| d.to_string()).collect();
    end.push(n.to_string());
    let mask = [vec!["true"; rank - 1], vec!["false"]].concat().join(", ");
    program(
        &format!("tensor<fp16, [{x}]> x"),
        &[
            format!("tensor<fp16, [{x}]> neg = mul(x = x, y = fp16(-1.0));"),
            format!("tensor<fp16, [{b}]> both = concat(axis = int32(-1), interleave = bool(false), values = (x, neg));"),
            format!("tensor<fp16, [{b}]> normed = layer_norm(axes = tensor<int32, [1]>([-1]), epsilon = fp16(0.00001), x = both);"),
            format!(
                "tensor<fp16, [{x}]> half = slice_by_index(begin = tensor<int32, [{rank}]>([{zeros}]), end = tensor<int32, [{rank}]>([{}]), end_mask = tensor<bool, [{rank}]>([{mask}]), x = normed);",
                end.join(", ")
            ),
            format!(
                "tensor<fp16, [{x}]> out = mul(x = half, y = tensor<fp16, [{n}]>([{}]));",
                fp16_list(gain)
            ),
        ],
        &format!("out{extra_output}"),
    )
}

fn check_rms_norm(dims: &[usize]) {
    let n = *dims.last().unwrap();
    let count: usize = dims.iter().product();
    let x = values(count, 1, 3.0);
    let gain = values(n, 2, 2.0);
    let fused = plan(&rms_norm_program(dims, &gain, ""));
    assert_eq!(fused.step_count(), 1, "the whole chain is one step");
    let without_gain = plan(&rms_norm_program(dims, &gain, ", half"));
    assert_eq!(
        without_gain.step_count(),
        2,
        "fused up to the slice, the gain separate"
    );
    let unfused = plan(&rms_norm_program(dims, &gain, ", both"));
    assert_eq!(unfused.step_count(), 5, "nothing fused");
    let xt = tensor(&x, dims);
    let got = run(&fused, &[("x", &xt)]);
    let reference = run(&unfused, &[("x", &xt)]);
    // The fused kernel adds in the order of the unfused layer_norm, so the values are the same to the bit.
    assert_eq!(got, reference, "fused against unfused");
    assert_eq!(
        run(&without_gain, &[("x", &xt)]),
        reference,
        "gain separate against unfused"
    );
    let eps = f16::from_f64(0.00001).to_f64();
    let mut want = Vec::with_capacity(count);
    for row in x.chunks(n) {
        let mean_sq = row.iter().map(|v| v.to_f64().powi(2)).sum::<f64>() / n as f64;
        for (v, g) in row.iter().zip(&gain) {
            let normed = round16(v.to_f64() / (mean_sq + eps).sqrt());
            want.push(f16::from_f64(normed * g.to_f64()));
        }
    }
    assert_close("fused against the definition", &got, &want, 1);
}

#[test]
fn rms_norm_of_one_hidden_row() {
    check_rms_norm(&[1, 1, 64]);
}

#[test]
fn rms_norm_per_head() {
    check_rms_norm(&[1, 3, 2, 16]);
}

#[test]
fn rms_norm_large_enough_to_split_between_threads() {
    check_rms_norm(&[1, 64, 1024]);
}

#[test]
fn rms_norm_with_another_constant_is_not_fused() {
    let text = rms_norm_program(&[1, 2, 8], &values(8, 3, 1.0), "")
        .replace("y = fp16(-1.0)", "y = fp16(-2.0)");
    assert_eq!(plan(&text).step_count(), 5);
}

fn rope_program(x: &[usize], table: &[usize], extra_output: &str) -> String {
    let rank = x.len();
    let d = x[rank - 1];
    let h = d / 2;
    let mut half = x.to_vec();
    half[rank - 1] = h;
    let (xs, ts, hs) = (shape_text(x), shape_text(table), shape_text(&half));
    let zeros = vec!["0"; rank].join(", ");
    let lead: Vec<String> = x[..rank - 1].iter().map(|v| v.to_string()).collect();
    let lead = lead.join(", ");
    let first_mask = [vec!["true"; rank - 1], vec!["false"]].concat().join(", ");
    let all_mask = vec!["true"; rank].join(", ");
    let second_begin = [vec!["0"; rank - 1].join(", "), h.to_string()].join(", ");
    program(
        &format!("tensor<fp16, [{xs}]> x, tensor<fp16, [{ts}]> cos, tensor<fp16, [{ts}]> sin"),
        &[
            format!("tensor<fp16, [{xs}]> xc = mul(x = x, y = cos);"),
            format!("tensor<fp16, [{hs}]> x1 = slice_by_index(begin = tensor<int32, [{rank}]>([{zeros}]), end = tensor<int32, [{rank}]>([{lead}, {h}]), end_mask = tensor<bool, [{rank}]>([{first_mask}]), x = x);"),
            format!("tensor<fp16, [{hs}]> x2 = slice_by_index(begin = tensor<int32, [{rank}]>([{second_begin}]), end = tensor<int32, [{rank}]>([{lead}, {d}]), end_mask = tensor<bool, [{rank}]>([{all_mask}]), x = x);"),
            format!("tensor<fp16, [{hs}]> nx2 = mul(x = x2, y = fp16(-1.0));"),
            format!("tensor<fp16, [{xs}]> rot = concat(axis = int32(-1), interleave = bool(false), values = (nx2, x1));"),
            format!("tensor<fp16, [{xs}]> rs = mul(x = sin, y = rot);"),
            format!("tensor<fp16, [{xs}]> out = add(x = xc, y = rs);"),
        ],
        &format!("out{extra_output}"),
    )
}

fn check_rope(x_dims: &[usize], table_dims: &[usize]) {
    let x = values(x_dims.iter().product(), 4, 4.0);
    let cos = values(table_dims.iter().product(), 5, 1.0);
    let sin = values(table_dims.iter().product(), 6, 1.0);
    let fused = plan(&rope_program(x_dims, table_dims, ""));
    assert_eq!(fused.step_count(), 1, "the whole chain is one step");
    let unfused = plan(&rope_program(x_dims, table_dims, ", rot"));
    assert_eq!(unfused.step_count(), 7, "nothing fused");
    let (xt, ct, st) = (
        tensor(&x, x_dims),
        tensor(&cos, table_dims),
        tensor(&sin, table_dims),
    );
    let inputs = [("x", &xt), ("cos", &ct), ("sin", &st)];
    let got = run(&fused, &inputs);
    assert_eq!(got, run(&unfused, &inputs), "fused against unfused");
    // The definition, with numpy broadcasting of the table done by hand.
    let rank = x_dims.len();
    let d = x_dims[rank - 1];
    let h = d / 2;
    let table_strides: Vec<usize> = (0..rank)
        .map(|i| {
            if table_dims[i] == 1 {
                0
            } else {
                table_dims[i + 1..].iter().product()
            }
        })
        .collect();
    let mut want = Vec::with_capacity(x.len());
    for (flat, v) in x.iter().enumerate() {
        let mut rem = flat;
        let mut t = 0;
        for i in (0..rank).rev() {
            t += (rem % x_dims[i]) * table_strides[i];
            rem /= x_dims[i];
        }
        let j = flat % d;
        let rotated = if j < h {
            -x[flat + h].to_f64()
        } else {
            x[flat - h].to_f64()
        };
        let direct = round16(v.to_f64() * cos[t].to_f64());
        want.push(f16::from_f64(direct + round16(rotated * sin[t].to_f64())));
    }
    assert_eq!(got, want, "fused against the definition");
}

#[test]
fn rope_for_one_token() {
    check_rope(&[1, 4, 1, 16], &[1, 1, 1, 16]);
}

#[test]
fn rope_for_several_tokens() {
    check_rope(&[1, 2, 3, 8], &[1, 1, 3, 8]);
}

#[test]
fn rope_with_an_odd_split_is_not_fused() {
    let text = rope_program(&[1, 2, 1, 8], &[1, 1, 1, 8], "").replace(
        "slice_by_index(begin = tensor<int32, [4]>([0, 0, 0, 4])",
        "slice_by_index(begin = tensor<int32, [4]>([0, 0, 0, 3])",
    );
    // The second slice no longer takes the upper half of the last dim, so nothing fuses.
    assert_eq!(plan(&text).step_count(), 7);
}

fn softmax_program(dims: &[usize], mask: &[usize], extra_output: &str) -> String {
    let (s, m) = (shape_text(dims), shape_text(mask));
    program(
        &format!("tensor<fp16, [{s}]> scores, tensor<fp16, [{m}]> mask"),
        &[
            format!("tensor<fp16, [{s}]> scaled = mul(x = scores, y = fp16(0.1767578125));"),
            format!("tensor<fp16, [{s}]> masked = add(x = scaled, y = mask);"),
            format!("tensor<fp16, [{s}]> out = softmax(axis = int32(-1), x = masked);"),
        ],
        &format!("out{extra_output}"),
    )
}

/// Scores `[1, heads, rows, cols]` and a causal mask `[1, 1, rows, cols]` whose last row is fully masked.
fn check_scaled_masked_softmax(heads: usize, rows: usize, cols: usize) {
    let dims = [1, heads, rows, cols];
    let mask_dims = [1, 1, rows, cols];
    let scores = values(dims.iter().product(), 7, 20.0);
    let mut mask = Vec::new();
    for row in 0..rows {
        for col in 0..cols {
            let open = row + 1 < rows && col <= cols / 3 + row;
            mask.push(if open { f16::ZERO } else { f16::NEG_INFINITY });
        }
    }
    let fused = plan(&softmax_program(&dims, &mask_dims, ""));
    assert_eq!(fused.step_count(), 1);
    let unfused = plan(&softmax_program(&dims, &mask_dims, ", masked"));
    assert_eq!(unfused.step_count(), 3);
    let (st, mt) = (tensor(&scores, &dims), tensor(&mask, &mask_dims));
    let inputs = [("scores", &st), ("mask", &mt)];
    let got = run(&fused, &inputs);
    assert_eq!(got, run(&unfused, &inputs), "fused against unfused");
    // The unfused softmax kernel has an fp16 fast path of its own: compare with the candle ops it replaces too.
    let mut state = unfused.make_state().unwrap();
    let outs = unfused.run_named(&inputs, &mut state).unwrap();
    let masked = outs[1].1.to_dtype(DType::F32).unwrap();
    let candle = softmax_f32(&masked, 3)
        .unwrap()
        .to_dtype(DType::F16)
        .unwrap();
    assert_eq!(got, f16s(&candle), "fused against candle's softmax");
    let scale = 0.1767578125;
    let mut want = Vec::new();
    for (r, row) in scores.chunks(cols).enumerate() {
        let m = (r % rows) * cols;
        let masked: Vec<f64> = row
            .iter()
            .zip(&mask[m..m + cols])
            .map(|(s, m)| round16(round16(s.to_f64() * scale) + m.to_f64()))
            .collect();
        let max = masked.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let max = if max.is_finite() { max } else { 0.0 };
        let e: Vec<f64> = masked.iter().map(|v| (v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        let sum = if sum == 0.0 { 1.0 } else { sum };
        want.extend(e.iter().map(|v| f16::from_f64(v / sum)));
    }
    assert_close("fused against the definition", &got, &want, 1);
    for h in 0..heads {
        let last = (h * rows + rows - 1) * cols;
        assert!(
            got[last..last + cols].iter().all(|v| *v == f16::ZERO),
            "a fully masked row gives zeros"
        );
    }
}

#[test]
fn scaled_masked_softmax_small() {
    check_scaled_masked_softmax(3, 4, 16);
}

#[test]
fn scaled_masked_softmax_large_enough_to_split_between_threads() {
    check_scaled_masked_softmax(4, 64, 256);
}

fn silu_mul_program(dims: &[usize], extra_output: &str) -> String {
    let s = shape_text(dims);
    program(
        &format!("tensor<fp16, [{s}]> gate, tensor<fp16, [{s}]> up"),
        &[
            format!("tensor<fp16, [{s}]> act = silu(x = gate);"),
            format!("tensor<fp16, [{s}]> out = mul(x = act, y = up);"),
        ],
        &format!("out{extra_output}"),
    )
}

fn check_silu_gated_product(dims: &[usize]) {
    let count = dims.iter().product();
    let gate = values(count, 8, 8.0);
    let up = values(count, 9, 3.0);
    let fused = plan(&silu_mul_program(dims, ""));
    assert_eq!(fused.step_count(), 1);
    let unfused = plan(&silu_mul_program(dims, ", act"));
    assert_eq!(unfused.step_count(), 2);
    let (gt, ut) = (tensor(&gate, dims), tensor(&up, dims));
    let inputs = [("gate", &gt), ("up", &ut)];
    let got = run(&fused, &inputs);
    assert_eq!(got, run(&unfused, &inputs), "fused against unfused");
    let want: Vec<f16> = gate
        .iter()
        .zip(&up)
        .map(|(g, u)| {
            let g = g.to_f64();
            f16::from_f64(round16(g / (1.0 + (-g).exp())) * u.to_f64())
        })
        .collect();
    assert_close("fused against the definition", &got, &want, 1);
}

#[test]
fn silu_gated_product_small() {
    check_silu_gated_product(&[1, 96, 1, 1]);
}

#[test]
fn silu_gated_product_large_enough_to_split_between_threads() {
    check_silu_gated_product(&[1, 3072, 1, 16]);
}

/// `op(transpose(x, perm), y)` for fp16 inputs, whose result must equal candle's fp16 op on the same tensors.
fn check_binary(op: &str, x_dims: &[usize], perm: &[usize], y_dims: &[usize]) {
    let tx_dims: Vec<usize> = perm.iter().map(|&p| x_dims[p]).collect();
    let out_dims: Vec<usize> = {
        let rank = tx_dims.len().max(y_dims.len());
        (0..rank)
            .map(|i| {
                let a = (i + tx_dims.len()).checked_sub(rank).map(|k| tx_dims[k]);
                let b = (i + y_dims.len()).checked_sub(rank).map(|k| y_dims[k]);
                a.unwrap_or(1).max(b.unwrap_or(1))
            })
            .collect()
    };
    let perm_text = perm
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let text = program(
        &format!(
            "tensor<fp16, [{}]> x, tensor<fp16, [{}]> y",
            shape_text(x_dims),
            shape_text(y_dims)
        ),
        &[
            format!(
                "tensor<fp16, [{}]> t = transpose(perm = tensor<int32, [{}]>([{perm_text}]), x = x);",
                shape_text(&tx_dims),
                perm.len()
            ),
            format!(
                "tensor<fp16, [{}]> out = {op}(x = t, y = y);",
                shape_text(&out_dims)
            ),
        ],
        "out",
    );
    let x = tensor(&values(x_dims.iter().product(), 10, 30.0), x_dims);
    let mut y_values = values(y_dims.iter().product(), 11, 30.0);
    // Exact zeros, tiny and huge values exercise division by zero, subnormals and overflow.
    if y_values.len() > 3 {
        y_values[0] = f16::ZERO;
        y_values[1] = f16::from_f64(1e-7);
        y_values[2] = f16::from_f64(60000.0);
    }
    let y = tensor(&y_values, y_dims);
    let got = run(&plan(&text), &[("x", &x), ("y", &y)]);
    let t = x.permute(perm).unwrap();
    let want = match op {
        "add" => t.broadcast_add(&y),
        "sub" => t.broadcast_sub(&y),
        "mul" => t.broadcast_mul(&y),
        "real_div" => t.broadcast_div(&y),
        other => panic!("no reference for {other}"),
    }
    .unwrap();
    let want = f16s(&want);
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
            "{op} {x_dims:?} perm {perm:?} with {y_dims:?}: element {i}: got {g}, candle gives {w}"
        );
    }
}

#[test]
fn fp16_binary_ops_equal_candle() {
    for op in ["add", "sub", "mul", "real_div"] {
        check_binary(op, &[2, 3, 70], &[0, 1, 2], &[2, 3, 70]);
        check_binary(op, &[2, 3, 70], &[0, 1, 2], &[70]);
        check_binary(op, &[2, 3, 70], &[0, 1, 2], &[3, 1]);
        check_binary(op, &[2, 3, 70], &[0, 2, 1], &[1]);
        check_binary(op, &[4, 5, 6], &[2, 0, 1], &[6, 1, 5]);
        check_binary(op, &[1, 1, 200], &[0, 1, 2], &[]);
        // Large enough to be split between threads: rows of a transposed input, and one long contiguous run.
        check_binary(op, &[4, 96, 100], &[0, 2, 1], &[96]);
        check_binary(op, &[1, 64, 1024], &[0, 1, 2], &[1, 64, 1024]);
    }
}
