"""The GAN generator's rows of `benchmarks/edge.py`: torch fp32 eager vs onnxruntime fp32 vs
onnxruntime int8 vs the distilled student (torch eager, and its ONNX graph under onnxruntime).

Each variant is timed in a fresh subprocess (`--worker gan`), pinned to `--threads` for torch and
onnxruntime alike, so its peak RSS (getrusage ru_maxrss) is that variant's alone. Columns:
- file MB: the safetensors torch loads, or the .onnx file.
- peak RSS MB: of that subprocess, after loading the variant and running every timed call; every
  worker imports torch and onnxruntime (z's are drawn with torch), so "+model" is the peak over the
  RSS right after those imports: what the variant itself adds.
- ms b1 / ms b16: wall time of one call at batch 1 / 16 (z and classes drawn outside the timing,
  psi 1, noise off), median of `--reps` after 2 warm-up calls.
- img/s: 16 / (ms b16), and its ratio to torch eager's.
- FID: against the 3,388 training images, `fid_num` samples, from edge/report.json (written by
  `python -m brushpen.edge.gan_quality`); torch eager shares the fp32 graph's images (max abs
  difference 3e-5), so it shows the `onnx` row's figure. FID vs fp32: the variant's images against
  the fp32 graph's, same seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

GAN_VARIANTS = ("torch", "onnx", "onnx-int8", "student", "student-onnx")


def gan_worker(args: argparse.Namespace) -> dict:
    """In a fresh process: load one variant of `args.model`, time batch 1 and 16."""
    import torch

    from brushpen.edge.common import edge_dir
    from brushpen.edge.gan import OnnxGenerator, load_generator, weights_file
    from brushpen.store import resolve_model

    model_dir = resolve_model(args.model, family="gan")
    edge = edge_dir(model_dir)
    import onnxruntime  # noqa: F401  (both runtimes imported before the baseline, for every variant alike)

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.variant in ("torch", "student"):
        folder = model_dir if args.variant == "torch" else edge / "student"
        G = load_generator(folder)
        size = weights_file(folder).stat().st_size
        run = lambda z, labels: G(z, labels, noise_mode="none")  # noqa: E731
    else:
        file = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx", "student-onnx": "student.onnx"}[args.variant]
        G = load_generator(model_dir)   # for z_dim and classes only
        size = (edge / file).stat().st_size
        onnx_run = OnnxGenerator(edge / file, threads=args.threads)
        run = lambda z, labels: onnx_run(z, labels, 1.0)  # noqa: E731
    out = {"variant": args.variant, "file_mb": size / 2**20, "reps": args.reps}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for batch in (1, 16):
            z = torch.randn(batch, G.z_dim, generator=gen)
            labels = torch.randint(0, G.num_classes, (batch,), generator=gen) if G.num_classes else None
            for _ in range(2):
                run(z, labels)
            times = []
            for _ in range(args.reps):
                start = time.perf_counter()
                run(z, labels)
                times.append(time.perf_counter() - start)
            out[f"ms_b{batch}"] = 1000 * statistics.median(times)
    out["img_s"] = 16 / (out["ms_b16"] / 1000)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["model_rss_mb"] = out["peak_rss_mb"] - base_rss
    return out


def gan_table(model: str, args: argparse.Namespace) -> list[dict]:
    from brushpen.edge.common import edge_dir
    from brushpen.store import resolve_model

    report_path = edge_dir(resolve_model(model, family="gan")) / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    rows = []
    for variant in GAN_VARIANTS:
        cmd = [sys.executable, str(Path(__file__).with_name("edge.py")), "--worker", "gan", "--model", model,
               "--variant", variant, "--threads", str(args.threads), "--reps", str(args.reps)]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads),
                                   "BRUSHPEN_THREADS": str(args.threads)})
        if done.returncode != 0:
            raise SystemExit(f"{variant} worker failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ref = rows[0]
    print(f"\n### {model} generator ({args.threads} thread(s); latency: median of {args.reps} calls after 2 "
          f"warm-up, psi 1, noise off)\n")
    print("| variant | file MB | peak RSS MB (+model) | ms b1 | ms b16 | img/s (b16) | vs torch | FID | FID vs fp32 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        figures = report.get({"torch": "onnx", "student-onnx": "student"}.get(r["variant"], r["variant"]), {})
        r["fid"], r["fid_vs_fp32"], r["fid_num"] = figures.get("fid"), figures.get("fid_vs_fp32"), figures.get("fid_num")
        fid = f"{r['fid']:.1f} ({r['fid_num']})" if r["fid"] is not None else "-"
        vs = f"{r['fid_vs_fp32']:.1f}" if r["fid_vs_fp32"] is not None else "-"
        print(f"| {r['variant']} | {r['file_mb']:.1f} | {r['peak_rss_mb']:.0f} (+{r['model_rss_mb']:.0f}) | "
              f"{r['ms_b1']:.1f} | {r['ms_b16']:.1f} | "
              f"{r['img_s']:.1f} | {r['img_s'] / ref['img_s']:.2f}x | {fid} | {vs} |")
    return rows
