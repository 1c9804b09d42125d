"""Resumable training state, stored as safetensors + JSON (never pickle), for every family's trainer.

The GAN trainer, the text pretrainer and LoRA, and the detector's trainers all checkpoint through
here, so it lives at the bottom layer and knows no model: it saves whatever modules, optimizers,
random states and scalars it is given. A checkpoint folder holds one safetensors file per part
(for the GAN: `G`, `D`, `G_ema`, `opt_G`, `opt_D`, with Adam's slots flattened to named tensors,
and `rng` for the generator states) and `state.json` (the caller's scalars: step, images seen,
augment p; and the optimizer hyper-parameters). It is written to a staging folder and then
swapped into place, so a SIGKILL at any moment leaves either the previous or the new complete
checkpoint.

Adam with beta1 = 0 (StyleGAN2's setting) overwrites its first moment with the gradient at every
step, so that slot is not saved: loading fills it with zeros, and the resumed run is still exact.
`moments_dtype=torch.bfloat16` halves what is left (a GPU run's return trip is size-limited).
Training state is not a shipped model: a store folder may keep only G, G_ema, D and state.json,
and loading then starts the missing optimizers (and the random stream) fresh and says which.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from brushpen.store import atomic_write_json, publish_dir, staging_dir


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, out: dict[str, torch.Tensor],
                       moments_dtype: torch.dtype | None = None) -> list:
    sd = opt.state_dict()
    beta1_zero = all(g.get("betas", (1.0,))[0] == 0 for g in sd["param_groups"])
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            if key == "exp_avg" and beta1_zero:
                continue  # overwritten by the next gradient: nothing to keep
            value = torch.as_tensor(value).detach().cpu()
            if moments_dtype is not None and key == "exp_avg_sq":
                value = value.to(moments_dtype)
            out[f"{prefix}.{idx}.{key}"] = value.contiguous().clone()
    return sd["param_groups"]


def _unflatten_optimizer(prefix: str, tensors: dict[str, torch.Tensor], groups: list) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1:].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    for slots in state.values():
        if "exp_avg_sq" in slots:
            slots["exp_avg_sq"] = slots["exp_avg_sq"].float()  # load_state_dict then moves it to the param
            slots.setdefault("exp_avg", torch.zeros_like(slots["exp_avg_sq"]))
    return {"state": state, "param_groups": groups}


def save_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer],
                    rng: dict[str, torch.Tensor], scalars: dict[str, Any],
                    moments_dtype: torch.dtype | None = None) -> Path:
    stage = staging_dir(path)
    for name, module in modules.items():
        save_file({k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()},
                  str(stage / f"{name}.safetensors"))
    groups = {}
    for name, opt in optimizers.items():
        tensors: dict[str, torch.Tensor] = {}
        groups[name] = _flatten_optimizer(f"opt_{name}", opt, tensors, moments_dtype)
        save_file(tensors, str(stage / f"opt_{name}.safetensors"))
    save_file({k: v.cpu().clone() for k, v in rng.items()}, str(stage / "rng.safetensors"))
    atomic_write_json(stage / "state.json", {"scalars": scalars, "param_groups": groups})
    return publish_dir(stage, path)


def find_checkpoint(path: Path) -> Path | None:
    """The checkpoint folder, or the previous one if a kill struck between the two renames."""
    path = Path(path)
    for cand in (path, path.with_name(f".{path.name}.old")):
        if (cand / "state.json").exists():
            return cand
    return None


def start_or_resume(path: Path, resume: bool) -> Path | None:
    """The one rule every fine-tuning run follows: the checkpoint to resume from when `resume` is
    asked and one exists; otherwise None, and an earlier run's state at `path` is removed first, so
    that a later resume (after a kill before this run's first checkpoint) can never pick it up."""
    path = Path(path)
    found = find_checkpoint(path)
    if resume and found is not None:
        return found
    for old in (path, path.with_name(f".{path.name}.old")):
        if old.exists():
            shutil.rmtree(old)
    return None


def missing_parts(path: Path, optimizers: list[str]) -> list[str]:
    """What `load_checkpoint` will start fresh: optimizer files and the rng file absent from `path`."""
    path = Path(path)
    gone = [f"opt_{n}" for n in optimizers if not (path / f"opt_{n}.safetensors").exists()]
    return gone + ([] if (path / "rng.safetensors").exists() else ["rng"])


def load_checkpoint(path: Path, modules: dict[str, torch.nn.Module],
                    optimizers: dict[str, torch.optim.Optimizer]) -> tuple[dict[str, torch.Tensor], dict]:
    """Restore modules and optimizers in place; returns (rng states, scalars). An optimizer whose
    file is absent keeps its fresh state, and absent rng states come back as {} (`missing_parts`)."""
    path = Path(path)
    meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
    for name, module in modules.items():
        module.load_state_dict(load_file(str(path / f"{name}.safetensors")))
    for name, opt in optimizers.items():
        file = path / f"opt_{name}.safetensors"
        if file.exists():
            opt.load_state_dict(_unflatten_optimizer(f"opt_{name}", load_file(str(file)),
                                                     meta["param_groups"][name]))
    rng_file = path / "rng.safetensors"
    return (load_file(str(rng_file)) if rng_file.exists() else {}), meta["scalars"]
