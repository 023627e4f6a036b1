//! `candle-coreml config DIR [-o FILE]`: generates a ModelConfig JSON from a model directory (or hub repo id) by
//! reading its parts' model descriptions; `--check FILE` loads and validates an existing one instead.

use std::path::PathBuf;

use anyhow::Context;
use candle_coreml_hub::{resolve_model, ModelConfig, ResolveOptions};

/// Arguments of `config`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model directory, or a hub repo id `org/name` (downloaded when needed).
    #[arg(required_unless_present = "check")]
    pub model: Option<String>,
    /// Write the JSON here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Hub revision when MODEL is a repo id.
    #[arg(long)]
    pub revision: Option<String>,
    /// Load and validate this ModelConfig file (and, with MODEL, check that its files exist there).
    #[arg(long)]
    pub check: Option<PathBuf>,
}

/// Runs `config`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let mut options = ResolveOptions::from_env();
    options.revision = args.revision.clone();
    let dir = match &args.model {
        Some(spec) => Some(
            resolve_model(spec, &options).with_context(|| format!("cannot resolve `{spec}`"))?,
        ),
        None => None,
    };
    if let Some(check) = &args.check {
        let config = ModelConfig::load(check)?;
        if let Some(dir) = &dir {
            config.validate_files(dir)?;
        }
        eprintln!(
            "{}: valid ({} components, context {}, batch {}, vocab {})",
            check.display(),
            config.components.len(),
            config.shapes.context_length,
            config.shapes.batch_size,
            config.shapes.vocab_size
        );
        return Ok(());
    }
    let Some(dir) = dir else {
        anyhow::bail!("give a model directory or repo id");
    };
    let model_id = args
        .model
        .as_deref()
        .filter(|m| candle_coreml_hub::resolve::is_repo_id(m) && !std::path::Path::new(m).exists());
    let config = ModelConfig::generate(&dir, model_id)?;
    match &args.output {
        Some(path) => {
            config.save(path)?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{}", config.to_json()),
    }
    Ok(())
}
