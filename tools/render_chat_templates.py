#!/usr/bin/env python3
"""Renders multi-turn conversations with transformers' `apply_chat_template` for every ANEMLL fixture tokenizer.

Writes crates/llm/tests/data/chat_templates.json: for each fixture set and conversation, the rendered text and its
token ids (`add_special_tokens=False`). The Rust chat-template and tokenizer tests compare against this file.

Usage (from the repository root): tools/.venv/bin/python tools/render_chat_templates.py
"""

import json
import pathlib

import jinja2
import tokenizers
import transformers
from transformers import AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "anemll"
OUT = ROOT / "crates" / "llm" / "tests" / "data" / "chat_templates.json"

CONVERSATIONS = {
    "system_user_assistant_user": [
        {"role": "system", "content": "You are a terse assistant. Answer in one sentence."},
        {"role": "user", "content": "What is a mutex?"},
        {"role": "assistant", "content": "A lock that lets one thread at a time use a resource."},
        {"role": "user", "content": "And a semaphore? Compare them, with an example: café ☕ 🎉."},
    ],
    "user_assistant_user": [
        {"role": "user", "content": "  Name three rivers.  "},
        {"role": "assistant", "content": "The Nile, the Amazon and the Danube."},
        {"role": "user", "content": "Which is longest?\nAnswer briefly."},
    ],
    "single_user": [
        {"role": "user", "content": "Hello <b>world</b> & \"friends\" — 日本語のテキスト."},
    ],
}

OPTIONS = [
    {"add_generation_prompt": True, "enable_thinking": False},
    {"add_generation_prompt": True, "enable_thinking": True},
    {"add_generation_prompt": False},
]


def main():
    cases = []
    for set_dir in sorted(p for p in FIXTURES.iterdir() if p.is_dir()):
        tokenizer = AutoTokenizer.from_pretrained(str(set_dir))
        for name, messages in CONVERSATIONS.items():
            for options in OPTIONS:
                text = tokenizer.apply_chat_template(messages, tokenize=False, **options)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                cases.append(
                    {
                        "set": set_dir.name,
                        "conversation": name,
                        "messages": messages,
                        "kwargs": options,
                        "text": text,
                        "ids": ids,
                    }
                )
    out = {
        "generator": "tools/render_chat_templates.py",
        "versions": {
            "transformers": transformers.__version__,
            "jinja2": jinja2.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
