"""`brushpen detect scan|train|eval`: the detector's own commands, added to `brushpen detect` by
`detect_cmd.register` (which also holds the fake-set commands).

`brushpen detect PATH...` is short for `brushpen detect scan PATH...`: `scan_alias` inserts `scan`
when the word after `detect` is not a sub-command or an option (argparse cannot mix sub-commands
with free positional paths). A file literally named like a sub-command needs the long form or
`./train`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from brushpen.config import apply_threads, get_settings
from brushpen.edge.common import BACKENDS
from brushpen.errors import BadParameter
from brushpen.families import default_model
from brushpen.store import resolve_model

COMMANDS = ("scan", "train", "eval", "build-fakes", "train-fake")


def scan_alias(argv: list[str] | None) -> list[str]:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) >= 2 and argv[0] == "detect" and argv[1] not in COMMANDS and not argv[1].startswith("-"):
        argv.insert(1, "scan")
    return argv


def add_commands(commands: argparse._SubParsersAction) -> None:
    s = commands.add_parser("scan", help="check images, folders or zips for AI-made images (also: detect PATH...)")
    s.add_argument("paths", nargs="+", help="image files, folders (recursive) and .zip files")
    s.add_argument("--model", default=default_model("safety"), help="detector in the store (safety/NAME) or a folder")
    s.add_argument("--json", type=Path, default=None, help="write the JSON report here")
    s.add_argument("--csv", type=Path, default=None, help="write the CSV report here")
    s.add_argument("--heatmaps", type=Path, default=None, help="write one heatmap overlay PNG per image here")
    s.add_argument("--quiet", action="store_true", help="no per-image lines, only the summary")
    s.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="torch, or an edge variant made by `brushpen export detector` (onnx, onnx-int8, student)")
    s.add_argument("--no-scope-gate", dest="scope_gate", action="store_false",
                   help="score images that are not photographs too (emoji, drawings, text), instead of "
                        "answering out-of-scope")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=run_scan)

    t = commands.add_parser("train", help="train and calibrate a detector (resumable)")
    t.add_argument("--real", type=Path, action="append", default=[],
                   help="real set, encoded like the fakes (default: the real rows of the --fake manifests)")
    t.add_argument("--fake", type=Path, action="append", required=True, help="fake set (repeatable)")
    t.add_argument("--out", type=Path, required=True, help="model folder, e.g. weights/safety/detector")
    t.add_argument("--families", default=None, help="comma list of fake families to use (default: all)")
    t.add_argument("--exclude", default="", help="comma list of families to leave out (LOFO)")
    t.add_argument("--exclude-sources", default="",
                   help="comma list of photo sources to leave out, reals and the fakes made from them (LOSO)")
    t.add_argument("--augment", default="chain", choices=("chain", "basic"),
                   help="post-processing augmentation: chains of JPEG/blur/noise/sharpen (default) or the basic recipe")
    t.add_argument("--widths", default=None, help="the CNN's five stage widths, e.g. 32,48,48,96,96 "
                                                  "(default 24,32,32,64,64)")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--batch", type=int, default=32)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--loc-weight", type=float, default=0.5,
                   help="weight of the localisation head's loss against the image loss")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--snap", type=int, default=250, help="steps between checkpoints")
    t.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    t.add_argument("--no-region-max", dest="region_max", action="store_false",
                   help="image logit from the pooled head alone (ablation; default adds the largest region logit)")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=run_train)

    e = commands.add_parser("eval", help="evaluate per family: in-distribution, LOFO, under perturbation")
    e.add_argument("--model", default=default_model("safety"))
    e.add_argument("--real", type=Path, action="append", default=[])
    e.add_argument("--fake", type=Path, action="append", required=True)
    e.add_argument("--lofo-steps", type=int, default=0,
                   help="also train one model per left-out family with this budget (0: evaluate existing only)")
    e.add_argument("--loso-steps", type=int, default=0,
                   help="also train one model per left-out photo source with this budget (0: evaluate existing only)")
    e.add_argument("--unseen-set", action="store_true",
                   help="the model never trained on this fake set (e.g. a newer one): score every family as held "
                        "out and write only the held-out section, keeping the in-distribution rows as they are")
    e.add_argument("--unseen-real", type=Path, default=None,
                   help="a `data photos` folder of photo sources outside the fake set: scored against every test fake")
    e.add_argument("--held-out-dir", "--lofo-dir", dest="held_out_dir", type=Path, default=None,
                   help="the held-out models' folder (default: $BRUSHPEN_HOME/detector-heldout/MODEL)")
    e.add_argument("--threads", type=int, default=1)
    e.set_defaults(func=run_eval)


def _command() -> str:
    return "brushpen " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def run_scan(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from brushpen.generators.checker import scan_paths, summarize, write_csv, write_json

    apply_threads(args.threads)
    results = []
    for r in tqdm(scan_paths(args.paths, args.model, args.heatmaps, backend=args.backend, scope_gate=args.scope_gate),
                  desc="detect", unit="img",
                  disable=args.quiet or not sys.stderr.isatty()):
        results.append(r)
        if not args.quiet:
            head = f"error     {'':>6}" if r.error else f"{r.verdict:<9} {'':>6}" if r.score is None \
                else f"{r.verdict:<9} {r.score:6.3f}"
            mark = r.provenance.get("watermark", {}) if r.provenance else {}
            tail = f"  ({r.error})" if r.error else f"  ({r.scope})" if r.scope else ""
            if mark.get("found"):
                tail += f"  watermark: {mark.get('model') or 'brushpen'}"
            cred = r.provenance.get("credentials", {}) if r.provenance else {}
            if cred.get("state", "none") != "none":
                tail += f"  c2pa: {cred['state']}{' (recovered)' if cred.get('recovered') else ''}"
            if r.basis == "provenance":
                tail += "  [provenance: " + "; ".join(r.evidence) + "]"
            print(f"{head}  {r.path}{tail}", flush=True)
    if args.json:
        write_json(results, args.json, args.model, args.backend)
    if args.csv:
        write_csv(results, args.csv)
    print(json.dumps({"summary": summarize(results)}))
    return 0


def parse_widths(text: str) -> tuple[int, ...]:
    from brushpen.safety.detector import DetectorConfig

    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        raise BadParameter(f"--widths takes comma-separated integers, not '{text}'") from None
    if len(widths) != len(DetectorConfig().strides) or min(widths) < 1:
        raise BadParameter(f"--widths takes {len(DetectorConfig().strides)} positive integers")
    return widths


def run_train(args: argparse.Namespace) -> int:
    from brushpen.safety.detector import DetectorConfig
    from brushpen.safety.detector_train import TrainConfig, train_detector

    apply_threads(args.threads)
    split = lambda text: tuple(f.strip() for f in (text or "").split(",") if f.strip())
    arch = {"widths": parse_widths(args.widths)} if args.widths else {}
    cfg = TrainConfig(out=args.out, real=args.real, fake=args.fake, families=split(args.families) or None,
                      exclude=split(args.exclude), exclude_sources=split(args.exclude_sources), augment=args.augment,
                      steps=args.steps, batch=args.batch, lr=args.lr, loc_weight=args.loc_weight, seed=args.seed,
                      snap=args.snap, resume=args.resume, model=DetectorConfig(region_max=args.region_max, **arch))
    model = train_detector(cfg, command=_command(), log=lambda m: print(m, flush=True))
    c = model.calibration
    print(json.dumps({"out": str(args.out), "temperature": c.temperature, "t_real": c.t_real, "t_fake": c.t_fake}))
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from brushpen.safety.detector import load_detector
    from brushpen.safety.detector_data import gather
    from brushpen.safety.detector_eval import base_config, evaluate, splice_localisation, table_markdown, write_card, \
        write_eval
    from brushpen.safety.detector_heldout import evaluate_held_out, held_out_markdown, score_unseen, train_held_out

    apply_threads(args.threads)
    folder = resolve_model(args.model, family="safety")
    samples = gather(args.real, args.fake)
    model = load_detector(folder)
    if args.unseen_set:
        held_out = score_unseen(model, samples, args.unseen_real)
        write_eval(folder, [], _command(), held_out=held_out)
        write_card(folder)
        print(held_out_markdown(held_out))
        return 0
    rows = evaluate(model, samples, progress=sys.stderr.isatty())
    localisation = splice_localisation(model, samples)
    held_dir = args.held_out_dir or get_settings().home / "detector-heldout" / folder.name
    log = lambda m: print(m, flush=True)  # noqa: E731
    for kind, steps in (("family", args.lofo_steps), ("source", args.loso_steps)):
        if steps:
            train_held_out(held_dir, base_config(folder, args.real, args.fake, steps), kind, log=log)
    held_out = evaluate_held_out(held_dir, args.real, args.fake) if held_dir.is_dir() else []
    if args.unseen_real:
        held_out += [r for r in score_unseen(model, samples, args.unseen_real) if r["protocol"] == "unseen sources"]
    write_eval(folder, rows, _command(), localisation, held_out)
    write_card(folder)
    print(table_markdown(rows))
    if held_out:
        print(held_out_markdown(held_out))
    if localisation:
        print(f"splice localisation: pixel AUC {localisation['pixel_auc']:.4f} over {localisation['n_images']} test splices")
    return 0
