"""emoji64's real training step on this machine's device, per speed option, side by side.

The full `Trainer.train_step` of the shipped model (widths 256,192,96,48,24, conditional on 9
classes, ADA at p 0.3, lazy R1 every 16 steps, style mixing, EMA): the step that a GPU run of
scripts/gpu/emoji64.sh takes. Each variant (fp32, tf32, bf16, bf16 + channels_last, and with
`--compile` bf16 + channels_last + torch.compile) builds its own trainer on the same random uint8
images; steps are interleaved across variants, the first `--warmup` are dropped (cuDNN autotuning,
compilation), and the figure is the median img/s over `--steps` timed steps. On CUDA each step ends
with a synchronize, so the time is the GPU's. On the CPU only fp32 applies (the trainer keeps the
CPU in fp32), and threads are pinned with `--threads`. `--baseline FILE` adds an earlier
trainer.py as a variant (its own Trainer and TrainConfig, fp32), e.g. the one before the GPU-ready
changes: `git show 3786764:brushpen/gan/trainer.py > /tmp/trainer_before.py`.

    .venv/bin/python benchmarks/gan_train_device.py --threads 2 --batch 32 --steps 6 --baseline /tmp/trainer_before.py
    python3 benchmarks/gan_train_device.py --batch 256 --steps 30 --compile      # on the GPU machine
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
from brushpen.gan.data import ImageDataset  # noqa: E402
from brushpen.gan.trainer import Trainer, TrainConfig  # noqa: E402

WIDTHS = [256, 192, 96, 48, 24]


def dataset(n: int = 1024, classes: int = 9) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 64, 64), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return ImageDataset(images, labels, [f"class{i}" for i in range(classes)], [str(i) for i in range(n)], 0)


def trainer(data: ImageDataset, batch: int, threads: int | None, module=None, **speed) -> Trainer:
    config, cls = (module.TrainConfig, module.Trainer) if module else (TrainConfig, Trainer)
    cfg = config(data=Path("synthetic"), out=Path(tempfile.mkdtemp(prefix="gan_dev_bench")), resolution=64,
                      batch=batch, channels=WIDTHS, cond=True, augment="fixed", augment_p=0.3,
                      r1_gamma=0.0256, threads=threads, **speed)
    return cls(cfg, dataset=data, log=lambda _: None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per variant (median)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (pinned)")
    ap.add_argument("--compile", action="store_true", help="add the torch.compile variant")
    ap.add_argument("--baseline", type=Path, default=None, help="an earlier trainer.py to time beside ours")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = torch.cuda.is_available()
    variants: dict[str, dict] = {"fp32": {}}
    if args.baseline:
        spec = importlib.util.spec_from_file_location("trainer_baseline", args.baseline)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        variants[f"fp32, {args.baseline.name}"] = {"module": module}
    if cuda:
        variants.update({"tf32": {"precision": "tf32"}, "bf16": {"precision": "bf16"},
                         "bf16 + channels_last": {"precision": "bf16", "channels_last": True}})
        if args.compile:
            variants["bf16 + channels_last + compile"] = {"precision": "bf16", "channels_last": True, "compile": True}
    data = dataset()
    runs = {name: trainer(data, args.batch, args.threads, **kw) for name, kw in variants.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(args.warmup + args.steps):
        for name, t in runs.items():
            t.step = 1  # R1 (every 16th step) stays out of the timed steps
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            t.train_step()
            if cuda:
                torch.cuda.synchronize()
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    device = torch.cuda.get_device_name() if cuda else f"CPU, {torch.get_num_threads()} thread(s)"
    print(f"device: {device}; torch {torch.__version__}; batch {args.batch}; median of {args.steps} steps "
          f"after {args.warmup} warm-up; R1 not in the timed steps")
    base = None
    rows = []
    for name, ts in times.items():
        med = statistics.median(ts)
        img_s = args.batch / med
        base = base or img_s
        rows.append({"variant": name, "s_per_step": med, "img_per_s": img_s, "vs_fp32": img_s / base})
        print(f"| {name} | {med * 1000:.1f} ms | {img_s:,.1f} img/s | {img_s / base:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"device": device, "batch": args.batch, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
