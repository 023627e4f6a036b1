//! Load-time fusion of ANEMLL's elementwise idioms into single fp16 kernels: RMSNorm on a concat, rotate-half
//! RoPE, the scaled masked softmax and silu·mul (see [`FunctionPlan::fuse_elementwise_chains`]).

use std::collections::BTreeSet;

use candle_core::DType;
use candle_coreml_format::mil::{DataType, ValueType};

use super::fusion::Graph;
use super::FunctionPlan;
use crate::consts::ConstValue;
use crate::ops::{Arg, Operand, Step};

/// The slot bound to a single-valued parameter.
fn slot_param(step: &Step, param: &str) -> Option<usize> {
    match step.single_arg(param)?.operand {
        Operand::Slot(s) => Some(s),
        _ => None,
    }
}

/// A parameter's integer constant, read at load.
fn int_param<'s>(step: &'s Step, param: &str) -> Option<&'s [i64]> {
    step.const_ints
        .iter()
        .find(|(p, _)| p == param)
        .map(|(_, v)| v.as_slice())
}

/// The declared fixed shape of a value when it is an fp16 tensor.
fn f16_shape(ty: &ValueType) -> Option<Vec<usize>> {
    if ty.dtype() != Some(DataType::Float16) {
        return None;
    }
    Some(ty.fixed_shape()?.into_iter().map(|d| d as usize).collect())
}

/// The declared fixed fp16 shape of a step's only output.
fn out_f16_shape(step: &Step) -> Option<Vec<usize>> {
    match step.outputs.as_slice() {
        [(_, nt)] => f16_shape(&nt.ty),
        _ => None,
    }
}

/// True when the constant argument holds only the value `v`.
fn const_all_equal(arg: &Arg, v: f64) -> bool {
    let Operand::Const(ConstValue::Tensor { tensor, .. }) = &arg.operand else {
        return false;
    };
    tensor.elem_count() >= 1
        && tensor
            .flatten_all()
            .and_then(|t| t.to_dtype(DType::F64))
            .and_then(|t| t.to_vec1::<f64>())
            .is_ok_and(|vals| vals.iter().all(|&x| x == v))
}

/// The `(start, end)` range a constant, unit-stride, non-squeezing `slice_by_index` takes along each dim of an
/// input of shape `dims`.
fn slice_ranges(step: &Step, dims: &[usize]) -> Option<Vec<(usize, usize)>> {
    let rank = dims.len();
    let begin = int_param(step, "begin")?;
    let end = int_param(step, "end")?;
    let flags = |param: &str| -> Option<Vec<bool>> {
        match int_param(step, param) {
            Some(v) => Some(v.iter().map(|&b| b != 0).collect()),
            None if step.single_arg(param).is_none() => Some(vec![false; rank]),
            None => None,
        }
    };
    let begin_mask = flags("begin_mask")?;
    let end_mask = flags("end_mask")?;
    let squeeze_mask = flags("squeeze_mask")?;
    let stride_ok = match int_param(step, "stride") {
        Some(s) => s.len() == rank && s.iter().all(|&v| v == 1),
        None => step.single_arg("stride").is_none(),
    };
    let lens_ok = [begin.len(), end.len(), begin_mask.len(), end_mask.len()]
        .iter()
        .all(|&l| l == rank)
        && squeeze_mask.len() == rank
        && squeeze_mask.iter().all(|&s| !s);
    if !stride_ok || !lens_ok {
        return None;
    }
    let norm = |v: i64, d: usize| -> usize {
        let d = d as i64;
        (if v < 0 { v + d } else { v }).clamp(0, d) as usize
    };
    Some(
        (0..rank)
            .map(|i| {
                let b = if begin_mask[i] {
                    0
                } else {
                    norm(begin[i], dims[i])
                };
                let e = if end_mask[i] {
                    dims[i]
                } else {
                    norm(end[i], dims[i])
                };
                (b, e)
            })
            .collect(),
    )
}

/// True when a slice of an input of shape `dims` takes every dim whole except the last, of which it takes `[lo, hi)`.
fn is_last_dim_slice(step: &Step, dims: &[usize], lo: usize, hi: usize) -> bool {
    let Some(ranges) = slice_ranges(step, dims) else {
        return false;
    };
    let last = dims.len().wrapping_sub(1);
    ranges.iter().enumerate().all(|(i, &(b, e))| {
        if i == last {
            (b, e) == (lo, hi)
        } else {
            (b, e) == (0, dims[i])
        }
    })
}

/// True when an `axis` (or single-entry `axes`) parameter names the last dim of a rank-`rank` tensor.
fn is_last_axis(values: Option<&[i64]>, rank: usize) -> bool {
    matches!(values, Some([a]) if crate::ops::norm_axis(*a, rank) == Some(rank.wrapping_sub(1)))
}

/// A matcher: the fused chain ending at a given step, if there is one.
type FindChain = fn(&FunctionPlan, &Graph, usize) -> Option<Rewrite>;

/// One fused chain: the step that becomes the fused op, what it runs, and the steps it replaces.
struct Rewrite {
    at: usize,
    op_type: &'static str,
    kernel: crate::ops::Kernel,
    params: Vec<(String, Vec<Arg>)>,
    removed: Vec<usize>,
}

impl FunctionPlan {
    /// Replaces ANEMLL's elementwise idioms on fp16 values by single kernels (CPU plans only):
    /// - RMSNorm as `mul(x, -1) -> concat([x, -x], last) -> layer_norm(last) -> slice_by_index(first half)`,
    ///   optionally followed by `mul(gain)`, becomes [`crate::ops::normalization::rms_norm_of_concat`];
    /// - the rotate-half rotary embedding `add(mul(x, cos), mul(concat([mul(x2, -1), x1], last), sin))` with
    ///   `x1`, `x2` the halves of x's last dim becomes [`crate::ops::attention::rotate_half_embedding`];
    /// - attention's `softmax(add(mul(scores, scale), mask), last)` becomes
    ///   [`crate::ops::activation::scaled_masked_softmax`];
    /// - the gated MLP's `mul(silu(gate), up)` becomes [`crate::ops::activation::silu_mul`].
    ///
    /// Only when every intermediate is used by the chain alone, the declared types are fixed-shape fp16, the
    /// constant parameters are what the idiom needs, and no step between the chain's first and last op touches a
    /// state (an input may view a state buffer that is updated in place).
    pub(super) fn fuse_elementwise_chains(&mut self) {
        if !self.device.is_cpu() {
            return;
        }
        let finders: [FindChain; 4] = [
            Self::find_rms_norm,
            Self::find_rotate_half,
            Self::find_scaled_masked_softmax,
            Self::find_silu_mul,
        ];
        for find in finders {
            let graph = Graph::of(self);
            let mut rewrites: Vec<Rewrite> = Vec::new();
            let mut taken = BTreeSet::new();
            // Last steps first, so that the longest chain (RMSNorm with its gain) wins over its prefix.
            for i in (0..self.steps.len()).rev() {
                let Some(rw) = find(self, &graph, i) else {
                    continue;
                };
                let first = rw.removed.iter().copied().min().unwrap_or(rw.at);
                let touches_state = (first..rw.at).any(|k| {
                    self.steps[k]
                        .params
                        .iter()
                        .flat_map(|(_, a)| a.iter())
                        .any(|a| matches!(a.operand, Operand::State(_)))
                });
                let overlaps = rw.removed.iter().chain([&rw.at]).any(|s| taken.contains(s));
                if touches_state || overlaps {
                    continue;
                }
                taken.extend(rw.removed.iter().copied().chain([rw.at]));
                rewrites.push(rw);
            }
            let mut removed = BTreeSet::new();
            for rw in rewrites {
                let Ok(const_ints) = Step::integer_constants(&rw.params) else {
                    continue;
                };
                let step = &mut self.steps[rw.at];
                step.op_type = rw.op_type.to_string();
                step.kernel = rw.kernel;
                step.params = rw.params;
                step.const_ints = const_ints;
                removed.extend(rw.removed);
            }
            self.remove_steps(&removed);
        }
    }

    /// An ANEMLL RMSNorm chain ending at step `at` (the `slice_by_index`, or the gain `mul` after it).
    fn find_rms_norm(&self, g: &Graph, at: usize) -> Option<Rewrite> {
        let steps = &self.steps;
        let end = &steps[at];
        let (s, gain) = match end.op_type.as_str() {
            "slice_by_index" => (at, None),
            "mul" => {
                let (x, y) = (end.single_arg("x")?, end.single_arg("y")?);
                let (sliced, gain) = match (&x.operand, &y.operand) {
                    (Operand::Slot(s), Operand::Const(_)) => (*s, y),
                    (Operand::Const(_), Operand::Slot(s)) => (*s, x),
                    _ => return None,
                };
                (
                    g.sole_producer(steps, sliced, at, "slice_by_index")?,
                    Some(gain),
                )
            }
            _ => return None,
        };
        let ln_out = slot_param(&steps[s], "x")?;
        let l = g.sole_producer(steps, ln_out, s, "layer_norm")?;
        let ln = &steps[l];
        if ln.single_arg("gamma").is_some() || ln.single_arg("beta").is_some() {
            return None;
        }
        let cat_out = slot_param(ln, "x")?;
        let c = g.sole_producer(steps, cat_out, l, "concat")?;
        let cat = &steps[c];
        let values = cat
            .params
            .iter()
            .find(|(p, _)| p == "values")
            .map(|(_, a)| a.as_slice())?;
        let [x_arg, neg_arg] = values else {
            return None;
        };
        let (Operand::Slot(x), Operand::Slot(neg)) = (&x_arg.operand, &neg_arg.operand) else {
            return None;
        };
        let m = g.sole_producer(steps, *neg, c, "mul")?;
        let mul = &steps[m];
        let negates_x = match (mul.single_arg("x")?, mul.single_arg("y")?) {
            (a, k) | (k, a) if matches!(a.operand, Operand::Slot(v) if v == *x) => {
                const_all_equal(k, -1.0)
            }
            _ => false,
        };
        let x_dims = f16_shape(&x_arg.ty)?;
        let rank = x_dims.len();
        let n = *x_dims.last()?;
        let mut cat_dims = x_dims.clone();
        cat_dims[rank - 1] = 2 * n;
        let interleaved = int_param(cat, "interleave").is_some_and(|v| v.iter().any(|&b| b != 0))
            || (int_param(cat, "interleave").is_none() && cat.single_arg("interleave").is_some());
        let shapes_ok = f16_shape(&neg_arg.ty)? == x_dims
            && out_f16_shape(mul)? == x_dims
            && out_f16_shape(cat)? == cat_dims
            && out_f16_shape(ln)? == cat_dims
            && out_f16_shape(&steps[s])? == x_dims
            && out_f16_shape(end)? == x_dims;
        let ln_axes_ok = is_last_axis(int_param(ln, "axes"), rank);
        let cat_axis_ok = is_last_axis(int_param(cat, "axis"), rank);
        if !negates_x
            || interleaved
            || !shapes_ok
            || !ln_axes_ok
            || !cat_axis_ok
            || !is_last_dim_slice(&steps[s], &cat_dims, 0, n)
        {
            return None;
        }
        let mut params = vec![("x".to_string(), vec![x_arg.clone()])];
        if let Some(eps) = ln.single_arg("epsilon") {
            params.push(("epsilon".to_string(), vec![eps.clone()]));
        }
        let mut removed = vec![m, c, l];
        if let Some(gain) = gain {
            let gain_dims = f16_shape(&gain.ty)?;
            let count: usize = gain_dims.iter().product();
            if count != n || gain_dims.last() != Some(&n) || gain_dims.len() > rank {
                return None;
            }
            params.push(("gamma".to_string(), vec![gain.clone()]));
            removed.push(s);
        }
        Some(Rewrite {
            at,
            op_type: "rms_norm (fused)",
            kernel: crate::ops::normalization::rms_norm_of_concat,
            params,
            removed,
        })
    }

    /// A rotate-half rotary embedding chain ending at the `add` step `at`.
    fn find_rotate_half(&self, g: &Graph, at: usize) -> Option<Rewrite> {
        let steps = &self.steps;
        let add = &steps[at];
        if add.op_type != "add" {
            return None;
        }
        let a = slot_param(add, "x")?;
        let b = slot_param(add, "y")?;
        self.match_rotate_half(g, at, a, b)
            .or_else(|| self.match_rotate_half(g, at, b, a))
    }

    /// `add(direct, rotated)` at step `at` as `direct = mul(x, cos)`, `rotated = mul(concat([-x2, x1]), sin)`.
    fn match_rotate_half(
        &self,
        g: &Graph,
        at: usize,
        direct: usize,
        rotated: usize,
    ) -> Option<Rewrite> {
        let steps = &self.steps;
        let out_dims = out_f16_shape(&steps[at])?;
        let rank = out_dims.len();
        let d = *out_dims.last()?;
        if !d.is_multiple_of(2) {
            return None;
        }
        let half = d / 2;
        let mut half_dims = out_dims.clone();
        half_dims[rank - 1] = half;
        let dm = g.sole_producer(steps, direct, at, "mul")?;
        let rm = g.sole_producer(steps, rotated, at, "mul")?;
        // The operand of `rotated`'s mul that is a concat of [-x2, x1], and the other one (sin).
        let (r_mul_x, r_mul_y) = (steps[rm].single_arg("x")?, steps[rm].single_arg("y")?);
        let (cat, sin) = [(r_mul_x, r_mul_y), (r_mul_y, r_mul_x)]
            .into_iter()
            .find_map(|(cand, other)| match cand.operand {
                Operand::Slot(s) => Some((g.sole_producer(steps, s, rm, "concat")?, other)),
                _ => None,
            })?;
        let cat_step = &steps[cat];
        let values = cat_step
            .params
            .iter()
            .find(|(p, _)| p == "values")
            .map(|(_, a)| a.as_slice())?;
        let [neg_arg, x1_arg] = values else {
            return None;
        };
        let (Operand::Slot(neg), Operand::Slot(x1)) = (&neg_arg.operand, &x1_arg.operand) else {
            return None;
        };
        let nm = g.sole_producer(steps, *neg, cat, "mul")?;
        let x2 = match (steps[nm].single_arg("x")?, steps[nm].single_arg("y")?) {
            (v, k) | (k, v) if const_all_equal(k, -1.0) => match v.operand {
                Operand::Slot(s) => s,
                _ => return None,
            },
            _ => return None,
        };
        let s1 = g.sole_producer(steps, *x1, cat, "slice_by_index")?;
        let s2 = g.sole_producer(steps, x2, nm, "slice_by_index")?;
        let x = slot_param(&steps[s1], "x")?;
        if slot_param(&steps[s2], "x")? != x {
            return None;
        }
        let x_arg = steps[s1].single_arg("x")?;
        // `direct` multiplies the same x by cos.
        let (dx, dy) = (steps[dm].single_arg("x")?, steps[dm].single_arg("y")?);
        let cos = if matches!(dx.operand, Operand::Slot(s) if s == x) {
            dy
        } else if matches!(dy.operand, Operand::Slot(s) if s == x) {
            dx
        } else {
            return None;
        };
        let interleaved = int_param(cat_step, "interleave")
            .is_some_and(|v| v.iter().any(|&b| b != 0))
            || (int_param(cat_step, "interleave").is_none()
                && cat_step.single_arg("interleave").is_some());
        let shapes_ok = f16_shape(&x_arg.ty)? == out_dims
            && out_f16_shape(&steps[dm])? == out_dims
            && out_f16_shape(&steps[rm])? == out_dims
            && out_f16_shape(cat_step)? == out_dims
            && out_f16_shape(&steps[nm])? == half_dims
            && out_f16_shape(&steps[s1])? == half_dims
            && out_f16_shape(&steps[s2])? == half_dims
            && f16_shape(&cos.ty).is_some()
            && f16_shape(&sin.ty).is_some();
        if interleaved
            || !shapes_ok
            || !is_last_axis(int_param(cat_step, "axis"), rank)
            || !is_last_dim_slice(&steps[s1], &out_dims, 0, half)
            || !is_last_dim_slice(&steps[s2], &out_dims, half, d)
        {
            return None;
        }
        Some(Rewrite {
            at,
            op_type: "rotate_half_embedding (fused)",
            kernel: crate::ops::attention::rotate_half_embedding,
            params: vec![
                ("x".to_string(), vec![x_arg.clone()]),
                ("cos".to_string(), vec![cos.clone()]),
                ("sin".to_string(), vec![sin.clone()]),
            ],
            removed: vec![dm, rm, cat, nm, s1, s2],
        })
    }

    /// A `softmax(add(mul(scores, scale), mask), last axis)` chain ending at the `softmax` step `at`.
    fn find_scaled_masked_softmax(&self, g: &Graph, at: usize) -> Option<Rewrite> {
        let steps = &self.steps;
        let sm = &steps[at];
        if sm.op_type != "softmax" {
            return None;
        }
        let dims = out_f16_shape(sm)?;
        let axis_ok = match int_param(sm, "axis") {
            Some(a) => is_last_axis(Some(a), dims.len()),
            None => sm.single_arg("axis").is_none(),
        };
        let a = g.sole_producer(steps, slot_param(sm, "x")?, at, "add")?;
        let (ax, ay) = (steps[a].single_arg("x")?, steps[a].single_arg("y")?);
        let (m, mask) =
            [(ax, ay), (ay, ax)]
                .into_iter()
                .find_map(|(cand, other)| match cand.operand {
                    Operand::Slot(s) => Some((g.sole_producer(steps, s, a, "mul")?, other)),
                    _ => None,
                })?;
        let scores = steps[m].single_arg("x")?;
        let scale = steps[m].single_arg("y")?;
        let shapes_ok = out_f16_shape(&steps[a])? == dims
            && out_f16_shape(&steps[m])? == dims
            && [scores, scale, mask]
                .iter()
                .all(|arg| f16_shape(&arg.ty).is_some());
        if !axis_ok || !shapes_ok {
            return None;
        }
        Some(Rewrite {
            at,
            op_type: "scaled_masked_softmax (fused)",
            kernel: crate::ops::activation::scaled_masked_softmax,
            params: vec![
                ("x".to_string(), vec![scores.clone()]),
                ("scale".to_string(), vec![scale.clone()]),
                ("mask".to_string(), vec![mask.clone()]),
            ],
            removed: vec![m, a],
        })
    }

    /// A `mul(silu(gate), up)` chain ending at the `mul` step `at`.
    fn find_silu_mul(&self, g: &Graph, at: usize) -> Option<Rewrite> {
        let steps = &self.steps;
        let mul = &steps[at];
        if mul.op_type != "mul" {
            return None;
        }
        out_f16_shape(mul)?;
        let (mx, my) = (mul.single_arg("x")?, mul.single_arg("y")?);
        let (act, up) =
            [(mx, my), (my, mx)]
                .into_iter()
                .find_map(|(cand, other)| match cand.operand {
                    Operand::Slot(s) => Some((g.sole_producer(steps, s, at, "silu")?, other)),
                    _ => None,
                })?;
        let gate = steps[act].single_arg("x")?;
        if f16_shape(&gate.ty)? != out_f16_shape(&steps[act])? || f16_shape(&up.ty).is_none() {
            return None;
        }
        Some(Rewrite {
            at,
            op_type: "silu_mul (fused)",
            kernel: crate::ops::activation::silu_mul,
            params: vec![
                ("x".to_string(), vec![gate.clone()]),
                ("y".to_string(), vec![up.clone()]),
            ],
            removed: vec![act],
        })
    }
}
