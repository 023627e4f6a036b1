//! Prost types for the Core ML specification subset in `proto/` (`CoreML.Specification` and its `MILSpec`).

#![allow(missing_docs, clippy::all)]

include!(concat!(env!("OUT_DIR"), "/coreml.rs"));

/// `CoreML.Specification`: the model specification (`Model`, `ModelDescription`, feature types).
pub use core_ml::specification as spec;
/// `CoreML.Specification.MILSpec`: the ML Program messages.
pub use core_ml::specification::mil_spec as milspec;
