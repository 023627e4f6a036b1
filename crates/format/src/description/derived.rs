//! Descriptions derived from a program's function signatures (compiled bundles without `metadata.json`).

use std::collections::BTreeMap;

use crate::mil::{Dim, Function, Program, TensorData, Value, ValueData, ValueType};

use super::{
    ArrayFeature, DimRange, FeatureDescription, FeatureKind, FunctionDescription, Metadata,
    ModelDescription, ShapeFlexibility,
};

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
