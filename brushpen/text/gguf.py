"""A GGUF causal LM as a plain fp32 Hugging Face folder: dequantized once, so later loads take seconds.

transformers dequantizes a GGUF on every load (10-60 s) and refuses to `save_pretrained` a model it
loaded from one; `convert_gguf` rebuilds a plain model from the same config, without its
quantization config, moves the dequantized weights across and saves model and tokenizer. Used for
the shipped SmolLM2 base (`text/base.py`) and the installable models (`text/install.py`).
"""

from __future__ import annotations

import os
from pathlib import Path

from brushpen.errors import BrokenModel


def load_gguf_file(folder: Path, file: str):
    """Model and tokenizer straight from a GGUF, dequantized to fp32 (slow)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    return model.eval(), tokenizer


def convert_gguf(folder: Path, file: str, out: Path, name: str) -> None:
    """Write `folder/file` into `out` as fp32 safetensors with its tokenizer; `name` goes in the config."""
    from transformers import AutoModelForCausalLM

    loaded, tokenizer = load_gguf_file(folder, file)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    plain = AutoModelForCausalLM.from_config(config, dtype=loaded.dtype)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        raise BrokenModel(f"converting {file} failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
