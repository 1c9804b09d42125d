"""The weight store: one folder per model under `weights/<family>/<name>/`.

A model folder holds `config.json` + `model.safetensors` (or ONNX files), a `card.md`, a
`metrics.json`, optionally `samples.png`, `adapters/NAME/` and `edge/`. This module lists models,
reads their cards and metrics, refuses pickle-based weights, and writes every file atomically
(temp file in the same folder, fsync, rename), so a kill never leaves a half-written file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from brushpen.config import get_settings
from brushpen.errors import BadInput, BrokenModel, ModelNotFound, UnsafeWeights
from brushpen.families import FAMILIES as FAMILY_RECORDS

# One folder per family (brushpen/families.py); "diffusers" holds links to pipeline folders a user
# already has on disk (`brushpen models add PATH`), the others models trained or shipped here.
FAMILIES = tuple(FAMILY_RECORDS)
SAFE_SUFFIXES = (".safetensors", ".json", ".onnx", ".onnx.data")
UNSAFE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")
PIPELINE_INDEX = "model_index.json"   # a diffusers pipeline folder


@dataclass
class ModelInfo:
    family: str
    name: str
    path: Path
    size_bytes: int
    metrics: dict[str, Any] = field(default_factory=dict)
    adapters: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.family}/{self.name}"

    def key_metric(self) -> str:
        for base in FAMILY_RECORDS[self.family].key_metrics if self.family in FAMILY_RECORDS else ():
            # "fid" also matches variants such as "fid_noise_none" (a figure under other settings).
            for key in [base] + sorted(k for k in self.metrics if k.startswith(base + "_")
                                       and isinstance(self.metrics[k], float)
                                       and not k.endswith(("_num", "_real_images"))):
                if key in self.metrics:
                    value = self.metrics[key]
                    return f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        return "-"

    def card(self) -> str:
        card = self.path / "card.md"
        return card.read_text(encoding="utf-8") if card.exists() else ""


def store_root(root: Path | None = None) -> Path:
    return Path(root) if root is not None else get_settings().weights


def _folder_size(path: Path) -> int:
    # rglob does not follow a linked folder itself, so start from its target.
    return sum(p.stat().st_size for p in path.resolve().rglob("*") if p.is_file())


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").exists() or (path / PIPELINE_INDEX).exists()
                              or any(path.glob("*.onnx")))


def _holds_adapters(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and (path / "adapters").is_dir()


def read_metrics(path: Path) -> dict[str, Any]:
    f = Path(path) / "metrics.json"
    if not f.exists():
        return {}
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BrokenModel(f"{f} is not valid JSON: {e}") from e


def list_models(root: Path | None = None) -> list[ModelInfo]:
    """Every model folder in the store, sorted by family then name."""
    root = store_root(root)
    out = []
    for family in FAMILIES:
        fam_dir = root / family
        if not fam_dir.is_dir():
            continue
        # A base built outside the store (the text base, from PyPI) has a folder for its adapters only.
        for model_dir in sorted(p for p in fam_dir.iterdir() if _is_model_dir(p) or _holds_adapters(p)):
            adapters_dir = model_dir / "adapters"
            # Hidden folders are adapters being written (staging) or replaced.
            adapters = sorted(p.name for p in adapters_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) \
                if adapters_dir.is_dir() else []
            out.append(ModelInfo(family, model_dir.name, model_dir, _folder_size(model_dir),
                                 read_metrics(model_dir), adapters))
    return out


_REF_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def store_ref_problem(name: str) -> str | None:
    """Why `name` is not a store name, or None when it is. Over HTTP a model is `name`,
    `family/name` or `base:adapter` and nothing else: no absolute path, no `..`, nothing relative
    to the server's working directory (the CLI still takes folders)."""
    for side in str(name).split(":", 1):
        parts = side.split("/")
        if len(parts) > 2 or not all(_REF_PART.fullmatch(p) for p in parts):
            shown = str(name)[:80]
            return f"model must be a store name (name, family/name or base:adapter), not a path: {shown!r}"
    return None


def scrub_paths(text: str) -> str:
    """`text` with the store's and BRUSHPEN_HOME's absolute paths shown as `<store>` and `<home>`:
    messages that reach HTTP clients (job errors, events) must not map the server's disk."""
    settings = get_settings()
    for root, label in ((store_root(), "<store>"), (settings.home, "<home>")):
        for form in {str(root), str(Path(root).resolve())}:
            text = text.replace(form, label)
    return text


def resolve_model(name: str | os.PathLike, family: str | None = None,
                  root: Path | None = None) -> Path:
    """Find a model folder from `NAME`, `family/NAME` or a path on disk; clear error if absent."""
    as_path = Path(name)
    if as_path.is_dir():
        check_safe_folder(as_path)
        return as_path
    root = store_root(root)
    text = str(name)
    candidates = [root / text] if "/" in text else \
        [root / fam / text for fam in ((family,) if family else FAMILIES)]
    for cand in candidates:
        if _is_model_dir(cand):
            check_safe_folder(cand)
            return cand
    known = ", ".join(m.ref for m in list_models(root) if family in (None, m.family)) or "none"
    # No server path in the message: it reaches HTTP clients (`brushpen models list` shows where).
    raise ModelNotFound(f"unknown model '{str(name)[:80]}'. Models in the store: {known}")


def check_safe_weight(path: Path) -> Path:
    """Refuse weight files that would be unpickled; we only ever load safetensors, JSON and ONNX."""
    path = Path(path)
    if path.name.endswith(UNSAFE_SUFFIXES):
        raise UnsafeWeights(
            f"refusing to load {path.name}: pickle-based weights ({', '.join(UNSAFE_SUFFIXES)}) can run "
            "arbitrary code. Convert it to .safetensors first.")
    if not path.name.endswith(SAFE_SUFFIXES):
        raise UnsafeWeights(f"refusing to load {path.name}: only safetensors, JSON and ONNX are loaded")
    return path


def check_safe_folder(path: Path) -> None:
    """A model folder whose weights are pickles only is refused rather than silently loaded.

    A diffusers pipeline folder is checked component by component (unet/, vae/, text_encoder/...).
    """
    if (Path(path) / PIPELINE_INDEX).exists():
        for sub in sorted(p for p in Path(path).iterdir() if p.is_dir()):
            check_safe_folder(sub)
        return
    weights = [p for p in Path(path).iterdir() if p.is_file() and p.name.endswith(UNSAFE_SUFFIXES)]
    safe = [p for p in Path(path).iterdir() if p.is_file() and p.name.endswith((".safetensors", ".onnx"))]
    if weights and not safe:
        check_safe_weight(weights[0])


# ---- atomic writes -------------------------------------------------------------------------

def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> Path:
    """Write to a temporary file (created 0600 by mkstemp), fsync, set `mode`, rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def update_metrics(path: Path, **values: Any) -> dict[str, Any]:
    """Merge figures into a model's metrics.json, atomically."""
    metrics = read_metrics(path)
    metrics.update(values)
    atomic_write_json(Path(path) / "metrics.json", metrics)
    return metrics


@contextmanager
def file_lock(path: Path):
    """An exclusive flock on `path` (a folder, or a lock file made if missing) while the block runs,
    for processes that share a home or a store. Each call opens its own file description, so it
    excludes other threads of this process too: a thread must not take the same lock twice."""
    path = Path(path)
    folder = path.is_dir()
    if not folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDONLY | (0 if folder else os.O_CREAT), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # also releases the flock


def publish_dir(staging: Path, final: Path) -> Path:
    """Move a fully written staging folder into place, replacing `final` with no half-state.

    The old folder is renamed aside first, then the new one renamed in, then the old one removed:
    at every instant either the old or the new complete folder sits at a known name. Publishers of
    one folder take turns (a lock on the parent folder), so two at once both succeed, the later winning.
    """
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    with file_lock(final.parent):
        if final.exists():
            if old.exists():  # stale; but while `final` is missing, `old` is the only complete copy
                shutil.rmtree(old)
            os.replace(final, old)
        os.replace(staging, final)
        if old.exists():
            shutil.rmtree(old)
    return final


STALE_STAGING_S = 86400.0   # another machine's staging folder this old is taken as abandoned


def _abandoned(stage: Path) -> bool:
    """Whether a staging folder was left by a kill: its writer (named in the folder's name, as
    `staging_dir` makes it) is gone. Another process may be writing it right now."""
    owner = stage.name.rsplit(".staging-", 1)[-1].rsplit("-", 1)[0]
    pid, _, host = owner.partition("@")
    if not pid.isdigit() or not host:
        return True   # named before writers were recorded
    if host != socket.gethostname():
        try:
            return time.time() - stage.stat().st_mtime > STALE_STAGING_S
        except FileNotFoundError:
            return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:   # alive, another user's
        pass
    return False


def staging_dir(final: Path) -> Path:
    """A fresh hidden folder beside `final` to write into, then `publish_dir`. Staging folders left
    by a kill are removed; those of writers still running (in this or another process) are kept."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        if _abandoned(stale):
            shutil.rmtree(stale, ignore_errors=True)
    owner = f"{os.getpid()}@{socket.gethostname()}"
    stage = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.staging-{owner}-"))
    os.chmod(stage, 0o755)
    return stage


def link_model(target: Path, family: str, name: str, root: Path | None = None,
               check: Callable[[Path], Any] | None = None) -> Path:
    """Add a model folder that lives elsewhere on disk to the store, as a symlink `family/name`.

    Large downloads (a Stable Diffusion folder is several GB) stay where the user keeps them.
    `check(target)`, e.g. a trial load, runs after the cheap checks and before the link is made.
    """
    if family not in FAMILIES:
        raise BadInput(f"unknown family '{family}': expected one of {', '.join(FAMILIES)}")
    if not name or "/" in name or name.startswith("."):
        raise BadInput(f"bad model name '{name}': use letters, digits, '-' or '_'")
    target = Path(target).expanduser().resolve()
    if not _is_model_dir(target):
        raise BadInput(f"{target} is not a model folder (no config.json or {PIPELINE_INDEX})")
    check_safe_folder(target)
    link = store_root(root) / family / name
    if link.exists() or link.is_symlink():
        raise BadInput(f"{family}/{name} is already in the store ({link}); pick another --name")
    if check is not None:
        check(target)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{name}.tmp-link")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)  # atomic: the store never shows a half-made entry
    return link
