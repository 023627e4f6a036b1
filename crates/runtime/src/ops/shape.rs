//! Shape, slicing, indexing and tensor-construction ops.

use candle_core::{DType, Tensor};

use super::{Kernel, OpCtx};
use crate::dtype::storage_dtype;
use crate::error::Result;

/// Shape kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("reshape", reshape),
    ("transpose", transpose),
    ("squeeze", squeeze),
    ("expand_dims", expand_dims),
    ("flatten2d", flatten2d),
    ("concat", concat),
    ("split", split),
    ("stack", stack),
    ("slice_by_index", slice_by_index),
    ("slice_by_size", slice_by_size),
    ("slice_update", slice_update),
    ("tile", tile),
    ("pad", pad),
    ("reverse", reverse),
    ("gather", gather),
    ("gather_along_axis", gather_along_axis),
    ("gather_nd", gather_nd),
    ("fill", fill),
    ("shape", shape),
    ("range_1d", range_1d),
    ("band_part", band_part),
];

/// Largest tensor (in elements) an op may create from run-time sizes.
const MAX_ELEMENTS: usize = 1 << 34;

/// Checks that a shape computed from run-time values describes a tensor of a sane size.
fn checked_count(ctx: &OpCtx<'_>, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .ok_or_else(|| ctx.err(format!("shape {dims:?} is too large")))
}

/// `reshape(x, shape)`: same elements in a new shape; one -1 entry is inferred, a 0 entry copies x's dim.
fn reshape(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let spec = ctx.ints("shape")?;
    let count = x.elem_count();
    let mut dims = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 if infer.is_none() => {
                infer = Some(i);
                dims.push(1);
            }
            0 => dims.push(
                *x.dims()
                    .get(i)
                    .ok_or_else(|| ctx.err(format!("shape {spec:?}: 0 at {i} has no input dim")))?,
            ),
            d if d > 0 => dims.push(d as usize),
            _ => return Err(ctx.err(format!("invalid shape {spec:?}"))),
        }
    }
    let known = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| ctx.err(format!("shape {spec:?} is too large")))?;
    if let Some(i) = infer {
        if known == 0 || count % known != 0 {
            return Err(ctx.err(format!("cannot reshape {:?} to {spec:?}", x.dims())));
        }
        dims[i] = count / known;
    }
    if dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)) != Some(count) {
        return Err(ctx.err(format!(
            "cannot reshape {:?} ({count} elements) to {spec:?}",
            x.dims()
        )));
    }
    Ok(vec![x.reshape(dims)?])
}

/// `transpose(x, perm)`: permutes the axes (negative entries allowed).
fn transpose(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let perm = ctx.ints("perm")?;
    let perm = ctx.axes(&perm, x.rank())?;
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..x.rank()).collect::<Vec<_>>() {
        return Err(ctx.err(format!(
            "perm {perm:?} is not a permutation of rank {}",
            x.rank()
        )));
    }
    Ok(vec![x.permute(perm)?])
}

/// `squeeze(x, axes=all size-1 dims)`: removes size-1 dims (listed axes that are not size 1 are kept).
fn squeeze(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let rank = x.rank();
    let mut axes = match ctx.opt_ints("axes")? {
        Some(a) => ctx.axes(&a, rank)?,
        None => (0..rank).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    // Size-1 dims are dropped from the layout (a view, whatever x's strides), last first.
    let mut t = x.clone();
    for &a in axes.iter().rev() {
        if x.dims()[a] == 1 {
            t = t.squeeze(a)?;
        }
    }
    Ok(vec![t])
}

/// `expand_dims(x, axes)`: inserts size-1 dims at `axes` (counted in the output rank).
fn expand_dims(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axes = ctx.ints("axes")?;
    let out_rank = x.rank() + axes.len();
    let mut axes = ctx.axes(&axes, out_rank)?;
    axes.sort_unstable();
    // Inserted into the layout in ascending order (a view, whatever x's strides).
    let mut t = x;
    for a in axes {
        t = t.unsqueeze(a.min(t.rank()))?;
    }
    Ok(vec![t])
}

/// `flatten2d(x, axis=1)`: reshapes to [prod(dims[:axis]), prod(dims[axis:])].
fn flatten2d(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axis = ctx.int_or("axis", 1)?;
    let rank = x.rank() as i64;
    let axis = if axis < 0 { axis + rank } else { axis };
    if !(0..=rank).contains(&axis) {
        return Err(ctx.err(format!("axis {axis} out of range for rank {rank}")));
    }
    let (a, b) = x.dims().split_at(axis as usize);
    Ok(vec![x.reshape((
        a.iter().product::<usize>(),
        b.iter().product::<usize>(),
    ))?])
}

/// `concat(values, axis, interleave=false)`: joins along axis; interleave takes one slice of each in turn.
fn concat(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let values = ctx.tensors("values")?;
    let first = values.first().ok_or_else(|| ctx.err("no values"))?;
    let axis = ctx.int("axis")?;
    let axis = ctx.axis(axis, first.rank())?;
    let dtype = first.dtype();
    let values: Vec<Tensor> = values
        .iter()
        .map(|v| v.to_dtype(dtype))
        .collect::<candle_core::Result<_>>()?;
    for v in &values {
        let ok = v.rank() == first.rank()
            && v.dims()
                .iter()
                .zip(first.dims())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !ok {
            return Err(ctx.err(format!(
                "cannot concat {:?} with {:?} on axis {axis}",
                first.dims(),
                v.dims()
            )));
        }
    }
    if ctx.bool_or("interleave", false)? {
        if values.iter().any(|v| v.dims() != first.dims()) {
            return Err(ctx.err("interleave needs values of one shape"));
        }
        let stacked = Tensor::stack(&values, axis + 1)?;
        let mut dims = first.dims().to_vec();
        dims[axis] *= values.len();
        return Ok(vec![stacked.reshape(dims)?]);
    }
    Ok(vec![Tensor::cat(&values, axis)?])
}

/// `split(x, num_splits | split_sizes, axis)`: cuts x along axis into the op's outputs.
fn split(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axis = ctx.int("axis")?;
    let axis = ctx.axis(axis, x.rank())?;
    let dim = x.dims()[axis];
    let n_out = ctx.step.outputs.len();
    let sizes: Vec<usize> = match ctx.opt_ints("split_sizes")? {
        Some(s) => s.into_iter().map(|v| v.max(0) as usize).collect(),
        None => {
            let n = ctx.int_or("num_splits", n_out as i64)?.max(1) as usize;
            let chunk = dim.div_ceil(n);
            (0..n)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect()
        }
    };
    if sizes.iter().sum::<usize>() != dim || sizes.len() != n_out {
        return Err(ctx.err(format!(
            "split sizes {sizes:?} do not cut dim {dim} into {n_out} outputs"
        )));
    }
    let mut start = 0;
    let mut out = Vec::with_capacity(n_out);
    for s in sizes {
        out.push(x.narrow(axis, start, s)?);
        start += s;
    }
    Ok(out)
}

/// `stack(values, axis)`: joins along a new axis.
fn stack(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let values = ctx.tensors("values")?;
    let first = values.first().ok_or_else(|| ctx.err("no values"))?;
    let axis = ctx.int("axis")?;
    let axis = ctx.axis(axis, first.rank() + 1)?;
    if values.iter().any(|v| v.dims() != first.dims()) {
        return Err(ctx.err("stack needs values of one shape"));
    }
    Ok(vec![Tensor::stack(&values, axis)?])
}

/// One resolved dim of a strided slice.
#[derive(Debug, Clone, Copy)]
struct DimSlice {
    start: i64,
    step: i64,
    count: usize,
    squeeze: bool,
}

/// Resolves numpy-style strided slice bounds (negative indices, masks, clamping) for every dim.
fn resolve_slices(ctx: &OpCtx<'_>, dims: &[usize]) -> Result<Vec<DimSlice>> {
    let rank = dims.len();
    let begin = ctx.ints("begin")?;
    let end = ctx.ints("end")?;
    let stride = ctx.opt_ints("stride")?.unwrap_or_else(|| vec![1; rank]);
    let begin_mask = ctx
        .opt_bools("begin_mask")?
        .unwrap_or_else(|| vec![false; rank]);
    let end_mask = ctx
        .opt_bools("end_mask")?
        .unwrap_or_else(|| vec![false; rank]);
    let squeeze_mask = ctx
        .opt_bools("squeeze_mask")?
        .unwrap_or_else(|| vec![false; rank]);
    let lens = [
        begin.len(),
        end.len(),
        stride.len(),
        begin_mask.len(),
        end_mask.len(),
        squeeze_mask.len(),
    ];
    if lens.iter().any(|&l| l != rank) {
        return Err(ctx.err(format!(
            "begin/end/stride/masks must all have one entry per dim of x {dims:?}, got lengths {lens:?}"
        )));
    }
    let mut out = Vec::with_capacity(rank);
    for i in 0..rank {
        let d = dims[i] as i64;
        let s = stride[i];
        if s == 0 {
            return Err(ctx.err(format!("stride is 0 on dim {i}")));
        }
        if squeeze_mask[i] {
            let b = if begin_mask[i] { 0 } else { begin[i] };
            let b = if b < 0 { b + d } else { b };
            if !(0..d).contains(&b) {
                return Err(ctx.err(format!(
                    "index {} is out of range for dim {i} of size {d}",
                    begin[i]
                )));
            }
            out.push(DimSlice {
                start: b,
                step: 1,
                count: 1,
                squeeze: true,
            });
            continue;
        }
        let (start, count) = if s > 0 {
            let norm = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d);
            let b = if begin_mask[i] { 0 } else { norm(begin[i]) };
            let e = if end_mask[i] { d } else { norm(end[i]) };
            (
                b,
                if e > b {
                    ((e as i128 - b as i128 + s as i128 - 1) / s as i128) as usize
                } else {
                    0
                },
            )
        } else {
            let norm = |v: i64| (if v < 0 { v + d } else { v }).clamp(-1, d - 1);
            let b = if begin_mask[i] { d - 1 } else { norm(begin[i]) };
            let e = if end_mask[i] { -1 } else { norm(end[i]) };
            (
                b,
                if b > e {
                    ((b as i128 - e as i128 - s as i128 - 1) / -(s as i128)) as usize
                } else {
                    0
                },
            )
        };
        out.push(DimSlice {
            start,
            step: s,
            count,
            squeeze: false,
        });
    }
    Ok(out)
}

/// Applies resolved slices (narrow for unit steps, gathers otherwise) and drops squeezed dims.
fn apply_slices(x: &Tensor, slices: &[DimSlice]) -> Result<Tensor> {
    let mut t = x.clone();
    for (i, s) in slices.iter().enumerate() {
        if s.step == 1 {
            if s.start as usize != 0 || s.count != t.dims()[i] {
                t = t.narrow(i, s.start as usize, s.count)?;
            }
        } else {
            let idx: Vec<u32> = (0..s.count)
                .map(|k| (s.start + k as i64 * s.step) as u32)
                .collect();
            let idx = Tensor::from_vec(idx, s.count, x.device())?;
            t = t.index_select(&idx, i)?;
        }
    }
    let dims: Vec<usize> = t
        .dims()
        .iter()
        .zip(slices)
        .filter(|(_, s)| !s.squeeze)
        .map(|(&d, _)| d)
        .collect();
    if dims.len() != t.rank() {
        t = t.reshape(dims)?;
    }
    Ok(t)
}

/// `slice_by_index(x, begin, end, stride opt, begin_mask opt, end_mask opt, squeeze_mask opt)`: numpy strided
/// slicing; masked begin/end take the full range, squeezed dims index at begin and are dropped.
fn slice_by_index(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let slices = resolve_slices(ctx, x.dims())?;
    Ok(vec![apply_slices(&x, &slices)?])
}

/// `slice_by_size(x, begin, size)`: x[begin : begin + size] per dim; size -1 runs to the end.
fn slice_by_size(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let begin = ctx.ints("begin")?;
    let size = ctx.ints("size")?;
    if begin.len() != x.rank() || size.len() != x.rank() {
        return Err(ctx.err(format!(
            "begin {begin:?} / size {size:?} must match rank of {:?}",
            x.dims()
        )));
    }
    let mut t = x.clone();
    for i in 0..x.rank() {
        let d = x.dims()[i] as i64;
        let b = if begin[i] < 0 { begin[i] + d } else { begin[i] };
        let n = if size[i] == -1 { d - b } else { size[i] };
        if b < 0 || n < 0 || b + n > d {
            return Err(ctx.err(format!(
                "begin {} size {} is out of range for dim {i} of size {d}",
                begin[i], size[i]
            )));
        }
        t = t.narrow(i, b as usize, n as usize)?;
    }
    Ok(vec![t])
}

/// `slice_update(x, update, begin, end, stride opt, masks opt)`: x with the slice (as in slice_by_index) replaced
/// by `update`, whose shape must equal the slice's shape; bounds may be run-time values and are validated.
fn slice_update(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let update = ctx.tensor("update")?.to_dtype(x.dtype())?;
    let Some(idx) = slice_update_indices(ctx, x.dims(), update.dims())? else {
        return Ok(vec![x]);
    };
    let out = x
        .flatten_all()?
        .contiguous()?
        .scatter(&idx, &update.flatten_all()?.contiguous()?, 0)?
        .reshape(x.dims())?;
    Ok(vec![out])
}

/// The flat (row-major) positions in a tensor of shape `x_dims` of the elements selected by this op's slice
/// parameters, in slice order; checks that `update_dims` is the slice's shape. `None` for an empty slice.
pub fn slice_update_indices(
    ctx: &OpCtx<'_>,
    x_dims: &[usize],
    update_dims: &[usize],
) -> Result<Option<Tensor>> {
    let slices = resolve_slices(ctx, x_dims)?;
    let full: Vec<usize> = slices.iter().map(|s| s.count).collect();
    let kept: Vec<usize> = slices
        .iter()
        .filter(|s| !s.squeeze)
        .map(|s| s.count)
        .collect();
    if update_dims != kept.as_slice() && update_dims != full.as_slice() {
        return Err(ctx.err(format!(
            "update has shape {update_dims:?} but the slice of x {x_dims:?} has shape {kept:?} (bounds out of range?)"
        )));
    }
    if x_dims.iter().product::<usize>() > u32::MAX as usize {
        return Err(ctx.err(format!("x {x_dims:?} has more than 2^32 elements")));
    }
    let n: usize = full.iter().product();
    if n == 0 {
        return Ok(None);
    }
    let rank = x_dims.len();
    let mut strides = vec![1i64; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * x_dims[i + 1] as i64;
    }
    let mut idx = Vec::with_capacity(n);
    // Runs along the last dim, one per combination of the outer dims' counters.
    let (inner, inner_step) = match (full.last(), slices.last(), strides.last()) {
        (Some(&count), Some(s), Some(&stride)) => (count, s.step * stride),
        _ => (1, 0),
    };
    let outer = rank.saturating_sub(1);
    let mut counter = vec![0usize; outer];
    for _ in 0..n / inner {
        let base: i64 = (0..rank)
            .map(|i| {
                let k = counter.get(i).copied().unwrap_or(0) as i64;
                (slices[i].start + k * slices[i].step) * strides[i]
            })
            .sum();
        idx.extend((0..inner as i64).map(|k| (base + k * inner_step) as u32));
        for i in (0..outer).rev() {
            counter[i] += 1;
            if counter[i] < full[i] {
                break;
            }
            counter[i] = 0;
        }
    }
    Ok(Some(Tensor::from_vec(idx, n, ctx.device)?))
}

/// `tile(x, reps)`: repeats x reps[i] times along dim i.
fn tile(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let reps = ctx.ints("reps")?;
    if reps.len() != x.rank() || reps.iter().any(|&r| r < 1) {
        return Err(ctx.err(format!(
            "reps {reps:?} must hold one positive value per dim of {:?}",
            x.dims()
        )));
    }
    let reps: Vec<usize> = reps.into_iter().map(|r| r as usize).collect();
    let out: Vec<usize> = x
        .dims()
        .iter()
        .zip(&reps)
        .map(|(&d, &r)| d.saturating_mul(r))
        .collect();
    checked_count(ctx, &out)?;
    Ok(vec![x.repeat(reps)?])
}

/// Source indices for padding one dim of size `d` by (before, after) in `mode` (`reflect` or `replicate`).
fn pad_indices(d: usize, before: usize, after: usize, reflect: bool) -> Vec<u32> {
    let d = d as i64;
    (-(before as i64)..d + after as i64)
        .map(|i| {
            let j = if reflect {
                let period = 2 * (d - 1).max(1);
                let m = i.rem_euclid(period);
                if m < d {
                    m
                } else {
                    period - m
                }
            } else {
                i.clamp(0, d - 1)
            };
            j as u32
        })
        .collect()
}

/// `pad(x, pad, mode="constant", constant_val=0)`: pads the last len(pad)/2 dims by (before, after) pairs;
/// modes constant, reflect and replicate.
fn pad(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let pads = ctx.ints("pad")?;
    let mode = ctx.string_or("mode", "constant")?;
    let value = ctx.float_or("constant_val", 0.0)?;
    if pads.len() % 2 != 0 || pads.len() / 2 > x.rank() || pads.iter().any(|&p| p < 0) {
        return Err(ctx.err(format!("pad {pads:?} does not fit x {:?}", x.dims())));
    }
    let first = x.rank() - pads.len() / 2;
    let mut t = x.clone();
    for (k, pair) in pads.chunks(2).enumerate() {
        let axis = first + k;
        let (before, after) = (pair[0] as usize, pair[1] as usize);
        if before == 0 && after == 0 {
            continue;
        }
        t = match mode.as_str() {
            "constant" => {
                let side = |n: usize| -> Result<Tensor> {
                    let mut dims = t.dims().to_vec();
                    dims[axis] = n;
                    Ok((Tensor::ones(dims, DType::F64, x.device())? * value)?
                        .to_dtype(x.dtype())?)
                };
                let mut parts = Vec::with_capacity(3);
                if before > 0 {
                    parts.push(side(before)?);
                }
                parts.push(t.clone());
                if after > 0 {
                    parts.push(side(after)?);
                }
                Tensor::cat(&parts, axis)?
            }
            "reflect" | "replicate" => {
                let d = t.dims()[axis];
                if d == 0 || (mode == "reflect" && (before >= d || after >= d)) {
                    return Err(ctx.err(format!(
                        "cannot {mode}-pad dim {axis} of size {d} by ({before}, {after})"
                    )));
                }
                let idx = pad_indices(d, before, after, mode == "reflect");
                let idx = Tensor::from_vec(idx.clone(), idx.len(), x.device())?;
                t.index_select(&idx, axis)?
            }
            other => return Err(ctx.err(format!("unknown pad mode `{other}`"))),
        };
    }
    Ok(vec![t])
}

/// `reverse(x, axes=all)`: reverses the order along each listed axis.
fn reverse(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let axes = match ctx.opt_ints("axes")? {
        Some(a) => ctx.axes(&a, x.rank())?,
        None => (0..x.rank()).collect(),
    };
    let mut t = x.clone();
    for a in axes {
        let d = t.dims()[a];
        let idx: Vec<u32> = (0..d as u32).rev().collect();
        t = t.index_select(&Tensor::from_vec(idx, d, x.device())?, a)?;
    }
    Ok(vec![t])
}

/// Reads integer indices, maps negatives to `i + dim`, and checks them against `dim`.
fn checked_indices(ctx: &OpCtx<'_>, indices: &Tensor, dim: usize) -> Result<Vec<u32>> {
    let raw = indices
        .flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?;
    raw.iter()
        .map(|&i| {
            let j = if i < 0 { i + dim as i64 } else { i };
            if (0..dim as i64).contains(&j) {
                Ok(j as u32)
            } else {
                Err(ctx.err(format!(
                    "index {i} is out of bounds for a dim of size {dim}"
                )))
            }
        })
        .collect()
}

/// `gather(x, indices, axis=0, batch_dims=0)`: output = x.shape[:axis] + indices.shape + x.shape[axis+1:],
/// taking slices of x along axis (per batch when batch_dims > 0); out-of-range indices are an error.
fn gather(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let indices = ctx.tensor("indices")?;
    if indices.dtype().is_float() {
        return Err(ctx.err("indices must be integers"));
    }
    let axis = ctx.int_or("axis", 0)?;
    let axis = ctx.axis(axis, x.rank())?;
    let batch_dims = ctx.int_or("batch_dims", 0)?.max(0) as usize;
    if batch_dims > axis
        || batch_dims > indices.rank()
        || x.dims()[..batch_dims] != indices.dims()[..batch_dims]
    {
        return Err(ctx.err(format!(
            "batch_dims {batch_dims} does not fit x {:?} / indices {:?} / axis {axis}",
            x.dims(),
            indices.dims()
        )));
    }
    let dim = x.dims()[axis];
    let idx = checked_indices(ctx, &indices, dim)?;
    let mut out_dims: Vec<usize> = x.dims()[..axis].to_vec();
    out_dims.extend(&indices.dims()[batch_dims..]);
    out_dims.extend(&x.dims()[axis + 1..]);
    if batch_dims == 0 {
        let n = idx.len();
        let idx = Tensor::from_vec(idx, n, x.device())?;
        return Ok(vec![x.index_select(&idx, axis)?.reshape(out_dims)?]);
    }
    let nb: usize = x.dims()[..batch_dims].iter().product();
    let per = idx.len() / nb.max(1);
    let xb = x.reshape([&[nb][..], &x.dims()[batch_dims..]].concat())?;
    let mut parts = Vec::with_capacity(nb);
    for b in 0..nb {
        let sel = Tensor::from_vec(idx[b * per..(b + 1) * per].to_vec(), per, x.device())?;
        parts.push(xb.get(b)?.index_select(&sel, axis - batch_dims)?);
    }
    Ok(vec![Tensor::stack(&parts, 0)?.reshape(out_dims)?])
}

/// `gather_along_axis(x, indices, axis=0)`: out[..i..] = x[.. indices[..i..] ..] along axis (indices have x's rank).
fn gather_along_axis(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let indices = ctx.tensor("indices")?;
    let axis = ctx.int_or("axis", 0)?;
    let axis = ctx.axis(axis, x.rank())?;
    let ok = indices.rank() == x.rank()
        && x.dims()
            .iter()
            .zip(indices.dims())
            .enumerate()
            .all(|(i, (a, b))| i == axis || a == b);
    if !ok {
        return Err(ctx.err(format!(
            "indices {:?} do not fit x {:?} on axis {axis}",
            indices.dims(),
            x.dims()
        )));
    }
    let idx = checked_indices(ctx, &indices, x.dims()[axis])?;
    let idx = Tensor::from_vec(idx, indices.dims(), x.device())?;
    Ok(vec![x.contiguous()?.gather(&idx, axis)?])
}

/// `gather_nd(x, indices [..., K], batch_dims=0)`: out[i...] = x[indices[i...]] indexing the first K dims of x.
fn gather_nd(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let indices = ctx.tensor("indices")?;
    if ctx.int_or("batch_dims", 0)? != 0 {
        return Err(ctx.err("batch_dims > 0 is not supported"));
    }
    let k = *indices
        .dims()
        .last()
        .ok_or_else(|| ctx.err("indices must have rank >= 1"))?;
    if k > x.rank() {
        return Err(ctx.err(format!(
            "index depth {k} exceeds the rank of x {:?}",
            x.dims()
        )));
    }
    let raw = indices
        .flatten_all()?
        .to_dtype(DType::I64)?
        .to_vec1::<i64>()?;
    let lead = &x.dims()[..k];
    let mut flat = Vec::with_capacity(raw.len() / k.max(1));
    for row in raw.chunks(k.max(1)) {
        let mut f = 0i64;
        for (j, &i) in row.iter().enumerate().take(k) {
            let d = lead[j] as i64;
            let i = if i < 0 { i + d } else { i };
            if !(0..d).contains(&i) {
                return Err(ctx.err(format!(
                    "index {i} is out of bounds for dim {j} of size {d}"
                )));
            }
            f = f * d + i;
        }
        flat.push(f as u32);
    }
    let rows: usize = lead.iter().product();
    let rest = &x.dims()[k..];
    let x2 = x.reshape([&[rows][..], rest].concat())?;
    let n = flat.len();
    let out = x2.index_select(&Tensor::from_vec(flat, n, x.device())?, 0)?;
    let out_dims = [&indices.dims()[..indices.rank() - 1], rest].concat();
    Ok(vec![out.reshape(out_dims)?])
}

/// The storage dtype of output 0.
fn out_storage(ctx: &OpCtx<'_>) -> Result<DType> {
    ctx.out_dtype(0)
        .and_then(storage_dtype)
        .ok_or_else(|| ctx.err("output type is not a tensor"))
}

/// `fill(shape, value=0)`: a tensor of the given shape filled with value.
fn fill(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let shape = ctx.ints("shape")?;
    if shape.iter().any(|&d| d < 0) {
        return Err(ctx.err(format!("invalid shape {shape:?}")));
    }
    let dims: Vec<usize> = shape.into_iter().map(|d| d as usize).collect();
    checked_count(ctx, &dims)?;
    let value = ctx.float_or("value", 0.0)?;
    let t = (Tensor::ones(dims, DType::F64, ctx.device)? * value)?;
    Ok(vec![t.to_dtype(out_storage(ctx)?)?])
}

/// `shape(x)`: the dims of x as a 1-D integer tensor.
fn shape(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let dims: Vec<i64> = x.dims().iter().map(|&d| d as i64).collect();
    let n = dims.len();
    Ok(vec![Tensor::from_vec(dims, n, ctx.device)?])
}

/// `range_1d(end, start, step)`: [start, start + step, ...) up to end (exclusive).
fn range_1d(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let start = ctx.float_or("start", 0.0)?;
    let end = ctx.float_or("end", 0.0)?;
    let step = ctx.float_or("step", 1.0)?;
    if step == 0.0 {
        return Err(ctx.err("step is 0"));
    }
    let n = ((end - start) / step).ceil().max(0.0);
    if !n.is_finite() || n > MAX_ELEMENTS as f64 {
        return Err(ctx.err(format!("range({start}, {end}, {step}) is too long")));
    }
    let n = n as usize;
    let v: Vec<f64> = (0..n).map(|i| start + i as f64 * step).collect();
    Ok(vec![
        Tensor::from_vec(v, n, ctx.device)?.to_dtype(out_storage(ctx)?)?
    ])
}

/// `band_part(x, lower=-1, upper=-1)`: zeroes elements of the last two dims outside the band
/// (i - j > lower or j - i > upper; negative bounds keep the whole triangle).
fn band_part(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if x.rank() < 2 {
        return Err(ctx.err("x must have rank >= 2"));
    }
    let lower = ctx.int_or("lower", -1)?;
    let upper = ctx.int_or("upper", -1)?;
    let (m, n) = (x.dims()[x.rank() - 2], x.dims()[x.rank() - 1]);
    let mut mask = Vec::with_capacity(m * n);
    for i in 0..m as i64 {
        for j in 0..n as i64 {
            let keep = (lower < 0 || i - j <= lower) && (upper < 0 || j - i <= upper);
            mask.push(u8::from(keep));
        }
    }
    let mask = Tensor::from_vec(mask, (m, n), x.device())?.broadcast_as(x.dims())?;
    Ok(vec![mask.where_cond(&x, &x.zeros_like()?)?])
}
