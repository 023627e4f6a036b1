//! Ordering ops: `topk`, `argsort` and `cumsum` (computed on the host in f64; ties keep the lower index first).

use candle_core::{DType, Tensor};

use super::{Kernel, OpCtx};
use crate::error::Result;

/// Ordering kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[("topk", topk), ("argsort", argsort), ("cumsum", cumsum)];

/// A tensor moved to the host with one axis last.
struct Rows {
    /// The values along the axis, one row per position of the other axes.
    rows: Vec<Vec<f64>>,
    /// Shape with the axis moved last.
    dims: Vec<usize>,
    /// The permutation that moved it.
    perm: Vec<usize>,
}

/// `x` on the host with `axis` last.
fn rows_along(x: &Tensor, axis: usize) -> Result<Rows> {
    let rank = x.rank();
    let perm: Vec<usize> = (0..rank).filter(|&a| a != axis).chain([axis]).collect();
    let moved = x.permute(perm.clone())?.contiguous()?;
    let dims = moved.dims().to_vec();
    let len = dims.last().copied().unwrap_or(1).max(1);
    let flat = moved
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(Rows {
        rows: flat.chunks(len).map(<[f64]>::to_vec).collect(),
        dims,
        perm,
    })
}

/// Rebuilds a tensor from rows along the last axis and moves that axis back to `axis`.
fn from_rows(
    rows: Vec<f64>,
    mut dims: Vec<usize>,
    width: usize,
    perm: &[usize],
    ctx: &OpCtx<'_>,
) -> Result<Tensor> {
    if let Some(last) = dims.last_mut() {
        *last = width;
    }
    let t = Tensor::from_vec(rows, dims, ctx.device)?;
    let mut inverse = vec![0usize; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inverse[p] = i;
    }
    Ok(t.permute(inverse)?)
}

/// Indices of a row in sorted order (stable).
fn order(row: &[f64], ascending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| {
        let o = row[a]
            .partial_cmp(&row[b])
            .unwrap_or(std::cmp::Ordering::Equal);
        if ascending {
            o
        } else {
            o.reverse()
        }
    });
    idx
}

/// `topk(x, k=1, axis=-1, ascending=false)`: the k largest (or smallest) values along axis, in order, and their
/// indices.
fn topk(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axis = ctx.int_or("axis", -1)?;
    let axis = ctx.axis(axis, x.rank())?;
    let k = ctx.int_or("k", 1)?;
    let dim = x.dims()[axis];
    if k < 0 || k as usize > dim {
        return Err(ctx.err(format!("k={k} is out of range for a dim of size {dim}")));
    }
    let k = k as usize;
    let ascending = ctx.bool_or("ascending", false)?;
    let Rows { rows, dims, perm } = rows_along(&x, axis)?;
    let mut values = Vec::with_capacity(rows.len() * k);
    let mut indices = Vec::with_capacity(rows.len() * k);
    for row in &rows {
        for &i in order(row, ascending).iter().take(k) {
            values.push(row[i]);
            indices.push(i as f64);
        }
    }
    let values = from_rows(values, dims.clone(), k, &perm, ctx)?.to_dtype(x.dtype())?;
    let indices = from_rows(indices, dims, k, &perm, ctx)?.to_dtype(DType::I64)?;
    let mut out = vec![values, indices];
    out.truncate(ctx.step.outputs.len().max(1));
    Ok(out)
}

/// `argsort(x, axis=-1, ascending=false)`: the indices that sort x along axis.
fn argsort(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axis = ctx.int_or("axis", -1)?;
    let axis = ctx.axis(axis, x.rank())?;
    let ascending = ctx.bool_or("ascending", false)?;
    let Rows { rows, dims, perm } = rows_along(&x, axis)?;
    let width = x.dims()[axis];
    let idx: Vec<f64> = rows
        .iter()
        .flat_map(|r| order(r, ascending))
        .map(|i| i as f64)
        .collect();
    Ok(vec![
        from_rows(idx, dims, width, &perm, ctx)?.to_dtype(DType::I64)?
    ])
}

/// `cumsum(x, axis=0, exclusive=false, reverse=false)`: running sums along axis (exclusive shifts by one;
/// reverse runs from the end).
fn cumsum(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axis = ctx.int_or("axis", 0)?;
    let axis = ctx.axis(axis, x.rank())?;
    let exclusive = ctx.bool_or("exclusive", false)?;
    let reverse = ctx.bool_or("reverse", false)?;
    let Rows { rows, dims, perm } = rows_along(&x, axis)?;
    let width = x.dims()[axis];
    let mut out = Vec::with_capacity(rows.len() * width);
    for row in &rows {
        let mut sums = vec![0f64; row.len()];
        let mut acc = 0f64;
        let positions: Vec<usize> = if reverse {
            (0..row.len()).rev().collect()
        } else {
            (0..row.len()).collect()
        };
        for i in positions {
            if exclusive {
                sums[i] = acc;
                acc += row[i];
            } else {
                acc += row[i];
                sums[i] = acc;
            }
        }
        out.extend(sums);
    }
    Ok(vec![
        from_rows(out, dims, width, &perm, ctx)?.to_dtype(x.dtype())?
    ])
}
