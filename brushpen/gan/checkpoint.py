"""Resumable training state, stored as safetensors + JSON (never pickle).

A checkpoint folder holds one safetensors file per part (`G`, `D`, `G_ema`, `opt_G`, `opt_D`
with Adam's slots flattened to named tensors, and `rng` for the generator states), each small
enough to commit, and `state.json` (step, images seen, augment p, optimizer
hyper-parameters). It is written to a staging folder and then swapped into place, so a SIGKILL at
any moment leaves either the previous or the new complete checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from brushpen.store import atomic_write_json, publish_dir, staging_dir


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, out: dict[str, torch.Tensor]) -> list:
    sd = opt.state_dict()
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            out[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value).clone()
    return sd["param_groups"]


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer],
                    rng: dict[str, torch.Tensor], scalars: dict[str, Any]) -> Path:
    stage = staging_dir(path)
    for name, module in modules.items():
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()},
                  str(stage / f"{name}.safetensors"))
    groups = {}
    for name, opt in optimizers.items():
        tensors: dict[str, torch.Tensor] = {}
        groups[name] = _flatten_optimizer(f"opt_{name}", opt, tensors)
        save_file(tensors, str(stage / f"opt_{name}.safetensors"))
    save_file({k: v.cpu().clone() for k, v in rng.items()}, str(stage / "rng.safetensors"))
    atomic_write_json(stage / "state.json", {"scalars": scalars, "param_groups": groups})
    return publish_dir(stage, path)


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint folder, or the previous one if a kill struck between the two renames."""
    path = Path(path)
    for cand in (path, path.with_name(f".{path.name}.old")):
        if (cand / "state.json").exists() and (cand / "rng.safetensors").exists():
            return cand
    return None


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore modules and optimizers in place; returns (rng states, scalars)."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    for name, module in modules.items():
        module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    for name, opt in optimizers.items():
        tensors = load_file(str(path / f"opt_{name}.safetensors"))
        opt.load_state_dict(_unflatten_optimizer(f"opt_{name}", tensors, meta["param_groups"][name]))
    return load_file(str(path / "rng.safetensors")), meta["scalars"]
