#!/usr/bin/env python3
"""Write a GGUF F16 file for llama.cpp from a Qwen3 Hugging Face checkpoint written by gen_synthetic_anemll.py.

llama.cpp's own ``convert_hf_to_gguf.py`` needs torch; this writer needs only numpy and the ``gguf`` package
(pinned in requirements.txt). It writes what that script writes for a tied-embedding Qwen3 with ``--outtype f16``:
2-D weights as F16, norm gains as F32, the byte-level BPE vocabulary (``tokenizer.ggml.pre = qwen2``) padded to
``vocab_size`` with unused ``[PAD{i}]`` entries, and no ``output.weight`` (llama.cpp then uses ``token_embd`` as the
LM head). Quantise with llama.cpp's own tool afterwards, e.g. ``llama-quantize F16.gguf Q8_0.gguf Q8_0``.

Usage: hf_qwen3_to_gguf.py HF_DIR OUT.gguf
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import gguf
import numpy as np
from safetensors.numpy import load_file

# Hugging Face tensor name suffix (inside model.layers.N.) -> GGUF tensor kind
LAYER_TENSORS = {
    "input_layernorm.weight": gguf.MODEL_TENSOR.ATTN_NORM,
    "self_attn.q_proj.weight": gguf.MODEL_TENSOR.ATTN_Q,
    "self_attn.k_proj.weight": gguf.MODEL_TENSOR.ATTN_K,
    "self_attn.v_proj.weight": gguf.MODEL_TENSOR.ATTN_V,
    "self_attn.o_proj.weight": gguf.MODEL_TENSOR.ATTN_OUT,
    "self_attn.q_norm.weight": gguf.MODEL_TENSOR.ATTN_Q_NORM,
    "self_attn.k_norm.weight": gguf.MODEL_TENSOR.ATTN_K_NORM,
    "post_attention_layernorm.weight": gguf.MODEL_TENSOR.FFN_NORM,
    "mlp.gate_proj.weight": gguf.MODEL_TENSOR.FFN_GATE,
    "mlp.up_proj.weight": gguf.MODEL_TENSOR.FFN_UP,
    "mlp.down_proj.weight": gguf.MODEL_TENSOR.FFN_DOWN,
}


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.TOKEN_EMBD] + ".weight"
    if hf_name == "model.norm.weight":
        return gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.OUTPUT_NORM] + ".weight"
    parts = hf_name.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["model", "layers"] and parts[3] in LAYER_TENSORS:
        return gguf.TENSOR_NAMES[LAYER_TENSORS[parts[3]]].format(bid=int(parts[2])) + ".weight"
    raise SystemExit(f"unexpected tensor {hf_name!r} (expected a tied-embedding Qwen3 checkpoint)")


def add_vocab(writer: gguf.GGUFWriter, hf: Path, vocab_size: int) -> None:
    tok = json.loads((hf / "tokenizer.json").read_text(encoding="utf-8"))
    by_id: dict[int, tuple[str, int]] = {i: (t, gguf.TokenType.NORMAL) for t, i in tok["model"]["vocab"].items()}
    for added in tok.get("added_tokens", []):
        kind = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
        by_id[added["id"]] = (added["content"], kind)
    if max(by_id) >= vocab_size:
        raise SystemExit(f"tokenizer id {max(by_id)} does not fit vocab_size {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(text)
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    special = {a["content"]: a["id"] for a in tok.get("added_tokens", [])}
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(special["<|endoftext|>"])
    writer.add_eos_token_id(special["<|im_end|>"])
    writer.add_pad_token_id(special["<|endoftext|>"])
    writer.add_add_bos_token(False)


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    hf, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = json.loads((hf / "config.json").read_text())
    if cfg.get("model_type") != "qwen3" or not cfg.get("tie_word_embeddings"):
        raise SystemExit(f"{hf}/config.json: expected model_type qwen3 with tie_word_embeddings")
    writer = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.QWEN3])
    writer.add_name(hf.parent.name or hf.name)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_key_length(cfg["head_dim"])
    writer.add_value_length(cfg["head_dim"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    add_vocab(writer, hf, cfg["vocab_size"])
    tensors = {}
    for f in sorted(hf.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    for name in sorted(tensors):
        value = tensors[name]
        value = value.astype(np.float32) if value.ndim == 1 else value.astype(np.float16)
        writer.add_tensor(gguf_name(name), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
