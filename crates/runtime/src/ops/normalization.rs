//! Normalisation ops, computed in f32 and rounded once to the input type.

use candle_core::{DType, Tensor};
use half::f16;

use super::elementwise::fp16;
use super::{in_f32, Kernel, OpCtx};
use crate::error::Result;

/// Normalisation kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("layer_norm", layer_norm),
    ("batch_norm", batch_norm),
    ("instance_norm", instance_norm),
    ("l2_norm", l2_norm),
];

/// Reshapes a per-axes parameter (shape = x's dims at `axes`) so it broadcasts against a tensor of rank `rank`.
fn along_axes(p: &Tensor, axes: &[usize], dims: &[usize]) -> Result<Tensor> {
    let shape: Vec<usize> = (0..dims.len())
        .map(|a| if axes.contains(&a) { dims[a] } else { 1 })
        .collect();
    Ok(p.to_dtype(DType::F32)?.reshape(shape)?)
}

/// `layer_norm(x, axes=all, gamma opt, beta opt, epsilon=1e-5)`: (x - mean) / sqrt(var + eps) * gamma + beta,
/// biased variance over axes.
fn layer_norm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let mut axes = match ctx.opt_ints("axes")? {
        Some(a) => ctx.axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    let eps = ctx.float_or("epsilon", 1e-5)?;
    let gamma = ctx.opt_tensor("gamma")?;
    let beta = ctx.opt_tensor("beta")?;
    let dims = x.dims().to_vec();
    let n: usize = axes.iter().map(|&a| dims[a]).product::<usize>().max(1);
    let out = in_f32(&x, |xf| {
        let mean = (xf.sum_keepdim(axes.clone())? / n as f64)?;
        let centred = xf.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(axes.clone())? / n as f64)?;
        let mut y = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        if let Some(g) = &gamma {
            y = y.broadcast_mul(&along_axes(g, &axes, &dims)?)?;
        }
        if let Some(b) = &beta {
            y = y.broadcast_add(&along_axes(b, &axes, &dims)?)?;
        }
        Ok(y)
    })
    .map_err(|e| ctx.err(e.to_string()))?;
    Ok(vec![out])
}

/// A per-channel parameter `[C]` shaped `[1, C, 1, ...]` for a rank-`rank` tensor.
fn per_channel(p: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1usize; rank];
    shape[1] = p.elem_count();
    Ok(p.to_dtype(DType::F32)?.reshape(shape)?)
}

/// `batch_norm(x [N, C, *], mean [C], variance [C], gamma opt, beta opt, epsilon=1e-5)`:
/// (x - mean) / sqrt(variance + eps) * gamma + beta per channel.
fn batch_norm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if x.rank() < 2 {
        return Err(ctx.err(format!("x must have rank >= 2, got {:?}", x.dims())));
    }
    let rank = x.rank();
    let mean = per_channel(&ctx.tensor("mean")?, rank)?;
    let var = per_channel(&ctx.tensor("variance")?, rank)?;
    let gamma = ctx
        .opt_tensor("gamma")?
        .map(|g| per_channel(&g, rank))
        .transpose()?;
    let beta = ctx
        .opt_tensor("beta")?
        .map(|b| per_channel(&b, rank))
        .transpose()?;
    let eps = ctx.float_or("epsilon", 1e-5)?;
    let out = in_f32(&x, |xf| {
        let mut y = xf
            .broadcast_sub(&mean)?
            .broadcast_div(&(&var + eps)?.sqrt()?)?;
        if let Some(g) = &gamma {
            y = y.broadcast_mul(g)?;
        }
        if let Some(b) = &beta {
            y = y.broadcast_add(b)?;
        }
        Ok(y)
    })
    .map_err(|e| ctx.err(e.to_string()))?;
    Ok(vec![out])
}

/// `instance_norm(x [N, C, *], gamma opt [C], beta opt [C], epsilon=1e-5)`: layer norm over the spatial dims of
/// each (n, c), then per-channel scale and shift.
fn instance_norm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    if rank < 3 {
        return Err(ctx.err(format!("x must have rank >= 3, got {:?}", x.dims())));
    }
    let axes: Vec<usize> = (2..rank).collect();
    let n: usize = x.dims()[2..].iter().product::<usize>().max(1);
    let gamma = ctx
        .opt_tensor("gamma")?
        .map(|g| per_channel(&g, rank))
        .transpose()?;
    let beta = ctx
        .opt_tensor("beta")?
        .map(|b| per_channel(&b, rank))
        .transpose()?;
    let eps = ctx.float_or("epsilon", 1e-5)?;
    let out = in_f32(&x, |xf| {
        let mean = (xf.sum_keepdim(axes.clone())? / n as f64)?;
        let centred = xf.broadcast_sub(&mean)?;
        let var = (centred.sqr()?.sum_keepdim(axes.clone())? / n as f64)?;
        let mut y = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
        if let Some(g) = &gamma {
            y = y.broadcast_mul(g)?;
        }
        if let Some(b) = &beta {
            y = y.broadcast_add(b)?;
        }
        Ok(y)
    })
    .map_err(|e| ctx.err(e.to_string()))?;
    Ok(vec![out])
}

/// `l2_norm(x, axes=last 3 (or all when rank < 3), epsilon=1e-6)`: x / sqrt(max(sum(x²), epsilon)) over axes.
fn l2_norm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let axes = match ctx.opt_ints("axes")? {
        Some(a) => ctx.axes(&a, rank)?,
        None => (rank.saturating_sub(3)..rank).collect(),
    };
    let eps = ctx.float_or("epsilon", 1e-6)?;
    let out = in_f32(&x, |xf| {
        let norm = xf.sqr()?.sum_keepdim(axes.clone())?.maximum(eps)?.sqrt()?;
        Ok(xf.broadcast_div(&norm)?)
    })?;
    Ok(vec![out])
}

/// Fused ANEMLL RMSNorm, `layer_norm(concat([x, -x], last axis), last axis, epsilon)[..., :N] * gamma` on fp16 `x
/// [..., N]` (gamma optional, `[N]`): (x - mean) / sqrt(var + epsilon) over `[x, -x]` in f32 (mean ≈ 0, var =
/// mean(x²)), computed in the order and with the roundings of the unfused `layer_norm`, rounded to fp16, then times
/// gamma rounded to fp16.
pub fn rms_norm_of_concat(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let eps = ctx.float_or("epsilon", 1e-5)? as f32;
    let dims = x.dims().to_vec();
    let n = *dims
        .last()
        .ok_or_else(|| ctx.err("x must have rank >= 1"))?;
    let mut values = fp16::widened_values(&x)
        .ok_or_else(|| ctx.err(format!("x must be an fp16 CPU tensor, got {:?}", x.dtype())))?;
    let gamma = match ctx.opt_tensor("gamma")? {
        Some(g) => Some(
            fp16::widened_values(&g)
                .filter(|v| v.len() == n)
                .ok_or_else(|| {
                    ctx.err(format!(
                        "gamma must be {n} fp16 values, got {:?} {:?}",
                        g.dtype(),
                        g.dims()
                    ))
                })?,
        ),
        None => None,
    };
    // 1 / (2N) as the unfused layer_norm applies it (candle divides by a scalar as a product with its inverse).
    let inv_count = (1.0 / (2 * n).max(1) as f64) as f32;
    fp16::for_row_groups(&mut values, n, |group| {
        let mut both = vec![0f32; 2 * n];
        let mut squares = vec![0f32; 2 * n];
        for row in group.chunks_exact_mut(n.max(1)) {
            let (pos, neg) = both.split_at_mut(n);
            pos.copy_from_slice(row);
            for (d, v) in neg.iter_mut().zip(row.iter()) {
                *d = -v;
            }
            let mean = fp16::sum_like_candle(&both) * inv_count + 0.0;
            for v in both.iter_mut() {
                *v -= mean;
            }
            for (q, v) in squares.iter_mut().zip(&both) {
                *q = v * v;
            }
            let var = fp16::sum_like_candle(&squares) * inv_count + 0.0;
            let denom = (var + eps).sqrt();
            for (out, centred) in row.iter_mut().zip(&both) {
                *out = centred / denom;
            }
            if let Some(g) = &gamma {
                fp16::round_to_f16(row);
                for (v, gv) in row.iter_mut().zip(g) {
                    *v *= gv;
                }
            }
        }
    });
    let mut out = vec![f16::ZERO; values.len()];
    fp16::narrow(&values, &mut out);
    Ok(vec![Tensor::from_vec(out, dims, x.device())?])
}
