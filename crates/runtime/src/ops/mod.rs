//! Op kernels, one file per op family, and the table that maps MIL op types to them.
//!
//! A kernel reads its parameters through [`OpCtx`] (values already resolved to slots or constants at load) and
//! returns its outputs; the executor converts each output to the dtype the program declares.

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use candle_coreml_format::mil::{DataType, NamedType, ValueType};

use crate::consts::ConstValue;
use crate::error::{Result, RuntimeError};
use crate::kernels::PackedMatrix;
use crate::state::ModelState;

pub mod activation;
pub mod attention;
pub mod constexpr;
pub mod elementwise;
pub mod linear;
pub mod normalization;
pub mod pooling;
pub mod recurrent;
pub mod reduction;
pub mod scatter;
pub mod shape;
pub mod sort;
pub mod state;

/// A run-time op implementation.
pub type Kernel = fn(&mut OpCtx<'_>) -> Result<Vec<Tensor>>;

/// Where an op argument comes from, resolved at load.
#[derive(Debug, Clone)]
pub enum Operand {
    /// A value computed at run time (function input or op output), by slot index.
    Slot(usize),
    /// A constant materialised at load.
    Const(ConstValue),
    /// A state input of the function, by name.
    State(String),
}

/// One argument element with its declared type.
#[derive(Debug, Clone)]
pub struct Arg {
    /// Where the value comes from.
    pub operand: Operand,
    /// Its declared type.
    pub ty: ValueType,
}

/// One operation of a plan.
#[derive(Debug, Clone)]
pub struct Step {
    /// Op type (`conv`, `add`, ...).
    pub op_type: String,
    /// Op name (its `name` attribute, else its first output).
    pub op_name: String,
    /// The kernel chosen at load.
    pub kernel: Kernel,
    /// Parameters by name (attributes that are not `name` included), each with its bindings.
    pub params: Vec<(String, Vec<Arg>)>,
    /// Output slots and their declared types.
    pub outputs: Vec<(usize, NamedType)>,
    /// Slots whose last use is this step, freed after it.
    pub free_after: Vec<usize>,
    /// Integer constant parameters read once at load (so kernels do not convert them on every run).
    pub const_ints: Vec<(String, Vec<i64>)>,
}

/// Integer constants with at most this many elements (shapes, axes, begin/end, ...) are cached per step.
const MAX_CACHED_INTS: usize = 64;

impl Step {
    /// The argument bound to `param` when it has exactly one binding.
    pub fn single_arg(&self, param: &str) -> Option<&Arg> {
        match self
            .params
            .iter()
            .find(|(p, _)| p == param)
            .map(|(_, a)| a.as_slice())
        {
            Some([a]) => Some(a),
            _ => None,
        }
    }

    /// The small integer constant parameters among `params` (single-valued, non-float constants of at most
    /// `MAX_CACHED_INTS` elements), flattened.
    pub fn integer_constants(params: &[(String, Vec<Arg>)]) -> Result<Vec<(String, Vec<i64>)>> {
        let mut out = Vec::new();
        for (name, args) in params {
            if let [Arg {
                operand: Operand::Const(ConstValue::Tensor { tensor, .. }),
                ..
            }] = args.as_slice()
            {
                if !tensor.dtype().is_float() && tensor.elem_count() <= MAX_CACHED_INTS {
                    let v = tensor
                        .flatten_all()?
                        .to_dtype(DType::I64)?
                        .to_vec1::<i64>()?;
                    out.push((name.clone(), v));
                }
            }
        }
        Ok(out)
    }
}

/// What a kernel sees while it runs.
pub struct OpCtx<'a> {
    /// The step being run.
    pub step: &'a Step,
    /// Run-time values by slot.
    pub values: &'a [Option<Tensor>],
    /// The states of this call.
    pub states: &'a mut ModelState,
    /// The device tensors live on.
    pub device: &'a Device,
}

impl OpCtx<'_> {
    /// An error about this op.
    pub fn err(&self, message: impl Into<String>) -> RuntimeError {
        RuntimeError::Op {
            op_type: self.step.op_type.clone(),
            op_name: self.step.op_name.clone(),
            message: message.into(),
        }
    }

    /// The bindings of a parameter, if given.
    pub fn args(&self, param: &str) -> Option<&[Arg]> {
        self.step
            .params
            .iter()
            .find(|(name, _)| name == param)
            .map(|(_, args)| args.as_slice())
    }

    /// True when the parameter is given.
    pub fn has(&self, param: &str) -> bool {
        self.args(param).is_some_and(|a| !a.is_empty())
    }

    fn single(&self, param: &str) -> Result<Option<&Arg>> {
        match self.args(param) {
            None | Some([]) => Ok(None),
            Some([a]) => Ok(Some(a)),
            Some(_) => Err(self.err(format!("parameter `{param}` takes one value, got several"))),
        }
    }

    fn arg_tensor(&self, param: &str, arg: &Arg) -> Result<Tensor> {
        match &arg.operand {
            Operand::Slot(i) => self.values.get(*i).and_then(|v| v.clone()).ok_or_else(|| {
                self.err(format!(
                    "parameter `{param}`: value used after it was freed"
                ))
            }),
            Operand::Const(c) => c.to_tensor(self.device)?.ok_or_else(|| {
                self.err(format!(
                    "parameter `{param}` is a string, expected a tensor"
                ))
            }),
            Operand::State(name) => Err(self.err(format!(
                "parameter `{param}` is the state `{name}`, only read_state/write_state take states"
            ))),
        }
    }

    /// A constant weight kept packed (see [`ConstValue::Packed`]) with its dense shape, if `param` is one.
    pub fn packed_weight(&self, param: &str) -> Option<(&PackedMatrix, &[usize])> {
        match self.single(param).ok().flatten().map(|a| &a.operand) {
            Some(Operand::Const(ConstValue::Packed { matrix, shape, .. })) => {
                Some((matrix.as_ref(), shape.as_slice()))
            }
            _ => None,
        }
    }

    /// A required tensor parameter.
    pub fn tensor(&self, param: &str) -> Result<Tensor> {
        let arg = self
            .single(param)?
            .ok_or_else(|| self.err(format!("missing required parameter `{param}`")))?;
        self.arg_tensor(param, arg)
    }

    /// An optional tensor parameter.
    pub fn opt_tensor(&self, param: &str) -> Result<Option<Tensor>> {
        match self.single(param)? {
            Some(arg) => Ok(Some(self.arg_tensor(param, arg)?)),
            None => Ok(None),
        }
    }

    /// A variadic tensor parameter (e.g. `concat`'s `values`).
    pub fn tensors(&self, param: &str) -> Result<Vec<Tensor>> {
        let args = self
            .args(param)
            .ok_or_else(|| self.err(format!("missing required parameter `{param}`")))?;
        args.iter().map(|a| self.arg_tensor(param, a)).collect()
    }

    /// The declared MIL element type of a (single) parameter.
    pub fn param_dtype(&self, param: &str) -> Option<DataType> {
        self.single(param).ok().flatten().and_then(|a| a.ty.dtype())
    }

    /// A required parameter read as integers (any rank, flattened).
    pub fn ints(&self, param: &str) -> Result<Vec<i64>> {
        if let Some((_, v)) = self.step.const_ints.iter().find(|(name, _)| name == param) {
            return Ok(v.clone());
        }
        let t = self.tensor(param)?;
        if t.dtype().is_float() {
            return Err(self.err(format!(
                "parameter `{param}` must be integer, got {:?}",
                t.dtype()
            )));
        }
        Ok(t.flatten_all()?.to_dtype(DType::I64)?.to_vec1::<i64>()?)
    }

    /// An optional integer-list parameter.
    pub fn opt_ints(&self, param: &str) -> Result<Option<Vec<i64>>> {
        if self.has(param) {
            Ok(Some(self.ints(param)?))
        } else {
            Ok(None)
        }
    }

    /// A required scalar integer parameter.
    pub fn int(&self, param: &str) -> Result<i64> {
        match self.ints(param)?.as_slice() {
            [v] => Ok(*v),
            other => Err(self.err(format!(
                "parameter `{param}` must be one integer, got {} values",
                other.len()
            ))),
        }
    }

    /// An optional scalar integer parameter with a default.
    pub fn int_or(&self, param: &str, default: i64) -> Result<i64> {
        if self.has(param) {
            self.int(param)
        } else {
            Ok(default)
        }
    }

    /// A required parameter read as floats (flattened).
    pub fn floats(&self, param: &str) -> Result<Vec<f64>> {
        let t = self.tensor(param)?;
        Ok(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// An optional scalar float parameter with a default.
    pub fn float_or(&self, param: &str, default: f64) -> Result<f64> {
        if !self.has(param) {
            return Ok(default);
        }
        match self.floats(param)?.as_slice() {
            [v] => Ok(*v),
            other => Err(self.err(format!(
                "parameter `{param}` must be one number, got {} values",
                other.len()
            ))),
        }
    }

    /// An optional bool-list parameter.
    pub fn opt_bools(&self, param: &str) -> Result<Option<Vec<bool>>> {
        if !self.has(param) {
            return Ok(None);
        }
        Ok(Some(
            self.ints(param)?.into_iter().map(|v| v != 0).collect(),
        ))
    }

    /// An optional scalar bool parameter with a default.
    pub fn bool_or(&self, param: &str, default: bool) -> Result<bool> {
        Ok(self.int_or(param, i64::from(default))? != 0)
    }

    /// An optional string parameter.
    pub fn opt_string(&self, param: &str) -> Result<Option<String>> {
        match self.single(param)? {
            None => Ok(None),
            Some(Arg {
                operand: Operand::Const(ConstValue::Str(s)),
                ..
            }) => Ok(Some(s.clone())),
            Some(_) => Err(self.err(format!("parameter `{param}` must be a constant string"))),
        }
    }

    /// A string parameter with a default.
    pub fn string_or(&self, param: &str, default: &str) -> Result<String> {
        Ok(self
            .opt_string(param)?
            .unwrap_or_else(|| default.to_string()))
    }

    /// The state bound to a parameter.
    pub fn state_name(&self, param: &str) -> Result<String> {
        match self.single(param)? {
            Some(Arg {
                operand: Operand::State(name),
                ..
            }) => Ok(name.clone()),
            _ => Err(self.err(format!(
                "parameter `{param}` must be a state input of the function"
            ))),
        }
    }

    /// The declared type of output `i`.
    pub fn out_type(&self, i: usize) -> Option<&ValueType> {
        self.step.outputs.get(i).map(|(_, nt)| &nt.ty)
    }

    /// The declared element type of output `i`.
    pub fn out_dtype(&self, i: usize) -> Option<DataType> {
        self.out_type(i).and_then(ValueType::dtype)
    }

    /// Normalises a possibly negative axis for a tensor of rank `rank`.
    pub fn axis(&self, axis: i64, rank: usize) -> Result<usize> {
        norm_axis(axis, rank)
            .ok_or_else(|| self.err(format!("axis {axis} is out of range for rank {rank}")))
    }

    /// Normalises a list of possibly negative axes.
    pub fn axes(&self, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
        axes.iter().map(|&a| self.axis(a, rank)).collect()
    }
}

/// Normalises a possibly negative axis; `None` when out of range.
pub fn norm_axis(axis: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    (0..r).contains(&a).then_some(a as usize)
}

/// Runs `f` on `t` widened to f32 (for floats of lower precision) and narrows the result back.
pub fn in_f32(t: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let dtype = t.dtype();
    if matches!(dtype, DType::F16 | DType::BF16) {
        f(&t.to_dtype(DType::F32)?)?
            .to_dtype(dtype)
            .map_err(Into::into)
    } else {
        f(t)
    }
}

/// Applies `f` to every element (as f32) on the host; used for functions candle does not provide.
pub fn map_host(t: &Tensor, f: impl Fn(f32) -> f32) -> Result<Tensor> {
    let dtype = t.dtype();
    let shape = t.dims().to_vec();
    let v: Vec<f32> = t
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f)
        .collect();
    Ok(Tensor::from_vec(v, shape, t.device())?.to_dtype(dtype)?)
}

/// The numpy broadcast shape of several shapes, or `None` when they are incompatible.
pub fn broadcast_shapes(shapes: &[&[usize]]) -> Option<Vec<usize>> {
    let rank = shapes.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut out = vec![1usize; rank];
    for s in shapes {
        let off = rank - s.len();
        for (i, &d) in s.iter().enumerate() {
            let o = &mut out[off + i];
            if *o == 1 {
                *o = d;
            } else if d != 1 && d != *o {
                return None;
            }
        }
    }
    Some(out)
}

/// Broadcasts `t` to `shape` (numpy rules).
pub fn broadcast_to(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if t.dims() == shape {
        Ok(t.clone())
    } else {
        Ok(t.broadcast_as(shape)?)
    }
}

/// True when an op's kernel may return a view of (share storage with) one of its inputs; every other kernel
/// returns freshly allocated tensors. Used to decide when a state buffer can be updated in place.
pub fn may_return_view(op_type: &str) -> bool {
    let in_family = |family: &[(&str, Kernel)]| family.iter().any(|(name, _)| *name == op_type);
    in_family(shape::KERNELS)
        || in_family(reduction::KERNELS)
        || in_family(state::KERNELS)
        || matches!(op_type, "identity" | "cast" | "lstm")
}

/// Every op type the executor supports (run-time kernels, load-time `constexpr_*` ops and `const`), sorted.
pub fn supported_ops() -> Vec<&'static str> {
    let mut ops: Vec<&'static str> = kernels()
        .keys()
        .chain(constexpr::const_kernels().keys())
        .copied()
        .chain(["const"])
        .collect();
    ops.sort_unstable();
    ops
}

/// The kernel table: MIL op type to run-time kernel.
pub fn kernels() -> &'static HashMap<&'static str, Kernel> {
    static TABLE: OnceLock<HashMap<&'static str, Kernel>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let families: [&[(&'static str, Kernel)]; 12] = [
            elementwise::KERNELS,
            activation::KERNELS,
            attention::KERNELS,
            linear::KERNELS,
            reduction::KERNELS,
            scatter::KERNELS,
            normalization::KERNELS,
            shape::KERNELS,
            sort::KERNELS,
            state::KERNELS,
            pooling::KERNELS,
            recurrent::KERNELS,
        ];
        families.iter().flat_map(|f| f.iter().copied()).collect()
    })
}
