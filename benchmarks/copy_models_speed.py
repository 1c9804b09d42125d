"""Decode speed of the copy models side by side: the shipped SmolLM2-135M and the installable
bigger ones (`brushpen models install NAME`), fp32 torch, one sequence, 64 forced new tokens after a
copy prompt, at each thread count; medians of `--reps` calls after a warm-up.

    .venv/bin/python benchmarks/copy_models_speed.py --threads 1,2
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from brushpen.config import apply_threads
from brushpen.text import prompts
from brushpen.text.base import BASE_NAME, load_text_model
from brushpen.text.install import INSTALLABLE, installed

BRIEF = "Pet insurance that pays vet bills within 48 hours"


def tokens_per_second(name: str, new_tokens: int, reps: int) -> float:
    tm = load_text_model(name)
    prompt = prompts.build_prompt(tm.tokenizer, BRIEF, "tagline")
    enc = tm.tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    times = []
    for _ in range(reps + 1):   # the first call warms up
        t0 = time.perf_counter()
        with torch.inference_mode():
            tm.model.generate(**enc, do_sample=False, min_new_tokens=new_tokens, max_new_tokens=new_tokens,
                              pad_token_id=tm.tokenizer.pad_token_id)
        times.append(time.perf_counter() - t0)
    return new_tokens / statistics.median(times[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    models = [BASE_NAME] + [name for name in INSTALLABLE if installed(name)]
    print("| model | threads | decode tok/s (prompt included) |")
    print("|---|---|---|")
    for threads in (int(t) for t in args.threads.split(",")):
        apply_threads(threads)
        for name in models:
            print(f"| {name} | {threads} | {tokens_per_second(name, args.new_tokens, args.reps):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
