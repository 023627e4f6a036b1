//! `candle-coreml run MODEL [--function F] --input name=FILE.npy|FILE.safetensors ... [--state-in F]
//! [--state-out F] [--output-dir D]`: runs one prediction with the portable executor, writes every output as
//! `<output-dir>/<name>.npy` and prints names, shapes, dtypes and timings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use candle_coreml_runtime::{CoreMLModel, LoadOptions};

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// Model path: .mlpackage, .mlmodel, .mlmodelc or .mlmodelc.zip.
    pub model: PathBuf,
    /// Function to run (default: the model's default function).
    #[arg(long)]
    pub function: Option<String>,
    /// An input: `name=FILE.npy`, `name=FILE.safetensors` (the tensor called `name`, or the file's only tensor),
    /// or `FILE.safetensors` (every tensor of the file, by name). Repeat for several inputs.
    #[arg(long = "input", value_name = "NAME=FILE")]
    pub inputs: Vec<String>,
    /// Initial state values (safetensors, one tensor per state name); default: zeros.
    #[arg(long, value_name = "FILE")]
    pub state_in: Option<PathBuf>,
    /// Where to save the states after the call (safetensors).
    #[arg(long, value_name = "FILE")]
    pub state_out: Option<PathBuf>,
    /// Directory for the `<output>.npy` files (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub output_dir: PathBuf,
}

fn is_safetensors(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// Reads every `--input` into named tensors.
fn read_inputs(specs: &[String]) -> anyhow::Result<Vec<(String, Tensor)>> {
    let mut out: Vec<(String, Tensor)> = Vec::new();
    for spec in specs {
        match spec.split_once('=') {
            Some((name, file)) => {
                let path = Path::new(file);
                let t = if is_safetensors(path) {
                    let mut all = candle_core::safetensors::load(path, &Device::Cpu)
                        .with_context(|| format!("reading {}", path.display()))?;
                    if let Some(t) = all.remove(name) {
                        t
                    } else if all.len() == 1 {
                        all.into_values().next().context("empty safetensors file")?
                    } else {
                        bail!(
                            "{}: no tensor named `{name}` (and more than one tensor)",
                            path.display()
                        );
                    }
                } else {
                    Tensor::read_npy(path).with_context(|| format!("reading {}", path.display()))?
                };
                out.push((name.to_string(), t));
            }
            None => {
                let path = Path::new(spec);
                if !is_safetensors(path) {
                    bail!("input `{spec}`: use NAME=FILE.npy, NAME=FILE.safetensors or FILE.safetensors");
                }
                let all = candle_core::safetensors::load(path, &Device::Cpu)
                    .with_context(|| format!("reading {}", path.display()))?;
                let mut all: Vec<(String, Tensor)> = all.into_iter().collect();
                all.sort_by(|a, b| a.0.cmp(&b.0));
                out.extend(all);
            }
        }
    }
    Ok(out)
}

fn describe(t: &Tensor) -> String {
    format!("{:?} {:?}", t.dims(), t.dtype())
}

/// Runs `run`.
pub fn run(args: Args) -> anyhow::Result<()> {
    let start = Instant::now();
    let options = LoadOptions {
        function: args.function.clone(),
        ..LoadOptions::default()
    };
    let model = CoreMLModel::load_with(&args.model, &options)?;
    let load_time = start.elapsed();
    let inputs = read_inputs(&args.inputs)?;
    let mut state = model.make_state()?;
    if let Some(path) = &args.state_in {
        let values: HashMap<String, Tensor> = candle_core::safetensors::load(path, &Device::Cpu)
            .with_context(|| format!("reading {}", path.display()))?;
        for (name, t) in values {
            if state.get(&name).is_none() {
                bail!(
                    "{}: state `{name}` is not declared by function `{}`",
                    path.display(),
                    model.function_name()
                );
            }
            state.set(&name, t)?;
        }
    }
    let feeds: Vec<(&str, &Tensor)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let t0 = Instant::now();
    let outputs = model.predict_with_state(&feeds, &mut state)?;
    let predict_time = t0.elapsed();
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("creating {}", args.output_dir.display()))?;
    println!(
        "model    {} (function `{}`)",
        args.model.display(),
        model.function_name()
    );
    for (name, t) in &inputs {
        println!("input    {name}: {}", describe(t));
    }
    for (name, t) in &outputs {
        let file = args.output_dir.join(format!("{name}.npy"));
        t.write_npy(&file)
            .with_context(|| format!("writing {}", file.display()))?;
        println!("output   {name}: {} -> {}", describe(t), file.display());
    }
    if let Some(path) = &args.state_out {
        let map: HashMap<&str, Tensor> = state
            .names()
            .into_iter()
            .filter_map(|n| state.get(n).map(|t| (n, t.clone())))
            .collect();
        candle_core::safetensors::save(&map, path)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("state    {} tensor(s) -> {}", map.len(), path.display());
    }
    println!(
        "time     load {:.1} ms, predict {:.1} ms",
        load_time.as_secs_f64() * 1e3,
        predict_time.as_secs_f64() * 1e3
    );
    Ok(())
}
