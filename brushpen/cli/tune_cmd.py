"""`brushpen tune gan|text|detector|detector-train`: search a fine-tune's settings (Optuna) within a
time budget, or the base detector's own training recipe (`detector-train`), and `brushpen tune show
NAME`: a study's trials and the importance of each setting.

The data flags are the fine-tune's own (one per field of the family's request, as `brushpen
finetune FAMILY` takes them; for `detector-train`, `DetectorTrainRequest`'s); their values, the
shipped recipe by default, are the hand-set trial 0. See `brushpen.generators.tune`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from brushpen import families
from brushpen.cli.finetune_cmd import add_request_flags, request_from_args
from brushpen.config import apply_threads

REQUIRED = {"gan": ("data", "out"), "text": ("data", "out"), "detector": ("fake", "real", "out"),
            "detector-train": ("fake", "out")}


def parse_budget(text: str) -> float:
    """'30m', '90s', '1.5h' or plain seconds -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"a budget is a number with s, m or h (e.g. 30m), not '{text}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def register(sub: argparse._SubParsersAction) -> None:
    from brushpen.generators.tune import CLI_NAMES, SPACES

    group = sub.add_parser("tune", help="AutoML: search a fine-tune's settings within a time budget").add_subparsers(
        dest="tune_cmd", required=True)
    for cli, key in CLI_NAMES.items():
        space, fam = SPACES[key], families.family(SPACES[key].family)
        what = "the base detector's training recipe (a new model in the store)" if space.kind == "model" else \
            f"a {fam.label} LoRA fine-tune ({fam.data_help})"
        p = group.add_parser(cli, help=f"tune {what}")
        add_request_flags(p, space.request_class(), skip=("resume", "threads", "seed", "val_checks", "command"),
                          required=REQUIRED[cli])
        p.add_argument("--budget", type=parse_budget, required=True, help="wall clock for the search: 30m, 2h, 900s")
        p.add_argument("--trials", type=int, default=None, help="at most this many finished trials in the study")
        p.add_argument("--refit", type=float, default=0.5,
                       help="share of the budget kept to train the best settings again, longer (0: publish the "
                            "best trial as it is)")
        p.add_argument("--seed", type=int, default=0, help="the sampler's and every trial's seed")
        p.add_argument("--study", default=None, help="the study's name (default: --out)")
        p.add_argument("--storage", default=None,
                       help="a database URL Optuna takes, to share one study between processes or machines "
                            "(default: sqlite under $BRUSHPEN_HOME/studies/)")
        p.add_argument("--resume", action="store_true", help="continue the study: finished trials are kept")
        p.add_argument("--heartbeat", type=int, default=10,
                       help="seconds between a trial's heartbeats; a trial silent for 3x this is re-run")
        p.add_argument("--threads", type=int, default=None)
        p.set_defaults(func=lambda args, cli=cli: run(cli, args))
    s = group.add_parser("show", help="a study's trials and the importance of each setting")
    s.add_argument("study")
    s.add_argument("--storage", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=run_show)


def run(cli: str, args: argparse.Namespace) -> int:
    from brushpen.generators.tune import space_of, tune

    apply_threads(args.threads)
    space = space_of(cli)
    req = request_from_args(space.request_class(), args)
    if hasattr(req, "seed"):
        req.seed = args.seed
    if hasattr(req, "threads"):
        req.threads = args.threads

    def progress(ev) -> None:   # the intermediate figures the pruner sees
        if ev.metrics.get(space.report) is not None:
            print(ev.message, file=sys.stderr, flush=True)

    def on_trial(row: dict) -> None:
        print(f"trial {row['trial']}: {row['state']}, {space.metric} {row['value']}, {row['params']}"
              + (f" ({row['reason']})" if row.get("reason") else ""), file=sys.stderr, flush=True)

    result = tune(cli, req, budget_s=args.budget, trials=args.trials, seed=args.seed, study=args.study,
                  storage=args.storage, resume=args.resume, heartbeat_s=args.heartbeat, refit=args.refit,
                  progress=progress,
                  on_trial=on_trial)
    print(json.dumps({space.kind: result.ref, "path": str(result.path), "study": result.study,
                      "best_trial": result.best_trial, space.metric: result.best_value, "params": result.best_params,
                      "trials": len(result.trials), "importances": result.importances, "refit": result.refit},
                     default=str))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from brushpen.generators.tune import show, trials_table

    info = show(args.study, args.storage)
    if args.json:
        print(json.dumps(info, default=str))
        return 0
    print(f"study {info['study']} ({info['family']}, {info['direction']}): {len(info['trials'])} trials, "
          f"{info['pruned']} pruned, {info['failed']} failed")
    print(trials_table(info["trials"], info["knobs"]))
    if info["importances"]:
        print("importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in info["importances"].items()))
    return 0
