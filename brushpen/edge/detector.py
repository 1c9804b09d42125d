"""Edge variants of the deepfake detector: `export(model_dir, int8, student, progress)` for
`brushpen export detector [--int8] [--student]` (see edge/export.py), and `load_backend` for the
checker service.

What `export` writes into `weights/safety/<name>/edge/` (graph details in `edge.detector_graph`):
- `model.onnx` + `model.json`: the fp32 scoring path, uint8 NHWC tiles in, logits, calibrated
  probabilities and the localisation map out; `extra` holds the calibration and tile size.
- `model.int8.onnx` + `model.int8.json` (`--int8`): static QDQ int8, calibrated on
  `CALIB_PATCHES` training-split patches (half real, half fake spread over the families).
- `student/` (`--student`): a half-width detector distilled from this one (`edge.detector_student`),
  an ordinary detector folder with its own calibration and card, plus `student.onnx` (and
  `student.int8.onnx` with `--int8`).
- `report.json` / `report.md`: per variant, parity against torch (max abs difference of the
  probabilities, logits and region maps on the test patches) and quality on the model's test
  split, the protocol of `brushpen detect eval`'s in-distribution rows (`detector_eval.evaluate`):
  AUC and balanced accuracy at t_fake, all families pooled and per family; plus size, params and
  MACs per 64x64 patch.

The data is found from the model's own `train.json` (the `--real`/`--fake` folders it was trained
on). Without it the fp32 graph is still exported and checked on random tiles, but int8 and the
student need it and say so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from brushpen.edge.common import (OPSET, VariantInfo, available_backends, check_backend, edge_dir, sha256_file,
                                  write_info, write_onnx, write_report)
from brushpen.edge.detector_graph import OnnxDetector, ScoringGraph, compact, onnx_bytes, quantize_bytes, specs
from brushpen.edge.detector_student import distill
from brushpen.errors import BadParameter, BrokenModel
from brushpen.safety.detector import Detector, load_detector, to_tensor
from brushpen.safety.detector_data import BalancedSampler, Sample, gather, load_arrays
from brushpen.safety.detector_eval import evaluate

Progress = Callable[[str, float], None]
CALIB_PATCHES = 512      # int8 calibration tiles from the train split
CALIB_SEED = 7
PARITY_RANDOM = 256      # random tiles for parity when the test split is not on this machine
GRAPHS = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx",
          "student-onnx": "student.onnx", "student-onnx-int8": "student.int8.onnx"}


# ---- data -----------------------------------------------------------------------------------------

def training_samples(model_dir: Path, real: list[Path] | None = None, fake: list[Path] | None = None,
                     families: tuple[str, ...] | None = None) -> list[Sample] | None:
    """The model's own data (train.json's folders, unless given; fakes of `families` only if given),
    or None if they are not here."""
    if real is None and fake is None:
        path = Path(model_dir) / "train.json"
        if not path.exists():
            return None
        config = json.loads(path.read_text(encoding="utf-8"))["config"]
        real, fake = [Path(p) for p in config.get("real") or []], [Path(p) for p in config.get("fake") or []]
    if not fake or not all(Path(p).is_dir() for p in [*(real or []), *fake]):
        return None
    samples = gather(list(real or []), list(fake), families)
    return samples if {"train", "val", "test"} <= {s.split for s in samples} else None


def calibration_patches(samples: list[Sample], n: int = CALIB_PATCHES, seed: int = CALIB_SEED) -> np.ndarray:
    """n distinct train tiles, drawn as training batches are: half real, half fake spread over families."""
    train = [s for s in samples if s.split == "train"]
    idx = np.unique(BalancedSampler(train).batch(n, np.random.default_rng(seed)))
    images, _ = load_arrays([train[i] for i in idx])
    return images


def test_arrays(samples: list[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    test = [s for s in samples if s.split == "test"]
    images, _ = load_arrays(test)
    return images, np.array([s.label for s in test]), np.array([s.family for s in test])


# ---- figures -----------------------------------------------------------------------------------------

def quality(model: Detector | OnnxDetector, samples: list[Sample]) -> dict[str, float]:
    """AUC and balanced accuracy at t_fake on the test split, pooled and per family (flat keys)."""
    out: dict[str, float] = {}
    for row in evaluate(model, samples, settings=("in-distribution",), progress=False):
        suffix = "" if row["family"] == "all" else f"_{row['family']}"
        out[f"auc{suffix}"], out[f"acc{suffix}"] = round(row["auc"], 5), round(row["acc"], 5)
    return out


@torch.no_grad()
def parity(model: Detector, graph: OnnxDetector, patches: np.ndarray) -> dict[str, float]:
    """Max abs difference of the graph's outputs against the torch detector (BN not folded)."""
    got = graph.run(patches)
    logit, where = model(to_tensor(patches))
    prob = model.calibration.probability(logit.numpy())
    return {"max_abs_err_prob": float(np.abs(got["probability"] - prob).max()),
            "mean_abs_err_prob": float(np.abs(got["probability"] - prob).mean()),
            "max_abs_err_logit": float(np.abs(got["logit"] - logit.numpy()).max()),
            "max_abs_err_region": float(np.abs(got["region_logit"] - where.numpy()).max()),
            "parity_patches": int(len(patches))}


def model_figures(model: Detector) -> dict[str, float]:
    """Parameters and multiply-accumulates per tile (torch's FLOP counter: conv FLOPs = 2 x MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    t = model.config.tile
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, 3, t, t))
    return {"params": model.num_params(), "mmacs_per_patch": round(counter.get_total_flops() / 2 / 1e6, 3)}


# ---- writing the variants ------------------------------------------------------------------------------

def write_graph(model: Detector, data: bytes, edge: Path, file: str, variant: str, ref: str, source_sha: str,
                quantization: str | None = None, extra: dict | None = None) -> Path:
    import onnx

    sha = write_onnx(compact(onnx.load_from_string(data)), edge / file)
    inputs, outputs = specs(model.config)
    cal = model.calibration
    write_info(VariantInfo(model=ref, variant=variant, file=file, opset=OPSET, inputs=inputs, outputs=outputs,
                           sha256=sha, source_sha256=source_sha, quantization=quantization, extra={
                               "tile": model.config.tile, "layout": "NHWC uint8 RGB tiles, 0..255",
                               "calibration": {"temperature": cal.temperature, "t_real": cal.t_real,
                                               "t_fake": cal.t_fake},
                               "image_score": "sigmoid(mean(tile logits) / temperature); verdict 'fake' if "
                                              ">= t_fake, 'real' if < t_real, else 'uncertain'",
                               "heatmap": "region_probability, bilinear-upsampled to the tile, averaged "
                                          "where tiles overlap", **(extra or {})}), edge)
    return edge / file


def export_pair(model: Detector, model_dir: Path, edge: Path, names: tuple[str, str], ref: str,
                int8: bool, samples: list[Sample] | None, progress: Progress, at: float) -> dict[str, dict]:
    """fp32 graph (+ int8) of one detector, with parity and quality figures."""
    fp32_file, int8_file = GRAPHS[names[0]], GRAPHS[names[1]]
    source_sha = sha256_file(Path(model_dir) / "model.safetensors")
    progress(f"export {fp32_file}", at)
    fp32 = onnx_bytes(model)
    path = write_graph(model, fp32, edge, fp32_file, names[0], ref, source_sha)
    graph = OnnxDetector(path, model.config, model.calibration, threads=1)
    patches = (test_arrays(samples)[0] if samples else
               np.random.default_rng(0).integers(0, 256, (PARITY_RANDOM, model.config.tile, model.config.tile, 3),
                                                 dtype=np.uint8))
    report = {names[0]: {**parity(model, graph, patches), "size_bytes": path.stat().st_size}}
    if samples:
        report["torch" if names[0] == "onnx" else "student"] = quality(model, samples)
        report[names[0]].update(quality(graph, samples))
    if int8:
        if not samples:
            raise BadParameter(f"int8 calibration needs the training data of {model_dir.name} (train.json's "
                               "--real/--fake folders), which is not on this machine")
        progress(f"calibrate + quantize {int8_file}", at + 0.1)
        data, kept = quantize_bytes(fp32, calibration_patches(samples))
        q = write_graph(model, data, edge, int8_file, names[1], ref, source_sha, extra={"fp32_nodes": kept},
                        quantization=f"static QDQ int8 (onnxruntime quantize_static: per-channel int8 weights, "
                                     f"uint8 activations, MinMax) on {CALIB_PATCHES} train-split patches "
                                     f"(half real, half fake over the families); fp32 kept: the 1x1 head convs")
        qgraph = OnnxDetector(q, model.config, model.calibration, threads=1)
        report[names[1]] = {**parity(model, qgraph, patches), "size_bytes": q.stat().st_size,
                            "size_vs_fp32": round(q.stat().st_size / path.stat().st_size, 4),
                            **quality(qgraph, samples)}
    return report


def export(model_dir: Path, int8: bool = False, student: bool = False, progress: Progress | None = None,
           student_minutes: float = 10.0, student_steps: int | None = None,
           real: list[Path] | None = None, fake: list[Path] | None = None,
           families: tuple[str, ...] | None = None) -> dict:
    """Write the detector's edge variants into `model_dir/edge/` and return the report (module docstring)."""
    progress = progress or (lambda stage, frac: None)
    model_dir = Path(model_dir)
    model = load_detector(model_dir)
    edge = edge_dir(model_dir)
    edge.mkdir(parents=True, exist_ok=True)
    ref = f"safety/{model_dir.name}"
    samples = training_samples(model_dir, real, fake, families)
    if student and not samples:
        raise BadParameter(f"the student is distilled on the training data of {model_dir.name}, "
                           "which is not on this machine")
    progress("load data", 0.0)
    report = export_pair(model, model_dir, edge, ("onnx", "onnx-int8"), ref, int8, samples, progress, 0.05)
    report.setdefault("torch", {}).update(model_figures(model))
    if student:
        progress("distil student", 0.3)
        sdir = distill(model, samples, edge / "student", minutes=student_minutes, steps=student_steps,
                       progress=lambda f: progress("distil student", 0.3 + 0.55 * f))
        smodel = load_detector(sdir)
        srep = export_pair(smodel, sdir, edge, ("student-onnx", "student-onnx-int8"), ref, int8, samples,
                           progress, 0.85)
        srep["student"].update(model_figures(smodel))
        report.update(srep)
    write_report(edge, report)
    progress("done", 1.0)
    return report


# ---- serving --------------------------------------------------------------------------------------------

def load_backend(model_dir: Path, backend: str, teacher: Detector) -> Detector | OnnxDetector:
    """The network a checker request runs: `teacher` itself (torch), its exported graphs or its student."""
    check_backend(backend, available_backends(model_dir))
    edge = edge_dir(model_dir)
    if backend == "torch":
        return teacher
    if backend == "student":
        return load_detector(edge / "student")
    graph = OnnxDetector(edge / GRAPHS[backend], teacher.config, teacher.calibration)
    if graph.info.source_sha256 != sha256_file(Path(model_dir) / "model.safetensors"):
        raise BrokenModel(f"{GRAPHS[backend]} was exported from other weights than {Path(model_dir).name}'s "
                          "model.safetensors (retrained since?): re-run `brushpen export`")
    return graph


__all__ = ["export", "load_backend", "ScoringGraph"]
