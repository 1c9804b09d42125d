"""Entry point of the `brushpen` command: builds the sub-command tree and turns user errors into messages.

Each capability module exposes `register(subparsers)`, adding its sub-commands with a `func`
default that takes the parsed arguments. A `BrushpenError` is printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from brushpen.errors import BrushpenError


def build_parser() -> argparse.ArgumentParser:
    from brushpen.cli import (batch_cmd, c2pa_cmd, copy_cmd, data_cmd, detect_cmd, export_cmd, federate_cmd,
                              finetune_cmd, gan_cmd, image_cmd, models_cmd, studio_cmd, text_cmd, tune_cmd,
                              watermark_cmd, worker_cmd)

    parser = argparse.ArgumentParser(prog="brushpen", description="brushpen: a generative content studio")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (models_cmd, data_cmd, gan_cmd, image_cmd, text_cmd, copy_cmd, studio_cmd, watermark_cmd, c2pa_cmd,
                   detect_cmd, export_cmd, finetune_cmd, tune_cmd, federate_cmd, batch_cmd, worker_cmd):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from brushpen.cli.detect_model_cmd import scan_alias   # `detect PATH...` means `detect scan PATH...`

    args = build_parser().parse_args(scan_alias(argv))
    try:
        result = args.func(args)
    except BrushpenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
