"""Detector speed: images/s of the network alone at batch 1 and 32, of the whole checker service
(decode + tiles + provenance) per 64x64 PNG, and the process's peak RSS; threads pinned.

    .venv/bin/python benchmarks/detect.py [--model detector] [--threads 1] [--seconds 5]

% of peak compares the network's FLOPs per image (counted from its conv shapes) with the measured
fp32 GEMM peak of this CPU (DESIGN.md: about 70 GFLOP/s on one thread).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import io
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from brushpen.generators.checker import check_images, load_model  # noqa: E402

PEAK_GFLOPS_1T = 70.0


def conv_flops(model: torch.nn.Module, size: int) -> float:
    """Multiply-adds x 2 of every conv for one image (BN, ReLU and pooling are noise beside them)."""
    flops = 0.0

    def hook(mod: torch.nn.Conv2d, _inp, out: torch.Tensor) -> None:
        nonlocal flops
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        flops += 2.0 * k * out.numel() / out.shape[0]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    for h in handles:
        h.remove()
    return flops


def rate(fn, n_items: int, seconds: float) -> float:
    fn()   # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        done += n_items
    return done / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="detector")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    size = model.config.tile
    flops = conv_flops(model, size)
    out = {"threads": args.threads, "params": model.num_params(), "mflop_per_image": round(flops / 1e6, 1)}
    for batch in (1, 32):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            ips = rate(lambda: model(x), batch, args.seconds)
        out[f"net_img_s_batch{batch}"] = round(ips, 1)
        out[f"pct_peak_batch{batch}"] = round(100 * ips * flops / 1e9 / (PEAK_GFLOPS_1T * args.threads), 1)
    rng = np.random.default_rng(0)
    pngs = []
    for i in range(32):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        pngs.append((f"{i}.png", buf.getvalue()))
    out["service_img_s_64px"] = round(rate(lambda: check_images(pngs, args.model), len(pngs), args.seconds), 1)
    big = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8)).save(big, format="JPEG", quality=90)
    out["service_img_s_1024x768_jpeg"] = round(rate(lambda: check_images([("big.jpg", big.getvalue())], args.model),
                                                    1, args.seconds), 2)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
