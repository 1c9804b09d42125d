"""`brushpen data emoji`: build the Fluent 3D emoji training set from the npm registry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from brushpen.config import get_settings


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="build training sets").add_subparsers(dest="data_cmd", required=True)
    e = data.add_parser("emoji", help="npm @lobehub/fluent-emoji-3d@1.1.0 on white, labelled by emoji group")
    e.add_argument("--out", type=Path, default=None, help="default: $BRUSHPEN_HOME/data/emoji64")
    e.add_argument("--size", type=int, default=64)
    e.add_argument("--no-skin-tones", action="store_true", help="drop the skin-tone variants")
    e.set_defaults(func=run_emoji)


def run_emoji(args: argparse.Namespace) -> int:
    from brushpen.gan.data import build_emoji_dataset

    out = args.out or get_settings().data_dir / f"emoji{args.size}"
    print(json.dumps(build_emoji_dataset(out, args.size, skin_tones=not args.no_skin_tones)))
    return 0
