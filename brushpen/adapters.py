"""LoRA adapters in the store: `weights/<family>/<base>/adapters/NAME/`, shared by all three families.

An adapter folder holds its weights (safetensors), an `adapter.json` (`AdapterInfo`: which base it
adapts, that base's weight hash, its rank and trainable-parameter count), a `card.md` and a
`metrics.json`. A model is named with its adapter as `base:adapter` (`emoji64:noto-face`) everywhere a
model name is accepted. Loading an adapter never writes to the base folder; an adapter made for
another base, or whose weights do not match its rank, is refused with `BrokenModel`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brushpen.errors import BadParameter, BrokenModel, ModelNotFound
from brushpen.store import atomic_write_json, resolve_model

ADAPTER_INFO = "adapter.json"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class AdapterInfo:
    base: str                  # family/name of the base model
    base_sha256: str           # of the base weights it was trained on (see `weights_sha256`)
    family: str                # gan, text or safety
    rank: int
    trainable_params: int
    targets: list[str] = field(default_factory=list)   # which layers carry a low-rank update
    alpha: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def split_ref(ref: str) -> tuple[str, str | None]:
    """'emoji64:noto-face' -> ('emoji64', 'noto-face'); 'emoji64' -> ('emoji64', None)."""
    base, sep, adapter = str(ref).partition(":")
    if sep and not adapter:
        raise BadParameter(f"'{ref}' names no adapter after ':'")
    return base, (adapter or None)


def check_name(name: str) -> str:
    if not NAME.match(name or ""):
        raise BadParameter(f"bad adapter name '{name}': use letters, digits, '.', '-' or '_' (max 64)")
    return name


def adapter_dir(base_dir: Path, name: str) -> Path:
    return Path(base_dir) / "adapters" / check_name(name)


def list_adapters(base_dir: Path) -> list[str]:
    root = Path(base_dir) / "adapters"
    return sorted(p.name for p in root.iterdir() if (p / ADAPTER_INFO).exists()) if root.is_dir() else []


def weights_sha256(files: list[Path]) -> str:
    """One hash over a model's weight files (name + bytes), to tie an adapter to its exact base."""
    h = hashlib.sha256()
    for f in sorted(Path(p) for p in files):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def write_info(folder: Path, info: AdapterInfo) -> Path:
    return atomic_write_json(Path(folder) / ADAPTER_INFO, asdict(info))


def read_info(folder: Path) -> AdapterInfo:
    f = Path(folder) / ADAPTER_INFO
    if not f.exists():
        raise BrokenModel(f"{folder} is not an adapter folder: {ADAPTER_INFO} is missing")
    try:
        return AdapterInfo(**json.loads(f.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as e:
        raise BrokenModel(f"{f} is not a valid adapter description: {e}") from e


def resolve_adapter(ref: str, family: str | None = None, base_sha256: str | None = None) -> tuple[Path, Path | None]:
    """(base folder, adapter folder or None) for 'base' or 'base:adapter', with clear errors.

    `base_sha256`, when given, must equal the adapter's recorded base hash: an adapter trained on
    other base weights is refused rather than silently applied.
    """
    base, name = split_ref(ref)
    base_dir = resolve_model(base, family=family)
    if name is None:
        return base_dir, None
    folder = Path(base_dir) / "adapters" / name
    if not (folder / ADAPTER_INFO).exists():
        known = ", ".join(list_adapters(base_dir)) or "none"
        raise ModelNotFound(f"{base_dir.name} has no adapter '{name}' (adapters: {known})")
    info = read_info(folder)
    if base_sha256 is not None and info.base_sha256 != base_sha256:
        raise BrokenModel(f"adapter '{name}' was trained on other weights than {base_dir.name} "
                          f"(base hash {info.base_sha256[:12]} vs {base_sha256[:12]}): retrain it on this base")
    return base_dir, folder


# ---- the fine-tuning contract every family follows -------------------------------------------
# `brushpen.gan.finetune.finetune`, `brushpen.text.lora.finetune` and `brushpen.safety.lora_train.finetune`
# each take their family's request dataclass and an optional progress callback, and return a
# `FinetuneResult`. The CLI, the API's fine-tuning jobs and the studio's Fine-tune tab call them.

@dataclass
class FinetuneEvent:
    step: int                  # optimizer steps done (or kimg*1000 images for the GAN)
    total: int
    loss: float | None = None  # the main training loss at this step, for the loss plot
    message: str = ""          # one line for logs ("kimg 1.2, loss_G 0.91, p 0.05")
    metrics: dict[str, float] = field(default_factory=dict)   # any other figures of this step


@dataclass
class FinetuneResult:
    ref: str                   # "base:adapter", usable wherever a model name is
    path: Path                 # the adapter folder
    metrics: dict[str, Any] = field(default_factory=dict)

