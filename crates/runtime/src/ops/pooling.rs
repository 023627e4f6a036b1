//! Pooling and upsampling ops (1-D and 2-D, computed in f32).

use candle_core::{DType, Tensor};

use super::{in_f32, Kernel, OpCtx};
use crate::error::Result;

/// Pooling kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[
    ("avg_pool", avg_pool),
    ("max_pool", max_pool),
    ("upsample_nearest_neighbor", upsample_nearest_neighbor),
    ("upsample_bilinear", upsample_bilinear),
    ("resize_bilinear", resize_bilinear),
];

/// Window geometry of a pooling op, with the input padded explicitly.
struct Window {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    pads: Vec<(usize, usize)>,
}

fn window(ctx: &OpCtx<'_>, x: &Tensor) -> Result<Window> {
    let n = x.rank().saturating_sub(2);
    if !(1..=2).contains(&n) {
        return Err(ctx.err(format!(
            "only 1-D and 2-D pooling are supported (x {:?})",
            x.dims()
        )));
    }
    if ctx.bool_or("ceil_mode", false)? {
        return Err(ctx.err("ceil_mode=true is not supported"));
    }
    let kernel: Vec<usize> = ctx
        .ints("kernel_sizes")?
        .into_iter()
        .map(|k| k.max(1) as usize)
        .collect();
    let strides: Vec<usize> = ctx
        .opt_ints("strides")?
        .unwrap_or_else(|| vec![1; n])
        .into_iter()
        .map(|s| s.max(1) as usize)
        .collect();
    if kernel.len() != n || strides.len() != n {
        return Err(ctx.err(format!(
            "kernel_sizes {kernel:?} / strides {strides:?} must have {n} entries"
        )));
    }
    let pad_type = ctx.string_or("pad_type", "valid")?;
    let input = &x.dims()[2..];
    let pads = match pad_type.as_str() {
        "valid" => vec![(0, 0); n],
        "custom" => {
            let p = ctx.opt_ints("pad")?.unwrap_or_else(|| vec![0; 2 * n]);
            if p.len() != 2 * n || p.iter().any(|&v| v < 0) {
                return Err(ctx.err(format!("pad {p:?} must hold {} non-negative values", 2 * n)));
            }
            (0..n)
                .map(|i| (p[2 * i] as usize, p[2 * i + 1] as usize))
                .collect()
        }
        "same" | "same_lower" => (0..n)
            .map(|i| {
                let out = input[i].div_ceil(strides[i]);
                let total =
                    (out.saturating_sub(1) * strides[i] + kernel[i]).saturating_sub(input[i]);
                let small = total / 2;
                if pad_type == "same" {
                    (small, total - small)
                } else {
                    (total - small, small)
                }
            })
            .collect(),
        other => return Err(ctx.err(format!("unknown pad_type `{other}`"))),
    };
    Ok(Window {
        kernel,
        strides,
        pads,
    })
}

/// Pads spatial dims with `value`.
fn pad_spatial(x: &Tensor, pads: &[(usize, usize)], value: f64) -> Result<Tensor> {
    let mut t = x.clone();
    for (i, &(before, after)) in pads.iter().enumerate() {
        let axis = 2 + i;
        let block = |n: usize, like: &Tensor| -> Result<Tensor> {
            let mut dims = like.dims().to_vec();
            dims[axis] = n;
            Ok(Tensor::full(value as f32, dims, x.device())?.to_dtype(x.dtype())?)
        };
        let mut parts = Vec::with_capacity(3);
        if before > 0 {
            parts.push(block(before, &t)?);
        }
        parts.push(t.clone());
        if after > 0 {
            parts.push(block(after, &t)?);
        }
        if parts.len() > 1 {
            t = Tensor::cat(&parts, axis)?;
        }
    }
    Ok(t)
}

/// Runs a 2-D candle pool on a 1-D or 2-D input (1-D is lifted to height 1).
fn pool2d(x: &Tensor, w: &Window, max: bool) -> Result<Tensor> {
    let one_d = x.rank() == 3;
    let x4 = if one_d { x.unsqueeze(2)? } else { x.clone() };
    let (k, s) = if one_d {
        ((1, w.kernel[0]), (1, w.strides[0]))
    } else {
        ((w.kernel[0], w.kernel[1]), (w.strides[0], w.strides[1]))
    };
    let y = if max {
        x4.max_pool2d_with_stride(k, s)?
    } else {
        x4.avg_pool2d_with_stride(k, s)?
    };
    Ok(if one_d { y.squeeze(2)? } else { y })
}

/// `max_pool(x, kernel_sizes, strides, pad_type, pad)`: maximum over each window (padding never wins).
fn max_pool(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let w = window(ctx, &x)?;
    let out = in_f32(&x, |xf| {
        pool2d(&pad_spatial(xf, &w.pads, f64::NEG_INFINITY)?, &w, true)
    })?;
    Ok(vec![out])
}

/// `avg_pool(x, kernel_sizes, strides, pad_type, pad, exclude_padding_from_average=false)`: mean over each window.
fn avg_pool(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let w = window(ctx, &x)?;
    let exclude = ctx.bool_or("exclude_padding_from_average", false)?;
    let out = in_f32(&x, |xf| {
        let sum_avg = pool2d(&pad_spatial(xf, &w.pads, 0.0)?, &w, false)?;
        if !exclude || w.pads.iter().all(|&p| p == (0, 0)) {
            return Ok(sum_avg);
        }
        // Rescale by window size / number of real elements in each window.
        let ones = Tensor::ones(xf.dims(), DType::F32, xf.device())?;
        let frac = pool2d(&pad_spatial(&ones, &w.pads, 0.0)?, &w, false)?;
        Ok(sum_avg.div(&frac)?)
    })?;
    Ok(vec![out])
}

/// `upsample_nearest_neighbor(x [N, C, H, W], scale_factor_height=1, scale_factor_width=1)`: repeats pixels by
/// integer factors.
fn upsample_nearest_neighbor(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    if x.rank() != 4 {
        return Err(ctx.err(format!("x must be [N, C, H, W], got {:?}", x.dims())));
    }
    let sh = ctx.float_or("scale_factor_height", 1.0)?;
    let sw = ctx.float_or("scale_factor_width", 1.0)?;
    let (h, w) = (x.dims()[2], x.dims()[3]);
    if h == 0 || w == 0 || !(sh > 0.0 && sw > 0.0 && sh * h as f64 <= 1e6 && sw * w as f64 <= 1e6) {
        return Err(ctx.err(format!("cannot upsample {:?} by ({sh}, {sw})", x.dims())));
    }
    let (oh, ow) = (
        (h as f64 * sh).floor() as usize,
        (w as f64 * sw).floor() as usize,
    );
    let rows: Vec<u32> = (0..oh)
        .map(|i| ((i as f64 / sh).floor() as usize).min(h.saturating_sub(1)) as u32)
        .collect();
    let cols: Vec<u32> = (0..ow)
        .map(|j| ((j as f64 / sw).floor() as usize).min(w.saturating_sub(1)) as u32)
        .collect();
    let y = x
        .index_select(&Tensor::from_vec(rows, oh, x.device())?, 2)?
        .index_select(&Tensor::from_vec(cols, ow, x.device())?, 3)?;
    Ok(vec![y])
}

/// Sample positions in an input axis of size `xin` for `xout` outputs, per Core ML sampling mode
/// (`ASYMMETRIC` = i * xin / xout, used by upsample_bilinear without corner alignment or half-pixel centres).
fn sample_grid(mode: &str, xin: usize, xout: usize) -> Option<Vec<f64>> {
    let (fin, fout) = (xin as f64, xout as f64);
    let last = (fin - 1.0).max(0.0);
    let steps = (fout - 1.0).max(1.0);
    let point: Box<dyn Fn(f64) -> f64> = match mode {
        "STRICT_ALIGN_CORNERS" => Box::new(move |i| i * last / steps),
        "ALIGN_CORNERS" if xout == 1 => Box::new(move |_| last / 2.0),
        "ALIGN_CORNERS" => Box::new(move |i| i * last / steps),
        "DEFAULT" => Box::new(move |i| i * (fin - fin / fout) / steps),
        "OFFSET_CORNERS" => {
            let delta = (fin - 1.0).max(1.0) / fout;
            Box::new(move |i| 0.5 * delta + i * delta)
        }
        "UNALIGN_CORNERS" => Box::new(move |i| (i + 0.5) * fin / fout - 0.5),
        "ASYMMETRIC" => Box::new(move |i| i * fin / fout),
        _ => return None,
    };
    Some(
        (0..xout)
            .map(|i| point(i as f64).clamp(0.0, last))
            .collect(),
    )
}

/// Linear interpolation of `x` (f32) along `axis` at the sample positions `grid`.
fn interpolate_axis(x: &Tensor, axis: usize, grid: &[f64]) -> Result<Tensor> {
    let size = x.dims()[axis];
    let lo: Vec<u32> = grid.iter().map(|&g| g.floor() as u32).collect();
    let hi: Vec<u32> = lo.iter().map(|&l| (l + 1).min(size as u32 - 1)).collect();
    let w: Vec<f32> = grid
        .iter()
        .zip(&lo)
        .map(|(&g, &l)| (g - l as f64) as f32)
        .collect();
    let n = grid.len();
    let mut wshape = vec![1usize; x.rank()];
    wshape[axis] = n;
    let w = Tensor::from_vec(w, wshape, x.device())?;
    let a = x.index_select(&Tensor::from_vec(lo, n, x.device())?, axis)?;
    let b = x.index_select(&Tensor::from_vec(hi, n, x.device())?, axis)?;
    Ok((a.broadcast_mul(&(w.ones_like()? - &w)?)? + b.broadcast_mul(&w)?)?)
}

/// Bilinear resampling of the last two dims of `x` to (oh, ow) with the given sampling mode.
fn bilinear(ctx: &OpCtx<'_>, x: &Tensor, oh: usize, ow: usize, mode: &str) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 3 {
        return Err(ctx.err(format!("x must have rank >= 3, got {:?}", x.dims())));
    }
    let (h, w) = (x.dims()[rank - 2], x.dims()[rank - 1]);
    if h == 0 || w == 0 || oh == 0 || ow == 0 || oh > 1 << 20 || ow > 1 << 20 {
        return Err(ctx.err(format!("cannot resize {:?} to ({oh}, {ow})", x.dims())));
    }
    let gh = sample_grid(mode, h, oh)
        .ok_or_else(|| ctx.err(format!("unknown sampling mode `{mode}`")))?;
    let gw = sample_grid(mode, w, ow)
        .ok_or_else(|| ctx.err(format!("unknown sampling mode `{mode}`")))?;
    in_f32(x, |xf| {
        interpolate_axis(&interpolate_axis(xf, rank - 2, &gh)?, rank - 1, &gw)
    })
}

/// `upsample_bilinear(x, scale_factor_height=1, scale_factor_width=1, align_corners=true, half_pixel_centers)`:
/// bilinear upsampling of the last two dims to floor(size * scale).
fn upsample_bilinear(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let sh = ctx.float_or("scale_factor_height", 1.0)?;
    let sw = ctx.float_or("scale_factor_width", 1.0)?;
    let align = ctx.bool_or("align_corners", true)?;
    let half_pixel = ctx.bool_or("half_pixel_centers", !align)?;
    let rank = x.rank();
    if rank < 3 || !(sh > 0.0 && sw > 0.0) {
        return Err(ctx.err(format!("cannot upsample {:?} by ({sh}, {sw})", x.dims())));
    }
    let oh = (x.dims()[rank - 2] as f64 * sh).floor() as usize;
    let ow = (x.dims()[rank - 1] as f64 * sw).floor() as usize;
    let mode = match (align, half_pixel) {
        (true, _) => "STRICT_ALIGN_CORNERS",
        (false, true) => "UNALIGN_CORNERS",
        (false, false) => "ASYMMETRIC",
    };
    Ok(vec![bilinear(ctx, &x, oh, ow, mode)?])
}

/// `resize_bilinear(x, target_size_height=1, target_size_width=1, sampling_mode="DEFAULT")`: bilinear resize of
/// the last two dims (modes STRICT_ALIGN_CORNERS, ALIGN_CORNERS, DEFAULT, OFFSET_CORNERS, UNALIGN_CORNERS).
fn resize_bilinear(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let oh = ctx.int_or("target_size_height", 1)?.max(0) as usize;
    let ow = ctx.int_or("target_size_width", 1)?.max(0) as usize;
    let mode = ctx.string_or("sampling_mode", "DEFAULT")?;
    Ok(vec![bilinear(ctx, &x, oh, ow, &mode)?])
}
