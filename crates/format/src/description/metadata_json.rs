//! Descriptions from the `metadata.json` of a compiled `.mlmodelc` bundle.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value as Json;

use crate::error::{FormatError, Result};
use crate::mil::{DataType, Program};

use super::{
    check_against_program, invalid, only_function_name, ArrayFeature, DimRange, FeatureDescription,
    FeatureKind, FunctionDescription, Metadata, ModelDescription, ShapeFlexibility,
};

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
