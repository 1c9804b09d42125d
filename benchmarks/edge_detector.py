"""The detector's edge variants side by side (`benchmarks/edge.py --models detector` runs this table;
so does this file on its own): torch fp32 eager vs onnxruntime fp32 vs onnxruntime int8 vs the
distilled student (torch, and its ONNX graphs when exported).

Each row comes from a fresh subprocess (`--variant`), pinned to `--threads` (torch and onnxruntime
alike), so its peak RSS is that variant's alone. Columns:
- file KB: the weights torch loads (model.safetensors) or the .onnx file.
- peak RSS MB: of that subprocess after loading the variant and the timing below (before the test
  split is read for the quality columns).
- ms/patch b1, b16: median over `--reps` calls of one batch of 1 or 16 test patches (64x64 uint8),
  divided by the batch; torch includes the uint8 -> [-1, 1] conversion the ONNX graph does inside.
- CPU ms/patch: the same medians in process CPU time (`time.process_time`), which a busy machine
  inflates far less than wall time: at 1 thread, wall time on an idle core would be close to it.
- patches/s: 16 / the median batch-16 call (wall time).
- MMAC/patch: multiply-accumulates of the network per 64x64 patch (torch's FLOP counter); GFLOP/s:
  2 x MMAC / CPU ms per patch at batch 16, to hold against the ~70 GFLOP/s fp32 GEMM peak of one
  core here (DESIGN.md; int8 kernels have a higher ceiling).
- AUC, acc resize0.5+jpeg75: the same after resize 0.5x then JPEG 75 (real and fake alike), the
  hardest setting of `brushpen detect eval`.
- AUC, acc: the test split, all families pooled (`brushpen detect eval`'s in-distribution
  protocol, `edge.detector.quality`), balanced accuracy at the variant's own t_fake.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/edge.py --models detector --threads 1
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/edge_detector.py --model detector --threads 1
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without install
PERTURBED = "resize0.5+jpeg75"
VARIANTS = ("torch", "onnx", "onnx-int8", "student", "student-onnx", "student-onnx-int8")


def _pin(threads: int) -> None:
    os.environ.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), BRUSHPEN_THREADS=str(threads),
                      HF_HUB_OFFLINE="1")
    import torch

    torch.set_num_threads(threads)


def _load(model_dir: Path, variant: str, threads: int):
    """(scorer for `quality`, its torch network, run(uint8 patches) for timing, file bytes) of one variant."""
    import torch

    from brushpen.edge.detector import GRAPHS
    from brushpen.edge.detector_graph import OnnxDetector
    from brushpen.safety.detector import load_detector, to_tensor

    edge = model_dir / "edge"
    if variant in ("torch", "student"):
        folder = model_dir if variant == "torch" else edge / "student"
        net = load_detector(folder)

        def run(patches):
            with torch.inference_mode():
                return net(to_tensor(patches))
        return net, net, run, (folder / "model.safetensors").stat().st_size
    owner = load_detector(model_dir if not variant.startswith("student") else edge / "student")
    graph = OnnxDetector(edge / GRAPHS[variant], owner.config, owner.calibration, threads=threads)
    return graph, owner, graph.run, (edge / GRAPHS[variant]).stat().st_size


def worker(args: argparse.Namespace) -> dict:
    _pin(args.threads)
    from brushpen.edge.detector import model_figures, quality, test_arrays, training_samples
    from brushpen.store import resolve_model

    model_dir = resolve_model(args.model, family="safety")
    families = tuple(f for f in (getattr(args, "families", None) or "").split(",") if f) or None
    samples = training_samples(model_dir, families=families)
    if samples is None:
        raise SystemExit(f"the test split of {args.model} (train.json's folders) is not on this machine")
    scorer, net, run, size = _load(model_dir, args.variant, args.threads)
    patches = test_arrays(samples)[0][:16]
    out = {"variant": args.variant, "file_kb": size / 1024}
    for batch in (1, 16):
        x = patches[:batch]
        for _ in range(5):
            run(x)   # warm-up: first-call allocations and onnxruntime's arena
        times, cpu = [], []
        for _ in range(args.reps):
            start, start_cpu = time.perf_counter(), time.process_time()
            run(x)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        out[f"ms_b{batch}"] = 1000 * statistics.median(times) / batch
        out[f"cpu_ms_b{batch}"] = 1000 * statistics.median(cpu) / batch
    out["patches_s"] = 1000 / out["ms_b16"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["mmacs"] = model_figures(net)["mmacs_per_patch"]       # after the RSS: the counter costs memory
    out["gflop_s"] = 2 * out["mmacs"] / out["cpu_ms_b16"]   # MFLOP per ms = GFLOP/s
    out.update(quality(scorer, samples))
    # The clean test split is near-saturated for the families on hand; the hardest perturbation
    # (resize 0.5x, then JPEG 75, real and fake alike, as `detect eval` runs it) separates variants.
    from brushpen.safety.detector_eval import evaluate

    hard = [r for r in evaluate(scorer, samples, settings=(PERTURBED,), progress=False) if r["family"] == "all"][0]
    out["auc_perturbed"], out["acc_perturbed"] = hard["auc"], hard["acc"]
    out["families"] = sorted({s.family for s in samples if s.label == 1 and s.split == "test"})
    return out


def detector_table(model: str, args: argparse.Namespace) -> list[dict]:
    """One subprocess per exported variant; prints the markdown table."""
    from brushpen.edge.common import available_backends
    from brushpen.edge.detector import GRAPHS
    from brushpen.store import resolve_model

    model_dir = resolve_model(model, family="safety")
    present = set(available_backends(model_dir)) | {v for v, f in GRAPHS.items() if (model_dir / "edge" / f).exists()}
    reps = getattr(args, "patch_reps", None) or 50
    rows = []
    for variant in [v for v in VARIANTS if v in present]:
        cmd = [sys.executable, __file__, "--worker", "--model", model, "--variant", variant,
               "--threads", str(args.threads), "--reps", str(reps),
               "--families", getattr(args, "families", None) or ""]
        done = subprocess.run(cmd, capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
        if done.returncode != 0:
            raise SystemExit(f"{variant} worker failed:\n{done.stderr[-3000:]}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    ref = rows[0]
    print(f"\n### {model} ({args.threads} thread(s); latency: medians of {reps} calls per batch size, "
          f"64x64 test patches; AUC/acc: test split, all families)\n")
    print("| variant | file KB | peak RSS MB | ms/patch b1 | ms/patch b16 | CPU ms/patch b1 | CPU ms/patch b16 | "
          f"patches/s | vs torch | MMAC/patch | GFLOP/s (CPU, b16) | AUC | acc | AUC {PERTURBED} | acc {PERTURBED} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['file_kb']:.0f} | {r['peak_rss_mb']:.0f} | {r['ms_b1']:.3f} | {r['ms_b16']:.3f} | "
              f"{r['cpu_ms_b1']:.3f} | {r['cpu_ms_b16']:.3f} | {r['patches_s']:.0f} | "
              f"{r['patches_s'] / ref['patches_s']:.2f}x | {r['mmacs']:.1f} | {r['gflop_s']:.1f} | "
              f"{r['auc']:.4f} | {r['acc']:.4f} | {r['auc_perturbed']:.4f} | {r['acc_perturbed']:.4f} |")
    print(f"\nTest families: {', '.join(ref['families'])} (all fakes pooled against all test reals).")
    print(f"\nLoad average while it ran: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} cores.")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="detector")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=50, help="timed calls per batch size")
    p.add_argument("--families", default="", help="comma list of fake families to test on (default: all found)")
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--json", default=None, help="also write every row here")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    _pin(args.threads)
    args.patch_reps = args.reps
    rows = detector_table(args.model, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
