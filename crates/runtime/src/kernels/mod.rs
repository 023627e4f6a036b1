//! CPU compute kernels on plain slices (no MIL, no candle tensors): products with weights kept in packed form,
//! and the memory those weights live in.

pub mod arena;
pub mod kv_products;
pub mod lut_matrix;
pub mod pool;

#[cfg(target_arch = "x86_64")]
mod lut_avx512;
