#!/usr/bin/env python3
"""Writes crates/runtime/tests/data/op_cases.json: small single-op MIL test cases (inputs, parameters, expected
outputs) whose expected values are computed here with numpy, independently of the Rust executor.

Run from the repository root:  tools/.venv/bin/python tools/gen_op_cases.py

Each case: {"name", "op", "inputs": {param: tensor | [tensor, ...]} (run-time function inputs),
"params": {param: tensor | string} (inline constants), "outputs": [tensor with "name"], "atol", "rtol"}
or, instead of "outputs", "error": substring of the expected error (with "out_types" giving declared outputs).
A tensor is {"dtype": MIL dtype, "shape": [...], "data": flat list}; floats may be "inf", "-inf", "nan".
"""
import json
import math
import os

import numpy as np

RNG = np.random.default_rng(20261125)
CASES = []

NP_OF = {
    "fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_, "uint8": np.uint8,
    "int8": np.int8, "int16": np.int16, "uint16": np.uint16,
}


def enc(v):
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    f = float(v)
    if math.isnan(f):
        return "nan"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return f


def t(dtype, arr):
    arr = np.asarray(arr)
    return {"dtype": dtype, "shape": list(arr.shape), "data": [enc(v) for v in arr.reshape(-1).tolist()]}


def s(text):
    return {"dtype": "string", "data": text}


def rnd(shape, dtype="fp32", lo=-2.0, hi=2.0):
    a = RNG.uniform(lo, hi, size=shape)
    return a.astype(NP_OF[dtype]) if dtype in ("fp16", "fp32") else a


def case(name, op, inputs, params, outputs, atol=1e-5, rtol=1e-5):
    """outputs: list of (dtype, array)."""
    outs = [dict(t(d, a), name=f"out{i}") for i, (d, a) in enumerate(outputs)]
    CASES.append({"name": name, "op": op, "inputs": inputs, "params": params, "outputs": outs,
                  "atol": atol, "rtol": rtol})


def error_case(name, op, inputs, params, out_types, error):
    CASES.append({"name": name, "op": op, "inputs": inputs, "params": params,
                  "out_types": [dict(dtype=d, shape=sh, name=f"out{i}") for i, (d, sh) in enumerate(out_types)],
                  "error": error})


def i32(v):
    return t("int32", np.asarray(v, dtype=np.int64))


def tol(dtype):
    return (3e-3, 3e-3) if dtype == "fp16" else (1e-5, 1e-5)


# ---------------------------------------------------------------- elementwise binary (broadcasting, dtypes)
BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "real_div": np.divide,
    "maximum": np.maximum, "minimum": np.minimum,
}
for dtype in ("fp32", "fp16"):
    for sx, sy in (((2, 3, 4), (3, 1)), ((4,), (2, 1, 4)), ((), (2, 3)), ((2, 1), (1, 5))):
        for op, f in BINARY.items():
            x = rnd(sx, dtype)
            y = rnd(sy, dtype, 0.5, 2.0) if op == "real_div" else rnd(sy, dtype)
            want = f(x.astype(np.float64), y.astype(np.float64))
            case(f"{op}_{dtype}_{len(sx)}d_{len(sy)}d", op, {"x": t(dtype, x), "y": t(dtype, y)}, {},
                 [(dtype, want)], *tol(dtype))
x = rnd((3, 4), "fp32", 0.5, 3.0)
y = rnd((4,), "fp32", -2.0, 2.0).round()
case("pow_fp32_integer_exponents_negative_base", "pow", {"x": t("fp32", -x), "y": t("fp32", y)}, {},
     [("fp32", np.power(-x.astype(np.float64), y))], 1e-5, 1e-5)
x = rnd((3, 4), "fp32", 0.5, 3.0)
e = rnd((3, 1), "fp32", -1.5, 1.5)
case("pow_fp32_broadcast", "pow", {"x": t("fp32", x), "y": t("fp32", e)}, {},
     [("fp32", np.power(x.astype(np.float64), e.astype(np.float64)))], 1e-5, 1e-5)
xi = RNG.integers(-20, 20, size=(2, 3))
yi = RNG.integers(1, 7, size=(3,)) * np.array([1, -1, 1])
for op, f in (("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("floor_div", np.floor_divide),
              ("mod", np.mod), ("maximum", np.maximum), ("minimum", np.minimum)):
    case(f"{op}_int32_broadcast", op, {"x": i32(xi), "y": i32(yi)}, {}, [("int32", f(xi, yi))], 0, 0)
xf = rnd((2, 3), "fp32", -5, 5)
yf = rnd((3,), "fp32", 1, 3) * np.array([1, -1, 1], dtype=np.float32)
case("floor_div_fp32", "floor_div", {"x": t("fp32", xf), "y": t("fp32", yf)}, {},
     [("fp32", np.floor_divide(xf.astype(np.float64), yf))], 1e-5, 1e-5)
case("mod_fp32", "mod", {"x": t("fp32", xf), "y": t("fp32", yf)}, {},
     [("fp32", np.mod(xf.astype(np.float64), yf))], 1e-4, 1e-5)
# fp16 -inf masks: x + mask keeps -inf, and 0 * -inf is NaN (as IEEE says).
scores = rnd((1, 2, 3, 4), "fp16")
mask = np.where(np.arange(4)[None, :] <= np.arange(3)[:, None], 0.0, -np.inf).astype(np.float16)
case("add_fp16_neg_inf_mask", "add", {"x": t("fp16", scores), "y": t("fp16", mask)}, {},
     [("fp16", scores.astype(np.float64) + mask)], 3e-3, 3e-3)
case("mul_fp16_inf_times_zero_is_nan", "mul", {"x": t("fp16", np.array([0.0, 1.0, -2.0], np.float16)),
                                               "y": t("fp16", np.array([-np.inf, -np.inf, -np.inf], np.float16))},
     {}, [("fp16", np.array([np.nan, -np.inf, np.inf]))], 0, 0)

COMPARE = {"equal": np.equal, "not_equal": np.not_equal, "less": np.less, "less_equal": np.less_equal,
           "greater": np.greater, "greater_equal": np.greater_equal}
for op, f in COMPARE.items():
    x = RNG.integers(-3, 3, size=(2, 3, 4)).astype(np.float32)
    y = RNG.integers(-3, 3, size=(3, 1)).astype(np.float32)
    case(f"{op}_fp32_broadcast", op, {"x": t("fp32", x), "y": t("fp32", y)}, {}, [("bool", f(x, y))], 0, 0)
    xi = RNG.integers(-3, 3, size=(4,))
    yi = RNG.integers(-3, 3, size=(2, 1))
    case(f"{op}_int32_broadcast", op, {"x": i32(xi), "y": i32(yi)}, {}, [("bool", f(xi, yi))], 0, 0)
bx = RNG.integers(0, 2, size=(2, 4)).astype(bool)
by = RNG.integers(0, 2, size=(4,)).astype(bool)
for op, f in (("logical_and", np.logical_and), ("logical_or", np.logical_or), ("logical_xor", np.logical_xor)):
    case(f"{op}_broadcast", op, {"x": t("bool", bx), "y": t("bool", by)}, {}, [("bool", f(bx, by))], 0, 0)
case("logical_not", "logical_not", {"x": t("bool", bx)}, {}, [("bool", np.logical_not(bx))], 0, 0)

# ---------------------------------------------------------------- unary
UNARY = {
    "abs": (np.abs, -2, 2), "acos": (np.arccos, -0.9, 0.9), "asin": (np.arcsin, -0.9, 0.9),
    "atan": (np.arctan, -3, 3), "atanh": (np.arctanh, -0.9, 0.9), "ceil": (np.ceil, -3, 3),
    "cos": (np.cos, -3, 3), "cosh": (np.cosh, -2, 2), "exp": (np.exp, -3, 3), "exp2": (np.exp2, -3, 3),
    "floor": (np.floor, -3, 3), "round": (np.round, -3, 3), "sign": (np.sign, -2, 2), "sin": (np.sin, -3, 3),
    "sinh": (np.sinh, -2, 2), "sqrt": (np.sqrt, 0.1, 4), "square": (np.square, -3, 3), "tan": (np.tan, -1.2, 1.2),
    "tanh": (np.tanh, -3, 3), "erf": (np.vectorize(math.erf), -2, 2),
}
for op, (f, lo, hi) in UNARY.items():
    for dtype in ("fp32", "fp16"):
        x = rnd((2, 5), dtype, lo, hi)
        if op == "round":
            x[0, :3] = np.array([0.5, 1.5, -2.5], dtype=x.dtype)
        want = f(x.astype(np.float64))
        case(f"{op}_{dtype}", op, {"x": t(dtype, x)}, {}, [(dtype, want)], *((4e-3, 3e-3) if dtype == "fp16" else (2e-5, 2e-5)))
x = rnd((2, 4), "fp32", 0.1, 3)
case("inverse_epsilon", "inverse", {"x": t("fp32", x)}, {"epsilon": t("fp32", np.float32(0.25))},
     [("fp32", 1.0 / (x.astype(np.float64) + 0.25))], 1e-5, 1e-5)
case("log_epsilon", "log", {"x": t("fp32", x)}, {"epsilon": t("fp32", np.float32(0.5))},
     [("fp32", np.log(x.astype(np.float64) + 0.5))], 1e-5, 1e-5)
case("rsqrt_epsilon", "rsqrt", {"x": t("fp32", x)}, {"epsilon": t("fp32", np.float32(0.125))},
     [("fp32", 1.0 / np.sqrt(x.astype(np.float64) + 0.125))], 1e-5, 1e-5)
x = rnd((3, 4), "fp16", -3, 3)
case("clip_fp16", "clip", {"x": t("fp16", x)}, {"alpha": t("fp16", np.float16(-1)), "beta": t("fp16", np.float16(1.5))},
     [("fp16", np.clip(x.astype(np.float64), -1, 1.5))], 0, 0)
case("threshold", "threshold", {"x": t("fp32", x.astype(np.float32))}, {"alpha": t("fp32", np.float32(0.3))},
     [("fp32", np.maximum(x.astype(np.float64), float(np.float32(0.3))))], 0, 0)
case("abs_int32", "abs", {"x": i32([-3, 0, 5])}, {}, [("int32", np.array([3, 0, 5]))], 0, 0)

# ---------------------------------------------------------------- cast, identity, select
xf = np.array([-2.7, -0.5, 0.0, 0.5, 2.7, 100.9], dtype=np.float32)
case("cast_fp32_to_int32_truncates", "cast", {"x": t("fp32", xf)}, {"dtype": s("int32")},
     [("int32", np.trunc(xf).astype(np.int64))], 0, 0)
case("cast_fp32_to_fp16", "cast", {"x": t("fp32", xf)}, {"dtype": s("fp16")},
     [("fp16", xf.astype(np.float16).astype(np.float64))], 0, 0)
case("cast_int32_to_fp16", "cast", {"x": i32([-3, 0, 7, 2048])}, {"dtype": s("fp16")},
     [("fp16", np.array([-3, 0, 7, 2048], np.float64))], 0, 0)
case("cast_fp32_to_bool", "cast", {"x": t("fp32", xf)}, {"dtype": s("bool")}, [("bool", xf != 0)], 0, 0)
case("cast_bool_to_fp32", "cast", {"x": t("bool", bx)}, {"dtype": s("fp32")}, [("fp32", bx.astype(np.float64))], 0, 0)
case("identity_int32", "identity", {"x": i32([[1, 2], [3, 4]])}, {}, [("int32", np.array([[1, 2], [3, 4]]))], 0, 0)
cond = RNG.integers(0, 2, size=(3, 1)).astype(bool)
a = rnd((3, 4), "fp16")
b = rnd((4,), "fp16")
case("select_broadcast_fp16", "select", {"cond": t("bool", cond), "a": t("fp16", a), "b": t("fp16", b)}, {},
     [("fp16", np.where(cond, a, b).astype(np.float64))], 0, 0)
pos = np.array([-3, 0, 5])
case("select_int32_negative_index_normalisation", "select",
     {"cond": t("bool", pos >= 0), "a": i32(pos), "b": i32(pos + 10)}, {},
     [("int32", np.where(pos >= 0, pos, pos + 10))], 0, 0)

# ---------------------------------------------------------------- activations


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


ERF = np.vectorize(math.erf)
ACTS = {
    "relu": (lambda v: np.maximum(v, 0), {}),
    "relu6": (lambda v: np.minimum(np.maximum(v, 0), 6), {}),
    "leaky_relu": (lambda v: np.where(v >= 0, v, 0.2 * v), {"alpha": 0.2}),
    "elu": (lambda v: np.where(v > 0, v, 0.7 * (np.exp(v) - 1)), {"alpha": 0.7}),
    "sigmoid": (sigmoid, {}),
    "sigmoid_hard": (lambda v: np.clip(0.3 * v + 0.4, 0, 1), {"alpha": 0.3, "beta": 0.4}),
    "silu": (lambda v: v * sigmoid(v), {}),
    "softplus": (lambda v: np.log1p(np.exp(v)), {}),
    "softsign": (lambda v: v / (1 + np.abs(v)), {}),
    "tanh": (np.tanh, {}),
    "clamped_relu": (lambda v: np.minimum(np.where(v >= 0, v, 0.1 * v), 1.5), {"alpha": 0.1, "beta": 1.5}),
    "linear_activation": (lambda v: 1.5 * v - 0.25, {"alpha": 1.5, "beta": -0.25}),
    "scaled_tanh": (lambda v: 1.2 * np.tanh(0.8 * v), {"alpha": 1.2, "beta": 0.8}),
}
for op, (f, p) in ACTS.items():
    for dtype in ("fp32", "fp16"):
        x = rnd((2, 3, 4), dtype, -7, 7)
        params = {k: t(dtype, np.asarray(v, dtype=NP_OF[dtype])) for k, v in p.items()}
        pv = {k: float(np.asarray(v, dtype=NP_OF[dtype])) for k, v in p.items()}
        f2 = f
        if pv:
            # Recompute with the parameters as the model stores them (rounded to the dtype).
            f2 = {
                "leaky_relu": lambda v: np.where(v >= 0, v, pv["alpha"] * v),
                "elu": lambda v: np.where(v > 0, v, pv["alpha"] * (np.exp(v) - 1)),
                "sigmoid_hard": lambda v: np.clip(pv["alpha"] * v + pv["beta"], 0, 1),
                "clamped_relu": lambda v: np.minimum(np.where(v >= 0, v, pv["alpha"] * v), pv["beta"]),
                "linear_activation": lambda v: pv["alpha"] * v + pv["beta"],
                "scaled_tanh": lambda v: pv["alpha"] * np.tanh(pv["beta"] * v),
            }[op]
        case(f"{op}_{dtype}", op, {"x": t(dtype, x)}, params, [(dtype, f2(x.astype(np.float64)))],
             *((4e-3, 3e-3) if dtype == "fp16" else (2e-5, 2e-5)))
x = rnd((2, 6), "fp32", -4, 4).astype(np.float64)
case("gelu_exact", "gelu", {"x": t("fp32", x)}, {"mode": s("EXACT")},
     [("fp32", 0.5 * x * (1 + ERF(x / math.sqrt(2))))], 2e-5, 2e-5)
case("gelu_default_mode_is_exact", "gelu", {"x": t("fp32", x)}, {},
     [("fp32", 0.5 * x * (1 + ERF(x / math.sqrt(2))))], 2e-5, 2e-5)
case("gelu_tanh", "gelu", {"x": t("fp32", x)}, {"mode": s("TANH_APPROXIMATION")},
     [("fp32", 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))))], 2e-5, 2e-5)
case("gelu_sigmoid", "gelu", {"x": t("fp32", x)}, {"mode": s("SIGMOID_APPROXIMATION")},
     [("fp32", x * sigmoid(1.702 * x))], 2e-5, 2e-5)
x = rnd((1, 3, 2, 2), "fp32")
alpha = np.array([0.1, 0.2, 0.3], np.float32)
case("prelu_channels", "prelu", {"x": t("fp32", x)}, {"alpha": t("fp32", alpha)},
     [("fp32", np.where(x >= 0, x, alpha[None, :, None, None] * x))], 1e-6, 1e-6)


def softmax(v, axis):
    m = np.max(v, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(v - m)
    ssum = e.sum(axis=axis, keepdims=True)
    return np.where(ssum > 0, e / np.where(ssum > 0, ssum, 1), 0.0)


for dtype in ("fp32", "fp16"):
    x = rnd((2, 3, 5), dtype, -4, 4)
    for axis in (-1, 1, 0):
        case(f"softmax_{dtype}_axis{axis}", "softmax", {"x": t(dtype, x)}, {"axis": i32(axis)},
             [(dtype, softmax(x.astype(np.float64), axis))], *tol(dtype))
x = (rnd((1, 1, 3, 4), "fp16").astype(np.float64) + mask).astype(np.float16)
case("softmax_fp16_with_neg_inf_mask", "softmax", {"x": t("fp16", x)}, {"axis": i32(-1)},
     [("fp16", softmax(x.astype(np.float64), -1))], 3e-3, 3e-3)
x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 1.0]], np.float16)
# Convention of this runtime: a row that is entirely -inf gives zeros rather than NaN.
case("softmax_all_neg_inf_row_gives_zeros", "softmax", {"x": t("fp16", x)}, {"axis": i32(-1)},
     [("fp16", softmax(x.astype(np.float64), -1))], 3e-3, 3e-3)

# ---------------------------------------------------------------- linear / matmul / conv / einsum
for dtype in ("fp32", "fp16"):
    x = rnd((2, 3, 8), dtype)
    w = rnd((5, 8), dtype)
    bias = rnd((5,), dtype)
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    case(f"linear_{dtype}_bias", "linear", {"x": t(dtype, x)}, {"weight": t(dtype, w), "bias": t(dtype, bias)},
         [(dtype, x64 @ w64.T + bias)], *((1e-2, 3e-3) if dtype == "fp16" else (1e-5, 1e-5)))
    case(f"linear_{dtype}_no_bias_rank1", "linear", {"x": t(dtype, x[0, 0])}, {"weight": t(dtype, w)},
         [(dtype, x64[0, 0] @ w64.T)], *((1e-2, 3e-3) if dtype == "fp16" else (1e-5, 1e-5)))
    for (sx, sy, tx, ty) in (((2, 1, 3, 4), (5, 4, 6), False, False), ((3, 4), (2, 6, 4), False, True),
                             ((2, 4, 3), (2, 4, 5), True, False), ((4,), (3, 4, 2), False, False),
                             ((2, 3, 4), (4,), False, False)):
        a = rnd(sx, dtype)
        b = rnd(sy, dtype)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        if tx:
            a64 = np.swapaxes(a64, -1, -2)
        if ty:
            b64 = np.swapaxes(b64, -1, -2)
        case(f"matmul_{dtype}_{'x'.join(map(str, sx))}_{'x'.join(map(str, sy))}_{int(tx)}{int(ty)}", "matmul",
             {"x": t(dtype, a), "y": t(dtype, b)},
             {"transpose_x": t("bool", np.bool_(tx)), "transpose_y": t("bool", np.bool_(ty))},
             [(dtype, np.matmul(a64, b64))], *((1e-2, 3e-3) if dtype == "fp16" else (1e-5, 1e-5)))


def conv_ref(x, w, bias, strides, pads, dil, groups):
    """Direct N-d cross-correlation (numpy loops) on [N, C, *S]."""
    n_sp = x.ndim - 2
    xp = np.pad(x, [(0, 0), (0, 0)] + [(pads[2 * i], pads[2 * i + 1]) for i in range(n_sp)])
    cout = w.shape[0]
    cin_g = w.shape[1]
    k = w.shape[2:]
    out_sp = [(xp.shape[2 + i] - ((k[i] - 1) * dil[i] + 1)) // strides[i] + 1 for i in range(n_sp)]
    out = np.zeros((x.shape[0], cout, *out_sp))
    per_group = cout // groups
    for o in range(cout):
        g = o // per_group
        for idx in np.ndindex(*out_sp):
            acc = np.zeros(x.shape[0])
            for kidx in np.ndindex(*k):
                pos = tuple(idx[i] * strides[i] + kidx[i] * dil[i] for i in range(n_sp))
                patch = xp[(slice(None), slice(g * cin_g, (g + 1) * cin_g)) + pos]
                acc += patch @ w[(o, slice(None)) + kidx]
            out[(slice(None), o) + idx] = acc
        if bias is not None:
            out[:, o] += bias[o]
    return out


def same_pads(sizes, k, strides, dil, lower=False):
    pads = []
    for i, n in enumerate(sizes):
        out = -(-n // strides[i])
        total = max((out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - n, 0)
        small = total // 2
        pads += [total - small, small] if lower else [small, total - small]
    return pads


for dtype in ("fp32", "fp16"):
    a_tol = (2e-2, 5e-3) if dtype == "fp16" else (1e-4, 1e-5)
    # 1x1 (pointwise, ANEMLL) on [1, C, 1, T]
    x = rnd((1, 6, 1, 5), dtype)
    w = rnd((4, 6, 1, 1), dtype)
    case(f"conv_{dtype}_pointwise_2d", "conv", {"x": t(dtype, x)}, {"weight": t(dtype, w)},
         [(dtype, conv_ref(x.astype(np.float64), w.astype(np.float64), None, [1, 1], [0] * 4, [1, 1], 1))], *a_tol)
    x = rnd((2, 4, 9), dtype)
    w = rnd((6, 2, 3), dtype)
    bias = rnd((6,), dtype)
    case(f"conv_{dtype}_1d_groups_stride_custom_pad", "conv", {"x": t(dtype, x)},
         {"weight": t(dtype, w), "bias": t(dtype, bias), "strides": i32([2]), "pad_type": s("custom"),
          "pad": i32([1, 2]), "groups": i32(2)},
         [(dtype, conv_ref(x.astype(np.float64), w.astype(np.float64), bias.astype(np.float64), [2], [1, 2], [1], 2))],
         *a_tol)
x = rnd((1, 3, 7, 6))
w = rnd((4, 3, 3, 2))
for pt in ("valid", "same", "same_lower"):
    pads = [0] * 4 if pt == "valid" else same_pads([7, 6], [3, 2], [2, 1], [1, 1], pt == "same_lower")
    case(f"conv_fp32_2d_{pt}_nonuniform_strides", "conv", {"x": t("fp32", x)},
         {"weight": t("fp32", w), "strides": i32([2, 1]), "pad_type": s(pt)},
         [("fp32", conv_ref(x.astype(np.float64), w.astype(np.float64), None, [2, 1], pads, [1, 1], 1))], 1e-4, 1e-5)
case("conv_fp32_2d_dilated", "conv", {"x": t("fp32", x)},
     {"weight": t("fp32", w), "dilations": i32([2, 2]), "pad_type": s("custom"), "pad": i32([1, 1, 0, 1])},
     [("fp32", conv_ref(x.astype(np.float64), w.astype(np.float64), None, [1, 1], [1, 1, 0, 1], [2, 2], 1))],
     1e-4, 1e-5)


def conv_transpose_ref(x, w, strides, pads):
    n, cin, length = x.shape
    _, cout, k = w.shape
    full = (length - 1) * strides + k
    out = np.zeros((n, cout, full))
    for i in range(length):
        for kk in range(k):
            out[:, :, i * strides + kk] += x[:, :, i] @ w[:, :, kk]
    return out[:, :, pads[0]: full - pads[1]]


x = rnd((1, 3, 5))
w = rnd((3, 2, 4))
case("conv_transpose_fp32_1d_stride2_pad", "conv_transpose", {"x": t("fp32", x)},
     {"weight": t("fp32", w), "strides": i32([2]), "pad_type": s("custom"), "pad": i32([1, 1])},
     [("fp32", conv_transpose_ref(x.astype(np.float64), w.astype(np.float64), 2, [1, 1]))], 1e-4, 1e-5)
for eq, sa, sb in (("bkhc,bchq->bkhq", (1, 3, 2, 4), (1, 4, 2, 5)), ("bchk,bkhq->bchq", (1, 4, 2, 3), (1, 3, 2, 5)),
                   ("ij,jk->ik", (3, 4), (4, 2)), ("bij,bjk->bik", (2, 3, 4), (2, 4, 5)), ("ij,kj->ikj", (2, 3), (4, 3)),
                   ("abc,cd->da", (2, 3, 4), (4, 5))):
    a = rnd(sa)
    b = rnd(sb)
    case(f"einsum_{eq.replace(',', '_').replace('->', '_to_')}", "einsum", {"values": [t("fp32", a), t("fp32", b)]},
         {"equation": s(eq)}, [("fp32", np.einsum(eq, a.astype(np.float64), b.astype(np.float64)))], 1e-4, 1e-5)

# ---------------------------------------------------------------- reductions
RED = {
    "reduce_sum": np.sum, "reduce_mean": np.mean, "reduce_max": np.max, "reduce_min": np.min, "reduce_prod": np.prod,
    "reduce_l1_norm": lambda v, axis, keepdims: np.sum(np.abs(v), axis=axis, keepdims=keepdims),
    "reduce_l2_norm": lambda v, axis, keepdims: np.sqrt(np.sum(v * v, axis=axis, keepdims=keepdims)),
    "reduce_sum_square": lambda v, axis, keepdims: np.sum(v * v, axis=axis, keepdims=keepdims),
    "reduce_log_sum": lambda v, axis, keepdims: np.log(np.sum(v, axis=axis, keepdims=keepdims)),
    "reduce_log_sum_exp": lambda v, axis, keepdims: np.log(np.sum(np.exp(v), axis=axis, keepdims=keepdims)),
}
for op, f in RED.items():
    for dtype in ("fp32", "fp16"):
        lo = 0.5 if op == "reduce_log_sum" else -2
        x = rnd((2, 3, 4), dtype, lo, 2)
        for axes, keep in (((-1,), True), ((0, 2), False), (None, False)):
            params = {"keep_dims": t("bool", np.bool_(keep))}
            if axes is not None:
                params["axes"] = i32(list(axes))
            want = f(x.astype(np.float64), axis=axes, keepdims=keep)
            name = "all" if axes is None else "_".join(str(a) for a in axes)
            case(f"{op}_{dtype}_axes_{name}_keep{int(keep)}", op, {"x": t(dtype, x)}, params, [(dtype, want)],
                 *((5e-3, 3e-3) if dtype == "fp16" else (1e-5, 1e-5)))
xi = RNG.integers(-5, 5, size=(3, 4))
case("reduce_sum_int32", "reduce_sum", {"x": i32(xi)}, {"axes": i32([1])}, [("int32", xi.sum(axis=1))], 0, 0)
case("reduce_max_int32_keep", "reduce_max", {"x": i32(xi)}, {"axes": i32([0]), "keep_dims": t("bool", np.bool_(True))},
     [("int32", xi.max(axis=0, keepdims=True))], 0, 0)
x = rnd((2, 3, 5), "fp16")
x[0, 0, 1] = x[0, 0, 3] = np.float16(9)  # ties: the first index wins
x[1, 2, 0] = x[1, 2, 4] = np.float16(-9)
for op, f in (("reduce_argmax", np.argmax), ("reduce_argmin", np.argmin)):
    for axis, keep in ((-1, False), (1, True)):
        want = f(x.astype(np.float64), axis=axis)
        if keep:
            want = np.expand_dims(want, axis)
        case(f"{op}_axis{axis}_keep{int(keep)}", op, {"x": t("fp16", x)},
             {"axis": i32(axis), "keep_dims": t("bool", np.bool_(keep))}, [("int32", want)], 0, 0)

# ---------------------------------------------------------------- normalisation
for dtype in ("fp32", "fp16"):
    x = rnd((2, 3, 8), dtype, -3, 3)
    g = rnd((8,), dtype)
    b = rnd((8,), dtype)
    x64 = x.astype(np.float64)
    m = x64.mean(-1, keepdims=True)
    v = x64.var(-1, keepdims=True)
    eps = float(np.asarray(1e-5, NP_OF[dtype]))
    case(f"layer_norm_{dtype}_last_axis_gamma_beta", "layer_norm", {"x": t(dtype, x)},
         {"axes": i32([-1]), "gamma": t(dtype, g), "beta": t(dtype, b), "epsilon": t(dtype, np.asarray(1e-5, NP_OF[dtype]))},
         [(dtype, (x64 - m) / np.sqrt(v + eps) * g + b)], *((1e-2, 4e-3) if dtype == "fp16" else (1e-5, 1e-5)))
    # The ANEMLL RMSNorm trick: layer_norm of concat([x, -x]) has zero mean.
    xx = np.concatenate([x, -x], axis=-1).astype(np.float64)
    eps6 = float(np.float16(1e-6)) if dtype == "fp16" else 1e-6
    case(f"layer_norm_{dtype}_rms_trick_no_affine", "layer_norm", {"x": t(dtype, xx)},
         {"axes": i32([-1]), "epsilon": t(dtype, np.asarray(eps6, NP_OF[dtype]))},
         [(dtype, xx / np.sqrt((xx * xx).mean(-1, keepdims=True) + eps6))], *((1e-2, 4e-3) if dtype == "fp16" else (1e-5, 1e-5)))
x = rnd((2, 3, 4, 5), "fp32").astype(np.float64)
g = rnd((3, 5)).astype(np.float64)
m = x.mean(axis=(1, 3), keepdims=True)
v = x.var(axis=(1, 3), keepdims=True)
case("layer_norm_fp32_axes_1_3", "layer_norm", {"x": t("fp32", x)}, {"axes": i32([1, 3]), "gamma": t("fp32", g)},
     [("fp32", (x - m) / np.sqrt(v + 1e-5) * g[None, :, None, :])], 1e-5, 1e-5)
mean = rnd((3,)).astype(np.float64)
var = rnd((3,), "fp32", 0.5, 2).astype(np.float64)
gam = rnd((3,)).astype(np.float64)
bet = rnd((3,)).astype(np.float64)
sh = (1, 3, 1, 1)
case("batch_norm_fp32", "batch_norm", {"x": t("fp32", x)},
     {"mean": t("fp32", mean), "variance": t("fp32", var), "gamma": t("fp32", gam), "beta": t("fp32", bet),
      "epsilon": t("fp32", np.float32(1e-3))},
     [("fp32", (x - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + float(np.float32(1e-3))) * gam.reshape(sh) + bet.reshape(sh))],
     1e-5, 1e-5)
m = x.mean(axis=(2, 3), keepdims=True)
v = x.var(axis=(2, 3), keepdims=True)
case("instance_norm_fp32", "instance_norm", {"x": t("fp32", x)}, {"gamma": t("fp32", gam), "beta": t("fp32", bet)},
     [("fp32", (x - m) / np.sqrt(v + 1e-5) * gam.reshape(sh) + bet.reshape(sh))], 1e-5, 1e-5)
x3 = rnd((2, 6)).astype(np.float64)
case("l2_norm_fp32_last_axis", "l2_norm", {"x": t("fp32", x3)}, {"axes": i32([-1])},
     [("fp32", x3 / np.sqrt(np.maximum((x3 * x3).sum(-1, keepdims=True), 1e-6)))], 1e-5, 1e-5)

# ---------------------------------------------------------------- shape ops
x = rnd((2, 3, 4), "fp16")
x64 = x.astype(np.float64)
case("reshape_infer_and_copy", "reshape", {"x": t("fp16", x)}, {"shape": i32([0, -1, 2])},
     [("fp16", x64.reshape(2, 6, 2))], 0, 0)
case("reshape_runtime_shape", "reshape", {"x": t("fp16", x), "shape": i32([4, 6])}, {}, [("fp16", x64.reshape(4, 6))], 0, 0)
case("transpose_negative_perm", "transpose", {"x": t("fp16", x)}, {"perm": i32([-1, 0, 1])},
     [("fp16", x64.transpose(2, 0, 1))], 0, 0)
y = rnd((1, 3, 1, 2), "fp32").astype(np.float64)
case("squeeze_axes_ignores_non_unit", "squeeze", {"x": t("fp32", y)}, {"axes": i32([0, 1])}, [("fp32", y.reshape(3, 1, 2))], 0, 0)
case("squeeze_all", "squeeze", {"x": t("fp32", y)}, {}, [("fp32", y.reshape(3, 2))], 0, 0)
case("expand_dims_negative", "expand_dims", {"x": t("fp16", x)}, {"axes": i32([-1, 1])},
     [("fp16", x64.reshape(2, 1, 3, 4, 1))], 0, 0)
case("flatten2d", "flatten2d", {"x": t("fp16", x)}, {"axis": i32(-1)}, [("fp16", x64.reshape(6, 4))], 0, 0)
a = rnd((2, 2, 4), "fp16")
case("concat_negative_axis", "concat", {"values": [t("fp16", x), t("fp16", a.reshape(2, 4, 2)[:, :3, :].copy())]},
     {"axis": i32(-1)}, [("fp16", np.concatenate([x64, a.reshape(2, 4, 2)[:, :3, :].astype(np.float64)], -1))], 0, 0)
b = rnd((2, 3, 4), "fp16")
inter = np.stack([x64, b.astype(np.float64)], axis=3).reshape(2, 3, 8)  # a[.., 0], b[.., 0], a[.., 1], ...
case("concat_interleave", "concat", {"values": [t("fp16", x), t("fp16", b)]},
     {"axis": i32(2), "interleave": t("bool", np.bool_(True))}, [("fp16", inter)], 0, 0)
case("concat_int32_slice_bounds", "concat", {"values": [i32([1]), i32([0]), i32([5]), i32([0])]}, {"axis": i32(0)},
     [("int32", np.array([1, 0, 5, 0]))], 0, 0)
CASES.append({"name": "split_num_splits", "op": "split", "inputs": {"x": t("fp16", x)},
              "params": {"axis": i32(-1), "num_splits": i32(2)},
              "outputs": [dict(t("fp16", p), name=f"out{i}") for i, p in enumerate(np.split(x64, 2, axis=-1))],
              "atol": 0, "rtol": 0})
CASES.append({"name": "split_sizes", "op": "split", "inputs": {"x": t("fp16", x)},
              "params": {"axis": i32(1), "split_sizes": i32([1, 2])},
              "outputs": [dict(t("fp16", p), name=f"out{i}") for i, p in enumerate(np.split(x64, [1], axis=1))],
              "atol": 0, "rtol": 0})
case("stack_axis", "stack", {"values": [t("fp16", x), t("fp16", b)]}, {"axis": i32(-1)},
     [("fp16", np.stack([x64, b.astype(np.float64)], -1))], 0, 0)
z = rnd((4, 5, 6), "fp32").astype(np.float64)
case("slice_by_index_basic", "slice_by_index", {"x": t("fp32", z)}, {"begin": i32([1, 0, 2]), "end": i32([3, 5, 6])},
     [("fp32", z[1:3, 0:5, 2:6])], 0, 0)
case("slice_by_index_negative_and_masks", "slice_by_index", {"x": t("fp32", z)},
     {"begin": i32([-3, 7, 0]), "end": i32([-1, 0, -2]), "begin_mask": t("bool", np.array([False, True, False])),
      "end_mask": t("bool", np.array([False, True, False]))}, [("fp32", z[-3:-1, :, 0:-2])], 0, 0)
case("slice_by_index_strides", "slice_by_index", {"x": t("fp32", z)},
     {"begin": i32([0, 4, 1]), "end": i32([4, 0, 6]), "stride": i32([2, -1, 3])}, [("fp32", z[0:4:2, 4:0:-1, 1:6:3])], 0, 0)
case("slice_by_index_reverse_full", "slice_by_index", {"x": t("fp32", z)},
     {"begin": i32([0, 0, 0]), "end": i32([0, 0, 0]), "stride": i32([-1, 1, -2]),
      "begin_mask": t("bool", np.array([True, True, True])), "end_mask": t("bool", np.array([True, True, True]))},
     [("fp32", z[::-1, :, ::-2])], 0, 0)
case("slice_by_index_squeeze", "slice_by_index", {"x": t("fp32", z)},
     {"begin": i32([1, 0, -1]), "end": i32([2, 5, 0]), "squeeze_mask": t("bool", np.array([True, False, True]))},
     [("fp32", z[1, 0:5, -1])], 0, 0)
case("slice_by_index_clamps_out_of_range", "slice_by_index", {"x": t("fp32", z)},
     {"begin": i32([-10, 2, 0]), "end": i32([10, 3, 100])}, [("fp32", z[-10:10, 2:3, 0:100])], 0, 0)
case("slice_by_index_runtime_bounds", "slice_by_index", {"x": t("fp32", z), "begin": i32([1, 1, 1]), "end": i32([2, 3, 4])},
     {}, [("fp32", z[1:2, 1:3, 1:4])], 0, 0)
case("slice_by_size", "slice_by_size", {"x": t("fp32", z)}, {"begin": i32([1, -3, 0]), "size": i32([2, -1, 3])},
     [("fp32", z[1:3, 2:5, 0:3])], 0, 0)
kv = rnd((4, 2, 8, 3), "fp16").astype(np.float64)
upd = rnd((1, 2, 2, 3), "fp16").astype(np.float64)
want = kv.copy()
want[1:2, :, 5:7, :] = upd
case("slice_update_kv_pattern_runtime_bounds", "slice_update",
     {"x": t("fp16", kv), "update": t("fp16", upd), "begin": i32([1, 0, 5, 0]), "end": i32([2, 0, 7, 0])},
     {"end_mask": t("bool", np.array([False, True, False, True]))}, [("fp16", want)], 0, 0)
want = kv.copy()
u2 = rnd((2, 4, 3), "fp16").astype(np.float64)
want[3, :, 7:0:-2, :] = u2
case("slice_update_squeeze_negative_stride", "slice_update", {"x": t("fp16", kv), "update": t("fp16", u2)},
     {"begin": i32([-1, 0, 7, 0]), "end": i32([0, 2, 0, 3]), "stride": i32([1, 1, -2, 1]),
      "squeeze_mask": t("bool", np.array([True, False, False, False]))}, [("fp16", want)], 0, 0)
error_case("slice_update_out_of_bounds_is_an_error", "slice_update",
           {"x": t("fp16", kv), "update": t("fp16", upd), "begin": i32([1, 0, 7, 0]), "end": i32([2, 0, 9, 0])},
           {"end_mask": t("bool", np.array([False, True, False, True]))}, [("fp16", [4, 2, 8, 3])], "update has shape")
case("tile", "tile", {"x": t("fp16", x)}, {"reps": i32([1, 2, 3])}, [("fp16", np.tile(x64, (1, 2, 3)))], 0, 0)
w = rnd((2, 3, 4), "fp32").astype(np.float64)
case("pad_constant", "pad", {"x": t("fp32", w)}, {"pad": i32([1, 0, 2, 1]), "mode": s("constant"),
                                                   "constant_val": t("fp32", np.float32(-1.5))},
     [("fp32", np.pad(w, [(0, 0), (1, 0), (2, 1)], constant_values=-1.5))], 0, 0)
case("pad_reflect", "pad", {"x": t("fp32", w)}, {"pad": i32([2, 3]), "mode": s("reflect")},
     [("fp32", np.pad(w, [(0, 0), (0, 0), (2, 3)], mode="reflect"))], 0, 0)
case("pad_replicate", "pad", {"x": t("fp32", w)}, {"pad": i32([1, 2, 0, 3]), "mode": s("replicate")},
     [("fp32", np.pad(w, [(0, 0), (1, 2), (0, 3)], mode="edge"))], 0, 0)
case("reverse_axes", "reverse", {"x": t("fp32", w)}, {"axes": i32([0, -1])}, [("fp32", w[::-1, :, ::-1])], 0, 0)
table = rnd((10, 4), "fp16").astype(np.float64)
ids = np.array([[3, 0, 9], [1, 1, 2]])
case("gather_embedding_axis0", "gather", {"x": t("fp16", table), "indices": i32(ids)}, {"axis": i32(0)},
     [("fp16", table[ids])], 0, 0)
rope = rnd((1, 12, 4), "fp16").astype(np.float64)
case("gather_axis1_int16_indices", "gather", {"x": t("fp16", rope), "indices": t("int16", np.array([5, 0, 11]))},
     {"axis": i32(1)}, [("fp16", rope[:, [5, 0, 11], :])], 0, 0)
case("gather_negative_indices", "gather", {"x": t("fp16", table), "indices": i32([-1, -10])}, {"axis": i32(-2)},
     [("fp16", table[[9, 0]])], 0, 0)
bx = rnd((2, 5, 3), "fp32").astype(np.float64)
bi = np.array([[4, 0], [1, 1]])
case("gather_batch_dims_1", "gather", {"x": t("fp32", bx), "indices": i32(bi)}, {"axis": i32(1), "batch_dims": i32(1)},
     [("fp32", np.stack([bx[0][bi[0]], bx[1][bi[1]]]))], 0, 0)
error_case("gather_out_of_range_is_an_error", "gather", {"x": t("fp16", table), "indices": i32([10])}, {"axis": i32(0)},
           [("fp16", [1, 4])], "out of bounds")
gi = RNG.integers(0, 5, size=(2, 3, 3))
case("gather_along_axis", "gather_along_axis", {"x": t("fp32", bx), "indices": i32(gi)}, {"axis": i32(1)},
     [("fp32", np.take_along_axis(bx, gi, axis=1))], 0, 0)
nd = np.array([[[1, 4], [0, 0]], [[1, 2], [0, 3]]])
case("gather_nd_depth2", "gather_nd", {"x": t("fp32", bx), "indices": i32(nd)}, {},
     [("fp32", bx[nd[..., 0], nd[..., 1]])], 0, 0)
case("fill_runtime_shape", "fill", {"shape": i32([2, 3])}, {"value": t("fp16", np.float16(2.5))},
     [("fp16", np.full((2, 3), 2.5))], 0, 0)
case("shape_of", "shape", {"x": t("fp16", x)}, {}, [("int32", np.array([2, 3, 4]))], 0, 0)
case("range_1d_int", "range_1d", {"end": i32(10)}, {"start": i32(1), "step": i32(3)}, [("int32", np.arange(1, 10, 3))], 0, 0)
case("range_1d_float_negative_step", "range_1d", {}, {"start": t("fp32", np.float32(2.0)), "end": t("fp32", np.float32(-1.0)),
                                                         "step": t("fp32", np.float32(-0.75))},
     [("fp32", np.arange(2.0, -1.0, -0.75))], 1e-6, 1e-6)
bp = rnd((2, 4, 5), "fp32").astype(np.float64)
ii, jj = np.meshgrid(np.arange(4), np.arange(5), indexing="ij")
for lower, upper in ((-1, 0), (1, 2), (0, -1)):
    keep = ((lower < 0) | (ii - jj <= lower)) & ((upper < 0) | (jj - ii <= upper))
    case(f"band_part_{lower}_{upper}", "band_part", {"x": t("fp32", bp)}, {"lower": i32(lower), "upper": i32(upper)},
         [("fp32", np.where(keep, bp, 0.0))], 0, 0)

# ---------------------------------------------------------------- constexpr (evaluated at load)
UINT = {1: "uint1", 2: "uint2", 3: "uint3", 4: "uint4", 6: "uint6", 8: "uint8"}
for bits in range(1, 9):
    dtype_name = UINT.get(bits)
    if dtype_name is None:
        continue
    n = 2 ** bits
    # Grouped tables along axis 0 (ANEMLL: one table per 8 output channels) and along axis 1.
    for shape, groups in (((16, 3, 1, 1), (2, 1, 1, 1)), ((4, 6), (2, 3))):
        idx = RNG.integers(0, n, size=shape)
        lut = rnd(groups + (n, 1), "fp16")
        dense = np.zeros(shape)
        gs = [shape[k] // groups[k] for k in range(len(shape))]
        for pos in np.ndindex(*shape):
            g = tuple(pos[k] // gs[k] for k in range(len(shape)))
            dense[pos] = lut[g + (idx[pos], 0)]
        case(f"constexpr_lut_to_dense_ios18_{bits}bit_groups_{'x'.join(map(str, groups))}", "constexpr_lut_to_dense", {},
             {"indices": t(dtype_name, idx), "lut": t("fp16", lut)}, [("fp16", dense)], 0, 0)
for bits in (1, 2, 3, 4, 5, 6, 7, 8):
    # iOS16/17 form: one table of 2^bits entries, indices packed LSB-first into bytes.
    n = 2 ** bits
    shape = (3, 5)
    idx = RNG.integers(0, n, size=shape).reshape(-1)
    bitstream = []
    for v in idx:
        bitstream += [(int(v) >> b) & 1 for b in range(bits)]
    bitstream += [0] * (-len(bitstream) % 8)
    packed = np.packbits(np.array(bitstream, np.uint8), bitorder="little")
    lut = rnd((n,), "fp32")
    case(f"constexpr_lut_to_dense_ios16_{bits}bit_packed", "constexpr_lut_to_dense", {},
         {"indices": t("uint8", packed), "lut": t("fp32", lut), "shape": t("uint32", np.array(shape))},
         [("fp32", lut[idx].reshape(shape).astype(np.float64))], 0, 0)
# Vector palettisation: each index selects a vector of 2 values laid along vector_axis=1.
idx = RNG.integers(0, 4, size=(4, 3))
lut = rnd((2, 1, 4, 2), "fp16")
dense = np.zeros((4, 6))
for i in range(4):
    for j in range(3):
        dense[i, 2 * j: 2 * j + 2] = lut[i // 2, 0, idx[i, j], :]
case("constexpr_lut_to_dense_ios18_vector_axis1", "constexpr_lut_to_dense", {},
     {"indices": t("uint2", idx), "lut": t("fp16", lut), "vector_axis": i32(1)}, [("fp16", dense)], 0, 0)
q = RNG.integers(-128, 128, size=(3, 4))
zp = RNG.integers(-5, 5, size=(4,))
sc = rnd((4,), "fp32", 0.01, 0.1)
case("constexpr_affine_dequantize_axis1", "constexpr_affine_dequantize", {},
     {"quantized_data": t("int8", q), "zero_point": t("int8", zp), "scale": t("fp32", sc), "axis": i32(1)},
     [("fp32", (q - zp[None, :]) * sc[None, :].astype(np.float64))], 1e-6, 1e-6)
qu = RNG.integers(0, 256, size=(3, 4))
case("constexpr_affine_dequantize_scalar_params", "constexpr_affine_dequantize", {},
     {"quantized_data": t("uint8", qu), "zero_point": t("uint8", np.uint8(128)), "scale": t("fp16", np.float16(0.5)),
      "axis": i32(0)}, [("fp16", (qu - 128) * 0.5)], 0, 0)
for dtype_name, lo, hi in (("int4", -8, 8), ("uint4", 0, 16), ("int8", -128, 128)):
    d = RNG.integers(lo, hi, size=(4, 6))
    scale = rnd((2, 3), "fp16", 0.05, 0.5)
    off = RNG.integers(lo, hi, size=(2, 3))
    full_s = np.repeat(np.repeat(scale.astype(np.float64), 2, 0), 2, 1)
    full_o = np.repeat(np.repeat(off, 2, 0), 2, 1)
    case(f"constexpr_blockwise_shift_scale_{dtype_name}", "constexpr_blockwise_shift_scale", {},
         {"data": t(dtype_name, d), "scale": t("fp16", scale), "offset": t(dtype_name, off)},
         [("fp16", full_s * (d - full_o))], 2e-3, 2e-3)
m = RNG.integers(0, 2, size=(3, 5))
nz = rnd((int(m.sum()),), "fp16")
dense = np.zeros((3, 5))
dense[m.astype(bool)] = nz
case("constexpr_sparse_to_dense_ios18", "constexpr_sparse_to_dense", {},
     {"nonzero_data": t("fp16", nz), "mask": t("uint1", m)}, [("fp16", dense)], 0, 0)
case("constexpr_sparse_to_dense_ios16_packed", "constexpr_sparse_to_dense", {},
     {"nonzero_data": t("fp16", nz), "mask": t("uint8", np.packbits(m.reshape(-1).astype(np.uint8), bitorder="little")),
      "shape": t("uint32", np.array([3, 5]))}, [("fp16", dense)], 0, 0)

# ---------------------------------------------------------------- pooling, upsampling
x = rnd((1, 2, 5, 6), "fp32").astype(np.float64)


def pool_ref(x, k, st, pads, fn, exclude=False):
    n, c, h, w = x.shape
    fill = -np.inf if fn is np.max else 0.0
    xp = np.pad(x, [(0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])], constant_values=fill)
    ones = np.pad(np.ones_like(x), [(0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])])
    oh = (xp.shape[2] - k[0]) // st[0] + 1
    ow = (xp.shape[3] - k[1]) // st[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * st[0]: i * st[0] + k[0], j * st[1]: j * st[1] + k[1]]
            if fn is np.max:
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                cnt = ones[:, :, i * st[0]: i * st[0] + k[0], j * st[1]: j * st[1] + k[1]].sum(axis=(2, 3)) if exclude else k[0] * k[1]
                out[:, :, i, j] = win.sum(axis=(2, 3)) / cnt
    return out


case("max_pool_2d_custom_pad", "max_pool", {"x": t("fp32", x)},
     {"kernel_sizes": i32([2, 3]), "strides": i32([2, 2]), "pad_type": s("custom"), "pad": i32([1, 0, 1, 1])},
     [("fp32", pool_ref(x, (2, 3), (2, 2), (1, 0, 1, 1), np.max))], 1e-6, 1e-6)
case("avg_pool_2d_valid", "avg_pool", {"x": t("fp32", x)},
     {"kernel_sizes": i32([2, 2]), "strides": i32([1, 2]), "pad_type": s("valid")},
     [("fp32", pool_ref(x, (2, 2), (1, 2), (0, 0, 0, 0), np.mean))], 1e-6, 1e-6)
case("avg_pool_2d_exclude_padding", "avg_pool", {"x": t("fp32", x)},
     {"kernel_sizes": i32([3, 3]), "strides": i32([2, 2]), "pad_type": s("custom"), "pad": i32([1, 1, 1, 1]),
      "exclude_padding_from_average": t("bool", np.bool_(True))},
     [("fp32", pool_ref(x, (3, 3), (2, 2), (1, 1, 1, 1), np.mean, exclude=True))], 1e-6, 1e-6)
case("upsample_nearest_neighbor_2x3", "upsample_nearest_neighbor", {"x": t("fp32", x)},
     {"scale_factor_height": t("fp32", np.float32(2)), "scale_factor_width": t("fp32", np.float32(3))},
     [("fp32", x.repeat(2, axis=2).repeat(3, axis=3))], 0, 0)

# ---------------------------------------------------------------- lstm, attention


def lstm_ref(x, wih, whh, bias, h, c, reverse=False):
    hs = h.shape[1]
    outs = [None] * x.shape[0]
    order = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    for step in order:
        g = x[step] @ wih.T + h @ whh.T + bias
        i, f, o, z = (g[:, k * hs:(k + 1) * hs] for k in range(4))
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(z)
        h = sigmoid(o) * np.tanh(c)
        outs[step] = h
    return np.stack(outs), h, c


S, B, I, H = 4, 2, 3, 5
x = rnd((S, B, I)).astype(np.float64)
wih = rnd((4 * H, I), "fp32", -0.5, 0.5).astype(np.float64)
whh = rnd((4 * H, H), "fp32", -0.5, 0.5).astype(np.float64)
bias = rnd((4 * H,), "fp32", -0.5, 0.5).astype(np.float64)
h0 = rnd((B, H)).astype(np.float64)
c0 = rnd((B, H)).astype(np.float64)
for direction in ("forward", "reverse"):
    seq, hN, cN = lstm_ref(x, wih, whh, bias, h0, c0, direction == "reverse")
    CASES.append({"name": f"lstm_{direction}_sequence", "op": "lstm",
                  "inputs": {"x": t("fp32", x), "initial_h": t("fp32", h0), "initial_c": t("fp32", c0)},
                  "params": {"weight_ih": t("fp32", wih), "weight_hh": t("fp32", whh), "bias": t("fp32", bias),
                             "direction": s(direction), "output_sequence": t("bool", np.bool_(True))},
                  "outputs": [dict(t("fp32", v), name=f"out{i}") for i, v in enumerate((seq, hN, cN))],
                  "atol": 1e-5, "rtol": 1e-5})
wih_b = rnd((4 * H, I), "fp32", -0.5, 0.5).astype(np.float64)
whh_b = rnd((4 * H, H), "fp32", -0.5, 0.5).astype(np.float64)
h0b = rnd((B, 2 * H)).astype(np.float64)
c0b = rnd((B, 2 * H)).astype(np.float64)
sf, hf, cf = lstm_ref(x, wih, whh, bias, h0b[:, :H], c0b[:, :H])
sb, hb, cb = lstm_ref(x, wih_b, whh_b, np.zeros(4 * H), h0b[:, H:], c0b[:, H:], True)
CASES.append({"name": "lstm_bidirectional_last_step", "op": "lstm",
              "inputs": {"x": t("fp32", x), "initial_h": t("fp32", h0b), "initial_c": t("fp32", c0b)},
              "params": {"weight_ih": t("fp32", wih), "weight_hh": t("fp32", whh), "bias": t("fp32", bias),
                         "weight_ih_back": t("fp32", wih_b), "weight_hh_back": t("fp32", whh_b),
                         "direction": s("bidirectional"), "output_sequence": t("bool", np.bool_(False))},
              "outputs": [dict(t("fp32", v), name=f"out{i}") for i, v in enumerate((
                  np.concatenate([hf, hb], -1)[None], np.concatenate([hf, hb], -1), np.concatenate([cf, cb], -1)))],
              "atol": 1e-5, "rtol": 1e-5})
q = rnd((1, 2, 3, 4), "fp16").astype(np.float64)
k = rnd((1, 2, 5, 4), "fp16").astype(np.float64)
v = rnd((1, 2, 5, 6), "fp16").astype(np.float64)
fmask = np.where(np.arange(5)[None, :] <= np.arange(3)[:, None] + 2, 0.0, -np.inf)
w_att = softmax(q @ np.swapaxes(k, -1, -2) / 2.0 + fmask, -1)
case("sdpa_fp16_float_mask", "scaled_dot_product_attention",
     {"query": t("fp16", q), "key": t("fp16", k), "value": t("fp16", v), "attn_mask": t("fp16", fmask)}, {},
     [("fp16", w_att @ v)], 5e-3, 5e-3)
case("sdpa_fp16_bool_mask", "scaled_dot_product_attention",
     {"query": t("fp16", q), "key": t("fp16", k), "value": t("fp16", v), "attn_mask": t("bool", fmask == 0)}, {},
     [("fp16", w_att @ v)], 5e-3, 5e-3)

# ---------------------------------------------------------------- scatter, one_hot, ordering
data = rnd((4, 3), "fp32").astype(np.float64)
upd = rnd((2, 3), "fp32").astype(np.float64)
for mode in ("update", "add", "mul", "max"):
    want = data.copy()
    for k, i in enumerate([2, -1]):
        cur = want[i]
        want[i] = {"update": upd[k], "add": cur + upd[k], "mul": cur * upd[k], "max": np.maximum(cur, upd[k])}[mode]
    case(f"scatter_axis0_{mode}", "scatter", {"data": t("fp32", data), "indices": i32([2, -1]), "updates": t("fp32", upd)},
         {"axis": i32(0), "mode": s(mode)}, [("fp32", want)], 1e-6, 1e-6)
upd1 = rnd((4, 2), "fp32").astype(np.float64)
want = data.copy()
want[:, [0, 2]] += upd1
case("scatter_axis1_add", "scatter", {"data": t("fp32", data), "indices": i32([0, 2]), "updates": t("fp32", upd1)},
     {"axis": i32(1), "mode": s("add")}, [("fp32", want)], 1e-6, 1e-6)
ia = np.array([[1, 0, 2], [3, 3, 0]])
ua = rnd((2, 3), "fp32").astype(np.float64)
want = data.copy()
np.put_along_axis(want, ia, ua, axis=0)
case("scatter_along_axis_update", "scatter_along_axis",
     {"data": t("fp32", data), "indices": i32(ia), "updates": t("fp32", ua)}, {"axis": i32(0), "mode": s("update")},
     [("fp32", want)], 0, 0)
ind = np.array([[0, 1], [3, 2]])
un = rnd((2,), "fp32").astype(np.float64)
want = data.copy()
want[0, 1] += un[0]
want[3, 2] += un[1]
case("scatter_nd_add", "scatter_nd", {"data": t("fp32", data), "indices": i32(ind), "updates": t("fp32", un)},
     {"mode": s("add")}, [("fp32", want)], 1e-6, 1e-6)
oh = np.array([[0, 2], [3, 1]])
want = np.where(np.arange(4)[None, :, None] == oh[:, None, :], 5.0, -1.0)
case("one_hot_axis1", "one_hot", {"indices": i32(oh)},
     {"one_hot_vector_size": i32(4), "axis": i32(1), "on_value": t("fp32", np.float32(5)), "off_value": t("fp32", np.float32(-1))},
     [("fp32", want)], 0, 0)
xs = rnd((3, 6), "fp16")
xs[0, 1] = xs[0, 4] = np.float16(1.5)
x64 = xs.astype(np.float64)
desc = np.argsort(-x64, axis=-1, kind="stable")
asc0 = np.argsort(x64, axis=0, kind="stable")
CASES.append({"name": "topk_k3_descending", "op": "topk", "inputs": {"x": t("fp16", xs)},
              "params": {"k": i32(3), "axis": i32(-1)},
              "outputs": [dict(t("fp16", np.take_along_axis(x64, desc[:, :3], -1)), name="out0"),
                          dict(t("int32", desc[:, :3]), name="out1")], "atol": 0, "rtol": 0})
CASES.append({"name": "topk_k2_ascending_axis0", "op": "topk", "inputs": {"x": t("fp16", xs)},
              "params": {"k": i32(2), "axis": i32(0), "ascending": t("bool", np.bool_(True))},
              "outputs": [dict(t("fp16", np.take_along_axis(x64, asc0[:2], 0)), name="out0"),
                          dict(t("int32", asc0[:2]), name="out1")], "atol": 0, "rtol": 0})
case("argsort_descending", "argsort", {"x": t("fp16", xs)}, {"axis": i32(-1)}, [("int32", desc)], 0, 0)
case("argsort_ascending_axis0", "argsort", {"x": t("fp16", xs)}, {"axis": i32(0), "ascending": t("bool", np.bool_(True))},
     [("int32", asc0)], 0, 0)
xc = rnd((2, 5), "fp32").astype(np.float64)
case("cumsum_axis1", "cumsum", {"x": t("fp32", xc)}, {"axis": i32(1)}, [("fp32", np.cumsum(xc, 1))], 1e-6, 1e-6)
excl_rev = np.flip(np.cumsum(np.flip(xc, 1), 1), 1) - xc
case("cumsum_exclusive_reverse", "cumsum", {"x": t("fp32", xc)},
     {"axis": i32(-1), "exclusive": t("bool", np.bool_(True)), "reverse": t("bool", np.bool_(True))},
     [("fp32", excl_rev)], 1e-6, 1e-6)


# ---------------------------------------------------------------- bilinear resampling (grids from the Core ML op docs)


def grid(mode, xin, xout):
    i = np.arange(xout, dtype=np.float64)
    if mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS"):
        g = i * (xin - 1) / max(xout - 1, 1)
        if mode == "ALIGN_CORNERS" and xout == 1:
            g = np.array([(xin - 1) / 2])
    elif mode == "DEFAULT":
        g = i * (xin - xin / xout) / max(xout - 1, 1)
    elif mode == "OFFSET_CORNERS":
        delta = max(1, xin - 1) / xout
        g = 0.5 * delta + i * delta
    elif mode == "UNALIGN_CORNERS":
        g = i * xin / xout + 0.5 * xin / xout - 0.5
    else:  # ASYMMETRIC
        g = i * xin / xout
    return np.clip(g, 0, xin - 1)


def bilinear_ref(x, oh, ow, mode):
    n, c, h, w = x.shape
    gh, gw = grid(mode, h, oh), grid(mode, w, ow)
    out = np.zeros((n, c, oh, ow))
    for a, y in enumerate(gh):
        y0 = int(np.floor(y)); y1 = min(y0 + 1, h - 1); wy = y - y0
        for b, z in enumerate(gw):
            z0 = int(np.floor(z)); z1 = min(z0 + 1, w - 1); wz = z - z0
            out[:, :, a, b] = ((1 - wy) * ((1 - wz) * x[:, :, y0, z0] + wz * x[:, :, y0, z1])
                               + wy * ((1 - wz) * x[:, :, y1, z0] + wz * x[:, :, y1, z1]))
    return out


xb = rnd((1, 2, 3, 4), "fp32").astype(np.float64)
for mode in ("STRICT_ALIGN_CORNERS", "ALIGN_CORNERS", "DEFAULT", "OFFSET_CORNERS", "UNALIGN_CORNERS"):
    case(f"resize_bilinear_{mode.lower()}", "resize_bilinear", {"x": t("fp32", xb)},
         {"target_size_height": i32(5), "target_size_width": i32(6), "sampling_mode": s(mode)},
         [("fp32", bilinear_ref(xb, 5, 6, mode))], 1e-5, 1e-5)
case("resize_bilinear_align_corners_single_row", "resize_bilinear", {"x": t("fp32", xb)},
     {"target_size_height": i32(1), "target_size_width": i32(3), "sampling_mode": s("ALIGN_CORNERS")},
     [("fp32", bilinear_ref(xb, 1, 3, "ALIGN_CORNERS"))], 1e-5, 1e-5)
for align, half, mode in ((True, None, "STRICT_ALIGN_CORNERS"), (False, None, "UNALIGN_CORNERS"), (False, False, "ASYMMETRIC")):
    params = {"scale_factor_height": t("fp32", np.float32(2)), "scale_factor_width": t("fp32", np.float32(1.5)),
              "align_corners": t("bool", np.bool_(align))}
    if half is not None:
        params["half_pixel_centers"] = t("bool", np.bool_(half))
    case(f"upsample_bilinear_{mode.lower()}", "upsample_bilinear", {"x": t("fp32", xb)}, params,
         [("fp32", bilinear_ref(xb, 6, 6, mode))], 1e-5, 1e-5)


def main():
    out = os.path.join(os.path.dirname(__file__), "..", "crates", "runtime", "tests", "data", "op_cases.json")
    out = os.path.normpath(out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump({"generator": "tools/gen_op_cases.py", "numpy": np.__version__, "cases": CASES}, fh, separators=(",", ":"))
    print(f"wrote {len(CASES)} cases to {out}")


if __name__ == "__main__":
    main()
