//! `candle-coreml generate --model DIR|ORG/NAME --prompt TEXT`: generate text with an ANEMLL model (a local
//! directory or a Hugging Face repo), streamed to stdout.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use candle_coreml_hub::{resolve_model, ModelConfig, ResolveOptions};
use candle_coreml_llm::sampling::SamplingConfig;
use candle_coreml_llm::{Generation, GenerationConfig, Message, ModelFiles, StopReason, TextModel};
use candle_coreml_runtime::LoadOptions;

/// Sampling options shared by `generate` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Softmax temperature; 0 = greedy.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Keep the most likely tokens up to this cumulative probability.
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Repetition penalty (1 = none).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// How many recent tokens the repetition penalty considers.
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed (default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The most tokens to generate.
    #[arg(long = "sample-len", short = 'n', default_value_t = 256)]
    pub sample_len: usize,
    /// Stop when the text contains this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Let the chat template enable "thinking" (Qwen3 `enable_thinking`).
    #[arg(long)]
    pub thinking: bool,
}

impl SamplingArgs {
    /// The generation settings these options describe.
    pub fn config(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.sample_len,
            sampling: SamplingConfig {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                min_p: self.min_p,
                repeat_penalty: self.repeat_penalty,
                repeat_last_n: self.repeat_last_n,
                seed: self.seed,
            },
            stop_strings: self.stop.clone(),
            stop_at_eos: true,
            enable_thinking: Some(self.thinking),
        }
    }
}

/// Which model to load, shared by `generate` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// ANEMLL model directory (meta.yaml or model_config.json, parts, tokenizer), or a Hugging Face repo id
    /// `org/name` (downloaded into the hub cache when needed; honours HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN,
    /// HF_HUB_OFFLINE).
    #[arg(long)]
    pub model: String,
    /// Hub branch, tag or commit when --model is a repo id.
    #[arg(long)]
    pub revision: Option<String>,
    /// A ModelConfig JSON naming the parts (file names relative to the model directory); by default the directory's
    /// own model_config.json is used when it has one.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl ModelArgs {
    /// Resolves the model (downloading it when needed) and loads it with its tokenizer on the CPU.
    pub fn load(&self) -> anyhow::Result<TextModel> {
        let mut options = ResolveOptions::from_env();
        options.revision = self.revision.clone();
        let dir = resolve_model(&self.model, &options)
            .with_context(|| format!("cannot resolve the model `{}`", self.model))?;
        let files = match &self.config {
            Some(path) => {
                let config = ModelConfig::load(path)
                    .with_context(|| format!("reading the model config {}", path.display()))?;
                ModelFiles::from_config(&dir, config).with_context(|| {
                    format!(
                        "finding the parts named by {} in {}",
                        path.display(),
                        dir.display()
                    )
                })?
            }
            None => ModelFiles::locate(&dir)?,
        };
        TextModel::from_files(files, &LoadOptions::default())
            .with_context(|| format!("loading the model in {}", dir.display()))
    }
}

/// Output format of `generate`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Stream the text, then timings on stderr.
    Text,
    /// One JSON object: prompt ids, generated ids, text, stop reason, timings.
    Json,
}

/// Arguments of `generate`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The model.
    #[command(flatten)]
    pub model: ModelArgs,
    /// The prompt (the user message, unless --no-chat-template).
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from this file.
    #[arg(long)]
    pub prompt_file: Option<PathBuf>,
    /// A system message placed before the prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// Use the prompt as raw text, without the chat template.
    #[arg(long)]
    pub no_chat_template: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Sampling options.
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// A one-line summary of the timings.
pub fn timing_summary(out: &Generation) -> String {
    let t = &out.timings;
    let stop = match &out.stop_reason {
        StopReason::StopToken(id) => format!("stop token {id}"),
        StopReason::StopString(s) => format!("stop string {s:?}"),
        StopReason::MaxTokens => "max tokens".to_string(),
    };
    format!(
        "{} prompt tokens ({} computed), first token after {:.3} s ({:.1} tok/s prefill); {} tokens in {:.3} s \
         ({:.1} tok/s decode); {}{}",
        t.prompt_tokens,
        t.prefilled_tokens,
        t.time_to_first_token.as_secs_f64(),
        t.prefill_tokens_per_second(),
        t.generated_tokens,
        t.decode_time.as_secs_f64(),
        t.decode_tokens_per_second(),
        stop,
        if t.context_shifts > 0 {
            format!("; {} context shift(s)", t.context_shifts)
        } else {
            String::new()
        }
    )
}

/// Runs `generate`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let prompt = match (&args.prompt, &args.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .with_context(|| format!("reading the prompt file {}", file.display()))?,
        (None, None) => bail!("give --prompt or --prompt-file"),
    };
    let mut model = args.model.load()?;
    let config = args.sampling.config();
    if let (false, Some(error)) = (
        args.no_chat_template,
        model.tokenizer().chat_template_error(),
    ) {
        bail!("{error} (use --no-chat-template to send the prompt as raw text)");
    }
    let use_template = !args.no_chat_template && model.tokenizer().chat_template().is_some();
    if !use_template && args.system.is_some() {
        bail!("--system needs the chat template (the model has none, or --no-chat-template was given)");
    }
    let streaming = args.format == Format::Text;
    let mut stdout = std::io::stdout();
    let mut on_text = |piece: &str| {
        if streaming {
            // A closed stdout (e.g. piped into `head`) is not worth failing the generation for.
            let _ = stdout.write_all(piece.as_bytes());
            let _ = stdout.flush();
        }
    };
    let out = if use_template {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(Message::system(system.clone()));
        }
        messages.push(Message::user(prompt));
        model.chat_stream(&messages, &config, &mut on_text)?
    } else {
        model.generate_stream(&prompt, &config, &mut on_text)?
    };
    match args.format {
        Format::Text => {
            println!();
            eprintln!("{}", timing_summary(&out));
        }
        Format::Json => {
            let t = &out.timings;
            let (stop_token, stop_string) = match &out.stop_reason {
                StopReason::StopToken(id) => (Some(*id), None),
                StopReason::StopString(s) => (None, Some(s.clone())),
                StopReason::MaxTokens => (None, None),
            };
            let json = serde_json::json!({
                "prompt_ids": out.prompt_ids,
                "generated_ids": out.token_ids,
                "text": out.text,
                "stop_reason": out.stop_reason.name(),
                "stop_token": stop_token,
                "stop_string": stop_string,
                "seed": out.seed,
                "timings": {
                    "prompt_tokens": t.prompt_tokens,
                    "prefilled_tokens": t.prefilled_tokens,
                    "generated_tokens": t.generated_tokens,
                    "time_to_first_token_s": t.time_to_first_token.as_secs_f64(),
                    "decode_s": t.decode_time.as_secs_f64(),
                    "prefill_tokens_per_s": t.prefill_tokens_per_second(),
                    "decode_tokens_per_s": t.decode_tokens_per_second(),
                    "context_shifts": t.context_shifts,
                },
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
    }
    Ok(())
}
