//! Load-time constants: immediate values and weight blobs turned into candle tensors once, and the host-side
//! arrays that `constexpr_*` ops decode from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::blob::{Blob, WeightStore};
use candle_coreml_format::mil::{BlobRef, DataType, TensorData, Value, ValueData, ValueType};
use half::{bf16, f16};

use crate::dtype::storage_dtype;
use crate::error::{program_error, Result};
use crate::kernels::arena::WeightArena;
use crate::kernels::PackedMatrix;

/// A compile-time value as the executor holds it.
#[derive(Debug, Clone)]
pub enum ConstValue {
    /// A tensor in its storage dtype (see [`crate::dtype`]), with its MIL element type.
    Tensor {
        /// The values.
        tensor: Tensor,
        /// The MIL element type.
        dtype: DataType,
    },
    /// A string scalar (op modes, dtype names, einsum equations).
    Str(String),
    /// A `conv`/`linear` weight kept in a matrix kernel's layout (palettised, or dense fp16); any other use sees
    /// it expanded to a dense tensor.
    Packed {
        /// The packed matrix (`shape[0]` rows, the product of the other dims as columns).
        matrix: Arc<PackedMatrix>,
        /// The declared shape of the dense weight.
        shape: Vec<usize>,
        /// The MIL element type of the dense weight.
        dtype: DataType,
    },
}

impl ConstValue {
    /// The constant as a tensor on `device` (packed weights are expanded); `None` for strings.
    pub fn to_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        Ok(match self {
            ConstValue::Tensor { tensor, .. } => Some(tensor.clone()),
            ConstValue::Str(_) => None,
            ConstValue::Packed {
                matrix,
                shape,
                dtype,
            } => Some(float_tensor(matrix.to_dense(), shape, *dtype, device)?),
        })
    }
}

/// Tensors materialised from weight blobs, shared by every function of a model (keyed by blob reference), and
/// the decoded outputs of `constexpr_*` ops whose inputs are all blobs (keyed by op type, inputs and attributes),
/// dense or packed. Packed weights live in the cache's [`WeightArena`].
#[derive(Default)]
pub struct ConstCache {
    blobs: Mutex<HashMap<BlobRef, Tensor>>,
    derived: Mutex<HashMap<String, Tensor>>,
    packed: Mutex<HashMap<String, Arc<PackedMatrix>>>,
    arena: WeightArena,
}

impl ConstCache {
    /// The cached tensor for a blob, or `make()`'s result, stored for next time.
    pub fn blob_or_insert(
        &self,
        key: &BlobRef,
        make: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        if let Some(t) = self.blobs.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(t);
        }
        let t = make()?;
        if let Ok(mut m) = self.blobs.lock() {
            m.insert(key.clone(), t.clone());
        }
        Ok(t)
    }

    /// The cached decoded constant for `key`, or `make()`'s result, stored for next time.
    pub fn derived_or_insert(
        &self,
        key: &str,
        make: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Tensor> {
        if let Some(t) = self.derived.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(t);
        }
        let t = make()?;
        if let Ok(mut m) = self.derived.lock() {
            m.insert(key.to_string(), t.clone());
        }
        Ok(t)
    }

    /// The cached packed matrix for `key`, or `make()`'s result (`None`: cannot be packed), stored for next time.
    pub fn packed_or_insert(
        &self,
        key: &str,
        make: impl FnOnce(&WeightArena) -> Result<Option<PackedMatrix>>,
    ) -> Result<Option<Arc<PackedMatrix>>> {
        if let Some(m) = self.packed.lock().ok().and_then(|m| m.get(key).cloned()) {
            return Ok(Some(m));
        }
        let Some(matrix) = make(&self.arena)? else {
            return Ok(None);
        };
        let matrix = Arc::new(matrix);
        if let Ok(mut m) = self.packed.lock() {
            m.insert(key.to_string(), matrix.clone());
        }
        Ok(Some(matrix))
    }

    /// Number of distinct cached constants and their total size in bytes.
    pub fn stats(&self) -> (usize, usize) {
        let size = |t: &Tensor| t.elem_count() * t.dtype().size_in_bytes();
        let mut count = 0;
        let mut bytes = 0;
        if let Ok(m) = self.blobs.lock() {
            count += m.len();
            bytes += m.values().map(size).sum::<usize>();
        }
        if let Ok(m) = self.derived.lock() {
            count += m.len();
            bytes += m.values().map(size).sum::<usize>();
        }
        if let Ok(m) = self.packed.lock() {
            count += m.len();
            bytes += m.values().map(|p| p.byte_size()).sum::<usize>();
        }
        (count, bytes)
    }
}

/// The fixed shape of a constant's type, as `usize`.
pub fn value_shape(ty: &ValueType, what: &str) -> Result<Vec<usize>> {
    ty.fixed_shape()
        .map(|s| s.into_iter().map(|d| d as usize).collect())
        .ok_or_else(|| program_error(format!("constant `{what}` has no fixed tensor shape")))
}

fn check_count(got: usize, shape: &[usize], what: &str) -> Result<()> {
    let want = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if want != Some(got) {
        return Err(program_error(format!(
            "constant `{what}` has {got} elements but its type has shape {shape:?}"
        )));
    }
    Ok(())
}

/// Turns a compile-time value into a [`ConstValue`] on `device`; blobs are read from `weights` through `cache`.
pub fn materialise(
    value: &Value,
    weights: Option<&WeightStore>,
    cache: &ConstCache,
    device: &Device,
    what: &str,
) -> Result<ConstValue> {
    let dtype = value.ty.dtype().ok_or_else(|| {
        program_error(format!(
            "constant `{what}`: lists, tuples and dictionaries are not supported"
        ))
    })?;
    if dtype == DataType::String {
        return value
            .as_str()
            .map(|s| ConstValue::Str(s.to_string()))
            .ok_or_else(|| {
                program_error(format!(
                    "constant `{what}`: only scalar strings are supported"
                ))
            });
    }
    let shape = value_shape(&value.ty, what)?;
    let storage = storage_dtype(dtype)
        .ok_or_else(|| program_error(format!("constant `{what}`: type {dtype}")))?;
    let tensor = match &value.data {
        ValueData::Tensor(data) => immediate_tensor(data, &shape, storage, device, what)?,
        ValueData::Blob(blob_ref) => cache.blob_or_insert(blob_ref, || {
            let weights = weights.ok_or_else(|| {
                program_error(format!(
                    "constant `{what}` references a weight blob but the model has no weight file"
                ))
            })?;
            let blob = weights.resolve(blob_ref)?;
            blob_tensor(&blob, &shape, storage, device, what)
        })?,
        _ => {
            return Err(program_error(format!(
                "constant `{what}`: lists, tuples and dictionaries are not supported"
            )))
        }
    };
    Ok(ConstValue::Tensor { tensor, dtype })
}

fn immediate_tensor(
    data: &TensorData,
    shape: &[usize],
    storage: DType,
    device: &Device,
    what: &str,
) -> Result<Tensor> {
    check_count(data.len(), shape, what)?;
    let t = match data {
        TensorData::Float(v) => Tensor::from_slice(v, shape, device)?,
        TensorData::Int(v) => Tensor::from_slice(v, shape, device)?,
        TensorData::Bool(v) => {
            let bytes: Vec<u8> = v.iter().map(|&b| u8::from(b)).collect();
            Tensor::from_vec(bytes, shape, device)?
        }
        TensorData::Str(_) => {
            return Err(program_error(format!(
                "constant `{what}`: string tensors are not supported"
            )))
        }
    };
    Ok(t.to_dtype(storage)?)
}

fn blob_tensor(
    blob: &Blob<'_>,
    shape: &[usize],
    storage: DType,
    device: &Device,
    what: &str,
) -> Result<Tensor> {
    let t = match blob.dtype {
        DataType::Float16 => slice_tensor::<f16>(blob.as_f16()?, shape, device, what)?,
        DataType::BFloat16 => slice_tensor::<bf16>(blob.as_bf16()?, shape, device, what)?,
        DataType::Float32 => slice_tensor::<f32>(blob.as_f32()?, shape, device, what)?,
        DataType::Int32 => slice_tensor::<i32>(blob.as_i32()?, shape, device, what)?,
        DataType::UInt32 => slice_tensor::<u32>(blob.as_u32()?, shape, device, what)?,
        _ => {
            let ints = blob_ints(blob)?;
            check_count(ints.len(), shape, what)?;
            Tensor::from_vec(ints, shape, device)?
        }
    };
    Ok(t.to_dtype(storage)?)
}

fn slice_tensor<T: candle_core::WithDType>(
    v: &[T],
    shape: &[usize],
    device: &Device,
    what: &str,
) -> Result<Tensor> {
    check_count(v.len(), shape, what)?;
    Ok(Tensor::from_slice(v, shape, device)?)
}

/// Every element of an integer blob (any width, signed or not) widened to `i64`.
fn blob_ints(blob: &Blob<'_>) -> Result<Vec<i64>> {
    Ok(match blob.dtype {
        DataType::Int8 => blob.as_i8()?.iter().map(|&x| x as i64).collect(),
        DataType::UInt8 => blob.as_u8()?.iter().map(|&x| x as i64).collect(),
        DataType::Int16 => blob.as_i16()?.iter().map(|&x| x as i64).collect(),
        DataType::UInt16 => blob.as_u16()?.iter().map(|&x| x as i64).collect(),
        DataType::Int32 => blob.as_i32()?.iter().map(|&x| x as i64).collect(),
        DataType::UInt32 => blob.as_u32()?.iter().map(|&x| x as i64).collect(),
        DataType::Int4 => blob.unpack_int4()?.iter().map(|&x| x as i64).collect(),
        DataType::UInt1 | DataType::UInt2 | DataType::UInt3 | DataType::UInt4 | DataType::UInt6 => {
            blob.unpack_unsigned()?.iter().map(|&x| x as i64).collect()
        }
        other => {
            return Err(program_error(format!(
                "blob of type {other} is not an integer blob"
            )))
        }
    })
}

/// A constant decoded to host memory for `constexpr_*` evaluation.
#[derive(Debug, Clone)]
pub struct HostArray {
    /// MIL element type.
    pub dtype: DataType,
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values.
    pub data: HostData,
}

/// Values of a [`HostArray`]: floats widened to `f32`, integers of up to 8 bits kept narrow.
#[derive(Debug, Clone)]
pub enum HostData {
    /// Float values.
    Float(Vec<f32>),
    /// Integers of at most 8 bits (`uint1`..`uint8`, `int4`, `int8`), widened to `i16`.
    Small(Vec<i16>),
    /// Wider integers and bools.
    Int(Vec<i64>),
}

impl HostData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostData::Float(v) => v.len(),
            HostData::Small(v) => v.len(),
            HostData::Int(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as `f32`.
    pub fn get_f32(&self, i: usize) -> f32 {
        match self {
            HostData::Float(v) => v.get(i).copied().unwrap_or(0.0),
            HostData::Small(v) => v.get(i).map(|&x| x as f32).unwrap_or(0.0),
            HostData::Int(v) => v.get(i).map(|&x| x as f32).unwrap_or(0.0),
        }
    }

    /// Element `i` as `i64`.
    pub fn get_i64(&self, i: usize) -> i64 {
        match self {
            HostData::Float(v) => v.get(i).map(|&x| x as i64).unwrap_or(0),
            HostData::Small(v) => v.get(i).map(|&x| x as i64).unwrap_or(0),
            HostData::Int(v) => v.get(i).copied().unwrap_or(0),
        }
    }
}

/// Decodes a compile-time value to host memory (blobs read directly, sub-byte types unpacked).
pub fn host_from_value(
    value: &Value,
    weights: Option<&WeightStore>,
    what: &str,
) -> Result<HostArray> {
    let dtype = value
        .ty
        .dtype()
        .ok_or_else(|| program_error(format!("constant `{what}` is not a tensor")))?;
    let shape = value_shape(&value.ty, what)?;
    let data = match &value.data {
        ValueData::Tensor(TensorData::Float(v)) => {
            HostData::Float(v.iter().map(|&x| x as f32).collect())
        }
        ValueData::Tensor(TensorData::Int(v)) => {
            if dtype.bit_width() <= 8 {
                HostData::Small(v.iter().map(|&x| x as i16).collect())
            } else {
                HostData::Int(v.clone())
            }
        }
        ValueData::Tensor(TensorData::Bool(v)) => {
            HostData::Int(v.iter().map(|&b| i64::from(b)).collect())
        }
        ValueData::Blob(blob_ref) => {
            let weights = weights.ok_or_else(|| {
                program_error(format!(
                    "constant `{what}` references a weight blob but the model has no weight file"
                ))
            })?;
            let blob = weights.resolve(blob_ref)?;
            match blob.dtype {
                DataType::Float16 => {
                    HostData::Float(blob.as_f16()?.iter().map(|x| x.to_f32()).collect())
                }
                DataType::BFloat16 => {
                    HostData::Float(blob.as_bf16()?.iter().map(|x| x.to_f32()).collect())
                }
                DataType::Float32 => HostData::Float(blob.as_f32()?.to_vec()),
                DataType::UInt8 => {
                    HostData::Small(blob.as_u8()?.iter().map(|&x| x as i16).collect())
                }
                DataType::Int8 => {
                    HostData::Small(blob.as_i8()?.iter().map(|&x| x as i16).collect())
                }
                DataType::Int4 => {
                    HostData::Small(blob.unpack_int4()?.iter().map(|&x| x as i16).collect())
                }
                DataType::UInt1
                | DataType::UInt2
                | DataType::UInt3
                | DataType::UInt4
                | DataType::UInt6 => {
                    HostData::Small(blob.unpack_unsigned()?.iter().map(|&x| x as i16).collect())
                }
                _ => HostData::Int(blob_ints(&blob)?),
            }
        }
        _ => return Err(program_error(format!("constant `{what}` is not a tensor"))),
    };
    check_count(data.len(), &shape, what)?;
    Ok(HostArray { dtype, shape, data })
}

/// Copies a constant tensor back to host memory.
pub fn host_from_tensor(tensor: &Tensor, dtype: DataType) -> Result<HostArray> {
    let shape = tensor.dims().to_vec();
    let flat = tensor.flatten_all()?;
    let data = if dtype.is_float() {
        HostData::Float(flat.to_dtype(DType::F32)?.to_vec1::<f32>()?)
    } else {
        HostData::Int(flat.to_dtype(DType::I64)?.to_vec1::<i64>()?)
    };
    Ok(HostArray { dtype, shape, data })
}

/// Builds a float tensor of MIL type `dtype` (storage dtype) from `f32` values.
pub fn float_tensor(
    values: Vec<f32>,
    shape: &[usize],
    dtype: DataType,
    device: &Device,
) -> Result<Tensor> {
    let storage = storage_dtype(dtype).unwrap_or(DType::F32);
    let t = if storage == DType::F16 {
        let halves: Vec<f16> = values.iter().map(|&x| f16::from_f32(x)).collect();
        Tensor::from_vec(halves, shape, device)?
    } else {
        Tensor::from_vec(values, shape, device)?.to_dtype(storage)?
    };
    Ok(t)
}
