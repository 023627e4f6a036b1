//! `candle-coreml bench --model DIR`: times loading, prefill and greedy decode of an ANEMLL model on a synthetic
//! prompt (token ids only, no tokenizer), the way `docs/benchmarks.md` §3.5 describes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use candle_coreml_llm::sampling::argmax;
use candle_coreml_llm::{AnemllModel, ModelFiles, NextToken};
use candle_coreml_runtime::LoadOptions;

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// ANEMLL model directory (meta.yaml or model_config.json and its parts).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt length in tokens (synthetic ids drawn from the vocabulary).
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// Tokens to decode after the first one.
    #[arg(long, default_value_t = 32)]
    pub gen_len: usize,
    /// Timed repetitions (each resets the KV state); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Untimed repetitions before the timed ones.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// After the timed repetitions, run one more with per-op-type timing and print where prefill and decode
    /// spend their time.
    #[arg(long)]
    pub profile_ops: bool,
}

/// Timings of one repetition.
struct Repetition {
    time_to_first_token: Duration,
    decode_time: Duration,
    tokens: Vec<u32>,
}

/// The synthetic prompt: `len` ids below `vocab` from a 64-bit LCG (the sequence `bench/` uses for the baselines).
fn prompt_ids(len: usize, vocab: usize) -> Vec<u32> {
    let mut s: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            // The remainder is below vocab, itself a u32-sized vocabulary size.
            ((s >> 33) % vocab as u64) as u32
        })
        .collect()
}

fn pick(next: NextToken) -> anyhow::Result<u32> {
    Ok(match next {
        NextToken::Logits(logits) => argmax(&logits)?,
        NextToken::Argmax(id) => id,
    })
}

/// One repetition: reset, prefill the prompt and pick the first token, then `gen_len` greedy decode steps.
fn repetition(
    model: &mut AnemllModel,
    prompt: &[u32],
    gen_len: usize,
) -> anyhow::Result<Repetition> {
    model.reset()?;
    let mut sequence = prompt.to_vec();
    let start = Instant::now();
    let first = pick(model.next_token(&sequence)?)?;
    let time_to_first_token = start.elapsed();
    sequence.push(first);
    let start = Instant::now();
    for _ in 0..gen_len {
        let next = pick(model.next_token(&sequence)?)?;
        sequence.push(next);
    }
    let decode_time = start.elapsed();
    Ok(Repetition {
        time_to_first_token,
        decode_time,
        tokens: sequence.split_off(prompt.len()),
    })
}

/// A memory figure of this process from /proc/self/status (`VmHWM`: peak resident, `VmRSS`: resident now),
/// where the OS reports it.
fn resident_memory(field: &str) -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line
        .trim_start_matches(field)
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(format!("{:.1} MiB", kib / 1024.0))
}

/// Minimum, median and maximum of `values` (not empty).
fn min_median_max(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], median, v[n - 1])
}

fn stat_line(name: &str, values: &[f64], unit: &str) -> String {
    let (min, median, max) = min_median_max(values);
    format!("{name}: {median:.3} {unit} (min {min:.3}, max {max:.3})")
}

/// Runs `bench`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if args.prompt_len == 0 || args.repeats == 0 {
        bail!("--prompt-len and --repeats must be at least 1");
    }
    let start = Instant::now();
    let files = ModelFiles::locate(&args.model)?;
    let mut model = AnemllModel::from_files(files, &LoadOptions::default())
        .with_context(|| format!("loading the model in {}", args.model.display()))?;
    let load_time = start.elapsed();
    let vocab = model.layout().vocab_size.with_context(|| {
        format!(
            "the model in {} does not declare its vocabulary size, needed to draw prompt ids",
            args.model.display()
        )
    })?;
    let needed = args.prompt_len + args.gen_len + 1;
    let context = model.context_length();
    if needed > context {
        bail!(
            "--prompt-len {} + --gen-len {} + 1 = {needed} tokens do not fit the context length {context}",
            args.prompt_len,
            args.gen_len
        );
    }
    let prompt = prompt_ids(args.prompt_len, vocab);
    for _ in 0..args.warmup {
        repetition(&mut model, &prompt, args.gen_len)?;
    }
    let mut runs = Vec::with_capacity(args.repeats);
    for _ in 0..args.repeats {
        runs.push(repetition(&mut model, &prompt, args.gen_len)?);
    }
    let decode_rss = resident_memory("VmRSS:");
    let reference = &runs[0].tokens;
    if runs.iter().any(|r| &r.tokens != reference) {
        bail!("the repetitions produced different greedy tokens");
    }
    let ttft: Vec<f64> = runs
        .iter()
        .map(|r| r.time_to_first_token.as_secs_f64())
        .collect();
    let prefill: Vec<f64> = ttft.iter().map(|t| args.prompt_len as f64 / t).collect();
    let decode: Vec<f64> = runs
        .iter()
        .map(|r| args.gen_len as f64 / r.decode_time.as_secs_f64())
        .collect();
    let threads = candle_coreml_runtime::kernels::pool::threads();
    println!("model: {}", args.model.display());
    println!("threads: {threads}");
    println!(
        "prompt_tokens: {}, generated_tokens: {}, repeats: {} (+{} warm-up)",
        args.prompt_len,
        args.gen_len + 1,
        args.repeats,
        args.warmup
    );
    println!("load_time: {:.3} s", load_time.as_secs_f64());
    println!(
        "peak_resident_memory: {}",
        resident_memory("VmHWM:").unwrap_or_else(|| "n/a".to_string())
    );
    println!(
        "resident_memory_after_decode: {}",
        decode_rss.unwrap_or_else(|| "n/a".to_string())
    );
    println!("{}", stat_line("time_to_first_token", &ttft, "s"));
    println!("{}", stat_line("prefill", &prefill, "tok/s"));
    if args.gen_len > 0 {
        println!("{}", stat_line("decode", &decode, "tok/s"));
    } else {
        println!("decode: n/a (--gen-len 0)");
    }
    let shown: Vec<String> = reference.iter().take(8).map(u32::to_string).collect();
    println!("greedy_tokens: {}", shown.join(" "));
    if args.profile_ops {
        profile_ops(&mut model, &prompt, args.gen_len)?;
    }
    Ok(())
}

/// One more repetition with per-op-type timing; prints a table for the prompt and one for the decode steps.
fn profile_ops(model: &mut AnemllModel, prompt: &[u32], gen_len: usize) -> anyhow::Result<()> {
    model.reset()?;
    candle_coreml_runtime::profile::set_enabled(true);
    let mut sequence = prompt.to_vec();
    sequence.push(pick(model.next_token(&sequence)?)?);
    let prefill = candle_coreml_runtime::profile::take();
    for _ in 0..gen_len {
        let next = pick(model.next_token(&sequence)?)?;
        sequence.push(next);
    }
    let decode = candle_coreml_runtime::profile::take();
    candle_coreml_runtime::profile::set_enabled(false);
    print_profile("prompt + first token", &prefill, 1);
    print_profile("decode", &decode, gen_len.max(1));
    Ok(())
}

fn print_profile(phase: &str, timings: &[candle_coreml_runtime::profile::OpTiming], steps: usize) {
    let total: f64 = timings.iter().map(|t| t.total.as_secs_f64()).sum();
    println!(
        "op profile, {phase}: {:.3} ms per step in ops",
        total * 1e3 / steps as f64
    );
    println!(
        "  {:<24} {:>8} {:>12} {:>7}",
        "op", "calls", "ms/step", "share"
    );
    for t in timings {
        let secs = t.total.as_secs_f64();
        println!(
            "  {:<24} {:>8} {:>12.3} {:>6.1}%",
            t.op_type,
            t.calls / steps as u64,
            secs * 1e3 / steps as f64,
            100.0 * secs / total.max(f64::MIN_POSITIVE)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(min_median_max(&[3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
        assert_eq!(min_median_max(&[4.0, 1.0, 3.0, 2.0]), (1.0, 2.5, 4.0));
    }

    #[test]
    fn prompt_ids_follow_the_documented_lcg() {
        // Computed with Python integers from the recurrence in docs/benchmarks.md §3.2.
        assert_eq!(
            prompt_ids(5, 151_936),
            [147_600, 99_110, 37_029, 87_201, 30_058]
        );
    }
}
