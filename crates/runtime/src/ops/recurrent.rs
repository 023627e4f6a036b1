//! Recurrent ops: `lstm` (gate order input, forget, output, cell; computed in f32).

use candle_core::{DType, Tensor};

use super::activation::sigmoid_f32;
use super::{Kernel, OpCtx};
use crate::error::Result;

/// Recurrent kernels of this family.
pub const KERNELS: &[(&str, Kernel)] = &[("lstm", lstm)];

/// Applies a named recurrent activation (`sigmoid`, `tanh`, `relu`, `sigmoid_hard`, `linear`, `scaled_tanh`).
fn activate(ctx: &OpCtx<'_>, name: &str, x: &Tensor) -> Result<Tensor> {
    Ok(match name {
        "sigmoid" => sigmoid_f32(x)?,
        "tanh" => x.tanh()?,
        "relu" => x.relu()?,
        "sigmoid_hard" => x.affine(0.2, 0.5)?.maximum(0.0)?.minimum(1.0)?,
        "linear" => x.clone(),
        other => return Err(ctx.err(format!("unsupported activation `{other}`"))),
    })
}

/// Weights of one direction: W [4H, I], R [4H, H] (transposed for x @ W^T), bias [4H], peephole [3H].
struct Direction {
    w_t: Tensor,
    r_t: Tensor,
    bias: Option<Tensor>,
    peephole: Option<Tensor>,
}

fn f32_of(t: Option<Tensor>) -> Result<Option<Tensor>> {
    Ok(t.map(|t| t.to_dtype(DType::F32)).transpose()?)
}

/// Activations (gates, cell input, output) and the optional cell clip.
struct CellConfig {
    recurrent: String,
    cell: String,
    output: String,
    clip: Option<f64>,
}

/// Runs one direction over the sequence; returns the per-step hidden states and the final (h, c).
fn run_direction(
    ctx: &OpCtx<'_>,
    x: &Tensor,
    d: &Direction,
    h0: Tensor,
    c0: Tensor,
    reverse: bool,
    cfg: &CellConfig,
) -> Result<(Vec<Tensor>, Tensor, Tensor)> {
    let steps = x.dims()[0];
    let hidden = h0.dims()[1];
    let (mut h, mut c) = (h0, c0);
    let mut outs = vec![None; steps];
    let peep = |k: usize| -> Result<Option<Tensor>> {
        Ok(match &d.peephole {
            Some(p) => Some(p.narrow(0, k * hidden, hidden)?.unsqueeze(0)?),
            None => None,
        })
    };
    let (p_i, p_f, p_o) = (peep(0)?, peep(1)?, peep(2)?);
    for k in 0..steps {
        let t = if reverse { steps - 1 - k } else { k };
        let mut g = (x.get(t)?.matmul(&d.w_t)? + h.matmul(&d.r_t)?)?;
        if let Some(b) = &d.bias {
            g = g.broadcast_add(b)?;
        }
        let gate = |i: usize| g.narrow(1, i * hidden, hidden);
        let with_peep = |pre: Tensor, p: &Option<Tensor>, cell: &Tensor| -> Result<Tensor> {
            Ok(match p {
                Some(p) => (pre + cell.broadcast_mul(p)?)?,
                None => pre,
            })
        };
        let i = activate(ctx, &cfg.recurrent, &with_peep(gate(0)?, &p_i, &c)?)?;
        let f = activate(ctx, &cfg.recurrent, &with_peep(gate(1)?, &p_f, &c)?)?;
        let z = activate(ctx, &cfg.cell, &gate(3)?)?;
        c = ((f * &c)? + (i * z)?)?;
        if let Some(limit) = cfg.clip {
            c = c.clamp(-limit, limit)?;
        }
        let o = activate(ctx, &cfg.recurrent, &with_peep(gate(2)?, &p_o, &c)?)?;
        h = (o * activate(ctx, &cfg.output, &c)?)?;
        outs[t] = Some(h.clone());
    }
    let outs = outs.into_iter().flatten().collect();
    Ok((outs, h, c))
}

/// `lstm(x [s, b, I], initial_h [b, D*H], initial_c [b, D*H], weight_ih [4H, I], weight_hh [4H, H], bias opt,
/// peephole opt, *_back for bidirectional, direction, output_sequence, recurrent_activation, cell_activation,
/// activation, clip opt)`: long short-term memory over the sequence; outputs (sequence or last step, h, c).
fn lstm(ctx: &mut OpCtx<'_>) -> Result<Vec<Tensor>> {
    let x = ctx.tensor("x")?;
    let dtype = x.dtype();
    let x = x.to_dtype(DType::F32)?;
    if x.rank() != 3 {
        return Err(ctx.err(format!("x must be [seq, batch, input], got {:?}", x.dims())));
    }
    let direction = ctx.string_or("direction", "forward")?;
    let output_sequence = ctx.bool_or("output_sequence", false)?;
    let cfg = CellConfig {
        recurrent: ctx.string_or("recurrent_activation", "sigmoid")?,
        cell: ctx.string_or("cell_activation", "tanh")?,
        output: ctx.string_or("activation", "tanh")?,
        clip: if ctx.has("clip") {
            Some(ctx.float_or("clip", 0.0)?)
        } else {
            None
        },
    };
    let load = |suffix: &str| -> Result<Direction> {
        let w = ctx
            .tensor(&format!("weight_ih{suffix}"))?
            .to_dtype(DType::F32)?;
        let r = ctx
            .tensor(&format!("weight_hh{suffix}"))?
            .to_dtype(DType::F32)?;
        Ok(Direction {
            w_t: w.t()?,
            r_t: r.t()?,
            bias: f32_of(ctx.opt_tensor(&format!("bias{suffix}"))?)?,
            peephole: f32_of(ctx.opt_tensor(&format!("peephole{suffix}"))?)?,
        })
    };
    let h0 = ctx.tensor("initial_h")?.to_dtype(DType::F32)?;
    let c0 = ctx.tensor("initial_c")?.to_dtype(DType::F32)?;
    let fwd = load("")?;
    let hidden = fwd.r_t.dims()[0];
    if fwd.w_t.dims() != [x.dims()[2], 4 * hidden] || h0.rank() != 2 || c0.dims() != h0.dims() {
        return Err(ctx.err(format!(
            "weights/states do not fit x {:?} (weight_ih^T {:?}, weight_hh^T {:?}, initial_h {:?})",
            x.dims(),
            fwd.w_t.dims(),
            fwd.r_t.dims(),
            h0.dims()
        )));
    }
    let (seq, h, c) = match direction.as_str() {
        "forward" | "reverse" => {
            let (outs, h, c) = run_direction(ctx, &x, &fwd, h0, c0, direction == "reverse", &cfg)?;
            (Tensor::stack(&outs, 0)?, h, c)
        }
        "bidirectional" => {
            let bwd = load("_back")?;
            let (of, hf, cf) = run_direction(
                ctx,
                &x,
                &fwd,
                h0.narrow(1, 0, hidden)?,
                c0.narrow(1, 0, hidden)?,
                false,
                &cfg,
            )?;
            let (ob, hb, cb) = run_direction(
                ctx,
                &x,
                &bwd,
                h0.narrow(1, hidden, hidden)?,
                c0.narrow(1, hidden, hidden)?,
                true,
                &cfg,
            )?;
            let seq = Tensor::cat(&[Tensor::stack(&of, 0)?, Tensor::stack(&ob, 0)?], 2)?;
            (seq, Tensor::cat(&[hf, hb], 1)?, Tensor::cat(&[cf, cb], 1)?)
        }
        other => return Err(ctx.err(format!("unknown direction `{other}`"))),
    };
    let out = if output_sequence {
        seq
    } else {
        h.unsqueeze(0)?
    };
    Ok(vec![
        out.to_dtype(dtype)?,
        h.to_dtype(dtype)?,
        c.to_dtype(dtype)?,
    ])
}
