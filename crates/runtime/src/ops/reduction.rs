//! Reductions: `reduce_*(x, axes=all, keep_dims=false)` and `reduce_argmax/argmin(x, axis=-1, keep_dims=false)`.
//! Float reductions accumulate in f32 (f64 for fp64) and round once to the input type.

use candle_core::{DType, Tensor};

use super::{Kernel, OpCtx};
use crate::dtype::is_int_dtype;
use crate::error::Result;

/// Reduction kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("reduce_sum", reduce_sum),
    ("reduce_mean", reduce_mean),
    ("reduce_max", reduce_max),
    ("reduce_min", reduce_min),
    ("reduce_prod", reduce_prod),
    ("reduce_l1_norm", reduce_l1_norm),
    ("reduce_l2_norm", reduce_l2_norm),
    ("reduce_log_sum", reduce_log_sum),
    ("reduce_log_sum_exp", reduce_log_sum_exp),
    ("reduce_sum_square", reduce_sum_square),
    ("reduce_argmax", reduce_argmax),
    ("reduce_argmin", reduce_argmin),
];

/// Which elementwise pre/post-processing a reduction needs around its core.
#[derive(Clone, Copy)]
enum Core {
    Sum,
    Max,
    Min,
    Prod,
}

/// Reduces `x` over `axes` (ascending, unique) keeping dims.
fn reduce_keep(x: &Tensor, axes: &[usize], core: Core) -> Result<Tensor> {
    Ok(match core {
        Core::Sum => x.sum_keepdim(axes.to_vec())?,
        Core::Max => axes.iter().try_fold(x.clone(), |t, &a| t.max_keepdim(a))?,
        Core::Min => axes.iter().try_fold(x.clone(), |t, &a| t.min_keepdim(a))?,
        Core::Prod => prod_keep(x, axes)?,
    })
}

/// Product over `axes` on the host.
fn prod_keep(x: &Tensor, axes: &[usize]) -> Result<Tensor> {
    let rank = x.rank();
    let kept: Vec<usize> = (0..rank).filter(|a| !axes.contains(a)).collect();
    let perm: Vec<usize> = kept.iter().chain(axes).copied().collect();
    let outer: usize = kept.iter().map(|&a| x.dims()[a]).product();
    let inner: usize = axes.iter().map(|&a| x.dims()[a]).product();
    let dtype = x.dtype();
    let rows = x
        .permute(perm)?
        .to_dtype(DType::F64)?
        .reshape((outer, inner))?
        .to_vec2::<f64>()?;
    let prods: Vec<f64> = rows.iter().map(|r| r.iter().product()).collect();
    let shape: Vec<usize> = (0..rank)
        .map(|a| if axes.contains(&a) { 1 } else { x.dims()[a] })
        .collect();
    Ok(Tensor::from_vec(prods, shape, x.device())?.to_dtype(dtype)?)
}

/// Shared driver: reads `x`, `axes`, `keep_dims`, widens, applies `pre`, reduces, applies `post`, narrows.
fn reduce(
    ctx: &OpCtx<'_>,
    core: Core,
    pre: impl Fn(&Tensor) -> candle_core::Result<Tensor>,
    post: impl Fn(&Tensor, usize) -> candle_core::Result<Tensor>,
) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let mut axes = match ctx.opt_ints("axes")? {
        Some(a) => ctx.axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    let keep = ctx.bool_or("keep_dims", false)?;
    let dtype = x.dtype();
    let work = match dtype {
        DType::F16 | DType::BF16 => x.to_dtype(DType::F32)?,
        d if is_int_dtype(d) && !matches!(core, Core::Max | Core::Min) => x.to_dtype(DType::F64)?,
        _ => x.clone(),
    };
    let count: usize = axes.iter().map(|&a| x.dims()[a]).product();
    let reduced = if axes.is_empty() {
        pre(&work)?
    } else {
        reduce_keep(&pre(&work)?, &axes, core)?
    };
    let mut out = post(&reduced, count)?;
    if !keep {
        for &a in axes.iter().rev() {
            out = out.squeeze(a)?;
        }
    }
    Ok(vec![out.to_dtype(dtype)?])
}

fn same(t: &Tensor) -> candle_core::Result<Tensor> {
    Ok(t.clone())
}

fn same_post(t: &Tensor, _: usize) -> candle_core::Result<Tensor> {
    Ok(t.clone())
}

/// `reduce_sum`: sum over axes.
fn reduce_sum(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Sum, same, same_post)
}

/// `reduce_mean`: mean over axes.
fn reduce_mean(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Sum, same, |t, n| {
        t.affine(1.0 / n.max(1) as f64, 0.0)
    })
}

/// `reduce_max`: maximum over axes.
fn reduce_max(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Max, same, same_post)
}

/// `reduce_min`: minimum over axes.
fn reduce_min(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Min, same, same_post)
}

/// `reduce_prod`: product over axes.
fn reduce_prod(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Prod, same, same_post)
}

/// `reduce_l1_norm`: sum of |x| over axes.
fn reduce_l1_norm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Sum, |t| t.abs(), same_post)
}

/// `reduce_l2_norm`: sqrt of the sum of x² over axes.
fn reduce_l2_norm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Sum, |t| t.sqr(), |t, _| t.sqrt())
}

/// `reduce_log_sum`: log of the sum over axes.
fn reduce_log_sum(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Sum, same, |t, _| t.log())
}

/// `reduce_log_sum_exp`: log(sum(e^x)) over axes (computed stably).
fn reduce_log_sum_exp(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let mut axes = match ctx.opt_ints("axes")? {
        Some(a) => ctx.axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    let keep = ctx.bool_or("keep_dims", false)?;
    let dtype = x.dtype();
    let w = x.to_dtype(DType::F32)?;
    let max = reduce_keep(&w, &axes, Core::Max)?;
    let max = max
        .abs()?
        .lt(f64::INFINITY)?
        .where_cond(&max, &max.zeros_like()?)?;
    let mut out = (w
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(axes.clone())?
        .log()?
        + &max)?;
    if !keep {
        for &a in axes.iter().rev() {
            out = out.squeeze(a)?;
        }
    }
    Ok(vec![out.to_dtype(dtype)?])
}

/// `reduce_sum_square`: sum of x² over axes.
fn reduce_sum_square(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    reduce(ctx, Core::Sum, |t| t.sqr(), same_post)
}

fn arg_reduce(ctx: &OpCtx<'_>, max: bool) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axis = ctx.int_or("axis", -1)?;
    let axis = ctx.axis(axis, x.rank())?;
    let keep = ctx.bool_or("keep_dims", false)?;
    let w = if matches!(x.dtype(), DType::F16 | DType::BF16) {
        x.to_dtype(DType::F32)?
    } else {
        x
    };
    let idx = if max {
        w.argmax_keepdim(axis)?
    } else {
        w.argmin_keepdim(axis)?
    };
    let idx = if keep { idx } else { idx.squeeze(axis)? };
    Ok(vec![idx.to_dtype(DType::I64)?])
}

/// `reduce_argmax(x, axis=-1, keep_dims=false)`: index of the largest value along axis (first on ties).
fn reduce_argmax(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    arg_reduce(ctx, true)
}

/// `reduce_argmin(x, axis=-1, keep_dims=false)`: index of the smallest value along axis (first on ties).
fn reduce_argmin(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    arg_reduce(ctx, false)
}
