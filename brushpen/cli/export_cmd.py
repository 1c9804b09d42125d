"""`brushpen export MODEL [--int8] [--student]`: ONNX, int8 and student variants into the model's edge/."""

from __future__ import annotations

import argparse
import json

from tqdm import tqdm

from brushpen.config import apply_threads
from brushpen.edge.export import ExportRequest, export_model


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (fp32, optionally int8) and distil a student")
    p.add_argument("model", help="store name (emoji64, detector, fortunes-lm) or smollm2-135m")
    p.add_argument("--int8", action="store_true", help="also write the int8 graph (static QDQ for convnets, "
                   "blockwise int8 MatMul for the LM)")
    p.add_argument("--student", action="store_true", help="also distil a smaller student (GAN, detector)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    bar = tqdm(total=100, unit="%", desc="export")

    def progress(stage: str, frac: float) -> None:
        bar.set_description(stage)
        bar.n = int(round(100 * frac))
        bar.refresh()

    report = export_model(ExportRequest(args.model, int8=args.int8, student=args.student), progress)
    bar.close()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for variant, figures in report.items():
            print(f"{variant}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                              for k, v in figures.items()))
    return 0
