#!/usr/bin/env python3
"""Builds two tiny ANEMLL-shaped model sets with coremltools' MIL builder, and their expected greedy decodes
computed with numpy, for the variants the converted fixtures do not cover:

- `toy-b1-argmax`: batch-1 model. Embeddings accept only [1, 1]; the FFN chunks have only an `infer` function
  (no `prefill`); the LM head computes the argmax in the model (`argmax_idx` / `argmax_val`, 0.3.5 style) over
  3 splits of uneven size; meta.yaml is 0.3.5 style (argmax_in_model, vocab_size, lm_head_chunk_sizes).
- `toy-update-mask`: prefill batch 4 with a declared `update_mask` input (0.3.5 style: the KV rows to write are
  chosen by a one-hot mask instead of `current_pos`), embeddings that accept only [1, 1] (so a batch is embedded
  token by token), logits split 17/17/16.

Each FFN chunk holds one attention layer: x = h + P[position_ids]; k, v, q = x Wk, x Wv, x Wq; the layer's K/V rows
of the shared state [2L, 1, C, H] are written; out = x + softmax(q K^T / sqrt(H) + mask) V. The numpy reference
follows ANEMLL's host loop (fixtures/README.md section 1.4, docs section 5): batches of B (0.3.5: full batches
only, the rest one token at a time through infer), the last token re-run through infer for the logits, greedy
decode, and the context shift at C - 2 tokens keeping min(max(1, C/B - 2) * B, C - B) tokens (C/2 when B = 1).

Writes crates/llm/tests/data/<set>/ (packages, meta.yaml, a word-level tokenizer.json, expected.json).
Usage (from the repository root): tools/.venv/bin/python tools/make_toy_anemll.py
"""

import json
import pathlib
import shutil
import tempfile

import coremltools as ct
import numpy as np
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "crates" / "llm" / "tests" / "data"

H = 16
C = 16
VOCAB = 50
SPLITS = [17, 17, 16]


def f16(a):
    return np.asarray(a, dtype=np.float16)


def r(a):
    """Rounds to fp16 and back (the precision every op result is stored in)."""
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def convert(prog):
    return ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT16,
        skip_model_load=True,
    )


class Weights:
    def __init__(self, seed, layers):
        rng = np.random.default_rng(seed)
        self.embed = r(rng.normal(0, 1, (VOCAB, H)))
        self.pos = r(rng.normal(0, 0.5, (C, H)))
        self.layers = [
            {name: r(rng.normal(0, 0.5, (H, H))) for name in ("wq", "wk", "wv")} for _ in range(layers)
        ]
        self.head = r(rng.normal(0, 2.0, (VOCAB, H)))


def build_embeddings(w):
    @mb.program(input_specs=[mb.TensorSpec((1, 1), dtype=types.int32)], opset_version=ct.target.iOS18)
    def prog(input_ids):
        return mb.gather(x=f16(w.embed), indices=input_ids, axis=0, name="hidden_states")

    return convert(prog)


def build_ffn(w, layer, layers, tokens, update_mask):
    """One chunk (one layer) for `tokens` tokens per call; the state is [2 * layers, 1, C, H]."""
    lw = w.layers[layer]
    specs = [
        mb.TensorSpec((1, tokens, H), dtype=types.fp16),
        mb.TensorSpec((tokens,), dtype=types.int32),
        mb.TensorSpec((1, 1, tokens, C), dtype=types.fp16),
        mb.TensorSpec((1,), dtype=types.int32),
    ]
    if update_mask:
        specs.append(mb.TensorSpec((1, 1, C, tokens), dtype=types.fp16))
    specs.append(mb.StateTensorSpec((2 * layers, 1, C, H), dtype=types.fp16))

    def body(hidden_states, position_ids, causal_mask, current_pos, mask_in, kv_cache):
        pos = mb.gather(x=f16(w.pos), indices=position_ids, axis=0)
        x = mb.add(x=mb.reshape(x=hidden_states, shape=[tokens, H]), y=pos)
        q = mb.matmul(x=x, y=f16(lw["wq"]))
        k = mb.matmul(x=x, y=f16(lw["wk"]))
        v = mb.matmul(x=x, y=f16(lw["wv"]))
        # Chain the updates through coreml_update_state's result (the updated value): separate read_state ops
        # would be merged by coremltools' common-subexpression pass and all see the state before the writes.
        cache = mb.read_state(input=kv_cache)
        for row, new in ((layer, k), (layers + layer, v)):
            if mask_in is None:
                begin = mb.concat(values=[np.array([row, 0], dtype=np.int32), current_pos, np.array([0], dtype=np.int32)], axis=0)
                end = mb.concat(
                    values=[
                        np.array([row + 1, 1], dtype=np.int32),
                        mb.add(x=current_pos, y=np.array([tokens], dtype=np.int32)),
                        np.array([H], dtype=np.int32),
                    ],
                    axis=0,
                )
                updated = mb.slice_update(x=cache, update=mb.reshape(x=new, shape=[1, 1, tokens, H]), begin=begin, end=end)
            else:
                um = mb.reshape(x=mask_in, shape=[C, tokens])
                old = mb.reshape(
                    x=mb.slice_by_index(x=cache, begin=[row, 0, 0, 0], end=[row + 1, 1, C, H]), shape=[C, H]
                )
                keep = mb.sub(x=np.float16(1.0), y=mb.reduce_sum(x=um, axes=[1], keep_dims=True))
                written = mb.add(x=mb.mul(x=old, y=keep), y=mb.matmul(x=um, y=new))
                updated = mb.slice_update(
                    x=cache, update=mb.reshape(x=written, shape=[1, 1, C, H]), begin=[row, 0, 0, 0], end=[row + 1, 1, C, H]
                )
            cache = mb.coreml_update_state(state=kv_cache, value=updated)
        keys = mb.reshape(x=mb.slice_by_index(x=cache, begin=[layer, 0, 0, 0], end=[layer + 1, 1, C, H]), shape=[C, H])
        values = mb.reshape(
            x=mb.slice_by_index(x=cache, begin=[layers + layer, 0, 0, 0], end=[layers + layer + 1, 1, C, H]),
            shape=[C, H],
        )
        scores = mb.mul(x=mb.matmul(x=q, y=keys, transpose_y=True), y=np.float16(1.0 / np.sqrt(H)))
        scores = mb.add(x=scores, y=mb.reshape(x=causal_mask, shape=[tokens, C]))
        attended = mb.matmul(x=mb.softmax(x=scores, axis=-1), y=values)
        out = mb.add(x=x, y=attended)
        return mb.reshape(x=out, shape=[1, tokens, H], name="output_hidden_states")

    if update_mask:

        @mb.program(input_specs=specs, opset_version=ct.target.iOS18)
        def prog(hidden_states, position_ids, causal_mask, current_pos, update_mask, model_model_kv_cache_0):
            return body(hidden_states, position_ids, causal_mask, current_pos, update_mask, model_model_kv_cache_0)

    else:

        @mb.program(input_specs=specs, opset_version=ct.target.iOS18)
        def prog(hidden_states, position_ids, causal_mask, current_pos, model_model_kv_cache_0):
            return body(hidden_states, position_ids, causal_mask, current_pos, None, model_model_kv_cache_0)

    return convert(prog)


def build_head(w, argmax):
    @mb.program(input_specs=[mb.TensorSpec((1, 1, H), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def prog(hidden_states):
        logits = mb.matmul(x=mb.reshape(x=hidden_states, shape=[1, H]), y=f16(w.head), transpose_y=True)
        parts = []
        at = 0
        for size in SPLITS:
            parts.append(mb.slice_by_index(x=logits, begin=[0, at], end=[1, at + size]))
            at += size
        if not argmax:
            return tuple(
                mb.reshape(x=p, shape=[1, 1, size], name=f"logits{i + 1}") for i, (p, size) in enumerate(zip(parts, SPLITS))
            )
        idx = mb.concat(values=[mb.reduce_argmax(x=p, axis=1) for p in parts], axis=0, name="argmax_idx")
        val = mb.concat(values=[mb.reduce_max(x=p, axes=[1]) for p in parts], axis=0, name="argmax_val")
        return idx, val

    return convert(prog)


def save_multifunction(functions, default, path, tmp):
    desc = ct.utils.MultiFunctionDescriptor()
    for name, model in functions.items():
        single = tmp / f"{path.name}.{name}.mlpackage"
        model.save(str(single))
        desc.add_function(str(single), src_function_name="main", target_function_name=name)
    desc.default_function_name = default
    ct.utils.save_multifunction(desc, str(path))


# ---- numpy reference ------------------------------------------------------------------------------------------


class Reference:
    def __init__(self, w, layers):
        self.w = w
        self.layers = layers
        self.kv = np.zeros((2 * layers, 1, C, H), dtype=np.float32)

    def chunk(self, layer, hidden, positions, update_rows):
        lw = self.w.layers[layer]
        x = r(hidden + self.w.pos[positions])
        q, k, v = r(x @ lw["wq"]), r(x @ lw["wk"]), r(x @ lw["wv"])
        for i, p in enumerate(update_rows):
            self.kv[layer, 0, p] = k[i]
            self.kv[self.layers + layer, 0, p] = v[i]
        keys, values = self.kv[layer, 0], self.kv[self.layers + layer, 0]
        scores = r(r(q @ keys.T) * np.float32(np.float16(1.0 / np.sqrt(H))))
        mask = np.where(np.arange(C)[None, :] <= np.array(positions)[:, None], 0.0, -np.inf)
        scores = r(scores + mask)
        e = np.exp(scores - scores.max(axis=1, keepdims=True))
        attn = r(e / e.sum(axis=1, keepdims=True))
        return r(x + r(attn @ values))

    def run(self, tokens, first_position, rows_written):
        hidden = self.w.embed[tokens]
        positions = list(range(first_position, first_position + len(tokens)))
        for layer in range(self.layers):
            hidden = self.chunk(layer, hidden, positions, rows_written)
        return hidden

    def logits(self, hidden_row):
        return r(hidden_row @ self.w.head.T)


def reference_decode(w, layers, batch, full_batches_only, prompt, steps):
    """Greedy tokens and step logits following the ANEMLL host loop with the context shift."""
    if batch > 1:
        keep = min(max(1, C // batch - 2) * batch, C - batch)
    else:
        keep = max(1, C // 2)
    seq = list(prompt)
    if len(seq) >= C - 2:
        seq = seq[-keep:]
    generated, margins, shifts = [], [], 0
    needs_fill = True
    ref = Reference(w, layers)
    while len(generated) < steps:
        if len(seq) >= C - 2:
            seq = seq[-keep:]
            shifts += 1
            needs_fill = True
        if needs_fill:
            ref = Reference(w, layers)
            n = len(seq)
            p = 0
            if batch > 1:
                while p < n and p + batch <= C and not (full_batches_only and n - p < batch):
                    chunk = seq[p : p + batch]
                    padded = chunk + [0] * (batch - len(chunk))
                    ref.run(padded, p, list(range(p, p + batch)))
                    p += len(chunk)
            while p + 1 < n:
                ref.run([seq[p]], p, [p])
                p += 1
            needs_fill = False
        last = len(seq) - 1
        hidden = ref.run([seq[last]], last, [last])
        logits = ref.logits(hidden[0])
        order = np.argsort(-logits, kind="stable")
        margins.append(float(logits[order[0]] - logits[order[1]]))
        token = int(order[0])
        generated.append(token)
        seq.append(token)
    return generated, min(margins), shifts


def write_set(name, seed, layers, batch, argmax, update_mask, prompt_len, steps):
    set_dir = OUT / name
    if set_dir.exists():
        shutil.rmtree(set_dir)
    set_dir.mkdir(parents=True)
    # Pick the first seed whose greedy decode has a clear margin everywhere (fp16 noise cannot flip a token).
    while True:
        w = Weights(seed, layers)
        rng = np.random.default_rng(seed + 1000)
        prompt = [int(t) for t in rng.integers(1, VOCAB, prompt_len)]
        tokens, margin, shifts = reference_decode(w, layers, batch, update_mask, prompt, steps)
        if margin > 0.25 and shifts >= 1:
            break
        seed += 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        build_embeddings(w).save(str(set_dir / "toy_embeddings.mlpackage"))
        build_head(w, argmax).save(str(set_dir / "toy_lm_head.mlpackage"))
        for layer in range(layers):
            functions = {"infer": build_ffn(w, layer, layers, 1, update_mask)}
            if batch > 1:
                functions["prefill"] = build_ffn(w, layer, layers, batch, update_mask)
            path = set_dir / f"toy_FFN_PF_chunk_{layer + 1:02d}of{layers:02d}.mlpackage"
            save_multifunction(functions, "infer", path, tmp)
    meta = [
        "model_info:",
        f"  name: {name}",
        "  version: 0.3.5",
        "  architecture: toy",
        "  parameters:",
        f"    context_length: {C}",
        f"    batch_size: {batch}",
        f"    state_length: {C}",
        f"    vocab_size: {VOCAB}",
        "    lut_embeddings: none",
        "    lut_ffn: none",
        "    lut_lmhead: none",
        f"    num_chunks: {layers}",
        "    model_prefix: toy",
        "    embeddings: toy_embeddings.mlmodelc",
        "    lm_head: toy_lm_head.mlmodelc",
        "    ffn: toy_FFN_PF.mlmodelc",
        f"    split_lm_head: {len(SPLITS)}",
        f"    lm_head_chunk_sizes: [{', '.join(str(s) for s in SPLITS)}]",
        f"    argmax_in_model: {'true' if argmax else 'false'}",
    ]
    if update_mask:
        meta.append("    update_mask_prefill: true")
    (set_dir / "meta.yaml").write_text("\n".join(meta) + "\n")
    # A word-level tokenizer naming token i `t<i>` (no special tokens), so the generation API can run.
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {"type": "WordLevel", "vocab": {f"t{i}": i for i in range(VOCAB)}, "unk_token": "t0"},
    }
    (set_dir / "tokenizer.json").write_text(json.dumps(tokenizer) + "\n")
    expected = {
        "generator": "tools/make_toy_anemll.py",
        "seed": seed,
        "context_length": C,
        "batch_size": batch,
        "num_chunks": layers,
        "prompt_ids": prompt,
        "greedy_ids": tokens,
        "context_shifts": shifts,
        "min_margin_top1_top2": margin,
    }
    (set_dir / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"{name}: seed {seed}, {len(tokens)} tokens, {shifts} shift(s), min margin {margin:.3f}")


def main():
    write_set("toy-b1-argmax", seed=1, layers=2, batch=1, argmax=True, update_mask=False, prompt_len=6, steps=14)
    write_set("toy-update-mask", seed=1, layers=2, batch=4, argmax=False, update_mask=True, prompt_len=11, steps=10)


if __name__ == "__main__":
    main()
