//! `candle-coreml`: inspect, run and generate with Core ML models on Candle.

mod commands;

use clap::{Parser, Subcommand};

/// Run Apple Core ML models (and ANEMLL LLMs) with Candle, on any OS.
#[derive(Parser)]
#[command(name = "candle-coreml", version, about)]
struct Cli {
    /// Threads for the CPU kernels, the calling thread included (also sets RAYON_NUM_THREADS for candle's own
    /// ops); default: the RAYON_NUM_THREADS setting, else every core.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Describe a model file: functions, inputs, outputs, states, metadata, op histograms, weights.
    Inspect(commands::inspect::Args),
    /// Run one prediction of a model on .npy/.safetensors inputs and write the outputs as .npy files.
    Run(commands::run::Args),
    /// Generate text with an ANEMLL model directory or hub repo (streams the text, then timings).
    Generate(commands::generate::Args),
    /// Chat interactively with an ANEMLL model directory or hub repo (/reset, /exit).
    Chat(commands::chat::Args),
    /// Download what a model needs from the Hugging Face hub into the standard cache; prints the snapshot directory.
    Download(commands::download::Args),
    /// List or clean Core ML compile caches and candle-coreml's own cache.
    Cache(commands::cache::Args),
    /// Generate (or check) a ModelConfig JSON for a model directory or hub repo.
    Config(commands::config::Args),
    /// Time loading, prefill and greedy decode of an ANEMLL model directory on a synthetic prompt.
    Bench(commands::bench::Args),
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line each, skipping a cause whose text the previous message already contains
/// (our error types print their source inline).
fn error_report(error: &anyhow::Error) -> String {
    let mut report = error.to_string();
    let mut previous = report.clone();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !previous.contains(&text) {
            report.push_str("\n  caused by: ");
            report.push_str(&text);
        }
        previous = text;
    }
    report
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        if threads == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        // Read by candle's CPU ops and by the kernel thread pool when they first run, which has not happened yet.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
        candle_coreml_runtime::kernels::pool::set_threads(threads);
    }
    match cli.command {
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Run(args) => commands::run::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Chat(args) => commands::chat::run(args),
        Command::Download(args) => commands::download::run(args),
        Command::Cache(args) => commands::cache::run(args),
        Command::Config(args) => commands::config::run(args),
        Command::Bench(args) => commands::bench::run(args),
    }
}
