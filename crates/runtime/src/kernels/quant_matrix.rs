//! Affine-quantized 8-bit weight matrices kept packed: `W[r, c] = scale[r, b] · (q[r, c] − offset[r, b])` with
//! `b = c / block`, rounded to fp16 when the dequantized weight is declared fp16 (as Core ML's
//! `constexpr_affine_dequantize` / `constexpr_blockwise_shift_scale` produce it). Products dequantize in registers:
//! one byte read per weight.

use super::arena::{ArenaBytes, WeightArena};
use crate::error::{program_error, Result};

/// Quantization parameters of a [`QuantMatrix`].
#[derive(Debug, Clone)]
pub struct QuantParams {
    /// True for `int8` data, false for `uint8`.
    pub signed: bool,
    /// Columns sharing one scale and offset (divides the column count).
    pub block: usize,
    /// `[rows, cols / block]` scales.
    pub scales: Vec<f32>,
    /// `[rows, cols / block]` offsets (zero points), in the data's units.
    pub offsets: Vec<f32>,
    /// Round every dequantized weight to fp16 (the weight is declared fp16).
    pub round_f16: bool,
}

/// An affine-quantized 8-bit matrix (see the module docs).
pub struct QuantMatrix {
    rows: usize,
    cols: usize,
    params: QuantParams,
    data: ArenaBytes,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("block", &self.params.block)
            .finish()
    }
}

impl QuantMatrix {
    /// Copies a `rows x cols` row-major matrix of 8-bit values (`int8` read as two's complement when
    /// `params.signed`) into `arena`.
    pub fn new(
        rows: usize,
        cols: usize,
        data: &[u8],
        params: QuantParams,
        arena: &WeightArena,
    ) -> Result<QuantMatrix> {
        let blocks = cols.checked_div(params.block).unwrap_or(0);
        if rows == 0 || cols == 0 || blocks == 0 || blocks * params.block != cols {
            return Err(program_error(format!(
                "quantized matrix {rows}x{cols}: block of {} columns does not divide the columns",
                params.block
            )));
        }
        if data.len() != rows * cols
            || params.scales.len() != rows * blocks
            || params.offsets.len() != rows * blocks
        {
            return Err(program_error(format!(
                "quantized matrix {rows}x{cols}: {} values, {} scales and {} offsets (expected {}, {blocks} per row)",
                data.len(),
                params.scales.len(),
                params.offsets.len(),
                rows * cols
            )));
        }
        let stored = arena
            .alloc_filled(data.len(), |buf| buf.copy_from_slice(data))
            .map_err(|e| {
                program_error(format!("quantized matrix: cannot map weight memory: {e}"))
            })?;
        Ok(QuantMatrix {
            rows,
            cols,
            params,
            data: stored,
        })
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
        self.data.len() + 8 * self.params.scales.len()
    }

    fn weight(&self, r: usize, c: usize, q: u8) -> f32 {
        let p = &self.params;
        let b = r * (self.cols / p.block) + c / p.block;
        let q = if p.signed { q as i8 as f32 } else { q as f32 };
        let w = p.scales[b] * (q - p.offsets[b]);
        if p.round_f16 {
            half::f16::from_f32(w).to_f32()
        } else {
            w
        }
    }

    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let row = &self.data.as_slice()[r * self.cols..(r + 1) * self.cols];
        for (c, (o, &q)) in out.iter_mut().zip(row).enumerate() {
            *o = self.weight(r, c, q);
        }
    }

    fn dot_row(&self, r: usize, x: &[f32]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected; `x` has `cols` elements (checked by `matmul`).
            return unsafe { self.dot_row_avx512(r, x) };
        }
        self.dot_row_portable(r, x)
    }

    fn dot_row_portable(&self, r: usize, x: &[f32]) -> f32 {
        let row = &self.data.as_slice()[r * self.cols..(r + 1) * self.cols];
        let mut acc = [0f32; 4];
        for (c, (&q, &v)) in row.iter().zip(x).enumerate() {
            acc[c % 4] += self.weight(r, c, q) * v;
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3])
    }

    /// Sixteen weights at a time: widen the bytes, subtract the offset, scale, round to fp16 when declared so.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn dot_row_avx512(&self, r: usize, x: &[f32]) -> f32 {
        use std::arch::x86_64::*;
        let p = &self.params;
        let row = &self.data.as_slice()[r * self.cols..(r + 1) * self.cols];
        assert!(x.len() >= self.cols);
        let blocks = self.cols / p.block;
        let mut acc = _mm512_setzero_ps();
        let mut tail = 0f32;
        for b in 0..blocks {
            let (scale, offset) = (p.scales[r * blocks + b], p.offsets[r * blocks + b]);
            let (vs, vo) = (_mm512_set1_ps(scale), _mm512_set1_ps(offset));
            let start = b * p.block;
            let mut c = start;
            while c + 16 <= start + p.block {
                let bytes = _mm_loadu_si128(row.as_ptr().add(c) as *const __m128i);
                let ints = if p.signed {
                    _mm512_cvtepi8_epi32(bytes)
                } else {
                    _mm512_cvtepu8_epi32(bytes)
                };
                let mut w = _mm512_mul_ps(vs, _mm512_sub_ps(_mm512_cvtepi32_ps(ints), vo));
                if p.round_f16 {
                    w = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(w));
                }
                acc = _mm512_fmadd_ps(w, _mm512_loadu_ps(x.as_ptr().add(c)), acc);
                c += 16;
            }
            for k in c..start + p.block {
                tail += self.weight(r, k, row[k]) * x[k];
            }
        }
        _mm512_reduce_add_ps(acc) + tail
    }

    /// The whole matrix dequantized, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, row) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// `out [rows, m] = W @ x` for `x [cols, m]` (both row-major), accumulated in f32 on the kernel threads.
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        super::check_product_sizes("quantized matrix", (self.rows, self.cols), x, m, out)?;
        if m == 1 {
            super::rows_in_shares(out, |r| self.dot_row(r, x));
            return Ok(());
        }
        super::widened_row_blocks_product(self.cols, x, m, out, |r0, block| {
            for (i, row) in block.chunks_exact_mut(self.cols).enumerate() {
                self.dequantize_row(r0 + i, row);
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rows: usize, cols: usize, block: usize, signed: bool, round_f16: bool, m: usize) {
        let data: Vec<u8> = (0..rows * cols).map(|i| (i * 97 % 251) as u8).collect();
        let blocks = cols / block;
        let scales: Vec<f32> = (0..rows * blocks)
            .map(|i| 0.001 + (i % 7) as f32 * 0.0013)
            .collect();
        let offsets: Vec<f32> = (0..rows * blocks).map(|i| (i % 5) as f32 * 3.0).collect();
        let params = QuantParams {
            signed,
            block,
            scales: scales.clone(),
            offsets: offsets.clone(),
            round_f16,
        };
        let arena = WeightArena::new();
        let w = QuantMatrix::new(rows, cols, &data, params, &arena).unwrap();
        let x: Vec<f32> = (0..cols * m)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 16.0)
            .collect();
        let mut out = vec![0f32; rows * m];
        w.matmul(&x, m, &mut out).unwrap();
        let weight = |r: usize, c: usize| -> f64 {
            let q = data[r * cols + c];
            let q = if signed {
                f32::from(q as i8)
            } else {
                f32::from(q)
            };
            let b = r * blocks + c / block;
            // The definition in f32, as the dense `constexpr_*` kernels compute it.
            let v = scales[b] * (q - offsets[b]);
            f64::from(if round_f16 {
                half::f16::from_f32(v).to_f32()
            } else {
                v
            })
        };
        for r in 0..rows {
            for j in 0..m {
                let want: f64 = (0..cols)
                    .map(|c| weight(r, c) * f64::from(x[c * m + j]))
                    .sum();
                let got = f64::from(out[r * m + j]);
                assert!(
                    (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                    "{rows}x{cols} r {r}: {got} vs {want}"
                );
            }
            let xs: Vec<f32> = (0..cols).map(|c| x[c * m]).collect();
            let want: f64 = (0..cols).map(|c| weight(r, c) * f64::from(xs[c])).sum();
            assert!(
                (f64::from(w.dot_row_portable(r, &xs)) - want).abs() < 1e-3 * (1.0 + want.abs())
            );
        }
        assert_eq!(f64::from(w.to_dense()[cols + 1]), weight(1, 1));
    }

    #[test]
    fn products_match_the_definition() {
        for (signed, round) in [(true, true), (false, true), (true, false)] {
            check(20, 64, 64, signed, round, 1);
            check(20, 96, 32, signed, round, 1);
            check(9, 40, 20, signed, round, 1);
            check(20, 64, 16, signed, round, 5);
        }
    }

    #[test]
    fn inconsistent_parameters_are_errors() {
        let arena = WeightArena::new();
        let params = |block: usize, n: usize| QuantParams {
            signed: true,
            block,
            scales: vec![1.0; n],
            offsets: vec![0.0; n],
            round_f16: false,
        };
        assert!(QuantMatrix::new(2, 6, &[0; 12], params(4, 4), &arena).is_err());
        assert!(QuantMatrix::new(2, 6, &[0; 11], params(3, 4), &arena).is_err());
        assert!(QuantMatrix::new(2, 6, &[0; 12], params(3, 3), &arena).is_err());
        assert!(QuantMatrix::new(2, 6, &[0; 12], params(3, 4), &arena).is_ok());
    }
}
