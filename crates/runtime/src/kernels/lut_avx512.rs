//! AVX-512 kernels for [`LutMatrix`](super::lut_matrix::LutMatrix); the table of a row group stays in registers.
//!
//! - 8-bit indices (AVX-512 VBMI, fp16-exact tables): the table is held as a low-byte plane and a high-byte plane
//!   (four registers each); 64 indices at a time are looked up with `vpermi2b`, interleaved into fp16 and widened
//!   to f32.
//! - 4-bit indices (AVX-512F, any f32 table): the 16-entry table is one register; `vpermps` looks up the low
//!   nibble of 16 dwords at once, so 64 packed bytes (128 indices) take 8 shifts-and-permutes.
//!
//! Both leave the values of a chunk in a fixed permuted order, so the kernels take the operand in the same
//! "kernel order" ([`to_kernel_order`]); columns past the last whole chunk stay in natural order.

use std::arch::x86_64::*;

use super::lut_matrix::{IndexWidth, LutView};

/// Columns per chunk of 8-bit indices.
const CHUNK: usize = 64;
/// How far ahead of the chunk being computed the matrix-vector kernels prefetch packed indices, in bytes.
const PREFETCH: usize = 4096;
/// Columns per chunk of 4-bit indices.
const CHUNK4: usize = 128;

/// True when this CPU has the instructions of the kernels for `width`.
pub fn available(width: IndexWidth) -> bool {
    match width {
        IndexWidth::Four => is_x86_feature_detected!("avx512f"),
        IndexWidth::Eight => {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vbmi")
        }
    }
}

/// Columns per chunk for `width`.
fn chunk_len(width: IndexWidth) -> usize {
    match width {
        IndexWidth::Four => CHUNK4,
        IndexWidth::Eight => CHUNK,
    }
}

/// Byte position (0..64) of the index vector whose value lands at kernel position `p`: the low/high unpack of
/// each 128-bit lane, then the split of each unpacked register into two 16-value halves.
const fn byte_position(p: usize) -> usize {
    let (vector, e) = (p / 16, p % 16);
    16 * (2 * (vector % 2) + e / 8) + 8 * (vector / 2) + e % 8
}

/// `x [cols, m]` with the rows of every whole chunk permuted into kernel order, written to `out`.
pub fn to_kernel_order(x: &[f32], cols: usize, m: usize, width: IndexWidth, out: &mut Vec<f32>) {
    let chunk = chunk_len(width);
    out.clear();
    out.extend_from_slice(x);
    let order = chunk_order(width);
    for c in 0..cols / chunk {
        let base = c * chunk;
        if m == 1 {
            for (dst, &col) in out[base..base + chunk].iter_mut().zip(order) {
                *dst = x[base + col];
            }
            continue;
        }
        for (p, &col) in order.iter().enumerate() {
            let (dst, src) = ((base + p) * m, (base + col) * m);
            out[dst..dst + m].copy_from_slice(&x[src..src + m]);
        }
    }
}

/// The column each kernel position of a chunk holds.
fn chunk_order(width: IndexWidth) -> &'static [usize] {
    match width {
        IndexWidth::Four => &ORDER4,
        IndexWidth::Eight => &ORDER8,
    }
}

/// Column held at each kernel position of an 8-bit chunk.
const ORDER8: [usize; CHUNK] = {
    let mut order = [0; CHUNK];
    let mut p = 0;
    while p < CHUNK {
        order[p] = byte_position(p);
        p += 1;
    }
    order
};

/// Column held at each kernel position of a 4-bit chunk: shift s of dword j (bytes 4j..4j + 4) holds column
/// 8j + s, and shift s fills positions 16s..16s + 16.
const ORDER4: [usize; CHUNK4] = {
    let mut order = [0; CHUNK4];
    let mut p = 0;
    while p < CHUNK4 {
        order[p] = 8 * (p % 16) + p / 16;
        p += 1;
    }
    order
};

/// `out[i] = row(r0 + i) . x` for `x` in kernel order.
pub fn dot_rows(w: &LutView<'_>, r0: usize, x: &[f32], out: &mut [f32]) {
    // SAFETY: `available()` was checked by the caller (LutMatrix::simd); all reads are bounds-checked below.
    unsafe {
        match w.width {
            IndexWidth::Eight => dot_rows_lut8(w, r0, x, out),
            IndexWidth::Four => dot_rows_lut4(w, r0, x, out),
        }
    }
}

/// Row `r` de-palettised to f32, in kernel order.
pub fn dequantize_row(w: &LutView<'_>, r: usize, out: &mut [f32]) {
    // SAFETY: as in `dot_rows`.
    unsafe {
        match w.width {
            IndexWidth::Eight => dequantize_row_lut8(w, r, out),
            IndexWidth::Four => dequantize_row_lut4(w, r, out),
        }
    }
}

/// The four f32 vectors (kernel order) of one chunk from its 64 looked-up low and high bytes.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn widen(lo: __m512i, hi: __m512i) -> [__m512; 4] {
    let w0 = _mm512_unpacklo_epi8(lo, hi);
    let w1 = _mm512_unpackhi_epi8(lo, hi);
    [
        _mm512_cvtph_ps(_mm512_castsi512_si256(w0)),
        _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(w0)),
        _mm512_cvtph_ps(_mm512_castsi512_si256(w1)),
        _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(w1)),
    ]
}

/// A 256-entry fp16 table as eight registers: low-byte plane (4) and high-byte plane (4).
struct Planes256([__m512i; 8]);

impl Planes256 {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load(planes: &[u8]) -> Planes256 {
        assert!(planes.len() >= 512);
        let p = planes.as_ptr();
        Planes256(std::array::from_fn(|i| {
            _mm512_loadu_si512(p.add(64 * i) as *const __m512i)
        }))
    }

    /// Values of 64 8-bit indices.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    unsafe fn lookup(&self, idx: __m512i) -> [__m512; 4] {
        let upper = _mm512_movepi8_mask(idx);
        let t = &self.0;
        let lo = _mm512_mask_blend_epi8(
            upper,
            _mm512_permutex2var_epi8(t[0], idx, t[1]),
            _mm512_permutex2var_epi8(t[2], idx, t[3]),
        );
        let hi = _mm512_mask_blend_epi8(
            upper,
            _mm512_permutex2var_epi8(t[4], idx, t[5]),
            _mm512_permutex2var_epi8(t[6], idx, t[7]),
        );
        widen(lo, hi)
    }
}

/// Values of the 128 4-bit indices packed in 64 bytes, for a 16-entry f32 table: vector s holds column
/// 8j + s of the chunk in lane j.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn lookup16(table: __m512, packed: *const u8) -> [__m512; 8] {
    let d = _mm512_loadu_si512(packed as *const __m512i);
    [
        _mm512_permutexvar_ps(d, table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(d), table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<8>(d), table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<12>(d), table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<16>(d), table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<20>(d), table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<24>(d), table),
        _mm512_permutexvar_ps(_mm512_srli_epi32::<28>(d), table),
    ]
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn fma_chunk(v: [__m512; 4], x: *const f32, acc: &mut [__m512; 4]) {
    for (i, a) in acc.iter_mut().enumerate() {
        *a = _mm512_fmadd_ps(v[i], _mm512_loadu_ps(x.add(16 * i)), *a);
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn store_chunk(v: [__m512; 4], out: *mut f32) {
    for (i, vi) in v.iter().enumerate() {
        _mm512_storeu_ps(out.add(16 * i), *vi);
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn sum(acc: [__m512; 4]) -> f32 {
    _mm512_reduce_add_ps(_mm512_add_ps(
        _mm512_add_ps(acc[0], acc[1]),
        _mm512_add_ps(acc[2], acc[3]),
    ))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn dot_rows_lut8(w: &LutView<'_>, r0: usize, x: &[f32], out: &mut [f32]) {
    let chunks = w.cols / CHUNK;
    assert!(x.len() >= w.cols && w.indices.len() >= (r0 + out.len()) * w.row_bytes);
    let mut current = usize::MAX;
    let mut planes = Planes256([_mm512_setzero_si512(); 8]);
    for (i, o) in out.iter_mut().enumerate() {
        let r = r0 + i;
        let t = r / w.rows_per_table;
        if t != current {
            planes = Planes256::load(&w.planes[t * 512..(t + 1) * 512]);
            current = t;
        }
        let row = &w.indices[r * w.row_bytes..(r + 1) * w.row_bytes];
        let mut acc = [_mm512_setzero_ps(); 4];
        for c in 0..chunks {
            _mm_prefetch::<_MM_HINT_T0>(
                row.as_ptr().wrapping_add(c * CHUNK + PREFETCH) as *const i8
            );
            let idx = _mm512_loadu_si512(row.as_ptr().add(c * CHUNK) as *const __m512i);
            fma_chunk(planes.lookup(idx), x.as_ptr().add(c * CHUNK), &mut acc);
        }
        let table = &w.tables[t * 256..(t + 1) * 256];
        let mut s = sum(acc);
        for k in chunks * CHUNK..w.cols {
            s += table[row[k] as usize] * x[k];
        }
        *o = s;
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn dot_rows_lut4(w: &LutView<'_>, r0: usize, x: &[f32], out: &mut [f32]) {
    let chunks = w.cols / CHUNK4;
    assert!(x.len() >= w.cols && w.indices.len() >= (r0 + out.len()) * w.row_bytes);
    assert!(w.tables.len() >= (r0 + out.len()).div_ceil(w.rows_per_table) * 16);
    for (i, o) in out.iter_mut().enumerate() {
        let r = r0 + i;
        let t = r / w.rows_per_table;
        let table = &w.tables[t * 16..(t + 1) * 16];
        let lut = _mm512_loadu_ps(table.as_ptr());
        let row = &w.indices[r * w.row_bytes..(r + 1) * w.row_bytes];
        let mut acc = [_mm512_setzero_ps(); 4];
        for c in 0..chunks {
            _mm_prefetch::<_MM_HINT_T0>(
                row.as_ptr().wrapping_add(c * CHUNK4 / 2 + PREFETCH) as *const i8
            );
            let v = lookup16(lut, row.as_ptr().add(c * CHUNK4 / 2));
            let xp = x.as_ptr().add(c * CHUNK4);
            for (s, vs) in v.iter().enumerate() {
                acc[s % 4] = _mm512_fmadd_ps(*vs, _mm512_loadu_ps(xp.add(16 * s)), acc[s % 4]);
            }
        }
        let mut s = sum(acc);
        for k in chunks * CHUNK4..w.cols {
            s += table[((row[k / 2] >> (4 * (k % 2))) & 15) as usize] * x[k];
        }
        *o = s;
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
unsafe fn dequantize_row_lut8(w: &LutView<'_>, r: usize, out: &mut [f32]) {
    let chunks = w.cols / CHUNK;
    assert!(out.len() >= w.cols);
    let t = r / w.rows_per_table;
    let planes = Planes256::load(&w.planes[t * 512..(t + 1) * 512]);
    let row = &w.indices[r * w.row_bytes..(r + 1) * w.row_bytes];
    for c in 0..chunks {
        let idx = _mm512_loadu_si512(row.as_ptr().add(c * CHUNK) as *const __m512i);
        store_chunk(planes.lookup(idx), out.as_mut_ptr().add(c * CHUNK));
    }
    let table = &w.tables[t * 256..(t + 1) * 256];
    for k in chunks * CHUNK..w.cols {
        out[k] = table[row[k] as usize];
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn dequantize_row_lut4(w: &LutView<'_>, r: usize, out: &mut [f32]) {
    let chunks = w.cols / CHUNK4;
    assert!(out.len() >= w.cols);
    let t = r / w.rows_per_table;
    let table = &w.tables[t * 16..(t + 1) * 16];
    let lut = _mm512_loadu_ps(table.as_ptr());
    let row = &w.indices[r * w.row_bytes..(r + 1) * w.row_bytes];
    for c in 0..chunks {
        let v = lookup16(lut, row.as_ptr().add(c * CHUNK4 / 2));
        for (s, vs) in v.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(c * CHUNK4 + 16 * s), *vs);
        }
    }
    for k in chunks * CHUNK4..w.cols {
        out[k] = table[((row[k / 2] >> (4 * (k % 2))) & 15) as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_order_is_a_permutation_of_each_chunk() {
        for width in [IndexWidth::Four, IndexWidth::Eight] {
            let n = chunk_len(width);
            let mut seen = chunk_order(width).to_vec();
            seen.sort_unstable();
            assert_eq!(seen, (0..n).collect::<Vec<_>>());
        }
    }
}
