"""`brushpen finetune detector` (being written)."""

from __future__ import annotations

import argparse


def register(group: argparse._SubParsersAction) -> None:
    pass
