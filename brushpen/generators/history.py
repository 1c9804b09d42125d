"""The studio's history: every image and copy result made there, kept with its full settings.

Layout under `$BRUSHPEN_HOME/history/`:
- `images/YYYYMMDD-HHMMSS-<id>.png`: the PNG exactly as emitted (settings chunks and watermark);
- `index.jsonl`: one JSON line per item, newest last: id, kind ("image" or "copy"), time, the
  settings, and either the PNG's path or the copy variants.

PNGs are written atomically before their index line, and index lines are appended whole under a
lock and fsynced, so a kill leaves at worst one torn last line, which `list_history` skips.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from brushpen.config import get_settings
from brushpen.generators.copy import CopyResult
from brushpen.generators.images import GeneratedImage
from brushpen.store import atomic_write_bytes

_append_lock = threading.Lock()


@dataclass
class HistoryItem:
    id: str
    kind: str                      # "image" or "copy"
    time: float
    settings: dict[str, Any]
    path: str | None = None        # the PNG, for images
    texts: list[str] = field(default_factory=list)   # the variants, for copy


def history_dir() -> Path:
    return get_settings().home / "history"


def _append(item: HistoryItem) -> None:
    index = history_dir() / "index.jsonl"
    index.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(asdict(item), sort_keys=True) + "\n"
    with _append_lock, open(index, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def _new_id() -> tuple[str, float]:
    now = time.time()
    return f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{uuid.uuid4().hex[:8]}", now


def record_images(images: list[GeneratedImage]) -> list[HistoryItem]:
    """Save each image's PNG and index it; returns the items (their `path` is the saved PNG)."""
    items = []
    for img in images:
        item_id, now = _new_id()
        path = atomic_write_bytes(history_dir() / "images" / f"{item_id}.png", img.png_bytes())
        item = HistoryItem(item_id, "image", now, img.settings, path=str(path))
        _append(item)
        items.append(item)
    return items


def record_copy(result: CopyResult) -> HistoryItem:
    item_id, now = _new_id()
    item = HistoryItem(item_id, "copy", now, result.settings, texts=result.texts)
    _append(item)
    return item


def list_history(limit: int = 100, kind: str | None = None) -> list[HistoryItem]:
    """The newest `limit` items, newest first; images whose PNG was deleted are left out."""
    index = history_dir() / "index.jsonl"
    if not index.exists():
        return []
    items = []
    for line in index.read_text(encoding="utf-8").splitlines():
        try:
            item = HistoryItem(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # a torn last line after a kill
        if kind not in (None, item.kind) or (item.path and not Path(item.path).exists()):
            continue
        items.append(item)
    return items[::-1][:limit]
