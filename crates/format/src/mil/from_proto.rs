//! Conversion of the protobuf `MILSpec.Program` (inside `.mlpackage` / `.mlmodel` files) to the IR.
//!
//! Immediate tensors are decoded by their declared dtype: `fp16`, `bf16`, `fp8*`, 8-bit, sub-byte and `uint32` data
//! usually come as raw little-endian `bytes` (sub-byte types packed LSB-first), `int32`/`int16` as `ints`, `fp32` as
//! `floats`, `fp64` as `doubles`, `int64`/`uint64` as `longInts`, `bool` as `bools`, strings as `strings`. Other
//! encodings that carry the same values losslessly are accepted too. The element count must match the type's shape.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::blob::{sign_extend_int4, unpack_bits};
use crate::error::{FormatError, Result};
use crate::mil::ir::{
    Argument, Binding, BlobRef, Block, DataType, Dim, Function, NamedType, Operation, Program,
    TensorData, Value, ValueData, ValueType,
};
use crate::proto::milspec as pb;

/// Converts a protobuf program to the IR. `path` names the file in errors.
pub fn program_from_proto(program: &pb::Program, path: &Path) -> Result<Program> {
    let cx = Cx {
        path: path.to_path_buf(),
    };
    let mut functions = BTreeMap::new();
    for (name, f) in &program.functions {
        let at = format!("function `{name}`");
        functions.insert(name.clone(), cx.function(f, &at)?);
    }
    Ok(Program {
        version: program.version.to_string(),
        functions,
        attributes: cx.value_map(&program.attributes, "program attribute")?,
    })
}

/// Converts a protobuf data type to the IR's.
pub fn data_type_from_proto(code: i32) -> Option<DataType> {
    let t = pb::DataType::try_from(code).ok()?;
    Some(match t {
        pb::DataType::UnusedType => return None,
        pb::DataType::Bool => DataType::Bool,
        pb::DataType::String => DataType::String,
        pb::DataType::Float8e4m3fn => DataType::Float8E4M3FN,
        pb::DataType::Float8e5m2 => DataType::Float8E5M2,
        pb::DataType::Float16 => DataType::Float16,
        pb::DataType::Float32 => DataType::Float32,
        pb::DataType::Float64 => DataType::Float64,
        pb::DataType::Bfloat16 => DataType::BFloat16,
        pb::DataType::Int8 => DataType::Int8,
        pb::DataType::Int16 => DataType::Int16,
        pb::DataType::Int32 => DataType::Int32,
        pb::DataType::Int64 => DataType::Int64,
        pb::DataType::Int4 => DataType::Int4,
        pb::DataType::Uint8 => DataType::UInt8,
        pb::DataType::Uint16 => DataType::UInt16,
        pb::DataType::Uint32 => DataType::UInt32,
        pb::DataType::Uint64 => DataType::UInt64,
        pb::DataType::Uint4 => DataType::UInt4,
        pb::DataType::Uint2 => DataType::UInt2,
        pb::DataType::Uint1 => DataType::UInt1,
        pb::DataType::Uint6 => DataType::UInt6,
        pb::DataType::Uint3 => DataType::UInt3,
    })
}

/// Decodes an `fp8e4m3fn` byte (bias 7, no infinities, `S.1111.111` is NaN).
pub fn fp8_e4m3fn_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((b >> 3) & 0x0F);
    let mant = f64::from(b & 0x07);
    if exp == 0x0F && b & 0x07 == 0x07 {
        return f64::NAN;
    }
    let magnitude = if exp == 0 {
        mant / 8.0 * 2f64.powi(-6)
    } else {
        (1.0 + mant / 8.0) * 2f64.powi(exp - 7)
    };
    sign * magnitude
}

/// Decodes an `fp8e5m2` byte (IEEE-style: bias 15, infinities and NaNs at exponent 31).
pub fn fp8_e5m2_to_f64(b: u8) -> f64 {
    let sign = if b & 0x80 != 0 { -1.0 } else { 1.0 };
    let exp = i32::from((b >> 2) & 0x1F);
    let mant = f64::from(b & 0x03);
    let magnitude = match exp {
        0 => mant / 4.0 * 2f64.powi(-14),
        31 if mant == 0.0 => f64::INFINITY,
        31 => return f64::NAN,
        _ => (1.0 + mant / 4.0) * 2f64.powi(exp - 15),
    };
    sign * magnitude
}

/// Inclusive value range of an integer type, as `i128` so that `uint64` fits.
fn int_range(dtype: DataType) -> (i128, i128) {
    match dtype {
        DataType::Int4 => (-8, 7),
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Int64 => (i64::MIN.into(), i64::MAX.into()),
        DataType::UInt64 => (0, u64::MAX.into()),
        d => (0, (1i128 << d.bit_width()) - 1),
    }
}

struct Cx {
    path: PathBuf,
}

impl Cx {
    fn err(&self, at: &str, message: impl std::fmt::Display) -> FormatError {
        FormatError::Invalid {
            path: self.path.clone(),
            message: format!("{at}: {message}"),
        }
    }

    fn function(&self, f: &pb::Function, at: &str) -> Result<Function> {
        let block = f.block_specializations.get(&f.opset).ok_or_else(|| {
            let mut have: Vec<&String> = f.block_specializations.keys().collect();
            have.sort();
            self.err(
                at,
                format!("no block for its opset `{}` (blocks: {have:?})", f.opset),
            )
        })?;
        Ok(Function {
            inputs: self.named_types(&f.inputs, at)?,
            opset: f.opset.clone(),
            attributes: self.value_map(&f.attributes, &format!("{at}, attribute"))?,
            block: self.block(block, at)?,
        })
    }

    fn named_types(&self, items: &[pb::NamedValueType], at: &str) -> Result<Vec<NamedType>> {
        items
            .iter()
            .map(|n| {
                Ok(NamedType {
                    name: n.name.clone(),
                    ty: self.value_type(n.r#type.as_ref(), &format!("{at}, `{}`", n.name))?,
                })
            })
            .collect()
    }

    fn block(&self, block: &pb::Block, at: &str) -> Result<Block> {
        let mut operations = Vec::with_capacity(block.operations.len());
        for (i, op) in block.operations.iter().enumerate() {
            operations.push(self.operation(op, &format!("{at}, operation #{i}"))?);
        }
        Ok(Block {
            inputs: self.named_types(&block.inputs, &format!("{at}, block input"))?,
            operations,
            outputs: block.outputs.clone(),
        })
    }

    fn operation(&self, op: &pb::Operation, at: &str) -> Result<Operation> {
        let mut at = format!("{at} ({})", op.r#type);
        if let Some(name) = op
            .attributes
            .get("name")
            .and_then(|v| self.value(v, "name").ok())
            .and_then(|v| v.as_str().map(str::to_string))
        {
            at = format!("{at} `{name}`");
        }
        let mut inputs = BTreeMap::new();
        for (param, arg) in &op.inputs {
            let mut bindings: Argument = Vec::with_capacity(arg.arguments.len());
            for b in &arg.arguments {
                use pb::argument::binding::Binding as B;
                bindings.push(match &b.binding {
                    Some(B::Name(n)) => Binding::Name(n.clone()),
                    Some(B::Value(v)) => {
                        Binding::Value(self.value(v, &format!("{at}, input `{param}`"))?)
                    }
                    None => {
                        return Err(self.err(&at, format!("input `{param}` has an empty binding")))
                    }
                });
            }
            inputs.insert(param.clone(), bindings);
        }
        let mut blocks = Vec::with_capacity(op.blocks.len());
        for (i, b) in op.blocks.iter().enumerate() {
            blocks.push(self.block(b, &format!("{at}, block #{i}"))?);
        }
        Ok(Operation {
            op_type: op.r#type.clone(),
            inputs,
            outputs: self.named_types(&op.outputs, &format!("{at}, output"))?,
            attributes: self.value_map(&op.attributes, &format!("{at}, attribute"))?,
            blocks,
        })
    }

    fn value_map(
        &self,
        map: &std::collections::HashMap<String, pb::Value>,
        at: &str,
    ) -> Result<BTreeMap<String, Value>> {
        map.iter()
            .map(|(k, v)| Ok((k.clone(), self.value(v, &format!("{at} `{k}`"))?)))
            .collect()
    }

    fn dim(&self, d: &pb::Dimension, at: &str) -> Result<Dim> {
        use pb::dimension::Dimension as D;
        match &d.dimension {
            Some(D::Constant(c)) => Ok(Dim::Fixed(c.size)),
            Some(D::Unknown(_)) => Ok(Dim::Unknown),
            None => Err(self.err(at, "dimension is neither constant nor unknown")),
        }
    }

    fn value_type(&self, ty: Option<&pb::ValueType>, at: &str) -> Result<ValueType> {
        use pb::value_type::Type as T;
        let ty = ty
            .and_then(|t| t.r#type.as_ref())
            .ok_or_else(|| self.err(at, "missing type"))?;
        match ty {
            T::TensorType(t) => {
                let dtype = data_type_from_proto(t.data_type).ok_or_else(|| {
                    self.err(
                        at,
                        format!("unknown or unset data type code {}", t.data_type),
                    )
                })?;
                let shape = if t.rank < 0 {
                    None
                } else {
                    let dims = t
                        .dimensions
                        .iter()
                        .map(|d| self.dim(d, at))
                        .collect::<Result<Vec<_>>>()?;
                    if t.rank != 0 && usize::try_from(t.rank).ok() != Some(dims.len()) {
                        return Err(self.err(
                            at,
                            format!("tensor rank {} but {} dimensions", t.rank, dims.len()),
                        ));
                    }
                    Some(dims)
                };
                Ok(ValueType::Tensor { dtype, shape })
            }
            T::ListType(l) => {
                let elem = self.value_type(l.r#type.as_deref(), &format!("{at}, list element"))?;
                let len = match &l.length {
                    Some(d) => match self.dim(d, at)? {
                        Dim::Fixed(n) => Some(n),
                        Dim::Unknown => None,
                    },
                    None => None,
                };
                Ok(ValueType::List {
                    elem: Box::new(elem),
                    len,
                })
            }
            T::TupleType(t) => Ok(ValueType::Tuple(
                t.types
                    .iter()
                    .map(|e| self.value_type(Some(e), &format!("{at}, tuple element")))
                    .collect::<Result<_>>()?,
            )),
            T::DictionaryType(d) => Ok(ValueType::Dict {
                key: Box::new(self.value_type(d.key_type.as_deref(), &format!("{at}, dict key"))?),
                value: Box::new(
                    self.value_type(d.value_type.as_deref(), &format!("{at}, dict value"))?,
                ),
            }),
            T::StateType(s) => Ok(ValueType::State(Box::new(
                self.value_type(s.wrapped_type.as_deref(), &format!("{at}, state"))?,
            ))),
        }
    }

    fn value(&self, v: &pb::Value, at: &str) -> Result<Value> {
        use pb::value::immediate_value::Value as I;
        use pb::value::Value as V;
        let ty = self.value_type(v.r#type.as_ref(), at)?;
        let data = match &v.value {
            Some(V::BlobFileValue(b)) => {
                if !matches!(ty, ValueType::Tensor { .. }) {
                    return Err(self.err(at, "blob file value of a non-tensor type"));
                }
                ValueData::Blob(BlobRef {
                    path: b.file_name.clone(),
                    offset: b.offset,
                })
            }
            Some(V::ImmediateValue(imm)) => match &imm.value {
                Some(I::Tensor(t)) => ValueData::Tensor(self.tensor(t, &ty, at)?),
                Some(I::Tuple(t)) => ValueData::Tuple(
                    t.values
                        .iter()
                        .map(|e| self.value(e, &format!("{at}, tuple element")))
                        .collect::<Result<_>>()?,
                ),
                Some(I::List(l)) => ValueData::List(
                    l.values
                        .iter()
                        .map(|e| self.value(e, &format!("{at}, list element")))
                        .collect::<Result<_>>()?,
                ),
                Some(I::Dictionary(d)) => {
                    let mut entries = Vec::with_capacity(d.values.len());
                    for kv in &d.values {
                        let key = kv
                            .key
                            .as_ref()
                            .ok_or_else(|| self.err(at, "dictionary entry without key"))?;
                        let value = kv
                            .value
                            .as_ref()
                            .ok_or_else(|| self.err(at, "dictionary entry without value"))?;
                        entries.push((
                            self.value(key, &format!("{at}, dict key"))?,
                            self.value(value, &format!("{at}, dict value"))?,
                        ));
                    }
                    ValueData::Dict(entries)
                }
                None => return Err(self.err(at, "empty immediate value")),
            },
            None => return Err(self.err(at, "value has neither immediate data nor a blob file")),
        };
        Ok(Value { ty, data })
    }

    fn tensor(&self, t: &pb::TensorValue, ty: &ValueType, at: &str) -> Result<TensorData> {
        use pb::tensor_value::Value as TV;
        let ValueType::Tensor { dtype, .. } = ty else {
            return Err(self.err(at, "tensor data for a non-tensor type"));
        };
        let dtype = *dtype;
        let expected = ty.element_count();
        let data = match &t.value {
            None => match dtype {
                DataType::String => TensorData::Str(Vec::new()),
                DataType::Bool => TensorData::Bool(Vec::new()),
                d if d.is_float() => TensorData::Float(Vec::new()),
                _ => TensorData::Int(Vec::new()),
            },
            Some(TV::Floats(v)) if dtype.is_float() => {
                TensorData::Float(v.values.iter().map(|&x| f64::from(x)).collect())
            }
            Some(TV::Doubles(v)) if dtype.is_float() => TensorData::Float(v.values.clone()),
            Some(TV::Ints(v)) if dtype.is_integer() => {
                self.ints(dtype, v.values.iter().map(|&x| i128::from(x)), at)?
            }
            Some(TV::LongInts(v)) if dtype.is_integer() => {
                self.ints(dtype, v.values.iter().map(|&x| i128::from(x)), at)?
            }
            Some(TV::Bools(v)) if dtype == DataType::Bool => TensorData::Bool(v.values.clone()),
            Some(TV::Strings(v)) if dtype == DataType::String => TensorData::Str(v.values.clone()),
            Some(TV::Bytes(b)) if dtype != DataType::String => {
                self.bytes(&b.values, dtype, expected, at)?
            }
            Some(other) => {
                let kind = match other {
                    TV::Floats(_) => "floats",
                    TV::Doubles(_) => "doubles",
                    TV::Ints(_) => "ints",
                    TV::LongInts(_) => "longInts",
                    TV::Bools(_) => "bools",
                    TV::Strings(_) => "strings",
                    TV::Bytes(_) => "bytes",
                };
                return Err(self.err(at, format!("{dtype} tensor stored as `{kind}`")));
            }
        };
        if let Some(n) = expected {
            if data.len() as u64 != n {
                return Err(self.err(
                    at,
                    format!("{dtype} tensor of {n} elements holds {} values", data.len()),
                ));
            }
        }
        Ok(data)
    }

    fn ints(
        &self,
        dtype: DataType,
        values: impl Iterator<Item = i128>,
        at: &str,
    ) -> Result<TensorData> {
        let (lo, hi) = int_range(dtype);
        let mut out = Vec::new();
        for v in values {
            // uint64 values above i64::MAX arrive as negative int64 (two's complement) and stay so in the IR.
            let ok = (lo..=hi).contains(&v) || (dtype == DataType::UInt64 && v < 0);
            if !ok {
                return Err(self.err(at, format!("value {v} out of range for {dtype}")));
            }
            out.push(v as i64);
        }
        Ok(TensorData::Int(out))
    }

    fn bytes(
        &self,
        bytes: &[u8],
        dtype: DataType,
        expected: Option<u64>,
        at: &str,
    ) -> Result<TensorData> {
        let bits = dtype.bit_width() as usize;
        if bits < 8 {
            let n = expected
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| self.err(at, format!("packed {dtype} data needs a known shape")))?;
            let need = n.saturating_mul(bits).div_ceil(8);
            if bytes.len() != need {
                return Err(self.err(
                    at,
                    format!(
                        "{n} packed {dtype} elements need {need} bytes, found {}",
                        bytes.len()
                    ),
                ));
            }
            let raw = unpack_bits(bytes, bits as u32, n)
                .ok_or_else(|| self.err(at, "packed data too short"))?;
            return Ok(TensorData::Int(if dtype == DataType::Int4 {
                raw.into_iter()
                    .map(|v| i64::from(sign_extend_int4(v)))
                    .collect()
            } else {
                raw.into_iter().map(i64::from).collect()
            }));
        }
        let width = bits / 8;
        if !bytes.len().is_multiple_of(width) {
            return Err(self.err(
                at,
                format!(
                    "{} bytes is not a whole number of {dtype} elements",
                    bytes.len()
                ),
            ));
        }
        let chunks = bytes.chunks_exact(width);
        let arr = |c: &[u8]| -> [u8; 8] {
            let mut a = [0u8; 8];
            a[..c.len()].copy_from_slice(c);
            a
        };
        Ok(match dtype {
            DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            DataType::Float16 => TensorData::Float(
                chunks
                    .map(|c| f64::from(f16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DataType::BFloat16 => TensorData::Float(
                chunks
                    .map(|c| f64::from(bf16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DataType::Float8E4M3FN => {
                TensorData::Float(bytes.iter().map(|&b| fp8_e4m3fn_to_f64(b)).collect())
            }
            DataType::Float8E5M2 => {
                TensorData::Float(bytes.iter().map(|&b| fp8_e5m2_to_f64(b)).collect())
            }
            DataType::Float32 => TensorData::Float(
                chunks
                    .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            ),
            DataType::Float64 => {
                TensorData::Float(chunks.map(|c| f64::from_le_bytes(arr(c))).collect())
            }
            DataType::Int8 => TensorData::Int(bytes.iter().map(|&b| i64::from(b as i8)).collect()),
            DataType::Int16 => TensorData::Int(
                chunks
                    .map(|c| i64::from(i16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DataType::Int32 => TensorData::Int(
                chunks
                    .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            ),
            DataType::Int64 | DataType::UInt64 => {
                TensorData::Int(chunks.map(|c| i64::from_le_bytes(arr(c))).collect())
            }
            DataType::UInt8 => TensorData::Int(bytes.iter().map(|&b| i64::from(b)).collect()),
            DataType::UInt16 => TensorData::Int(
                chunks
                    .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
                    .collect(),
            ),
            DataType::UInt32 => TensorData::Int(
                chunks
                    .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    .collect(),
            ),
            other => return Err(self.err(at, format!("{other} tensor stored as bytes"))),
        })
    }
}
