"""Wall time of a 3-variant tagline, plain sampling against deliberate mode, side by side in one run.

The issue's speed goal: the default path answers `--n 3` for a tagline in under 5 s on one thread.
Each setting runs every tagline brief of tests/data/briefs.json (the tuning set, so the held-out
panel stays out of it) `--repeats` times, through `generate_copy` as `brushpen copy` calls it, the
model loaded and warmed first; the table gives the median seconds per brief. `plain n=12` drafts
as many sequences as deliberate mode's default (3 × 4) without checking them: the same token
budget, for the equal-budget comparison in BENCHMARKS.md.

    .venv/bin/python benchmarks/copy_speed.py --threads 1
    .venv/bin/python benchmarks/copy_speed.py --threads 1 --model qwen2.5-coder-0.5b --repeats 1
    .venv/bin/python benchmarks/copy_speed.py --threads 1 --model qwen2.5-coder-0.5b --backend onnx-int8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from brushpen.config import apply_threads
from brushpen.generators.copy import CopyRequest, generate_copy

BRIEFS = Path(__file__).resolve().parents[1] / "tests" / "data" / "briefs.json"
SETTINGS = (("plain n=3", {"deliberate": False}), ("plain n=12", {"deliberate": False, "n": 12}),
            ("deliberate draft 2", {"draft": 2}), ("deliberate draft 4 (default)", {"draft": 4}),
            ("deliberate draft 8", {"draft": 8}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default=None)
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"),
                    help="onnx-int8 after `brushpen export MODEL --int8` (or `brushpen models install`)")
    args = ap.parse_args()
    apply_threads(args.threads)
    briefs = [b for b in json.loads(BRIEFS.read_text(encoding="utf-8")) if b["kind"] == "tagline"]

    def request(b: dict, seed: int, **kw) -> CopyRequest:
        return CopyRequest(**{"brief": b["brief"], "kind": "tagline", "tone": b["tone"], "audience": b["audience"],
                              "n": 3, "seed": seed, "model": args.model, "backend": args.backend, **kw})

    generate_copy(request(briefs[0], 99))   # load and warm up
    print(f"threads {args.threads}, model {args.model or 'the default'} ({args.backend}), "
          f"{len(briefs)} tagline briefs × {args.repeats} repeats\n")
    print("| setting | sequences drafted | median s per brief | variants returned (of 3) |")
    print("|---|---|---|---|")
    for label, kw in SETTINGS:
        seconds, kept = [], []
        for r in range(args.repeats):
            for k, b in enumerate(briefs):
                req = request(b, 1 + 100 * r + k, **kw)
                t0 = time.perf_counter()
                result = generate_copy(req)
                seconds.append(time.perf_counter() - t0)
                kept.append(min(len(result.variants), 3))
        drafted = kw.get("n", 3) * (kw.get("draft", 1) if kw.get("deliberate", True) else 1)
        print(f"| {label} | {drafted} | {statistics.median(seconds):.2f} | {statistics.mean(kept):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
