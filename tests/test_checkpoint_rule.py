"""The one resume rule of the fine-tuning runs (brushpen.checkpoint.start_or_resume): a run that
resumes takes the checkpoint there, and a run that does not clears an earlier run's state, so a
resume after a kill before its own first checkpoint never picks up another run's. And the shared
step loop (brushpen.finetune_loop.run_steps): cancelled, then resumed, it ends where one run does."""

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


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)

    def step(n: int) -> float:
        g = torch.Generator().manual_seed(n)   # the batch is a function of the step number
        x = torch.randn(8, 3, generator=g)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)
    return model, opt, step


def test_run_steps_cancelled_then_resumed_equals_one_run(tmp_path: Path) -> None:
    from brushpen.finetune_loop import run_steps

    class Cancel(Exception):
        pass

    whole, opt, step = _toy()
    starts: list[int] = []
    done = run_steps(step, total=10, every=3, ckpt_dir=tmp_path / "a", resume=False, modules={"m": whole},
                     optimizers={"m": opt}, state={}, on_start=lambda st: starts.append(st["step"]))
    assert done["step"] == 10 and starts == [0]

    def stop_at_5(ev) -> None:
        if ev.step == 5:
            raise Cancel
    split, opt, step = _toy()
    try:
        run_steps(step, total=10, every=3, ckpt_dir=tmp_path / "b", resume=False, modules={"m": split},
                  optimizers={"m": opt}, state={}, progress=stop_at_5)
    except Cancel:
        pass
    events = []
    split, opt, step = _toy(seed=1)   # a fresh process: other start weights, restored from the checkpoint
    run_steps(step, total=10, every=3, ckpt_dir=tmp_path / "b", resume=True, modules={"m": split},
              optimizers={"m": opt}, state={}, progress=events.append, on_start=lambda st: starts.append(-1))
    assert starts == [0], "on_start runs on a fresh start only"
    assert events[0].message == "resumed from its checkpoint at step 3"
    assert [e.step for e in events[1:]] == list(range(4, 11))
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), split.state_dict().values()))
