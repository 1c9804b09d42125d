"""Edge variants side by side: torch fp32 eager vs onnxruntime fp32 vs onnxruntime int8 (vs student),
one table per model, all from one run.

Each speed/memory figure comes from a fresh subprocess per variant (so peak RSS is that variant's
alone), pinned to `--threads` (torch and onnxruntime alike). One function per model family; this
file holds the copywriter LM's (`lm_table`), other families add theirs to FAMILIES.

The LM columns:
- file MB: the weights torch loads (safetensors) or the .onnx file.
- peak RSS MB: of the subprocess that loads the variant and runs the timing below (measured before
  the quality runs; the JSON also has `peak_rss_all_mb`, after them).
- TTFT ms: prefill of the first brief's copy prompt plus the first new token, batch 1, median of reps.
- decode tok/s: (new tokens - 1) / (time for all of them - TTFT), batch 1, greedy, EOS suppressed.
- vs torch: decode tok/s over torch's.
- agree: greedy-token agreement with the torch tokens over the 20 briefs of tests/data/briefs.json
  (their headline prompts, `--agree-tokens` new tokens each): the share of positions matched up to a
  sequence's first divergence (`edge.lm.token_agreement`); `same` counts identical sequences.
- next-tok: teacher-forced, the share of positions of the held-out text where the variant's top token
  is torch's.
- ppl: perplexity on the held-out text (the first `--ppl-tokens` tokens of
  $BRUSHPEN_HOME/data/fortunes/val.txt, in windows of 256, or the model's own context if shorter).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/edge.py --models smollm2-135m,fortunes-lm --threads 1

`--llama-cpp PYTHON` adds llama.cpp (the DESIGN.md anchor) to SmolLM2's table, on the Q4_1 GGUF the
base is converted from, timed the same way by benchmarks/llamacpp_worker.py under that interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install


def _pin(threads: int) -> None:
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), BRUSHPEN_THREADS=str(threads),
                      HF_HUB_OFFLINE="1")
    import torch

    torch.set_num_threads(threads)


def _briefs() -> list[dict]:
    return json.loads((ROOT / "tests" / "data" / "briefs.json").read_text(encoding="utf-8"))


def _lm(model: str, variant: str):
    """(TextModel-like with .model/.tokenizer, file bytes) for one variant, loading nothing else."""
    from brushpen.edge.lm_runtime import load_ort_text_model
    from brushpen.text.base import load_text_model

    if variant == "torch":
        tm = load_text_model(model)
        return tm, sum(f.stat().st_size for f in tm.path.glob("*.safetensors"))
    tm = load_ort_text_model(model, variant)
    return tm, tm.model.path.stat().st_size


def _prompts(tm, n: int) -> list[str]:
    from brushpen.text import prompts

    return [prompts.build_prompt(tm.tokenizer, b["brief"], "headline", b.get("tone"), b.get("audience"))
            for b in _briefs()[:n]]


def lm_worker(args: argparse.Namespace) -> dict:
    """In a fresh process: load one variant, time TTFT and decode at batch 1, run the quality set."""
    import torch

    from brushpen.edge.lm_runtime import greedy_tokens

    _pin(args.threads)
    tm, size = _lm(args.model, args.variant)
    prompt = _prompts(tm, 1)
    limit = getattr(tm.model.config, "max_position_embeddings", None) or 10**9
    plen = len(tm.tokenizer(prompt[0], add_special_tokens=False)["input_ids"])
    new = max(2, min(args.new_tokens, limit - plen))
    greedy_tokens(tm.model, tm.tokenizer, prompt, 4)   # warm-up
    ttft, total = [], []
    for _ in range(args.reps):
        start = time.perf_counter()
        greedy_tokens(tm.model, tm.tokenizer, prompt, 1)
        ttft.append(time.perf_counter() - start)
        start = time.perf_counter()
        greedy_tokens(tm.model, tm.tokenizer, prompt, new)
        total.append(time.perf_counter() - start)
    t1, tn = statistics.median(ttft), statistics.median(total)
    out = {"variant": args.variant, "file_mb": size / 2**20, "ttft_ms": 1000 * t1,
           "decode_tok_s": (new - 1) / max(tn - t1, 1e-9), "new_tokens": new, "reps": args.reps,
           # Serving memory: loading plus generating, before the quality runs (whose 256-position
           # logits over a 49k vocabulary grow onnxruntime's arena far past what decoding needs).
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    # Quality: greedy tokens for the brief prompts (one at a time: no padding effects on int8), and
    # logits over the held-out text.
    quality_prompts = _prompts(tm, args.briefs)
    agree_new = min(args.agree_tokens, max(1, limit - max(len(tm.tokenizer(p, add_special_tokens=False)
                                                                ["input_ids"]) for p in quality_prompts)))
    out["tokens"] = [greedy_tokens(tm.model, tm.tokenizer, [p], agree_new)[0] for p in quality_prompts]
    ids = _heldout_ids(tm.tokenizer, args.ppl_tokens, min(256, limit))
    with torch.inference_mode():
        logits = torch.cat([tm.model(ids[i:i + 1]).logits if args.variant == "torch"
                            else tm.model.logits(ids[i:i + 1]) for i in range(ids.shape[0])])
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    out["ppl"] = float(nll.exp())
    out["top"] = logits.argmax(-1).tolist()
    out["peak_rss_all_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def _heldout_ids(tokenizer, n_tokens: int, window: int):
    import torch

    from brushpen.config import get_settings

    text = (get_settings().data_dir / "fortunes" / "val.txt").read_text(encoding="utf-8")[: n_tokens * 8]
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    rows = min(len(ids), n_tokens) // window
    return torch.tensor(ids[: rows * window]).view(rows, window)


def lm_table(model: str, args: argparse.Namespace) -> list[dict]:
    from brushpen.edge.lm import token_agreement

    from brushpen.edge.common import available_backends
    from brushpen.edge.export import model_family

    rows = []
    exported = available_backends(model_family(model)[0])
    for variant in ["torch"] + [v for v in ("onnx", "onnx-int8") if v in exported]:
        cmd = [sys.executable, __file__, "--worker", "lm", "--model", model, "--variant", variant,
               "--threads", str(args.threads), "--new-tokens", str(args.new_tokens), "--reps", str(args.reps),
               "--briefs", str(args.briefs), "--agree-tokens", str(args.agree_tokens),
               "--ppl-tokens", str(args.ppl_tokens)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if done.returncode != 0:
            raise SystemExit(f"{variant} worker failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if args.llama_cpp and model in ("smollm2-135m", "smollm2"):
        rows.append(llama_cpp_row(model, args))
    ref = rows[0]
    print(f"\n### {model} ({args.threads} thread(s); TTFT and decode: medians of {args.reps}, batch 1, "
          f"{ref['new_tokens']} new tokens, greedy)\n")
    print("| variant | file MB | peak RSS MB | TTFT ms | decode tok/s | vs torch | agree | same | next-tok | ppl |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        r["agree"] = token_agreement(ref["tokens"], r["tokens"])
        r["same"] = sum(a == b for a, b in zip(ref["tokens"], r["tokens"]))
        next_tok = ppl = "-"   # the llama.cpp row has no teacher-forced logits
        if "top" in r:
            top_same = sum(a == b for ra, rb in zip(ref["top"], r["top"]) for a, b in zip(ra, rb))
            r["next_tok"] = top_same / sum(len(ra) for ra in ref["top"])
            next_tok, ppl = f"{r['next_tok']:.3f}", f"{r['ppl']:.3f}"
        print(f"| {r['variant']} | {r['file_mb']:.1f} | {r['peak_rss_mb']:.0f} | {r['ttft_ms']:.0f} | "
              f"{r['decode_tok_s']:.1f} | {r['decode_tok_s'] / ref['decode_tok_s']:.2f}x | {r['agree']:.3f} | "
              f"{r['same']}/{len(r['tokens'])} | {next_tok} | {ppl} |")
    by_name = {r["variant"]: r for r in rows}
    if "onnx" in by_name and "onnx-int8" in by_name:
        r8, r32 = by_name["onnx-int8"], by_name["onnx"]
        print(f"\nint8 vs ORT fp32: greedy agreement {token_agreement(r32['tokens'], r8['tokens']):.3f}, "
              f"identical {sum(a == b for a, b in zip(r32['tokens'], r8['tokens']))}/{len(r8['tokens'])}; "
              f"perplexity {r32['ppl']:.3f} -> {r8['ppl']:.3f} ({100 * (r8['ppl'] / r32['ppl'] - 1):+.1f}%); "
              f"file {100 * r8['file_mb'] / r32['file_mb']:.0f}% of fp32")
    for r in rows:
        r.pop("tokens"), r.pop("top", None)
    return rows


def llama_cpp_row(model: str, args: argparse.Namespace) -> dict:
    """The anchor: llama.cpp on the Q4_1 GGUF SmolLM2 is converted from, same prompts and protocol,
    run by benchmarks/llamacpp_worker.py under `--llama-cpp` (an interpreter with llama-cpp-python)."""
    from types import SimpleNamespace

    from brushpen.edge.lm_runtime import _tokenizer
    from brushpen.text.base import GGUF_FILE, gguf_source, resolve_text_model

    folder, _ = gguf_source()
    prompts = _prompts(SimpleNamespace(tokenizer=_tokenizer(str(resolve_text_model(model)))), args.briefs)
    job = {"gguf": str(folder / GGUF_FILE), "prompts": prompts, "new_tokens": args.new_tokens,
           "agree_tokens": args.agree_tokens, "reps": args.reps, "threads": args.threads}
    done = subprocess.run([args.llama_cpp, str(Path(__file__).with_name("llamacpp_worker.py"))],
                          input=json.dumps(job), capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
    if done.returncode != 0:
        raise SystemExit(f"llama.cpp worker failed:\n{done.stderr[-3000:]}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"variant": "llama.cpp Q4_1 (anchor)", "file_mb": (folder / GGUF_FILE).stat().st_size / 2**20, **row}


from edge_gan import gan_table, gan_worker  # noqa: E402  (benchmarks/ is on sys.path when run as a script)

FAMILIES = {"smollm2-135m": lm_table, "fortunes-lm": lm_table, "qwen2.5-coder-0.5b": lm_table, "emoji64": gan_table}
WORKERS = {"gan": gan_worker}


def detector_table(model: str, args: argparse.Namespace) -> list[dict]:
    """The deepfake detector's table: torch vs ORT fp32 vs ORT int8 vs student (benchmarks/edge_detector.py)."""
    from edge_detector import detector_table as table   # this folder is on sys.path when run as a script

    return table(model, args)


FAMILIES["detector"] = detector_table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="smollm2-135m,fortunes-lm")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--briefs", type=int, default=20)
    p.add_argument("--agree-tokens", type=int, default=64)
    p.add_argument("--ppl-tokens", type=int, default=2048)
    p.add_argument("--json", default=None, help="also write every row here")
    p.add_argument("--llama-cpp", default=None, metavar="PYTHON",
                   help="an interpreter with llama-cpp-python: adds the llama.cpp anchor row to SmolLM2's table")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "lm":
        print(json.dumps(lm_worker(args)))
        return
    if args.worker in WORKERS:
        _pin(args.threads)
        print(json.dumps(WORKERS[args.worker](args)))
        return
    _pin(args.threads)
    results = {}
    for model in args.models.split(","):
        if model not in FAMILIES:
            raise SystemExit(f"no benchmark for '{model}': choose from {', '.join(FAMILIES)}")
        results[model] = FAMILIES[model](model, args)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
