"""`python -m brushpen.edge.gan_student MODEL [--minutes M] [--resume]`: distil a GAN's student, or continue it.

The student is a half-width generator distilled from the model (`edge.gan_distill` trains it;
`brushpen export MODEL --student` makes the first one). This command runs one more time box of
distillation into the model's `edge/student/`, then re-exports `student.onnx` and its report row
with the exporter (`edge.gan`). It sits apart from the distiller because it uses the exporter,
and the exporter distils through `edge.gan_distill`.
"""

from __future__ import annotations

import argparse
import json

from brushpen.config import apply_threads
from brushpen.edge import gan
from brushpen.edge.common import edge_dir
from brushpen.edge.gan_distill import distill
from brushpen.store import resolve_model


def main() -> None:
    """`python -m brushpen.edge.gan_student MODEL [--minutes M] [--resume]`: distil (or continue) the
    student in the model's edge/student/, then re-export student.onnx and its report row."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("model")
    p.add_argument("--minutes", type=float, default=15.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    apply_threads(args.threads)
    model_dir = resolve_model(args.model, family="gan")
    distill(gan.load_generator(model_dir), model_dir, edge_dir(model_dir) / "student", gan.example_inputs,
            minutes=args.minutes, resume=args.resume, log=lambda m: print(m, flush=True))
    print(json.dumps(gan.export_student(model_dir), indent=2))


if __name__ == "__main__":
    main()
