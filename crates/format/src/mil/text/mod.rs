//! `model.mil` text (the ML Program inside a compiled `.mlmodelc`): parser and printer.
//!
//! [`parse_program`] reads both of Apple's printer generations (`program(1.0)` with `tensor<string, []>` scalars,
//! `program(1.3)` with bare scalar types) into the shared [`Program`] IR; the grammar is described in
//! `docs/mil-text-grammar.md`. [`print_program`] writes the newer syntax, and `parse_program(&print_program(p)?)`
//! gives back a program equal to `p`.
//!
//! How text maps onto the IR:
//! - `int32(3)` and `tensor<int32, []>(3)` are both a rank-0 tensor [`Value`](crate::mil::Value).
//! - An inline literal argument becomes [`Binding::Value`](crate::mil::Binding::Value), a name
//!   [`Binding::Name`](crate::mil::Binding::Name); a tuple argument `(a, b)` becomes several bindings and `()` none.
//! - Float literals are read exactly: hex floats must be exactly representable in the literal's type (otherwise
//!   the file is rejected); decimal floats (seen only in Core ML E5 `analytics.mil` files) are rounded to it.
//! - Untyped values inside dicts, tuples and lists take their types from the enclosing type. A tensor literal whose
//!   type has `?` dimensions gets the sizes actually written (`tensor<int32, [?]>` holding `[1, 4]` becomes
//!   `tensor<int32, [2]>`), so the nested layout is never lost.
//! - `BLOBFILE(path = ..., offset = ...)` (both spellings) becomes [`ValueData::Blob`](crate::mil::ValueData::Blob).
//! - Opsets are converted to the `CoreMLn` spelling (`ios18` -> `CoreML8`); per-op `<ios17>` suffixes (E5 files) are
//!   accepted and ignored.
//! - Not supported (clear errors): `tensor_buffer` types (E5 files), nested blocks (control flow), `//` comments,
//!   coremltools' Python `print(prog)` output.
//!
//! Printer conventions beyond Apple's: function parameters keep the IR order (Apple's files list them sorted,
//! which is what the parser then stores); a tensor of unknown rank prints as `tensor<fp32, ?>`, which the parser
//! reads back; f64 subnormals print normalised (`0x1p-1074`); every NaN prints as `nan`. Operations with nested
//! blocks and values whose data does not match their type are reported as [`MilPrintError`]s.

mod float;
mod lexer;
mod parser;
mod printer;

use crate::error::MilSyntaxError;
use crate::mil::ir::Program;

/// Why a [`Program`] could not be printed as `model.mil` text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MilPrintError {
    /// A name that is not a model.mil identifier (`[A-Za-z_][A-Za-z0-9_@]*`).
    #[error("{what} `{name}` is not a valid model.mil identifier")]
    InvalidName {
        /// What the name is (function name, operation output, ...).
        what: String,
        /// The name.
        name: String,
    },
    /// The program version is not of the form `1` or `1.3`.
    #[error("program version `{0}` is not of the form `1` or `1.3`")]
    InvalidVersion(String),
    /// A value whose data does not agree with its type (element count, element kind, tuple arity, ...).
    #[error("value of type `{ty}` cannot be printed: {message}")]
    InconsistentValue {
        /// The value's type, as model.mil text.
        ty: String,
        /// What is wrong.
        message: String,
    },
    /// A construct the text form does not express (nested control-flow blocks, block inputs of a function body).
    #[error("{0}")]
    Unsupported(String),
}

/// Parses `model.mil` text into a [`Program`]. Errors carry the 1-based line and column of the offending token.
pub fn parse_program(text: &str) -> Result<Program, MilSyntaxError> {
    parser::Parser::new(text).parse_program()
}

/// Prints `program` as `model.mil` text in Apple's newer (`program(1.3)`-style) syntax: 4/12/8-space indentation,
/// sorted keys, exact C `%a`-style hex floats, `string(...)` scalars, `BLOBFILE(path = string(...), offset =
/// uint64(N))`, opsets as `iosNN`, no trailing newline.
pub fn print_program(program: &Program) -> Result<String, MilPrintError> {
    printer::print(program)
}
