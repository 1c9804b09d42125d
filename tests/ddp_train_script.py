"""Helper for test_train.py: a few Trainer steps under torchrun, each rank writing its weights.

Usage: torchrun --standalone --nproc_per_node 2 tests/ddp_train_script.py DATA OUT STEPS
Writes OUT/init.safetensors (rank 0, before training) and OUT/rank{R}.safetensors (after), each
holding G.*, D.* and G_ema.* tensors, plus OUT/rank{R}.json with the run's scalars and a check of the gradient all-reduce.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from brushpen.gan.trainer import TrainConfig, Trainer


def weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema)):
        for name, tensor in module.state_dict().items():
            out[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous().clone()
    return out


def main() -> None:
    data, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(data=data, out=out / "model", resolution=16, batch=8, kimg=steps * 8 / 1000,
                      channels=[32, 16, 8], z_dim=16, w_dim=16, mapping_layers=2, cond=True,
                      r1_interval=2, pl_weight=2.0, pl_interval=2, augment_p=0.2, ada_interval=1,
                      snapshot_kimg=steps * 8 / 2000, tick_kimg=1000, threads=1)
    trainer = Trainer(cfg, log=lambda line: print(f"[rank {torch.distributed.get_rank()}] {line}"))
    rank = trainer.rank
    if rank == 0:
        save_file(weights(trainer), str(out / "init.safetensors"))
    result = trainer.run()
    # The trainer's own all-reduce must average: rank r sets every gradient to r + 1 (rank 1 leaves
    # the first parameter's gradient unset, which counts as zero), so the mean is known exactly.
    params = [q for q in trainer.D.parameters() if q.requires_grad]
    for i, q in enumerate(params):
        q.grad = None if (rank == 1 and i == 0) else torch.full_like(q, float(rank + 1))
    trainer._sync_grads(trainer.D)
    synced = {"first": params[0].grad.unique().tolist(), "rest": torch.cat(
        [q.grad.flatten() for q in params[1:]]).unique().tolist()}
    trainer.opt_D.zero_grad(set_to_none=True)
    save_file(weights(trainer), str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({**result, "world": trainer.world,
                                                       "per_rank": trainer.per_rank,
                                                       "synced_grads": synced}))


if __name__ == "__main__":
    main()
