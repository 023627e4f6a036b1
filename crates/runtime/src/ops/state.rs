//! State ops: `read_state` and `write_state` on the call's [`crate::ModelState`].

use candle_core::Tensor;

use super::shape::slice_update_indices;
use super::{Kernel, OpCtx};
use crate::error::Result;

/// State kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[("read_state", read_state), ("write_state", write_state)];

/// `read_state(input)`: the current contents of the state.
fn read_state(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let name = ctx.state_name("input")?;
    Ok(vec![ctx.states.read(&name)?])
}

/// `write_state(input, data)`: replaces the state's contents with data (same shape); later reads see it.
fn write_state(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let name = ctx.state_name("input")?;
    let data = ctx.tensor("data")?;
    ctx.states.write(&name, data)?;
    Ok(Vec::new())
}

/// Fused `read_state` -> `slice_update(x=state)` -> `write_state`, planned only when nothing can observe the
/// state's previous contents: writes `update` into the slice of the state (as `slice_update` defines it) in place.
pub fn slice_update_state_in_place(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let name = ctx.state_name("x")?;
    let (dims, dtype) = ctx.states.layout_of(&name)?;
    let update = ctx.tensor("update")?.to_dtype(dtype)?;
    if let Some(idx) = slice_update_indices(ctx, &dims, update.dims())? {
        ctx.states.update_in_place(&name, &idx, &update)?;
    }
    Ok(Vec::new())
}
