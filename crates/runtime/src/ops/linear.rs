//! Linear algebra ops: `linear`, `matmul`, `conv`, `conv_transpose`, `einsum`.
//! fp16 products go through candle's fp16 GEMM, which widens to f32 and accumulates in f32; other paths compute
//! in f32 explicitly and round the result once.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};
use half::f16;

use super::elementwise::fp16;
use super::{broadcast_shapes, in_f32, Kernel, OpCtx};
use crate::error::Result;
use crate::kernels::kv_products;
use crate::kernels::pool::parallel_chunks_mut;
use crate::kernels::PackedMatrix;

/// Linear-algebra kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("linear", linear),
    ("matmul", matmul),
    ("conv", conv),
    ("conv_transpose", conv_transpose),
    ("einsum", einsum),
];

/// Batched matrix product of `a [.., m, k]` and `b [.., k, n]` with numpy batch broadcasting.
/// BF16 and integer operands are computed in f32 and returned in `a`'s dtype.
pub fn batched_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let dtype = a.dtype();
    if !matches!(dtype, DType::F16 | DType::F32 | DType::F64) {
        let out = batched_matmul(&a.to_dtype(DType::F32)?, &b.to_dtype(DType::F32)?)?;
        return Ok(out.to_dtype(dtype)?);
    }
    let (ra, rb) = (a.rank(), b.rank());
    let batch_a = &a.dims()[..ra - 2];
    let batch_b = &b.dims()[..rb - 2];
    let batch = broadcast_shapes(&[batch_a, batch_b]).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "matmul batch dims {:?} and {:?} do not broadcast",
            a.dims(),
            b.dims()
        ))
    })?;
    let shape_a: Vec<usize> = batch.iter().chain(&a.dims()[ra - 2..]).copied().collect();
    let shape_b: Vec<usize> = batch.iter().chain(&b.dims()[rb - 2..]).copied().collect();
    let a2 = if a.dims() == shape_a.as_slice() {
        a.clone()
    } else {
        a.broadcast_as(shape_a)?
    };
    let b2 = if b.dims() == shape_b.as_slice() {
        b.clone()
    } else {
        b.broadcast_as(shape_b)?
    };
    match a2.matmul(&b2) {
        Ok(t) => Ok(t),
        Err(_) => Ok(a2.contiguous()?.matmul(&b2.contiguous()?)?),
    }
}

/// `linear(x [.., Din], weight [Dout, Din], bias [Dout] opt)`: x @ weight^T + bias.
fn linear(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if let Some((lut, shape)) = ctx.packed_weight("weight") {
        if shape.len() == 2 && x.rank() > 0 && x.dims()[x.rank() - 1] == lut.cols() {
            let lead = &x.dims()[..x.rank() - 1];
            let m: usize = lead.iter().product();
            let xt = x.reshape((m, lut.cols()))?.t()?;
            let y = packed_product(lut, &xt)?.t()?;
            let y = match ctx.opt_tensor("bias")? {
                Some(b) => y.broadcast_add(&b.to_dtype(y.dtype())?)?,
                None => y,
            };
            let mut out_shape = lead.to_vec();
            out_shape.push(lut.rows());
            return Ok(vec![y.reshape(out_shape)?]);
        }
    }
    let w = ctx.tensor("weight")?;
    if w.rank() != 2 || x.rank() == 0 || x.dims()[x.rank() - 1] != w.dims()[1] {
        return Err(ctx.err(format!(
            "x {:?} and weight {:?} do not fit (weight must be [Dout, Din])",
            x.dims(),
            w.dims()
        )));
    }
    if x.dtype() != w.dtype() {
        return Err(ctx.err(format!(
            "x is {:?} but weight is {:?}",
            x.dtype(),
            w.dtype()
        )));
    }
    let din = w.dims()[1];
    let lead: Vec<usize> = x.dims()[..x.rank() - 1].to_vec();
    let m: usize = lead.iter().product();
    let x2 = x.reshape((m, din))?;
    let mut y = batched_matmul(&x2, &w.t()?)?;
    if let Some(b) = ctx.opt_tensor("bias")? {
        y = y.broadcast_add(&b.to_dtype(y.dtype())?)?;
    }
    let mut out_shape = lead;
    out_shape.push(w.dims()[0]);
    Ok(vec![y.reshape(out_shape)?])
}

/// `matmul(x, y, transpose_x=false, transpose_y=false)`: batched product with numpy broadcasting (rank-1 operands
/// are promoted and the added dim removed, as in numpy).
fn matmul(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let mut x = ctx.tensor("x")?;
    let mut y = ctx.tensor("y")?;
    if x.dtype() != y.dtype() {
        return Err(ctx.err(format!("x is {:?} but y is {:?}", x.dtype(), y.dtype())));
    }
    if x.rank() == 0 || y.rank() == 0 {
        return Err(ctx.err("matmul operands must have rank >= 1"));
    }
    let x_vec = x.rank() == 1;
    let y_vec = y.rank() == 1;
    if x_vec {
        x = x.unsqueeze(0)?;
    }
    if y_vec {
        y = y.unsqueeze(1)?;
    }
    if ctx.bool_or("transpose_x", false)? && !x_vec {
        x = x.transpose(x.rank() - 2, x.rank() - 1)?;
    }
    if ctx.bool_or("transpose_y", false)? && !y_vec {
        y = y.transpose(y.rank() - 2, y.rank() - 1)?;
    }
    let (kx, ky) = (x.dims()[x.rank() - 1], y.dims()[y.rank() - 2]);
    if kx != ky {
        return Err(ctx.err(format!(
            "inner dims differ: x {:?}, y {:?}",
            x.dims(),
            y.dims()
        )));
    }
    let mut out = batched_matmul(&x, &y).map_err(|e| ctx.err(e.to_string()))?;
    if y_vec {
        out = out.squeeze(out.rank() - 1)?;
    }
    if x_vec {
        out = out.squeeze(out.rank().saturating_sub(if y_vec { 1 } else { 2 }))?;
    }
    Ok(vec![out])
}

/// The extra parameter of [`matmul_repeated_kv`]: the `tile` reps `[1, R, 1, 1]` of the chain it replaces.
pub const KV_REPEATS_PARAM: &str = "kv_repeats";

/// Optional parameter of [`matmul_repeated_kv`]: the additive attention mask (last dim = KV positions) that the
/// softmax between the score and the value products applies. KV positions past the last one the mask leaves
/// open (not -inf) in any row get probability exactly 0, so both products skip them: scores there are set to 0
/// (the mask makes them -inf) and the value sum leaves them out.
pub const KV_COLUMN_MASK_PARAM: &str = "kv_column_mask";

/// Number of leading KV positions that `mask` (any shape, last dim `s` or 1) leaves open in some row: one past
/// the last column holding a value other than -inf.
fn unmasked_prefix(mask: &Tensor, s: usize) -> Result<usize> {
    let cols = mask.dims().last().copied().unwrap_or(1);
    if cols != s || s == 0 {
        return Ok(s);
    }
    let values = f32_values(mask)?;
    let mut used = 0;
    for row in values.chunks_exact(s) {
        if let Some(j) = row.iter().rposition(|&v| v != f32::NEG_INFINITY) {
            used = used.max(j + 1);
            if used == s {
                break;
            }
        }
    }
    Ok(used)
}

/// `matmul(x, reshape(tile(expand_dims(kv [G, S, D], 1), [1, R, 1, 1]), [1, G*R, S, D]))` without materialising
/// the repeated `kv` (the plan builds this from such chains): query head h uses KV head h / R, so x `[1, G*R, T, K]`
/// is viewed as `[G, R*T, K]` and multiplied by `kv` (or `kv^T` with `transpose_y`) per group. Other operand
/// shapes fall back to repeating `kv` and a plain matmul.
pub fn matmul_repeated_kv(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let kv = ctx.tensor("y")?;
    let rep = match ctx.ints(KV_REPEATS_PARAM)?.as_slice() {
        [1, r, 1, 1] if *r >= 1 => *r as usize,
        other => return Err(ctx.err(format!("KV repeats {other:?} are not [1, R, 1, 1]"))),
    };
    if kv.rank() != 3 {
        return Err(ctx.err(format!("KV {:?} is not [G, S, D]", kv.dims())));
    }
    if x.dtype() != kv.dtype() {
        return Err(ctx.err(format!("x is {:?} but y is {:?}", x.dtype(), kv.dtype())));
    }
    // A rank-3 `x [G*R, T, K]` (with a rank-3 repeated KV) is the rank-4 case without its leading 1.
    if x.rank() == 3 {
        let out = repeated_kv_product(ctx, &x.unsqueeze(0)?, &kv, rep)?;
        return Ok(vec![out.squeeze(0)?]);
    }
    Ok(vec![repeated_kv_product(ctx, &x, &kv, rep)?])
}

/// [`matmul_repeated_kv`] with `x` of rank 4 on the fast paths.
fn repeated_kv_product(ctx: &OpCtx<'_>, x: &Tensor, kv: &Tensor, rep: usize) -> Result<Tensor> {
    let &[g, s, d] = kv.dims() else {
        return Err(ctx.err(format!("KV {:?} is not [G, S, D]", kv.dims())));
    };
    let transpose_x = ctx.bool_or("transpose_x", false)?;
    let transpose_y = ctx.bool_or("transpose_y", false)?;
    let y = if transpose_y { kv.t()? } else { kv.clone() };
    let k = y.dims()[1];
    match *x.dims() {
        [1, h, t, kx]
            if !transpose_x
                && h == g * rep
                && kx == k
                && kv.dtype() == DType::F16
                && kv.device().is_cpu() =>
        {
            let (rows, n) = (rep * t, y.dims()[2]);
            let xs = f32_values(x)?;
            let kv = kv.contiguous()?;
            let (storage, layout) = kv.storage_and_layout();
            let (Storage::Cpu(CpuStorage::F16(data)), Some((start, end))) =
                (&*storage, layout.contiguous_offsets())
            else {
                return Err(ctx.err("KV heads are not in host memory"));
            };
            let heads = &data[start..end];
            let used = match ctx.opt_tensor(KV_COLUMN_MASK_PARAM)? {
                Some(mask) => unmasked_prefix(&mask, s)?,
                None => s,
            };
            let mut out = vec![0f32; g * rows * n];
            parallel_chunks_mut(&mut out, rows * n, |group, o| {
                let xg = &xs[group * rows * k..(group + 1) * rows * k];
                let head = &heads[group * s * d..(group + 1) * s * d];
                if transpose_y {
                    kv_products::scores(xg, rows, head, s, d, used, o);
                } else {
                    kv_products::weighted_sum(xg, rows, head, s, d, used, o);
                }
            });
            tensor_from_f32(out, &[1, h, t, n], x.dtype(), x.device())
        }
        [1, h, t, kx] if !transpose_x && h == g * rep && kx == k => {
            let n = y.dims()[2];
            let out = if t == 1 {
                // One row per head: a product per repeat keeps each one a matrix-vector product.
                let x4 = x.reshape((g, rep, k))?;
                let parts = (0..rep)
                    .map(|r| batched_matmul(&x4.narrow(1, r, 1)?, &y))
                    .collect::<Result<Vec<_>>>()
                    .map_err(|e| ctx.err(e.to_string()))?;
                Tensor::cat(&parts, 1)?
            } else {
                batched_matmul(&x.reshape((g, rep * t, k))?, &y)
                    .map_err(|e| ctx.err(e.to_string()))?
            };
            Ok(out.reshape((1, h, t, n))?)
        }
        _ => {
            let repeated = kv
                .unsqueeze(1)?
                .broadcast_as((g, rep, s, d))?
                .contiguous()?
                .reshape((1, g * rep, s, d))?;
            let mut x = x.clone();
            let mut y = repeated;
            if x.rank() < 2 {
                return Err(ctx.err("matmul operands must have rank >= 2 here"));
            }
            if transpose_x {
                x = x.transpose(x.rank() - 2, x.rank() - 1)?;
            }
            if transpose_y {
                y = y.transpose(2, 3)?;
            }
            if x.dims()[x.rank() - 1] != y.dims()[2] {
                return Err(ctx.err(format!(
                    "inner dims differ: x {:?}, y {:?}",
                    x.dims(),
                    y.dims()
                )));
            }
            batched_matmul(&x, &y).map_err(|e| ctx.err(e.to_string()))
        }
    }
}

/// Padding (before, after) per spatial dim from `pad_type`/`pad`, for input sizes `input`, kernel sizes
/// `kernel`, strides and dilations.
fn conv_padding(
    ctx: &OpCtx<'_>,
    input: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
) -> Result<Vec<(usize, usize)>> {
    let n = input.len();
    let pad_type = ctx.string_or("pad_type", "valid")?;
    match pad_type.as_str() {
        "valid" => Ok(vec![(0, 0); n]),
        "custom" => {
            let pad = ctx.opt_ints("pad")?.unwrap_or_else(|| vec![0; 2 * n]);
            if pad.len() != 2 * n || pad.iter().any(|&p| p < 0) {
                return Err(ctx.err(format!(
                    "pad {pad:?} must hold {} non-negative values",
                    2 * n
                )));
            }
            Ok((0..n)
                .map(|i| (pad[2 * i] as usize, pad[2 * i + 1] as usize))
                .collect())
        }
        "same" | "same_lower" => Ok((0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                let eff_k = kernel[i].saturating_sub(1) * dilations[i] + 1;
                let total = (out.saturating_sub(1) * strides[i] + eff_k).saturating_sub(input[i]);
                let small = total / 2;
                if pad_type == "same" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect()),
        other => Err(ctx.err(format!("unknown pad_type `{other}`"))),
    }
}

/// Reads a per-spatial-dim parameter (strides, dilations) defaulting to 1s.
fn spatial_param(ctx: &OpCtx<'_>, param: &str, n: usize) -> Result<Vec<usize>> {
    match ctx.opt_ints(param)? {
        None => Ok(vec![1; n]),
        Some(v) if v.len() == n && v.iter().all(|&s| s >= 1) => {
            Ok(v.into_iter().map(|s| s as usize).collect())
        }
        Some(v) => Err(ctx.err(format!("`{param}` {v:?} must hold {n} positive values"))),
    }
}

/// `conv(x [N, Cin, *S], weight [Cout, Cin/groups, *K], bias opt, strides, pad_type, pad, dilations, groups)`:
/// 1-D or 2-D cross-correlation.
fn conv(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if let Some(out) = packed_pointwise_conv(ctx, &x)? {
        return Ok(vec![out]);
    }
    let w = ctx.tensor("weight")?;
    let n_spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&n_spatial) || w.rank() != x.rank() {
        return Err(ctx.err(format!(
            "only 1-D and 2-D conv are supported (x {:?}, weight {:?})",
            x.dims(),
            w.dims()
        )));
    }
    let groups = ctx.int_or("groups", 1)?.max(1) as usize;
    let strides = spatial_param(ctx, "strides", n_spatial)?;
    let dilations = spatial_param(ctx, "dilations", n_spatial)?;
    let (cin, cout) = (x.dims()[1], w.dims()[0]);
    if w.dims()[1] * groups != cin || cout % groups != 0 {
        return Err(ctx.err(format!(
            "x {:?} and weight {:?} do not fit with groups={groups}",
            x.dims(),
            w.dims()
        )));
    }
    let kernel = &w.dims()[2..];
    let pads = conv_padding(ctx, &x.dims()[2..], kernel, &strides, &dilations)?;
    let w = w.to_dtype(x.dtype())?;
    let pointwise = kernel.iter().all(|&k| k == 1)
        && strides.iter().all(|&s| s == 1)
        && pads.iter().all(|&p| p == (0, 0))
        && groups == 1;
    let mut out = if pointwise {
        let batch = x.dims()[0];
        let spatial: Vec<usize> = x.dims()[2..].to_vec();
        let len: usize = spatial.iter().product();
        let x3 = x.reshape((batch, cin, len))?;
        let w2 = w.reshape((cout, cin))?;
        let y = batched_matmul(&w2.unsqueeze(0)?, &x3)?;
        let mut shape = vec![batch, cout];
        shape.extend(spatial);
        y.reshape(shape)?
    } else {
        let mut xp = x.clone();
        for (i, &(before, after)) in pads.iter().enumerate() {
            xp = xp.pad_with_zeros(2 + i, before, after)?;
        }
        if dilations.iter().any(|&d| d != dilations[0]) {
            return Err(ctx.err(format!(
                "dilations {dilations:?} differ per dim (not supported)"
            )));
        }
        let uniform_stride = strides.iter().all(|&s| s == strides[0]);
        let stride = if uniform_stride { strides[0] } else { 1 };
        let y = in_f32(&xp, |xf| {
            let wf = w.to_dtype(DType::F32)?;
            Ok(if n_spatial == 1 {
                xf.conv1d(&wf, 0, stride, dilations[0], groups)?
            } else {
                xf.conv2d(&wf, 0, stride, dilations[0], groups)?
            })
        })?;
        if uniform_stride {
            y
        } else {
            subsample(&y, &strides)?
        }
    };
    if let Some(b) = ctx.opt_tensor("bias")? {
        let mut shape = vec![1usize; out.rank()];
        shape[1] = cout;
        out = out.broadcast_add(&b.to_dtype(out.dtype())?.reshape(shape)?)?;
    }
    Ok(vec![out])
}

/// `W @ x` for a packed weight `W [N, K]` and `x [K, M]` (any float dtype, any layout), computed in f32 and
/// returned as `[N, M]` in `x`'s dtype.
fn packed_product(w: &PackedMatrix, x: &Tensor) -> Result<Tensor> {
    let (k, m) = x.dims2()?;
    if k != w.cols() {
        return Err(candle_core::Error::Msg(format!(
            "operand has {k} rows, the packed weight {} columns",
            w.cols()
        ))
        .into());
    }
    let xs = f32_values(x)?;
    let mut out = vec![0f32; w.rows() * m];
    w.matmul(&xs, m, &mut out)?;
    tensor_from_f32(out, &[w.rows(), m], x.dtype(), x.device())
}

/// A tensor of `dtype` from f32 values (fp16 rounded in bulk).
fn tensor_from_f32(
    values: Vec<f32>,
    shape: &[usize],
    dtype: DType,
    device: &Device,
) -> Result<Tensor> {
    if dtype == DType::F16 {
        let mut halves = vec![f16::ZERO; values.len()];
        fp16::narrow(&values, &mut halves);
        return Ok(Tensor::from_vec(halves, shape, device)?);
    }
    Ok(Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?)
}

/// The elements of `x` in row-major order as f32 (fp16 converted in bulk).
fn f32_values(x: &Tensor) -> Result<Vec<f32>> {
    let x = x.contiguous()?;
    {
        let (storage, layout) = x.storage_and_layout();
        if let (Storage::Cpu(CpuStorage::F16(data)), Some((start, end))) =
            (&*storage, layout.contiguous_offsets())
        {
            let mut out = vec![0f32; end - start];
            fp16::widen(&data[start..end], &mut out);
            return Ok(out);
        }
    }
    Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A 1×1, stride-1, unpadded, ungrouped `conv` whose weight is packed, as one packed product per batch item;
/// `None` for any other conv (run on the dense weight).
fn packed_pointwise_conv(ctx: &OpCtx<'_>, x: &Tensor) -> Result<Option<Tensor>> {
    let Some((w, shape)) = ctx.packed_weight("weight") else {
        return Ok(None);
    };
    let n_spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&n_spatial) || shape.len() != x.rank() || !x.dtype().is_float() {
        return Ok(None);
    }
    let kernel = &shape[2..];
    let strides = spatial_param(ctx, "strides", n_spatial)?;
    let dilations = spatial_param(ctx, "dilations", n_spatial)?;
    let pads = conv_padding(ctx, &x.dims()[2..], kernel, &strides, &dilations)?;
    let pointwise = kernel.iter().all(|&k| k == 1)
        && strides.iter().all(|&s| s == 1)
        && pads.iter().all(|&p| p == (0, 0))
        && ctx.int_or("groups", 1)? == 1
        && x.dims()[1] == w.cols();
    if !pointwise {
        return Ok(None);
    }
    let batch = x.dims()[0];
    let spatial = &x.dims()[2..];
    let len: usize = spatial.iter().product();
    let mut out = if batch == 1 {
        packed_product(w, &x.reshape((w.cols(), len))?)?
    } else {
        let items = (0..batch)
            .map(|b| packed_product(w, &x.get(b)?.reshape((w.cols(), len))?))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&items, 0)?
    };
    let mut out_shape = vec![batch, w.rows()];
    out_shape.extend_from_slice(spatial);
    out = out.reshape(out_shape)?;
    if let Some(b) = ctx.opt_tensor("bias")? {
        let mut bshape = vec![1usize; out.rank()];
        bshape[1] = w.rows();
        out = out.broadcast_add(&b.to_dtype(out.dtype())?.reshape(bshape)?)?;
    }
    Ok(Some(out))
}

/// Keeps every `strides[i]`-th element of spatial dim i (dims 2..).
fn subsample(t: &Tensor, strides: &[usize]) -> Result<Tensor> {
    let mut out = t.clone();
    for (i, &s) in strides.iter().enumerate() {
        if s > 1 {
            let len = out.dims()[2 + i];
            let idx: Vec<u32> = (0..len).step_by(s).map(|v| v as u32).collect();
            let idx = Tensor::from_vec(idx.clone(), idx.len(), t.device())?;
            out = out.index_select(&idx, 2 + i)?;
        }
    }
    Ok(out)
}

/// `conv_transpose(x [N, Cin, *S], weight [Cin, Cout/groups, *K], bias opt, pad, output_padding?, output_shape opt,
/// pad_type, strides, dilations, groups)`: the gradient of conv with respect to its input (1-D or 2-D).
fn conv_transpose(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let w = ctx.tensor("weight")?;
    let n_spatial = x.rank().saturating_sub(2);
    if !(1..=2).contains(&n_spatial) || w.rank() != x.rank() {
        return Err(ctx.err(format!(
            "only 1-D and 2-D conv_transpose are supported (x {:?}, weight {:?})",
            x.dims(),
            w.dims()
        )));
    }
    let groups = ctx.int_or("groups", 1)?.max(1) as usize;
    let strides = spatial_param(ctx, "strides", n_spatial)?;
    let dilations = spatial_param(ctx, "dilations", n_spatial)?;
    if strides.iter().any(|&s| s != strides[0]) || dilations.iter().any(|&d| d != dilations[0]) {
        return Err(ctx.err("non-uniform strides or dilations are not supported"));
    }
    if n_spatial == 2 && groups != 1 {
        return Err(ctx.err("grouped 2-D conv_transpose is not supported"));
    }
    let pad_type = ctx.string_or("pad_type", "valid")?;
    let pads: Vec<(usize, usize)> = match pad_type.as_str() {
        "custom" => {
            let pad = ctx
                .opt_ints("pad")?
                .unwrap_or_else(|| vec![0; 2 * n_spatial]);
            if pad.len() != 2 * n_spatial || pad.iter().any(|&p| p < 0) {
                return Err(ctx.err(format!(
                    "pad {pad:?} must hold {} non-negative values",
                    2 * n_spatial
                )));
            }
            (0..n_spatial)
                .map(|i| (pad[2 * i] as usize, pad[2 * i + 1] as usize))
                .collect()
        }
        _ => vec![(0, 0); n_spatial],
    };
    let w = w.to_dtype(x.dtype())?;
    let mut y = in_f32(&x, |xf| {
        let wf = w.to_dtype(DType::F32)?;
        Ok(if n_spatial == 1 {
            xf.conv_transpose1d(&wf, 0, 0, strides[0], dilations[0], groups)?
        } else {
            xf.conv_transpose2d(&wf, 0, 0, strides[0], dilations[0])?
        })
    })?;
    let target: Option<Vec<usize>> = match ctx.opt_ints("output_shape")? {
        Some(s) if s.len() == x.rank() => Some(s[2..].iter().map(|&d| d.max(0) as usize).collect()),
        _ => None,
    };
    for i in 0..n_spatial {
        let full = y.dims()[2 + i];
        let (before, after) = pads[i];
        let want = match &target {
            Some(t) => t[i],
            None if pad_type == "same" => x.dims()[2 + i] * strides[i],
            None => full.saturating_sub(before + after),
        };
        let start = if pad_type == "same" && target.is_none() {
            (full.saturating_sub(want)) / 2
        } else {
            before
        };
        if start + want <= full {
            y = y.narrow(2 + i, start, want)?;
        } else {
            let have = full.saturating_sub(start);
            y = y
                .narrow(2 + i, start.min(full), have)?
                .pad_with_zeros(2 + i, 0, want - have)?;
        }
    }
    if let Some(b) = ctx.opt_tensor("bias")? {
        let mut shape = vec![1usize; y.rank()];
        shape[1] = y.dims()[1];
        y = y.broadcast_add(&b.to_dtype(y.dtype())?.reshape(shape)?)?;
    }
    Ok(vec![y])
}

/// `einsum(values=(a, b), equation)`: two-operand Einstein summation (`"bkhc,bchq->bkhq"`), lowered to
/// permute + batched matmul.
fn einsum(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let values = ctx.tensors("values")?;
    let equation = ctx
        .opt_string("equation")?
        .ok_or_else(|| ctx.err("missing parameter `equation`"))?;
    let [a, b] = values.as_slice() else {
        return Err(ctx.err(format!("einsum takes two operands, got {}", values.len())));
    };
    einsum2(&equation, a, b).map_err(|e| ctx.err(e))
}

fn einsum2(equation: &str, a: &Tensor, b: &Tensor) -> std::result::Result<Vec<Tensor>, String> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, out) = eq.split_once("->").ok_or("equation must contain `->`")?;
    let (la, lb) = lhs
        .split_once(',')
        .ok_or("equation must have two operands")?;
    let (la, lb, lo): (Vec<char>, Vec<char>, Vec<char>) = (
        la.chars().collect(),
        lb.chars().collect(),
        out.chars().collect(),
    );
    if la.len() != a.rank() || lb.len() != b.rank() {
        return Err(format!(
            "equation `{equation}` does not match ranks {} and {}",
            a.rank(),
            b.rank()
        ));
    }
    let all_unique = |v: &[char]| v.iter().enumerate().all(|(i, c)| !v[..i].contains(c));
    if !all_unique(&la) || !all_unique(&lb) || !all_unique(&lo) {
        return Err(format!(
            "repeated labels in one operand are not supported (`{equation}`)"
        ));
    }
    let size = |c: char| -> Option<usize> {
        la.iter()
            .position(|&x| x == c)
            .map(|i| a.dims()[i])
            .or_else(|| lb.iter().position(|&x| x == c).map(|i| b.dims()[i]))
    };
    let run = || -> candle_core::Result<Tensor> {
        // Sum away labels that appear in one operand only and not in the output.
        let (mut a, mut la) = (a.clone(), la.clone());
        for i in (0..la.len()).rev() {
            if !lb.contains(&la[i]) && !lo.contains(&la[i]) {
                a = a.sum(i)?;
                la.remove(i);
            }
        }
        let (mut b, mut lb) = (b.clone(), lb.clone());
        for i in (0..lb.len()).rev() {
            if !la.contains(&lb[i]) && !lo.contains(&lb[i]) {
                b = b.sum(i)?;
                lb.remove(i);
            }
        }
        let batch: Vec<char> = la
            .iter()
            .copied()
            .filter(|c| lb.contains(c) && lo.contains(c))
            .collect();
        let contract: Vec<char> = la
            .iter()
            .copied()
            .filter(|c| lb.contains(c) && !lo.contains(c))
            .collect();
        let free_a: Vec<char> = la.iter().copied().filter(|c| !lb.contains(c)).collect();
        let free_b: Vec<char> = lb.iter().copied().filter(|c| !la.contains(c)).collect();
        let pos = |labels: &[char], c: char| labels.iter().position(|&x| x == c).unwrap_or(0);
        let perm_a: Vec<usize> = batch
            .iter()
            .chain(&free_a)
            .chain(&contract)
            .map(|&c| pos(&la, c))
            .collect();
        let perm_b: Vec<usize> = batch
            .iter()
            .chain(&contract)
            .chain(&free_b)
            .map(|&c| pos(&lb, c))
            .collect();
        let prod = |labels: &[char]| {
            labels
                .iter()
                .map(|&c| size(c).unwrap_or(1))
                .product::<usize>()
        };
        let (nb, m, k, n) = (prod(&batch), prod(&free_a), prod(&contract), prod(&free_b));
        let a3 = a.permute(perm_a)?.reshape((nb, m, k))?;
        let b3 = b.permute(perm_b)?.reshape((nb, k, n))?;
        let y = batched_matmul(&a3, &b3).map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let labels: Vec<char> = batch
            .iter()
            .chain(&free_a)
            .chain(&free_b)
            .copied()
            .collect();
        let dims: Vec<usize> = labels.iter().map(|&c| size(c).unwrap_or(1)).collect();
        let y = y.reshape(dims)?;
        let perm: Vec<usize> = lo.iter().map(|&c| pos(&labels, c)).collect();
        y.permute(perm)
    };
    if lo.iter().any(|c| !la.contains(c) && !lb.contains(c)) {
        return Err(format!(
            "output label not found in the operands (`{equation}`)"
        ));
    }
    let out = run().map_err(|e| e.to_string())?;
    Ok(vec![out])
}
