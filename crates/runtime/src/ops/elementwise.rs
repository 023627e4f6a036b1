//! Elementwise unary, binary, comparison and logical ops, plus `cast`, `identity` and `select`.
//! Binary ops broadcast numpy-style; fp16 inputs give fp16 results rounded once per op.

pub(crate) mod fp16;

use candle_core::{DType, Tensor};
use candle_coreml_format::mil::DataType;

use super::{broadcast_shapes, broadcast_to, in_f32, map_host, Kernel, OpCtx};
use crate::dtype::{is_int_dtype, storage_dtype};
use crate::error::Result;

/// Elementwise kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("add", add),
    ("sub", sub),
    ("mul", mul),
    ("real_div", real_div),
    ("floor_div", floor_div),
    ("mod", modulo),
    ("pow", pow),
    ("maximum", maximum),
    ("minimum", minimum),
    ("equal", equal),
    ("not_equal", not_equal),
    ("less", less),
    ("less_equal", less_equal),
    ("greater", greater),
    ("greater_equal", greater_equal),
    ("logical_and", logical_and),
    ("logical_or", logical_or),
    ("logical_xor", logical_xor),
    ("logical_not", logical_not),
    ("abs", abs),
    ("acos", acos),
    ("asin", asin),
    ("atan", atan),
    ("atanh", atanh),
    ("ceil", ceil),
    ("cos", cos),
    ("cosh", cosh),
    ("erf", erf),
    ("exp", exp),
    ("exp2", exp2),
    ("floor", floor),
    ("inverse", inverse),
    ("log", log),
    ("round", round),
    ("rsqrt", rsqrt),
    ("sign", sign),
    ("sin", sin),
    ("sinh", sinh),
    ("sqrt", sqrt),
    ("square", square),
    ("tan", tan),
    ("threshold", threshold),
    ("clip", clip),
    ("cast", cast),
    ("identity", identity),
    ("select", select),
];

/// Both operands `x` and `y`, of one dtype (a mismatch is an error).
fn operands(ctx: &OpCtx<'_>) -> Result<(Tensor, Tensor)> {
    let x = ctx.tensor("x")?;
    let y = ctx.tensor("y")?;
    if x.dtype() != y.dtype() {
        return Err(ctx.err(format!("x is {:?} but y is {:?}", x.dtype(), y.dtype())));
    }
    if broadcast_shapes(&[x.dims(), y.dims()]).is_none() {
        return Err(ctx.err(format!(
            "shapes {:?} and {:?} do not broadcast",
            x.dims(),
            y.dims()
        )));
    }
    Ok((x, y))
}

/// `add(x, y)`: x + y.
fn add(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    if let Some(out) = fp16::map_elementwise([&x, &y], |[a, b]| a + b) {
        return Ok(vec![out]);
    }
    Ok(vec![x.broadcast_add(&y)?])
}

/// `sub(x, y)`: x - y.
fn sub(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    if let Some(out) = fp16::map_elementwise([&x, &y], |[a, b]| a - b) {
        return Ok(vec![out]);
    }
    Ok(vec![x.broadcast_sub(&y)?])
}

/// `mul(x, y)`: x * y.
fn mul(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    if let Some(out) = fp16::map_elementwise([&x, &y], |[a, b]| a * b) {
        return Ok(vec![out]);
    }
    Ok(vec![x.broadcast_mul(&y)?])
}

/// `real_div(x, y)`: x / y as real numbers (integer inputs are divided exactly, then cast to the declared type).
fn real_div(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    if is_int_dtype(x.dtype()) {
        let out = x
            .to_dtype(DType::F64)?
            .broadcast_div(&y.to_dtype(DType::F64)?)?;
        return Ok(vec![out]);
    }
    if let Some(out) = fp16::map_elementwise([&x, &y], |[a, b]| a / b) {
        return Ok(vec![out]);
    }
    Ok(vec![x.broadcast_div(&y)?])
}

/// Applies `f` to the broadcast pair on the host in f64 (for ops candle lacks).
fn binary_host(ctx: &OpCtx<'_>, f: impl Fn(f64, f64) -> f64) -> Result<Tensor> {
    let (x, y) = operands(ctx)?;
    let shape = broadcast_shapes(&[x.dims(), y.dims()]).unwrap_or_default();
    let dtype = x.dtype();
    let xs = broadcast_to(&x, &shape)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let ys = broadcast_to(&y, &shape)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    let out: Vec<f64> = xs.iter().zip(&ys).map(|(&a, &b)| f(a, b)).collect();
    Ok(Tensor::from_vec(out, shape, x.device())?.to_dtype(dtype)?)
}

/// `floor_div(x, y)`: floor(x / y).
fn floor_div(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    Ok(vec![binary_host(ctx, |a, b| (a / b).floor())?])
}

/// `mod(x, y)`: x - floor(x / y) * y (the sign follows y, as in Python).
fn modulo(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    Ok(vec![binary_host(ctx, |a, b| a - (a / b).floor() * b)?])
}

/// `pow(x, y)`: x raised to y.
fn pow(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    Ok(vec![binary_host(ctx, f64::powf)?])
}

/// `maximum(x, y)`: elementwise max.
fn maximum(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_maximum(&y)?])
}

/// `minimum(x, y)`: elementwise min.
fn minimum(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_minimum(&y)?])
}

/// `equal(x, y)`: x == y (bool).
fn equal(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_eq(&y)?])
}

/// `not_equal(x, y)`: x != y (bool).
fn not_equal(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_ne(&y)?])
}

/// `less(x, y)`: x < y (bool).
fn less(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_lt(&y)?])
}

/// `less_equal(x, y)`: x <= y (bool).
fn less_equal(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_le(&y)?])
}

/// `greater(x, y)`: x > y (bool).
fn greater(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_gt(&y)?])
}

/// `greater_equal(x, y)`: x >= y (bool).
fn greater_equal(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![x.broadcast_ge(&y)?])
}

/// A bool operand normalised to 0/1 `U8`.
fn as_bool(t: &Tensor) -> Result<Tensor> {
    Ok(t.ne(0f64)?)
}

/// `logical_and(x, y)`: x AND y.
fn logical_and(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![as_bool(&x)?.broadcast_minimum(&as_bool(&y)?)?])
}

/// `logical_or(x, y)`: x OR y.
fn logical_or(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![as_bool(&x)?.broadcast_maximum(&as_bool(&y)?)?])
}

/// `logical_xor(x, y)`: x XOR y.
fn logical_xor(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let (x, y) = operands(ctx)?;
    Ok(vec![as_bool(&x)?.broadcast_ne(&as_bool(&y)?)?])
}

/// `logical_not(x)`: NOT x.
fn logical_not(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    Ok(vec![ctx.tensor("x")?.eq(0f64)?])
}

/// Runs a unary float function on `x` (fp16/bf16 widened to f32, integers to f64) and returns `x`'s dtype.
fn unary(ctx: &OpCtx<'_>, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if is_int_dtype(x.dtype()) {
        let out = f(&x.to_dtype(DType::F64)?)?;
        return Ok(vec![out.to_dtype(x.dtype())?]);
    }
    Ok(vec![in_f32(&x, f)?])
}

/// `abs(x)`: |x|.
fn abs(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.abs()?))
}

/// `acos(x)`: arc cosine.
fn acos(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::acos))
}

/// `asin(x)`: arc sine.
fn asin(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::asin))
}

/// `atan(x)`: arc tangent.
fn atan(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::atan))
}

/// `atanh(x)`: inverse hyperbolic tangent.
fn atanh(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::atanh))
}

/// `ceil(x)`: smallest integer >= x.
fn ceil(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.ceil()?))
}

/// `cos(x)`: cosine.
fn cos(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.cos()?))
}

/// `cosh(x)`: hyperbolic cosine.
fn cosh(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::cosh))
}

/// `erf(x)`: Gauss error function.
fn erf(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.erf()?))
}

/// `exp(x)`: e^x.
fn exp(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.exp()?))
}

/// `exp2(x)`: 2^x.
fn exp2(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::exp2))
}

/// `floor(x)`: largest integer <= x.
fn floor(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.floor()?))
}

/// `inverse(x, epsilon=1e-4)`: 1 / (x + epsilon).
fn inverse(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let eps = ctx.float_or("epsilon", 1e-4)?;
    unary(ctx, |x| Ok((x + eps)?.recip()?))
}

/// `log(x, epsilon=1e-45)`: natural log of (x + epsilon).
fn log(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let eps = ctx.float_or("epsilon", 1e-45)?;
    unary(ctx, |x| Ok((x + eps)?.log()?))
}

/// `round(x)`: nearest integer, ties to even.
fn round(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::round_ties_even))
}

/// `rsqrt(x, epsilon=1e-12)`: 1 / sqrt(x + epsilon).
fn rsqrt(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let eps = ctx.float_or("epsilon", 1e-12)?;
    unary(ctx, |x| Ok((x + eps)?.sqrt()?.recip()?))
}

/// `sign(x)`: -1, 0 or 1.
fn sign(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.sign()?))
}

/// `sin(x)`: sine.
fn sin(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.sin()?))
}

/// `sinh(x)`: hyperbolic sine.
fn sinh(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::sinh))
}

/// `sqrt(x)`: square root.
fn sqrt(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.sqrt()?))
}

/// `square(x)`: x * x.
fn square(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| Ok(x.sqr()?))
}

/// `tan(x)`: tangent.
fn tan(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    unary(ctx, |x| map_host(x, f32::tan))
}

/// `threshold(x, alpha)`: max(x, alpha).
fn threshold(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 0.0)?;
    unary(ctx, |x| Ok(x.maximum(alpha)?))
}

/// `clip(x, alpha, beta)`: min(max(x, alpha), beta).
fn clip(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", f64::NEG_INFINITY)?;
    let beta = ctx.float_or("beta", f64::INFINITY)?;
    unary(ctx, |x| Ok(x.maximum(alpha)?.minimum(beta)?))
}

/// `cast(x, dtype)`: converts to the named type (floats to integers truncate toward zero; to bool is x != 0).
fn cast(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let name = ctx
        .opt_string("dtype")?
        .ok_or_else(|| ctx.err("missing parameter `dtype`"))?;
    let target = DataType::from_mil_name(&name)
        .or_else(|| ctx.out_dtype(0))
        .ok_or_else(|| ctx.err(format!("unknown dtype `{name}`")))?;
    if target == DataType::Bool {
        return Ok(vec![x.ne(0f64)?]);
    }
    let storage =
        storage_dtype(target).ok_or_else(|| ctx.err(format!("cannot cast to `{name}`")))?;
    if is_int_dtype(storage) && x.dtype().is_float() {
        // Truncate toward zero explicitly, whatever the float width.
        let truncated = x.to_dtype(DType::F64)?;
        let truncated = map_host_f64(&truncated, f64::trunc)?;
        return Ok(vec![truncated.to_dtype(storage)?]);
    }
    Ok(vec![x.to_dtype(storage)?])
}

fn map_host_f64(t: &Tensor, f: impl Fn(f64) -> f64) -> Result<Tensor> {
    let v: Vec<f64> = t
        .flatten_all()?
        .to_vec1::<f64>()?
        .into_iter()
        .map(f)
        .collect();
    Ok(Tensor::from_vec(v, t.dims(), t.device())?)
}

/// `identity(x)`: x unchanged.
fn identity(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    Ok(vec![ctx.tensor("x")?])
}

/// `select(cond, a, b)`: where cond is true take a, else b (all three broadcast).
fn select(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let cond = ctx.tensor("cond")?;
    let a = ctx.tensor("a")?;
    let b = ctx.tensor("b")?;
    if a.dtype() != b.dtype() {
        return Err(ctx.err(format!("a is {:?} but b is {:?}", a.dtype(), b.dtype())));
    }
    let shape = broadcast_shapes(&[cond.dims(), a.dims(), b.dims()]).ok_or_else(|| {
        ctx.err(format!(
            "shapes cond {:?}, a {:?}, b {:?} do not broadcast",
            cond.dims(),
            a.dims(),
            b.dims()
        ))
    })?;
    let cond = broadcast_to(&cond.ne(0f64)?, &shape)?;
    let a = broadcast_to(&a, &shape)?;
    let b = broadcast_to(&b, &shape)?;
    Ok(vec![cond.where_cond(&a, &b)?])
}
