"""AutoML at equal compute (BENCHMARKS.md, "AutoML"): the tuned detector LoRA against the hand-set
(shipped) recipe, on a fake family the shipped detector never saw, one thread.

    .venv/bin/python benchmarks/tune.py detector [--family sr-interp] [--budget 480] [--seeds 0,1,2] [--refit 0.5]
    .venv/bin/python benchmarks/tune.py detector-train [--steps 1000] [--budget 900] [--seeds 0,1,2]
    .venv/bin/python benchmarks/tune.py text [--data ~/.cache/brushpen/data/copy-pairs] [--budget 900] [--seeds 0,1,2]
    .venv/bin/python benchmarks/tune.py gan [--data ~/.cache/brushpen/data/noto-face64] [--budget 3600] [--jobs 2] \
        [--work ~/.cache/brushpen/bench/tune-gan]

On a private copy of the store (the shipped `detector`) and a private home:
1. **hand-set**: the shipped adapter recipe (`benchmarks/finetune_detector.py shipped`: rank 4,
   lr 5e-3, replay 0.5, 200 steps of batch 32, 200 examples per class) on `--family`; its wall time T.
2. **tuned**: `brushpen tune detector` with the same request (it is trial 0) and a budget B, of
   which the refit share trains the best settings again, longer (`--refit 0`: the best trial as is).
3. **hand-set at equal compute**: the hand-set settings trained for B / T times as many steps, so
   that it spends what the search spent.
Then each arm's settings are run again with every seed of `--seeds`, and scored on the TEST split
(disjoint by source photo; the search saw only validation): AUC of `--family`'s test fakes against
all test reals, and of the detector's original families pooled. Reports the trials, how many the
pruner stopped and the time that saved (each pruned trial's unrun share of a median full trial).

`detector-train`: the same three arms for the base detector trained from scratch (`brushpen tune
detector-train`: lr, width, augmentation, localisation weight) on the shipped detector's four
families at `--steps`; scored on the test split, on the set's other families (never trained on,
reported first) and on the four.

`text`: the same three arms for the copy LoRA, the shipped `taglines` recipe (rank 8, lr 1e-3,
dropout 0.05, 40 steps of batch 8) on `brushpen data copy-pairs`. Every arm trains on the set's
train.jsonl less a tenth held out for validation (what the search's pruner and its pick see); each
is scored by its copy perplexity on heldout.jsonl, which no arm or trial ever saw (lower is better),
and, where `brushpen data copy-distill` has been built, on that set's held-out copy (other briefs
and kinds: what the adapter does to copy it was not tuned for).

`gan`: the same three arms for the GAN LoRA, the shipped `emoji64:noto-face` recipe (rank 4, lr
0.0025 for G and D, Freeze-D 2, ADA speed 2 kimg, 8 kimg of batch 16) on the 118 Noto faces (`brushpen
data noto --subcategory face-`, built if missing). The search's figure is KID x 1000 of G_ema against
the faces at every kimg, sample seed 0; each arm is scored as BENCHMARKS scores the shipped adapter
(118 images, truncation 1, noise off, the adapter merged) with sample seed `--sample-seed` (default
7, a z the search never saw): KID x 1000 and FID against the faces, lower is better. Few-shot GAN
adaptation has no held-out images: the 118 are both the training set and the reference.

`--jobs N` (text, gan) runs N processes at once, one thread each, and the search is one of them:
the hand-set seeds and the equal-compute arm, sized then by the budget B rather than the search's
measured seconds, run beside it, and the tuned arm's seed runs go first once it is done. The
hand-set run of the request's own seed is the first run ("hand"), not trained twice: the runs are
deterministic.

`--work DIR` makes a run resumable: each finished run (the hand-set run, the search, every arm's
seed run) is kept in DIR as JSON and skipped when the command is run again; a search cut short
starts again from nothing, and a GAN seed run cut short goes on from its last checkpoint. Without
it, everything lives in a temporary folder.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import dataclasses
import functools
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from finetune_detector import pooled, test_set  # noqa: E402

from brushpen.config import apply_threads, get_settings  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ORIGINAL = ["stylegan", "diffusion", "decoder", "splice"]   # what the shipped detector was trained on


def score(base_dir: Path, adapter: Path, images, labels, fams, family: str, old: list[str]) -> dict:
    from brushpen.safety import lora
    from brushpen.safety.detector_train import logits_of

    logits = logits_of(lora.load_adapted(base_dir, adapter), images)
    return {"new": pooled(logits, labels, fams, [family]), "old": pooled(logits, labels, fams, old)}


def _kept(work: Path | None, key: str, fn: Callable[[], object]) -> object:
    """`fn()`'s result, kept as `work/key.json` (atomically) and read back on a later run."""
    if work is None:
        return fn()
    f = work / f"{key}.json"
    if f.is_file():
        print(f"{key}: kept from an earlier run ({f})", flush=True)
        return json.loads(f.read_text())
    from brushpen.store import atomic_write_json

    atomic_write_json(f, json.loads(json.dumps(fn(), default=str)))
    return json.loads(f.read_text())


def _workdir(args: argparse.Namespace) -> Path:
    """The run's private store and home: `--work` (kept, with each finished run in `runs/`) or a
    temporary folder."""
    if args.work is None:
        args.keep = None
        return Path(tempfile.mkdtemp(prefix="tune-bench-"))
    args.keep = args.work / "runs"
    args.keep.mkdir(parents=True, exist_ok=True)
    return args.work


def _done(args: argparse.Namespace, work: Path) -> None:
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


def _search(task: str, req, args: argparse.Namespace) -> dict:
    """The tune of `req` within `--budget`, as JSON: its seconds, trials, best settings and refit."""
    from brushpen.generators.tune import tune

    home = Path(os.environ["BRUSHPEN_HOME"])
    # A search cut short starts again from nothing: its study, its trials' work folders and adapters.
    shutil.rmtree(home / "studies", ignore_errors=True)
    shutil.rmtree(home / "finetune", ignore_errors=True)
    for left in Path(os.environ["BRUSHPEN_WEIGHTS"]).glob("*/*/adapters/tuned*"):
        shutil.rmtree(left, ignore_errors=True)
    t0 = time.monotonic()
    rows: list[dict] = []
    result = tune(task, dataclasses.replace(req, out="tuned"), budget_s=args.budget, seed=0, study="bench",
                  refit=args.refit, on_trial=lambda r: (rows.append(r), print(r, flush=True)))
    return {"seconds": time.monotonic() - t0, "rows": rows, "best_trial": result.best_trial,
            "best_params": dict(result.best_params), "importances": result.importances, "refit": result.refit}


def _arms(req, search: dict | None, over: float, t_hand: float, length: str, snap: str, snap_min: float) -> dict:
    """The three arms' requests; "hand-set at equal compute" trains `over / t_hand` times as long."""
    steps = getattr(req, length)
    word = "kimg" if length == "kimg" else "steps"
    steps_equal = (round(steps * over / t_hand, 3) if isinstance(steps, float)   # kimg
                   else int(round(steps * over / t_hand)))
    arms = {"hand-set": req,
            f"hand-set at equal compute ({steps_equal} {word})": dataclasses.replace(
                req, **{length: steps_equal, snap: max(snap_min, steps_equal // 4)})}
    if search is not None:
        tuned_steps = search["refit"]["length"] if search["refit"] and search["refit"]["published"] else steps
        arms[f"tuned ({tuned_steps} {word})"] = dataclasses.replace(
            req, **search["best_params"], **{length: tuned_steps, snap: max(getattr(req, snap), tuned_steps // 4)})
    return arms


def _seed_jobs(arms: dict, req, seeds: list[int]) -> list[tuple[str, str, object]]:
    """(arm, run name, request) for every arm and seed; the hand-set run of `req`'s own seed is the
    kept "hand" run (the runs are deterministic), so it is not trained twice."""
    out = []
    for arm, r in arms.items():
        slug = "equal" if "equal" in arm else arm.split()[0]
        for s in seeds:
            name = "hand" if slug == "hand-set" and s == req.seed else f"{slug}-s{s}"
            out.append((arm, name, dataclasses.replace(r, seed=s)))
    return out


def _in_pool(args: argparse.Namespace, work: Path | None, task: str, req, run: Callable, t_hand: float,
             seeds: list[int], sizes: tuple) -> tuple[dict, dict, list]:
    """The search and every seed run, `--jobs` processes at once, one thread each. The search is one
    of the jobs, and what does not need it (the hand-set seeds, the equal-compute arm sized by the
    budget) runs beside it; the tuned arm's runs go first in the queue once the search is done."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    arms = _arms(req, None, args.budget, t_hand, *sizes)
    queue = [("search", "search", None)] + [j for j in _seed_jobs(arms, req, seeds) if j[1] != "hand"]
    running, results, search, tuned = {}, {}, None, {}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while queue or running:
            while queue and len(running) < args.jobs:
                arm, name, r = queue.pop(0)
                fn = (functools.partial(_search, task, req, args) if name == "search"
                      else functools.partial(run, name, r))
                running[pool.submit(_kept, work, name, fn)] = name
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                name = running.pop(f)
                results[name] = f.result()
                if name == "search":
                    search = results[name]
                    tuned = {a: r for a, r in _arms(req, search, args.budget, t_hand, *sizes).items()
                             if a.startswith("tuned")}
                    queue = _seed_jobs(tuned, req, seeds) + queue
    return search, {**arms, **tuned}, results


def equal_compute(task: str, req, run: Callable, args: argparse.Namespace, knobs: tuple[str, ...],
                  snap_min: float, length: str = "steps", snap: str = "snap", unit: float = 1.0) -> dict:
    """The three arms of the docstring for `task`, each with every seed of `--seeds`; `run(name,
    request)` trains one and returns (seconds, {"new": figure, "old": figure}). `length` and `snap`
    name the request's training length and checkpoint interval; `unit` is what one length unit is
    in the steps the search reports (the GAN reports images, its length is in thousands).

    One process (`--jobs 1`): the search, then the runs, the equal-compute arm sized by the search's
    measured seconds. `--jobs N`: all of them N at a time, the equal-compute arm sized by the budget
    (known before the search ends), so that no core waits for the search."""
    work = args.keep
    t_hand, first = _kept(work, "hand", lambda: run("hand", req))
    print(f"hand-set: {t_hand:.0f} s, test figures {first}", flush=True)
    seeds = [int(x) for x in args.seeds.split(",")]
    sizes = (length, snap, snap_min)
    if args.jobs > 1:
        search, arms, results = _in_pool(args, work, task, req, run, t_hand, seeds, sizes)
        results["hand"] = (t_hand, first)
    else:
        search = _kept(work, "search", lambda: _search(task, req, args))
        arms = _arms(req, search, search["seconds"], t_hand, *sizes)
        results = {"hand": (t_hand, first)}
        for _, name, r in _seed_jobs(arms, req, seeds):
            if name not in results:
                results[name] = _kept(work, name, functools.partial(run, name, r))
    t_search, rows, best = search["seconds"], search["rows"], search["best_params"]
    print(f"refit: {search['refit']}", flush=True)
    steps = getattr(req, length)
    order = ["hand-set", next(a for a in arms if a.startswith("tuned")), next(a for a in arms if "equal" in a)]
    arms = {a: arms[a] for a in order}
    jobs = _seed_jobs(arms, req, seeds)
    done = [results[name] for _, name, _ in jobs]
    table = {}
    for arm, r in arms.items():
        runs = [res for (a, _, _), res in zip(jobs, done) if a == arm]
        table[arm] = {"params": {**{k: getattr(r, k) for k in knobs}, "steps": getattr(r, length)},
                      "seconds": [round(t, 1) for t, _ in runs],
                      "new": [round(m["new"], 4) for _, m in runs],
                      "old": [None if m["old"] is None else round(m["old"], 4) for _, m in runs]}
        print(arm, table[arm], flush=True)
    complete = [r["seconds"] for r in rows if r["state"] == "complete" and r["seconds"]]
    full = statistics.median(complete) if complete else 0.0
    pruned = [r for r in rows if r["state"] == "pruned"]
    saved = sum(full * (1 - (r["reached"] or 0) / unit / steps) for r in pruned)
    return {"hand_seconds": round(t_hand, 1), "search_seconds": round(t_search, 1), "budget": args.budget,
            "trials": rows, "best_trial": search["best_trial"], "best_params": best,
            "importances": search["importances"], "pruned": len(pruned), "saved_seconds": round(saved, 1),
            "arms": table, "threads": 1, "refit": search["refit"], "refit_share": args.refit}


def run_detector(args: argparse.Namespace) -> dict:
    from brushpen.safety.lora_train import DetectorFinetuneRequest, finetune

    data = args.data
    work = _workdir(args)
    store = work / "weights"
    shutil.copytree(REPO / "weights" / "safety" / "detector", store / "safety" / "detector",
                    ignore=shutil.ignore_patterns("adapters", "edge"), dirs_exist_ok=True)
    os.environ["BRUSHPEN_WEIGHTS"], os.environ["BRUSHPEN_HOME"] = str(store), str(work / "home")
    base_dir = store / "safety" / "detector"
    # The shipped detector was trained on the earlier set's four families; the rebuilt set under the
    # same path has eleven. Replay (and "original families") must be those four, never the new one.
    record = json.loads((base_dir / "train.json").read_text())
    record["config"]["families"] = ORIGINAL
    (base_dir / "train.json").write_text(json.dumps(record))
    images, labels, fams = test_set(data)
    old = [f for f in json.loads((base_dir / "train.json").read_text())["families"] if f in set(fams)]
    req = DetectorFinetuneRequest(base="detector", fake=data, real=data / "real", out="hand", families=[args.family],
                                  count=200, steps=200, rank=4, lr=5e-3, replay=0.5, seed=0)

    def run(name: str, r: DetectorFinetuneRequest) -> tuple[float, dict]:
        t0 = time.monotonic()
        res = finetune(dataclasses.replace(r, out=name))
        seconds = time.monotonic() - t0
        return seconds, score(base_dir, res.path, images, labels, fams, args.family, old)

    out = equal_compute("detector", req, run, args, ("lr", "rank", "replay", "loc_weight"), 100)
    _done(args, work)
    return {"family": args.family, "old_families": old, **out}


def run_detector_train(args: argparse.Namespace) -> dict:
    from brushpen.safety.detector import load_detector
    from brushpen.safety.detector_train import DetectorTrainRequest, logits_of, model_dir, train_request

    data = args.data
    work = _workdir(args)
    os.environ["BRUSHPEN_WEIGHTS"], os.environ["BRUSHPEN_HOME"] = str(work / "weights"), str(work / "home")
    images, labels, fams = test_set(data)
    unseen = sorted(set(fams[labels == 1]) - set(ORIGINAL))
    steps = args.steps or 1000
    req = DetectorTrainRequest(fake=data, real=data / "real", out="hand", families=",".join(ORIGINAL),
                               steps=steps, snap=max(50, steps // 4), seed=0)

    def run(name: str, r: DetectorTrainRequest) -> tuple[float, dict]:
        t0 = time.monotonic()
        train_request(dataclasses.replace(r, out=name))
        seconds = time.monotonic() - t0
        logits = logits_of(load_detector(model_dir(name)), images)
        shutil.rmtree(model_dir(name), ignore_errors=True)
        return seconds, {"new": pooled(logits, labels, fams, unseen), "old": pooled(logits, labels, fams, ORIGINAL)}

    out = equal_compute("detector-train", req, run, args, ("lr", "width", "augment", "loc_weight"), 50)
    _done(args, work)
    return {"family": "families never trained on, pooled: " + ",".join(unseen), "old_families": ORIGINAL, **out}


def _text_run(sets: dict[str, str], name: str, r) -> tuple[float, dict]:
    """Train one copy adapter and score it by copy perplexity on each held-out JSONL of `sets`."""
    from brushpen.config import apply_threads
    from brushpen.text.base import load_adapted
    from brushpen.text.lora import finetune
    from brushpen.text.lora_data import copy_token_nll, encode, read_examples

    apply_threads(1)
    t0 = time.monotonic()
    res = finetune(dataclasses.replace(r, out=name))
    seconds = time.monotonic() - t0
    tm = load_adapted(res.ref)
    figures = {k: copy_token_nll(tm.model, [encode(tm.tokenizer, e, r.max_len) for e in read_examples(Path(v))])
               ["perplexity"] for k, v in sets.items()}
    shutil.rmtree(res.path, ignore_errors=True)
    return seconds, {"new": figures["new"], "old": figures.get("old")}


def run_text(args: argparse.Namespace) -> dict:
    from brushpen.text.base import convert_base
    from brushpen.text.lora import TextFinetuneRequest

    data = args.data
    if not (data / "train.jsonl").is_file() or not (data / "heldout.jsonl").is_file():
        raise SystemExit(f"{data} holds no train.jsonl and heldout.jsonl: run `brushpen data copy-pairs` "
                         "(or pass --data)")
    base = convert_base()
    other = get_settings().data_dir / "copy-distill" / "heldout.jsonl"   # before the private home below
    work = _workdir(args)
    (work / "home" / "models").mkdir(parents=True, exist_ok=True)
    if not (work / "home" / "models" / base.name).exists():
        (work / "home" / "models" / base.name).symlink_to(base.resolve(), target_is_directory=True)
    os.environ["BRUSHPEN_WEIGHTS"], os.environ["BRUSHPEN_HOME"] = str(work / "weights"), str(work / "home")
    sets = {"new": data / "heldout.jsonl", **({"old": other} if other.is_file() else {})}
    # The shipped taglines recipe (weights/text/smollm2-135m/adapters/taglines/card.md), validated on a
    # tenth of train instead of heldout.jsonl, which stays unseen.
    req = TextFinetuneRequest(data=data / "train.jsonl", out="hand", rank=8, dropout=0.05, lr=1e-3, batch_size=8,
                              max_steps=args.steps or 40, eval_every=min(20, args.steps or 40), heldout=None,
                              heldout_fraction=0.1, seed=0, threads=1)

    run = functools.partial(_text_run, {k: str(v) for k, v in sets.items()})
    out = equal_compute("text", req, run, args, ("lr", "rank", "dropout"), 10, length="max_steps", snap="eval_every")
    _done(args, work)
    return {"family": "copy-pairs heldout.jsonl, perplexity", "old_families": "copy-distill held-out copy, perplexity",
            **out}


def _gan_run(ctx: dict, name: str, r) -> tuple[float, dict]:
    """Train one GAN adapter; score it merged, as BENCHMARKS scores the shipped one: KID x 1000 ("new")
    and FID ("old") of 118 images against the target faces, with the sample seed of `ctx`."""
    from finetune_gan import score

    from brushpen.config import apply_threads
    from brushpen.gan.data import load_image_folder
    from brushpen.gan.finetune import finetune
    from brushpen.gan.lora import load_adapted_generator
    from brushpen.gan.metrics import reference_features

    apply_threads(1)
    data, base_dir = Path(ctx["data"]), Path(ctx["base_dir"])
    t0 = time.monotonic()
    # a run cut short (a session's end) goes on from its last checkpoint; its seconds are then this part's
    res = finetune(dataclasses.replace(r, out=name, resume=True), lambda ev: None)
    seconds = time.monotonic() - t0
    G = load_adapted_generator(base_dir, res.path).eval()
    labels = load_image_folder(data, 64, use_labels=True).labels
    row = score(base_dir, reference_features(data, 64), labels, len(labels), seed=ctx["sample_seed"], G=G)
    shutil.rmtree(res.path, ignore_errors=True)
    print(f"{name}: {seconds:.0f} s, {row}", flush=True)
    return seconds, {"new": row["kid_x1000"], "old": row["fid"]}


def run_gan(args: argparse.Namespace) -> dict:
    from brushpen.gan.data import build_noto_dataset
    from brushpen.gan.finetune import GanFinetuneRequest

    data = args.data
    if not (data / "dataset.json").is_file():
        print(json.dumps(build_noto_dataset(data, 150, subcategory="face-")), flush=True)
    work = _workdir(args)
    store = work / "weights"
    shutil.copytree(REPO / "weights" / "gan" / "emoji64", store / "gan" / "emoji64",
                    ignore=shutil.ignore_patterns("adapters", "edge"), dirs_exist_ok=True)
    os.environ["BRUSHPEN_WEIGHTS"], os.environ["BRUSHPEN_HOME"] = str(store), str(work / "home")
    # The shipped emoji64:noto-face recipe (its card), seeded like every arm.
    req = GanFinetuneRequest(base="emoji64", data=data, out="hand", mode="lora", rank=4, kimg=args.kimg or 8.0,
                             freeze_d=2, batch=16, lr=0.0025, lr_g=None, ada_kimg=2.0, seed=0, snapshot_kimg=1.0,
                             threads=1)
    ctx = {"data": str(data), "base_dir": str(store / "gan" / "emoji64"), "sample_seed": args.sample_seed}
    out = equal_compute("gan", req, functools.partial(_gan_run, ctx), args, ("lr", "rank", "freeze_d", "ada_kimg"),
                        1.0, length="kimg", snap="snapshot_kimg", unit=1000.0)
    _done(args, work)
    return {"family": f"KID x 1000 vs the {data.name} faces, sample seed {args.sample_seed}",
            "old_families": "FID vs the same faces", **out}


def _mean_sd(values: list[float], digits: int = 4) -> str:
    return f"{statistics.mean(values):.{digits}f} ± {statistics.pstdev(values):.{digits}f}"


def markdown(r: dict) -> str:
    knobs = [k for k in next(iter(r["arms"].values()))["params"] if k != "steps"]
    text, gan = "dropout" in knobs, "freeze_d" in knobs
    old = ("copy-distill held-out, perplexity" if text else "FID" if gan else
           "test AUC, the four trained families" if "width" in knobs else "test AUC, original families pooled")
    new = f"{r['family']} (mean ± sd)" if text or gan else f"test AUC, {r['family']} (mean ± sd)"
    length, digits = ("kimg", 1) if gan else ("steps", 4)   # KID x 1000 and FID; AUC and perplexity
    lines = ["| arm | " + " | ".join(k.replace("_", " ") for k in knobs) + f" | {length} | s per run | {new} | {old} |",
             "|---|" + "---|" * (len(knobs) + 4)]
    for arm, a in r["arms"].items():
        p = a["params"]
        cells = [f"{p[k]:.4g}" if isinstance(p[k], float) else str(p[k]) for k in knobs]
        old_cell = _mean_sd(a["old"], digits) if None not in a["old"] else "-"
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {p['steps']} | {statistics.median(a['seconds']):.0f} "
                     f"| {_mean_sd(a['new'], digits)} | {old_cell} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("task", choices=["detector", "detector-train", "text", "gan"])
    ap.add_argument("--data", type=Path, default=None,
                    help="default: $BRUSHPEN_HOME/data/fakes (detector tasks), $BRUSHPEN_HOME/data/copy-pairs (text), "
                         "$BRUSHPEN_HOME/data/noto-face64 (gan, built if missing)")
    ap.add_argument("--family", default="sr-interp")
    ap.add_argument("--steps", type=int, default=None,
                    help="the hand-set run's steps: detector-train (default 1000) and text (default 40, the recipe's)")
    ap.add_argument("--kimg", type=float, default=None, help="gan: the hand-set run's kimg (default 8, the recipe's)")
    ap.add_argument("--sample-seed", type=int, default=7, help="gan: the z's every arm is scored with")
    ap.add_argument("--budget", type=float, default=None, help="the search's seconds (default 480; gan 3600)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--refit", type=float, default=0.5, help="tune's refit share (0: publish the best trial)")
    ap.add_argument("--jobs", type=int, default=1,
                    help="text, gan: the arms' seed runs in this many processes at once, one thread each")
    ap.add_argument("--work", type=Path, default=None,
                    help="keep the private store, home and every finished run here, so that the command resumes")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.jobs > 1 and args.task not in ("text", "gan"):
        ap.error("--jobs runs the text and gan tasks' seed runs in parallel; the detector tasks run one at a time")
    apply_threads(1)
    folder = {"text": "copy-pairs", "gan": "noto-face64"}.get(args.task, "fakes")
    args.data = args.data or get_settings().data_dir / folder
    args.budget = args.budget or (3600.0 if args.task == "gan" else 480.0)
    result = {"detector": run_detector, "detector-train": run_detector_train, "text": run_text,
              "gan": run_gan}[args.task](args)
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=1, default=str))
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
