//! [`ModelState`]: the named persistent buffers (`state<tensor<...>>` inputs) of stateful models, such as the
//! ANEMLL KV cache. One state object can be used with every function and model that declares states of the same
//! name, dtype and shape; each call checks that.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::DataType;

use crate::dtype::{storage_dtype, to_storage};
use crate::error::{Result, RuntimeError};

/// A state a function declares: name, element type and fixed shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDecl {
    /// State (function input) name.
    pub name: String,
    /// Element type.
    pub dtype: DataType,
    /// Fixed shape.
    pub shape: Vec<usize>,
}

#[derive(Debug)]
struct StateEntry {
    tensor: Tensor,
    dtype: DataType,
    /// True when no tensor outside this entry can share its buffer, so that it may be updated in place.
    exclusive: AtomicBool,
}

impl StateEntry {
    fn new(tensor: Tensor, dtype: DataType, exclusive: bool) -> StateEntry {
        StateEntry {
            tensor,
            dtype,
            exclusive: AtomicBool::new(exclusive),
        }
    }
}

/// Named state tensors, shared across calls, functions and models.
///
/// The executor updates a state's buffer in place when the program allows it (the KV-cache pattern
/// `read_state` → `slice_update` → `write_state`). Tensors handed out by [`ModelState::get`] or taken in by
/// [`ModelState::set`] are never modified afterwards: the buffer is copied once before the next in-place update.
#[derive(Debug, Default)]
pub struct ModelState {
    entries: BTreeMap<String, StateEntry>,
    /// Whole-buffer copies made so far because a buffer was shared when an in-place update came.
    buffer_copies: usize,
}

impl Clone for ModelState {
    /// Both copies share buffers until their next update, which then copies first.
    fn clone(&self) -> ModelState {
        let entries = self
            .entries
            .iter()
            .map(|(name, e)| {
                e.exclusive.store(false, Ordering::Relaxed);
                (
                    name.clone(),
                    StateEntry::new(e.tensor.clone(), e.dtype, false),
                )
            })
            .collect();
        ModelState {
            entries,
            buffer_copies: self.buffer_copies,
        }
    }
}

fn state_error(name: &str, message: String) -> RuntimeError {
    RuntimeError::State {
        name: name.to_string(),
        message,
    }
}

/// Converts a caller's tensor for state `name`, reporting problems as state errors.
fn state_storage(t: &Tensor, dtype: DataType, name: &str) -> Result<Tensor> {
    to_storage(t, dtype, name).map_err(|e| match e {
        RuntimeError::Input { message, .. } => state_error(name, message),
        other => other,
    })
}

fn mil_type_of(dtype: DType) -> Option<DataType> {
    Some(match dtype {
        DType::F16 => DataType::Float16,
        DType::F32 => DataType::Float32,
        DType::F64 => DataType::Float64,
        DType::BF16 => DataType::BFloat16,
        DType::U8 => DataType::UInt8,
        DType::U32 => DataType::UInt32,
        DType::I16 => DataType::Int16,
        DType::I32 => DataType::Int32,
        DType::I64 => DataType::Int64,
        _ => return None,
    })
}

impl ModelState {
    /// An empty state (for functions that declare none).
    pub fn new() -> ModelState {
        ModelState::default()
    }

    /// Zero-filled states for the given declarations.
    pub fn zeros(decls: &[StateDecl], device: &Device) -> Result<ModelState> {
        let mut state = ModelState::new();
        for d in decls {
            let storage = storage_dtype(d.dtype).ok_or_else(|| {
                state_error(&d.name, format!("type {} cannot be a state", d.dtype))
            })?;
            let tensor = Tensor::zeros(d.shape.as_slice(), storage, device)?;
            state
                .entries
                .insert(d.name.clone(), StateEntry::new(tensor, d.dtype, true));
        }
        Ok(state)
    }

    /// Sets every state back to zeros (keeping names, dtypes and shapes), e.g. to start a new conversation.
    pub fn reset(&mut self) -> Result<()> {
        for entry in self.entries.values_mut() {
            entry.tensor = entry.tensor.zeros_like()?;
            entry.exclusive.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// How many times an in-place update had to copy a whole state buffer first, because a tensor outside the
    /// state (from [`ModelState::get`], [`ModelState::set`], a clone or a returned output) could share it.
    pub fn buffer_copies(&self) -> usize {
        self.buffer_copies
    }

    /// Names of the states held.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// The current value of a state (fp16 states are `F16` tensors; integer states are held as `I64`).
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.entries.get(name).map(|e| {
            e.exclusive.store(false, Ordering::Relaxed);
            &e.tensor
        })
    }

    /// The declared element type of a state.
    pub fn dtype(&self, name: &str) -> Option<DataType> {
        self.entries.get(name).map(|e| e.dtype)
    }

    /// Replaces a state's value. An existing state keeps its dtype and shape (the tensor is converted and its shape
    /// checked); a new name is added with the element type of `t`.
    pub fn set(&mut self, name: &str, t: Tensor) -> Result<()> {
        match self.entries.get_mut(name) {
            Some(entry) => {
                if entry.tensor.dims() != t.dims() {
                    return Err(state_error(
                        name,
                        format!(
                            "shape {:?} does not match the state's shape {:?}",
                            t.dims(),
                            entry.tensor.dims()
                        ),
                    ));
                }
                entry.tensor = state_storage(&t, entry.dtype, name)?;
                entry.exclusive.store(false, Ordering::Relaxed);
            }
            None => {
                let dtype = mil_type_of(t.dtype()).ok_or_else(|| {
                    state_error(name, format!("unsupported tensor dtype {:?}", t.dtype()))
                })?;
                let tensor = state_storage(&t, dtype, name)?;
                self.entries
                    .insert(name.to_string(), StateEntry::new(tensor, dtype, false));
            }
        }
        Ok(())
    }

    /// Checks that every declared state is present with the declared dtype and shape.
    pub fn check(&self, decls: &[StateDecl]) -> Result<()> {
        for d in decls {
            let entry = self.entries.get(&d.name).ok_or_else(|| {
                state_error(
                    &d.name,
                    "missing from the state object passed to the call".into(),
                )
            })?;
            if entry.dtype != d.dtype || entry.tensor.dims() != d.shape.as_slice() {
                return Err(state_error(
                    &d.name,
                    format!(
                        "the function declares {} {:?} but the state object holds {} {:?}",
                        d.dtype,
                        d.shape,
                        entry.dtype,
                        entry.tensor.dims()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The value of a state for `read_state` inside a plan run. Unlike [`ModelState::get`] this keeps the state
    /// exclusive: the plan fuses an in-place update only where no value derived from a read is still needed, frees
    /// every value after its last use, and marks the states its outputs may view as shared at the end of the run.
    pub(crate) fn read(&self, name: &str) -> Result<Tensor> {
        self.entries
            .get(name)
            .map(|e| e.tensor.clone())
            .ok_or_else(|| {
                state_error(
                    name,
                    "missing from the state object passed to the call".into(),
                )
            })
    }

    /// Replaces a state's contents for `write_state`; the shape must not change.
    pub(crate) fn write(&mut self, name: &str, t: Tensor) -> Result<()> {
        let entry = self.entries.get_mut(name).ok_or_else(|| {
            state_error(
                name,
                "missing from the state object passed to the call".into(),
            )
        })?;
        if entry.tensor.dims() != t.dims() {
            return Err(state_error(
                name,
                format!(
                    "write_state with shape {:?}, state has {:?}",
                    t.dims(),
                    entry.tensor.dims()
                ),
            ));
        }
        let storage = entry.tensor.dtype();
        entry.tensor = if t.dtype() == storage {
            t
        } else {
            t.to_dtype(storage)?
        };
        entry.exclusive.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Dims and storage dtype of a state.
    pub(crate) fn layout_of(&self, name: &str) -> Result<(Vec<usize>, DType)> {
        self.entries
            .get(name)
            .map(|e| (e.tensor.dims().to_vec(), e.tensor.dtype()))
            .ok_or_else(|| {
                state_error(
                    name,
                    "missing from the state object passed to the call".into(),
                )
            })
    }

    /// Writes `update` (flattened, already in the state's dtype) at the flat positions `indices` of the state's
    /// buffer, in place; the buffer is first copied when something outside this state may share it.
    pub(crate) fn update_in_place(
        &mut self,
        name: &str,
        indices: &Tensor,
        update: &Tensor,
    ) -> Result<()> {
        let entry = self.entries.get_mut(name).ok_or_else(|| {
            state_error(
                name,
                "missing from the state object passed to the call".into(),
            )
        })?;
        if !entry.exclusive.load(Ordering::Relaxed) || !entry.tensor.is_contiguous() {
            entry.tensor = if entry.tensor.is_contiguous() {
                entry.tensor.copy()?
            } else {
                entry.tensor.contiguous()?
            };
            entry.exclusive.store(true, Ordering::Relaxed);
            self.buffer_copies += 1;
        }
        let source = update.flatten_all()?.contiguous()?;
        entry
            .tensor
            .flatten_all()?
            .scatter_set(indices, &source, 0)?;
        Ok(())
    }

    /// Records that a tensor outside this state (e.g. a returned output) may share the state's buffer.
    pub(crate) fn mark_shared(&self, name: &str) {
        if let Some(e) = self.entries.get(name) {
            e.exclusive.store(false, Ordering::Relaxed);
        }
    }
}
