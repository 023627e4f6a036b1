//! The ML Program (MIL) intermediate representation and its two serialisations: protobuf (`.mlpackage`,
//! `.mlmodel`) and `model.mil` text (`.mlmodelc`).

pub mod from_proto;
pub mod ir;
pub mod text;

pub use ir::*;
