//! Palettised (look-up table) weight matrices kept packed: `W[r, c] = table(r / rows_per_table)[index(r, c)]`
//! with 4-bit or 8-bit indices. Products read the packed indices and look values up on the fly, so a decode step
//! streams 1 byte (LUT8) or half a byte (LUT4) per weight instead of 2 or 4.
//!
//! Layout: row-major indices, each row starting on a byte boundary; 4-bit rows hold element `2i` in the low
//! nibble of byte `i` and element `2i + 1` in the high nibble (the order of Core ML's packed blobs).
//! Tables are padded to 16 or 256 entries.

use std::cell::RefCell;

use super::arena::{ArenaBytes, WeightArena};
use super::pool::parallel_chunks_mut;
use crate::error::{program_error, Result};

thread_local! {
    /// The operand of the running product in kernel order, reused from call to call.
    static KERNEL_ORDER_OPERAND: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Width of the stored indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexWidth {
    /// Two indices per byte (palettes of up to 16 entries).
    Four,
    /// One index per byte (palettes of up to 256 entries).
    Eight,
}

impl IndexWidth {
    fn entries(self) -> usize {
        match self {
            IndexWidth::Four => 16,
            IndexWidth::Eight => 256,
        }
    }
}

/// Where the indices of a new [`LutMatrix`] come from (row-major, `rows * cols` of them).
pub enum IndexSource<'a> {
    /// `bits`-wide values packed LSB-first, one after the other (what Core ML weight blobs hold).
    Packed {
        /// The packed bytes.
        bytes: &'a [u8],
        /// Width of one value, 1..=8.
        bits: u32,
    },
    /// One value per element.
    Values(&'a [i16]),
}

/// A palettised matrix in packed form (see the module docs).
pub struct LutMatrix {
    rows: usize,
    cols: usize,
    width: IndexWidth,
    row_bytes: usize,
    rows_per_table: usize,
    /// `[tables, entries]` values.
    tables: Vec<f32>,
    /// Per table, the low bytes then the high bytes of every entry as fp16; present for 8-bit indices when every
    /// entry is exactly an fp16 number (the byte-permute kernel uses them).
    f16_planes: Option<Vec<u8>>,
    indices: ArenaBytes,
}

impl std::fmt::Debug for LutMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LutMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("width", &self.width)
            .field("rows_per_table", &self.rows_per_table)
            .finish()
    }
}

impl LutMatrix {
    /// Packs a `rows x cols` matrix whose `bits`-wide indices select from `tables` (`[rows / rows_per_table,
    /// 2^bits]`, row `r` uses table `r / rows_per_table`). Index bytes are placed in `arena`.
    pub fn new(
        rows: usize,
        cols: usize,
        bits: u32,
        indices: IndexSource<'_>,
        tables: &[f32],
        rows_per_table: usize,
        arena: &WeightArena,
    ) -> Result<LutMatrix> {
        if rows == 0 || cols == 0 || !(1..=8).contains(&bits) {
            return Err(program_error(format!(
                "LUT matrix {rows}x{cols} with {bits}-bit indices cannot be packed"
            )));
        }
        if rows_per_table == 0 || !rows.is_multiple_of(rows_per_table) {
            return Err(program_error(format!(
                "LUT matrix: {rows_per_table} rows per table does not divide {rows} rows"
            )));
        }
        let palette = 1usize << bits;
        let n_tables = rows / rows_per_table;
        if tables.len() != n_tables * palette {
            return Err(program_error(format!(
                "LUT matrix: {} table values, expected {n_tables} tables of {palette}",
                tables.len()
            )));
        }
        let count = rows
            .checked_mul(cols)
            .ok_or_else(|| program_error("LUT matrix is too large"))?;
        match &indices {
            IndexSource::Packed { bytes, bits: b } => {
                if *b != bits || (bytes.len() as u128) * 8 < count as u128 * u128::from(bits) {
                    return Err(program_error(format!(
                        "LUT matrix: {} index bytes hold fewer than {count} {bits}-bit values",
                        bytes.len()
                    )));
                }
            }
            IndexSource::Values(v) => {
                if v.len() != count {
                    return Err(program_error(format!(
                        "LUT matrix: {} indices, expected {count}",
                        v.len()
                    )));
                }
                if let Some(bad) = v.iter().find(|&&i| i < 0 || i as usize >= palette) {
                    return Err(program_error(format!(
                        "LUT matrix: index {bad} is outside the {palette}-entry palette"
                    )));
                }
            }
        }
        let width = if bits <= 4 {
            IndexWidth::Four
        } else {
            IndexWidth::Eight
        };
        let entries = width.entries();
        let mut padded = vec![0f32; n_tables * entries];
        for (t, table) in tables.chunks_exact(palette).enumerate() {
            padded[t * entries..t * entries + palette].copy_from_slice(table);
        }
        let f16_planes = (width == IndexWidth::Eight
            && padded
                .iter()
                .all(|&v| half::f16::from_f32(v).to_f32() == v || v.is_nan()))
        .then(|| {
            let mut planes = vec![0u8; n_tables * 2 * entries];
            for (t, table) in padded.chunks_exact(entries).enumerate() {
                for (e, &v) in table.iter().enumerate() {
                    let h = half::f16::from_f32(v).to_bits();
                    planes[t * 2 * entries + e] = (h & 0xff) as u8;
                    planes[t * 2 * entries + entries + e] = (h >> 8) as u8;
                }
            }
            planes
        });
        let row_bytes = match width {
            IndexWidth::Four => cols.div_ceil(2),
            IndexWidth::Eight => cols,
        };
        let stored = arena
            .alloc_filled(rows * row_bytes, |buf| {
                fill_indices(buf, &indices, rows, cols, bits, width, row_bytes)
            })
            .map_err(|e| program_error(format!("LUT matrix: cannot map weight memory: {e}")))?;
        Ok(LutMatrix {
            rows,
            cols,
            width,
            row_bytes,
            rows_per_table,
            tables: padded,
            f16_planes,
            indices: stored,
        })
    }

    /// Number of rows (output channels).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (input channels).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes held: packed indices plus tables.
    pub fn byte_size(&self) -> usize {
        self.indices.len() + self.tables.len() * 4 + self.f16_planes.as_ref().map_or(0, |p| p.len())
    }

    fn row(&self, r: usize) -> &[u8] {
        &self.indices.as_slice()[r * self.row_bytes..(r + 1) * self.row_bytes]
    }

    fn table(&self, r: usize) -> &[f32] {
        let e = self.width.entries();
        let t = r / self.rows_per_table;
        &self.tables[t * e..(t + 1) * e]
    }

    /// The whole matrix de-palettised, row-major.
    pub fn to_dense(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, dst) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(r, dst);
        }
        out
    }

    fn dequantize_row(&self, r: usize, dst: &mut [f32]) {
        let table = self.table(r);
        let row = self.row(r);
        match self.width {
            IndexWidth::Eight => {
                for (d, &i) in dst.iter_mut().zip(row) {
                    *d = table[i as usize];
                }
            }
            IndexWidth::Four => {
                for (k, d) in dst.iter_mut().enumerate() {
                    *d = table[((row[k / 2] >> (4 * (k % 2))) & 15) as usize];
                }
            }
        }
    }

    fn dot_row(&self, r: usize, x: &[f32]) -> f32 {
        let table = self.table(r);
        let row = self.row(r);
        let mut acc = [0f32; 4];
        match self.width {
            IndexWidth::Eight => {
                let mut idx = row.chunks_exact(4);
                let mut xs = x.chunks_exact(4);
                for (i, v) in (&mut idx).zip(&mut xs) {
                    for j in 0..4 {
                        acc[j] += table[i[j] as usize] * v[j];
                    }
                }
                for (&i, &v) in idx.remainder().iter().zip(xs.remainder()) {
                    acc[0] += table[i as usize] * v;
                }
            }
            IndexWidth::Four => {
                for (b, pair) in x.chunks(2).enumerate() {
                    let byte = row[b];
                    acc[b % 2 * 2] += table[(byte & 15) as usize] * pair[0];
                    if let Some(&v) = pair.get(1) {
                        acc[b % 2 * 2 + 1] += table[(byte >> 4) as usize] * v;
                    }
                }
            }
        }
        (acc[0] + acc[1]) + (acc[2] + acc[3])
    }

    /// `out [rows, m] = W @ x` for `x [cols, m]` (both row-major), accumulated in f32; rows are split over the
    /// kernel threads ([`super::pool`]).
    pub fn matmul(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        super::check_product_sizes("LUT matrix", (self.rows, self.cols), x, m, out)?;
        let Some(simd) = self.simd() else {
            if m == 1 {
                self.gemv(x, out, None);
            } else {
                self.gemm(x, m, out, None);
            }
            return Ok(());
        };
        KERNEL_ORDER_OPERAND.with(|buf| {
            let mut xk = buf.borrow_mut();
            simd.to_kernel_order(x, self.cols, m, &mut xk);
            if m == 1 {
                self.gemv(&xk, out, Some(simd));
            } else {
                self.gemm(&xk, m, out, Some(simd));
            }
        });
        Ok(())
    }

    fn gemv(&self, x: &[f32], out: &mut [f32], simd: Option<SimdKernel<'_>>) {
        let per_task = super::rows_per_share(self.rows);
        parallel_chunks_mut(out, per_task, |task, chunk| {
            let r0 = task * per_task;
            match simd {
                Some(k) => k.dot_rows(self, r0, x, chunk),
                None => {
                    for (i, o) in chunk.iter_mut().enumerate() {
                        *o = self.dot_row(r0 + i, x);
                    }
                }
            }
        });
    }

    fn gemm(&self, x: &[f32], m: usize, out: &mut [f32], simd: Option<SimdKernel<'_>>) {
        super::widened_row_blocks_product(self.cols, x, m, out, |r0, block| {
            for (i, row) in block.chunks_exact_mut(self.cols).enumerate() {
                match simd {
                    Some(k) => k.dequantize_row(self, r0 + i, row),
                    None => self.dequantize_row(r0 + i, row),
                }
            }
        });
    }

    fn simd(&self) -> Option<SimdKernel<'_>> {
        #[cfg(target_arch = "x86_64")]
        {
            let planes = match self.width {
                IndexWidth::Four => &[][..],
                IndexWidth::Eight => self.f16_planes.as_deref()?,
            };
            if super::lut_avx512::available(self.width) {
                return Some(SimdKernel {
                    planes,
                    width: self.width,
                });
            }
        }
        None
    }
}

/// The SIMD kernels of a matrix, on a CPU that has them (8-bit indices also need fp16-exact tables).
#[derive(Clone, Copy)]
struct SimdKernel<'a> {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    planes: &'a [u8],
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    width: IndexWidth,
}

#[cfg(target_arch = "x86_64")]
impl SimdKernel<'_> {
    fn to_kernel_order(self, x: &[f32], cols: usize, m: usize, out: &mut Vec<f32>) {
        super::lut_avx512::to_kernel_order(x, cols, m, self.width, out)
    }

    fn dot_rows(self, w: &LutMatrix, r0: usize, x: &[f32], out: &mut [f32]) {
        super::lut_avx512::dot_rows(&w.view(self.planes), r0, x, out)
    }

    fn dequantize_row(self, w: &LutMatrix, r: usize, out: &mut [f32]) {
        super::lut_avx512::dequantize_row(&w.view(self.planes), r, out)
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl SimdKernel<'_> {
    fn to_kernel_order(self, x: &[f32], _cols: usize, _m: usize, out: &mut Vec<f32>) {
        out.clear();
        out.extend_from_slice(x);
    }

    fn dot_rows(self, w: &LutMatrix, r0: usize, x: &[f32], out: &mut [f32]) {
        for (i, o) in out.iter_mut().enumerate() {
            *o = w.dot_row(r0 + i, x);
        }
    }

    fn dequantize_row(self, w: &LutMatrix, r: usize, out: &mut [f32]) {
        w.dequantize_row(r, out)
    }
}

/// What the SIMD kernels read of a matrix.
pub(super) struct LutView<'a> {
    /// Packed indices.
    pub indices: &'a [u8],
    /// Bytes per row.
    pub row_bytes: usize,
    /// Columns.
    pub cols: usize,
    /// Rows sharing one table.
    pub rows_per_table: usize,
    /// Index width.
    pub width: IndexWidth,
    /// Tables as f32 (for the columns past the last whole chunk).
    pub tables: &'a [f32],
    /// Tables as fp16 byte planes.
    pub planes: &'a [u8],
}

impl LutMatrix {
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn view<'a>(&'a self, planes: &'a [u8]) -> LutView<'a> {
        LutView {
            indices: self.indices.as_slice(),
            row_bytes: self.row_bytes,
            cols: self.cols,
            rows_per_table: self.rows_per_table,
            width: self.width,
            tables: &self.tables,
            planes,
        }
    }
}

fn fill_indices(
    buf: &mut [u8],
    source: &IndexSource<'_>,
    rows: usize,
    cols: usize,
    bits: u32,
    width: IndexWidth,
    row_bytes: usize,
) {
    let count = rows * cols;
    match (source, width) {
        (IndexSource::Packed { bytes, bits: 8 }, IndexWidth::Eight) => {
            buf.copy_from_slice(&bytes[..count]);
        }
        (IndexSource::Packed { bytes, bits: 4 }, IndexWidth::Four) if cols.is_multiple_of(2) => {
            buf.copy_from_slice(&bytes[..count / 2]);
        }
        _ => {
            let value = |i: usize| -> u8 {
                match source {
                    IndexSource::Values(v) => v[i] as u8,
                    IndexSource::Packed { bytes, .. } => {
                        let bits = bits as usize;
                        let mut v = 0u8;
                        for b in 0..bits {
                            let bit = i * bits + b;
                            v |= ((bytes[bit / 8] >> (bit % 8)) & 1) << b;
                        }
                        v
                    }
                }
            };
            for r in 0..rows {
                let row = &mut buf[r * row_bytes..(r + 1) * row_bytes];
                for c in 0..cols {
                    let v = value(r * cols + c);
                    match width {
                        IndexWidth::Eight => row[c] = v,
                        IndexWidth::Four => row[c / 2] |= v << (4 * (c % 2)),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }

        fn unit(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 - 0.5
        }
    }

    /// Packs LSB-first like a Core ML blob.
    fn pack(values: &[i16], bits: u32) -> Vec<u8> {
        let mut out = vec![0u8; (values.len() * bits as usize).div_ceil(8)];
        for (i, &v) in values.iter().enumerate() {
            for b in 0..bits as usize {
                let bit = i * bits as usize + b;
                out[bit / 8] |= (((v >> b) & 1) as u8) << (bit % 8);
            }
        }
        out
    }

    /// Checks `matmul` against a plain f64 product with `W[r, c] = tables[r / rpt][idx[r, c]]`.
    fn check(rows: usize, cols: usize, bits: u32, rpt: usize, m: usize, fp16_tables: bool) {
        let mut rng = Lcg(rows as u64 * 31 + cols as u64 * 7 + u64::from(bits) + m as u64);
        let palette = 1usize << bits;
        let idx: Vec<i16> = (0..rows * cols)
            .map(|_| (rng.next() as usize % palette) as i16)
            .collect();
        let tables: Vec<f32> = (0..rows / rpt * palette)
            .map(|_| {
                let v = rng.unit();
                if fp16_tables {
                    half::f16::from_f32(v).to_f32()
                } else {
                    v
                }
            })
            .collect();
        let x: Vec<f32> = (0..cols * m).map(|_| rng.unit()).collect();
        let arena = WeightArena::new();
        let packed = pack(&idx, bits);
        for source in [
            IndexSource::Values(&idx),
            IndexSource::Packed {
                bytes: &packed,
                bits,
            },
        ] {
            let w = LutMatrix::new(rows, cols, bits, source, &tables, rpt, &arena).unwrap();
            let mut out = vec![0f32; rows * m];
            w.matmul(&x, m, &mut out).unwrap();
            for r in 0..rows {
                for j in 0..m {
                    let want: f64 = (0..cols)
                        .map(|c| {
                            let t = tables[r / rpt * palette + idx[r * cols + c] as usize];
                            f64::from(t) * f64::from(x[c * m + j])
                        })
                        .sum();
                    let got = f64::from(out[r * m + j]);
                    assert!(
                        (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "{rows}x{cols} bits {bits} m {m}: row {r} col {j}: {got} vs {want}"
                    );
                }
            }
            // The portable row kernels, which `matmul` bypasses on CPUs with the SIMD ones.
            let dense = w.to_dense();
            for r in 0..rows {
                let row = &dense[r * cols..(r + 1) * cols];
                for (c, &v) in row.iter().enumerate() {
                    assert_eq!(v, tables[r / rpt * palette + idx[r * cols + c] as usize]);
                }
                let xs: Vec<f32> = (0..cols).map(|c| x[c * m]).collect();
                let want: f64 = row
                    .iter()
                    .zip(&xs)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let got = f64::from(w.dot_row(r, &xs));
                assert!(
                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "portable row {r}"
                );
            }
            assert_eq!(
                dense[cols + 1],
                tables[1 / rpt * palette + idx[cols + 1] as usize]
            );
        }
    }

    #[test]
    fn products_match_the_dense_matrix() {
        for bits in [1, 2, 3, 4, 6, 8] {
            for (rows, cols) in [(16, 64), (24, 200), (8, 129), (40, 1), (32, 256)] {
                for m in [1, 3, 70] {
                    check(rows, cols, bits, 8, m, true);
                }
            }
        }
        check(96, 192, 8, 96, 1, false);
        check(64, 130, 8, 8, 3, false);
        check(96, 192, 4, 32, 2, false);
        check(130, 128, 8, 1, 1, true);
    }

    #[test]
    fn inconsistent_inputs_are_errors() {
        let arena = WeightArena::new();
        let idx = [0i16; 8];
        let tables = [0f32; 16];
        assert!(LutMatrix::new(2, 4, 4, IndexSource::Values(&idx), &tables, 3, &arena).is_err());
        assert!(
            LutMatrix::new(2, 4, 4, IndexSource::Values(&idx[..7]), &tables, 2, &arena).is_err()
        );
        assert!(LutMatrix::new(2, 4, 3, IndexSource::Values(&idx), &tables, 2, &arena).is_err());
        let bad = [0i16, 0, 0, 16, 0, 0, 0, 0];
        assert!(LutMatrix::new(2, 4, 4, IndexSource::Values(&bad), &tables, 2, &arena).is_err());
        let short = [0u8; 3];
        let packed = IndexSource::Packed {
            bytes: &short,
            bits: 4,
        };
        assert!(LutMatrix::new(2, 4, 4, packed, &tables, 2, &arena).is_err());
        let w = LutMatrix::new(2, 4, 4, IndexSource::Values(&idx), &tables, 2, &arena).unwrap();
        assert!(w.matmul(&[0.0; 3], 1, &mut [0.0; 2]).is_err());
    }
}
