"""A model family made only of what docs/ARCHITECTURE.md says a family needs: a request dataclass
with `validate()` and a `finetune(req, progress)` built on the shared step loop. tests/test_families.py
adds a record for it and drives it through the CLI and the job store's checks."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from brushpen.adapters import FinetuneEvent, FinetuneResult
from brushpen.config import get_settings
from brushpen.errors import BadParameter
from brushpen.finetune_loop import run_steps


@dataclass
class ToyFinetuneRequest:
    base: str = "toy-small"
    data: Path | str = ""
    out: str = ""
    steps: int = 6
    lr: float = 0.1
    scale: float | None = None
    resume: bool = False

    def validate(self) -> None:
        if self.steps < 1:
            raise BadParameter(f"steps must be >= 1, got {self.steps}")


def finetune(req: ToyFinetuneRequest, progress: Callable[[FinetuneEvent], None] | None = None) -> FinetuneResult:
    req.validate()
    target = float(Path(req.data).read_text().strip()) * (req.scale or 1.0)
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.zeros(1))
    module = torch.nn.ParameterDict({"w": w})
    opt = torch.optim.SGD([w], lr=req.lr)

    def step(n: int) -> float:
        loss = (w - target).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    work = get_settings().home / "finetune" / "toy" / req.out
    state = run_steps(step, total=req.steps, every=2, ckpt_dir=work / "checkpoint", resume=req.resume,
                      modules={"m": module}, optimizers={"m": opt}, state={}, progress=progress)
    (work / "adapter.json").write_text(json.dumps({"w": float(w.detach())}))
    return FinetuneResult(ref=f"{req.base}:{req.out}", path=work, metrics={"w": float(w.detach()), "steps": state["step"]})
