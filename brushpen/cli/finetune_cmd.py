"""`brushpen finetune gan|text|detector|FAMILY`: LoRA transfer fine-tuning of a shipped model.

The three shipped families have hand-written sub-commands with their own help and output
(`finetune_gan_cmd`, `finetune_text_cmd`, `finetune_detector_cmd`). Any other family with a trainer
in `brushpen.families` gets a sub-command made from its request dataclass: one `--flag` per field
(`--data` and `--out` required), the trainer's progress printed a line a step, and the result as
JSON. So a new family is usable from the command line with no edit here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any

from brushpen import families
from brushpen.cli import finetune_detector_cmd, finetune_gan_cmd, finetune_text_cmd
from brushpen.config import apply_threads


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("finetune", help="train a LoRA adapter on your own data").add_subparsers(
        dest="finetune_cmd", required=True)
    for module in (finetune_gan_cmd, finetune_text_cmd, finetune_detector_cmd):
        module.register(group)
    for name in families.finetunable():
        fam = families.family(name)
        if (fam.cli_name or fam.name) not in group.choices:
            _register_generic(group, fam)


def _value(text: str) -> Any:
    """A flag whose field defaults to None: a number when it reads as one, else the text."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def add_request_flags(p: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ("resume", "threads"),
                      required: tuple[str, ...] = ("data", "out")) -> None:
    """One `--flag` per field of a fine-tuning request dataclass (its default as the flag's)."""
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        flag, default = "--" + f.name.replace("_", "-"), getattr(cls(), f.name)
        if f.name in required:
            p.add_argument(flag, required=True, dest=f.name)
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, dest=f.name)
        elif isinstance(default, (int, float, str)):
            p.add_argument(flag, type=type(default), default=default, dest=f.name)
        elif default is None:
            p.add_argument(flag, type=_value, default=None, dest=f.name)


def request_from_args(cls: type, args: argparse.Namespace) -> object:
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def _register_generic(group: argparse._SubParsersAction, fam: families.Family) -> None:
    p = group.add_parser(fam.cli_name or fam.name, help=f"fine-tune a {fam.label} model ({fam.data_help})")
    add_request_flags(p, fam.request_class())
    p.add_argument("--resume", action="store_true", help="continue from this run's checkpoint")
    p.add_argument("--threads", type=int, default=None)
    p.set_defaults(func=lambda args: _run_generic(fam, args))


def _run_generic(fam: families.Family, args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    req = request_from_args(fam.request_class(), args)

    def progress(ev) -> None:
        print(ev.message or f"step {ev.step}/{ev.total}", file=sys.stderr, flush=True)

    result = fam.finetune()(req, progress)
    print(json.dumps({"model": result.ref, "path": str(result.path), "metrics": result.metrics}, default=str))
    return 0
