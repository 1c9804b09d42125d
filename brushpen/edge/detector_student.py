"""The detector's distilled student (`brushpen export detector --student`).

A detector of the same design at half the widths (`student_config`: (24, 32, 32, 64, 64) ->
(12, 16, 16, 32, 32), ~1/4 of the MACs), trained to reproduce the teacher, not the labels:

    target      = sigmoid(teacher_logit / T)            # the teacher's calibrated score
    loc_target  = sigmoid(teacher_region_logit / T)     # and its localisation map
    loss        = BCE(student_logit, target) + loc_weight * BCE(student_region_logit, loc_target)

on the teacher's own training patches, with the very batches and augmentation of
`detector_train` (class-balanced batches, `detector_data.augment`: JPEG, blur, resize, crops,
flips); the teacher scores each augmented batch as the student sees it. The run is time-boxed
(`minutes`) and capped at `steps`; the cosine learning rate decays over whichever ends first, so
a run with `minutes=None` is deterministic. The student then gets its own calibration on the
validation split (`safety.calibrate`, the teacher's rule), and is saved as an ordinary detector
folder (`save_detector`) with `distill.json` and `card.md`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from brushpen.safety.calibrate import calibrate
from brushpen.safety.detector import Detector, DetectorConfig, save_detector, to_tensor
from brushpen.safety.detector_data import BalancedSampler, Sample, augment, load_arrays
from brushpen.safety.detector_train import logits_of
from brushpen.store import atomic_write_json, atomic_write_text

MAX_STEPS = 20_000
BATCH = 32
LR = 2e-3
LOC_WEIGHT = 0.5


def student_config(teacher: DetectorConfig) -> DetectorConfig:
    return replace(teacher, widths=tuple(max(8, w // 2) for w in teacher.widths))


def distill(teacher: Detector, samples: list[Sample], out: Path, minutes: float | None = 10.0,
            steps: int | None = None, seed: int = 0, progress: Callable[[float], None] | None = None) -> Path:
    """Train, calibrate and save the student into `out`; returns the folder."""
    progress = progress or (lambda frac: None)
    steps = steps or MAX_STEPS
    budget = None if minutes is None else 60.0 * minutes
    train = [s for s in samples if s.split == "train"]
    val = [s for s in samples if s.split == "val"]
    sampler = BalancedSampler(train)
    images, masks = load_arrays(train, teacher.config.tile)
    labels = np.array([s.label for s in train])
    teacher = teacher.eval()
    T = teacher.calibration.temperature

    torch.manual_seed(seed)
    student = Detector(student_config(teacher.config))
    opt = torch.optim.AdamW(student.parameters(), lr=LR, weight_decay=1e-4)
    start, step, losses, agree = time.time(), 0, [], []
    student.train()
    while step < steps:
        done = step / steps if budget is None else max(step / steps, (time.time() - start) / budget)
        if done >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = LR * 0.5 * (1 + np.cos(np.pi * done))
        rng = np.random.default_rng([seed, step])
        idx = sampler.batch(BATCH, rng)
        x = to_tensor(np.stack([augment(images[i], masks[i], rng, teacher.config.tile)[0] for i in idx]))
        with torch.no_grad():
            t_logit, t_where = teacher(x)
        s_logit, s_where = student(x)
        loss = F.binary_cross_entropy_with_logits(s_logit, torch.sigmoid(t_logit / T)) + \
            LOC_WEIGHT * F.binary_cross_entropy_with_logits(s_where, torch.sigmoid(t_where / T))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(float(loss.detach()))
        agree.append(float(((s_logit > 0) == (torch.from_numpy(labels[idx]) > 0)).float().mean()))
        if step % 50 == 0:
            progress(min(done, 1.0))
    elapsed = time.time() - start

    student.eval()
    val_images, _ = load_arrays(val, teacher.config.tile)
    student.calibration = calibrate(logits_of(student, val_images), np.array([s.label for s in val]))
    save_detector(student, out, extra={"distilled_from": teacher.config.widths})
    record = {"steps": step, "batch": BATCH, "lr": LR, "loc_weight": LOC_WEIGHT, "seed": seed,
              "minutes_budget": minutes, "seconds": round(elapsed, 1), "threads": torch.get_num_threads(),
              "final_loss": round(float(np.mean(losses[-100:])), 5) if losses else None,
              "train_label_agreement_last100": round(float(np.mean(agree[-100:])), 4) if agree else None,
              "teacher": {"widths": list(teacher.config.widths), "params": teacher.num_params(),
                          "temperature": T},
              "student": {"widths": list(student.config.widths), "params": student.num_params()},
              "train_patches": len(train), "val_patches": len(val), "families": sampler.families}
    atomic_write_json(Path(out) / "distill.json", record)
    write_card(Path(out), record, asdict(student.calibration))
    progress(1.0)
    return Path(out)


def write_card(folder: Path, record: dict, cal: dict) -> Path:
    text = f"""# Detector student (distilled)

A {record['student']['params']:,}-parameter detector of the shipped design (NPR + RGB, conv/BN/ReLU, a
classification and a localisation head) at widths {record['student']['widths']}, distilled from the
{record['teacher']['params']:,}-parameter teacher at widths {record['teacher']['widths']} (the folder two levels
up). Code: `brushpen/edge/detector_student.py`. Made by `brushpen export detector --student`.

## Distillation

{record['steps']} steps of batch {record['batch']} in {record['seconds']} s on {record['threads']} CPU thread
(budget {record['minutes_budget']} min), AdamW lr {record['lr']} cosine. Targets: the teacher's calibrated
score sigmoid(logit / {record['teacher']['temperature']:.4f}) and its localisation map, BCE (map weight
{record['loc_weight']}), on the teacher's {record['train_patches']:,} training patches with its augmentation and
class-balanced batches; fake families: {', '.join(record.get('families', []))}. Final loss (mean of the last 100 steps): {record['final_loss']}.

## Calibration

Fitted on the {record['val_patches']:,} validation patches, the teacher's rule: T = {cal['temperature']:.4f},
`fake` if p >= {cal['t_fake']:.4f}, `real` if p < {cal['t_real']:.4f}, else `uncertain`.

## Evaluation

AUC and accuracy against the teacher on the test split, fp32 and int8: `../report.md` (rows
`student`, `student-onnx`, `student-onnx-int8`), and BENCHMARKS.md "Edge variants: detector".

## Licence

Trained here from the teacher's outputs on the teacher's training data; the teacher's card lists
the photo sources and their licences.
"""
    return atomic_write_text(folder / "card.md", text)
