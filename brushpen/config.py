"""Settings read from the environment.

`BRUSHPEN_HOME` holds caches, built datasets and derived files (default `~/.cache/brushpen`).
`BRUSHPEN_WEIGHTS` is the weight store (default: the `weights/` folder of this checkout).
`BRUSHPEN_THREADS` pins torch's intra-op threads (default: all cores).
`BRUSHPEN_DEVICE` picks `cpu` or `cuda` (default: cuda when available).
`BRUSHPEN_ENGINE_URL` names an OpenAI-compatible engine whose models serve as copy models `engine/ID`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_URL_ENV = "BRUSHPEN_ENGINE_URL"


@dataclass(frozen=True)
class Settings:
    home: Path
    weights: Path
    threads: int
    device: str

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def outputs_dir(self) -> Path:
        return self.home / "outputs"


def _default_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # config must stay importable without torch
        return "cpu"


def get_settings() -> Settings:
    """Read the settings now; call again after changing the environment (tests do)."""
    home = Path(os.environ.get("BRUSHPEN_HOME", Path.home() / ".cache" / "brushpen")).expanduser()
    weights = Path(os.environ.get("BRUSHPEN_WEIGHTS", REPO_ROOT / "weights")).expanduser()
    threads = int(os.environ.get("BRUSHPEN_THREADS", "0") or 0) or (os.cpu_count() or 1)
    device = os.environ.get("BRUSHPEN_DEVICE") or _default_device()
    return Settings(home=home, weights=weights, threads=threads, device=device)


def apply_threads(threads: int | None = None) -> int:
    """Pin torch's thread count; on a busy 2-core box unpinned torch can run 10x slower."""
    import torch

    n = threads or get_settings().threads
    torch.set_num_threads(n)
    return n


def engine_url() -> str | None:
    """The copy engine's API root (`BRUSHPEN_ENGINE_URL`), checked; None when no engine is set."""
    from urllib.parse import urlsplit

    from brushpen.errors import BadParameter

    url = os.environ.get(ENGINE_URL_ENV, "").strip().rstrip("/")
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BadParameter(f"the engine must be an http(s) URL such as http://127.0.0.1:8080/v1, got '{url}'")
    return url


def use_engine(url: str | None) -> None:
    """`--engine URL`: this process and its children use that engine; checked now, not on first use."""
    if url:
        os.environ[ENGINE_URL_ENV] = url
        engine_url()
