//! Attention: `scaled_dot_product_attention` (iOS18), computed in f32, and the fused rotary position embedding
//! that the planner makes of ANEMLL's rotate-half chains.

use candle_core::{DType, Tensor};
use half::f16;

use super::activation::softmax_f32;
use super::elementwise::fp16;
use super::linear::batched_matmul;
use super::{Kernel, OpCtx};
use crate::error::Result;

/// Attention kernels of this family.
pub const KERNELS: &[(&str, Kernel)] =
    &[("scaled_dot_product_attention", scaled_dot_product_attention)];

/// `scaled_dot_product_attention(query [.., L, E], key [.., S, E], value [.., S, Ev], attn_mask opt)`:
/// softmax(Q K^T / sqrt(E) + mask) V; a bool mask keeps the positions that are true (others get -inf).
fn scaled_dot_product_attention(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let q = ctx.tensor("query")?;
    let k = ctx.tensor("key")?;
    let v = ctx.tensor("value")?;
    let dtype = q.dtype();
    if q.rank() < 3 || k.rank() != q.rank() || v.rank() != q.rank() {
        return Err(ctx.err(format!(
            "query {:?}, key {:?}, value {:?} must share a rank >= 3",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    let e = q.dims()[q.rank() - 1];
    let (q, k, v) = (
        q.to_dtype(DType::F32)?,
        k.to_dtype(DType::F32)?,
        v.to_dtype(DType::F32)?,
    );
    let kt = k.transpose(k.rank() - 2, k.rank() - 1)?;
    let mut scores = (batched_matmul(&q, &kt)? / (e as f64).sqrt())?;
    if let Some(mask) = ctx.opt_tensor("attn_mask")? {
        let is_bool =
            ctx.param_dtype("attn_mask") == Some(candle_coreml_format::mil::DataType::Bool);
        scores = if is_bool {
            let keep = mask.ne(0f64)?.broadcast_as(scores.dims())?;
            let ninf = Tensor::full(f32::NEG_INFINITY, scores.dims(), scores.device())?;
            keep.where_cond(&scores, &ninf)?
        } else {
            scores.broadcast_add(&mask.to_dtype(DType::F32)?)?
        };
    }
    let last = scores.rank() - 1;
    let weights = softmax_f32(&scores, last)?;
    Ok(vec![batched_matmul(&weights, &v)?.to_dtype(dtype)?])
}

/// Fused rotate-half rotary embedding on fp16 `x [..., D]` with `cos` and `sin` broadcastable to x:
/// `x * cos + concat([-x[..., D/2:], x[..., :D/2]]) * sin`, each product and the sum rounded to fp16 as the unfused
/// ops round.
pub fn rotate_half_embedding(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let dims = x.dims().to_vec();
    let d = dims
        .last()
        .copied()
        .ok_or_else(|| ctx.err("x must have rank >= 1"))?;
    if !d.is_multiple_of(2) {
        return Err(ctx.err(format!("the last dim of x {dims:?} must be even")));
    }
    let half = d / 2;
    // x, cos and sin widened to f32 in x's shape (the tables broadcast as numpy does).
    let wide = |name: &str| -> Result<Vec<f32>> {
        let t = ctx.tensor(name)?;
        let t = t.broadcast_as(dims.as_slice()).map_err(|_| {
            ctx.err(format!(
                "{name} {:?} does not broadcast to x {dims:?}",
                t.dims()
            ))
        })?;
        fp16::widened_values(&t)
            .ok_or_else(|| ctx.err(format!("{name} must be an fp16 CPU tensor")))
    };
    let (xs, cos, sin) = (wide("x")?, wide("cos")?, wide("sin")?);
    let mut direct: Vec<f32> = xs.iter().zip(&cos).map(|(a, c)| a * c).collect();
    let mut rotated = vec![0f32; xs.len()];
    for ((r, xr), sr) in rotated
        .chunks_exact_mut(d.max(1))
        .zip(xs.chunks_exact(d.max(1)))
        .zip(sin.chunks_exact(d.max(1)))
    {
        let (r1, r2) = r.split_at_mut(half);
        let (x1, x2) = xr.split_at(half);
        let (s1, s2) = sr.split_at(half);
        for ((o, a), b) in r1.iter_mut().zip(x2).zip(s1) {
            *o = -a * b;
        }
        for ((o, a), b) in r2.iter_mut().zip(x1).zip(s2) {
            *o = a * b;
        }
    }
    fp16::round_to_f16(&mut direct);
    fp16::round_to_f16(&mut rotated);
    for (a, b) in direct.iter_mut().zip(&rotated) {
        *a += b;
    }
    let mut out = vec![f16::ZERO; direct.len()];
    fp16::narrow(&direct, &mut out);
    Ok(vec![Tensor::from_vec(out, dims, x.device())?])
}
