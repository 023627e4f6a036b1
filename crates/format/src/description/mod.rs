//! Inputs, outputs, states, functions and metadata of a model, read from the protobuf `ModelDescription`
//! (`.mlpackage`, `.mlmodel`), from `metadata.json` (`.mlmodelc`), or derived from the program's function
//! signatures when neither is available.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{FormatError, Result};
use crate::mil::{DataType, Program};

mod derived;
mod metadata_json;
mod protobuf;

pub use derived::{derive, derive_function};
pub use metadata_json::{dtype_from_metadata_name, from_metadata_json};
pub use protobuf::from_proto;

/// The interface and metadata of a whole model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelDescription {
    /// `specificationVersion` when known.
    pub spec_version: Option<i32>,
    /// One entry per function; single-function models have one entry named after the program's function (`main`).
    pub functions: Vec<FunctionDescription>,
    /// The function used when none is named.
    pub default_function: String,
    /// Descriptive metadata.
    pub metadata: Metadata,
}

impl ModelDescription {
    /// The description of the function called `name`.
    pub fn function(&self, name: &str) -> Option<&FunctionDescription> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The description of the default function.
    pub fn default(&self) -> Option<&FunctionDescription> {
        self.function(&self.default_function)
    }
}

/// Descriptive model metadata.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Metadata {
    /// `shortDescription`.
    pub short_description: String,
    /// `versionString`.
    pub version: String,
    /// `author`.
    pub author: String,
    /// `license`.
    pub license: String,
    /// `userDefined` key/value pairs (e.g. `com.anemll.context_length`).
    pub user_defined: BTreeMap<String, String>,
}

/// Inputs, outputs and states of one function.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionDescription {
    /// Function name.
    pub name: String,
    /// Inputs in declared order.
    pub inputs: Vec<FeatureDescription>,
    /// Outputs in declared order.
    pub outputs: Vec<FeatureDescription>,
    /// States in declared order.
    pub states: Vec<FeatureDescription>,
}

impl FunctionDescription {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&FeatureDescription> {
        self.inputs.iter().find(|f| f.name == name)
    }

    /// The output called `name`.
    pub fn output(&self, name: &str) -> Option<&FeatureDescription> {
        self.outputs.iter().find(|f| f.name == name)
    }

    /// The state called `name`.
    pub fn state(&self, name: &str) -> Option<&FeatureDescription> {
        self.states.iter().find(|f| f.name == name)
    }
}

/// One named input, output or state.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDescription {
    /// Feature name.
    pub name: String,
    /// Free-text description.
    pub short_description: String,
    /// What kind of value it is.
    pub kind: FeatureKind,
    /// True when an input may be omitted.
    pub optional: bool,
}

/// The kind of value of a feature.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureKind {
    /// A multi-array (tensor).
    Array(ArrayFeature),
    /// A state buffer wrapping a tensor.
    State(ArrayFeature),
    /// A 64-bit integer.
    Int64,
    /// A double.
    Double,
    /// A string.
    String,
    /// An image.
    Image {
        /// Width in pixels.
        width: i64,
        /// Height in pixels.
        height: i64,
        /// Colour space name (`RGB`, `BGR`, `GRAYSCALE`, ...).
        color_space: String,
    },
    /// A dictionary.
    Dictionary,
    /// A sequence.
    Sequence,
}

impl FeatureKind {
    /// The tensor description of an array or state feature.
    pub fn array(&self) -> Option<&ArrayFeature> {
        match self {
            FeatureKind::Array(a) | FeatureKind::State(a) => Some(a),
            _ => None,
        }
    }
}

/// Element type, default shape and shape flexibility of a tensor feature.
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayFeature {
    /// Element type; `None` when undeclared.
    pub dtype: Option<DataType>,
    /// Default shape; empty when undeclared. `-1` marks a dimension only known at run time.
    pub shape: Vec<i64>,
    /// Which other shapes are accepted.
    pub flexibility: ShapeFlexibility,
}

/// Which shapes a tensor feature accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum ShapeFlexibility {
    /// Only the default shape.
    Fixed,
    /// Any of these shapes.
    Enumerated(Vec<Vec<i64>>),
    /// Per-dimension ranges.
    Range(Vec<DimRange>),
}

/// The accepted sizes of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimRange {
    /// Smallest size.
    pub lower: u64,
    /// Largest size; `None` when unbounded.
    pub upper: Option<u64>,
}

fn invalid(path: &Path, message: String) -> FormatError {
    FormatError::Invalid {
        path: path.to_path_buf(),
        message,
    }
}

/// Checks that the described functions exist in the program with the described inputs, states and outputs, and that
/// the default names one of them.
fn check_against_program(desc: &ModelDescription, program: &Program, path: &Path) -> Result<()> {
    for f in &desc.functions {
        let Some(pf) = program.functions.get(&f.name) else {
            return Err(invalid(
                path,
                format!(
                    "the model description names function `{}`, which the program lacks",
                    f.name
                ),
            ));
        };
        let params = || pf.inputs.iter().map(|p| p.name.as_str());
        for feature in f.inputs.iter().chain(&f.states) {
            if !params().any(|p| p == feature.name) {
                return Err(invalid(
                    path,
                    format!(
                        "function `{}`: described input `{}` is not a parameter of the program's function ({})",
                        f.name,
                        feature.name,
                        params().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        for feature in &f.outputs {
            if !pf.block.outputs.contains(&feature.name) {
                return Err(invalid(
                    path,
                    format!(
                        "function `{}`: described output `{}` is not returned by the program's function ({})",
                        f.name,
                        feature.name,
                        pf.block.outputs.join(", ")
                    ),
                ));
            }
        }
    }
    if desc.function(&desc.default_function).is_none() {
        return Err(invalid(
            path,
            format!(
                "default function `{}` is not among the described functions",
                desc.default_function
            ),
        ));
    }
    Ok(())
}

fn only_function_name(program: &Program, path: &Path) -> Result<String> {
    let mut names = program.functions.keys();
    match (names.next(), names.next()) {
        (Some(name), None) => Ok(name.clone()),
        (None, _) => Err(invalid(path, "the program has no function".into())),
        (Some(_), Some(_)) => Err(invalid(
            path,
            format!(
                "the program has several functions ({:?}) but the description lists none",
                program.functions.keys().collect::<Vec<_>>()
            ),
        )),
    }
}
