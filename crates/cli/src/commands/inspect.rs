//! `candle-coreml inspect PATH [--function F] [--json]`: describes a model file (functions, inputs, outputs, states,
//! metadata, op histograms, weights) as aligned text, or as the JSON documented in `docs/inspect-json.md`.

use std::path::PathBuf;

use anyhow::Context;
use candle_coreml_format::inspect::InspectReport;

/// Arguments of `inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// Model path: .mlpackage, .mlmodel, .mlmodelc or .mlmodelc.zip.
    pub path: PathBuf,
    /// Only show this function.
    #[arg(long)]
    pub function: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `inspect`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let model = candle_coreml_format::ModelFile::open(&args.path)
        .with_context(|| format!("cannot open model {}", args.path.display()))?;
    let report = InspectReport::new(&model, args.function.as_deref())?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
