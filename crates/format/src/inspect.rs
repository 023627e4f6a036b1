//! A summary of a model file for people and scripts: its form, metadata, functions with their inputs, outputs,
//! states and op histograms, and its weights. Serialises to the stable JSON shape documented in
//! `docs/inspect-json.md`; [`InspectReport::to_text`] renders it for reading at a glance.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::blob::program_blob_refs;
use crate::container::ModelFile;
use crate::description::{FeatureDescription, FeatureKind, ShapeFlexibility};
use crate::error::{FormatError, Result};
use crate::mil::Block;

/// Version of the JSON shape; bumped on any incompatible change.
pub const INSPECT_FORMAT: &str = "candle-coreml-inspect/1";

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectReport {
    /// Always [`INSPECT_FORMAT`].
    pub format_version: String,
    /// The path that was opened.
    pub path: String,
    /// `mlpackage`, `mlmodel`, `mlmodelc` or `mlmodelc.zip`.
    pub format: String,
    /// `specificationVersion`, when known.
    pub spec_version: Option<i32>,
    /// The program's format version (`1`, `1.3`, ...).
    pub program_version: String,
    /// Descriptive metadata.
    pub metadata: MetadataReport,
    /// The function used when none is named.
    pub default_function: String,
    /// The reported functions (all, or the one asked for), in description order.
    pub functions: Vec<FunctionReport>,
    /// The weight files.
    pub weights: WeightsReport,
}

/// Descriptive metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetadataReport {
    /// Short description.
    pub short_description: String,
    /// Model version string.
    pub version: String,
    /// Author.
    pub author: String,
    /// License.
    pub license: String,
    /// User-defined key/value pairs, sorted by key.
    pub user_defined: BTreeMap<String, String>,
}

/// One function.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionReport {
    /// Function name.
    pub name: String,
    /// True for the default function.
    pub is_default: bool,
    /// Opset of the function's body (`CoreML8`).
    pub opset: String,
    /// Inputs in declared order.
    pub inputs: Vec<FeatureReport>,
    /// Outputs in declared order.
    pub outputs: Vec<FeatureReport>,
    /// States in declared order.
    pub states: Vec<FeatureReport>,
    /// Number of operations, nested blocks included.
    pub operation_count: u64,
    /// Count of every op type, nested blocks included, sorted by op type.
    pub ops: BTreeMap<String, u64>,
    /// The same without `const`.
    pub non_const_ops: BTreeMap<String, u64>,
}

/// One input, output or state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureReport {
    /// Feature name.
    pub name: String,
    /// `array`, `state`, `int64`, `double`, `string`, `image`, `dictionary` or `sequence`.
    pub kind: String,
    /// Element type as a `model.mil` dtype token (`fp16`, `int32`), or `null` when undeclared or not a tensor.
    pub dtype: Option<String>,
    /// Default shape; empty when undeclared; `-1` marks a dimension only known at run time.
    pub shape: Vec<i64>,
    /// Accepted shapes.
    pub flexibility: FlexibilityReport,
    /// True when an input may be omitted.
    pub optional: bool,
    /// Free-text description.
    pub description: String,
}

/// Accepted shapes of a tensor feature, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FlexibilityReport {
    /// Only the default shape (which may still contain `-1`).
    Fixed,
    /// Any of `shapes`.
    Enumerated {
        /// The accepted shapes.
        shapes: Vec<Vec<i64>>,
    },
    /// One range per dimension.
    Range {
        /// `{lower, upper}` per dimension; `upper` is `null` when unbounded.
        ranges: Vec<RangeReport>,
    },
}

/// The accepted sizes of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RangeReport {
    /// Smallest size.
    pub lower: u64,
    /// Largest size; `null` when unbounded.
    pub upper: Option<u64>,
}

/// The model's weight files.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightsReport {
    /// Total size in bytes of all weight files.
    pub total_bytes: u64,
    /// Total number of blobs declared in their headers.
    pub blob_count: u64,
    /// Number of distinct blob records the program refers to.
    pub referenced_blobs: u64,
    /// One entry per file.
    pub files: Vec<WeightFileReport>,
    /// Weight files the program refers to that are absent (program path), e.g. a compiled bundle shared without
    /// its `weights/` folder.
    pub missing_files: Vec<String>,
}

/// One weight file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightFileReport {
    /// The path as written in the program (`@model_path/weights/weight.bin`).
    pub program_path: String,
    /// The file on disk.
    pub path: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Number of blobs declared in its header.
    pub blobs: u32,
}

fn count_ops(block: &Block, ops: &mut BTreeMap<String, u64>) {
    for op in &block.operations {
        *ops.entry(op.op_type.clone()).or_default() += 1;
        for b in &op.blocks {
            count_ops(b, ops);
        }
    }
}

fn feature_report(f: &FeatureDescription) -> FeatureReport {
    let (kind, array) = match &f.kind {
        FeatureKind::Array(a) => ("array", Some(a)),
        FeatureKind::State(a) => ("state", Some(a)),
        FeatureKind::Int64 => ("int64", None),
        FeatureKind::Double => ("double", None),
        FeatureKind::String => ("string", None),
        FeatureKind::Image { .. } => ("image", None),
        FeatureKind::Dictionary => ("dictionary", None),
        FeatureKind::Sequence => ("sequence", None),
    };
    let flexibility = match array.map(|a| &a.flexibility) {
        Some(ShapeFlexibility::Enumerated(shapes)) => FlexibilityReport::Enumerated {
            shapes: shapes.clone(),
        },
        Some(ShapeFlexibility::Range(r)) => FlexibilityReport::Range {
            ranges: r
                .iter()
                .map(|d| RangeReport {
                    lower: d.lower,
                    upper: d.upper,
                })
                .collect(),
        },
        _ => FlexibilityReport::Fixed,
    };
    FeatureReport {
        name: f.name.clone(),
        kind: kind.into(),
        dtype: array
            .and_then(|a| a.dtype)
            .map(|d| d.mil_name().to_string()),
        shape: array.map(|a| a.shape.clone()).unwrap_or_default(),
        flexibility,
        optional: f.optional,
        description: f.short_description.clone(),
    }
}

impl InspectReport {
    /// Builds the report of `model`, for every function or only for `function`.
    pub fn new(model: &ModelFile, function: Option<&str>) -> Result<InspectReport> {
        let desc = &model.description;
        if let Some(name) = function {
            if desc.function(name).is_none() {
                return Err(FormatError::Invalid {
                    path: model.path.clone(),
                    message: format!(
                        "no function `{name}` (functions: {})",
                        desc.functions
                            .iter()
                            .map(|f| f.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
        }
        let functions = desc
            .functions
            .iter()
            .filter(|f| function.is_none_or(|n| n == f.name))
            .map(|f| {
                let mut ops = BTreeMap::new();
                let program_fn = model.program.functions.get(&f.name);
                if let Some(pf) = program_fn {
                    count_ops(&pf.block, &mut ops);
                }
                let mut non_const_ops = ops.clone();
                non_const_ops.remove("const");
                FunctionReport {
                    name: f.name.clone(),
                    is_default: f.name == desc.default_function,
                    opset: program_fn.map(|p| p.opset.clone()).unwrap_or_default(),
                    inputs: f.inputs.iter().map(feature_report).collect(),
                    outputs: f.outputs.iter().map(feature_report).collect(),
                    states: f.states.iter().map(feature_report).collect(),
                    operation_count: ops.values().sum(),
                    ops,
                    non_const_ops,
                }
            })
            .collect();
        let mut referenced: Vec<(&str, u64)> = program_blob_refs(&model.program)
            .into_iter()
            .map(|b| (b.path.as_str(), b.offset))
            .collect();
        referenced.sort_unstable();
        referenced.dedup();
        let weights = WeightsReport {
            total_bytes: model.weights.total_bytes(),
            blob_count: model.weights.blob_count(),
            referenced_blobs: referenced.len() as u64,
            files: model
                .weights
                .files()
                .iter()
                .map(|(program_path, f)| WeightFileReport {
                    program_path: program_path.clone(),
                    path: f.path().display().to_string(),
                    bytes: f.len(),
                    blobs: f.blob_count(),
                })
                .collect(),
            missing_files: model.weights.missing_files().keys().cloned().collect(),
        };
        Ok(InspectReport {
            format_version: INSPECT_FORMAT.into(),
            path: model.path.display().to_string(),
            format: model.format.name().into(),
            spec_version: desc.spec_version,
            program_version: model.program.version.clone(),
            metadata: MetadataReport {
                short_description: desc.metadata.short_description.clone(),
                version: desc.metadata.version.clone(),
                author: desc.metadata.author.clone(),
                license: desc.metadata.license.clone(),
                user_defined: desc.metadata.user_defined.clone(),
            },
            default_function: desc.default_function.clone(),
            functions,
            weights,
        })
    }

    /// Renders the report as aligned plain text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let spec = self
            .spec_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".into());
        let _ = writeln!(s, "{}", self.path);
        let _ = writeln!(
            s,
            "  format {}, specification version {spec}, program version {}",
            self.format, self.program_version
        );
        let m = &self.metadata;
        for (label, value) in [
            ("description", &m.short_description),
            ("version", &m.version),
            ("author", &m.author),
            ("license", &m.license),
        ] {
            if !value.is_empty() {
                let _ = writeln!(s, "  {label:<12} {value}");
            }
        }
        if !m.user_defined.is_empty() {
            let _ = writeln!(s, "  metadata:");
            let width = m.user_defined.keys().map(|k| k.len()).max().unwrap_or(0);
            for (k, v) in &m.user_defined {
                let _ = writeln!(s, "    {k:<width$}  {v}");
            }
        }
        let w = &self.weights;
        let _ = writeln!(
            s,
            "  weights: {} in {} file(s), {} blob(s), {} referenced",
            human_bytes(w.total_bytes),
            w.files.len(),
            w.blob_count,
            w.referenced_blobs
        );
        for missing in &w.missing_files {
            let _ = writeln!(s, "  missing weight file: {missing}");
        }
        for f in &self.functions {
            let default = if f.is_default { " (default)" } else { "" };
            let _ = writeln!(s, "\nfunction {}{default}  opset {}", f.name, f.opset);
            for (title, list) in [
                ("inputs", &f.inputs),
                ("outputs", &f.outputs),
                ("states", &f.states),
            ] {
                if list.is_empty() {
                    continue;
                }
                let _ = writeln!(s, "  {title}:");
                let name_w = list.iter().map(|x| x.name.len()).max().unwrap_or(0);
                for x in list {
                    let dtype = x.dtype.as_deref().unwrap_or(&x.kind);
                    let shape = shape_text(&x.shape);
                    let flex = match &x.flexibility {
                        FlexibilityReport::Fixed => String::new(),
                        FlexibilityReport::Enumerated { shapes } => format!(
                            "  one of {}",
                            shapes
                                .iter()
                                .map(|s| shape_text(s))
                                .collect::<Vec<_>>()
                                .join(" ")
                        ),
                        FlexibilityReport::Range { ranges } => format!(
                            "  ranges {}",
                            ranges
                                .iter()
                                .map(|r| match r.upper {
                                    Some(u) => format!("{}..{u}", r.lower),
                                    None => format!("{}..", r.lower),
                                })
                                .collect::<Vec<_>>()
                                .join(" x ")
                        ),
                    };
                    let optional = if x.optional { "  optional" } else { "" };
                    let _ = writeln!(
                        s,
                        "    {:<name_w$}  {dtype:<6} {shape}{flex}{optional}",
                        x.name
                    );
                }
            }
            let _ = writeln!(
                s,
                "  operations: {} ({} const)",
                f.operation_count,
                f.ops.get("const").copied().unwrap_or(0)
            );
            let mut by_count: Vec<(&String, &u64)> = f.non_const_ops.iter().collect();
            by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            let op_w = by_count.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (op, n) in by_count {
                let _ = writeln!(s, "    {op:<op_w$}  {n:>6}");
            }
        }
        s
    }
}

fn shape_text(shape: &[i64]) -> String {
    if shape.is_empty() {
        return "(shape not declared)".into();
    }
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| if d < 0 { "?".into() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit} ({n} bytes)")
}
