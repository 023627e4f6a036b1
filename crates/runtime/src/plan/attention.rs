//! Masked KV positions in grouped-query attention: the score product feeding a masked softmax, and the value
//! product fed by it (directly or through reshapes that keep the KV positions last), read the softmax's mask so that both skip the KV positions the mask closes in every row
//! (see [`KV_COLUMN_MASK_PARAM`]). A decode step then reads the filled part of the KV cache, not all of it.

use candle_coreml_format::mil::Dim;

use crate::ops::linear::{KV_COLUMN_MASK_PARAM, KV_REPEATS_PARAM};
use crate::ops::{Arg, Operand, Step};

use super::fusion::Graph;
use super::FunctionPlan;

/// Op type of the fused masked softmax (`softmax(add(mul(scores, scale), mask))`) these products surround.
const MASKED_SOFTMAX: &str = "scaled_masked_softmax (fused)";

/// True for a grouped-query matmul (see `fuse_repeated_kv_matmuls`) with `transpose_y` as given.
fn is_kv_product(step: &Step, transpose_y: bool) -> bool {
    let transposed = step
        .const_ints
        .iter()
        .find(|(p, _)| p == "transpose_y")
        .is_some_and(|(_, v)| v.as_slice() == [1]);
    step.params.iter().any(|(p, _)| p == KV_REPEATS_PARAM)
        && transposed == transpose_y
        && step.single_arg(KV_COLUMN_MASK_PARAM).is_none()
}

fn slot_of(arg: Option<&Arg>) -> Option<usize> {
    match arg?.operand {
        Operand::Slot(s) => Some(s),
        _ => None,
    }
}

impl FunctionPlan {
    /// Gives the mask of every fused masked softmax to the grouped-query score product that is its sole input
    /// and to the grouped-query value products that take its output. Returns how many products were given one.
    pub(super) fn skip_masked_kv_positions(&mut self) -> usize {
        let graph = Graph::of(self);
        let producer = |slot: usize| graph.producer.get(slot).copied().flatten();
        let mut grants: Vec<(usize, Arg)> = Vec::new();
        for (b, softmax) in self.steps.iter().enumerate() {
            if softmax.op_type != MASKED_SOFTMAX {
                continue;
            }
            let (Some(mask), Some(scores), Some((probs, _))) = (
                softmax.single_arg("mask"),
                slot_of(softmax.single_arg("x")),
                softmax.outputs.first(),
            ) else {
                continue;
            };
            // The mask must exist before the score product runs.
            let mask_ready_by = slot_of(Some(mask)).and_then(producer);
            if let Some(a) = producer(scores) {
                let ready = mask_ready_by.is_none_or(|p| p < a);
                if ready && graph.uses[scores].len() == 1 && is_kv_product(&self.steps[a], true) {
                    grants.push((a, mask.clone()));
                }
            }
            // The probabilities, and reshapes of them that keep the KV positions as the last dim.
            let positions = softmax
                .outputs
                .first()
                .and_then(|(_, t)| t.ty.dims()?.last().cloned());
            let mut prob_slots = vec![*probs];
            for (c, step) in self.steps.iter().enumerate().skip(b + 1) {
                let x = slot_of(step.single_arg("x"));
                if step.op_type == "reshape" && x.is_some_and(|s| prob_slots.contains(&s)) {
                    if let Some((out, ty)) = step.outputs.first() {
                        let last = ty.ty.dims().and_then(|d| d.last().cloned());
                        if matches!(last, Some(Dim::Fixed(_))) && last == positions {
                            prob_slots.push(*out);
                        }
                    }
                } else if x.is_some_and(|s| prob_slots.contains(&s)) && is_kv_product(step, false) {
                    grants.push((c, mask.clone()));
                }
            }
        }
        for (i, mask) in &grants {
            self.steps[*i]
                .params
                .push((KV_COLUMN_MASK_PARAM.to_string(), vec![mask.clone()]));
        }
        grants.len()
    }
}
