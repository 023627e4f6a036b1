//! CPU compute kernels on plain slices (no MIL, no candle tensors): products with weights kept in packed form,
//! and the memory those weights live in.

pub mod arena;
pub mod f16_matrix;
pub mod kv_products;
pub mod lut_matrix;
pub mod pool;
pub mod quant_matrix;

#[cfg(target_arch = "x86_64")]
mod lut_avx512;

use std::cell::RefCell;

use crate::error::{program_error, Result};

/// A matrix-vector product gives each thread one contiguous share of the rows (at least this many): long
/// sequential streams and no idle tail waiting for the last small task (about +10 % decode speed over eight
/// dynamically claimed tasks per thread on the 2-core benchmark machine).
const MIN_ROWS_PER_SHARE: usize = 16;

/// Rows per thread for a matrix-vector product over `rows` rows.
pub(crate) fn rows_per_share(rows: usize) -> usize {
    rows.div_ceil(pool::threads()).max(MIN_ROWS_PER_SHARE)
}

/// `out[r] = dot(r)` for every row, each kernel thread taking one contiguous share of the rows.
pub(crate) fn rows_in_shares(out: &mut [f32], dot: impl Fn(usize) -> f32 + Sync) {
    let share = rows_per_share(out.len());
    pool::parallel_chunks_mut(out, share, |i, chunk| {
        for (j, o) in chunk.iter_mut().enumerate() {
            *o = dot(i * share + j);
        }
    });
}

/// Checks that `x` is `[cols, m]` and `out` is `[rows, m]` for the product of a `rows x cols` matrix (`what`).
pub(crate) fn check_product_sizes(
    what: &str,
    (rows, cols): (usize, usize),
    x: &[f32],
    m: usize,
    out: &[f32],
) -> Result<()> {
    if m == 0 || x.len() != cols * m || out.len() != rows * m {
        return Err(program_error(format!(
            "{what} {rows}x{cols}: operand of {} values and output of {} values do not fit m = {m}",
            x.len(),
            out.len()
        )));
    }
    Ok(())
}

/// Rows widened to f32 at a time by [`widened_row_blocks_product`] (their f32 copy stays in L2).
const GEMM_BLOCK_ROWS: usize = 64;

thread_local! {
    static WIDE_ROWS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out [m, n] = a [m, k] · b [k, n]` in f32 on the calling thread, with `a` and `b` given by row and column
/// strides and `out` row-major with row stride `out_rs`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    (a_rs, a_cs): (usize, usize),
    b: &[f32],
    (b_rs, b_cs): (usize, usize),
    out: &mut [f32],
    out_rs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in out.chunks_mut(out_rs).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    let a_end = (m - 1) * a_rs + (k - 1) * a_cs;
    let b_end = (k - 1) * b_rs + (n - 1) * b_cs;
    let out_end = (m - 1) * out_rs + n - 1;
    assert!(a_end < a.len() && b_end < b.len() && out_end < out.len() && n <= out_rs);
    // SAFETY: the assertion above keeps every element the strides reach inside the three slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            out_rs as isize,
            false,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// `out [rows, m] = W · x` for `x [cols, m]` on the kernel threads, where `widen(r0, block)` writes rows
/// `r0..r0 + block.len() / cols` of `W` as f32 into `block`: blocks of rows are widened into a per-thread buffer and
/// multiplied with a GEMM.
pub fn widened_row_blocks_product(
    cols: usize,
    x: &[f32],
    m: usize,
    out: &mut [f32],
    widen: impl Fn(usize, &mut [f32]) + Sync,
) {
    pool::parallel_chunks_mut(out, GEMM_BLOCK_ROWS * m, |block, dst| {
        let n = dst.len() / m;
        WIDE_ROWS.with(|scratch| {
            let mut wide = scratch.borrow_mut();
            wide.resize(n * cols, 0.0);
            widen(block * GEMM_BLOCK_ROWS, &mut wide);
            gemm_f32(n, m, cols, &wide, (cols, 1), x, (m, 1), dst, m);
        });
    });
}

/// A weight matrix kept in a kernel's layout: palettised, affine-quantized 8-bit, or dense fp16.
#[derive(Debug)]
pub enum PackedMatrix {
    /// Palettised (LUT) weights.
    Lut(lut_matrix::LutMatrix),
    /// Dense fp16 weights.
    F16(f16_matrix::F16Matrix),
    /// Affine-quantized 8-bit weights.
    Quant(quant_matrix::QuantMatrix),
}

impl PackedMatrix {
    /// Number of rows (output channels).
    pub fn rows(&self) -> usize {
        match self {
            PackedMatrix::Lut(m) => m.rows(),
            PackedMatrix::F16(m) => m.rows(),
            PackedMatrix::Quant(m) => m.rows(),
        }
    }

    /// Number of columns (input channels).
    pub fn cols(&self) -> usize {
        match self {
            PackedMatrix::Lut(m) => m.cols(),
            PackedMatrix::F16(m) => m.cols(),
            PackedMatrix::Quant(m) => m.cols(),
        }
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        match self {
            PackedMatrix::Lut(m) => m.byte_size(),
            PackedMatrix::F16(m) => m.byte_size(),
            PackedMatrix::Quant(m) => m.byte_size(),
        }
    }

    /// The whole matrix as f32, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        match self {
            PackedMatrix::Lut(m) => m.to_dense(),
            PackedMatrix::F16(m) => m.to_dense(),
            PackedMatrix::Quant(m) => m.to_dense(),
        }
    }

    /// `out [rows, m] = W @ x` for `x [cols, m]` (both row-major), in f32.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        match self {
            PackedMatrix::Lut(w) => w.matmul(x, m, out),
            PackedMatrix::F16(w) => w.matmul(x, m, out),
            PackedMatrix::Quant(w) => w.matmul(x, m, out),
        }
    }
}
