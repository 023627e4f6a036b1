//! Inputs, outputs, states, functions and metadata of a model, read from the protobuf `ModelDescription`
//! (`.mlpackage`, `.mlmodel`), from `metadata.json` (`.mlmodelc`), or derived from the program's function
//! signatures when neither is available.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{FormatError, Result};
use crate::mil::{DataType, Dim, Function, Program, TensorData, Value, ValueData, ValueType};
use crate::proto::spec as pb;

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

fn array_dtype_from_proto(code: i32) -> Option<Option<DataType>> {
    use pb::array_feature_type::ArrayDataType as A;
    Some(match A::try_from(code).ok()? {
        A::InvalidArrayDataType => None,
        A::Float32 => Some(DataType::Float32),
        A::Double => Some(DataType::Float64),
        A::Int32 => Some(DataType::Int32),
        A::Int8 => Some(DataType::Int8),
        A::Float16 => Some(DataType::Float16),
    })
}

fn array_from_proto(a: &pb::ArrayFeatureType, path: &Path, at: &str) -> Result<ArrayFeature> {
    use pb::array_feature_type::ShapeFlexibility as F;
    let dtype = array_dtype_from_proto(a.data_type).ok_or_else(|| {
        invalid(
            path,
            format!("{at}: unknown multi-array data type code {}", a.data_type),
        )
    })?;
    let flexibility = match &a.shape_flexibility {
        None => ShapeFlexibility::Fixed,
        Some(F::EnumeratedShapes(e)) => {
            ShapeFlexibility::Enumerated(e.shapes.iter().map(|s| s.shape.clone()).collect())
        }
        Some(F::ShapeRange(r)) => ShapeFlexibility::Range(
            r.size_ranges
                .iter()
                .map(|s| DimRange {
                    lower: s.lower_bound,
                    upper: u64::try_from(s.upper_bound).ok(),
                })
                .collect(),
        ),
    };
    Ok(ArrayFeature {
        dtype,
        shape: a.shape.clone(),
        flexibility,
    })
}

fn feature_from_proto(
    f: &pb::FeatureDescription,
    path: &Path,
    at: &str,
) -> Result<FeatureDescription> {
    use pb::feature_type::Type as T;
    let at = format!("{at} `{}`", f.name);
    let ty = f
        .r#type
        .as_ref()
        .ok_or_else(|| invalid(path, format!("{at}: feature has no type")))?;
    let kind = match &ty.r#type {
        Some(T::MultiArrayType(a)) => FeatureKind::Array(array_from_proto(a, path, &at)?),
        Some(T::StateType(s)) => match &s.r#type {
            Some(pb::state_feature_type::Type::ArrayType(a)) => {
                FeatureKind::State(array_from_proto(a, path, &at)?)
            }
            None => return Err(invalid(path, format!("{at}: state without an array type"))),
        },
        Some(T::Int64Type(_)) => FeatureKind::Int64,
        Some(T::DoubleType(_)) => FeatureKind::Double,
        Some(T::StringType(_)) => FeatureKind::String,
        Some(T::ImageType(i)) => FeatureKind::Image {
            width: i.width,
            height: i.height,
            color_space: pb::image_feature_type::ColorSpace::try_from(i.color_space)
                .map(|c| c.as_str_name().to_string())
                .unwrap_or_else(|_| format!("unknown ({})", i.color_space)),
        },
        Some(T::DictionaryType(_)) => FeatureKind::Dictionary,
        Some(T::SequenceType(_)) => FeatureKind::Sequence,
        None => return Err(invalid(path, format!("{at}: feature type not set"))),
    };
    Ok(FeatureDescription {
        name: f.name.clone(),
        short_description: f.short_description.clone(),
        kind,
        optional: ty.is_optional,
    })
}

fn features_from_proto(
    list: &[pb::FeatureDescription],
    path: &Path,
    at: &str,
) -> Result<Vec<FeatureDescription>> {
    list.iter()
        .map(|f| feature_from_proto(f, path, at))
        .collect()
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

/// Reads the protobuf description of an ML Program. Multifunction models list per-function I/O in `functions`;
/// single-function models put it at the top level, named after the program's only function.
pub fn from_proto(
    desc: &pb::ModelDescription,
    spec_version: i32,
    program: &Program,
    path: &Path,
) -> Result<ModelDescription> {
    let metadata = desc
        .metadata
        .as_ref()
        .map(|m| Metadata {
            short_description: m.short_description.clone(),
            version: m.version_string.clone(),
            author: m.author.clone(),
            license: m.license.clone(),
            user_defined: m
                .user_defined
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        })
        .unwrap_or_default();
    let (functions, default_function) = if desc.functions.is_empty() {
        let name = only_function_name(program, path)?;
        let f = FunctionDescription {
            name: name.clone(),
            inputs: features_from_proto(&desc.input, path, "input")?,
            outputs: features_from_proto(&desc.output, path, "output")?,
            states: features_from_proto(&desc.state, path, "state")?,
        };
        (vec![f], name)
    } else {
        let functions = desc
            .functions
            .iter()
            .map(|f| {
                let at = format!("function `{}`", f.name);
                Ok(FunctionDescription {
                    name: f.name.clone(),
                    inputs: features_from_proto(&f.input, path, &format!("{at} input"))?,
                    outputs: features_from_proto(&f.output, path, &format!("{at} output"))?,
                    states: features_from_proto(&f.state, path, &format!("{at} state"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let default = if desc.default_function_name.is_empty() && functions.len() == 1 {
            functions
                .first()
                .map(|f| f.name.clone())
                .unwrap_or_default()
        } else {
            desc.default_function_name.clone()
        };
        (functions, default)
    };
    let out = ModelDescription {
        spec_version: Some(spec_version),
        functions,
        default_function,
        metadata,
    };
    check_against_program(&out, program, path)?;
    Ok(out)
}

fn dims_to_shape(dims: Option<&[Dim]>) -> Vec<i64> {
    dims.map(|d| {
        d.iter()
            .map(|d| match d {
                Dim::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                Dim::Unknown => -1,
            })
            .collect()
    })
    .unwrap_or_default()
}

fn derived_array(ty: &ValueType) -> ArrayFeature {
    ArrayFeature {
        dtype: ty.dtype(),
        shape: dims_to_shape(ty.dims()),
        flexibility: ShapeFlexibility::Fixed,
    }
}

fn derived_feature(name: &str, kind: FeatureKind) -> FeatureDescription {
    FeatureDescription {
        name: name.to_string(),
        short_description: String::new(),
        kind,
        optional: false,
    }
}

/// Default shapes and flexibility of inputs, from a function's `FlexibleShapeInformation` attribute (written by
/// Apple's compiler into `model.mil`: `DefaultShapes`, `RangeDims` and `EnumeratedShapes` dictionaries keyed by input).
#[derive(Default)]
struct FlexibleShapes {
    defaults: BTreeMap<String, Vec<i64>>,
    ranges: BTreeMap<String, Vec<DimRange>>,
    enumerated: BTreeMap<String, Vec<Vec<i64>>>,
}

fn int_list(v: &Value) -> Option<Vec<i64>> {
    match &v.data {
        ValueData::Tensor(TensorData::Int(x)) => Some(x.clone()),
        _ => None,
    }
}

fn dict_entries(v: &Value) -> &[(Value, Value)] {
    match &v.data {
        ValueData::Dict(entries) => entries,
        _ => &[],
    }
}

fn flexible_shapes(function: &Function) -> FlexibleShapes {
    let mut out = FlexibleShapes::default();
    let Some(ValueData::Tuple(sections)) = function
        .attributes
        .get("FlexibleShapeInformation")
        .map(|v| &v.data)
    else {
        return out;
    };
    for section in sections {
        let ValueData::Tuple(pair) = &section.data else {
            continue;
        };
        let [key, dict] = pair.as_slice() else {
            continue;
        };
        for (name, value) in dict_entries(dict) {
            let Some(name) = name.as_str() else { continue };
            match key.as_str() {
                Some("DefaultShapes") => {
                    if let Some(shape) = int_list(value) {
                        out.defaults.insert(name.to_string(), shape);
                    }
                }
                Some("RangeDims") => {
                    let ValueData::List(items) = &value.data else {
                        continue;
                    };
                    let ranges: Option<Vec<DimRange>> = items
                        .iter()
                        .map(|item| match int_list(item)?.as_slice() {
                            [lo, hi] => Some(DimRange {
                                lower: u64::try_from(*lo).ok()?,
                                upper: u64::try_from(*hi).ok(),
                            }),
                            _ => None,
                        })
                        .collect();
                    if let Some(r) = ranges {
                        out.ranges.insert(name.to_string(), r);
                    }
                }
                Some("EnumeratedShapes") => {
                    for (input, shape) in dict_entries(value) {
                        if let (Some(input), Some(shape)) = (input.as_str(), int_list(shape)) {
                            out.enumerated
                                .entry(input.to_string())
                                .or_default()
                                .push(shape);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Describes a function from its signature alone: tensor parameters become inputs, `state<...>` parameters states,
/// and the block outputs' types outputs. Unknown (`?`) dimensions are reported as `-1`, unless the function's
/// `FlexibleShapeInformation` attribute gives the input's default shape and its ranges or enumerated shapes.
pub fn derive_function(name: &str, function: &Function) -> FunctionDescription {
    let flexible = flexible_shapes(function);
    let mut inputs = Vec::new();
    let mut states = Vec::new();
    for p in &function.inputs {
        match &p.ty {
            ValueType::State(inner) => states.push(derived_feature(
                &p.name,
                FeatureKind::State(derived_array(inner)),
            )),
            ty => {
                let mut array = derived_array(ty);
                if let Some(shape) = flexible.defaults.get(&p.name) {
                    array.shape = shape.clone();
                }
                if let Some(r) = flexible.ranges.get(&p.name) {
                    array.flexibility = ShapeFlexibility::Range(r.clone());
                } else if let Some(e) = flexible.enumerated.get(&p.name) {
                    array.flexibility = ShapeFlexibility::Enumerated(e.clone());
                }
                inputs.push(derived_feature(&p.name, FeatureKind::Array(array)));
            }
        }
    }
    let outputs = function
        .block
        .outputs
        .iter()
        .map(|out| {
            let ty = function
                .block
                .operations
                .iter()
                .flat_map(|op| op.outputs.iter())
                .chain(function.inputs.iter())
                .find(|n| &n.name == out)
                .map(|n| &n.ty);
            let array = ty.map(derived_array).unwrap_or(ArrayFeature {
                dtype: None,
                shape: Vec::new(),
                flexibility: ShapeFlexibility::Fixed,
            });
            derived_feature(out, FeatureKind::Array(array))
        })
        .collect();
    FunctionDescription {
        name: name.to_string(),
        inputs,
        outputs,
        states,
    }
}

/// Describes every function of a program from its signatures (for `.mlmodelc` bundles without `metadata.json`).
/// The default function is `main` when present, else the first by name.
pub fn derive(program: &Program) -> ModelDescription {
    let functions: Vec<FunctionDescription> = program
        .functions
        .iter()
        .map(|(n, f)| derive_function(n, f))
        .collect();
    let default_function = if program.functions.contains_key("main") {
        "main".to_string()
    } else {
        functions
            .first()
            .map(|f| f.name.clone())
            .unwrap_or_default()
    };
    ModelDescription {
        spec_version: None,
        functions,
        default_function,
        metadata: Metadata::default(),
    }
}

/// Maps a `metadata.json` `dataType` string (`Float16`, `Int32`, ...) to the element type.
pub fn dtype_from_metadata_name(name: &str) -> Option<DataType> {
    Some(match name {
        "Float16" => DataType::Float16,
        "Float32" => DataType::Float32,
        "Float64" | "Double" => DataType::Float64,
        "Int32" => DataType::Int32,
        "Int8" => DataType::Int8,
        "Int16" => DataType::Int16,
        "Int64" => DataType::Int64,
        "UInt8" => DataType::UInt8,
        "UInt16" => DataType::UInt16,
        "BFloat16" => DataType::BFloat16,
        "Bool" => DataType::Bool,
        _ => return None,
    })
}

/// Parses a JSON-ish list of integers or of integer lists as written in `metadata.json` strings (`"[1, 64]"`,
/// `"[[1, 1], [1, 64]]"`); also accepts real JSON arrays.
fn json_list(v: &Json) -> Option<Json> {
    match v {
        Json::String(s) => serde_json::from_str(s).ok(),
        Json::Array(_) => Some(v.clone()),
        _ => None,
    }
}

fn ints(v: &Json) -> Option<Vec<i64>> {
    v.as_array()?.iter().map(Json::as_i64).collect()
}

/// Reads the human-readable `shapeFlexibility` of `metadata.json`, used when neither `enumeratedShapes` nor
/// `shapeRange` is given: `"1 × 1 | 1 × 64"` lists enumerated shapes, `"1 × 1...2048"` gives per-dimension ranges
/// (`a...b`, or a single size; an upper bound of `-1` is unbounded).
fn flexibility_from_text(text: &str) -> Option<ShapeFlexibility> {
    let dims =
        |shape: &str| -> Vec<String> { shape.split('×').map(|d| d.trim().to_string()).collect() };
    if text.contains('|') {
        let shapes = text
            .split('|')
            .map(|shape| dims(shape).iter().map(|d| d.parse::<i64>().ok()).collect())
            .collect::<Option<Vec<Vec<i64>>>>()?;
        return Some(ShapeFlexibility::Enumerated(shapes));
    }
    let ranges = dims(text)
        .iter()
        .map(|d| {
            let (lo, hi) = d.split_once("...").unwrap_or((d, d));
            Some(DimRange {
                lower: lo.trim().parse().ok()?,
                upper: match hi.trim().parse::<i64>().ok()? {
                    -1 => None,
                    n => Some(u64::try_from(n).ok()?),
                },
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(ShapeFlexibility::Range(ranges))
}

fn metadata_str<'a>(obj: &'a Json, key: &str) -> &'a str {
    obj.get(key).and_then(Json::as_str).unwrap_or_default()
}

fn metadata_flag(obj: &Json, key: &str) -> bool {
    match obj.get(key) {
        Some(Json::String(s)) => s == "1" || s.eq_ignore_ascii_case("true"),
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_i64() == Some(1),
        _ => false,
    }
}

fn metadata_feature(
    entry: &Json,
    path: &Path,
    at: &str,
    state: bool,
) -> Result<FeatureDescription> {
    let name = entry
        .get("name")
        .and_then(Json::as_str)
        .ok_or_else(|| invalid(path, format!("{at}: schema entry without a name")))?;
    let at = format!("{at} `{name}`");
    let kind_name = entry
        .get("type")
        .and_then(Json::as_str)
        .unwrap_or("MultiArray");
    let array = || -> Result<ArrayFeature> {
        let dtype = match entry.get("dataType").and_then(Json::as_str) {
            None | Some("") => None,
            Some(d) => Some(
                dtype_from_metadata_name(d)
                    .ok_or_else(|| invalid(path, format!("{at}: unknown dataType `{d}`")))?,
            ),
        };
        let shape = match entry.get("shape") {
            None => Vec::new(),
            Some(s) => json_list(s).as_ref().and_then(ints).ok_or_else(|| {
                invalid(path, format!("{at}: shape {s} is not a list of integers"))
            })?,
        };
        let enumerated = entry.get("enumeratedShapes").and_then(json_list);
        let range = entry.get("shapeRange").and_then(json_list);
        let flexibility = if let Some(e) = enumerated {
            let shapes = e
                .as_array()
                .and_then(|a| a.iter().map(ints).collect::<Option<Vec<_>>>())
                .ok_or_else(|| invalid(path, format!("{at}: malformed enumeratedShapes")))?;
            ShapeFlexibility::Enumerated(shapes)
        } else if let (true, Some(r)) = (metadata_flag(entry, "hasShapeFlexibility"), range) {
            let ranges = r
                .as_array()
                .and_then(|a| {
                    a.iter()
                        .map(|pair| {
                            let p = ints(pair)?;
                            match p.as_slice() {
                                [lo, hi] => Some(DimRange {
                                    lower: u64::try_from(*lo).ok()?,
                                    upper: u64::try_from(*hi).ok(),
                                }),
                                _ => None,
                            }
                        })
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| invalid(path, format!("{at}: malformed shapeRange")))?;
            ShapeFlexibility::Range(ranges)
        } else if metadata_flag(entry, "hasShapeFlexibility") {
            let text = metadata_str(entry, "shapeFlexibility");
            flexibility_from_text(text).ok_or_else(|| {
                invalid(path, format!("{at}: cannot read shapeFlexibility `{text}`"))
            })?
        } else {
            ShapeFlexibility::Fixed
        };
        Ok(ArrayFeature {
            dtype,
            shape,
            flexibility,
        })
    };
    let kind = if state || kind_name == "State" {
        FeatureKind::State(array()?)
    } else {
        match kind_name {
            "MultiArray" => FeatureKind::Array(array()?),
            "Int64" => FeatureKind::Int64,
            "Double" => FeatureKind::Double,
            "String" => FeatureKind::String,
            "Dictionary" => FeatureKind::Dictionary,
            "Sequence" => FeatureKind::Sequence,
            "Image" => FeatureKind::Image {
                width: entry
                    .get("width")
                    .and_then(Json::as_i64)
                    .unwrap_or_default(),
                height: entry
                    .get("height")
                    .and_then(Json::as_i64)
                    .unwrap_or_default(),
                color_space: metadata_str(entry, "colorspace").to_string(),
            },
            other => {
                return Err(invalid(
                    path,
                    format!("{at}: unknown feature type `{other}`"),
                ))
            }
        }
    };
    Ok(FeatureDescription {
        name: name.to_string(),
        short_description: metadata_str(entry, "shortDescription").to_string(),
        kind,
        optional: metadata_flag(entry, "isOptional"),
    })
}

fn metadata_schema(
    obj: &Json,
    key: &str,
    path: &Path,
    at: &str,
) -> Result<Vec<FeatureDescription>> {
    match obj.get(key) {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(entries)) => entries
            .iter()
            .map(|e| metadata_feature(e, path, &format!("{at}{key}"), key == "stateSchema"))
            .collect(),
        Some(_) => Err(invalid(path, format!("{at}{key} is not an array"))),
    }
}

fn metadata_function(obj: &Json, name: &str, path: &Path, at: &str) -> Result<FunctionDescription> {
    Ok(FunctionDescription {
        name: name.to_string(),
        inputs: metadata_schema(obj, "inputSchema", path, at)?,
        outputs: metadata_schema(obj, "outputSchema", path, at)?,
        states: metadata_schema(obj, "stateSchema", path, at)?,
    })
}

/// Reads a compiled bundle's `metadata.json` (a JSON array holding one object) for the given program.
pub fn from_metadata_json(text: &str, program: &Program, path: &Path) -> Result<ModelDescription> {
    let json: Json = serde_json::from_str(text).map_err(|source| FormatError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    let obj = match &json {
        Json::Array(a) => a.first(),
        Json::Object(_) => Some(&json),
        _ => None,
    }
    .filter(|o| o.is_object())
    .ok_or_else(|| invalid(path, "expected an array holding one object".into()))?;
    let user_defined = match obj.get("userDefinedMetadata") {
        Some(Json::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string());
                (k.clone(), v)
            })
            .collect(),
        _ => BTreeMap::new(),
    };
    let metadata = Metadata {
        short_description: metadata_str(obj, "shortDescription").to_string(),
        version: metadata_str(obj, "version").to_string(),
        author: metadata_str(obj, "author").to_string(),
        license: metadata_str(obj, "license").to_string(),
        user_defined,
    };
    let spec_version = obj
        .get("specificationVersion")
        .and_then(Json::as_i64)
        .and_then(|v| i32::try_from(v).ok());
    let listed = obj
        .get("functions")
        .and_then(Json::as_array)
        .filter(|f| !f.is_empty());
    let (functions, default_function) = match listed {
        Some(list) => {
            let functions =
                list.iter()
                    .map(|f| {
                        let name = f.get("name").and_then(Json::as_str).ok_or_else(|| {
                            invalid(path, "functions entry without a name".into())
                        })?;
                        metadata_function(f, name, path, &format!("function `{name}` "))
                    })
                    .collect::<Result<Vec<_>>>()?;
            let default = match obj.get("defaultFunctionName").and_then(Json::as_str) {
                Some(d) if !d.is_empty() => d.to_string(),
                _ => functions
                    .first()
                    .map(|f| f.name.clone())
                    .unwrap_or_default(),
            };
            (functions, default)
        }
        None => {
            let name = only_function_name(program, path)?;
            (vec![metadata_function(obj, &name, path, "")?], name)
        }
    };
    let out = ModelDescription {
        spec_version,
        functions,
        default_function,
        metadata,
    };
    check_against_program(&out, program, path)?;
    Ok(out)
}
