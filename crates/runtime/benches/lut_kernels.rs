//! `cargo bench -p candle-coreml-runtime --bench lut_kernels`: the packed weight kernels on Qwen3-0.6B-sized
//! projections (LUT8, LUT4 and dense fp16; matrix-vector for decode, matrix-matrix for a 64-token prefill), in
//! GB/s of weights read and GFLOP/s, plus one decode step's worth of projections streamed from memory. Set
//! RAYON_NUM_THREADS to pick the thread count.

use std::time::{Duration, Instant};

use candle_coreml_runtime::kernels::arena::WeightArena;
use candle_coreml_runtime::kernels::f16_matrix::F16Matrix;
use candle_coreml_runtime::kernels::lut_matrix::{IndexSource, LutMatrix};

/// Median seconds per call of `f`, over repeats filling about `budget`.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.len() < 5 {
        let t = Instant::now();
        f();
        samples.push(t.elapsed().as_secs_f64());
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// A `rows x cols` matrix of random `bits`-bit indices and fp16 tables (one per 8 rows); also returns the index
/// bytes.
fn random_lut(
    rows: usize,
    cols: usize,
    bits: u32,
    arena: &WeightArena,
    next: &mut impl FnMut() -> u64,
) -> (LutMatrix, usize) {
    let bytes: Vec<u8> = (0..rows * cols * bits as usize / 8)
        .map(|_| next() as u8)
        .collect();
    let tables: Vec<f32> = (0..rows / 8 * (1 << bits))
        .map(|_| half::f16::from_f32((next() % 1000) as f32 / 1e4 - 0.05).to_f32())
        .collect();
    let source = IndexSource::Packed {
        bytes: &bytes,
        bits,
    };
    let w = LutMatrix::new(rows, cols, bits, source, &tables, 8, arena).expect("valid matrix");
    (w, bytes.len())
}

/// Times `product(x, m, out)` for m = 1 and 64 and prints one line each.
fn report(
    label: &str,
    (rows, cols, bytes): (usize, usize, usize),
    product: impl Fn(&[f32], usize, &mut [f32]),
) {
    for m in [1usize, 64] {
        let x: Vec<f32> = (0..cols * m).map(|i| (i % 17) as f32 * 0.01).collect();
        let mut out = vec![0f32; rows * m];
        let secs = time(Duration::from_millis(400), || product(&x, m, &mut out));
        println!(
            "{:<28} {:>4} {:>10.1} {:>10.1} {:>10.1}",
            label,
            m,
            secs * 1e6,
            bytes as f64 / secs / 1e9,
            2.0 * (rows * cols * m) as f64 / secs / 1e9
        );
    }
}

/// Every projection of a Qwen3-0.6B decode step (28 layers and a 16-way split LM head) as `bits`-bit LUT
/// matrices, one matrix-vector product each: the weight-streaming floor of one token (weights far exceed the
/// caches, as in a real decode step).
fn decode_step(bits: u32, next: &mut impl FnMut() -> u64) {
    let arena = WeightArena::new();
    let layer = [
        (2048usize, 1024usize),
        (1024, 1024),
        (1024, 1024),
        (1024, 2048),
        (3072, 1024),
        (3072, 1024),
        (1024, 3072),
    ];
    let mut shapes: Vec<(usize, usize)> = (0..28).flat_map(|_| layer).collect();
    shapes.extend(std::iter::repeat_n((9496, 1024), 16));
    let mut bytes_read = 0usize;
    let matrices: Vec<LutMatrix> = shapes
        .iter()
        .map(|&(rows, cols)| {
            let (w, bytes) = random_lut(rows, cols, bits, &arena, next);
            bytes_read += bytes;
            w
        })
        .collect();
    let xs: Vec<Vec<f32>> = shapes
        .iter()
        .map(|&(_, cols)| (0..cols).map(|i| (i % 13) as f32 * 0.01).collect())
        .collect();
    let mut outs: Vec<Vec<f32>> = shapes.iter().map(|&(rows, _)| vec![0f32; rows]).collect();
    let secs = time(Duration::from_secs(3), || {
        for ((w, x), out) in matrices.iter().zip(&xs).zip(outs.iter_mut()) {
            w.matmul(x, 1, out).expect("shapes fit");
        }
    });
    println!(
        "lut{bits} decode step ({} matrices, {:.0} MB): {:.2} ms, {:.1} GB/s, {:.1} steps/s",
        matrices.len(),
        bytes_read as f64 / 1e6,
        secs * 1e3,
        bytes_read as f64 / secs / 1e9,
        1.0 / secs
    );
}

fn main() {
    let arena = WeightArena::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    println!(
        "threads: {}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into())
    );
    decode_step(8, &mut next);
    decode_step(4, &mut next);
    println!(
        "{:<28} {:>4} {:>10} {:>10} {:>10}",
        "matrix", "m", "us/call", "GB/s", "GFLOP/s"
    );
    for bits in [8u32, 4] {
        for (rows, cols) in [
            (2048usize, 1024usize),
            (3072, 1024),
            (1024, 3072),
            (9496, 1024),
        ] {
            let (w, bytes) = random_lut(rows, cols, bits, &arena, &mut next);
            report(
                &format!("lut{bits} {rows}x{cols}"),
                (rows, cols, bytes),
                |x, m, out| w.matmul(x, m, out).expect("shapes fit"),
            );
        }
    }
    for (rows, cols) in [(3072usize, 1024usize), (9496, 1024)] {
        let values: Vec<half::f16> = (0..rows * cols)
            .map(|_| half::f16::from_f32((next() % 1000) as f32 / 1e4 - 0.05))
            .collect();
        let w = F16Matrix::new(rows, cols, &values, &arena).expect("valid matrix");
        report(
            &format!("fp16 {rows}x{cols}"),
            (rows, cols, rows * cols * 2),
            |x, m, out| w.matmul(x, m, out).expect("shapes fit"),
        );
    }
}
