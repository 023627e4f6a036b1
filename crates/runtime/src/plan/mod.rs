//! Lowering a MIL function to an execution plan, and running it.
//!
//! At load every value is given a slot index (or resolved to a constant or a state), constants are materialised
//! once (weight blobs shared through a [`ConstCache`]), `constexpr_*` ops are evaluated, each op's kernel is looked
//! up in the op table, and the step after which each slot is last used is recorded so that intermediates are freed
//! early. Running a plan is then a loop over steps with no name lookups.

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::{Device, Tensor};
use candle_coreml_format::blob::WeightStore;
use candle_coreml_format::mil::{Binding, DataType, Dim, Function, Operation, Value, ValueType};

use crate::consts::{
    host_from_tensor, host_from_value, materialise, ConstCache, ConstValue, HostArray,
};
use crate::dtype::{storage_dtype, to_interface, to_storage};
use crate::error::{program_error, Result, RuntimeError};
use crate::ops::constexpr::{const_kernels, ConstCtx};
use crate::ops::{kernels, Arg, OpCtx, Operand, Step};
use crate::state::{ModelState, StateDecl};

mod attention;
mod chains;
mod fusion;
mod packing;

use packing::{value_key, weight_only_values};

/// A tensor input of a planned function.
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Input name.
    pub name: String,
    /// Declared MIL type.
    pub ty: ValueType,
    slot: usize,
}

/// A MIL function lowered for execution.
#[derive(Debug, Clone)]
pub struct FunctionPlan {
    name: String,
    inputs: Vec<PlanInput>,
    states: Vec<StateDecl>,
    steps: Vec<Step>,
    outputs: Vec<(String, Arg)>,
    slot_count: usize,
    device: Device,
    /// States whose buffer an output may share (marked shared after each run, so later in-place updates copy).
    states_seen_by_outputs: Vec<String>,
    /// Number of `read_state -> slice_update -> write_state` chains turned into in-place state updates.
    fused_state_updates: usize,
    /// Number of matmuls that read repeated KV heads without materialising them.
    fused_repeated_kv: usize,
    /// Number of those matmuls that skip the KV positions their softmax's mask closes.
    masked_kv_products: usize,
}

/// Where a constexpr parameter's value comes from at load.
enum ConstSource<'v> {
    Value(&'v Value),
    Tensor(Tensor, DataType),
    Str(String),
}

struct Lowering<'f> {
    function_name: String,
    weights: Option<&'f WeightStore>,
    cache: &'f ConstCache,
    device: Device,
    env: HashMap<String, Arg>,
    /// `const` op outputs, materialised only where a run-time op uses them (constexpr ops read them directly).
    const_values: HashMap<String, (&'f Value, ValueType)>,
    /// Values used only as `conv`/`linear` weights: on the CPU, palettised and fp16 ones are kept packed.
    weight_only: HashSet<String>,
    slot_count: usize,
}

fn op_display_name(op: &Operation) -> String {
    op.name()
        .map(str::to_string)
        .or_else(|| op.outputs.first().map(|o| o.name.clone()))
        .unwrap_or_else(|| op.op_type.clone())
}

impl<'f> Lowering<'f> {
    fn new_slot(&mut self) -> usize {
        self.slot_count += 1;
        self.slot_count - 1
    }

    fn constant(&self, value: &Value, what: &str) -> Result<ConstValue> {
        materialise(value, self.weights, self.cache, &self.device, what)
    }

    fn resolve(&self, binding: &Binding, what: &str) -> Result<Arg> {
        match binding {
            Binding::Name(n) => {
                if let Some(arg) = self.env.get(n) {
                    return Ok(arg.clone());
                }
                let (value, ty) = self.const_values.get(n).ok_or_else(|| {
                    program_error(format!(
                        "function `{}`: `{what}` uses undefined value `{n}`",
                        self.function_name
                    ))
                })?;
                Ok(Arg {
                    operand: Operand::Const(self.constant(value, n)?),
                    ty: ty.clone(),
                })
            }
            Binding::Value(v) => Ok(Arg {
                operand: Operand::Const(self.constant(v, what)?),
                ty: v.ty.clone(),
            }),
        }
    }

    /// The source of a constexpr parameter (input binding or attribute).
    fn const_source(
        &self,
        binding: Option<&'f Binding>,
        attr: Option<&'f Value>,
        what: &str,
    ) -> Result<Option<ConstSource<'f>>> {
        let value = match (binding, attr) {
            (Some(Binding::Value(v)), _) | (None, Some(v)) => v,
            (Some(Binding::Name(n)), _) => {
                if let Some((v, _)) = self.const_values.get(n) {
                    v
                } else {
                    return match self.env.get(n).map(|a| &a.operand) {
                        Some(Operand::Const(ConstValue::Tensor { tensor, dtype })) => {
                            Ok(Some(ConstSource::Tensor(tensor.clone(), *dtype)))
                        }
                        Some(Operand::Const(c @ ConstValue::Packed { dtype, .. })) => {
                            let dtype = *dtype;
                            match c.to_tensor(&self.device)? {
                                Some(t) => Ok(Some(ConstSource::Tensor(t, dtype))),
                                None => Ok(None),
                            }
                        }
                        Some(Operand::Const(ConstValue::Str(s))) => {
                            Ok(Some(ConstSource::Str(s.clone())))
                        }
                        _ => Err(program_error(format!(
                            "`{what}`: constexpr input `{n}` is not a compile-time constant"
                        ))),
                    };
                }
            }
            (None, None) => return Ok(None),
        };
        if let Some(s) = value.as_str() {
            return Ok(Some(ConstSource::Str(s.to_string())));
        }
        Ok(Some(ConstSource::Value(value)))
    }

    /// Evaluates a `constexpr_*` op at load; its output becomes a constant.
    fn eval_constexpr(&mut self, op: &'f Operation) -> Result<()> {
        let op_name = op_display_name(op);
        let packable = matches!(
            op.op_type.as_str(),
            "constexpr_lut_to_dense"
                | "constexpr_affine_dequantize"
                | "constexpr_blockwise_shift_scale"
        );
        if packable && self.device.is_cpu() {
            if let Some(out) = op
                .outputs
                .first()
                .filter(|o| self.weight_only.contains(&o.name))
            {
                let packed = match op.op_type.as_str() {
                    "constexpr_lut_to_dense" => self.pack_lut(op, &op_name)?,
                    _ => self.pack_quantized(op, &op_name)?,
                };
                if let Some(packed) = packed {
                    self.env.insert(
                        out.name.clone(),
                        Arg {
                            operand: Operand::Const(packed),
                            ty: out.ty.clone(),
                        },
                    );
                    return Ok(());
                }
            }
        }
        let kernel = const_kernels()
            .get(op.op_type.as_str())
            .copied()
            .ok_or_else(|| program_error(format!("no load-time kernel for `{}`", op.op_type)))?;
        let out = op
            .outputs
            .first()
            .ok_or_else(|| program_error(format!("op `{op_name}` has no output")))?;
        let mut names: Vec<&String> = op.inputs.keys().collect();
        names.extend(
            op.attributes
                .keys()
                .filter(|k| k.as_str() != "name" && !op.inputs.contains_key(*k)),
        );
        let mut params: HashMap<String, HostArray> = HashMap::new();
        let mut key = Some(format!("{}|", op.op_type));
        for p in names {
            let binding = match op.inputs.get(p).map(Vec::as_slice) {
                Some([b]) => Some(b),
                Some(_) => {
                    return Err(program_error(format!(
                        "op `{op_name}`: parameter `{p}` must be a single value"
                    )))
                }
                None => None,
            };
            let what = format!("{op_name}.{p}");
            match self.const_source(binding, op.attributes.get(p), &what)? {
                None => {}
                Some(ConstSource::Str(s)) => {
                    // No supported constexpr op reads a string parameter; it still keys the cache.
                    if let Some(k) = key.as_mut() {
                        k.push_str(&format!("{p}={s};"));
                    }
                }
                Some(ConstSource::Value(v)) => {
                    if let Some(k) = key.as_mut() {
                        k.push_str(&format!("{p}={};", value_key(v)));
                    }
                    let host = host_from_value(v, self.weights, &what)?;
                    params.insert(p.clone(), host);
                }
                Some(ConstSource::Tensor(t, dtype)) => {
                    key = None;
                    params.insert(p.clone(), host_from_tensor(&t, dtype)?);
                }
            }
        }
        let out_dtype = out
            .ty
            .dtype()
            .ok_or_else(|| program_error(format!("op `{op_name}`: output is not a tensor")))?;
        let ctx = ConstCtx {
            op_type: &op.op_type,
            op_name: &op_name,
            params,
            out_dtype,
            out_shape: out
                .ty
                .fixed_shape()
                .map(|s| s.into_iter().map(|d| d as usize).collect()),
            device: &self.device,
        };
        let tensor = match key {
            Some(k) => self.cache.derived_or_insert(&k, || kernel(&ctx))?,
            None => kernel(&ctx)?,
        };
        self.env.insert(
            out.name.clone(),
            Arg {
                operand: Operand::Const(ConstValue::Tensor {
                    tensor,
                    dtype: out_dtype,
                }),
                ty: out.ty.clone(),
            },
        );
        Ok(())
    }
}

/// True when a declared type admits the run-time shape `dims`.
fn shape_matches(ty: &ValueType, dims: &[usize]) -> bool {
    match ty.dims() {
        None => true,
        Some(decl) => {
            decl.len() == dims.len()
                && decl.iter().zip(dims).all(|(d, &n)| match d {
                    Dim::Fixed(f) => *f as usize == n,
                    Dim::Unknown => true,
                })
        }
    }
}

fn type_text(ty: &ValueType) -> String {
    match ty.dims() {
        Some(d) => format!(
            "{} [{}]",
            ty.dtype().map(|t| t.to_string()).unwrap_or_default(),
            d.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => format!("{ty:?}"),
    }
}

/// Op types of `function` (with their counts) that this executor cannot run; empty when all are supported.
pub fn unsupported_ops(function: &Function) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for op in &function.block.operations {
        let known = op.op_type == "const"
            || const_kernels().contains_key(op.op_type.as_str())
            || (kernels().contains_key(op.op_type.as_str()) && op.blocks.is_empty());
        if !known {
            *out.entry(op.op_type.clone()).or_default() += 1;
        }
    }
    out
}

impl FunctionPlan {
    /// Lowers `function`. Blobs are read from `weights` (None for programs without weight files) through `cache`,
    /// so that plans built with the same cache share constant tensors. Fails listing every unsupported op type.
    pub fn build(
        name: &str,
        function: &Function,
        weights: Option<&WeightStore>,
        cache: &ConstCache,
        device: &Device,
    ) -> Result<FunctionPlan> {
        let missing = unsupported_ops(function);
        if !missing.is_empty() {
            let ops = missing
                .iter()
                .map(|(k, n)| format!("{k} ({n})"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(RuntimeError::UnsupportedOps {
                function: name.to_string(),
                ops,
            });
        }
        let mut low = Lowering {
            function_name: name.to_string(),
            weights,
            cache,
            device: device.clone(),
            env: HashMap::new(),
            const_values: HashMap::new(),
            weight_only: weight_only_values(function),
            slot_count: 0,
        };
        let mut inputs = Vec::new();
        let mut states = Vec::new();
        for input in &function.inputs {
            match &input.ty {
                ValueType::State(inner) => {
                    let dtype = inner.dtype().ok_or_else(|| {
                        program_error(format!("state `{}` does not wrap a tensor", input.name))
                    })?;
                    let shape = inner.fixed_shape().ok_or_else(|| {
                        program_error(format!("state `{}` has no fixed shape", input.name))
                    })?;
                    states.push(StateDecl {
                        name: input.name.clone(),
                        dtype,
                        shape: shape.into_iter().map(|d| d as usize).collect(),
                    });
                    low.env.insert(
                        input.name.clone(),
                        Arg {
                            operand: Operand::State(input.name.clone()),
                            ty: input.ty.clone(),
                        },
                    );
                }
                ValueType::Tensor { .. } => {
                    let slot = low.new_slot();
                    low.env.insert(
                        input.name.clone(),
                        Arg {
                            operand: Operand::Slot(slot),
                            ty: input.ty.clone(),
                        },
                    );
                    inputs.push(PlanInput {
                        name: input.name.clone(),
                        ty: input.ty.clone(),
                        slot,
                    });
                }
                other => {
                    return Err(program_error(format!(
                        "function `{name}`: input `{}` has unsupported type {other:?}",
                        input.name
                    )))
                }
            }
        }
        let table = kernels();
        let mut steps = Vec::new();
        for op in &function.block.operations {
            let op_name = op_display_name(op);
            if op.op_type == "const" {
                let out = op
                    .outputs
                    .first()
                    .ok_or_else(|| program_error(format!("const `{op_name}` has no output")))?;
                let val = op
                    .constant("val")
                    .ok_or_else(|| program_error(format!("const `{op_name}` has no `val`")))?;
                low.const_values
                    .insert(out.name.clone(), (val, out.ty.clone()));
                continue;
            }
            if const_kernels().contains_key(op.op_type.as_str()) {
                low.eval_constexpr(op)?;
                continue;
            }
            let kernel = table.get(op.op_type.as_str()).copied().ok_or_else(|| {
                program_error(format!("function `{name}`: no kernel for `{}`", op.op_type))
            })?;
            let mut params = Vec::new();
            for (p, bindings) in &op.inputs {
                if let [Binding::Name(n)] = bindings.as_slice() {
                    if p == "weight" {
                        if let Some(arg) = low.pack_dense_weight(n)? {
                            params.push((p.clone(), vec![arg]));
                            continue;
                        }
                    }
                }
                let args = bindings
                    .iter()
                    .map(|b| low.resolve(b, &format!("{op_name}.{p}")))
                    .collect::<Result<Vec<_>>>()?;
                params.push((p.clone(), args));
            }
            for (p, v) in &op.attributes {
                if p != "name" && !op.inputs.contains_key(p) {
                    let arg = low.resolve(&Binding::Value(v.clone()), &format!("{op_name}.{p}"))?;
                    params.push((p.clone(), vec![arg]));
                }
            }
            let mut outputs = Vec::with_capacity(op.outputs.len());
            for out in &op.outputs {
                let slot = low.new_slot();
                outputs.push((slot, out.clone()));
                low.env.insert(
                    out.name.clone(),
                    Arg {
                        operand: Operand::Slot(slot),
                        ty: out.ty.clone(),
                    },
                );
            }
            let const_ints = Step::integer_constants(&params)?;
            steps.push(Step {
                op_type: op.op_type.clone(),
                op_name,
                kernel,
                params,
                outputs,
                free_after: Vec::new(),
                const_ints,
            });
        }
        let mut outputs = Vec::new();
        for out_name in &function.block.outputs {
            let arg = low.resolve(&Binding::Name(out_name.clone()), "block output")?;
            outputs.push((out_name.clone(), arg));
        }
        let slot_count = low.slot_count;
        let mut plan = FunctionPlan {
            name: name.to_string(),
            inputs,
            states,
            steps,
            outputs,
            slot_count,
            device: device.clone(),
            states_seen_by_outputs: Vec::new(),
            fused_state_updates: 0,
            fused_repeated_kv: 0,
            masked_kv_products: 0,
        };
        plan.fuse_state_updates();
        plan.fuse_repeated_kv_matmuls();
        plan.fuse_elementwise_chains();
        plan.masked_kv_products = plan.skip_masked_kv_positions();
        plan.compute_frees();
        Ok(plan)
    }

    /// Number of grouped-query attention matmuls that read the KV heads without repeating them (see
    /// `fuse_repeated_kv_matmuls`).
    pub fn fused_repeated_kv(&self) -> usize {
        self.fused_repeated_kv
    }

    /// Number of grouped-query attention products that skip the KV positions closed by their softmax's mask
    /// (see `skip_masked_kv_positions`).
    pub fn masked_kv_products(&self) -> usize {
        self.masked_kv_products
    }

    /// Number of op parameters bound to palettised weights kept packed (see [`ConstValue::Packed`]).
    pub fn packed_weights(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| s.params.iter().flat_map(|(_, args)| args))
            .filter(|a| matches!(a.operand, Operand::Const(ConstValue::Packed { .. })))
            .count()
    }

    /// Number of state updates done in place (see `fuse_state_updates`).
    pub fn fused_state_updates(&self) -> usize {
        self.fused_state_updates
    }

    /// Records, for every slot, the step after which it is no longer needed.
    fn compute_frees(&mut self) {
        const KEEP: usize = usize::MAX;
        let mut last_use: Vec<Option<usize>> = vec![None; self.slot_count];
        for (i, step) in self.steps.iter().enumerate() {
            for (slot, _) in &step.outputs {
                last_use[*slot] = Some(i);
            }
            for (_, args) in &step.params {
                for a in args {
                    if let Operand::Slot(s) = a.operand {
                        last_use[s] = Some(i);
                    }
                }
            }
        }
        for (_, a) in &self.outputs {
            if let Operand::Slot(s) = a.operand {
                last_use[s] = Some(KEEP);
            }
        }
        for (slot, last) in last_use.into_iter().enumerate() {
            if let Some(i) = last.filter(|&i| i != KEEP) {
                self.steps[i].free_after.push(slot);
            }
        }
    }

    /// Function name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Tensor inputs in declaration order.
    pub fn inputs(&self) -> &[PlanInput] {
        &self.inputs
    }

    /// States the function declares.
    pub fn states(&self) -> &[StateDecl] {
        &self.states
    }

    /// Output names and declared types, in order.
    pub fn outputs(&self) -> Vec<(&str, &ValueType)> {
        self.outputs
            .iter()
            .map(|(n, a)| (n.as_str(), &a.ty))
            .collect()
    }

    /// Number of run-time ops (constants and constexpr ops excluded).
    pub fn step_count(&self) -> usize {
        self.steps.len()
    }

    /// Zero-filled states for this function.
    pub fn make_state(&self) -> Result<ModelState> {
        ModelState::zeros(&self.states, &self.device)
    }

    /// Runs the plan on inputs already in executor form (see [`crate::dtype`]), in declaration order; returns
    /// outputs in executor form.
    pub fn run(&self, inputs: Vec<Tensor>, states: &mut ModelState) -> Result<Vec<Tensor>> {
        if inputs.len() != self.inputs.len() {
            return Err(program_error(format!(
                "function `{}` takes {} inputs, got {}",
                self.name,
                self.inputs.len(),
                inputs.len()
            )));
        }
        states.check(&self.states)?;
        let mut values: Vec<Option<Tensor>> = vec![None; self.slot_count];
        for (input, t) in self.inputs.iter().zip(inputs) {
            values[input.slot] = Some(t);
        }
        let timed = crate::profile::is_enabled();
        for step in &self.steps {
            let started = timed.then(std::time::Instant::now);
            let outs = {
                let mut ctx = OpCtx {
                    step,
                    values: &values,
                    states,
                    device: &self.device,
                };
                (step.kernel)(&mut ctx).map_err(|e| match e {
                    RuntimeError::Candle(c) => RuntimeError::Op {
                        op_type: step.op_type.clone(),
                        op_name: step.op_name.clone(),
                        message: c.to_string(),
                    },
                    other => other,
                })?
            };
            if outs.len() != step.outputs.len() {
                return Err(RuntimeError::Op {
                    op_type: step.op_type.clone(),
                    op_name: step.op_name.clone(),
                    message: format!(
                        "produced {} outputs, the program declares {}",
                        outs.len(),
                        step.outputs.len()
                    ),
                });
            }
            for ((slot, nt), mut t) in step.outputs.iter().zip(outs) {
                if let Some(d) = nt.ty.dtype().and_then(storage_dtype) {
                    if t.dtype() != d {
                        t = t.to_dtype(d)?;
                    }
                }
                if !shape_matches(&nt.ty, t.dims()) {
                    return Err(RuntimeError::Op {
                        op_type: step.op_type.clone(),
                        op_name: step.op_name.clone(),
                        message: format!(
                            "output `{}` has shape {:?}, the program declares {}",
                            nt.name,
                            t.dims(),
                            type_text(&nt.ty)
                        ),
                    });
                }
                values[*slot] = Some(t);
            }
            for &s in &step.free_after {
                values[s] = None;
            }
            if let Some(started) = started {
                crate::profile::record(&step.op_type, started.elapsed());
            }
        }
        for name in &self.states_seen_by_outputs {
            states.mark_shared(name);
        }
        self.outputs
            .iter()
            .map(|(name, arg)| match &arg.operand {
                Operand::Slot(s) => values
                    .get(*s)
                    .and_then(|v| v.clone())
                    .ok_or_else(|| program_error(format!("output `{name}` was not computed"))),
                Operand::Const(c) => c
                    .to_tensor(&self.device)?
                    .ok_or_else(|| program_error(format!("output `{name}` is a string"))),
                Operand::State(s) => states.read(s),
            })
            .collect()
    }

    /// Runs the plan on named inputs of any sensible dtype (converted to the declared types, integers range-checked,
    /// shapes checked against the program); returns named outputs in their declared types (see
    /// [`crate::dtype::interface_dtype`]).
    pub fn run_named(
        &self,
        inputs: &[(&str, &Tensor)],
        states: &mut ModelState,
    ) -> Result<Vec<(String, Tensor)>> {
        for (name, _) in inputs {
            if !self.inputs.iter().any(|i| i.name == *name) {
                let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
                return Err(RuntimeError::Input {
                    name: name.to_string(),
                    message: format!(
                        "function `{}` has no such input (inputs: {})",
                        self.name,
                        known.join(", ")
                    ),
                });
            }
        }
        let mut ordered = Vec::with_capacity(self.inputs.len());
        for input in &self.inputs {
            let t = inputs
                .iter()
                .find(|(n, _)| *n == input.name)
                .map(|(_, t)| *t)
                .ok_or_else(|| RuntimeError::Input {
                    name: input.name.clone(),
                    message: format!(
                        "missing (function `{}` expects {})",
                        self.name,
                        type_text(&input.ty)
                    ),
                })?;
            if !shape_matches(&input.ty, t.dims()) {
                return Err(RuntimeError::Input {
                    name: input.name.clone(),
                    message: format!(
                        "shape {:?} does not match the declared {}",
                        t.dims(),
                        type_text(&input.ty)
                    ),
                });
            }
            let dtype = input.ty.dtype().unwrap_or(DataType::Float32);
            ordered.push(to_storage(&t.to_device(&self.device)?, dtype, &input.name)?);
        }
        let outs = self.run(ordered, states)?;
        self.outputs
            .iter()
            .zip(outs)
            .map(|((name, arg), t)| {
                let t = match arg.ty.dtype() {
                    Some(d) => to_interface(&t, d)?,
                    None => t,
                };
                Ok((name.clone(), t))
            })
            .collect()
    }
}
