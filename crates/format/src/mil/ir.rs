//! The in-memory ML Program (MIL) representation shared by the protobuf reader (`.mlpackage`, `.mlmodel`) and the
//! `model.mil` text reader (`.mlmodelc`). Both produce exactly these types, so everything above this layer sees one
//! program form whatever file it came from.

use std::collections::BTreeMap;
use std::fmt;

/// Element type of a MIL tensor or scalar (`MILSpec.DataType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// `bool`
    Bool,
    /// `string`
    String,
    /// `fp16`
    Float16,
    /// `fp32`
    Float32,
    /// `fp64`
    Float64,
    /// `bf16`
    BFloat16,
    /// `fp8e4m3fn`
    Float8E4M3FN,
    /// `fp8e5m2`
    Float8E5M2,
    /// `int4`
    Int4,
    /// `int8`
    Int8,
    /// `int16`
    Int16,
    /// `int32`
    Int32,
    /// `int64`
    Int64,
    /// `uint1`
    UInt1,
    /// `uint2`
    UInt2,
    /// `uint3`
    UInt3,
    /// `uint4`
    UInt4,
    /// `uint6`
    UInt6,
    /// `uint8`
    UInt8,
    /// `uint16`
    UInt16,
    /// `uint32`
    UInt32,
    /// `uint64`
    UInt64,
}

impl DataType {
    /// Every data type, in declaration order.
    pub const ALL: [DataType; 22] = [
        DataType::Bool,
        DataType::String,
        DataType::Float16,
        DataType::Float32,
        DataType::Float64,
        DataType::BFloat16,
        DataType::Float8E4M3FN,
        DataType::Float8E5M2,
        DataType::Int4,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::UInt1,
        DataType::UInt2,
        DataType::UInt3,
        DataType::UInt4,
        DataType::UInt6,
        DataType::UInt8,
        DataType::UInt16,
        DataType::UInt32,
        DataType::UInt64,
    ];

    /// The token used for this type in `model.mil` text (`fp16`, `int32`, `uint6`, ...).
    pub fn mil_name(self) -> &'static str {
        match self {
            DataType::Bool => "bool",
            DataType::String => "string",
            DataType::Float16 => "fp16",
            DataType::Float32 => "fp32",
            DataType::Float64 => "fp64",
            DataType::BFloat16 => "bf16",
            DataType::Float8E4M3FN => "fp8e4m3fn",
            DataType::Float8E5M2 => "fp8e5m2",
            DataType::Int4 => "int4",
            DataType::Int8 => "int8",
            DataType::Int16 => "int16",
            DataType::Int32 => "int32",
            DataType::Int64 => "int64",
            DataType::UInt1 => "uint1",
            DataType::UInt2 => "uint2",
            DataType::UInt3 => "uint3",
            DataType::UInt4 => "uint4",
            DataType::UInt6 => "uint6",
            DataType::UInt8 => "uint8",
            DataType::UInt16 => "uint16",
            DataType::UInt32 => "uint32",
            DataType::UInt64 => "uint64",
        }
    }

    /// Parses a `model.mil` dtype token.
    pub fn from_mil_name(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.mil_name() == name)
    }

    /// Size of one element in bits (strings report 0).
    pub fn bit_width(self) -> u32 {
        match self {
            DataType::String => 0,
            DataType::UInt1 => 1,
            DataType::UInt2 => 2,
            DataType::UInt3 => 3,
            DataType::Int4 | DataType::UInt4 => 4,
            DataType::UInt6 => 6,
            DataType::Bool
            | DataType::Int8
            | DataType::UInt8
            | DataType::Float8E4M3FN
            | DataType::Float8E5M2 => 8,
            DataType::Float16 | DataType::BFloat16 | DataType::Int16 | DataType::UInt16 => 16,
            DataType::Float32 | DataType::Int32 | DataType::UInt32 => 32,
            DataType::Float64 | DataType::Int64 | DataType::UInt64 => 64,
        }
    }

    /// True for the floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            DataType::Float16
                | DataType::Float32
                | DataType::Float64
                | DataType::BFloat16
                | DataType::Float8E4M3FN
                | DataType::Float8E5M2
        )
    }

    /// True for the signed and unsigned integer types (any width).
    pub fn is_integer(self) -> bool {
        !self.is_float() && !matches!(self, DataType::Bool | DataType::String)
    }

    /// True for the unsigned integer types.
    pub fn is_unsigned(self) -> bool {
        matches!(
            self,
            DataType::UInt1
                | DataType::UInt2
                | DataType::UInt3
                | DataType::UInt4
                | DataType::UInt6
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
        )
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mil_name())
    }
}

/// One dimension of a tensor type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    /// A known size.
    Fixed(u64),
    /// A size only known at run time (`?` in `model.mil`).
    Unknown,
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Unknown => f.write_str("?"),
        }
    }
}

/// The type of a MIL value. Scalars are rank-0 tensors (`int32` and `tensor<int32, []>` are the same type).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// A tensor (or scalar when `shape` is empty). `shape` is `None` when the rank itself is unknown.
    Tensor {
        /// Element type.
        dtype: DataType,
        /// Dimensions; `None` for a tensor of unknown rank.
        shape: Option<Vec<Dim>>,
    },
    /// `list<T, N>`; `len` is `None` for `?`.
    List {
        /// Element type.
        elem: Box<ValueType>,
        /// Number of elements when known.
        len: Option<u64>,
    },
    /// `tuple<T1, T2, ...>`.
    Tuple(Vec<ValueType>),
    /// `dict<K, V>`.
    Dict {
        /// Key type.
        key: Box<ValueType>,
        /// Value type.
        value: Box<ValueType>,
    },
    /// `state<tensor<...>>`: a persistent buffer read and written by `read_state` / `write_state`.
    State(Box<ValueType>),
}

impl ValueType {
    /// A tensor type with fixed dimensions.
    pub fn tensor(dtype: DataType, shape: &[u64]) -> ValueType {
        ValueType::Tensor {
            dtype,
            shape: Some(shape.iter().map(|&d| Dim::Fixed(d)).collect()),
        }
    }

    /// A rank-0 (scalar) tensor type.
    pub fn scalar(dtype: DataType) -> ValueType {
        ValueType::Tensor {
            dtype,
            shape: Some(Vec::new()),
        }
    }

    /// The element type of a tensor, or of the tensor wrapped by a state.
    pub fn dtype(&self) -> Option<DataType> {
        match self {
            ValueType::Tensor { dtype, .. } => Some(*dtype),
            ValueType::State(inner) => inner.dtype(),
            _ => None,
        }
    }

    /// The dimensions of a tensor, or of the tensor wrapped by a state.
    pub fn dims(&self) -> Option<&[Dim]> {
        match self {
            ValueType::Tensor { shape, .. } => shape.as_deref(),
            ValueType::State(inner) => inner.dims(),
            _ => None,
        }
    }

    /// The dimensions when they are all known.
    pub fn fixed_shape(&self) -> Option<Vec<u64>> {
        self.dims()?
            .iter()
            .map(|d| match d {
                Dim::Fixed(n) => Some(*n),
                Dim::Unknown => None,
            })
            .collect()
    }

    /// Number of elements when the shape is fully known.
    pub fn element_count(&self) -> Option<u64> {
        self.fixed_shape()
            .and_then(|s| s.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)))
    }
}

/// Flat, row-major contents of an immediate tensor. The element type is given by the enclosing [`Value`]'s type:
/// every float type is held as `Float`, every integer type (including sub-byte and `uint64`, whose values above
/// `i64::MAX` wrap) as `Int`.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Floating-point elements (`fp16`, `bf16`, `fp32`, `fp64`, `fp8*`).
    Float(Vec<f64>),
    /// Integer elements (any signed or unsigned width).
    Int(Vec<i64>),
    /// `bool` elements.
    Bool(Vec<bool>),
    /// `string` elements.
    Str(Vec<String>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Int(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A reference to tensor data stored in a weight blob file (`BLOBFILE(path, offset)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobRef {
    /// Path as written in the program, usually `@model_path/weights/weight.bin`.
    pub path: String,
    /// Byte offset of the blob's 64-byte metadata record (not of the data).
    pub offset: u64,
}

/// The payload of a compile-time [`Value`].
#[derive(Debug, Clone, PartialEq)]
pub enum ValueData {
    /// An immediate tensor or scalar.
    Tensor(TensorData),
    /// Tensor data held in a weight file.
    Blob(BlobRef),
    /// Tuple elements.
    Tuple(Vec<Value>),
    /// List elements.
    List(Vec<Value>),
    /// Dictionary entries in file order.
    Dict(Vec<(Value, Value)>),
}

/// A compile-time value (constant, attribute or inline argument) with its type.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    /// The declared type.
    pub ty: ValueType,
    /// The contents.
    pub data: ValueData,
}

impl Value {
    /// A scalar string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value {
            ty: ValueType::scalar(DataType::String),
            data: ValueData::Tensor(TensorData::Str(vec![s.into()])),
        }
    }

    /// The string when this is a scalar string.
    pub fn as_str(&self) -> Option<&str> {
        match &self.data {
            ValueData::Tensor(TensorData::Str(v)) if v.len() == 1 => Some(&v[0]),
            _ => None,
        }
    }
}

/// A name together with its type: a function parameter or an operation output.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedType {
    /// SSA name.
    pub name: String,
    /// Type.
    pub ty: ValueType,
}

/// One element bound to an operation parameter: a reference to an earlier value or an inline constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    /// Name of a function input or an earlier operation output.
    Name(String),
    /// An inline compile-time value.
    Value(Value),
}

/// The bindings of one parameter; variadic parameters such as `concat(values = (a, b))` have several.
pub type Argument = Vec<Binding>;

/// One operation of a block.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// Operation type, e.g. `conv` or `constexpr_lut_to_dense`.
    pub op_type: String,
    /// Parameter name to bindings, sorted by parameter name.
    pub inputs: BTreeMap<String, Argument>,
    /// Outputs in declaration order (empty for `write_state`).
    pub outputs: Vec<NamedType>,
    /// Attributes such as `name` and, for `const`, `val`; sorted by key.
    pub attributes: BTreeMap<String, Value>,
    /// Nested blocks of control-flow operations.
    pub blocks: Vec<Block>,
}

impl Operation {
    /// The `name` attribute when present.
    pub fn name(&self) -> Option<&str> {
        self.attributes.get("name").and_then(Value::as_str)
    }

    /// A constant input or attribute by name: an attribute, or an input bound to a single inline value.
    pub fn constant(&self, param: &str) -> Option<&Value> {
        if let Some(v) = self.attributes.get(param) {
            return Some(v);
        }
        match self.inputs.get(param).map(Vec::as_slice) {
            Some([Binding::Value(v)]) => Some(v),
            _ => None,
        }
    }
}

/// A straight-line sequence of operations in SSA form.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Block {
    /// Block-local inputs (used by control flow; empty for function bodies).
    pub inputs: Vec<NamedType>,
    /// Operations in topological order.
    pub operations: Vec<Operation>,
    /// Names of the values the block returns, in order.
    pub outputs: Vec<String>,
}

/// A function of a program (`main`, or `infer`/`prefill` in a multifunction model).
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    /// Inputs in declaration order.
    pub inputs: Vec<NamedType>,
    /// Opset of the active block (`CoreML5`..`CoreML8` in protobuf; `ios15`..`ios18` in text, normalised to
    /// the `CoreMLn` spelling by the readers).
    pub opset: String,
    /// Function attributes (e.g. `FlexibleShapeInformation`).
    pub attributes: BTreeMap<String, Value>,
    /// The body.
    pub block: Block,
}

/// A whole ML Program.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// Program format version as written (`1` in protobuf; `1.0` or `1.3` in text).
    pub version: String,
    /// Functions by name.
    pub functions: BTreeMap<String, Function>,
    /// Program attributes, such as `buildInfo`.
    pub attributes: BTreeMap<String, Value>,
}

/// Converts an opset name as written in `model.mil` (`ios18`) to the protobuf spelling (`CoreML8`).
/// Names that are neither are returned unchanged.
pub fn opset_from_text(name: &str) -> String {
    match name.strip_prefix("ios").and_then(|v| v.parse::<u32>().ok()) {
        Some(v) if v >= 10 => format!("CoreML{}", v - 10),
        _ => name.to_string(),
    }
}

/// Converts a protobuf opset name (`CoreML8`) to the `model.mil` spelling (`ios18`).
/// Names that are neither are returned unchanged.
pub fn opset_to_text(name: &str) -> String {
    match name
        .strip_prefix("CoreML")
        .and_then(|v| v.parse::<u32>().ok())
        .and_then(|v| v.checked_add(10))
    {
        Some(v) => format!("ios{v}"),
        _ => name.to_string(),
    }
}
