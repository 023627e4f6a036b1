//! Speed baseline for `docs/benchmarks.md`: candle-transformers' Qwen3 on a Hugging Face
//! safetensors checkpoint (for example the one written by `tools/gen_synthetic_anemll.py`).
//!
//! Per repetition: clear the KV cache, prefill `prompt_len` token ids in one forward pass
//! (logits of the last position only), then decode `gen_len` tokens one at a time, each fed
//! the greedy argmax of the previous step. One untimed warm-up repetition precedes the timed
//! ones; min / median / max over the timed repetitions are printed.
//!
//! Usage: `candle-baseline <model_dir> <f32|f16|bf16> [prompt_len=64] [gen_len=32] [reps=5]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3::{Config, ModelForCausalLM};

/// Command-line settings of one benchmark run.
struct Args {
    model_dir: PathBuf,
    dtype: DType,
    prompt_len: usize,
    gen_len: usize,
    reps: usize,
}

fn parse_args() -> Result<Args> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.len() < 2 || argv.len() > 5 {
        bail!("usage: candle-baseline <model_dir> <f32|f16|bf16> [prompt_len=64] [gen_len=32] [reps=5]");
    }
    let dtype = match argv[1].as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        other => bail!("unknown dtype {other:?}: expected f32, f16 or bf16"),
    };
    let number = |i: usize, default: usize, what: &str| -> Result<usize> {
        match argv.get(i) {
            Some(s) => s
                .parse()
                .with_context(|| format!("{what} must be a number, got {s:?}")),
            None => Ok(default),
        }
    };
    let args = Args {
        model_dir: PathBuf::from(&argv[0]),
        dtype,
        prompt_len: number(2, 64, "prompt_len")?,
        gen_len: number(3, 32, "gen_len")?,
        reps: number(4, 5, "reps")?,
    };
    if args.prompt_len == 0 || args.reps == 0 {
        bail!("prompt_len and reps must be at least 1");
    }
    Ok(args)
}

/// Deterministic prompt ids (64-bit LCG), the same sequence as in `docs/benchmarks.md`.
fn prompt_ids(len: usize, vocab: usize) -> Vec<u32> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 33) % vocab as u64) as u32
        })
        .collect()
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no *.safetensors file in {}", dir.display());
    }
    Ok(files)
}

fn argmax_last(logits: &Tensor) -> Result<u32> {
    Ok(logits
        .flatten_all()?
        .to_dtype(DType::F32)?
        .argmax(0)?
        .to_scalar::<u32>()?)
}

/// Timings of one repetition, in seconds, plus the greedy tokens it produced.
struct Rep {
    prefill_s: f64,
    decode_s: f64,
    tokens: Vec<u32>,
}

fn run_once(model: &mut ModelForCausalLM, prompt: &[u32], gen_len: usize) -> Result<Rep> {
    model.clear_kv_cache();
    let ids = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let start = Instant::now();
    let logits = model.forward(&ids, 0)?;
    let mut next = argmax_last(&logits)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let mut tokens = vec![next];
    let start = Instant::now();
    for i in 0..gen_len {
        let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&input, prompt.len() + i)?;
        next = argmax_last(&logits)?;
        tokens.push(next);
    }
    let decode_s = start.elapsed().as_secs_f64();
    Ok(Rep {
        prefill_s,
        decode_s,
        tokens,
    })
}

/// (min, median, max) of a non-empty sample.
fn summary(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (values[0], median, values[n - 1])
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let config_path = args.model_dir.join("config.json");
    let config: Config = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let files = safetensors_files(&args.model_dir)?;

    let load_start = Instant::now();
    // SAFETY: the checkpoint files are not modified while they are mapped.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, args.dtype, &Device::Cpu)? };
    let mut model = ModelForCausalLM::new(&config, vb)?;
    let load_s = load_start.elapsed().as_secs_f64();

    let prompt = prompt_ids(args.prompt_len, config.vocab_size);
    let warmup = run_once(&mut model, &prompt, args.gen_len)?;
    let mut reps = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        reps.push(run_once(&mut model, &prompt, args.gen_len)?);
    }

    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "default".into());
    println!(
        "model {} dtype {:?} threads {threads} load {load_s:.2}s prompt {} gen {} reps {}",
        args.model_dir.display(),
        args.dtype,
        args.prompt_len,
        args.gen_len,
        args.reps
    );
    let (lo, med, hi) = summary(
        reps.iter()
            .map(|r| args.prompt_len as f64 / r.prefill_s)
            .collect(),
    );
    println!("prefill tok/s: min {lo:.2} median {med:.2} max {hi:.2}");
    if args.gen_len > 0 {
        let (lo, med, hi) = summary(
            reps.iter()
                .map(|r| args.gen_len as f64 / r.decode_s)
                .collect(),
        );
        println!("decode  tok/s: min {lo:.2} median {med:.2} max {hi:.2}");
    }
    println!("greedy tokens: {:?}", warmup.tokens);
    Ok(())
}
