//! `constexpr_*` ops: weight decompression evaluated once at load (their inputs are all compile-time values).

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use candle_coreml_format::mil::DataType;

use crate::consts::{float_tensor, HostArray, HostData};
use crate::error::{Result, RuntimeError};

/// A load-time op implementation; returns the decoded tensor in the output's storage dtype.
pub type ConstKernel = fn(&ConstCtx<'_>) -> Result<Tensor>;

/// What a constexpr kernel sees: its parameters decoded to host arrays.
pub struct ConstCtx<'a> {
    /// Op type.
    pub op_type: &'a str,
    /// Op name.
    pub op_name: &'a str,
    /// Tensor parameters (inputs and attributes other than `name`) decoded to host memory.
    pub params: HashMap<String, HostArray>,
    /// Declared output element type.
    pub out_dtype: DataType,
    /// Declared output shape, when fixed.
    pub out_shape: Option<Vec<usize>>,
    /// Where the result goes.
    pub device: &'a Device,
}

impl ConstCtx<'_> {
    /// An error about this op.
    pub fn err(&self, message: impl Into<String>) -> RuntimeError {
        RuntimeError::Op {
            op_type: self.op_type.to_string(),
            op_name: self.op_name.to_string(),
            message: message.into(),
        }
    }

    /// A required parameter.
    pub fn get(&self, param: &str) -> Result<&HostArray> {
        self.params
            .get(param)
            .ok_or_else(|| self.err(format!("missing required parameter `{param}`")))
    }

    /// An optional scalar integer parameter.
    pub fn int_or(&self, param: &str, default: i64) -> Result<i64> {
        match self.params.get(param) {
            None => Ok(default),
            Some(a) if a.data.len() == 1 => Ok(a.data.get_i64(0)),
            Some(_) => Err(self.err(format!("parameter `{param}` must be a scalar"))),
        }
    }

    fn finish(&self, values: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        if let Some(declared) = &self.out_shape {
            if declared.as_slice() != shape {
                return Err(self.err(format!(
                    "decoded shape {shape:?} differs from the declared {declared:?}"
                )));
            }
        }
        float_tensor(values, shape, self.out_dtype, self.device)
    }
}

/// The constexpr table: op type to load-time kernel.
pub fn const_kernels() -> &'static HashMap<&'static str, ConstKernel> {
    static TABLE: OnceLock<HashMap<&'static str, ConstKernel>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let list: [(&'static str, ConstKernel); 5] = [
            ("constexpr_lut_to_dense", lut_to_dense),
            ("constexpr_affine_dequantize", affine_dequantize),
            ("constexpr_blockwise_shift_scale", blockwise_shift_scale),
            ("constexpr_sparse_to_dense", sparse_to_dense),
            ("constexpr_cast", constexpr_cast),
        ];
        list.into_iter().collect()
    })
}

/// Element count of a declared shape, refusing overflowing or absurd sizes.
fn checked_count(ctx: &ConstCtx<'_>, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= 1 << 34)
        .ok_or_else(|| ctx.err(format!("shape {shape:?} is too large")))
}

/// Row-major strides of `shape`.
fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

/// Unpacks `count` unsigned `bits`-wide values from LSB-first packed bytes.
pub fn unpack_bits(bytes: &[u8], bits: usize, count: usize) -> Option<Vec<u16>> {
    if bits == 0 || bits > 16 || (bytes.len() as u128) * 8 < count as u128 * bits as u128 {
        return None;
    }
    Some(
        (0..count)
            .map(|i| {
                let mut v = 0u16;
                for b in 0..bits {
                    let bit = i * bits + b;
                    if bytes[bit / 8] >> (bit % 8) & 1 == 1 {
                        v |= 1 << b;
                    }
                }
                v
            })
            .collect(),
    )
}

/// The bytes of a `uint8` host array.
fn bytes_of(ctx: &ConstCtx<'_>, a: &HostArray, what: &str) -> Result<Vec<u8>> {
    (0..a.data.len())
        .map(|i| {
            u8::try_from(a.data.get_i64(i))
                .map_err(|_| ctx.err(format!("`{what}` must hold bytes")))
        })
        .collect()
}

/// `constexpr_lut_to_dense`: out[i] = lut[group(i), indices[i], :]. iOS18 form: `indices` (uintN, the output
/// shape, or the output shape divided by the vector size along `vector_axis`) and `lut` [G0..Gr-1, 2^N, VS],
/// group index along dim k = i_k / (dim_k / G_k). iOS16/17 form: packed uint8 `indices`, 1-D `lut`, `shape`.
fn lut_to_dense(ctx: &ConstCtx<'_>) -> Result<Tensor> {
    let lut = ctx.get("lut")?;
    let HostData::Float(lut_values) = &lut.data else {
        return Err(ctx.err("lut must hold floats"));
    };
    let indices = ctx.get("indices")?;
    if let Some(shape) = ctx.params.get("shape") {
        // iOS16/17: one table, indices packed as bytes.
        let shape: Vec<usize> = (0..shape.data.len())
            .map(|i| shape.data.get_i64(i).max(0) as usize)
            .collect();
        let count = checked_count(ctx, &shape)?;
        let entries = lut_values.len();
        if !entries.is_power_of_two() || !(2..=256).contains(&entries) {
            return Err(ctx.err(format!(
                "lut has {entries} entries, expected 2^n with n in 1..=8"
            )));
        }
        let bits = entries.trailing_zeros() as usize;
        let bytes = bytes_of(ctx, indices, "indices")?;
        let idx = unpack_bits(&bytes, bits, count).ok_or_else(|| {
            ctx.err(format!(
                "{} index bytes are too few for {count} {bits}-bit values",
                bytes.len()
            ))
        })?;
        let values: Vec<f32> = idx.iter().map(|&i| lut_values[i as usize]).collect();
        return ctx.finish(values, &shape);
    }
    let rank = indices.shape.len();
    if lut.shape.len() != rank + 2 {
        return Err(ctx.err(format!(
            "lut shape {:?} must have rank {} (indices {:?})",
            lut.shape,
            rank + 2,
            indices.shape
        )));
    }
    let palette = lut.shape[rank];
    let vs = lut.shape[rank + 1];
    let mut groups_size = Vec::with_capacity(rank);
    for k in 0..rank {
        let (d, g) = (indices.shape[k], lut.shape[k]);
        if g == 0 || d % g != 0 {
            return Err(ctx.err(format!(
                "lut dim {k} ({g}) does not divide indices dim {k} ({d})"
            )));
        }
        groups_size.push(d / g);
    }
    let vector_axis = if vs > 1 {
        let a = ctx.int_or("vector_axis", 0)?;
        let a = if a < 0 { a + rank as i64 } else { a };
        if !(0..rank as i64).contains(&a) {
            return Err(ctx.err(format!("vector_axis {a} is out of range")));
        }
        Some(a as usize)
    } else {
        None
    };
    let mut out_shape = indices.shape.clone();
    if let Some(a) = vector_axis {
        out_shape[a] *= vs;
    }
    let count: usize = indices.shape.iter().product();
    let lut_strides = strides(&lut.shape);
    let out_strides = strides(&out_shape);
    // Per dim, the LUT offset of each index value (its group times the LUT stride) and its output offset.
    let group_off: Vec<Vec<usize>> = (0..rank)
        .map(|k| {
            (0..indices.shape[k])
                .map(|i| i / groups_size[k] * lut_strides[k])
                .collect()
        })
        .collect();
    let vector_step = vector_axis.map_or(0, |a| out_strides[a]);
    let mut values = vec![0f32; count * vs];
    let last = indices.shape.last().copied().unwrap_or(1).max(1);
    let rows = count / last;
    let mut counter = vec![0usize; rank.saturating_sub(1)];
    for row in 0..rows {
        // Offsets contributed by every dim but the last, for this row.
        let mut lut_base = 0usize;
        let mut out_base = 0usize;
        for (k, &i) in counter.iter().enumerate() {
            lut_base += group_off[k][i];
            out_base += if Some(k) == vector_axis { i * vs } else { i } * out_strides[k];
        }
        let (last_groups, last_is_vector) = match group_off.last() {
            Some(g) => (g.as_slice(), vector_axis == Some(rank - 1)),
            None => (&[0usize][..], false),
        };
        for (j, &group) in last_groups.iter().enumerate().take(last) {
            let flat = row * last + j;
            let entry = indices.data.get_i64(flat);
            if entry < 0 || entry as usize >= palette {
                return Err(ctx.err(format!(
                    "index {entry} is outside the {palette}-entry palette"
                )));
            }
            let base = lut_base + group + entry as usize * lut_strides[rank];
            let out_off = out_base + if last_is_vector { j * vs } else { j };
            for v in 0..vs {
                values[out_off + v * vector_step] = lut_values[base + v];
            }
        }
        for k in (0..counter.len()).rev() {
            counter[k] += 1;
            if counter[k] < indices.shape[k] {
                break;
            }
            counter[k] = 0;
        }
    }
    ctx.finish(values, &out_shape)
}

/// Broadcast index of element `flat` of `shape` into a per-block parameter of shape `pshape` (same rank; block
/// size along k = shape[k] / pshape[k]).
fn block_index(
    flat: usize,
    shape: &[usize],
    shape_strides: &[usize],
    pshape: &[usize],
    pstrides: &[usize],
) -> usize {
    let mut off = 0;
    for k in 0..shape.len() {
        let i_k = flat / shape_strides[k] % shape[k];
        off += i_k / (shape[k] / pshape[k]) * pstrides[k];
    }
    off
}

/// `constexpr_affine_dequantize(quantized_data, zero_point, scale, axis)`: scale * (quantized_data - zero_point),
/// with scale and zero_point scalars or 1-D along axis.
fn affine_dequantize(ctx: &ConstCtx<'_>) -> Result<Tensor> {
    let q = ctx.get("quantized_data")?;
    let zp = ctx.get("zero_point")?;
    let scale = ctx.get("scale")?;
    let rank = q.shape.len();
    let axis = ctx.int_or("axis", 0)?;
    let axis = if axis < 0 { axis + rank as i64 } else { axis };
    if !(0..rank.max(1) as i64).contains(&axis) {
        return Err(ctx.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    let axis = axis as usize;
    let dim = q.shape.get(axis).copied().unwrap_or(1);
    for (p, what) in [(zp, "zero_point"), (scale, "scale")] {
        if p.data.len() != 1 && p.data.len() != dim {
            return Err(ctx.err(format!(
                "`{what}` has {} values; expected 1 or {dim}",
                p.data.len()
            )));
        }
    }
    let s = strides(&q.shape);
    let stride = s.get(axis).copied().unwrap_or(1);
    let values: Vec<f32> = (0..q.data.len())
        .map(|i| {
            let c = i / stride % dim.max(1);
            let pick = |p: &HostArray| if p.data.len() == 1 { 0 } else { c };
            scale.data.get_f32(pick(scale)) * (q.data.get_f32(i) - zp.data.get_f32(pick(zp)))
        })
        .collect();
    ctx.finish(values, &q.shape)
}

/// `constexpr_blockwise_shift_scale(data, scale, offset opt)`: scale[b] * (data - offset[b]) with per-block
/// parameters (block size along k = data.shape[k] / scale.shape[k]).
fn blockwise_shift_scale(ctx: &ConstCtx<'_>) -> Result<Tensor> {
    let data = ctx.get("data")?;
    let scale = ctx.get("scale")?;
    let offset = ctx.params.get("offset");
    if scale.shape.len() != data.shape.len() {
        return Err(ctx.err(format!(
            "scale {:?} must have the rank of data {:?}",
            scale.shape, data.shape
        )));
    }
    for k in 0..data.shape.len() {
        if scale.shape[k] == 0 || data.shape[k] % scale.shape[k] != 0 {
            return Err(ctx.err(format!(
                "scale dim {k} ({}) does not divide data dim ({})",
                scale.shape[k], data.shape[k]
            )));
        }
    }
    if let Some(o) = offset {
        if o.shape != scale.shape {
            return Err(ctx.err(format!(
                "offset {:?} must have scale's shape {:?}",
                o.shape, scale.shape
            )));
        }
    }
    let ds = strides(&data.shape);
    let ps = strides(&scale.shape);
    let values: Vec<f32> = (0..data.data.len())
        .map(|i| {
            let b = block_index(i, &data.shape, &ds, &scale.shape, &ps);
            let off = offset.map_or(0.0, |o| o.data.get_f32(b));
            scale.data.get_f32(b) * (data.data.get_f32(i) - off)
        })
        .collect();
    ctx.finish(values, &data.shape)
}

/// `constexpr_sparse_to_dense(nonzero_data, mask, shape?)`: scatters nonzero_data in order into the positions where
/// mask is 1 (iOS18: uint1 mask of the output shape; iOS16/17: LSB-first packed uint8 mask plus `shape`).
fn sparse_to_dense(ctx: &ConstCtx<'_>) -> Result<Tensor> {
    let nz = ctx.get("nonzero_data")?;
    let mask = ctx.get("mask")?;
    let (shape, bits): (Vec<usize>, Vec<u16>) = match ctx.params.get("shape") {
        Some(s) => {
            let shape: Vec<usize> = (0..s.data.len())
                .map(|i| s.data.get_i64(i).max(0) as usize)
                .collect();
            let count = checked_count(ctx, &shape)?;
            let bytes = bytes_of(ctx, mask, "mask")?;
            let bits = unpack_bits(&bytes, 1, count)
                .ok_or_else(|| ctx.err("mask is too short for the shape"))?;
            (shape, bits)
        }
        None => (
            mask.shape.clone(),
            (0..mask.data.len())
                .map(|i| u16::from(mask.data.get_i64(i) != 0))
                .collect(),
        ),
    };
    let mut next = 0usize;
    let mut values = Vec::with_capacity(bits.len());
    for b in bits {
        if b == 1 {
            if next >= nz.data.len() {
                return Err(ctx.err("mask has more set bits than nonzero_data values"));
            }
            values.push(nz.data.get_f32(next));
            next += 1;
        } else {
            values.push(0.0);
        }
    }
    ctx.finish(values, &shape)
}

/// `constexpr_cast(source_val, output_dtype)`: the constant converted to another float type.
fn constexpr_cast(ctx: &ConstCtx<'_>) -> Result<Tensor> {
    let src = ctx.get("source_val")?;
    let values: Vec<f32> = (0..src.data.len()).map(|i| src.data.get_f32(i)).collect();
    ctx.finish(values, &src.shape)
}

/// How a `constexpr_lut_to_dense` output maps onto a packed matrix ([`crate::kernels::lut_matrix::LutMatrix`]):
/// rows are the first output dim, columns the product of the others, and every table serves whole rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LutPacking {
    /// Index width in bits.
    pub bits: u32,
    /// Rows (output dim 0).
    pub rows: usize,
    /// Columns (product of the other output dims).
    pub cols: usize,
    /// Consecutive rows sharing one table.
    pub rows_per_table: usize,
    /// `[rows / rows_per_table, 2^bits]` table values.
    pub tables: Vec<f32>,
}

/// The packing of a `constexpr_lut_to_dense` with this `lut`, indices of shape `indices_shape` and (iOS16/17 form)
/// `shape` parameter, producing `out_shape`; `None` when its tables do not serve whole rows (vector palettes,
/// tables grouped along other dims) or the declaration is inconsistent (the dense path then reports why).
pub fn lut_packing(
    lut: &HostArray,
    indices_shape: &[usize],
    shape_param: Option<&HostArray>,
    out_shape: &[usize],
) -> Option<LutPacking> {
    let HostData::Float(values) = &lut.data else {
        return None;
    };
    let (&rows, rest) = out_shape.split_first()?;
    let cols: usize = rest.iter().product();
    if rows == 0 || cols == 0 {
        return None;
    }
    let (palette, groups) = match shape_param {
        Some(shape) => {
            let declared: Vec<usize> = (0..shape.data.len())
                .map(|i| shape.data.get_i64(i).max(0) as usize)
                .collect();
            if declared != out_shape {
                return None;
            }
            (values.len(), 1)
        }
        None => {
            let rank = out_shape.len();
            if indices_shape != out_shape
                || lut.shape.len() != rank + 2
                || lut.shape[rank + 1] != 1
                || lut.shape[1..rank].iter().any(|&g| g != 1)
            {
                return None;
            }
            (lut.shape[rank], lut.shape[0])
        }
    };
    if !palette.is_power_of_two() || !(2..=256).contains(&palette) {
        return None;
    }
    if groups == 0 || rows % groups != 0 || values.len() != groups * palette {
        return None;
    }
    Some(LutPacking {
        bits: palette.trailing_zeros(),
        rows,
        cols,
        rows_per_table: rows / groups,
        tables: values.clone(),
    })
}

/// How an 8-bit `constexpr_affine_dequantize` or `constexpr_blockwise_shift_scale` output maps onto a packed
/// quantized matrix ([`crate::kernels::quant_matrix::QuantMatrix`]): rows are output dim 0, columns the product of
/// the others, and every scale covers whole runs of columns within a row.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantPacking {
    /// Rows (output dim 0).
    pub rows: usize,
    /// Columns (product of the other output dims).
    pub cols: usize,
    /// True for `int8` data, false for `uint8`.
    pub signed: bool,
    /// Consecutive columns sharing a scale and offset.
    pub block: usize,
    /// `[rows, cols / block]` scales.
    pub scales: Vec<f32>,
    /// `[rows, cols / block]` offsets (zero points).
    pub offsets: Vec<f32>,
}

/// The packing of a quantized constexpr (`op_type`) from its decoded small parameters (`scale`, and `zero_point` or
/// `offset`; `axis` for the affine form), its 8-bit data's type and shape, and its output shape; `None` when the
/// parameters vary along the columns in a way blocks of whole columns cannot express, or for other data types (the
/// dense path then runs, and reports any inconsistency).
pub fn quant_packing(
    op_type: &str,
    data_type: DataType,
    data_shape: &[usize],
    params: &HashMap<String, HostArray>,
    out_shape: &[usize],
) -> Option<QuantPacking> {
    let signed = match data_type {
        DataType::Int8 => true,
        DataType::UInt8 => false,
        _ => return None,
    };
    let (&rows, rest) = out_shape.split_first()?;
    let cols: usize = rest.iter().product();
    if data_shape != out_shape || rows == 0 || cols == 0 {
        return None;
    }
    let values =
        |a: &HostArray| -> Vec<f32> { (0..a.data.len()).map(|i| a.data.get_f32(i)).collect() };
    match op_type {
        "constexpr_affine_dequantize" => {
            let (scale, zero) = (params.get("scale")?, params.get("zero_point")?);
            let axis = params.get("axis").map_or(0, |a| a.data.get_i64(0));
            let axis = if axis < 0 {
                axis + out_shape.len() as i64
            } else {
                axis
            };
            let per_row = |a: &HostArray| -> Option<Vec<f32>> {
                match a.data.len() {
                    1 => Some(vec![a.data.get_f32(0); rows]),
                    n if n == rows && axis == 0 => Some(values(a)),
                    _ => None,
                }
            };
            Some(QuantPacking {
                rows,
                cols,
                signed,
                block: cols,
                scales: per_row(scale)?,
                offsets: per_row(zero)?,
            })
        }
        "constexpr_blockwise_shift_scale" => {
            let scale = params.get("scale")?;
            let offset = params.get("offset");
            let ps = &scale.shape;
            if ps.len() != out_shape.len()
                || ps.iter().skip(2).any(|&g| g != 1)
                || ps
                    .iter()
                    .zip(out_shape)
                    .any(|(&g, &d)| g == 0 || d % g != 0)
                || offset.is_some_and(|o| &o.shape != ps)
            {
                return None;
            }
            let groups = ps.get(1).copied().unwrap_or(1);
            let block = cols / groups;
            let rows_per_param = rows / ps[0];
            let expand = |v: Vec<f32>| -> Vec<f32> {
                (0..rows)
                    .flat_map(|r| {
                        let base = r / rows_per_param * groups;
                        v[base..base + groups].to_vec()
                    })
                    .collect()
            };
            Some(QuantPacking {
                rows,
                cols,
                signed,
                block,
                scales: expand(values(scale)),
                offsets: expand(offset.map_or_else(|| vec![0.0; scale.data.len()], values)),
            })
        }
        _ => None,
    }
}
