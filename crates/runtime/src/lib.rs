//! Run Apple Core ML ML Programs on candle-core.
//!
//! - [`CoreMLModel`]: load a model file, pick a function, run it with named or positional candle tensors;
//! - [`ModelState`]: the persistent state buffers of stateful models, shareable across functions and models;
//! - [`plan`]: the executor (a MIL function lowered to slots, constants and kernels);
//! - [`ops`]: the op kernels, one module per op family.

#![warn(missing_docs)]

pub mod consts;
pub mod dtype;
pub mod error;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod plan;
pub mod profile;
pub mod state;

pub use error::{Result, RuntimeError};
pub use model::{Backend, CoreMLModel, LoadOptions};
pub use plan::FunctionPlan;
pub use state::{ModelState, StateDecl};
