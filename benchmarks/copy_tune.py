"""The copy defaults sweep: every brief of `tests/data/briefs.json` under several sampling settings,
scored by simple automatic measures, so the defaults of `CopyRequest` rest on numbers.

For each setting, all briefs (n variants each, fixed seeds) run through `generate_copy_batch`, the
service `brushpen copy` and the API use, as one left-padded batch with the usual redraws of empty,
repeated and blocked variants. Each returned variant is then scored; every measure is a share of
variants unless noted, and each is deliberately crude, so anyone can check it by hand:

- on-brief: a word of the variant shares its first 5 letters (the whole word, if shorter) with a
  content word of the brief (4+ letters, not a stop word): "bottles" matches "bottle", "bakery"
  matches "bakers". Copy that names nothing of the product is the commonest failure of a 135M model.
- fits length: headline, tagline and email-subject within the word limit their prompt asks for
  (10, 8, 9 words); description, social and ad within the asked sentence count (2-3, 1-3, 2-4).
- chatbot: opens with a chat-assistant or letter voice: "Hey", "Hi", "Hello", "I'm", "I am",
  "I've", "As a(n)", "Sure", "Certainly", "Absolutely", "Here's", "Here is", "Of course",
  "Great question", "Welcome", "Dear" ("Introducing our ..." does not count).
- placeholders: a template slot left for the reader to fill, such as "[Your Name]".
- loops: a run of three words that comes twice in the variant ("the ultimate water bottle ...
  the ultimate water bottle"), the sign of a repetition penalty too weak for the length.
- stray tags: a hashtag or an emoji in a kind other than `social`, where neither belongs.
- new numbers: a number that is not in the brief (an invented price, percentage or count).
- blocklist: variants dropped because every draw hit the blocklist (returned text never hits it).
- kept: variants returned / variants asked (the rest were dropped after 3 empty or repeated draws).
- distinct-2: distinct word bigrams / all word bigrams within each brief's variants, averaged;
  1.0 means the variants share no two-word phrase.
- score: the mean of on-brief, fits length, 1 - chatbot, 1 - stray tags, 1 - new numbers,
  1 - placeholders and 1 - loops.
  Equal weights, no tuning of the weights: a summary for ranking, not a quality metric.
- copy tok/s: tokens of the returned variants (base tokenizer) / wall seconds of the whole batch,
  redraws included; what a batch job gets out, not the decoder's raw rate.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/copy_tune.py --threads 1 --json runs/copy_tune.json
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/copy_tune.py --threads 1 --limit 2 --seeds 1000   # timing
    .venv/bin/python benchmarks/copy_tune.py --rescore runs/copy_tune*.json  # measures again, no generation
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install
from brushpen.generators.copy import CopyRequest, CopyResult, generate_copy_batch  # noqa: E402
from brushpen.text import prompts  # noqa: E402
from brushpen.text.base import load_text_model  # noqa: E402


@dataclass(frozen=True)
class Setting:
    name: str
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    system: str | None = None   # a system prompt in place of `prompts.SYSTEM`

    def label(self) -> str:
        return (f"{self.temperature:g} / {self.top_p:g} / {self.top_k} / {self.repetition_penalty:g}"
                + (" + brand-voice system prompt" if self.system else ""))


# A prompt variant aimed at the commonest miss, a chat persona ("Hey there! I'm Alex, ...").
BRAND_SYSTEM = (f"{prompts.SYSTEM} You write as the brand, in its voice: never introduce yourself, "
                "never greet the reader, never address a letter.")


SETTINGS = (
    Setting("issue", 0.8, 0.95, 50, 1.15),      # the chat-style settings
    Setting("mid", 0.5, 0.9, 50, 1.1),
    Setting("defaults-0", 0.3, 0.9, 50, 1.1),   # the defaults before this sweep
    Setting("cooler", 0.2, 0.9, 50, 1.1),
    Setting("warmer", 0.4, 0.9, 50, 1.1),
    Setting("rp-1.05", 0.3, 0.9, 50, 1.05),
    Setting("rp-1.2", 0.3, 0.9, 50, 1.2),
    Setting("cooler-rp-1.05", 0.2, 0.9, 50, 1.05),
    Setting("top-k-20", 0.3, 0.9, 20, 1.1),
    Setting("brand-voice", 0.3, 0.9, 50, 1.1, BRAND_SYSTEM),
)

# Word limits and sentence ranges, as the prompts in `text.prompts.KINDS` ask for them.
WORD_LIMITS = {"headline": 10, "tagline": 8, "email-subject": 9}
SENTENCE_RANGES = {"description": (2, 3), "social": (1, 3), "ad": (2, 4)}
STOP_WORDS = set("""with that this your from have will make makes made into each every only their them
they than then what when which while about after before over under just more most very also
for and the all are our its you new now per off""".split())
CHATBOT = re.compile(r"^\W*(hey|hi|hello|i'm|i am|i've|as an?|sure|certainly|absolutely|here's|here is|"
                     r"great question|of course|welcome|dear)\b", re.IGNORECASE)
PLACEHOLDER = re.compile(r"\[[^\]\n]{2,40}\]")
HASHTAG = re.compile(r"(?<!\w)#\w")
EMOJI = re.compile("[\U0001F000-\U0001FAFF\u2600-\u27BF\u2B50\u2B55]")
SENTENCE = re.compile(r"[^.!?…]+(?:[.!?…]+|$)")
NUMBER = re.compile(r"\d+(?:[.,]\d+)?")


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def stem(word: str) -> str:
    return word[:5]


def content_stems(brief: str) -> set[str]:
    return {stem(w) for w in words(brief) if len(w) >= 4 and w not in STOP_WORDS and not w.isdigit()}


def sentences(text: str) -> int:
    return sum(1 for s in SENTENCE.findall(text) if re.search(r"\w", s))


def fits_length(text: str, kind: str) -> bool:
    if kind in WORD_LIMITS:
        return 1 <= len(text.split()) <= WORD_LIMITS[kind]
    lo, hi = SENTENCE_RANGES[kind]
    return lo <= sentences(text) <= hi


def distinct2(texts: list[str]) -> float:
    grams = [g for t in texts for g in zip(words(t), words(t)[1:])]
    return len(set(grams)) / len(grams) if grams else 1.0


def score_variant(text: str, brief: dict) -> dict[str, bool]:
    brief_numbers = set(NUMBER.findall(brief["brief"]))
    return {
        "on_brief": bool(content_stems(brief["brief"]) & {stem(w) for w in words(text)}),
        "fits_length": fits_length(text, brief["kind"]),
        "chatbot": bool(CHATBOT.search(text)),
        "stray_tags": brief["kind"] != "social" and bool(HASHTAG.search(text) or EMOJI.search(text)),
        "new_numbers": any(n not in brief_numbers for n in NUMBER.findall(text)),
        "placeholders": bool(PLACEHOLDER.search(text)),
        "loops": loops(text),
    }


def loops(text: str) -> bool:
    w = words(text)
    grams = list(zip(w, w[1:], w[2:]))
    return len(set(grams)) < len(grams)


BAD = ("chatbot", "stray_tags", "new_numbers", "placeholders", "loops")  # shares where lower is better


def score_setting(briefs: list[dict], texts: list[list[str]], notes: list[list[str]], n: int) -> dict:
    """The measures of one setting, from each run's brief, returned texts and notes."""
    rows = [score_variant(t, b) for b, ts in zip(briefs, texts) for t in ts]
    share = {k: sum(r[k] for r in rows) / max(len(rows), 1) for k in ("on_brief", "fits_length", *BAD)}
    return {
        **share,
        "score": (share["on_brief"] + share["fits_length"] + sum(1 - share[k] for k in BAD)) / (2 + len(BAD)),
        "kept": len(rows) / (n * len(briefs)),
        "blocklist_drops": sum("blocklist" in note for ns in notes for note in ns),
        "distinct2": sum(distinct2(ts) for ts in texts) / len(texts),
    }


def run_setting(setting: Setting, briefs: list[dict], n: int, seed: int, max_new_tokens: int,
                model: str = "smollm2-135m") -> list[CopyResult]:
    reqs = [CopyRequest(b["brief"], b["kind"], b.get("tone"), b.get("audience"), n=n, seed=seed + 100 * k, model=model,
                        max_new_tokens=max_new_tokens, temperature=setting.temperature, top_p=setting.top_p,
                        top_k=setting.top_k, repetition_penalty=setting.repetition_penalty,
                        deliberate=False)   # this sweep tunes plain sampling
            for k, b in enumerate(briefs)]
    default_system = prompts.SYSTEM
    prompts.SYSTEM = setting.system or default_system  # read by build_messages at call time
    try:
        return generate_copy_batch(reqs)
    finally:
        prompts.SYSTEM = default_system


COLUMNS = (("on-brief", "on_brief"), ("fits length", "fits_length"), ("chatbot", "chatbot"),
           ("stray tags", "stray_tags"), ("new numbers", "new_numbers"), ("placeholders", "placeholders"),
           ("loops", "loops"), ("kept", "kept"),
           ("distinct-2", "distinct2"), ("score", "score"))


def table(rows: list[dict]) -> str:
    head = "| setting | T / top-p / top-k / rep. pen. | " + " | ".join(c for c, _ in COLUMNS) + \
           " | blocklist drops | s | copy tok/s |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = " | ".join(f"{r[k]:.2f}" for _, k in COLUMNS)
        lines.append(f"| {r['setting']} | {r['label']} | {cells} | {r['blocklist_drops']} | "
                     f"{r['seconds']:.0f} | {r['copy_tok_s']:.1f} |")
    return "\n".join(lines)


def rescore(paths: list[Path], n: int) -> list[dict]:
    """The table again from saved `--json` files: the measures recomputed, the timings as recorded.

    Runs of one setting in several files (say, a later run with another seed) are pooled.
    """
    pooled: dict[str, dict] = {}
    for st in (st for path in paths for st in json.loads(path.read_text(encoding="utf-8"))["settings"]):
        row = pooled.setdefault(st["setting"], {"setting": st["setting"], "label": st["label"], "seconds": 0.0,
                                                "tokens": 0.0, "variants": []})
        row["seconds"] += st["seconds"]
        row["tokens"] += st["copy_tok_s"] * st["seconds"]
        row["variants"] += st["variants"]
    order = {s.name: i for i, s in enumerate(SETTINGS)}
    rows = []
    for row in sorted(pooled.values(), key=lambda r: order.get(r["setting"], len(order))):
        runs = row.pop("variants")
        rows.append({**row, "copy_tok_s": row.pop("tokens") / row["seconds"], "runs": len(runs),
                     **score_setting(runs, [r["texts"] for r in runs], [r["notes"] for r in runs], n)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--briefs", type=Path, default=ROOT / "tests" / "data" / "briefs.json")
    p.add_argument("--limit", type=int, default=None, help="only the first N briefs (timing, smoke)")
    p.add_argument("--n", type=int, default=3, help="variants per brief")
    p.add_argument("--seeds", default="1000,2000,3000",
                   help="comma-separated; each setting runs once per seed, brief k using SEED + 100k + i, "
                        "and the measures pool every run")
    p.add_argument("--max-new-tokens", type=int, default=80)
    p.add_argument("--settings", default=",".join(s.name for s in SETTINGS),
                   help=f"comma-separated subset of: {', '.join(s.name for s in SETTINGS)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="smollm2-135m", help="the copy model swept (default: the base, whose "
                   "plain-sampling defaults this sweep set)")
    p.add_argument("--json", type=Path, help="also write every variant and score here")
    p.add_argument("--rescore", type=Path, nargs="+",
                   help="generate nothing: score the variants saved by earlier --json runs")
    p.add_argument("--show", action="store_true", help="print every variant")
    args = p.parse_args()

    if args.rescore:
        print(table(rescore(args.rescore, args.n)))
        return
    torch.set_num_threads(args.threads)
    briefs = json.loads(args.briefs.read_text(encoding="utf-8"))[:args.limit]
    chosen = [s for s in SETTINGS if s.name in args.settings.split(",")]
    tm = load_text_model()
    seeds = [int(s) for s in args.seeds.split(",")]
    print(f"{len(briefs)} briefs x n={args.n} x seeds {seeds}, max_new_tokens {args.max_new_tokens}, "
          f"{torch.get_num_threads()} thread(s), model {tm.name}", flush=True)
    rows, dump = [], []
    for setting in chosen:
        start, results = time.perf_counter(), []
        for seed in seeds:
            results += run_setting(setting, briefs, args.n, seed, args.max_new_tokens, args.model)
        seconds = time.perf_counter() - start
        runs = briefs * len(seeds)
        tokens = sum(len(tm.tokenizer(t, add_special_tokens=False)["input_ids"]) for r in results for t in r.texts)
        row = {"setting": setting.name, "label": setting.label(), "seconds": seconds, "copy_tok_s": tokens / seconds,
               **score_setting(runs, [r.texts for r in results], [r.notes for r in results], args.n)}
        rows.append(row)
        dump.append({**row, "variants": [{"brief": b["brief"], "kind": b["kind"], "seed": r.settings["seed"],
                                          "texts": r.texts, "notes": r.notes} for b, r in zip(runs, results)]})
        print(f"{setting.name}: score {row['score']:.3f}, on-brief {row['on_brief']:.2f}, "
              f"{seconds:.0f} s", flush=True)
        if args.show:
            for b, r in zip(runs, results):
                print(f"  [{b['kind']}] {b['brief']}")
                for t in r.texts:
                    print(f"     - {t}")
        if args.json:  # after every setting, so a long run leaves its results behind
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "threads": torch.get_num_threads(), "settings": dump},
                                            indent=1, ensure_ascii=False), encoding="utf-8")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
