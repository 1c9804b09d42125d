"""The step loop the fine-tuners share: one rule for resuming, checkpoints, progress events and
cancelling, whatever the family.

A family's trainer builds its model, optimizer and data, then hands `run_steps` one function that
takes a training step. The loop:
- resumes from the run's checkpoint when the request asks and one exists, and otherwise clears any
  earlier run's state first (`checkpoint.start_or_resume`), so a kill before this run's first
  checkpoint can never resume someone else's;
- runs steps until `total`, reporting a `FinetuneEvent` after every step through the request's
  `progress` callback; a callback that raises (the job worker's cancel) stops the run between steps,
  where nothing is half-written;
- checkpoints every `every` steps and at the last one (model, optimizer and the trainer's scalars),
  after an optional `on_checkpoint` (the copywriter measures its held-out loss there).

A step must be a pure function of the step number and the saved state (seed its randomness from
the step), which is what makes a resumed run equal an uninterrupted one, bit for bit: the fault
injection benchmark kills each family's job ten times and compares the adapters.

The GAN's fine-tune runs inside its `Trainer`, whose loop also trains from scratch; it follows the
same rules (`start_or_resume`, a `FinetuneEvent` per step, a raising callback cancels) without this
function.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from brushpen.adapters import FinetuneEvent
from brushpen.checkpoint import load_checkpoint, save_checkpoint, start_or_resume

Progress = Callable[[FinetuneEvent], None]


def run_steps(step: Callable[[int], float], *, total: int, every: int, ckpt_dir: Path, resume: bool,
              modules: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
              state: dict[str, Any], progress: Progress | None = None,
              describe: Callable[[dict, float], str] | None = None,
              on_start: Callable[[dict], None] | None = None,
              on_checkpoint: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Train from the resumed or fresh `state` (which holds at least "step") to `total` steps.

    `step(n)` trains step n and returns its loss; `state` is updated in place, so `step` may keep
    its own running figures in it. `describe(state, loss)` words a step's event;
    `on_start(state)` runs once on a fresh start (not on a resume), before the first step;
    `on_checkpoint(state)` runs before each checkpoint and may add to `state`, which is saved as the
    checkpoint's scalars (keep it JSON: numbers, strings, lists). Returns the final state."""
    state.setdefault("step", 0)   # in place: the caller's `step` may read and extend it

    def emit(loss: float | None, message: str, **metrics: Any) -> None:
        if progress is not None:
            progress(FinetuneEvent(state["step"], total, loss, message, metrics))

    if (found := start_or_resume(ckpt_dir, resume)) is not None:
        _, saved = load_checkpoint(found, modules, optimizers)
        state.update(saved)
        emit(None, f"resumed from its checkpoint at step {state['step']}")
    elif on_start is not None:
        on_start(state)
    while state["step"] < total:
        loss = step(state["step"])
        state["step"] += 1
        emit(loss, describe(state, loss) if describe else f"step {state['step']}/{total}, loss {loss:.4f}")
        if state["step"] % every == 0 or state["step"] == total:
            if on_checkpoint is not None:
                on_checkpoint(state)
            save_checkpoint(ckpt_dir, modules, optimizers, {"step": torch.tensor([state["step"]])}, state)
    return state
