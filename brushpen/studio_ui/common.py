"""Helpers every studio tab shares: user errors shown as messages, seeds, and the zip download."""

from __future__ import annotations

import functools
import inspect
import io
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from brushpen.errors import BrushpenError
from brushpen.generators.history import history_dir
from brushpen.store import atomic_write_bytes

MAX_SEED = 2**31 - 1


def user_errors(fn: Callable) -> Callable:
    """Show a BrushpenError as a message in the UI (gr.Error), never a traceback."""
    def translate(e: BrushpenError) -> gr.Error:
        return gr.Error(str(e), print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from fn(*args, **kwargs)
            except BrushpenError as e:
                raise translate(e) from e
        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return fn(*args, **kwargs)
        except BrushpenError as e:
            raise translate(e) from e
    return wrapper


def seed_or_none(value: float | None) -> int | None:
    """-1 (or empty) means "pick a random seed"; the chosen one is reported back with the results."""
    if value is None or int(value) < 0:
        return None
    return int(value)


def random_seed() -> int:
    return random.randint(0, MAX_SEED)


def zip_files(paths: list[str], stem: str) -> str:
    """All files in one zip under the history folder, written atomically; returns its path."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:  # PNGs are compressed already
        for p in paths:
            zf.write(p, arcname=Path(p).name)
    return str(atomic_write_bytes(history_dir() / "zips" / f"{stem}.zip", buf.getvalue()))
