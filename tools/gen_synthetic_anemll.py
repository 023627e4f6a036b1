#!/usr/bin/env python3
"""Write a synthetic ANEMLL-layout Qwen3 model (random weights) plus the same weights as a Hugging Face
checkpoint, so that candle-coreml, candle-transformers and llama.cpp can be timed on identical weights.

What is written to ``--out DIR`` (defaults: Qwen3-0.6B dimensions, context 512, prefill batch 64):

  DIR/qwen_embeddings.mlpackage                 gather over an fp16 [V, H] table; input_ids [1,1] or [1,B]
  DIR/qwen_FFN_PF[_lutN]_chunk_01of01.mlpackage multifunction: ``infer`` (default) + ``prefill``, weights shared,
                                                one state ``model_model_kv_cache_0`` [2L, KVH, C, D] fp16
  DIR/qwen_lm_head[_lutN].mlpackage             logits1..logitsK (vocabulary split K ways)
  DIR/meta.yaml, DIR/config.json (tokenizer stub), DIR/tokenizer.json, tokenizer_config.json, vocab.json, merges.txt
  DIR/hf/                                       config.json (Qwen3ForCausalLM), model.safetensors (fp16), tokenizer

The programs are built with the coremltools MIL builder op by op in the same pattern that ANEMLL 0.3.4's Qwen3
converter emits (see docs in shared/anemll-and-coreml.md sections 2-4): 1x1 convolutions on [1, C, 1, T]
activations, RMSNorm as layer_norm over concat([x, -x]), per-head q_norm/k_norm, RoPE tables baked in as
constants and looked up with gather, rotate-half, KV cache written with slice_update + write_state, GQA by tile,
scaled scores plus an additive causal mask, softmax. With ``--lut N`` the FFN and LM-head weights are
``constexpr_lut_to_dense`` (iOS18) with uintN indices and one fp16 table per 8 output channels; indices and
tables are random (no k-means), and the Hugging Face checkpoint holds the de-palettised values lut[indices].
The embedding table equals the de-palettised LM-head weight, so the checkpoint has tied embeddings, as
Qwen3-0.6B does.

``--check`` runs the generated parts with ``candle-coreml run`` and compares them with a numpy forward pass of
the same weights (embeddings, one prefill call, one infer call on the numpy KV cache, the LM head).
No torch is needed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
STATE_NAME = "model_model_kv_cache_0"
LUT_GROUP = 8  # output channels per look-up table, as ANEMLL's per_grouped_channel palettisation
WEIGHT_STD = 0.02  # transformers' initializer_range for Qwen3
ANEMLL_VERSION = "0.3.4"


# ----------------------------------------------------------------------------------------------------------------
# configuration and random weights


@dataclass
class Dims:
    """Model and packaging dimensions (the defaults are Qwen3-0.6B's)."""

    hidden: int = 1024
    layers: int = 28
    heads: int = 16
    kv_heads: int = 8
    head_dim: int = 128
    intermediate: int = 3072
    vocab: int = 151936
    context: int = 512
    batch: int = 64
    split_lm_head: int = 16
    rope_theta: float = 1_000_000.0
    rms_norm_eps: float = 1e-6
    lut: int | None = 8
    seed: int = 0

    def validate(self) -> None:
        if self.heads % self.kv_heads:
            raise SystemExit(f"--heads {self.heads} is not a multiple of --kv-heads {self.kv_heads}")
        if self.head_dim % 2:
            raise SystemExit(f"--head-dim {self.head_dim} must be even (rotate-half RoPE)")
        if self.context % self.batch:
            raise SystemExit(f"--context {self.context} must be a multiple of --batch {self.batch}")
        if self.vocab < self.split_lm_head or self.vocab < 300:
            raise SystemExit(f"--vocab {self.vocab} is too small (need >= 300 and >= --split-lm-head)")
        if self.lut is not None:
            for name, rows in [("hidden", self.hidden), ("intermediate", self.intermediate),
                               ("heads*head_dim", self.heads * self.head_dim),
                               ("kv_heads*head_dim", self.kv_heads * self.head_dim)]:
                if rows % LUT_GROUP:
                    raise SystemExit(f"{name} = {rows} must be a multiple of {LUT_GROUP} for LUT weights")
            for size in self.lm_head_sizes():
                if size % LUT_GROUP:
                    raise SystemExit(f"LM-head split size {size} must be a multiple of {LUT_GROUP} for LUT weights")

    def lm_head_sizes(self) -> list[int]:
        """Vocabulary split sizes in ANEMLL's order: the first V mod K splits get one extra row."""
        base, extra = divmod(self.vocab, self.split_lm_head)
        return [base + (1 if k < extra else 0) for k in range(self.split_lm_head)]

    @property
    def lut_suffix(self) -> str:
        return "" if self.lut is None else f"_lut{self.lut}"


@dataclass
class Linear:
    """One weight matrix [out, in]: dense fp16 values and, for LUT weights, the palettised form."""

    dense: np.ndarray  # fp16 [out, in]
    indices: np.ndarray | None = None  # uint8 [out, in], values < 2**bits
    lut: np.ndarray | None = None  # fp16 [out / 8, 2**bits]


@dataclass
class Weights:
    """All weights of the model, with Hugging Face names for the checkpoint."""

    embed: Linear  # [V, H]; also the (tied) LM head
    layers: list[dict[str, np.ndarray | Linear]] = field(default_factory=list)
    norm: np.ndarray | None = None


def random_linear(rng: np.random.Generator, rows: int, cols: int, lut_bits: int | None) -> Linear:
    if lut_bits is None:
        return Linear(dense=(rng.standard_normal((rows, cols), dtype=np.float32) * WEIGHT_STD).astype(np.float16))
    entries = 1 << lut_bits
    lut = (rng.standard_normal((rows // LUT_GROUP, entries), dtype=np.float32) * WEIGHT_STD).astype(np.float16)
    indices = rng.integers(0, entries, size=(rows, cols), dtype=np.uint8)
    group_of_row = np.arange(rows) // LUT_GROUP
    dense = lut[group_of_row[:, None], indices]
    return Linear(dense=dense, indices=indices, lut=lut)


def random_gain(rng: np.random.Generator, n: int) -> np.ndarray:
    """RMSNorm gain near 1 but not 1, so that a runtime which ignores it fails the check."""
    return (1.0 + 0.1 * rng.standard_normal(n, dtype=np.float32)).astype(np.float16)


def make_weights(d: Dims) -> Weights:
    rng = np.random.default_rng(d.seed)
    w = Weights(embed=random_linear(rng, d.vocab, d.hidden, d.lut))
    q_rows, kv_rows = d.heads * d.head_dim, d.kv_heads * d.head_dim
    for _ in range(d.layers):
        w.layers.append({
            "input_layernorm": random_gain(rng, d.hidden),
            "q_proj": random_linear(rng, q_rows, d.hidden, d.lut),
            "k_proj": random_linear(rng, kv_rows, d.hidden, d.lut),
            "v_proj": random_linear(rng, kv_rows, d.hidden, d.lut),
            "q_norm": random_gain(rng, d.head_dim),
            "k_norm": random_gain(rng, d.head_dim),
            "o_proj": random_linear(rng, d.hidden, q_rows, d.lut),
            "post_attention_layernorm": random_gain(rng, d.hidden),
            "gate_proj": random_linear(rng, d.intermediate, d.hidden, d.lut),
            "up_proj": random_linear(rng, d.intermediate, d.hidden, d.lut),
            "down_proj": random_linear(rng, d.hidden, d.intermediate, d.lut),
        })
    w.norm = random_gain(rng, d.hidden)
    return w


def rope_tables(d: Dims) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [1, 2C, D] fp16 with duplicated halves, as ANEMLL bakes them in (rows = positions)."""
    rows = 2 * d.context
    inv_freq = 1.0 / (d.rope_theta ** (np.arange(0, d.head_dim, 2, dtype=np.float64) / d.head_dim))
    freqs = np.outer(np.arange(rows, dtype=np.float64), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return (np.cos(emb)[None].astype(np.float16), np.sin(emb)[None].astype(np.float16))


# ----------------------------------------------------------------------------------------------------------------
# MIL programs


def mil_modules():
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types

    return ct, mb, types


def weight_var(mb, types, lin: Linear, shape_tail: tuple[int, ...], name: str):
    """A conv weight [out, in, *shape_tail]: a const, or constexpr_lut_to_dense over uintN indices."""
    out_ch, in_ch = lin.dense.shape
    shape = (out_ch, in_ch) + shape_tail
    if lin.indices is None:
        return lin.dense.reshape(shape)
    bits = int(np.log2(lin.lut.shape[1]))
    idx_dtype = types.nptype_from_builtin(types.string_to_builtin(f"uint{bits}"))
    lut = lin.lut.reshape((out_ch // LUT_GROUP,) + (1,) * (len(shape) - 1) + (lin.lut.shape[1], 1))
    return mb.constexpr_lut_to_dense(indices=lin.indices.reshape(shape).astype(idx_dtype), lut=lut,
                                     name=f"{name}_palettized")


def rms_norm(mb, x, gain: np.ndarray, eps: float, name: str):
    """ANEMLL's RMSNorm: layer_norm over concat([x, -x]) on the last axis, keep the first half, times gain."""
    n = gain.shape[0]
    neg = mb.mul(x=x, y=np.float16(-1.0), name=f"{name}_neg")
    both = mb.concat(values=[x, neg], axis=-1, interleave=False, name=f"{name}_cat")
    normed = mb.layer_norm(x=both, axes=[-1], epsilon=np.float16(eps), name=f"{name}_ln")
    rank = len(x.shape)
    begin = [0] * rank
    end = [1] * (rank - 1) + [n]
    end_mask = [True] * (rank - 1) + [False]
    half = mb.slice_by_index(x=normed, begin=begin, end=end, end_mask=end_mask, name=f"{name}_half")
    return mb.mul(x=half, y=gain, name=name)


def conv2d(mb, x, weight, name: str):
    return mb.conv(x=x, weight=weight, strides=[1, 1], pad_type="valid", pad=[0, 0, 0, 0], dilations=[1, 1],
                   groups=1, name=name)


def rope_lookup(mb, table: np.ndarray, positions, tokens: int, as_uint16: bool, name: str):
    """Gather rows of a [1, 2C, D] table at `positions` (int32 [T]); result [1, T, 1, D].

    Both index forms of ANEMLL's programs: int32 indices (coremltools then adds the negative-index select and the
    int16 cast) or a cast to uint16.
    """
    idx = mb.cast(x=positions, dtype="uint16", name=f"{name}_idx") if as_uint16 else positions
    rows_out = mb.gather(x=table, indices=idx, axis=1, batch_dims=0, validate_indices=False, name=f"{name}_gather")
    return mb.reshape(x=rows_out, shape=[1, tokens, 1, -1], name=name)


def rotate_half_apply(mb, x, cos, sin, half: int, name: str):
    """x * cos + concat([-x2, x1]) * sin on [1, heads, T, D]."""
    heads, tokens = x.shape[1], x.shape[2]
    x1 = mb.slice_by_index(x=x, begin=[0, 0, 0, 0], end=[1, heads, tokens, half],
                           end_mask=[True, True, True, False], name=f"{name}_x1")
    x2 = mb.slice_by_index(x=x, begin=[0, 0, 0, half], end=[1, heads, tokens, 2 * half],
                           end_mask=[True, True, True, True], name=f"{name}_x2")
    neg_x2 = mb.mul(x=x2, y=np.float16(-1.0), name=f"{name}_negx2")
    rotated = mb.concat(values=[neg_x2, x1], axis=-1, interleave=False, name=f"{name}_rot")
    return mb.add(x=mb.mul(x=x, y=cos, name=f"{name}_cos"), y=mb.mul(x=rotated, y=sin, name=f"{name}_sin"),
                  name=name)


def heads_from_conv(mb, y, heads: int, head_dim: int, tokens: int, name: str):
    """Conv output [1, heads*D, 1, T] -> [1, heads, T, D]."""
    if tokens == 1:
        return mb.reshape(x=y, shape=[1, heads, 1, head_dim], name=name)
    r = mb.reshape(x=y, shape=[1, heads, head_dim, tokens], name=f"{name}_r")
    return mb.transpose(x=r, perm=[0, 1, 3, 2], name=name)


def kv_write(mb, state, cache, update, row: int, current_pos, end_pos, name: str):
    """cache[row, :, current_pos:end_pos, :] = update, stored with coreml_update_state; returns the new cache value.

    `cache` is the latest value of the state (read_state once, then the result of each update), as the in-place
    writes of ANEMLL's PyTorch model are traced.
    """
    begin = mb.concat(values=[np.array([row], np.int32), np.array([0], np.int32), current_pos,
                              np.array([0], np.int32)], axis=0, interleave=False, name=f"{name}_begin")
    end = mb.concat(values=[np.array([row + 1], np.int32), np.array([0], np.int32), end_pos,
                            np.array([0], np.int32)], axis=0, interleave=False, name=f"{name}_end")
    new = mb.slice_update(x=cache, update=update, begin=begin, end=end, stride=[1, 1, 1, 1],
                          begin_mask=[False] * 4, end_mask=[False, True, False, True], squeeze_mask=[False] * 4,
                          name=f"{name}_update")
    return mb.coreml_update_state(state=state, value=new, name=f"{name}_state")


def kv_read_repeated(mb, cache, row: int, d: Dims, name: str):
    """cache[row] [KVH, S, D] repeated to [1, heads, S, D] (expand_dims + tile + reshape)."""
    s = cache.shape[2]
    sl = mb.slice_by_index(x=cache, begin=[row, 0, 0, 0], end=[row + 1, d.kv_heads, s, d.head_dim],
                           end_mask=[False, True, True, True], name=f"{name}_slice")
    sq = mb.squeeze(x=sl, axes=[0], name=f"{name}_sq")
    ex = mb.expand_dims(x=sq, axes=[1], name=f"{name}_ex")
    tiled = mb.tile(x=ex, reps=[1, d.heads // d.kv_heads, 1, 1], name=f"{name}_tile")
    return mb.reshape(x=tiled, shape=[1, -1, s, d.head_dim], name=name)


def decoder_stack(mb, d: Dims, w: Weights, hidden, positions, causal_mask, current_pos, state, tokens: int,
                  shared: dict):
    """All decoder layers for `tokens` tokens; returns the residual stream [1, T, H]."""
    cos_t, sin_t = shared["rope"]
    cos = rope_lookup(mb, cos_t, positions, tokens, False, "cos")
    sin = rope_lookup(mb, sin_t, positions, tokens, True, "sin")
    if tokens > 1:
        cos = mb.transpose(x=cos, perm=[0, 2, 1, 3], name="cos_t")
        sin = mb.transpose(x=sin, perm=[0, 2, 1, 3], name="sin_t")
    end_pos = mb.add(x=current_pos, y=np.array([tokens], np.int32), name="end_pos")
    scale = np.float16(1.0 / np.sqrt(d.head_dim))
    cache = mb.read_state(input=state, name="kv_cache_read")
    x = hidden
    for i, lw in enumerate(w.layers):
        p = f"layer{i}"
        wv = shared["weights"][i]
        h = rms_norm(mb, x, lw["input_layernorm"], d.rms_norm_eps, f"{p}_input_norm")
        h = mb.expand_dims(x=mb.transpose(x=h, perm=[0, 2, 1], name=f"{p}_in_t"), axes=[2], name=f"{p}_in_4d")
        q = heads_from_conv(mb, conv2d(mb, h, wv["q_proj"](), f"{p}_q_proj"), d.heads, d.head_dim, tokens, f"{p}_q")
        k = heads_from_conv(mb, conv2d(mb, h, wv["k_proj"](), f"{p}_k_proj"), d.kv_heads, d.head_dim, tokens,
                            f"{p}_k")
        v = heads_from_conv(mb, conv2d(mb, h, wv["v_proj"](), f"{p}_v_proj"), d.kv_heads, d.head_dim, tokens,
                            f"{p}_v")
        q = rms_norm(mb, q, lw["q_norm"], d.rms_norm_eps, f"{p}_q_norm")
        k = rms_norm(mb, k, lw["k_norm"], d.rms_norm_eps, f"{p}_k_norm")
        q = rotate_half_apply(mb, q, cos, sin, d.head_dim // 2, f"{p}_q_rope")
        k = rotate_half_apply(mb, k, cos, sin, d.head_dim // 2, f"{p}_k_rope")
        cache = kv_write(mb, state, cache, k, i, current_pos, end_pos, f"{p}_kw")
        cache = kv_write(mb, state, cache, v, d.layers + i, current_pos, end_pos, f"{p}_vw")
        keys = kv_read_repeated(mb, cache, i, d, f"{p}_keys")
        values = kv_read_repeated(mb, cache, d.layers + i, d, f"{p}_values")
        scores = mb.matmul(x=q, y=keys, transpose_x=False, transpose_y=True, name=f"{p}_scores")
        scores = mb.add(x=mb.mul(x=scores, y=scale, name=f"{p}_scaled"), y=causal_mask, name=f"{p}_masked")
        probs = mb.softmax(x=scores, axis=-1, name=f"{p}_probs")
        if tokens == 1:
            attn = mb.matmul(x=probs, y=values, transpose_x=False, transpose_y=False, name=f"{p}_attn")
        else:
            s = values.shape[2]
            p3 = mb.reshape(x=probs, shape=[d.heads, tokens, s], name=f"{p}_probs3")
            v3 = mb.reshape(x=values, shape=[d.heads, s, d.head_dim], name=f"{p}_values3")
            a3 = mb.matmul(x=p3, y=v3, transpose_x=False, transpose_y=False, name=f"{p}_attn3")
            attn = mb.reshape(x=a3, shape=[1, d.heads, tokens, d.head_dim], name=f"{p}_attn")
        attn = mb.transpose(x=attn, perm=[0, 2, 1, 3], name=f"{p}_attn_t")
        attn = mb.reshape(x=attn, shape=[1, tokens, d.heads * d.head_dim], name=f"{p}_attn_flat")
        attn = mb.transpose(x=attn, perm=[0, 2, 1], name=f"{p}_attn_c")
        o = mb.conv(x=attn, weight=wv["o_proj"](), strides=[1], pad_type="valid", pad=[0, 0], dilations=[1],
                    groups=1, name=f"{p}_o_proj")
        x = mb.add(x=x, y=mb.transpose(x=o, perm=[0, 2, 1], name=f"{p}_o_t"), name=f"{p}_attn_res")
        h = rms_norm(mb, x, lw["post_attention_layernorm"], d.rms_norm_eps, f"{p}_post_norm")
        h = mb.expand_dims(x=mb.transpose(x=h, perm=[0, 2, 1], name=f"{p}_mlp_t"), axes=[2], name=f"{p}_mlp_4d")
        gate = conv2d(mb, h, wv["gate_proj"](), f"{p}_gate_proj")
        up = conv2d(mb, h, wv["up_proj"](), f"{p}_up_proj")
        act = mb.mul(x=mb.silu(x=gate, name=f"{p}_silu"), y=up, name=f"{p}_act")
        down = conv2d(mb, act, wv["down_proj"](), f"{p}_down_proj")
        down = mb.transpose(x=mb.squeeze(x=down, axes=[2], name=f"{p}_down_sq"), perm=[0, 2, 1],
                            name=f"{p}_down_t")
        x = mb.add(x=x, y=down, name=f"{p}_mlp_res")
    return x


def ffn_program(d: Dims, w: Weights, tokens: int):
    """The `infer` (tokens = 1) or `prefill` (tokens = B) function of the FFN_PF chunk, as a one-function program."""
    ct, mb, types = mil_modules()
    c = d.context
    kv_shape = (2 * d.layers, d.kv_heads, c, d.head_dim)
    shared = {"rope": rope_tables(d), "weights": []}
    for i, lw in enumerate(w.layers):
        entry = {}
        for key in ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"):
            entry[key] = (lambda lin=lw[key], name=f"layer{i}_{key}": weight_var(mb, types, lin, (1, 1), name))
        entry["o_proj"] = (lambda lin=lw["o_proj"], name=f"layer{i}_o_proj": weight_var(mb, types, lin, (1,), name))
        shared["weights"].append(entry)

    specs = [
        mb.TensorSpec(shape=(1, tokens, d.hidden), dtype=types.fp16),
        mb.TensorSpec(shape=(tokens,), dtype=types.int32),
        mb.TensorSpec(shape=(1, 1, tokens, c), dtype=types.fp16),
        mb.TensorSpec(shape=(1,), dtype=types.int32),
        mb.StateTensorSpec(shape=kv_shape, dtype=types.fp16),
    ]

    @mb.program(input_specs=specs, opset_version=ct.target.iOS18)
    def prog(hidden_states, position_ids, causal_mask, current_pos, model_model_kv_cache_0):
        positions = current_pos if tokens == 1 else position_ids
        x = decoder_stack(mb, d, w, hidden_states, positions, causal_mask, current_pos,
                          model_model_kv_cache_0, tokens, shared)
        if tokens == 1:
            return rms_norm(mb, x, w.norm, d.rms_norm_eps, "output_hidden_states")
        out = mb.slice_by_index(x=x, begin=[0, 0, 0], end=[1, 1, d.hidden], end_mask=[True, False, True],
                                name="output_hidden_states")
        return out

    return prog


def embeddings_program(w: Weights):
    ct, mb, types = mil_modules()
    from coremltools.converters.mil.mil import get_new_symbol

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, get_new_symbol()), dtype=types.int32)],
                opset_version=ct.target.iOS18)
    def prog(input_ids):
        return mb.gather(x=w.embed.dense, indices=input_ids, axis=0, batch_dims=0, validate_indices=False,
                         name="hidden_states")

    return prog


def lm_head_program(d: Dims, w: Weights):
    ct, mb, types = mil_modules()
    sizes = d.lm_head_sizes()

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 1, d.hidden), dtype=types.fp16)],
                opset_version=ct.target.iOS18)
    def prog(hidden_states):
        x = mb.expand_dims(x=mb.transpose(x=hidden_states, perm=[0, 2, 1], name="head_t"), axes=[2], name="head_in")
        outs = []
        start = 0
        for k, size in enumerate(sizes):
            part = Linear(dense=w.embed.dense[start:start + size],
                          indices=None if w.embed.indices is None else w.embed.indices[start:start + size],
                          lut=None if w.embed.lut is None else w.embed.lut[start // LUT_GROUP:(start + size) // LUT_GROUP])
            start += size
            y = conv2d(mb, x, weight_var(mb, types, part, (1, 1), f"lm_head_{k + 1}"), f"head{k + 1}_conv")
            y = mb.squeeze(x=y, axes=[2], name=f"head{k + 1}_sq")
            outs.append(mb.transpose(x=y, perm=[0, 2, 1], name=f"logits{k + 1}"))
        return tuple(outs)

    return prog


def convert_and_save(prog, path: Path) -> None:
    ct, _, _ = mil_modules()
    model = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       compute_units=ct.ComputeUnit.CPU_AND_NE, skip_model_load=True)
    if path.exists():
        shutil.rmtree(path)
    model.save(str(path))


def edit_spec(path: Path, edit) -> None:
    """Load model.mlmodel of a package, apply `edit(spec)`, write it back (weights untouched)."""
    from coremltools.proto import Model_pb2

    spec_file = path / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file.read_bytes())
    edit(spec)
    spec_file.write_bytes(spec.SerializeToString(deterministic=True))


def set_metadata(spec, description: str, entries: dict[str, str]) -> None:
    meta = spec.description.metadata
    meta.shortDescription = description
    meta.author = f"Converted with Anemll v{ANEMLL_VERSION} (synthetic weights, tools/gen_synthetic_anemll.py)"
    meta.versionString = ANEMLL_VERSION
    meta.userDefined["com.anemll.info"] = f"Converted with Anemll v{ANEMLL_VERSION}"
    for key, value in entries.items():
        meta.userDefined[key] = value


def write_embeddings(d: Dims, w: Weights, out: Path) -> str:
    name = "qwen_embeddings.mlpackage"
    path = out / name
    convert_and_save(embeddings_program(w), path)

    def edit(spec):
        ids = spec.description.input[0].type.multiArrayType
        del ids.shape[:]
        ids.shape.extend([1, 1])
        ids.ClearField("shapeRange")
        for shape in ([1, 1], [1, d.batch]):
            ids.enumeratedShapes.shapes.add().shape.extend(shape)
        out_type = spec.description.output[0].type.multiArrayType
        del out_type.shape[:]
        set_metadata(spec, "Anemll Model (Embeddings) converted to CoreML",
                     {"com.anemll.context_length": str(d.context)})

    edit_spec(path, edit)
    return name


def write_lm_head(d: Dims, w: Weights, out: Path) -> str:
    name = f"qwen_lm_head{d.lut_suffix}.mlpackage"
    path = out / name
    convert_and_save(lm_head_program(d, w), path)
    meta = {"com.anemll.context_length": str(d.context)}
    if d.lut is not None:
        meta["com.anemll.lut_bits"] = str(d.lut)
    edit_spec(path, lambda spec: set_metadata(spec, "Anemll Model (LM Head) converted to CoreML", meta))
    return name


def write_ffn(d: Dims, w: Weights, out: Path) -> str:
    ct, _, _ = mil_modules()
    name = f"qwen_FFN_PF{d.lut_suffix}_chunk_01of01.mlpackage"
    path = out / name
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        infer_path = Path(tmp) / "infer.mlpackage"
        prefill_path = Path(tmp) / "prefill.mlpackage"
        convert_and_save(ffn_program(d, w, 1), infer_path)
        convert_and_save(ffn_program(d, w, d.batch), prefill_path)
        desc = ct.utils.MultiFunctionDescriptor()
        desc.add_function(str(infer_path), src_function_name="main", target_function_name="infer")
        desc.add_function(str(prefill_path), src_function_name="main", target_function_name="prefill")
        desc.default_function_name = "infer"
        if path.exists():
            shutil.rmtree(path)
        ct.utils.save_multifunction(desc, str(path))
    meta = {"com.anemll.context_length": str(d.context), "com.anemll.batch_size": str(d.batch),
            "com.anemll.num_chunks": "1", "com.anemll.chunk_no": "1"}
    if d.lut is not None:
        meta["com.anemll.lut_bits"] = str(d.lut)
    edit_spec(path, lambda spec: set_metadata(spec, "Anemll Model: Multifunction FFN+Prefill", meta))
    return name


def write_meta_yaml(d: Dims, out: Path, embeddings: str, lm_head: str) -> None:
    lut = "none" if d.lut is None else str(d.lut)
    text = f"""model_info:
  name: anemll-synthetic-qwen3-ctx{d.context}
  version: {ANEMLL_VERSION}
  description: |
    Synthetic random-weight Qwen3 (hidden {d.hidden}, {d.layers} layers) for benchmarks; written by
    tools/gen_synthetic_anemll.py (seed {d.seed}).
    Context length: {d.context}
    Batch size: {d.batch}
    Chunks: 1
  license: MIT
  author: Anemll
  framework: Core ML
  language: Python
  architecture: qwen3
  parameters:
    context_length: {d.context}
    batch_size: {d.batch}
    lut_embeddings: none
    lut_ffn: {lut}
    lut_lmhead: {lut}
    num_chunks: 1
    model_prefix: qwen
    embeddings: {embeddings.replace('.mlpackage', '.mlmodelc')}
    lm_head: {lm_head.replace('.mlpackage', '.mlmodelc')}
    ffn: qwen_FFN_PF{d.lut_suffix}.mlmodelc
    split_lm_head: {d.split_lm_head}
"""
    (out / "meta.yaml").write_text(text)
    (out / "config.json").write_text(json.dumps({"tokenizer_class": "Qwen2Tokenizer", "model_type": "qwen3"},
                                                indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# tokenizer and Hugging Face checkpoint

QWEN_SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                      r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                 "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
                 "{% endif %}")


def byte_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def synthetic_bpe(regular: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A valid byte-level BPE with exactly `regular` tokens: the 256 bytes, then merges of existing tokens."""
    base = byte_alphabet()
    vocab = {tok: i for i, tok in enumerate(base)}
    merges: list[tuple[str, str]] = []
    frontier = list(base)
    while len(vocab) < regular:
        grown = []
        for left in frontier:
            for right in base:
                if len(vocab) >= regular:
                    break
                tok = left + right
                if tok in vocab:
                    continue
                vocab[tok] = len(vocab)
                merges.append((left, right))
                grown.append(tok)
            if len(vocab) >= regular:
                break
        frontier = grown
    return vocab, merges


def write_tokenizer(d: Dims, out: Path) -> dict[str, int]:
    """tokenizer.json (+ tokenizer_config.json, vocab.json, merges.txt); returns the special-token ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    regular = min(151643, d.vocab - len(SPECIAL_TOKENS))
    vocab, merges = synthetic_bpe(regular)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIAL_TOKENS])
    tok.save(str(out / "tokenizer.json"))
    ids = {s: regular + i for i, s in enumerate(SPECIAL_TOKENS)}
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "model_max_length": d.context,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "add_prefix_space": False,
        "errors": "replace",
        "split_special_tokens": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {str(i): {"content": s, "special": True, "normalized": False, "lstrip": False,
                                          "rstrip": False, "single_word": False} for s, i in ids.items()},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")
    return ids


def write_hf_checkpoint(d: Dims, w: Weights, hf: Path, special_ids: dict[str, int]) -> None:
    from safetensors.numpy import save_file

    hf.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {"model.embed_tokens.weight": w.embed.dense, "model.norm.weight": w.norm}
    for i, lw in enumerate(w.layers):
        p = f"model.layers.{i}"
        for key in ("q_proj", "k_proj", "v_proj", "o_proj"):
            tensors[f"{p}.self_attn.{key}.weight"] = lw[key].dense
        tensors[f"{p}.self_attn.q_norm.weight"] = lw["q_norm"]
        tensors[f"{p}.self_attn.k_norm.weight"] = lw["k_norm"]
        for key in ("gate_proj", "up_proj", "down_proj"):
            tensors[f"{p}.mlp.{key}.weight"] = lw[key].dense
        tensors[f"{p}.input_layernorm.weight"] = lw["input_layernorm"]
        tensors[f"{p}.post_attention_layernorm.weight"] = lw["post_attention_layernorm"]
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(hf / "model.safetensors"),
              metadata={"format": "pt"})
    config = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": d.vocab,
        "hidden_size": d.hidden,
        "intermediate_size": d.intermediate,
        "num_hidden_layers": d.layers,
        "num_attention_heads": d.heads,
        "num_key_value_heads": d.kv_heads,
        "head_dim": d.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "initializer_range": WEIGHT_STD,
        "rms_norm_eps": d.rms_norm_eps,
        "use_cache": True,
        "tie_word_embeddings": True,
        "rope_theta": d.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": d.layers,
        "bos_token_id": special_ids["<|endoftext|>"],
        "eos_token_id": special_ids["<|im_end|>"],
        "torch_dtype": "float16",
        "transformers_version": "4.57.1",
    }
    (hf / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (hf / "generation_config.json").write_text(json.dumps({
        "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"], "do_sample": False},
        indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------------
# numpy reference and --check


def np_rms(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    eps16 = float(np.float16(eps))  # the programs store epsilon as fp16
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps16) * gain.astype(np.float32)


def np_layers(d: Dims, w: Weights, x: np.ndarray, positions: np.ndarray, cache: np.ndarray) -> np.ndarray:
    """Decoder layers in fp32 for tokens x [T, H] at absolute positions; updates cache [2L, KVH, C, D] in place."""
    cos_t, sin_t = (t[0].astype(np.float32) for t in rope_tables(d))
    cos, sin = cos_t[positions][:, None, :], sin_t[positions][:, None, :]  # [T, 1, D]
    half = d.head_dim // 2
    rep = d.heads // d.kv_heads
    c = d.context
    mask = np.where(np.arange(c)[None, :] <= positions[:, None], 0.0, -np.inf).astype(np.float32)  # [T, C]

    def rope(t):  # [T, heads, D]
        rot = np.concatenate([-t[..., half:], t[..., :half]], axis=-1)
        return t * cos + rot * sin

    for i, lw in enumerate(w.layers):
        h = np_rms(x, lw["input_layernorm"], d.rms_norm_eps)
        q = (h @ lw["q_proj"].dense.astype(np.float32).T).reshape(-1, d.heads, d.head_dim)
        k = (h @ lw["k_proj"].dense.astype(np.float32).T).reshape(-1, d.kv_heads, d.head_dim)
        v = (h @ lw["v_proj"].dense.astype(np.float32).T).reshape(-1, d.kv_heads, d.head_dim)
        q = rope(np_rms(q, lw["q_norm"], d.rms_norm_eps))
        k = rope(np_rms(k, lw["k_norm"], d.rms_norm_eps))
        cache[i][:, positions, :] = k.transpose(1, 0, 2)
        cache[d.layers + i][:, positions, :] = v.transpose(1, 0, 2)
        keys = np.repeat(cache[i].astype(np.float32), rep, axis=0)  # [heads, C, D]
        vals = np.repeat(cache[d.layers + i].astype(np.float32), rep, axis=0)
        scores = np.einsum("thd,hsd->hts", q, keys) / np.sqrt(d.head_dim) + mask[None]
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        attn = np.einsum("hts,hsd->thd", probs, vals).reshape(-1, d.heads * d.head_dim)
        x = x + attn @ lw["o_proj"].dense.astype(np.float32).T
        h = np_rms(x, lw["post_attention_layernorm"], d.rms_norm_eps)
        gate = h @ lw["gate_proj"].dense.astype(np.float32).T
        up = h @ lw["up_proj"].dense.astype(np.float32).T
        x = x + ((gate / (1.0 + np.exp(-gate))) * up) @ lw["down_proj"].dense.astype(np.float32).T
    return x


def compare(name: str, got: np.ndarray, want: np.ndarray, atol: float, rtol: float) -> bool:
    got = got.astype(np.float32)
    want = want.astype(np.float32)
    if got.shape != want.shape:
        print(f"  FAIL {name}: shape {got.shape}, expected {want.shape}")
        return False
    err = np.abs(got - want)
    limit = atol + rtol * np.abs(want)
    ok = bool(np.all(err <= limit))
    print(f"  {'ok  ' if ok else 'FAIL'} {name}: max |diff| {err.max():.4g} (max |ref| {np.abs(want).max():.4g}, "
          f"atol {atol}, rtol {rtol})")
    return ok


def run_cli(cli: list[str], model: Path, function: str | None, inputs: dict[str, np.ndarray], work: Path,
            state_in: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    from safetensors.numpy import load_file, save_file

    work.mkdir(parents=True, exist_ok=True)
    args = list(cli) + ["run", str(model), "--output-dir", str(work)]
    if function:
        args += ["--function", function]
    for name, value in inputs.items():
        np.save(work / f"in_{name}.npy", value)
        args += ["--input", f"{name}={work / f'in_{name}.npy'}"]
    if state_in is not None:
        save_file({STATE_NAME: state_in}, str(work / "state_in.safetensors"))
        args += ["--state-in", str(work / "state_in.safetensors"), "--state-out", str(work / "state_out.safetensors")]
    print("  $", " ".join(args))
    subprocess.run(args, check=True, cwd=REPO)
    outs = {p.stem: np.load(p) for p in work.glob("*.npy") if not p.name.startswith("in_")}
    state = load_file(str(work / "state_out.safetensors"))[STATE_NAME] if state_in is not None else None
    return outs, state


def check(d: Dims, w: Weights, out: Path, embeddings: str, ffn: str, lm_head: str, cli: list[str]) -> bool:
    """Run every part with `candle-coreml run` and compare with the numpy forward pass."""
    rng = np.random.default_rng(d.seed + 1)
    b, c = d.batch, d.context
    ids = rng.integers(0, d.vocab, size=(1, b), dtype=np.int32)
    ok = True
    work = Path(tempfile.mkdtemp(prefix="gen_synthetic_check_"))
    print(f"check: work dir {work}")

    print("embeddings [1, B]:")
    outs, _ = run_cli(cli, out / embeddings, None, {"input_ids": ids}, work / "emb")
    want_emb = w.embed.dense[ids[0]][None]
    ok &= compare("hidden_states", outs["hidden_states"], want_emb, 0.0, 0.0)

    print("prefill (positions 0..B-1, empty cache):")
    cache = np.zeros((2 * d.layers, d.kv_heads, c, d.head_dim), np.float32)
    positions = np.arange(b)
    ref = np_layers(d, w, want_emb[0].astype(np.float32), positions, cache)
    full_mask = np.triu(np.full((c, c), -np.inf, np.float32), k=1).astype(np.float16)
    outs, state = run_cli(cli, out / ffn, "prefill", {
        "hidden_states": want_emb.astype(np.float16),
        "position_ids": positions.astype(np.int32),
        "causal_mask": full_mask[None, None, 0:b],
        "current_pos": np.array([0], np.int32),
    }, work / "prefill", state_in=np.zeros(cache.shape, np.float16))
    ok &= compare("output_hidden_states (row 0)", outs["output_hidden_states"], ref[None, 0:1], 0.02, 0.02)
    ok &= compare("KV cache rows 0..B-1", state[:, :, :b], cache[:, :, :b], 0.02, 0.02)

    print("infer (position B, numpy cache as state):")
    token = rng.integers(0, d.vocab, size=(1, 1), dtype=np.int32)
    x = w.embed.dense[token[0]].astype(np.float32)
    state_in = cache.astype(np.float16)
    cache16 = state_in.astype(np.float32)
    ref = np_rms(np_layers(d, w, x, np.array([b]), cache16), w.norm, d.rms_norm_eps)
    outs, state = run_cli(cli, out / ffn, "infer", {
        "hidden_states": w.embed.dense[token[0]][None],
        "position_ids": np.array([b], np.int32),
        "causal_mask": full_mask[None, None, b:b + 1],
        "current_pos": np.array([b], np.int32),
    }, work / "infer", state_in=state_in)
    ok &= compare("output_hidden_states", outs["output_hidden_states"], ref[None], 0.02, 0.02)
    ok &= compare("KV cache row B", state[:, :, b], cache16[:, :, b], 0.02, 0.02)

    print("lm_head:")
    hidden = ref[None].astype(np.float16)
    outs, _ = run_cli(cli, out / lm_head, None, {"hidden_states": hidden}, work / "head")
    logits = np.concatenate([outs[f"logits{k + 1}"] for k in range(d.split_lm_head)], axis=-1)
    want_logits = hidden.astype(np.float32) @ w.embed.dense.astype(np.float32).T
    ok &= compare("logits (concatenated)", logits, want_logits, 0.02, 0.02)
    arg_got, arg_want = int(np.argmax(logits)), int(np.argmax(want_logits))
    top = np.sort(want_logits.ravel())[-2:]
    print(f"  argmax: runtime {arg_got}, numpy {arg_want} (numpy top-2 gap {top[1] - top[0]:.4g})")
    shutil.rmtree(work)
    print("check:", "PASSED" if ok else "FAILED")
    return ok


# ----------------------------------------------------------------------------------------------------------------


def parse_args() -> tuple[Dims, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="output directory (created; existing parts replaced)")
    p.add_argument("--lut", default="8", choices=["8", "4", "none"], help="LUT bits of the FFN and LM head")
    p.add_argument("--hidden", type=int, default=Dims.hidden)
    p.add_argument("--layers", type=int, default=Dims.layers)
    p.add_argument("--heads", type=int, default=Dims.heads)
    p.add_argument("--kv-heads", type=int, default=Dims.kv_heads)
    p.add_argument("--head-dim", type=int, default=Dims.head_dim)
    p.add_argument("--intermediate", type=int, default=Dims.intermediate)
    p.add_argument("--vocab", type=int, default=Dims.vocab)
    p.add_argument("--context", type=int, default=Dims.context)
    p.add_argument("--batch", type=int, default=Dims.batch, help="prefill batch size")
    p.add_argument("--split-lm-head", type=int, default=Dims.split_lm_head)
    p.add_argument("--seed", type=int, default=Dims.seed)
    p.add_argument("--no-hf", action="store_true", help="skip the Hugging Face checkpoint in OUT/hf")
    p.add_argument("--check", action="store_true",
                   help="compare every part, run by `candle-coreml run`, with a numpy forward pass")
    p.add_argument("--cli", default=None,
                   help="candle-coreml binary for --check (default: `cargo run -q -p candle-coreml-cli --release --`)")
    a = p.parse_args()
    d = Dims(hidden=a.hidden, layers=a.layers, heads=a.heads, kv_heads=a.kv_heads, head_dim=a.head_dim,
             intermediate=a.intermediate, vocab=a.vocab, context=a.context, batch=a.batch,
             split_lm_head=a.split_lm_head, lut=None if a.lut == "none" else int(a.lut), seed=a.seed)
    d.validate()
    return d, a


def main() -> int:
    d, a = parse_args()
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"generating weights: {d}", flush=True)
    w = make_weights(d)
    print("writing tokenizer", flush=True)
    special = write_tokenizer(d, out)
    print("writing embeddings", flush=True)
    embeddings = write_embeddings(d, w, out)
    print("writing LM head", flush=True)
    lm_head = write_lm_head(d, w, out)
    print("writing FFN_PF chunk (infer + prefill)", flush=True)
    ffn = write_ffn(d, w, out)
    write_meta_yaml(d, out, embeddings, lm_head)
    if not a.no_hf:
        print("writing Hugging Face checkpoint", flush=True)
        hf = out / "hf"
        write_hf_checkpoint(d, w, hf, special)
        for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
            shutil.copy(out / f, hf / f)
    print(f"done: {out}", flush=True)
    if a.check:
        cli = a.cli.split() if a.cli else ["cargo", "run", "-q", "-p", "candle-coreml-cli", "--release", "--"]
        return 0 if check(d, w, out, embeddings, ffn, lm_head, cli) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
