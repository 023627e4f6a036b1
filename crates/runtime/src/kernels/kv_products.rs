//! Products of attention rows with one fp16 KV head (`[S, D]`, read in place from the KV state): scores
//! `x [M, D] · kv^T` and weighted sums `x [M, S] · kv`, in f32, over the first `used` positions of the head only
//! (the rest are masked out by the caller). A few rows (decode) stream the head once with fp16 widened in
//! registers; many rows (prefill) widen the head once and use a GEMM.

use std::cell::RefCell;

use half::f16;
use half::slice::HalfFloatSliceExt;

use super::gemm_f32;

/// From this many rows on, the head is widened to f32 once and multiplied with a GEMM.
const GEMM_ROWS: usize = 8;

thread_local! {
    static WIDE_HEAD: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `out [m, s] = x [m, d] · kv^T` for `kv [s, d]`, computed for the first `used` columns; the others are set
/// to 0.
pub fn scores(x: &[f32], m: usize, kv: &[f16], s: usize, d: usize, used: usize, out: &mut [f32]) {
    debug_assert!(x.len() == m * d && kv.len() == s * d && out.len() == m * s && used <= s);
    let kv = &kv[..used * d];
    out.fill(0.0);
    if m >= GEMM_ROWS {
        // out[:, ..used] = x · kv^T: kv^T is kv [used, d] read with row stride 1 and column stride d.
        return widened(kv, |w| gemm_f32(m, used, d, x, (d, 1), w, (1, d), out, s));
    }
    #[cfg(target_arch = "x86_64")]
    if d > 0 && d.is_multiple_of(16) && is_x86_feature_detected!("avx512f") {
        // SAFETY: the feature was just detected; slice sizes are as asserted above.
        return unsafe { avx512::scores(x, m, kv, s, d, out) };
    }
    for (j, row) in kv.chunks_exact(d).enumerate() {
        for i in 0..m {
            let xi = &x[i * d..(i + 1) * d];
            out[i * s + j] = xi.iter().zip(row).map(|(a, b)| a * b.to_f32()).sum();
        }
    }
}

/// `out [m, d] = x [m, s] · kv` for `kv [s, d]`, summed over the first `used` positions.
pub fn weighted_sum(
    x: &[f32],
    m: usize,
    kv: &[f16],
    s: usize,
    d: usize,
    used: usize,
    out: &mut [f32],
) {
    debug_assert!(x.len() == m * s && kv.len() == s * d && out.len() == m * d && used <= s);
    let kv = &kv[..used * d];
    if m >= GEMM_ROWS {
        return widened(kv, |w| gemm_f32(m, d, used, x, (s, 1), w, (d, 1), out, d));
    }
    #[cfg(target_arch = "x86_64")]
    if d > 0 && d.is_multiple_of(16) && is_x86_feature_detected!("avx512f") {
        // SAFETY: as in `scores`.
        return unsafe { avx512::weighted_sum(x, m, kv, s, d, out) };
    }
    out.fill(0.0);
    for (j, row) in kv.chunks_exact(d).enumerate() {
        for i in 0..m {
            let w = x[i * s + j];
            for (o, v) in out[i * d..(i + 1) * d].iter_mut().zip(row) {
                *o += w * v.to_f32();
            }
        }
    }
}

/// Runs `f` on `kv` widened to f32 in a per-thread buffer.
fn widened(kv: &[f16], f: impl FnOnce(&[f32])) {
    WIDE_HEAD.with(|buf| {
        let mut buf = buf.borrow_mut();
        buf.resize(kv.len(), 0.0);
        kv.convert_to_f32_slice(&mut buf);
        f(&buf);
    });
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use half::f16;

    /// Sixteen fp16 values widened to f32.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn load16(p: *const f16) -> __m512 {
        _mm512_cvtph_ps(_mm256_loadu_si256(p as *const __m256i))
    }

    #[target_feature(enable = "avx512f")]
    /// Scores of the `kv.len() / d` rows of `kv`; `out` has row stride `s`.
    pub unsafe fn scores(x: &[f32], m: usize, kv: &[f16], s: usize, d: usize, out: &mut [f32]) {
        let used = kv.len() / d;
        assert!(x.len() >= m * d && used <= s && out.len() >= m * s);
        for j in 0..used {
            let row = kv.as_ptr().add(j * d);
            for i in 0..m {
                let xi = x.as_ptr().add(i * d);
                let mut acc = _mm512_setzero_ps();
                for c in (0..d).step_by(16) {
                    acc = _mm512_fmadd_ps(load16(row.add(c)), _mm512_loadu_ps(xi.add(c)), acc);
                }
                out[i * s + j] = _mm512_reduce_add_ps(acc);
            }
        }
    }

    /// Weighted sum of the `kv.len() / d` rows of `kv`; `x` has row stride `s`.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted_sum(
        x: &[f32],
        m: usize,
        kv: &[f16],
        s: usize,
        d: usize,
        out: &mut [f32],
    ) {
        let used = kv.len() / d;
        assert!(x.len() >= m * s && used <= s && out.len() >= m * d);
        for i in 0..m {
            for c in (0..d).step_by(16) {
                let mut acc = [_mm512_setzero_ps(); 4];
                let mut j = 0;
                while j + 4 <= used {
                    for (u, a) in acc.iter_mut().enumerate() {
                        let w = _mm512_set1_ps(x[i * s + j + u]);
                        *a = _mm512_fmadd_ps(w, load16(kv.as_ptr().add((j + u) * d + c)), *a);
                    }
                    j += 4;
                }
                while j < used {
                    let w = _mm512_set1_ps(x[i * s + j]);
                    acc[0] = _mm512_fmadd_ps(w, load16(kv.as_ptr().add(j * d + c)), acc[0]);
                    j += 1;
                }
                let sum =
                    _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
                _mm512_storeu_ps(out.as_mut_ptr().add(i * d + c), sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: usize, s: usize, d: usize, used: usize) {
        let kv: Vec<f16> = (0..s * d)
            .map(|i| f16::from_f32(((i * 37 % 101) as f32 - 50.0) / 64.0))
            .collect();
        let xs: Vec<f32> = (0..m * d)
            .map(|i| ((i * 13 % 29) as f32 - 14.0) / 16.0)
            .collect();
        let mut out = vec![0f32; m * s];
        scores(&xs, m, &kv, s, d, used, &mut out);
        for i in 0..m {
            for j in 0..s {
                let want: f64 = if j >= used {
                    0.0
                } else {
                    (0..d)
                        .map(|c| f64::from(xs[i * d + c]) * f64::from(kv[j * d + c].to_f32()))
                        .sum()
                };
                assert!(
                    (f64::from(out[i * s + j]) - want).abs() < 1e-3,
                    "scores {m} {i} {j}"
                );
            }
        }
        let xw: Vec<f32> = (0..m * s)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 32.0)
            .collect();
        let mut out = vec![0f32; m * d];
        weighted_sum(&xw, m, &kv, s, d, used, &mut out);
        for i in 0..m {
            for c in 0..d {
                let want: f64 = (0..used)
                    .map(|j| f64::from(xw[i * s + j]) * f64::from(kv[j * d + c].to_f32()))
                    .sum();
                assert!(
                    (f64::from(out[i * d + c]) - want).abs() < 1e-3,
                    "sum {m} {i} {c}"
                );
            }
        }
    }

    #[test]
    fn products_match_plain_sums() {
        for (m, s, d) in [
            (1, 7, 16),
            (2, 33, 128),
            (3, 5, 24),
            (16, 40, 32),
            (9, 3, 8),
        ] {
            for used in [s, s / 2, 0] {
                check(m, s, d, used);
            }
        }
    }
}
