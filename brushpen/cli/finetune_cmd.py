"""`brushpen finetune gan|text|detector`: LoRA transfer fine-tuning of a shipped model.

Each family's sub-command lives in its own module (`finetune_gan_cmd`, `finetune_text_cmd`,
`finetune_detector_cmd`), which adds itself to the `finetune` group with `register(sub)`.
"""

from __future__ import annotations

import argparse

from brushpen.cli import finetune_detector_cmd, finetune_gan_cmd, finetune_text_cmd


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("finetune", help="train a LoRA adapter on your own data").add_subparsers(
        dest="finetune_cmd", required=True)
    for module in (finetune_gan_cmd, finetune_text_cmd, finetune_detector_cmd):
        module.register(group)
