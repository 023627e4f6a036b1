//! Load-time rewrites of a plan: `read_state -> slice_update -> write_state` chains become in-place state
//! updates, and grouped-query attention's `expand_dims -> tile -> reshape -> matmul` chains read the KV heads
//! without materialising the repeated tensor; [`Graph`] gives every pass the producers and users of each slot
//! (the elementwise idioms are in `chains.rs`).

use std::collections::BTreeSet;

use candle_coreml_format::mil::ValueType;

use super::FunctionPlan;
use crate::ops::{Arg, Operand, Step};

impl FunctionPlan {
    /// Turns each `r = read_state(S)`, `y = slice_update(x=r, ...)`, `write_state(S, data=y)` chain into one in-place
    /// update of S, when no other value that may view S's buffer is still needed at that point (values that ops
    /// listed by [`crate::ops::may_return_view`] derive from a `read_state` count as views) and nothing else touches
    /// S in between. The `read_state` is dropped when the update was its only use.
    pub(super) fn fuse_state_updates(&mut self) {
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
            match step.single_arg(param)?.operand {
                Operand::Slot(s) => Some(s),
                _ => None,
            }
        };
        let single_state = |step: &Step, param: &str| -> Option<(String, ValueType)> {
            let arg = step.single_arg(param)?;
            match &arg.operand {
                Operand::State(name) => Some((name.clone(), arg.ty.clone())),
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
    pub(super) fn remove_steps(&mut self, removed: &BTreeSet<usize>) {
        let steps = std::mem::take(&mut self.steps);
        self.steps = steps
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(_, s)| s)
            .collect();
    }

    /// Turns each `e = expand_dims(kv [G, S, D], axes=[1])`, `t = tile(e, reps=[1, R, 1, 1])`,
    /// `y = reshape(t, [1, G*R, S, D])` (or `[G*R, S, D]` for a rank-3 `x`), `matmul(x, y)` chain (grouped-query attention repeating each KV head for R
    /// query heads) into one matmul that reads `kv` directly (see [`crate::ops::linear::matmul_repeated_kv`]), so
    /// the repeated tensor is never materialised. Only done when each intermediate is used by the chain alone,
    /// the declared shapes and dtypes fit, and no op between the `expand_dims` and the matmul touches a state
    /// (`kv` may view a state buffer).
    pub(super) fn fuse_repeated_kv_matmuls(&mut self) {
        let graph = Graph::of(self);
        let single_arg = |step: &Step, param: &str| step.single_arg(param).cloned();
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
        let sole_producer = |slot: usize, user: usize, op_type: &str| -> Option<usize> {
            graph.sole_producer(&self.steps, slot, user, op_type)
        };
        let mut removed = BTreeSet::new();
        let mut rewrites: Vec<(usize, Arg, Vec<Arg>)> = Vec::new();
        for m in 0..self.steps.len() {
            let step = &self.steps[m];
            if step.op_type != "matmul" {
                continue;
            }
            let fused = (|| {
                let x_rank = single_arg(step, "x")?.ty.dims()?.len();
                if x_rank != 3 && x_rank != 4 {
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
                let heads = g.checked_mul(rep)?;
                if repeated != [1, heads, s, d][4 - x_rank..] {
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
}

/// Who produces and who uses each slot of a plan.
pub(super) struct Graph {
    /// The step writing each slot (none for function inputs).
    pub(super) producer: Vec<Option<usize>>,
    /// Steps reading each slot, in order; a function output counts as a use by `usize::MAX`.
    pub(super) uses: Vec<Vec<usize>>,
}

impl Graph {
    /// The producers and users of every slot of `plan`.
    pub(super) fn of(plan: &FunctionPlan) -> Graph {
        let n = plan.slot_count;
        let mut producer = vec![None; n];
        let mut uses: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, step) in plan.steps.iter().enumerate() {
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
        for (_, a) in &plan.outputs {
            if let Operand::Slot(s) = a.operand {
                uses[s].push(usize::MAX);
            }
        }
        Graph { producer, uses }
    }

    /// The step producing `slot` when its op is `op_type`, it has one output and `user` is the slot's only use.
    pub(super) fn sole_producer(
        &self,
        steps: &[Step],
        slot: usize,
        user: usize,
        op_type: &str,
    ) -> Option<usize> {
        let p = (*self.producer.get(slot)?)?;
        let step = &steps[p];
        (step.op_type == op_type && step.outputs.len() == 1 && self.uses[slot] == [user])
            .then_some(p)
    }
}
