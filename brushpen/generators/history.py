"""The studio's history: every image, seed walk and copy result made there, kept with its full settings.

Layout under `$BRUSHPEN_HOME/history/`:
- `images/YYYYMMDD-HHMMSS-<id>.png`: the PNG exactly as emitted (settings chunks and watermark);
- `walks/YYYYMMDD-HHMMSS-<id>.gif|webp`: seed walks;
- `copy/<id>.credentials.json`: a copy result's signed credentials record (`safety.credentials.sign_copy`);
- `index.jsonl`: one JSON line per item, newest last: id, kind ("image", "walk" or "copy"), time,
  the settings, and either the file's path or the copy variants.

Files are written atomically before their index line. Each line goes to the index in one
`write()` on an O_APPEND descriptor under an exclusive `flock`, then is fsynced, so the studio and
a CLI sharing one home never interleave lines. A kill can leave at worst one torn last line:
`list_history` skips it, and the next append starts on a fresh line so no good line is lost.
"""

from __future__ import annotations

import fcntl
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
from brushpen.generators.images import GeneratedImage, WalkRequest
from brushpen.safety import credentials
from brushpen.store import atomic_write_bytes

KINDS = ("image", "walk", "copy")
_append_lock = threading.Lock()   # flock is per open file description; this guards threads too


@dataclass
class HistoryItem:
    id: str
    kind: str                      # "image", "walk" or "copy"
    time: float
    settings: dict[str, Any]
    path: str | None = None        # the PNG or the animation, for images and walks
    texts: list[str] = field(default_factory=list)   # the variants, for copy


def history_dir() -> Path:
    return get_settings().home / "history"


def _append(item: HistoryItem) -> None:
    index = history_dir() / "index.jsonl"
    index.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(asdict(item), sort_keys=True) + "\n").encode("utf-8")
    with _append_lock:
        fd = os.open(index, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)   # read: the last byte
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data   # a torn line from a kill: end it, so this line parses
            view = memoryview(data)
            while view:                # os.write may write less than asked
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)               # also releases the flock


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


def record_walk(req: WalkRequest, data: bytes) -> HistoryItem:
    """Save a seed walk's animation and index it with the request that made it."""
    item_id, now = _new_id()
    path = atomic_write_bytes(history_dir() / "walks" / f"{item_id}.{req.format}", data)
    item = HistoryItem(item_id, "walk", now, asdict(req), path=str(path))
    _append(item)
    return item


def record_copy(result: CopyResult) -> HistoryItem:
    """Index a copy result; its signed credentials record (`credentials.sign_copy`) is written beside
    the index as `copy/<id>.credentials.json` first, unless signing is off."""
    item_id, now = _new_id()
    if credentials.signing_enabled():
        record = credentials.sign_copy(result.texts, result.settings, {"name": str(result.settings.get("model"))})
        atomic_write_bytes(copy_credentials_path(item_id), json.dumps(record, indent=1).encode("utf-8"))
    item = HistoryItem(item_id, "copy", now, result.settings, texts=result.texts)
    _append(item)
    return item


def copy_credentials_path(item_id: str) -> Path:
    return history_dir() / "copy" / f"{item_id}.credentials.json"


def list_history(limit: int = 100, kind: str | None = None) -> list[HistoryItem]:
    """The newest `limit` items (of one kind, if given), newest first; items whose file was
    deleted are left out."""
    index = history_dir() / "index.jsonl"
    if not index.exists():
        return []
    items = []
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            item = HistoryItem(**json.loads(line))
        except (json.JSONDecodeError, TypeError):
            continue  # a torn line after a kill
        if kind not in (None, item.kind) or (item.path and not Path(item.path).exists()):
            continue
        items.append(item)
    return items[::-1][:limit]
