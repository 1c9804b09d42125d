"""The one resume rule of the fine-tuning runs (brushpen.checkpoint.start_or_resume): a run that
resumes takes the checkpoint there, and a run that does not clears an earlier run's state, so a
resume after a kill before its own first checkpoint never picks up another run's."""

from __future__ import annotations

from pathlib import Path

import torch

from brushpen.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint, start_or_resume


def _save(path: Path, value: float) -> None:
    m = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(m.weight, value)
    save_checkpoint(path, {"m": m}, {}, {}, {"step": int(value)})


def test_a_resume_takes_the_checkpoint_and_a_fresh_run_clears_it(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint"
    assert start_or_resume(ckpt, resume=True) is None   # nothing to resume: a fresh start
    _save(ckpt, 3.0)
    found = start_or_resume(ckpt, resume=True)
    m = torch.nn.Linear(2, 2)
    _, scalars = load_checkpoint(found, {"m": m}, {})
    assert found == ckpt and scalars["step"] == 3 and torch.all(m.weight == 3.0)
    assert start_or_resume(ckpt, resume=False) is None
    assert find_checkpoint(ckpt) is None and not ckpt.exists()   # gone: a later resume starts fresh
    assert start_or_resume(ckpt, resume=True) is None


def test_the_set_aside_copy_of_a_killed_swap_is_cleared_too(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint"
    _save(ckpt, 1.0)
    ckpt.rename(tmp_path / ".checkpoint.old")   # a kill between the two renames of a swap
    assert find_checkpoint(ckpt) == tmp_path / ".checkpoint.old"
    assert start_or_resume(ckpt, resume=False) is None and find_checkpoint(ckpt) is None
