"""The copywriter on the held-out panel (tests/data/copy_panel.json), scored by the explainable
checks of brushpen.text.checks: how often are at least 2 of 3 variants usable as written?

The panel was written for issue 19 and is never used for tuning; the defaults were tuned on
tests/data/briefs.json. Each brief runs once with `--n 3 --seed S` (the studio's defaults
otherwise), the three variants are checked one after another (the distinct check sees the ones
before), and a brief counts as good when at least 2 are usable. Korean briefs run with `lang="ko"`
(Korean prompts and checks); their rows are reported apart.

`--no-deliberate` measures plain sampling (the three variants are drafts 0..2 of deliberate mode
with the same seed, so the plain run's per-variant rate is also what an unchecked pick of the
same drafts would give); `--draft K` sets deliberate mode's candidates per variant. In deliberate
mode a returned variant has passed these same checks by construction, so read its figures beside
the samples and the by-eye review in BENCHMARKS.md, not alone.

Prints per-kind rates, the failing checks' counts, and one sample brief per kind with its
variants and verdicts (for BENCHMARKS.md). Pins torch to `--threads`.

    .venv/bin/python benchmarks/copy_panel.py --threads 1 --seed 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from brushpen.config import apply_threads
from brushpen.generators.copy import CopyRequest, generate_copy_batch
from brushpen.text import checks, prompts

PANEL = Path(__file__).resolve().parents[1] / "tests" / "data" / "copy_panel.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=3)
    ap.add_argument("--model", default=None,
                    help="a text model or BASE:ADAPTER (default: the copywriter's, smollm2-135m:copy on torch)")
    ap.add_argument("--backend", default="torch", choices=("torch", "onnx", "onnx-int8"),
                    help="the model's backend (onnx-int8 after `brushpen export MODEL --int8`)")
    ap.add_argument("--json", type=Path, help="write every variant and its checks here")
    ap.add_argument("--no-deliberate", dest="deliberate", action="store_false", help="plain sampling")
    ap.add_argument("--draft", type=int, default=None, help="deliberate mode's candidates per variant")
    ap.add_argument("--lang", choices=("en", "ko", "all"), default="all", help="which briefs to run")
    ap.add_argument("--panel", type=Path, default=PANEL,
                    help="the briefs (tune on tests/data/briefs.json, never on the held-out panel)")
    ap.add_argument("--temperature", type=float, default=None, help="default: CopyRequest's")
    ap.add_argument("--no-prefill", action="store_true", help="do not start the answer with the kind's label")
    args = ap.parse_args()
    apply_threads(args.threads)
    data = json.loads(args.panel.read_text(encoding="utf-8"))
    listed = data["briefs"] if isinstance(data, dict) else data   # the panel has an "_about"; briefs.json is a list
    briefs = [{"id": f"{b['kind']}-{i:02d}", **b} for i, b in enumerate(listed)]
    briefs = [b for b in briefs if args.lang in ("all", b.get("lang", "en"))]
    knobs = {"deliberate": args.deliberate, **({"draft": args.draft} if args.draft else {}),
             **({"temperature": args.temperature} if args.temperature is not None else {})}
    prompts.PREFILL = not args.no_prefill
    rows, seconds = [], []
    for b in briefs:
        req = CopyRequest(brief=b["brief"], kind=b["kind"], tone=b.get("tone"), audience=b.get("audience"),
                          n=args.n, seed=args.seed, model=args.model, lang=b.get("lang", "en"), backend=args.backend,
                          **knobs)
        t0 = time.perf_counter()
        result = generate_copy_batch([req])[0]
        seconds.append(time.perf_counter() - t0)
        picked: list[str] = []
        verdicts = []
        for text in result.texts:
            cs = checks.check_copy(text, b["brief"], b["kind"], b.get("lang", "en"), picked)
            picked.append(text)
            verdicts.append({"text": text, "usable": checks.usable(cs),
                             "failed": [c.name for c in cs if not c.passed and (c.hard or c.name == "on_brief")],
                             "details": {c.name: c.detail for c in cs if not c.passed}})
        good = sum(v["usable"] for v in verdicts) >= 2
        rows.append({**b, "variants": verdicts, "good": good, "seconds": round(seconds[-1], 2), "notes": result.notes,
                     "rejected": [v.text for v in result.rejected]})
        print(f"{b['id']:<22} {'good' if good else 'no  '} {sum(v['usable'] for v in verdicts)}/{args.n} "
              f"{seconds[-1]:5.1f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")

    mode = f"deliberate, draft {args.draft or CopyRequest('-').draft}" if args.deliberate else "plain sampling"
    print(f"\n{args.panel.name}: threads {args.threads}, seed {args.seed}, n {args.n}, {mode}, "
          f"temperature {knobs.get('temperature', CopyRequest('-', deliberate=args.deliberate).temperature)}, "
          f"prefill {prompts.PREFILL}, "
          f"model {args.model or 'the default'}, backend {args.backend}\n")
    print("| briefs | kind | at least 2 of 3 usable | usable variants | median s per brief |")
    print("|---|---|---|---|---|")
    for lang in ("en", "ko"):
        sub = [r for r in rows if r.get("lang", "en") == lang]
        for kind in sorted({r["kind"] for r in sub}) + ["all"]:
            rs = sub if kind == "all" else [r for r in sub if r["kind"] == kind]
            if not rs:
                continue
            n_var = args.n * len(rs)   # requested: a deliberate run may return fewer
            good = sum(r["good"] for r in rs)
            print(f"| {lang} | {kind} | {good}/{len(rs)} ({good / len(rs):.0%}) "
                  f"| {sum(v['usable'] for r in rs for v in r['variants'])}/{n_var} "
                  f"| {statistics.median(r['seconds'] for r in rs):.1f} |")
    fails = Counter(f for r in rows if r.get("lang", "en") == "en" for v in r["variants"] for f in v["failed"])
    print("\nfailed checks (English variants): " + ", ".join(f"{k} {v}" for k, v in fails.most_common()))
    print("\nsamples (the first brief of each English kind):")
    for kind in sorted({r["kind"] for r in rows}):
        r = next(r for r in rows if r["kind"] == kind and r.get("lang", "en") == "en")
        print(f"\n- {kind}: \"{r['brief']}\"")
        for v in r["variants"]:
            print(f"  - {'usable' if v['usable'] else 'not usable (' + ', '.join(v['failed']) + ')'}: {v['text']!r}")
        for note in r["notes"]:
            print(f"  - note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
