"""`stats.jsonl`: one JSON line per training tick, so a run's curve survives its snapshots.

As SG2-ADA's `stats.jsonl`: a `metrics.json` that each snapshot overwrites keeps only the last
point. Each line holds kimg, step, img/s, augment p, the tick's mean losses and the training
seconds so far. A resumed run first drops the lines past its checkpoint (the ticks that a kill
lost), so the file reads as one uninterrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

from brushpen.store import atomic_write_text


class StatsLog:
    def __init__(self, path: Path):
        self.path = Path(path)

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        return records

    def truncate_after(self, kimg: float) -> None:
        """Keep the lines up to `kimg` (the checkpoint a resumed run starts from)."""
        if not self.path.exists():
            return
        kept = [r for r in self.read() if r.get("kimg", 0) <= kimg + 1e-9]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
