//! CPU compute kernels on plain slices (no MIL, no candle tensors): products with weights kept in packed form,
//! and the memory those weights live in.

pub mod arena;
pub mod f16_matrix;
pub mod kv_products;
pub mod lut_matrix;
pub mod pool;

#[cfg(target_arch = "x86_64")]
mod lut_avx512;

use crate::error::Result;

/// A weight matrix kept in a kernel's layout: palettised or dense fp16.
#[derive(Debug)]
pub enum PackedMatrix {
    /// Palettised (LUT) weights.
    Lut(lut_matrix::LutMatrix),
    /// Dense fp16 weights.
    F16(f16_matrix::F16Matrix),
}

impl PackedMatrix {
    /// Number of rows (output channels).
    pub fn rows(&self) -> usize {
        match self {
            PackedMatrix::Lut(m) => m.rows(),
            PackedMatrix::F16(m) => m.rows(),
        }
    }

    /// Number of columns (input channels).
    pub fn cols(&self) -> usize {
        match self {
            PackedMatrix::Lut(m) => m.cols(),
            PackedMatrix::F16(m) => m.cols(),
        }
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        match self {
            PackedMatrix::Lut(m) => m.byte_size(),
            PackedMatrix::F16(m) => m.byte_size(),
        }
    }

    /// The whole matrix as f32, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        match self {
            PackedMatrix::Lut(m) => m.to_dense(),
            PackedMatrix::F16(m) => m.to_dense(),
        }
    }

    /// `out [rows, m] = W @ x` for `x [cols, m]` (both row-major), in f32.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        match self {
            PackedMatrix::Lut(w) => w.matmul(x, m, out),
            PackedMatrix::F16(w) => w.matmul(x, m, out),
        }
    }
}
