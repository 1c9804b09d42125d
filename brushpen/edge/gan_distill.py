"""The GAN student: a generator with half the teacher's channels, distilled to match its images.

Same z_dim, w_dim, mapping depth and classes as the teacher; every synthesis width halved. The
mapping network (and its w_avg, so truncation means the same) is copied from the teacher and
frozen, so teacher and student see the same w for the same seed. The synthesis network starts
from the teacher's first channels of every layer and is trained on fresh z's (classes uniform, psi
1 for 3/4 of each batch and U(0.5, 1) for the rest), noise off, to minimise

    L1(S, T) + sum over 32², 16², 8² of L1(avgpool(S), avgpool(T)) + L1(grad S, grad T)

Why this loss: pixel L1 alone averages away detail; the down-sampled terms weigh layout and colour
the way a coarse perceptual loss does, and the finite-difference gradients weigh edges. It needs no
second network (LPIPS's VGG weights cannot be downloaded here; the shipped detector's features are
trained to tell fakes apart, not to judge likeness), so it costs ~nothing next to the generators.
Distillation is time-boxed (`minutes`) and publishes the student folder every few minutes, so a
kill leaves the latest complete student behind.

The exporter (`edge.gan`) distils through this module and passes in what it owns: the loaded
teacher and `inputs`, the function that draws its ONNX graph's feeds (`edge.gan.example_inputs`),
so the student is scored on the inputs its graph will take and this module does not import it.
`python -m brushpen.edge.gan_student` runs a distillation (or continues one) from the command line.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from brushpen.gan.networks import StyleGANGenerator
from brushpen.store import atomic_write_json, atomic_write_text, publish_dir, staging_dir

Feeds = dict[str, np.ndarray]
Inputs = Callable[[nn.Module, Sequence[int]], Feeds]   # (generator, seeds) -> its ONNX graph's feeds

BATCH = 16
LR = 2e-3
EVAL_SEEDS = range(10_000, 10_064)   # held out: training z's come from another generator
SAVE_EVERY_S = 180.0


def student_config(teacher_config: dict) -> dict:
    cfg = {k: v for k, v in dict(teacher_config).items() if not k.startswith("_")}
    cfg["channels"] = [max(c // 2, 4) for c in teacher_config["channels"]]
    return cfg


def init_from_teacher(G, S) -> None:
    """Copy the mapping network; start each synthesis tensor from the teacher's leading slice."""
    teacher = G.state_dict()
    with torch.no_grad():
        for name, p in S.state_dict().items():
            t = teacher[name]
            if name.startswith("mapping."):
                p.copy_(t)
            else:
                p.copy_(t[tuple(slice(0, n) for n in p.shape)])


def distill_loss(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    loss = (s - t).abs().mean()
    for size in (32, 16, 8):
        loss = loss + (F.adaptive_avg_pool2d(s, size) - F.adaptive_avg_pool2d(t, size)).abs().mean()
    for dim in (2, 3):
        loss = loss + (s.diff(dim=dim) - t.diff(dim=dim)).abs().mean()
    return loss


def draw(G, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    z = torch.randn(batch, G.z_dim, generator=gen)
    labels = torch.randint(0, G.num_classes, (batch,), generator=gen) if G.num_classes else None
    psi = torch.where(torch.rand(batch, generator=gen) < 0.75, torch.ones(batch),
                      0.5 + 0.5 * torch.rand(batch, generator=gen))
    return z, labels, psi


def ws_for(G, z: torch.Tensor, labels: torch.Tensor | None, psi: torch.Tensor) -> torch.Tensor:
    w = G.mapping(z, labels)
    w = G.mapping.w_avg + psi[:, None] * (w - G.mapping.w_avg)
    return w.unsqueeze(1).repeat(1, G.num_ws, 1)


@torch.no_grad()
def eval_l1(G, S, feeds: Feeds) -> float:
    """Mean abs pixel error of the student vs the teacher on the feeds' z and labels (held-out
    seeds, `EVAL_SEEDS`), psi 1, noise off."""
    labels = torch.from_numpy(feeds["labels"]) if "labels" in feeds else None
    z = torch.from_numpy(feeds["z"])
    return float((G(z, labels, noise_mode="none") - S(z, labels, noise_mode="none")).abs().mean())


def _publish(S, out: Path, card: str, metrics: dict) -> None:
    stage = staging_dir(out)
    S.save_pretrained(stage)
    for f in stage.iterdir():
        f.chmod(0o644)   # save_pretrained writes 0600; the store is read by other users
    atomic_write_text(stage / "card.md", card)
    atomic_write_json(stage / "metrics.json", metrics)
    publish_dir(stage, out)


def distill(teacher: nn.Module, teacher_dir: Path, out: Path, inputs: Inputs, minutes: float = 15.0,
            steps: int | None = None, seed: int = 0, progress: Callable[[float], None] | None = None,
            log: Callable[[str], None] = print, resume: bool = False) -> Path:
    """Train a student of `teacher` (the generator in `teacher_dir`) for `minutes` (or exactly
    `steps`) and publish it at `out`; returns `out`. `inputs` draws the graph's feeds for seeds.

    `resume` continues the student already at `out` for another time box (fresh z's, a new
    learning-rate decay); its figures count both sessions."""
    G = teacher.requires_grad_(False)
    eval_feeds = inputs(G, EVAL_SEEDS)
    saved = Path(out) / "metrics.json"
    before = json.loads(saved.read_text()) if resume and saved.exists() else {}
    if before:
        S = StyleGANGenerator.from_pretrained(str(out))
    else:
        S = StyleGANGenerator(**student_config(G.config))
        init_from_teacher(G, S)
    S.train()
    S.mapping.requires_grad_(False)
    opt = torch.optim.Adam([p for p in S.parameters() if p.requires_grad], lr=LR, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(seed + int(before.get("steps", 0)))
    budget = minutes * 60
    start = last_save = time.perf_counter()
    l1_start = before.get("l1_vs_teacher_start", eval_l1(G, S, eval_feeds))
    log(f"student {S.config.channels}: {n_params(S):,} params; L1 vs teacher at start {l1_start:.4f}")
    step, loss_avg = 0, None
    while (steps is not None and step < steps) or (steps is None and time.perf_counter() - start < budget):
        frac = step / steps if steps else (time.perf_counter() - start) / budget
        for group in opt.param_groups:   # linear decay over the last 30% of the budget
            group["lr"] = LR * min(1.0, (1 - frac) / 0.3)
        z, labels, psi = draw(G, BATCH, gen)
        with torch.no_grad():
            target = G.synthesis(ws_for(G, z, labels, psi), noise_mode="none")
        loss = distill_loss(S.synthesis(ws_for(S, z, labels, psi), noise_mode="none"), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        if step % 25 == 0:
            log(f"step {step} ({step * BATCH} images, {time.perf_counter() - start:.0f} s): loss {loss_avg:.4f}")
        if progress:
            progress(min(frac, 1.0))
        if time.perf_counter() - last_save > SAVE_EVERY_S:
            _publish(S, out, card_text(G, S, {"steps": step, "status": "in progress"}, teacher_dir), {"steps": step})
            last_save = time.perf_counter()
    seconds = time.perf_counter() - start
    step += int(before.get("steps", 0))
    seconds += float(before.get("train_seconds", 0))
    metrics = {"steps": step, "images_seen": step * BATCH, "train_seconds": round(seconds, 1),
               "sessions": int(before.get("sessions", 1)) + 1 if before else 1,
               "l1_vs_teacher_start": round(l1_start, 5), "l1_vs_teacher": round(eval_l1(G, S, eval_feeds), 5),
               "threads": torch.get_num_threads(), **student_figures(G, S, inputs(G, [0]))}
    log(f"done: {json.dumps(metrics)}")
    _publish(S.eval(), out, card_text(G, S, metrics, teacher_dir), metrics)
    return Path(out)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_image(G, feeds: Feeds) -> int:
    """Multiply-adds of one image (the feeds of one seed; convs + linear layers), counted by torch's
    FlopCounterMode (2 FLOPs per MAC)."""
    labels = torch.from_numpy(feeds["labels"]) if "labels" in feeds else None
    frozen = copy.deepcopy(G).requires_grad_(False)   # FlopCounterMode trips over no_grad + grad params
    with FlopCounterMode(display=False) as counter:
        frozen(torch.from_numpy(feeds["z"]), labels, noise_mode="none", fused=False)
    return counter.get_total_flops() // 2


def student_figures(G, S, feeds: Feeds) -> dict:
    """Sizes and cost of student and teacher; `feeds` are one image's (both take the same inputs)."""
    return {"params": n_params(S), "teacher_params": n_params(G), "macs_per_image": macs_per_image(S, feeds),
            "teacher_macs_per_image": macs_per_image(G, feeds), "channels": list(S.config.channels)}


def card_text(G, S, metrics: dict, teacher_dir: Path) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in metrics.items())
    resumed = "" if metrics.get("sessions", 1) == 1 else \
        (f", continued {metrics['sessions'] - 1} time(s) with `python -m brushpen.edge.gan_student "
         f"{Path(teacher_dir).name} --minutes 15 --resume --threads 1`")
    return f"""# {Path(teacher_dir).name} student: a half-width generator distilled from `{Path(teacher_dir).name}`

Widths {list(S.config.channels)} (teacher {list(G.config.channels)}); z {S.config.z_dim}, w {S.config.w_dim},
{S.config.num_classes} classes; the mapping network is the teacher's, copied and frozen, so the same seed
gives the same w. Made by `brushpen export {Path(teacher_dir).name} --student` (`brushpen/edge/gan_distill.py`){resumed}:
synthesis initialised from the teacher's leading channels, trained for a fixed time budget at batch {BATCH}
(Adam lr {LR}, linear decay over the last 30%) on fresh z's, noise off, loss = pixel L1 + L1 of
32/16/8-pixel average-pooled images + L1 of image gradients, against the teacher's images.

| figure | value |
|---|---|
{rows}

`l1_vs_teacher`: mean abs pixel error ([-1, 1] scale) against the teacher on seeds 10000-10063, psi 1,
noise off. `macs_per_image`: multiply-adds per image (convs + linear layers, torch FlopCounterMode).
FID and latency: `{Path(teacher_dir).name}/edge/report.md` and BENCHMARKS.md ("Edge variants: GAN generator").

Licence: as the teacher (weights MIT, code Apache-2.0); trained only on the teacher's outputs.
"""
