//! Descriptions from the protobuf `ModelDescription` of `.mlpackage` and `.mlmodel` files.

use std::path::Path;

use crate::error::Result;
use crate::mil::{DataType, Program};
use crate::proto::spec as pb;

use super::{
    check_against_program, invalid, only_function_name, ArrayFeature, DimRange, FeatureDescription,
    FeatureKind, FunctionDescription, Metadata, ModelDescription, ShapeFlexibility,
};

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
