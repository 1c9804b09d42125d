"""Brand-voice LoRA for the copywriter: held-out perplexity before and after, adapter size, examples.

Scores the copy tokens of the held-out split of `brushpen data copy-pairs` (the same loss the trainer
reports) under the SmolLM2 base and under the base with the adapter, then writes copy for the first
held-out briefs with both, same seed and the copy defaults. Run after training:

    brushpen data copy-pairs
    BRUSHPEN_THREADS=1 python benchmarks/finetune_text.py --adapter taglines --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", default="taglines")
    ap.add_argument("--data", type=Path, default=None, help="copy-pairs folder (default: $BRUSHPEN_HOME/data/copy-pairs)")
    ap.add_argument("--examples", type=int, default=5, help="held-out briefs to write copy for")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from brushpen.config import apply_threads, get_settings
    from brushpen.generators.copy import CopyRequest, generate_copy
    from brushpen.text.base import BASE_NAME, find_adapter, load_text_model
    from brushpen.text.lora_data import copy_token_nll, encode, read_examples

    threads = apply_threads(args.threads)
    data = args.data or get_settings().data_dir / "copy-pairs"
    held = read_examples(data / "heldout.jsonl")
    ref = f"{BASE_NAME}:{args.adapter}"
    _, adir, info = find_adapter(ref)
    report: dict = {"adapter": ref, "threads": threads, "heldout_examples": len(held),
                    "adapter_bytes": (adir / "adapter_model.safetensors").stat().st_size,
                    "trainable_params": info.trainable_params, "rank": info.rank}
    models = {"before": load_text_model(BASE_NAME), "after": load_text_model(ref)}
    for label, tm in models.items():
        t0 = time.perf_counter()
        scored = copy_token_nll(tm.model, [encode(tm.tokenizer, e) for e in held])
        report[label] = {**scored, "seconds": round(time.perf_counter() - t0, 1)}
        print(f"{label:6} held-out copy loss {scored['heldout_loss']:.4f}  perplexity {scored['perplexity']:.2f}  "
              f"({scored['tokens']} tokens, {report[label]['seconds']} s)", flush=True)
    report["examples"] = []
    for e in held[:args.examples]:
        row = {"brief": e.brief, "kind": e.kind, "tone": e.tone, "reference": e.copy}
        for label, tm in models.items():
            req = CopyRequest(brief=e.brief, kind=e.kind, tone=e.tone, n=1, seed=args.seed, model=tm.name,
                              deliberate=False)
            row[label] = (generate_copy(req).texts or [""])[0]
        report["examples"].append(row)
    print(f"\nadapter {ref}: {report['adapter_bytes']:,} bytes, {report['trainable_params']:,} trainable "
          f"parameters (rank {report['rank']}), {threads} thread(s)\n")
    print("| brief | reference | before | after |\n|---|---|---|---|")
    for row in report["examples"]:
        print(f"| {row['brief']} | {row['reference']} | {row['before']} | {row['after']} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
