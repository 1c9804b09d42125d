"""Generation speed of brushpen's StyleGANGenerator: img/s, FLOPs per image and % of fp32 GEMM peak.

What it measures: images per second from `StyleGANGenerator.forward` (mapping + synthesis, random
noise, truncation 1.0) at batch 1 and batch 16, under `torch.no_grad`, for the non-fused modulated
conv (`fused=False`: the serving and ONNX-export path) and, for comparison, the fused grouped conv.
How: the generator comes from a model folder (`--model`, loaded with `from_pretrained`) or is
built with random weights from `--channels`. Each case runs `--warmup` calls, then `--reps` timed
calls; the figure is the median. FLOPs per image are counted once per case with
`torch.utils.flop_counter.FlopCounterMode`, which counts 2 FLOPs per multiply-add of matmuls and
convolutions and ignores element-wise ops. The peak is the median GFLOP/s of a square fp32 matmul,
measured in the same run with the same thread count before and after the cases (the higher of the
two: on a shared machine a low reading means another process took the core), so
% of peak = FLOPs per image x img/s / peak; it is the ceiling DESIGN.md asks every figure against.

    .venv/bin/python benchmarks/gan_generate.py --model weights/gan/emoji64 --threads 2 --json out.json
    .venv/bin/python benchmarks/gan_generate.py --channels 256,192,96,48,24 --threads 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install
from brushpen.gan.networks import StyleGANGenerator  # noqa: E402

# NVlabs stylegan2-ada-pytorch at widths 256,256,256,256,128, 1 thread (DESIGN.md); context only.
DESIGN_ANCHOR = "anchor from DESIGN.md, not measured in this run (1 thread, widths 256,256,256,256,128): " \
                "11 img/s at batch 1; 7.3 img/s at batch 16 (8.2 with the non-fused modulated conv)"


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor() or "unknown")


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def gemm_peak_gflops(n: int, reps: int) -> float:
    """Median GFLOP/s of an n x n fp32 matmul: the practical ceiling of conv/linear layers here."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    times = [timed(lambda: a @ b) for _ in range(reps + 3)][3:]  # 3 warm-up products
    return 2 * n**3 / statistics.median(times) / 1e9


def make_inputs(G: StyleGANGenerator, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, G.z_dim, generator=g)
    labels = torch.randint(0, G.num_classes, (batch,), generator=g) if G.num_classes else None
    return z, labels


@torch.no_grad()
def bench_case(G: StyleGANGenerator, batch: int, fused: bool, warmup: int, reps: int) -> dict:
    z, labels = make_inputs(G, batch, seed=batch)
    run = lambda: G(z, labels, fused=fused)  # noqa: E731
    with FlopCounterMode(display=False) as counter:
        run()
    flops_per_img = counter.get_total_flops() / batch
    times = [timed(run) for _ in range(warmup + reps)][warmup:]
    sec = statistics.median(times)
    return {"batch": batch, "fused": fused, "ms_per_call": sec * 1e3, "img_per_s": batch / sec,
            "gflop_per_img": flops_per_img / 1e9, "gflops_achieved": flops_per_img * batch / sec / 1e9,
            "reps": reps, "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3}


def load_generator(args: argparse.Namespace) -> tuple[StyleGANGenerator, str]:
    # requires_grad off: FlopCounterMode's module hooks fail on parameter views made under no_grad.
    if args.model:
        G = StyleGANGenerator.from_pretrained(args.model)
        return G.eval().requires_grad_(False), f"model folder {args.model}"
    channels = [int(c) for c in args.channels.split(",")]
    resolution = 4 * 2 ** (len(channels) - 1)
    torch.manual_seed(0)
    G = StyleGANGenerator(resolution, args.z_dim, args.w_dim, args.mapping_layers, channels, args.classes)
    return G.eval().requires_grad_(False), f"random weights, channels {args.channels}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", help="store folder, e.g. weights/gan/emoji64")
    src.add_argument("--channels", default="256,192,96,48,24",
                     help="widths per resolution 4..R for a random-init generator (used when no --model)")
    p.add_argument("--z-dim", type=int, default=256)
    p.add_argument("--w-dim", type=int, default=256)
    p.add_argument("--mapping-layers", type=int, default=4)
    p.add_argument("--classes", type=int, default=0, help="number of classes of a random-init generator")
    p.add_argument("--batches", default="1,16", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--reps", type=int, default=30, help="timed calls per case; the median is reported")
    p.add_argument("--gemm-n", type=int, default=1024)
    p.add_argument("--gemm-reps", type=int, default=20)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    G, source = load_generator(args)
    cfg = G.config
    peak_before = gemm_peak_gflops(args.gemm_n, args.gemm_reps)
    rows = [bench_case(G, b, fused, args.warmup, args.reps)
            for b in (int(x) for x in args.batches.split(","))
            for fused in (False, True)]
    peak_after = gemm_peak_gflops(args.gemm_n, args.gemm_reps)
    # The ceiling is what the machine can do: a lower reading means another process took the core.
    peak = max(peak_before, peak_after)
    for r in rows:
        r["pct_peak"] = 100 * r["gflops_achieved"] / peak

    params = sum(t.numel() for t in G.parameters())
    print(f"StyleGANGenerator generation, {source}")
    print(f"  resolution {cfg.resolution}, channels {list(cfg.channels or [])}, z/w {cfg.z_dim}/{cfg.w_dim}, "
          f"mapping {cfg.mapping_layers}, classes {cfg.num_classes}, {params / 1e6:.2f} M params")
    print(f"  torch {torch.__version__}, threads {torch.get_num_threads()}, CPU {cpu_name()}")
    print(f"  fp32 GEMM peak ({args.gemm_n}^2 matmul): {peak:.1f} GFLOP/s, the higher of the medians "
          f"before ({peak_before:.1f}) and after ({peak_after:.1f}) the cases")
    print(f"  median of {args.reps} calls after {args.warmup} warm-up; FLOPs = 2 x MACs (FlopCounterMode)\n")
    head = f"{'batch':>5} {'path':<10} {'ms/call':>9} {'img/s':>9} {'GFLOP/img':>10} {'GFLOP/s':>8} {'% peak':>7}"
    print(f"{head}\n{'-' * len(head)}")
    for r in rows:
        path = "fused" if r["fused"] else "non-fused"
        print(f"{r['batch']:>5} {path:<10} {r['ms_per_call']:>9.2f} {r['img_per_s']:>9.1f} "
              f"{r['gflop_per_img']:>10.3f} {r['gflops_achieved']:>8.1f} {r['pct_peak']:>6.1f}%")
    print(f"\n{DESIGN_ANCHOR}")

    if args.json:
        result = {"benchmark": "gan_generate", "source": source, "config": dict(cfg), "params": params,
                  "threads": torch.get_num_threads(), "torch": torch.__version__, "cpu": cpu_name(),
                  "gemm_peak_gflops": peak, "gemm_peak_gflops_before": peak_before,
                  "gemm_peak_gflops_after": peak_after, "gemm_n": args.gemm_n,
                  "warmup": args.warmup, "reps": args.reps, "results": rows,
                  "design_anchor_not_measured": DESIGN_ANCHOR}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
