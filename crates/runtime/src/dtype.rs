//! How MIL element types are held in candle tensors.
//!
//! Inside the executor every float type keeps its own precision (fp16 stays fp16), every integer type is held as
//! `I64` and `bool` as `U8` (0 or 1); the program's declared types say what the values are. At the API boundary
//! values are converted to the candle type closest to the declared one ([`interface_dtype`]).

use candle_core::{DType, Tensor};
use candle_coreml_format::mil::DataType;

use crate::error::{Result, RuntimeError};

/// The candle dtype used inside the executor for values of MIL type `dtype`; `None` for strings.
pub fn storage_dtype(dtype: DataType) -> Option<DType> {
    Some(match dtype {
        DataType::String => return None,
        DataType::Float16 => DType::F16,
        DataType::Float32 | DataType::Float8E4M3FN | DataType::Float8E5M2 => DType::F32,
        DataType::Float64 => DType::F64,
        DataType::BFloat16 => DType::BF16,
        DataType::Bool => DType::U8,
        _ => DType::I64,
    })
}

/// The candle dtype used for inputs, outputs and states of MIL type `dtype` at the API boundary.
pub fn interface_dtype(dtype: DataType) -> Option<DType> {
    Some(match dtype {
        DataType::String => return None,
        DataType::Float16 => DType::F16,
        DataType::Float32 | DataType::Float8E4M3FN | DataType::Float8E5M2 => DType::F32,
        DataType::Float64 => DType::F64,
        DataType::BFloat16 => DType::BF16,
        DataType::Bool
        | DataType::UInt1
        | DataType::UInt2
        | DataType::UInt3
        | DataType::UInt4
        | DataType::UInt6
        | DataType::UInt8 => DType::U8,
        DataType::Int4 | DataType::Int8 | DataType::Int16 => DType::I16,
        DataType::Int32 | DataType::UInt16 => DType::I32,
        DataType::UInt32 => DType::U32,
        DataType::Int64 | DataType::UInt64 => DType::I64,
    })
}

/// The inclusive value range of an integer MIL type (`None` for floats, bool and 64-bit types).
pub fn integer_range(dtype: DataType) -> Option<(i64, i64)> {
    Some(match dtype {
        DataType::Int4 => (-8, 7),
        DataType::Int8 => (i8::MIN as i64, i8::MAX as i64),
        DataType::Int16 => (i16::MIN as i64, i16::MAX as i64),
        DataType::Int32 => (i32::MIN as i64, i32::MAX as i64),
        DataType::UInt1 => (0, 1),
        DataType::UInt2 => (0, 3),
        DataType::UInt3 => (0, 7),
        DataType::UInt4 => (0, 15),
        DataType::UInt6 => (0, 63),
        DataType::UInt8 => (0, u8::MAX as i64),
        DataType::UInt16 => (0, u16::MAX as i64),
        DataType::UInt32 => (0, u32::MAX as i64),
        _ => return None,
    })
}

/// True for candle's integer dtypes.
pub fn is_int_dtype(dtype: DType) -> bool {
    matches!(
        dtype,
        DType::U8 | DType::U32 | DType::I16 | DType::I32 | DType::I64
    )
}

/// Converts a caller's tensor to the executor representation of MIL type `declared`.
///
/// Integer and bool values are range-checked; a float tensor is refused for an integer or bool declaration.
/// `what` names the input or state in errors.
pub fn to_storage(t: &Tensor, declared: DataType, what: &str) -> Result<Tensor> {
    let err = |message: String| RuntimeError::Input {
        name: what.to_string(),
        message,
    };
    let target = storage_dtype(declared).ok_or_else(|| {
        err(format!(
            "declared type {declared} cannot be passed as a tensor"
        ))
    })?;
    if declared.is_float() {
        return Ok(t.to_dtype(target)?);
    }
    if !is_int_dtype(t.dtype()) {
        return Err(err(format!(
            "declared {declared}, got a {:?} tensor (integer values expected)",
            t.dtype()
        )));
    }
    let as_i64 = t.to_dtype(DType::I64)?;
    let range = if declared == DataType::Bool {
        Some((0, 1))
    } else {
        integer_range(declared)
    };
    if let Some((lo, hi)) = range {
        if as_i64.elem_count() > 0 {
            let flat = as_i64.flatten_all()?;
            let min = flat.min(0)?.to_scalar::<i64>()?;
            let max = flat.max(0)?.to_scalar::<i64>()?;
            if min < lo || max > hi {
                return Err(err(format!(
                    "values {min}..={max} do not fit declared type {declared} ({lo}..={hi})"
                )));
            }
        }
    }
    Ok(as_i64.to_dtype(target)?)
}

/// Converts an executor tensor of MIL type `declared` to its API-boundary dtype.
pub fn to_interface(t: &Tensor, declared: DataType) -> Result<Tensor> {
    match interface_dtype(declared) {
        Some(d) if d != t.dtype() => Ok(t.to_dtype(d)?),
        _ => Ok(t.clone()),
    }
}
