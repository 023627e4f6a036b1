//! Weights kept in the matrix kernels' layout: which constants qualify (used only as the weight of a `linear` or a
//! pointwise `conv`), and packing palettised (`constexpr_lut_to_dense`) and dense fp16 weights at load.

use std::collections::{HashMap, HashSet};

use candle_coreml_format::mil::{
    Binding, DataType, Dim, Function, Operation, TensorData, Value, ValueData, ValueType,
};

use crate::consts::{host_from_value, ConstValue, HostData};
use crate::error::{program_error, Result, RuntimeError};
use crate::kernels::f16_matrix::F16Matrix;
use crate::kernels::lut_matrix::{IndexSource, LutMatrix};
use crate::kernels::quant_matrix::{QuantMatrix, QuantParams};
use crate::kernels::PackedMatrix;
use crate::ops::constexpr::{lut_packing, quant_packing};
use crate::ops::{Arg, Operand};

use super::{ConstSource, Lowering};

/// Names of the values `function` uses only as the `weight` of `linear` ops or of `conv` ops that are plain
/// matrix products (see [`conv_is_pointwise`]).
pub(super) fn weight_only_values(function: &Function) -> HashSet<String> {
    let ops = &function.block.operations;
    let consts: HashMap<&str, &Value> = ops
        .iter()
        .filter(|op| op.op_type == "const")
        .filter_map(|op| Some((op.outputs.first()?.name.as_str(), op.constant("val")?)))
        .collect();
    let types: HashMap<&str, &ValueType> = ops
        .iter()
        .flat_map(|op| op.outputs.iter().map(|o| (o.name.as_str(), &o.ty)))
        .collect();
    let mut weights = HashSet::new();
    let mut others: HashSet<&str> = function.block.outputs.iter().map(String::as_str).collect();
    for op in ops {
        for (param, bindings) in &op.inputs {
            for binding in bindings {
                if let Binding::Name(n) = binding {
                    let matrix_weight = param == "weight"
                        && match op.op_type.as_str() {
                            "linear" => true,
                            "conv" => types
                                .get(n.as_str())
                                .is_some_and(|ty| conv_is_pointwise(op, ty, &consts)),
                            _ => false,
                        };
                    if matrix_weight {
                        weights.insert(n.clone());
                    } else {
                        others.insert(n);
                    }
                }
            }
        }
    }
    weights.retain(|n| !others.contains(n.as_str()));
    weights
}

/// True when `conv` with a weight of type `weight` is a matrix product: 1×1 kernel, one group, unit strides, no
/// padding (constant parameters only).
fn conv_is_pointwise(op: &Operation, weight: &ValueType, consts: &HashMap<&str, &Value>) -> bool {
    let constant = |p: &str| -> Option<&Value> {
        match op.inputs.get(p).map(Vec::as_slice) {
            Some([Binding::Value(v)]) => Some(v),
            Some([Binding::Name(n)]) => consts.get(n.as_str()).copied(),
            _ => op.attributes.get(p),
        }
    };
    let ints = |p: &str| -> Option<Vec<i64>> {
        match &constant(p)?.data {
            ValueData::Tensor(TensorData::Int(v)) => Some(v.clone()),
            _ => None,
        }
    };
    let given = |p: &str| op.inputs.contains_key(p) || op.attributes.contains_key(p);
    let unit_kernel = weight
        .dims()
        .is_some_and(|d| d.len() >= 3 && d[2..].iter().all(|k| *k == Dim::Fixed(1)));
    let all =
        |p: &str, want: i64| !given(p) || ints(p).is_some_and(|v| v.iter().all(|&x| x == want));
    let no_padding = match constant("pad_type").and_then(Value::as_str) {
        None => !given("pad_type") && all("pad", 0),
        Some("valid" | "same" | "same_lower") => true,
        Some("custom") => all("pad", 0),
        Some(_) => false,
    };
    unit_kernel && all("groups", 1) && all("strides", 1) && no_padding
}

/// The fixed shape of a constant's type (empty when not fixed).
fn value_shape_of(value: &Value) -> Vec<usize> {
    value
        .ty
        .fixed_shape()
        .map(|s| s.into_iter().map(|d| d as usize).collect())
        .unwrap_or_default()
}

/// A cache key naming a constant: its blob reference, or its type and immediate data.
pub(super) fn value_key(value: &Value) -> String {
    match &value.data {
        ValueData::Blob(b) => format!("@{}:{}", b.path, b.offset),
        other => format!("{:?}:{other:?}", value.ty),
    }
}

impl<'f> Lowering<'f> {
    /// A `constexpr_lut_to_dense` whose output is only a `conv`/`linear` weight, as a packed matrix; `None` when
    /// its parameters are not plain constants or its tables do not serve whole rows.
    /// The plain constant (const op, immediate or blob) bound to parameter `p` of `op`; `None` when `p` is absent
    /// or computed.
    fn param_value(&self, op: &'f Operation, op_name: &str, p: &str) -> Result<Option<&'f Value>> {
        let binding = match op.inputs.get(p).map(Vec::as_slice) {
            Some([b]) => Some(b),
            Some(_) => return Ok(None),
            None => None,
        };
        Ok(
            match self.const_source(binding, op.attributes.get(p), &format!("{op_name}.{p}"))? {
                Some(ConstSource::Value(v)) => Some(v),
                _ => None,
            },
        )
    }

    /// The packed matrix cached under `key` (made by `make` on first use) as the constant for `op`'s output of
    /// dense `shape` and `dtype`; `None` when `make` declines. Errors name `op`.
    fn packed_constant(
        &self,
        op: &Operation,
        op_name: &str,
        key: &str,
        (shape, dtype): (Vec<usize>, DataType),
        make: impl FnOnce(&crate::kernels::arena::WeightArena) -> Result<Option<PackedMatrix>>,
    ) -> Result<Option<ConstValue>> {
        let matrix = self
            .cache
            .packed_or_insert(key, make)
            .map_err(|e| RuntimeError::Op {
                op_type: op.op_type.clone(),
                op_name: op_name.to_string(),
                message: e.to_string(),
            })?;
        Ok(matrix.map(|matrix| ConstValue::Packed {
            matrix,
            shape,
            dtype,
        }))
    }

    /// An 8-bit `constexpr_affine_dequantize` / `constexpr_blockwise_shift_scale` whose output is only a
    /// `conv`/`linear` weight, as a packed quantized matrix; `None` when its parameters are not plain constants or
    /// do not fit [`QuantMatrix`]'s per-row column blocks.
    pub(super) fn pack_quantized(
        &self,
        op: &'f Operation,
        op_name: &str,
    ) -> Result<Option<ConstValue>> {
        let Some(out) = op.outputs.first() else {
            return Ok(None);
        };
        let (Some(dtype), Some(out_shape)) = (out.ty.dtype(), out.ty.fixed_shape()) else {
            return Ok(None);
        };
        if !matches!(dtype, DataType::Float16 | DataType::Float32) {
            return Ok(None);
        }
        let out_shape: Vec<usize> = out_shape.into_iter().map(|d| d as usize).collect();
        let data_param = if op.op_type == "constexpr_affine_dequantize" {
            "quantized_data"
        } else {
            "data"
        };
        let Some(data_value) = self.param_value(op, op_name, data_param)? else {
            return Ok(None);
        };
        let Some(data_type) = data_value.ty.dtype() else {
            return Ok(None);
        };
        let mut params = HashMap::new();
        let mut key = format!("packed|{}|{}", op.op_type, value_key(data_value));
        for p in ["scale", "zero_point", "offset", "axis"] {
            let given = op.inputs.contains_key(p) || op.attributes.contains_key(p);
            match self.param_value(op, op_name, p)? {
                Some(v) => {
                    key.push_str(&format!("|{p}={}", value_key(v)));
                    params.insert(
                        p.to_string(),
                        host_from_value(v, self.weights, &format!("{op_name}.{p}"))?,
                    );
                }
                None if given => return Ok(None),
                None => {}
            }
        }
        let Some(packing) = quant_packing(
            &op.op_type,
            data_type,
            &value_shape_of(data_value),
            &params,
            &out_shape,
        ) else {
            return Ok(None);
        };
        self.packed_constant(op, op_name, &key, (out_shape, dtype), |arena| {
            let quant = QuantParams {
                signed: packing.signed,
                block: packing.block,
                scales: packing.scales.clone(),
                offsets: packing.offsets.clone(),
                round_f16: dtype == DataType::Float16,
            };
            let pack = |bytes: &[u8]| {
                QuantMatrix::new(packing.rows, packing.cols, bytes, quant.clone(), arena)
                    .map(|m| Some(PackedMatrix::Quant(m)))
            };
            if let (ValueData::Blob(b), Some(w)) = (&data_value.data, self.weights) {
                return pack(w.resolve(b)?.bytes());
            }
            let host =
                host_from_value(data_value, self.weights, &format!("{op_name}.{data_param}"))?;
            let bytes: Vec<u8> = (0..host.data.len())
                .map(|i| host.data.get_i64(i) as u8)
                .collect();
            pack(&bytes)
        })
    }

    pub(super) fn pack_lut(&self, op: &'f Operation, op_name: &str) -> Result<Option<ConstValue>> {
        let Some(out) = op.outputs.first() else {
            return Ok(None);
        };
        let (Some(dtype), Some(out_shape)) = (out.ty.dtype(), out.ty.fixed_shape()) else {
            return Ok(None);
        };
        let out_shape: Vec<usize> = out_shape.into_iter().map(|d| d as usize).collect();
        let source = |p: &str| self.param_value(op, op_name, p);
        let (Some(lut_value), Some(index_value)) = (source("lut")?, source("indices")?) else {
            return Ok(None);
        };
        let shape_value = source("shape")?;
        let has_shape = op.inputs.contains_key("shape") || op.attributes.contains_key("shape");
        if has_shape && shape_value.is_none() {
            return Ok(None);
        }
        let lut = host_from_value(lut_value, self.weights, &format!("{op_name}.lut"))?;
        let shape = shape_value
            .map(|v| host_from_value(v, self.weights, &format!("{op_name}.shape")))
            .transpose()?;
        let index_shape = value_shape_of(index_value);
        let Some(packing) = lut_packing(&lut, &index_shape, shape.as_ref(), &out_shape) else {
            return Ok(None);
        };
        let key = format!(
            "packed|{}|{}|{}",
            value_key(lut_value),
            value_key(index_value),
            shape_value.map(value_key).unwrap_or_default()
        );
        self.packed_constant(op, op_name, &key, (out_shape, dtype), |arena| {
            let pack = |source: IndexSource<'_>| {
                LutMatrix::new(
                    packing.rows,
                    packing.cols,
                    packing.bits,
                    source,
                    &packing.tables,
                    packing.rows_per_table,
                    arena,
                )
                .map(PackedMatrix::Lut)
            };
            let blob = match (&index_value.data, self.weights) {
                (ValueData::Blob(b), Some(w)) => Some(w.resolve(b)?),
                _ => None,
            };
            // Blobs of the palette's width (or iOS16 byte-packed indices) are copied as they are.
            if let Some(blob) = blob.filter(|b| has_shape || b.dtype.bit_width() == packing.bits) {
                return pack(IndexSource::Packed {
                    bytes: blob.bytes(),
                    bits: packing.bits,
                })
                .map(Some);
            }
            let host = host_from_value(index_value, self.weights, &format!("{op_name}.indices"))?;
            let values: Vec<i16> = match &host.data {
                HostData::Small(v) => v.clone(),
                HostData::Int(v) => v.iter().map(|&i| i.clamp(-1, 256) as i16).collect(),
                HostData::Float(_) => return Ok(None),
            };
            if has_shape {
                let bytes: Vec<u8> = values.iter().map(|&v| v as u8).collect();
                return pack(IndexSource::Packed {
                    bytes: &bytes,
                    bits: packing.bits,
                })
                .map(Some);
            }
            pack(IndexSource::Values(&values)).map(Some)
        })
    }

    /// The fp16 weight blob `name`, when it is only ever a `conv`/`linear` weight (of rank 2 or more), as a
    /// dense fp16 matrix in kernel memory; `None` for anything else.
    pub(super) fn pack_dense_weight(&self, name: &str) -> Result<Option<Arg>> {
        if !self.device.is_cpu() || !self.weight_only.contains(name) {
            return Ok(None);
        }
        let (Some((value, ty)), Some(weights)) = (self.const_values.get(name), self.weights) else {
            return Ok(None);
        };
        let ValueData::Blob(blob_ref) = &value.data else {
            return Ok(None);
        };
        let shape = value_shape_of(value);
        if value.ty.dtype() != Some(DataType::Float16) || shape.len() < 2 {
            return Ok(None);
        }
        let (rows, cols) = (shape[0], shape[1..].iter().product::<usize>());
        let key = format!("packed-f16|{}", value_key(value));
        let matrix = self.cache.packed_or_insert(&key, |arena| {
            let blob = weights.resolve(blob_ref)?;
            let values = blob.as_f16()?;
            F16Matrix::new(rows, cols, values, arena)
                .map(|m| Some(PackedMatrix::F16(m)))
                .map_err(|e| program_error(format!("weight `{name}`: {e}")))
        })?;
        Ok(matrix.map(|matrix| Arg {
            operand: Operand::Const(ConstValue::Packed {
                matrix,
                shape,
                dtype: DataType::Float16,
            }),
            ty: ty.clone(),
        }))
    }
}
