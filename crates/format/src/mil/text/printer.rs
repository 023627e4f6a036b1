//! Writes a [`Program`] as `model.mil` text in the syntax of Apple's newer printer (`program(1.3)` style).

use std::fmt::Write as _;

use super::float::format_hex_float;
use super::parser::is_version;
use super::MilPrintError;
use crate::mil::ir::{
    opset_to_text, Argument, Binding, BlobRef, DataType, Dim, Function, NamedType, Operation,
    Program, TensorData, Value, ValueData, ValueType,
};

type Result<T> = std::result::Result<T, MilPrintError>;

/// Most nested `[]` lists printed for an empty tensor such as `tensor<fp32, [N, 0]>`.
const MAX_PRINTED_ROWS: u64 = 1 << 24;

/// Indentation of `func` lines.
const FUNCTION_INDENT: &str = "    ";
/// Indentation of statements.
const STATEMENT_INDENT: &str = "            ";
/// Indentation of a function's closing `} -> (...);`.
const BLOCK_END_INDENT: &str = "        ";

/// Prints `program` (see [`super::print_program`]).
pub(crate) fn print(program: &Program) -> Result<String> {
    let mut out = String::new();
    if !is_version(&program.version) {
        return Err(MilPrintError::InvalidVersion(program.version.clone()));
    }
    out.push_str("program(");
    out.push_str(&program.version);
    out.push_str(")\n");
    if !program.attributes.is_empty() {
        write_attributes(&mut out, program.attributes.iter(), "program attribute")?;
        out.push('\n');
    }
    out.push_str("{\n");
    for (name, function) in &program.functions {
        write_function(&mut out, name, function)?;
    }
    out.push('}');
    Ok(out)
}

/// Checks that `name` is a model.mil identifier: `[A-Za-z_][A-Za-z0-9_@]*`.
fn check_ident(name: &str, what: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@');
    if valid {
        Ok(())
    } else {
        Err(MilPrintError::InvalidName {
            what: what.to_string(),
            name: name.to_string(),
        })
    }
}

fn write_function(out: &mut String, name: &str, function: &Function) -> Result<()> {
    check_ident(name, "function name")?;
    let opset = opset_text(&function.opset);
    check_ident(&opset, "opset")?;
    if !function.block.inputs.is_empty() {
        return Err(MilPrintError::Unsupported(format!(
            "function `{name}` has block inputs, which model.mil function bodies cannot declare"
        )));
    }
    out.push_str(FUNCTION_INDENT);
    out.push_str("func ");
    out.push_str(name);
    out.push('<');
    out.push_str(&opset);
    out.push_str(">(");
    for (i, param) in function.inputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_named_type(out, param, "function parameter")?;
    }
    out.push(')');
    if !function.attributes.is_empty() {
        out.push(' ');
        write_attributes(out, function.attributes.iter(), "function attribute")?;
    }
    out.push_str(" {\n");
    for op in &function.block.operations {
        write_operation(out, op)?;
    }
    out.push_str(BLOCK_END_INDENT);
    out.push_str("} -> (");
    for (i, output) in function.block.outputs.iter().enumerate() {
        check_ident(output, "function output")?;
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(output);
    }
    out.push_str(");\n");
    Ok(())
}

/// The `iosNN` spelling of a `CoreMLn` opset. Names whose number would overflow in the conversion are kept as they
/// are (the parser reads them back unchanged).
fn opset_text(opset: &str) -> String {
    match opset
        .strip_prefix("CoreML")
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(v) if v.checked_add(10).is_none() => opset.to_string(),
        _ => opset_to_text(opset),
    }
}

fn write_named_type(out: &mut String, named: &NamedType, what: &str) -> Result<()> {
    check_ident(&named.name, what)?;
    write_type(out, &named.ty);
    out.push(' ');
    out.push_str(&named.name);
    Ok(())
}

fn write_operation(out: &mut String, op: &Operation) -> Result<()> {
    check_ident(&op.op_type, "operation type")?;
    if !op.blocks.is_empty() {
        return Err(MilPrintError::Unsupported(format!(
            "operation `{}`{} has nested blocks (control flow), which this printer does not write",
            op.op_type,
            op.outputs
                .first()
                .map(|o| format!(" (output `{}`)", o.name))
                .unwrap_or_default()
        )));
    }
    out.push_str(STATEMENT_INDENT);
    for (i, output) in op.outputs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_named_type(out, output, "operation output")?;
    }
    if !op.outputs.is_empty() {
        out.push_str(" = ");
    }
    out.push_str(&op.op_type);
    out.push('(');
    for (i, (key, argument)) in op.inputs.iter().enumerate() {
        check_ident(key, "argument name")?;
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(key);
        out.push_str(" = ");
        write_argument(out, argument)?;
    }
    out.push(')');
    if !op.attributes.is_empty() {
        write_attributes(out, op.attributes.iter(), "operation attribute")?;
    }
    out.push_str(";\n");
    Ok(())
}

/// One binding bare; several (or none) as a `(a, b)` tuple.
fn write_argument(out: &mut String, argument: &Argument) -> Result<()> {
    if let [binding] = argument.as_slice() {
        return write_binding(out, binding);
    }
    out.push('(');
    for (i, binding) in argument.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write_binding(out, binding)?;
    }
    out.push(')');
    Ok(())
}

fn write_binding(out: &mut String, binding: &Binding) -> Result<()> {
    match binding {
        Binding::Name(name) => {
            check_ident(name, "argument value name")?;
            out.push_str(name);
            Ok(())
        }
        Binding::Value(value) => write_typed_value(out, value),
    }
}

/// `[key = typed, ...]` in the (sorted) order given.
fn write_attributes<'v>(
    out: &mut String,
    attributes: impl Iterator<Item = (&'v String, &'v Value)>,
    what: &str,
) -> Result<()> {
    out.push('[');
    for (i, (key, value)) in attributes.enumerate() {
        check_ident(key, what)?;
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(key);
        out.push_str(" = ");
        write_typed_value(out, value)?;
    }
    out.push(']');
    Ok(())
}

/// A type; rank-0 tensors print as the bare element type, unknown-rank tensors as `tensor<T, ?>`.
pub(crate) fn write_type(out: &mut String, ty: &ValueType) {
    match ty {
        ValueType::Tensor { dtype, shape } => match shape {
            Some(dims) if dims.is_empty() => out.push_str(dtype.mil_name()),
            Some(dims) => {
                out.push_str("tensor<");
                out.push_str(dtype.mil_name());
                out.push_str(", [");
                for (i, dim) in dims.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{dim}");
                }
                out.push_str("]>");
            }
            None => {
                out.push_str("tensor<");
                out.push_str(dtype.mil_name());
                out.push_str(", ?>");
            }
        },
        ValueType::List { elem, len } => {
            out.push_str("list<");
            write_type(out, elem);
            match len {
                Some(n) => {
                    let _ = write!(out, ", {n}>");
                }
                None => out.push_str(", ?>"),
            }
        }
        ValueType::Tuple(types) => {
            out.push_str("tuple<");
            for (i, t) in types.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_type(out, t);
            }
            out.push('>');
        }
        ValueType::Dict { key, value } => {
            out.push_str("dict<");
            write_type(out, key);
            out.push_str(", ");
            write_type(out, value);
            out.push('>');
        }
        ValueType::State(inner) => {
            out.push_str("state<");
            write_type(out, inner);
            out.push('>');
        }
    }
}

/// `type(body)`; an empty tuple value prints as `type()`.
fn write_typed_value(out: &mut String, value: &Value) -> Result<()> {
    write_type(out, &value.ty);
    out.push('(');
    if !matches!(&value.data, ValueData::Tuple(elements) if elements.is_empty()) {
        write_body(out, value)?;
    }
    out.push(')');
    Ok(())
}

/// The untyped body of a value, laid out by the value's own type.
fn write_body(out: &mut String, value: &Value) -> Result<()> {
    match (&value.ty, &value.data) {
        (ValueType::Tensor { .. }, ValueData::Blob(blob)) => {
            write_blobfile(out, blob);
            Ok(())
        }
        (ValueType::Tensor { dtype, shape }, ValueData::Tensor(data)) => {
            check_data_kind(*dtype, data)?;
            let Some(dims) = shape else {
                return Err(inconsistent(
                    value,
                    "a tensor of unknown rank cannot be printed with inline data",
                ));
            };
            let dims = concrete_dims(dims, data.len()).ok_or_else(|| {
                inconsistent(
                    value,
                    &format!("{} elements do not fit the shape", data.len()),
                )
            })?;
            let rows = dims
                .iter()
                .scan(1u64, |rows, d| {
                    *rows = rows.saturating_mul(*d);
                    Some(*rows)
                })
                .max()
                .unwrap_or(1);
            if rows > MAX_PRINTED_ROWS && rows > data.len() as u64 {
                return Err(inconsistent(value, "too many empty nested lists to print"));
            }
            if dims.is_empty() {
                return write_element(out, *dtype, data, 0);
            }
            let mut next = 0usize;
            write_nested(out, *dtype, data, &dims, &mut next)
        }
        (ValueType::List { len, .. }, ValueData::List(elements)) => {
            if len.is_some_and(|n| n != elements.len() as u64) {
                return Err(inconsistent(value, "list length differs from its type"));
            }
            out.push('[');
            for (i, element) in elements.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_body(out, element)?;
            }
            out.push(']');
            Ok(())
        }
        (ValueType::Tuple(types), ValueData::Tuple(elements)) => {
            if types.len() != elements.len() {
                return Err(inconsistent(
                    value,
                    "tuple element count differs from its type",
                ));
            }
            out.push('(');
            for (i, element) in elements.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_body(out, element)?;
            }
            out.push(')');
            Ok(())
        }
        (ValueType::Dict { .. }, ValueData::Dict(entries)) => {
            out.push('{');
            for (i, (key, entry)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push('{');
                write_body(out, key)?;
                out.push_str(", ");
                write_body(out, entry)?;
                out.push('}');
            }
            out.push('}');
            Ok(())
        }
        _ => Err(inconsistent(value, "its data does not match its type")),
    }
}

/// An [`MilPrintError::InconsistentValue`] naming the value's type.
fn inconsistent(value: &Value, message: &str) -> MilPrintError {
    let mut ty = String::new();
    write_type(&mut ty, &value.ty);
    MilPrintError::InconsistentValue {
        ty,
        message: message.to_string(),
    }
}

/// Fails unless `data` is the element kind that holds `dtype`.
fn check_data_kind(dtype: DataType, data: &TensorData) -> Result<()> {
    let matches = match data {
        TensorData::Float(_) => dtype.is_float(),
        TensorData::Int(_) => dtype.is_integer(),
        TensorData::Bool(_) => dtype == DataType::Bool,
        TensorData::Str(_) => dtype == DataType::String,
    };
    if matches {
        Ok(())
    } else {
        Err(MilPrintError::InconsistentValue {
            ty: dtype.mil_name().to_string(),
            message: "element data of another kind".to_string(),
        })
    }
}

/// The dimensions used to lay out `count` elements: fixed dims as given, one unknown dim derived from the count.
fn concrete_dims(dims: &[Dim], count: usize) -> Option<Vec<u64>> {
    let count = count as u64;
    let known = dims.iter().try_fold(1u64, |acc, d| match d {
        Dim::Fixed(n) => acc.checked_mul(*n),
        Dim::Unknown => Some(acc),
    })?;
    let unknown = dims.iter().filter(|d| **d == Dim::Unknown).count();
    let derived = match unknown {
        0 if known == count => 0,
        0 => return None,
        1 if known != 0 && count.is_multiple_of(known) => count / known,
        _ if count == 0 => 0,
        _ => return None,
    };
    Some(
        dims.iter()
            .map(|d| match d {
                Dim::Fixed(n) => *n,
                Dim::Unknown => derived,
            })
            .collect(),
    )
}

/// Nested `[...]` lists, one level per dimension.
fn write_nested(
    out: &mut String,
    dtype: DataType,
    data: &TensorData,
    dims: &[u64],
    next: &mut usize,
) -> Result<()> {
    let Some((&size, inner)) = dims.split_first() else {
        let index = *next;
        *next += 1;
        return write_element(out, dtype, data, index);
    };
    out.push('[');
    for i in 0..size {
        if i > 0 {
            out.push_str(", ");
        }
        write_nested(out, dtype, data, inner, next)?;
    }
    out.push(']');
    Ok(())
}

/// Element `index` of `data`: hex float, decimal integer (`uint64` unsigned), `true`/`false` or quoted string.
fn write_element(out: &mut String, dtype: DataType, data: &TensorData, index: usize) -> Result<()> {
    let missing = || MilPrintError::InconsistentValue {
        ty: dtype.mil_name().to_string(),
        message: format!("element {index} is missing"),
    };
    match data {
        TensorData::Float(values) => format_hex_float(*values.get(index).ok_or_else(missing)?, out),
        TensorData::Int(values) => {
            let v = *values.get(index).ok_or_else(missing)?;
            if dtype == DataType::UInt64 {
                let _ = write!(out, "{}", v as u64);
            } else {
                let _ = write!(out, "{v}");
            }
        }
        TensorData::Bool(values) => {
            out.push_str(if *values.get(index).ok_or_else(missing)? {
                "true"
            } else {
                "false"
            });
        }
        TensorData::Str(values) => write_string(out, values.get(index).ok_or_else(missing)?),
    }
    Ok(())
}

/// A quoted string, escaping `"`, `\`, newline, tab and carriage return.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `BLOBFILE(path = string("..."), offset = uint64(N))`.
fn write_blobfile(out: &mut String, blob: &BlobRef) {
    out.push_str("BLOBFILE(path = string(");
    write_string(out, &blob.path);
    let _ = write!(out, "), offset = uint64({}))", blob.offset);
}
