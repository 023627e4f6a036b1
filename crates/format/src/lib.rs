//! Readers for Apple Core ML model files, with no dependency on Candle.
//!
//! Layers, bottom up:
//! - [`proto`]: the protobuf schema subset (generated with prost);
//! - [`blob`]: memory-mapped MILBlob v2 weight files (`weight.bin`);
//! - [`mil`]: the ML Program IR, read from protobuf or from `model.mil` text, and printed back as text;
//! - [`description`]: inputs, outputs, states, functions and metadata of a model;
//! - [`container`]: opening `.mlpackage`, `.mlmodel`, `.mlmodelc` and `.mlmodelc.zip` paths as one [`ModelFile`];
//! - [`inspect`]: a serialisable summary of a model (the `candle-coreml inspect` report).

#![warn(missing_docs)]

pub mod blob;
pub mod container;
pub mod description;
pub mod error;
pub mod inspect;
pub mod mil;
pub mod proto;

pub use container::ModelFile;
pub use error::{FormatError, MilSyntaxError, Result};
