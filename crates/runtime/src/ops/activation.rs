//! Activation functions and `softmax`. Computed in f32 for fp16/bf16 inputs, then rounded once to the input type.

use candle_core::{DType, Tensor};
use half::f16;

use super::elementwise::fp16;
use super::{in_f32, Kernel, OpCtx};
use crate::error::Result;

/// Activation kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("relu", relu),
    ("relu6", relu6),
    ("leaky_relu", leaky_relu),
    ("elu", elu),
    ("gelu", gelu),
    ("sigmoid", sigmoid),
    ("sigmoid_hard", sigmoid_hard),
    ("silu", silu),
    ("softplus", softplus),
    ("softsign", softsign),
    ("tanh", tanh),
    ("clamped_relu", clamped_relu),
    ("linear_activation", linear_activation),
    ("scaled_tanh", scaled_tanh),
    ("prelu", prelu),
    ("softmax", softmax),
];

fn act(ctx: &OpCtx<'_>, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if !x.dtype().is_float() {
        return Err(ctx.err(format!("x must be a float tensor, got {:?}", x.dtype())));
    }
    Ok(vec![in_f32(&x, f)?])
}

/// Logistic sigmoid 1 / (1 + e^-x).
pub fn sigmoid_f32(x: &Tensor) -> Result<Tensor> {
    Ok((x.neg()?.exp()? + 1.0)?.recip()?)
}

/// `relu(x)`: max(x, 0).
fn relu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    act(ctx, |x| Ok(x.relu()?))
}

/// `relu6(x)`: min(max(x, 0), 6).
fn relu6(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    act(ctx, |x| Ok(x.relu()?.minimum(6.0)?))
}

/// `leaky_relu(x, alpha=0.01)`: x if x >= 0 else alpha * x.
fn leaky_relu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 0.01)?;
    act(ctx, |x| Ok(x.ge(0.0)?.where_cond(x, &(x * alpha)?)?))
}

/// `elu(x, alpha=1)`: x if x > 0 else alpha * (e^x - 1).
fn elu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 1.0)?;
    act(ctx, |x| {
        Ok(x.gt(0.0)?.where_cond(x, &((x.exp()? - 1.0)? * alpha)?)?)
    })
}

/// `gelu(x, mode=EXACT)`: x * Phi(x); TANH_APPROXIMATION and SIGMOID_APPROXIMATION (x * sigmoid(1.702 x)) modes.
fn gelu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let mode = ctx.string_or("mode", "EXACT")?;
    match mode.as_str() {
        "EXACT" => act(ctx, |x| Ok(x.gelu_erf()?)),
        "TANH_APPROXIMATION" => act(ctx, |x| {
            let inner = ((x + (x.powf(3.0)? * 0.044715)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
            Ok(((inner.tanh()? + 1.0)? * x)?.affine(0.5, 0.0)?)
        }),
        "SIGMOID_APPROXIMATION" => act(ctx, |x| Ok((sigmoid_f32(&(x * 1.702)?)? * x)?)),
        other => Err(ctx.err(format!("unknown gelu mode `{other}`"))),
    }
}

/// `sigmoid(x)`: 1 / (1 + e^-x).
fn sigmoid(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    act(ctx, sigmoid_f32)
}

/// `sigmoid_hard(x, alpha=0.2, beta=0.5)`: min(max(alpha * x + beta, 0), 1).
fn sigmoid_hard(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 0.2)?;
    let beta = ctx.float_or("beta", 0.5)?;
    act(ctx, |x| {
        Ok(x.affine(alpha, beta)?.maximum(0.0)?.minimum(1.0)?)
    })
}

/// x * sigmoid(x) in f32, as [`sigmoid_f32`] and the product compute it.
fn silu_scalar(v: f32) -> f32 {
    (1.0 / ((-v).exp() + 1.0)) * v
}

/// `silu(x)`: x * sigmoid(x).
fn silu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    if let Some(out) = fp16::map_elementwise([&ctx.tensor("x")?], |[v]| silu_scalar(v)) {
        return Ok(vec![out]);
    }
    act(ctx, |x| Ok((sigmoid_f32(x)? * x)?))
}

/// Fused `mul(silu(x), y)` on fp16 tensors (broadcast numpy-style): silu(x) rounded to fp16, times y, rounded to
/// fp16, as the unfused ops round.
pub fn silu_mul(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let y = ctx.tensor("y")?;
    let (values, dims) = map_f16(ctx, [&x, &y], |[a, b], res| {
        for (r, v) in res.iter_mut().zip(a) {
            *r = silu_scalar(*v);
        }
        fp16::round_to_f16(res);
        for (r, v) in res.iter_mut().zip(b) {
            *r *= v;
        }
    })?;
    Ok(vec![Tensor::from_vec(values, dims, ctx.device)?])
}

/// [`fp16::map_values`] with an error naming the op when an input is not a CPU fp16 tensor.
fn map_f16<const N: usize>(
    ctx: &OpCtx<'_>,
    inputs: [&Tensor; N],
    f: impl Fn([&[f32]; N], &mut [f32]) + Sync,
) -> Result<(Vec<f16>, Vec<usize>)> {
    fp16::map_values(inputs, f).ok_or_else(|| {
        let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.dims()).collect();
        ctx.err(format!(
            "expects fp16 CPU tensors of shapes that broadcast, got {shapes:?}"
        ))
    })
}

/// `softplus(x)`: log(1 + e^x).
fn softplus(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    act(ctx, |x| {
        // max(x, 0) + log(1 + e^-|x|) avoids overflow for large x.
        Ok((x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?)
    })
}

/// `softsign(x)`: x / (1 + |x|).
fn softsign(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    act(ctx, |x| Ok(x.div(&(x.abs()? + 1.0)?)?))
}

/// `tanh(x)`: hyperbolic tangent.
fn tanh(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    act(ctx, |x| Ok(x.tanh()?))
}

/// `clamped_relu(x, alpha, beta)`: min(beta, x if x >= 0 else alpha * x).
fn clamped_relu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 0.0)?;
    let beta = ctx.float_or("beta", 6.0)?;
    act(ctx, |x| {
        Ok(x.ge(0.0)?.where_cond(x, &(x * alpha)?)?.minimum(beta)?)
    })
}

/// `linear_activation(x, alpha, beta=0)`: alpha * x + beta.
fn linear_activation(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 1.0)?;
    let beta = ctx.float_or("beta", 0.0)?;
    act(ctx, |x| Ok(x.affine(alpha, beta)?))
}

/// `scaled_tanh(x, alpha=1, beta=1)`: alpha * tanh(beta * x).
fn scaled_tanh(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.float_or("alpha", 1.0)?;
    let beta = ctx.float_or("beta", 1.0)?;
    act(ctx, |x| Ok((x * beta)?.tanh()?.affine(alpha, 0.0)?))
}

/// `prelu(x, alpha[C])`: x if x >= 0 else alpha[c] * x, with channels on axis 1 (rank >= 3) or the last axis.
fn prelu(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let alpha = ctx.tensor("alpha")?;
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let mut shape = vec![1usize; rank];
    let channel_axis = if rank >= 3 { 1 } else { rank.saturating_sub(1) };
    if let Some(d) = shape.get_mut(channel_axis) {
        *d = alpha.elem_count();
    }
    let alpha = alpha.to_dtype(DType::F32)?.reshape(shape)?;
    act(ctx, |x| {
        Ok(x.ge(0.0)?.where_cond(x, &x.broadcast_mul(&alpha)?)?)
    })
}

/// Numerically safe softmax along `axis` in f32: rows that are entirely -inf give zeros, not NaN.
pub fn softmax_f32(x: &Tensor, axis: usize) -> Result<Tensor> {
    let max = x.max_keepdim(axis)?;
    let max = finite_or_zero(&max)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(axis)?;
    let safe_sum = sum.eq(0.0)?.where_cond(&sum.ones_like()?, &sum)?;
    Ok(e.broadcast_div(&safe_sum)?)
}

/// Replaces infinite values (the max of an all -inf row) by 0.
fn finite_or_zero(t: &Tensor) -> Result<Tensor> {
    let finite = t.abs()?.lt(f64::INFINITY)?;
    Ok(finite.where_cond(t, &t.zeros_like()?)?)
}

/// `softmax(x, axis=-1)`: e^x / sum(e^x) along axis (computed in f32).
fn softmax(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let axis = ctx.int_or("axis", -1)?;
    let x = ctx.tensor("x")?;
    let axis = ctx.axis(axis, x.rank())?;
    if axis + 1 == x.rank() {
        if let Some(mut values) = fp16::widened_values(&x) {
            softmax_rows(&mut values, x.dims()[axis]);
            let mut out = vec![f16::ZERO; values.len()];
            fp16::narrow(&values, &mut out);
            return Ok(vec![Tensor::from_vec(out, x.dims(), x.device())?]);
        }
    }
    act(ctx, |x| softmax_f32(x, axis))
}

/// [`softmax_f32`] over consecutive rows of `row_len` values, in place.
fn softmax_rows(values: &mut [f32], row_len: usize) {
    fp16::for_row_groups(values, row_len, |group| {
        for row in group.chunks_exact_mut(row_len.max(1)) {
            let max = fp16::max_lanes(row);
            let max = if max.is_finite() { max } else { 0.0 };
            for v in row.iter_mut() {
                // e^-inf is 0 exactly; masked positions skip the call.
                *v = if *v == f32::NEG_INFINITY {
                    0.0
                } else {
                    (*v - max).exp()
                };
            }
            let sum = fp16::sum_like_candle(row);
            let sum = if sum == 0.0 { 1.0 } else { sum };
            for v in row.iter_mut() {
                *v /= sum;
            }
        }
    });
}

/// Fused attention-score softmax, `softmax(add(mul(x, scale), mask), axis=-1)` on fp16 tensors (scale and mask
/// broadcast to x): x * scale rounded to fp16, plus mask rounded to fp16, then softmax along the last axis in f32,
/// as the unfused ops round.
pub fn scaled_masked_softmax(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let scale = ctx.tensor("scale")?;
    let mask = ctx.tensor("mask")?;
    let (mut values, dims) = map_f16(ctx, [&x, &scale, &mask], |[s, k, m], res| {
        for ((r, a), b) in res.iter_mut().zip(s).zip(k) {
            *r = a * b;
        }
        fp16::round_to_f16(res);
        for (r, v) in res.iter_mut().zip(m) {
            *r += v;
        }
    })?;
    let mut wide = vec![0f32; values.len()];
    fp16::widen(&values, &mut wide);
    softmax_rows(&mut wide, dims.last().copied().unwrap_or(1));
    fp16::narrow(&wide, &mut values);
    Ok(vec![Tensor::from_vec(values, dims, ctx.device)?])
}
