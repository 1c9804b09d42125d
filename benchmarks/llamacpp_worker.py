"""The llama.cpp anchor row of benchmarks/edge.py's LM table, timed with the same protocol.

Runs under an interpreter that has `llama-cpp-python` (not a brushpen dependency: PyPI ships it as
source only, so it is built outside this repo, see BENCHMARKS.md "Edge variants: copywriter LM").
It imports nothing from brushpen. Input, one JSON object on stdin:

    {"gguf": path, "prompts": [text, ...], "new_tokens": N, "agree_tokens": M, "reps": R, "threads": T}

The first prompt is timed: TTFT = prefill plus the first token, then N greedy tokens; decode tok/s
= (N - 1) / (time for all - TTFT), medians of R after a warm-up, EOS suppressed, as edge.py does.
Then M greedy tokens per prompt for the agreement columns. Output: one JSON line on stdout.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import numpy as np


def greedy(llm, prompt: str, n: int) -> list[int]:
    """n greedy tokens after `prompt` from an empty cache (EOS suppressed)."""
    llm.reset()
    llm.eval(llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))
    eos, vocab = llm.token_eos(), llm.n_vocab()
    out: list[int] = []
    while True:
        # The last position's logits straight from the context (llama-cpp-python 0.3 keeps `scores`
        # only with logits_all, which would compute the 49k-word head at every prompt position).
        scores = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(vocab,)).copy()
        scores[eos] = float("-inf")
        out.append(int(scores.argmax()))
        if len(out) == n:
            return out
        llm.eval([out[-1]])


def main() -> None:
    from llama_cpp import Llama

    job = json.loads(sys.stdin.read())
    llm = Llama(model_path=job["gguf"], n_ctx=1024, n_batch=512, n_threads=job["threads"],
                n_threads_batch=job["threads"], verbose=False)
    first, n = job["prompts"][0], job["new_tokens"]
    greedy(llm, first, 4)   # warm-up
    ttft, total = [], []
    for _ in range(job["reps"]):
        start = time.perf_counter()
        greedy(llm, first, 1)
        ttft.append(time.perf_counter() - start)
        start = time.perf_counter()
        greedy(llm, first, n)
        total.append(time.perf_counter() - start)
    t1, tn = statistics.median(ttft), statistics.median(total)
    out = {"ttft_ms": 1000 * t1, "decode_tok_s": (n - 1) / max(tn - t1, 1e-9), "new_tokens": n,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "tokens": [greedy(llm, p, job["agree_tokens"]) for p in job["prompts"]]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
