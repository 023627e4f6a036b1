//! Scatter ops and `one_hot` (computed on the host in f64, then converted back to the data's dtype).

use candle_core::{DType, Tensor};

use super::{Kernel, OpCtx};
use crate::dtype::storage_dtype;
use crate::error::Result;

/// Scatter kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("scatter", scatter),
    ("scatter_along_axis", scatter_along_axis),
    ("scatter_nd", scatter_nd),
    ("one_hot", one_hot),
];

/// Combines an existing value with an update according to a scatter `mode`.
fn combine(ctx: &OpCtx<'_>, mode: &str) -> Result<fn(f64, f64) -> f64> {
    Ok(match mode {
        "update" => |_, u| u,
        "add" => |d, u| d + u,
        "sub" => |d, u| d - u,
        "mul" => |d, u| d * u,
        "div" => |d, u| d / u,
        "max" => f64::max,
        "min" => f64::min,
        other => return Err(ctx.err(format!("unknown scatter mode `{other}`"))),
    })
}

fn host(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
}

fn row_major_strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Normalises a possibly negative index against `dim`, or reports it.
fn index(ctx: &OpCtx<'_>, i: f64, dim: usize) -> Result<usize> {
    let i = i as i64;
    let j = if i < 0 { i + dim as i64 } else { i };
    if (0..dim as i64).contains(&j) {
        Ok(j as usize)
    } else {
        Err(ctx.err(format!(
            "index {i} is out of bounds for a dim of size {dim}"
        )))
    }
}

fn finish(data: &Tensor, values: Vec<f64>) -> Result<Vec<Tensor>> {
    Ok(vec![
        Tensor::from_vec(values, data.dims(), data.device())?.to_dtype(data.dtype())?
    ])
}

/// `scatter(data, indices, updates, axis=0, mode="add")`: for every position p of updates
/// (shape data.shape[:axis] + indices.shape + data.shape[axis+1:]), combines updates[p] into data at the position
/// whose axis coordinate is indices[p's indices part].
fn scatter(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let data = ctx.tensor("data")?;
    let indices = ctx.tensor("indices")?;
    let updates = ctx.tensor("updates")?;
    let axis = ctx.int_or("axis", 0)?;
    let axis = ctx.axis(axis, data.rank())?;
    let f = combine(ctx, &ctx.string_or("mode", "add")?)?;
    let mut want: Vec<usize> = data.dims()[..axis].to_vec();
    want.extend(indices.dims());
    want.extend(&data.dims()[axis + 1..]);
    if updates.dims() != want.as_slice() {
        return Err(ctx.err(format!(
            "updates {:?} must have shape {want:?}",
            updates.dims()
        )));
    }
    let mut out = host(&data)?;
    let idx = host(&indices)?;
    let upd = host(&updates)?;
    let dim = data.dims()[axis];
    let outer: usize = data.dims()[..axis].iter().product();
    let inner: usize = data.dims()[axis + 1..].iter().product();
    let n_idx = idx.len();
    for o in 0..outer {
        for (k, &i) in idx.iter().enumerate() {
            let target = index(ctx, i, dim)?;
            for r in 0..inner {
                let d = (o * dim + target) * inner + r;
                out[d] = f(out[d], upd[(o * n_idx + k) * inner + r]);
            }
        }
    }
    finish(&data, out)
}

/// `scatter_along_axis(data, indices, updates, axis=0, mode="add")`: updates and indices have one shape; the
/// element at position p goes to p with its axis coordinate replaced by indices[p].
fn scatter_along_axis(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let data = ctx.tensor("data")?;
    let indices = ctx.tensor("indices")?;
    let updates = ctx.tensor("updates")?;
    let axis = ctx.int_or("axis", 0)?;
    let axis = ctx.axis(axis, data.rank())?;
    let f = combine(ctx, &ctx.string_or("mode", "add")?)?;
    let fits = indices.dims() == updates.dims()
        && indices.rank() == data.rank()
        && data
            .dims()
            .iter()
            .zip(indices.dims())
            .enumerate()
            .all(|(i, (a, b))| i == axis || a == b);
    if !fits {
        return Err(ctx.err(format!(
            "indices {:?} / updates {:?} do not fit data {:?} on axis {axis}",
            indices.dims(),
            updates.dims(),
            data.dims()
        )));
    }
    let mut out = host(&data)?;
    let idx = host(&indices)?;
    let upd = host(&updates)?;
    let ds = row_major_strides(data.dims());
    let is = row_major_strides(indices.dims());
    for (p, (&i, &u)) in idx.iter().zip(&upd).enumerate() {
        let target = index(ctx, i, data.dims()[axis])?;
        let mut d = 0;
        for k in 0..data.rank() {
            let c = p / is[k] % indices.dims()[k];
            d += if k == axis { target } else { c } * ds[k];
        }
        out[d] = f(out[d], u);
    }
    finish(&data, out)
}

/// `scatter_nd(data, indices [..., K], updates, mode="add")`: combines updates[i...] into data at the position
/// named by indices[i...] (the first K coordinates; the rest of data's dims follow).
fn scatter_nd(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let data = ctx.tensor("data")?;
    let indices = ctx.tensor("indices")?;
    let updates = ctx.tensor("updates")?;
    let f = combine(ctx, &ctx.string_or("mode", "add")?)?;
    let k = *indices
        .dims()
        .last()
        .ok_or_else(|| ctx.err("indices must have rank >= 1"))?;
    if k == 0 || k > data.rank() {
        return Err(ctx.err(format!(
            "index depth {k} does not fit data {:?}",
            data.dims()
        )));
    }
    let mut want: Vec<usize> = indices.dims()[..indices.rank() - 1].to_vec();
    want.extend(&data.dims()[k..]);
    if updates.dims() != want.as_slice() {
        return Err(ctx.err(format!(
            "updates {:?} must have shape {want:?}",
            updates.dims()
        )));
    }
    let mut out = host(&data)?;
    let idx = host(&indices)?;
    let upd = host(&updates)?;
    let inner: usize = data.dims()[k..].iter().product();
    for (row, coords) in idx.chunks(k).enumerate() {
        let mut base = 0;
        for (j, &c) in coords.iter().enumerate() {
            base = base * data.dims()[j] + index(ctx, c, data.dims()[j])?;
        }
        for r in 0..inner {
            let d = base * inner + r;
            out[d] = f(out[d], upd[row * inner + r]);
        }
    }
    finish(&data, out)
}

/// `one_hot(indices, one_hot_vector_size, axis=-1, on_value=1, off_value=0)`: a new axis of the given size
/// holding on_value at each index and off_value elsewhere (out-of-range indices give an all-off vector).
fn one_hot(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let indices = ctx.tensor("indices")?;
    let depth = ctx.int("one_hot_vector_size")?;
    if !(0..=1 << 24).contains(&depth) {
        return Err(ctx.err(format!("one_hot_vector_size {depth} is out of range")));
    }
    let depth = depth as usize;
    let axis = ctx.int_or("axis", -1)?;
    let axis = ctx.axis(axis, indices.rank() + 1)?;
    let on = ctx.float_or("on_value", 1.0)?;
    let off = ctx.float_or("off_value", 0.0)?;
    let idx = host(&indices)?;
    let mut dims = indices.dims().to_vec();
    dims.insert(axis, depth);
    let outer: usize = indices.dims()[..axis].iter().product();
    let inner: usize = indices.dims()[axis..].iter().product();
    let mut out = vec![off; idx.len() * depth];
    for o in 0..outer {
        for r in 0..inner {
            let i = idx[o * inner + r] as i64;
            if (0..depth as i64).contains(&i) {
                out[(o * depth + i as usize) * inner + r] = on;
            }
        }
    }
    let dtype = ctx
        .out_dtype(0)
        .and_then(storage_dtype)
        .unwrap_or(DType::F32);
    Ok(vec![
        Tensor::from_vec(out, dims, ctx.device)?.to_dtype(dtype)?
    ])
}
