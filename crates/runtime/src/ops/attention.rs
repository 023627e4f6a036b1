//! Attention: `scaled_dot_product_attention` (iOS18), computed in f32.

use candle_core::{DType, Tensor};

use super::activation::softmax_f32;
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
