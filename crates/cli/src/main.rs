//! `candle-coreml`: inspect, run and generate with Core ML models on Candle.

mod commands;

use clap::{Parser, Subcommand};

/// Run Apple Core ML models (and ANEMLL LLMs) with Candle, on any OS.
#[derive(Parser)]
#[command(name = "candle-coreml", version, about)]
struct Cli {
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
    match Cli::parse().command {
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
