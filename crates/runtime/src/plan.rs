//! Lowering a MIL function to an execution plan, and running it.
//!
//! At load every value is given a slot index (or resolved to a constant or a state), constants are materialised
//! once (weight blobs shared through a [`ConstCache`]), `constexpr_*` ops are evaluated, each op's kernel is looked
//! up in the op table, and the step after which each slot is last used is recorded so that intermediates are freed
//! early. Running a plan is then a loop over steps with no name lookups.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{Device, Tensor};
use candle_coreml_format::blob::WeightStore;
use candle_coreml_format::mil::{
    Binding, DataType, Dim, Function, Operation, Value, ValueData, ValueType,
};

use crate::consts::{
    host_from_tensor, host_from_value, materialise, ConstCache, ConstValue, HostArray,
};
use crate::dtype::{storage_dtype, to_interface, to_storage};
use crate::error::{program_error, Result, RuntimeError};
use crate::ops::constexpr::{const_kernels, ConstCtx};
use crate::ops::{kernels, Arg, OpCtx, Operand, Step};
use crate::state::{ModelState, StateDecl};

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
                        match &v.data {
                            ValueData::Blob(b) => {
                                k.push_str(&format!("{p}=@{}:{};", b.path, b.offset))
                            }
                            other => k.push_str(&format!("{p}={:?}:{other:?};", v.ty)),
                        }
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
        };
        plan.fuse_state_updates();
        plan.fuse_repeated_kv_matmuls();
        plan.compute_frees();
        Ok(plan)
    }

    /// Turns each `r = read_state(S)`, `y = slice_update(x=r, ...)`, `write_state(S, data=y)` chain into one in-place
    /// update of S, when no other value that may view S's buffer is still needed at that point (values that ops
    /// listed by [`crate::ops::may_return_view`] derive from a `read_state` count as views) and nothing else touches
    /// S in between. The `read_state` is dropped when the update was its only use.
    fn fuse_state_updates(&mut self) {
        const KEEP: usize = usize::MAX;
        let n = self.slot_count;
        let mut producer: Vec<Option<usize>> = vec![None; n];
        let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut aliases: Vec<BTreeSet<String>> = vec![BTreeSet::new(); n];
        for (i, step) in self.steps.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for (_, args) in &step.params {
                for a in args {
                    match &a.operand {
                        Operand::Slot(s) => {
                            uses[*s].push(i);
                            seen.extend(aliases[*s].iter().cloned());
                        }
                        Operand::State(name) => {
                            seen.insert(name.clone());
                        }
                        Operand::Const(_) => {}
                    }
                }
            }
            if !crate::ops::may_return_view(&step.op_type) {
                seen.clear();
            }
            for (slot, _) in &step.outputs {
                producer[*slot] = Some(i);
                aliases[*slot] = seen.clone();
            }
        }
        let mut is_output = vec![false; n];
        let mut seen_by_outputs = BTreeSet::new();
        for (_, a) in &self.outputs {
            match &a.operand {
                Operand::Slot(s) => {
                    is_output[*s] = true;
                    seen_by_outputs.extend(aliases[*s].iter().cloned());
                }
                Operand::State(name) => {
                    seen_by_outputs.insert(name.clone());
                }
                Operand::Const(_) => {}
            }
        }
        self.states_seen_by_outputs = seen_by_outputs.into_iter().collect();
        let last_use: Vec<usize> = (0..n)
            .map(|s| {
                if is_output[s] {
                    KEEP
                } else {
                    uses[s].iter().copied().max().unwrap_or(0)
                }
            })
            .collect();
        let single_slot = |step: &Step, param: &str| -> Option<usize> {
            match step
                .params
                .iter()
                .find(|(p, _)| p == param)
                .map(|(_, a)| a.as_slice())
            {
                Some(
                    [Arg {
                        operand: Operand::Slot(s),
                        ..
                    }],
                ) => Some(*s),
                _ => None,
            }
        };
        let single_state = |step: &Step, param: &str| -> Option<(String, ValueType)> {
            match step
                .params
                .iter()
                .find(|(p, _)| p == param)
                .map(|(_, a)| a.as_slice())
            {
                Some(
                    [Arg {
                        operand: Operand::State(name),
                        ty,
                    }],
                ) => Some((name.clone(), ty.clone())),
                _ => None,
            }
        };
        let touches = |step: &Step, state: &str| {
            step.params
                .iter()
                .flat_map(|(_, a)| a.iter())
                .any(|a| matches!(&a.operand, Operand::State(s) if s == state))
        };
        let mut removed = BTreeSet::new();
        let mut replaced: Vec<(usize, String, ValueType)> = Vec::new();
        for b in 0..self.steps.len() {
            let step = &self.steps[b];
            if step.op_type != "slice_update" {
                continue;
            }
            let Some(r) = single_slot(step, "x") else {
                continue;
            };
            let Some(a) = producer[r] else { continue };
            // The read may feed earlier ops too (ANEMLL reuses one read for attention and the next update), but
            // this update must be its last use, and x only.
            let uses_here = uses[r].iter().filter(|&&u| u == b).count();
            if self.steps[a].op_type != "read_state" || last_use[r] != b || uses_here != 1 {
                continue;
            }
            let Some((state, state_ty)) = single_state(&self.steps[a], "input") else {
                continue;
            };
            let Some(&(y, _)) = step.outputs.first() else {
                continue;
            };
            if is_output[y] || uses[y].len() != 1 {
                continue;
            }
            let c = uses[y][0];
            let writes_back = self.steps[c].op_type == "write_state"
                && single_state(&self.steps[c], "input").is_some_and(|(s, _)| s == state)
                && single_slot(&self.steps[c], "data") == Some(y);
            if !writes_back || removed.contains(&a) || removed.contains(&c) {
                continue;
            }
            let others_touch = (a + 1..c).any(|i| i != b && touches(&self.steps[i], &state));
            let live_view = (0..n).any(|s| {
                s != r
                    && aliases[s].contains(&state)
                    && producer[s].is_some_and(|p| p < b)
                    && last_use[s] >= b
            });
            if others_touch || live_view {
                continue;
            }
            if uses[r].len() == 1 {
                removed.insert(a);
            }
            removed.insert(c);
            replaced.push((b, state, state_ty));
        }
        self.fused_state_updates = replaced.len();
        for (b, state, ty) in replaced {
            let step = &mut self.steps[b];
            step.kernel = crate::ops::state::slice_update_state_in_place;
            step.outputs.clear();
            for (p, args) in step.params.iter_mut() {
                if p == "x" {
                    *args = vec![Arg {
                        operand: Operand::State(state.clone()),
                        ty: ty.clone(),
                    }];
                }
            }
        }
        self.remove_steps(&removed);
    }

    /// Drops the steps at the given indices (steps fused into others).
    fn remove_steps(&mut self, removed: &BTreeSet<usize>) {
        let steps = std::mem::take(&mut self.steps);
        self.steps = steps
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(_, s)| s)
            .collect();
    }

    /// Turns each `e = expand_dims(kv [G, S, D], axes=[1])`, `t = tile(e, reps=[1, R, 1, 1])`,
    /// `y = reshape(t, [1, G*R, S, D])`, `matmul(x, y)` chain (grouped-query attention repeating each KV head for R
    /// query heads) into one matmul that reads `kv` directly (see [`crate::ops::linear::matmul_repeated_kv`]), so
    /// the repeated tensor is never materialised. Only done when each intermediate is used by the chain alone,
    /// the declared shapes and dtypes fit, and no op between the `expand_dims` and the matmul touches a state
    /// (`kv` may view a state buffer).
    fn fuse_repeated_kv_matmuls(&mut self) {
        let n = self.slot_count;
        let mut producer: Vec<Option<usize>> = vec![None; n];
        let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, step) in self.steps.iter().enumerate() {
            for (_, args) in &step.params {
                for a in args {
                    if let Operand::Slot(s) = a.operand {
                        uses[s].push(i);
                    }
                }
            }
            for (slot, _) in &step.outputs {
                producer[*slot] = Some(i);
            }
        }
        for (_, a) in &self.outputs {
            if let Operand::Slot(s) = a.operand {
                // An output is never an intermediate that can be skipped.
                uses[s].push(usize::MAX);
            }
        }
        let single_arg = |step: &Step, param: &str| -> Option<Arg> {
            match step
                .params
                .iter()
                .find(|(p, _)| p == param)
                .map(|(_, a)| a.as_slice())
            {
                Some([a]) => Some(a.clone()),
                _ => None,
            }
        };
        let slot_of = |arg: &Arg| match arg.operand {
            Operand::Slot(s) => Some(s),
            _ => None,
        };
        let const_ints = |step: &Step, param: &str| -> Option<Vec<i64>> {
            step.const_ints
                .iter()
                .find(|(p, _)| p == param)
                .map(|(_, v)| v.clone())
        };
        // The single producer of `slot` when its op is `op_type` and `user` is the slot's only use.
        let sole_producer = |slot: usize, user: usize, op_type: &str| -> Option<usize> {
            let p = producer[slot]?;
            (self.steps[p].op_type == op_type && uses[slot] == [user]).then_some(p)
        };
        let mut removed = BTreeSet::new();
        let mut rewrites: Vec<(usize, Arg, Vec<Arg>)> = Vec::new();
        for m in 0..self.steps.len() {
            let step = &self.steps[m];
            if step.op_type != "matmul" {
                continue;
            }
            let fused = (|| {
                if single_arg(step, "x")?.ty.dims()?.len() != 4 {
                    return None;
                }
                let y = single_arg(step, "y")?;
                let r = sole_producer(slot_of(&y)?, m, "reshape")?;
                let t_arg = single_arg(&self.steps[r], "x")?;
                let t = sole_producer(slot_of(&t_arg)?, r, "tile")?;
                let e_arg = single_arg(&self.steps[t], "x")?;
                let e = sole_producer(slot_of(&e_arg)?, t, "expand_dims")?;
                let kv = single_arg(&self.steps[e], "x")?;
                slot_of(&kv)?;
                let axes = const_ints(&self.steps[e], "axes")?;
                let reps = const_ints(&self.steps[t], "reps")?;
                let rep = match (axes.as_slice(), reps.as_slice()) {
                    ([1 | -3], [1, rep, 1, 1]) if *rep >= 1 => u64::try_from(*rep).ok()?,
                    _ => return None,
                };
                let (g, s, d) = match kv.ty.fixed_shape()?.as_slice() {
                    [g, s, d] => (*g, *s, *d),
                    _ => return None,
                };
                let repeated = self.steps[r].outputs.first()?.1.ty.fixed_shape()?;
                if repeated != [1, g.checked_mul(rep)?, s, d] {
                    return None;
                }
                let dtype = kv.ty.dtype()?;
                let same_dtype = [&e_arg, &t_arg, &y]
                    .iter()
                    .all(|a| a.ty.dtype() == Some(dtype));
                let touches_state = (e + 1..m).any(|i| {
                    self.steps[i]
                        .params
                        .iter()
                        .flat_map(|(_, a)| a.iter())
                        .any(|a| matches!(a.operand, Operand::State(_)))
                });
                if !same_dtype || touches_state {
                    return None;
                }
                let reps_args = self.steps[t]
                    .params
                    .iter()
                    .find(|(p, _)| p == "reps")
                    .map(|(_, a)| a.clone())?;
                Some(([e, t, r], kv, reps_args))
            })();
            if let Some((chain, kv, reps_args)) = fused {
                if chain.iter().any(|c| removed.contains(c)) {
                    continue;
                }
                removed.extend(chain);
                rewrites.push((m, kv, reps_args));
            }
        }
        self.fused_repeated_kv = rewrites.len();
        for (m, kv, reps_args) in rewrites {
            let step = &mut self.steps[m];
            step.kernel = crate::ops::linear::matmul_repeated_kv;
            for (p, args) in step.params.iter_mut() {
                if p == "y" {
                    *args = vec![kv.clone()];
                }
            }
            step.params
                .push((crate::ops::linear::KV_REPEATS_PARAM.to_string(), reps_args));
        }
        self.remove_steps(&removed);
    }

    /// Number of grouped-query attention matmuls that read the KV heads without repeating them (see
    /// `fuse_repeated_kv_matmuls`).
    pub fn fused_repeated_kv(&self) -> usize {
        self.fused_repeated_kv
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
        for step in &self.steps {
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
                Operand::Const(ConstValue::Tensor { tensor, .. }) => Ok(tensor.clone()),
                Operand::Const(ConstValue::Str(_)) => {
                    Err(program_error(format!("output `{name}` is a string")))
                }
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
