//! `candle-coreml chat --model DIR|ORG/NAME`: an interactive conversation (one line per message; `/reset`, `/exit`).
//! Each turn reuses the KV state of the conversation so far and only computes the new tokens.

use std::io::{BufRead, Write};

use anyhow::{bail, Context};
use candle_coreml_llm::Message;

use super::generate::{timing_summary, ModelArgs, SamplingArgs};

/// Arguments of `chat`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// A system message that starts the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Print timings after each reply.
    #[arg(long)]
    pub timings: bool,
    /// Sampling options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// Runs `chat`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut model = args.model.load()?;
    let model_dir = model.model().files().dir.display().to_string();
    if let Some(error) = model.tokenizer().chat_template_error() {
        bail!("{model_dir}: {error}");
    }
    if model.tokenizer().chat_template().is_none() {
        bail!("{model_dir}: the model has no chat template");
    }
    let config = args.sampling.config();
    let start = || -> Vec<Message> {
        args.system
            .iter()
            .map(|s| Message::system(s.clone()))
            .collect()
    };
    let mut messages = start();
    eprintln!("Type a message and press Enter; /reset starts over, /exit (or end of input) quits.");
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let Some(line) = lines.next() else { break };
        let line = line.context("reading standard input")?;
        let text = line.trim();
        match text {
            "" => continue,
            "/exit" | "/quit" => break,
            "/reset" => {
                messages = start();
                model.model_mut().reset()?;
                eprintln!("(conversation cleared)");
                continue;
            }
            _ => {}
        }
        messages.push(Message::user(text));
        let mut stdout = std::io::stdout();
        let out = model.chat_stream(&messages, &config, &mut |piece| {
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        })?;
        println!();
        if args.timings {
            eprintln!("[{}]", timing_summary(&out));
        }
        messages.push(Message::assistant(out.text));
    }
    Ok(())
}
