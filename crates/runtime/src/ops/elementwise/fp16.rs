//! Fast paths for fp16 tensors in CPU memory. Elements are widened to f32 in runs (with F16C instructions when the
//! CPU has them, detected at run time, else with the `half` crate's conversions), computed in f32 and rounded to
//! fp16 where the program rounds. An elementwise fp16 op computed this way gives the same values as candle's fp16
//! ops, which also compute each operation in f32 and round once (ties to even), but without a software conversion
//! per element and without materialising broadcast operands. Large inputs (prefill) are split over the kernel
//! threads of [`crate::kernels::pool`].

use candle_core::{CpuStorage, Layout, Storage, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Elements widened per run (the stack buffers' length).
const RUN: usize = 256;

/// Widens fp16 values to f32 (`dst` and `src` have one length; extra elements of the longer one are left alone).
pub(crate) fn widen(src: &[f16], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports AVX and F16C (checked just above).
        unsafe { widen_f16c(&src[..n], &mut dst[..n]) };
        return;
    }
    src[..n].convert_to_f32_slice(&mut dst[..n]);
}

/// Rounds f32 values to the nearest fp16 (ties to even), as `half` and candle round.
pub(crate) fn narrow(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") && std::arch::is_x86_feature_detected!("f16c") {
        // SAFETY: the CPU supports AVX and F16C (checked just above).
        unsafe { narrow_f16c(&src[..n], &mut dst[..n]) };
        return;
    }
    dst[..n].convert_from_f32_slice(&src[..n]);
}

/// [`widen`] with F16C instructions, eight values at a time. Callers check that the CPU has AVX and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn widen_f16c(src: &[f16], dst: &mut [f32]) {
    use std::arch::x86_64::{__m128i, _mm256_cvtph_ps, _mm256_storeu_ps, _mm_loadu_si128};
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (a, b) in (&mut s).zip(&mut d) {
        let v = _mm_loadu_si128(a.as_ptr().cast::<__m128i>());
        _mm256_storeu_ps(b.as_mut_ptr(), _mm256_cvtph_ps(v));
    }
    for (a, b) in s.remainder().iter().zip(d.into_remainder()) {
        *b = a.to_f32();
    }
}

/// [`narrow`] with F16C instructions, eight values at a time. Callers check that the CPU has AVX and F16C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx,f16c")]
unsafe fn narrow_f16c(src: &[f32], dst: &mut [f16]) {
    use std::arch::x86_64::{
        __m128i, _mm256_cvtps_ph, _mm256_loadu_ps, _mm_storeu_si128, _MM_FROUND_TO_NEAREST_INT,
    };
    let mut s = src.chunks_exact(8);
    let mut d = dst.chunks_exact_mut(8);
    for (a, b) in (&mut s).zip(&mut d) {
        let v = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(a.as_ptr()));
        _mm_storeu_si128(b.as_mut_ptr().cast::<__m128i>(), v);
    }
    for (a, b) in s.remainder().iter().zip(d.into_remainder()) {
        *b = f16::from_f32(*a);
    }
}

/// An fp16 operand read through an output shape: its elements, the position of its first element and one stride
/// per output dim (0 where the operand is broadcast).
struct Strided<'a> {
    data: &'a [f16],
    offset: usize,
    strides: Vec<usize>,
}

impl<'a> Strided<'a> {
    /// `data` laid out as `layout`, broadcast (numpy rules, aligned right) to `dims`; `None` when the shapes do not
    /// broadcast or the layout reaches outside `data`.
    fn new(data: &'a [f16], layout: &Layout, dims: &[usize]) -> Option<Strided<'a>> {
        let own = layout.dims();
        let lead = dims.len().checked_sub(own.len())?;
        let mut strides = vec![0usize; dims.len()];
        for (i, (&d, &s)) in own.iter().zip(layout.stride()).enumerate() {
            let out = dims[lead + i];
            if d == out {
                strides[lead + i] = if d == 1 { 0 } else { s };
            } else if d != 1 {
                return None;
            }
        }
        let view = Strided {
            data,
            offset: layout.start_offset(),
            strides,
        };
        view.fits(dims).then_some(view)
    }

    /// True when every position this view reads for an output of shape `dims` lies inside `data`.
    fn fits(&self, dims: &[usize]) -> bool {
        if dims.contains(&0) {
            return true;
        }
        let last = dims
            .iter()
            .zip(&self.strides)
            .try_fold(self.offset, |acc, (&d, &s)| {
                (d - 1).checked_mul(s).and_then(|v| acc.checked_add(v))
            });
        last.is_some_and(|l| l < self.data.len())
    }

    /// Widens `buf.len()` elements starting at `start`, `stride` apart, into `buf`.
    fn load(&self, start: usize, stride: usize, buf: &mut [f32]) {
        match stride {
            1 => widen(&self.data[start..start + buf.len()], buf),
            0 => buf.fill(self.data[start].to_f32()),
            s => {
                let mut gathered = [f16::ZERO; RUN];
                for (c, part) in buf.chunks_mut(RUN).enumerate() {
                    let g = &mut gathered[..part.len()];
                    for (k, v) in g.iter_mut().enumerate() {
                        *v = self.data[start + (c * RUN + k) * s];
                    }
                    widen(g, part);
                }
            }
        }
    }
}

/// The fp16 elements and layout of a CPU fp16 tensor, handed to `f`; `None` for other dtypes or devices.
fn with_f16<R>(t: &Tensor, f: impl FnOnce(&[f16], &Layout) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(CpuStorage::F16(data)) => Some(f(data, layout)),
        _ => None,
    }
}

/// Sum of f32 values added in the order candle-core's CPU reductions use (with AVX2: 32 interleaved lanes, combined
/// pairwise, then the tail in order; without: one running sum), so that fused kernels round as the candle ops they
/// replace.
pub(crate) fn sum_like_candle(values: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let full = values.len() & !31;
        let (body, tail) = values.split_at(full);
        let mut acc = [0f32; 32];
        for chunk in body.chunks_exact(32) {
            for (a, v) in acc.iter_mut().zip(chunk) {
                *a += v;
            }
        }
        // Four 8-lane vectors: (v0 + v1) + (v2 + v3), then halves, then the two horizontal adds.
        let v: [f32; 8] =
            std::array::from_fn(|l| (acc[l] + acc[8 + l]) + (acc[16 + l] + acc[24 + l]));
        let h: [f32; 4] = std::array::from_fn(|l| v[l] + v[l + 4]);
        let mut sum = (h[0] + h[1]) + (h[2] + h[3]);
        for t in tail {
            sum += t;
        }
        return sum;
    }
    values.iter().fold(0.0, |sum, v| sum + v)
}

/// Largest of f32 values (NaNs ignored), `-inf` for none, computed in eight interleaved lanes.
pub(crate) fn max_lanes(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = values.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            if v > *a {
                *a = v;
            }
        }
    }
    acc.iter().fold(tail, |m, &v| if v > m { v } else { m })
}

/// The elements of a CPU fp16 tensor in row-major order, widened to f32; `None` for other dtypes or devices.
pub(crate) fn widened_values(t: &Tensor) -> Option<Vec<f32>> {
    let t = t.contiguous().ok()?;
    with_f16(&t, |data, layout| {
        let (start, end) = layout.contiguous_offsets()?;
        let src = data.get(start..end)?;
        let mut out = vec![0f32; src.len()];
        widen(src, &mut out);
        Some(out)
    })
    .flatten()
}

/// Rounds every value of `buf` to the nearest fp16 (ties to even), keeping it as f32.
pub(crate) fn round_to_f16(buf: &mut [f32]) {
    let mut tmp = [f16::ZERO; RUN];
    for chunk in buf.chunks_mut(RUN) {
        let t = &mut tmp[..chunk.len()];
        narrow(chunk, t);
        widen(t, chunk);
    }
}

/// Merges adjacent dims that every stride list walks as one (and drops size-1 dims), so that runs are long.
fn coalesce(dims: &[usize], strides: &[&[usize]]) -> (Vec<usize>, Vec<Vec<usize>>) {
    let mut cd: Vec<usize> = Vec::with_capacity(dims.len());
    let mut cs: Vec<Vec<usize>> = vec![Vec::with_capacity(dims.len()); strides.len()];
    for (i, &d) in dims.iter().enumerate() {
        if d == 1 {
            continue;
        }
        let merge = !cd.is_empty()
            && strides
                .iter()
                .zip(&cs)
                .all(|(s, c)| c.last().copied() == s[i].checked_mul(d));
        if merge {
            if let Some(last) = cd.last_mut() {
                *last *= d;
            }
            for (s, c) in strides.iter().zip(cs.iter_mut()) {
                if let Some(l) = c.last_mut() {
                    *l = s[i];
                }
            }
        } else {
            cd.push(d);
            for (s, c) in strides.iter().zip(cs.iter_mut()) {
                c.push(s[i]);
            }
        }
    }
    (cd, cs)
}

/// The number of elements of a tensor of shape `dims`; `None` when it does not fit in memory addresses.
fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize / 4)
}

/// Output elements below which a map or row-wise kernel runs on the calling thread alone (every tensor of a
/// decode step); larger ones (prefill) are split over the kernel threads.
const PARALLEL_MIN: usize = 1 << 15;

/// Calls `f` on groups of whole `row_len`-element rows of `values` (one group on the calling thread for small
/// inputs, several on the kernel threads otherwise).
pub(crate) fn for_row_groups(values: &mut [f32], row_len: usize, f: impl Fn(&mut [f32]) + Sync) {
    let row_len = row_len.max(1);
    let rows = values.len() / row_len;
    if values.len() < PARALLEL_MIN || rows < 2 {
        f(values);
        return;
    }
    let per_task = rows.div_ceil(crate::kernels::pool::threads() * 4).max(1);
    crate::kernels::pool::parallel_chunks_mut(values, per_task * row_len, |_, group| f(group));
}

/// Splits a long innermost run into blocks (an extra dim) so that large maps can be shared between threads.
fn split_long_run(dims: &mut Vec<usize>, strides: &mut [Vec<usize>]) {
    let Some(&inner) = dims.last() else {
        return;
    };
    if inner < PARALLEL_MIN {
        return;
    }
    let Some(block) = [4096usize, 2048, 1024, 512, 256]
        .into_iter()
        .find(|b| inner.is_multiple_of(*b))
    else {
        return;
    };
    let last = dims.len() - 1;
    dims[last] = inner / block;
    dims.push(block);
    for s in strides.iter_mut() {
        let step = s[last];
        s[last] = step * block;
        s.push(step);
    }
}

/// Iterates over `dims` in row-major order: widens each input's elements in runs of at most [`RUN`], lets `f` turn
/// them into output values (f32 buffers) and stores them, rounded to fp16, one after another into `out`. `None`
/// (nothing written) when `out` does not hold exactly one element per position.
fn map_into<const N: usize>(
    dims: &[usize],
    inputs: [&Strided<'_>; N],
    out: &mut [f16],
    f: impl Fn([&[f32]; N], &mut [f32]) + Sync,
) -> Option<()> {
    if element_count(dims)? != out.len() {
        return None;
    }
    if out.is_empty() {
        return Some(());
    }
    let strides: Vec<&[usize]> = inputs.iter().map(|v| v.strides.as_slice()).collect();
    let (mut cd, mut cs) = coalesce(dims, &strides);
    split_long_run(&mut cd, &mut cs);
    let (outer, inner) = match cd.split_last() {
        Some((&inner, outer)) => (outer.to_vec(), inner),
        None => (Vec::new(), 1),
    };
    let inner_strides: Vec<usize> = cs.iter().map(|s| s.last().copied().unwrap_or(0)).collect();
    // Rows `first_row ..` (runs of `inner` outputs) into `piece`.
    let rows_into = |first_row: usize, piece: &mut [f16]| {
        let mut counter = vec![0usize; outer.len()];
        let mut rest = first_row;
        for d in (0..outer.len()).rev() {
            counter[d] = rest % outer[d];
            rest /= outer[d];
        }
        let mut starts: Vec<usize> = inputs
            .iter()
            .enumerate()
            .map(|(k, v)| {
                v.offset
                    + counter
                        .iter()
                        .zip(&cs[k])
                        .map(|(c, s)| c * s)
                        .sum::<usize>()
            })
            .collect();
        let mut bufs = [[0f32; RUN]; N];
        let mut res = [0f32; RUN];
        let mut pos = 0;
        for _ in 0..piece.len() / inner {
            let mut done = 0;
            while done < inner {
                let len = RUN.min(inner - done);
                for (k, view) in inputs.iter().enumerate() {
                    let s = inner_strides[k];
                    view.load(starts[k] + done * s, s, &mut bufs[k][..len]);
                }
                let ins: [&[f32]; N] = std::array::from_fn(|k| &bufs[k][..len]);
                f(ins, &mut res[..len]);
                narrow(&res[..len], &mut piece[pos..pos + len]);
                pos += len;
                done += len;
            }
            for d in (0..outer.len()).rev() {
                counter[d] += 1;
                for (k, s) in starts.iter_mut().enumerate() {
                    *s += cs[k][d];
                }
                if counter[d] < outer[d] {
                    break;
                }
                for (k, s) in starts.iter_mut().enumerate() {
                    *s -= cs[k][d] * outer[d];
                }
                counter[d] = 0;
            }
        }
    };
    let rows = out.len() / inner;
    if out.len() < PARALLEL_MIN || rows < 2 {
        rows_into(0, out);
    } else {
        let per_task = rows.div_ceil(crate::kernels::pool::threads() * 4).max(1);
        crate::kernels::pool::parallel_chunks_mut(out, per_task * inner, |i, piece| {
            rows_into(i * per_task, piece)
        });
    }
    Some(())
}

/// Runs an n-ary map (see [`map_into`]) over CPU fp16 tensors broadcast to a common shape; returns the values in
/// row-major order and that shape. `None` when an input is not a CPU fp16 tensor or the shapes do not broadcast.
pub(crate) fn map_values<const N: usize>(
    inputs: [&Tensor; N],
    f: impl Fn([&[f32]; N], &mut [f32]) + Sync,
) -> Option<(Vec<f16>, Vec<usize>)> {
    let shapes: Vec<&[usize]> = inputs.iter().map(|t| t.dims()).collect();
    let dims = crate::ops::broadcast_shapes(&shapes)?;
    let guards: Vec<_> = inputs.iter().map(|t| t.storage_and_layout()).collect();
    let mut views = Vec::with_capacity(N);
    for (storage, layout) in &guards {
        match &**storage {
            Storage::Cpu(CpuStorage::F16(data)) => views.push(Strided::new(data, layout, &dims)?),
            _ => return None,
        }
    }
    let refs: [&Strided<'_>; N] = std::array::from_fn(|k| &views[k]);
    let mut out = vec![f16::ZERO; element_count(&dims)?];
    map_into(&dims, refs, &mut out, f)?;
    Some((out, dims))
}

/// `f` applied elementwise (in f32, rounded once to fp16) to CPU fp16 tensors broadcast to a common shape; `None`
/// when an input is not a CPU fp16 tensor or the shapes do not broadcast (the caller then uses candle's ops).
pub(crate) fn map_elementwise<const N: usize>(
    inputs: [&Tensor; N],
    f: impl Fn([f32; N]) -> f32 + Sync,
) -> Option<Tensor> {
    let (values, dims) = map_values(inputs, |ins, res| {
        for (i, r) in res.iter_mut().enumerate() {
            *r = f(std::array::from_fn(|k| ins[k][i]));
        }
    })?;
    let device = inputs.first()?.device();
    Tensor::from_vec(values, dims, device).ok()
}
