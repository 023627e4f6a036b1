//! `candle-coreml download MODEL_ID [--revision R]`: downloads what a model needs from the Hugging Face hub into the
//! standard cache (honouring `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT`, `HF_TOKEN`, `HF_HUB_OFFLINE`) and prints the
//! snapshot directory.

use anyhow::Context;
use candle_coreml_hub::{download_repo, ResolveOptions};

/// Arguments of `download`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Hub repo id, `org/name`.
    pub model_id: String,
    /// Branch, tag or commit.
    #[arg(long)]
    pub revision: Option<String>,
    /// Files downloaded at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Extra attempts per file after a cut connection (each resumes where the last stopped).
    #[arg(long, default_value_t = 3)]
    pub retries: usize,
    /// Do not draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// Runs `download`.
pub fn run(args: Args) -> anyhow::Result<()> {
    if !candle_coreml_hub::resolve::is_repo_id(&args.model_id) {
        anyhow::bail!(
            "`{}` is not a hub repo id of the form `org/name`",
            args.model_id
        );
    }
    let mut options = ResolveOptions::from_env();
    options.revision = args.revision;
    options.parallel = args.parallel.max(1);
    options.retries = args.retries;
    options.progress = !args.no_progress;
    let snapshot = download_repo(&args.model_id, &options)
        .with_context(|| format!("cannot download {}", args.model_id))?;
    if snapshot.transferred.is_empty() {
        eprintln!(
            "{} ({}) is up to date: {} files at commit {}",
            snapshot.repo_id,
            snapshot.revision,
            snapshot.files.len(),
            snapshot.commit
        );
    } else {
        eprintln!(
            "{} ({}): downloaded {} of {} files ({} bytes) at commit {}",
            snapshot.repo_id,
            snapshot.revision,
            snapshot.transferred.len(),
            snapshot.files.len(),
            snapshot.bytes_transferred,
            snapshot.commit
        );
    }
    println!("{}", snapshot.dir.display());
    Ok(())
}
