"""Copy on an engine against copy here: the same weights, the same briefs, side by side in one run.

The engine is `transformers serve` (shipped in transformers, so it runs offline here) on the
converted SmolLM2-135M base, set to sample; brushpen reaches it as `engine/smollm2`. The local arm
runs the same base (`smollm2-135m`) through brushpen's own batched path. Both are pinned to
`--threads` (the engine through OMP_NUM_THREADS). Each tagline brief of tests/data/briefs.json
(the tuning set; the held-out panel stays out) runs `--repeats` times, plain `n=3` and deliberate
`n=3 --draft 4`, after a warm-up; the table gives median seconds per brief and the variants that
came back. The engine arm is run at `BRUSHPEN_ENGINE_CONCURRENCY` 1 and 4.

What it measures is the cost of the engine path itself: one HTTP request per draft instead of one
batched `generate` whose drafts share the prompt's cache. A stronger model on a faster engine
(llama.cpp, vLLM on a GPU) is what the path is for; its speed is that engine's.

    .venv/bin/python benchmarks/copy_engine.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BRIEFS = REPO / "tests" / "data" / "briefs.json"
sys.path.insert(0, str(REPO / "tests"))

from engine_server import sampling_folder, start_engine, stop_engine  # noqa: E402  (the tests' engine starter)

from brushpen.config import apply_threads  # noqa: E402
from brushpen.generators.copy import CopyRequest, generate_copy  # noqa: E402
from brushpen.text import engine  # noqa: E402
from brushpen.text.base import BASE_NAME  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    apply_threads(args.threads)
    briefs = [b for b in json.loads(BRIEFS.read_text(encoding="utf-8")) if b["kind"] == "tagline"]

    def request(model: str, b: dict, seed: int, **kw) -> CopyRequest:
        return CopyRequest(**{"brief": b["brief"], "kind": "tagline", "tone": b["tone"], "audience": b["audience"],
                              "n": 3, "seed": seed, "model": model, **kw})

    with tempfile.TemporaryDirectory() as tmp:
        folder = sampling_folder(Path(tmp))
        proc, url = start_engine(folder, Path(tmp) / "engine.log", args.threads)
        try:
            os.environ[engine.URL_ENV] = url
            arms = [(f"here, {BASE_NAME}", BASE_NAME, None), ("engine, 1 request at a time", "engine/smollm2", "1"),
                    ("engine, 4 requests at a time", "engine/smollm2", "4")]
            for _, model, _ in arms:   # load and warm up both
                generate_copy(request(model, briefs[0], 99))
            print(f"threads {args.threads} (engine and here), {len(briefs)} tagline briefs × {args.repeats} repeats, "
                  f"engine: transformers serve on the {BASE_NAME} base\n")
            print("| arm | mode | median s per brief | variants returned (of 3) |")
            print("|---|---|---|---|")
            for mode, kw in (("plain n=3", {"deliberate": False}), ("deliberate draft 4", {"draft": 4})):
                for label, model, concurrency in arms:
                    if concurrency:
                        os.environ[engine.CONCURRENCY_ENV] = concurrency
                    times, got = [], []
                    for rep in range(args.repeats):
                        for i, b in enumerate(briefs):
                            start = time.perf_counter()
                            result = generate_copy(request(model, b, 1000 * rep + i, **kw))
                            times.append(time.perf_counter() - start)
                            got.append(len(result.variants))
                    print(f"| {label} | {mode} | {statistics.median(times):.2f} | "
                          f"{statistics.mean(got):.1f} |", flush=True)
        finally:
            stop_engine(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
