//! Dense fp16 weight matrices in kernel memory: a decode step widens each row to f32 in registers while it
//! multiplies (2 bytes read per weight, no f32 copy), a prefill widens blocks of rows once and uses a GEMM.

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::arena::{ArenaBytes, WeightArena};
use crate::error::{program_error, Result};

/// A row-major fp16 matrix (see the module docs).
pub struct F16Matrix {
    rows: usize,
    cols: usize,
    data: ArenaBytes,
}

impl std::fmt::Debug for F16Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("F16Matrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish()
    }
}

impl F16Matrix {
    /// Copies a `rows x cols` row-major matrix into `arena`.
    pub fn new(rows: usize, cols: usize, values: &[f16], arena: &WeightArena) -> Result<F16Matrix> {
        let count = rows.checked_mul(cols).filter(|&n| n > 0);
        if count != Some(values.len()) {
            return Err(program_error(format!(
                "fp16 matrix {rows}x{cols}: {} values",
                values.len()
            )));
        }
        let data = arena
            .alloc_filled(values.len() * 2, |buf| {
                for (dst, v) in buf.chunks_exact_mut(2).zip(values) {
                    dst.copy_from_slice(&v.to_le_bytes());
                }
            })
            .map_err(|e| program_error(format!("fp16 matrix: cannot map weight memory: {e}")))?;
        Ok(F16Matrix { rows, cols, data })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held.
    pub fn byte_size(&self) -> usize {
        self.data.len()
    }

    fn values(&self) -> &[f16] {
        // The arena hands out 64-byte aligned slices of an even length, so the view always succeeds.
        as_f16_slice(self.data.as_slice())
    }

    /// The whole matrix as f32, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.values().convert_to_f32_slice(&mut out);
        out
    }

    /// `out [rows, m] = W @ x` for `x [cols, m]` (both row-major), accumulated in f32 on the kernel threads.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        super::check_product_sizes("fp16 matrix", (self.rows, self.cols), x, m, out)?;
        let (cols, w) = (self.cols, self.values());
        if m == 1 {
            super::rows_in_shares(out, |r| dot(&w[r * cols..(r + 1) * cols], x));
            return Ok(());
        }
        super::widened_row_blocks_product(cols, x, m, out, |r0, block| {
            let n = block.len() / cols;
            w[r0 * cols..(r0 + n) * cols].convert_to_f32_slice(block);
        });
        Ok(())
    }
}

/// The fp16 values of little-endian bytes (an even count, 2-byte aligned).
fn as_f16_slice(bytes: &[u8]) -> &[f16] {
    let (head, values, tail) = {
        // SAFETY: every bit pattern is a valid f16; `align_to` only yields the aligned middle part.
        unsafe { bytes.align_to::<f16>() }
    };
    debug_assert!(head.is_empty() && tail.is_empty());
    values
}

/// `row . x` in f32.
fn dot(row: &[f16], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected; both slices have `row.len()` elements.
        return unsafe { dot_avx512(row, x) };
    }
    dot_portable(row, x)
}

fn dot_portable(row: &[f16], x: &[f32]) -> f32 {
    let mut acc = [0f32; 4];
    for (i, (w, v)) in row.iter().zip(x).enumerate() {
        acc[i % 4] += w.to_f32() * v;
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3])
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dot_avx512(row: &[f16], x: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = row.len().min(x.len());
    let (w, xp) = (row.as_ptr(), x.as_ptr());
    let mut acc = [_mm512_setzero_ps(); 4];
    let mut c = 0;
    while c + 64 <= n {
        _mm_prefetch::<_MM_HINT_T0>((w.add(c) as *const i8).wrapping_add(4096));
        for (q, a) in acc.iter_mut().enumerate() {
            let v = _mm512_cvtph_ps(_mm256_loadu_si256(w.add(c + 16 * q) as *const __m256i));
            *a = _mm512_fmadd_ps(v, _mm512_loadu_ps(xp.add(c + 16 * q)), *a);
        }
        c += 64;
    }
    let mut s = _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ));
    while c < n {
        s += (*w.add(c)).to_f32() * *xp.add(c);
        c += 1;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_plain_sums() {
        let arena = WeightArena::new();
        for (rows, cols, m) in [(5, 70, 1), (33, 128, 1), (70, 3, 4), (2, 200, 9)] {
            let values: Vec<f16> = (0..rows * cols)
                .map(|i| f16::from_f32(((i * 37 % 101) as f32 - 50.0) / 64.0))
                .collect();
            let x: Vec<f32> = (0..cols * m)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 16.0)
                .collect();
            let w = F16Matrix::new(rows, cols, &values, &arena).unwrap();
            let mut out = vec![0f32; rows * m];
            w.matmul(&x, m, &mut out).unwrap();
            for r in 0..rows {
                for j in 0..m {
                    let want: f64 = (0..cols)
                        .map(|c| f64::from(values[r * cols + c].to_f32()) * f64::from(x[c * m + j]))
                        .sum();
                    assert!(
                        (f64::from(out[r * m + j]) - want).abs() < 1e-3,
                        "{rows}x{cols} m {m}"
                    );
                }
            }
            assert_eq!(w.to_dense()[cols + 1], values[cols + 1].to_f32());
            // The portable row kernel, which `matmul` bypasses on CPUs with AVX-512.
            let xs: Vec<f32> = (0..cols).map(|c| x[c * m]).collect();
            let want: f64 = (0..cols)
                .map(|c| f64::from(values[c].to_f32()) * f64::from(xs[c]))
                .sum();
            assert!((f64::from(dot_portable(&values[..cols], &xs)) - want).abs() < 1e-3);
        }
        assert!(F16Matrix::new(2, 3, &[f16::ZERO; 5], &arena).is_err());
    }
}
