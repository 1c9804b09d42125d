"""The search spaces of `brushpen tune` and what a trial's figure is: one readable table per family
(`SPACES`), the hand-set values that are trial 0, the time a trial takes on one thread, and the
final and intermediate figures each family reports (KID for the GAN, held-out loss for copy,
validation AUC for the detector).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from brushpen import families
from brushpen.adapters import FinetuneEvent
from brushpen.errors import BadParameter


@dataclass(frozen=True)
class Knob:
    """One setting the search moves: a float or int range (log-scaled or not), or a list of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple = ()


@dataclass(frozen=True)
class Space:
    family: str                 # families.FAMILIES key
    metric: str                 # what a trial's score is
    direction: str              # minimize | maximize
    report: str                 # the event metric fed to the pruner
    length: str                 # the request field that sets a trial's length
    knobs: tuple[Knob, ...]
    sec_per_unit: float         # the shipped model's measured seconds per `length` unit, one thread
    overhead_s: float           # loading, evaluation and publishing, per trial
    kind: str = "adapter"       # adapter: a family's LoRA fine-tune; model: a whole model trained from scratch
    request: str = ""           # model: "module:Class" of the request ("" = the family's fine-tune request)
    runner: str = ""            # model: "module:function" that trains it ("" = the family's fine-tune)

    def request_class(self) -> type:
        return _load(self.request) if self.request else families.family(self.family).request_class()

    def trainer(self) -> Callable:
        return _load(self.runner) if self.runner else families.family(self.family).finetune()


def model_dir_of(space: Space, name: str) -> Path:
    """A model space's output folder for `name` (its runner module's `model_dir`)."""
    return _load(space.runner.split(":")[0] + ":model_dir")(name)


def check_free(space: Space, out: str, study: str) -> None:
    """A whole model is never published over one that this study did not make (the shipped detector...)."""
    folder = model_dir_of(space, out)
    if folder.exists():
        metrics = folder / "metrics.json"
        made_by = json.loads(metrics.read_text(encoding="utf-8")).get("tuning", {}).get("study") \
            if metrics.exists() else None
        if made_by != study:
            raise BadParameter(f"the store already holds a model '{out}': pick another --out")


def _load(spec: str) -> Any:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


# The search space of each family, in one place. The ranges bracket the hand-set recipes of
# BENCHMARKS.md (GAN: lr 0.0025 for G and D, rank 4, Freeze-D 2, ADA speed 2 kimg; copy: lr 1e-3,
# rank 8, dropout 0.05; detector: lr 5e-3, rank 4, replay 0.5, localisation weight 0.5; the base
# detector trained from scratch: lr 2e-3, widths x1, chained augmentation, localisation weight 0.5).
SPACES: dict[str, Space] = {
    "gan": Space("gan", "kid", "minimize", "kid", "kimg", (
        Knob("lr", 5e-4, 1e-2, log=True),          # G and D alike (G at D's rate is what adapted)
        Knob("rank", choices=(2, 4, 8)),
        Knob("freeze_d", 0, 3, integer=True),
        Knob("ada_kimg", 0.5, 8.0, log=True),
    ), sec_per_unit=115.0, overhead_s=60.0),
    "text": Space("text", "heldout_loss", "minimize", "heldout_loss", "max_steps", (
        Knob("lr", 5e-5, 3e-3, log=True),
        Knob("rank", choices=(4, 8, 16)),
        Knob("dropout", 0.0, 0.1),
    ), sec_per_unit=7.0, overhead_s=45.0),   # 6.2 s a step of batch 8 and ~45 s of loading and evaluation,
    # one thread on an otherwise idle core (2026-12-05; the earlier 58 s was measured on a saturated machine)
    "safety": Space("safety", "val_auc", "maximize", "val_auc", "steps", (
        Knob("lr", 1e-3, 3e-2, log=True),
        Knob("rank", choices=(2, 4, 8)),
        Knob("replay", 0.25, 0.75),
        Knob("loc_weight", 0.0, 1.0),
    ), sec_per_unit=0.15, overhead_s=20.0),
    "detector-train": Space("safety", "val_auc", "maximize", "val_auc", "steps", (
        Knob("lr", 5e-4, 1e-2, log=True),
        Knob("width", choices=(0.5, 0.75, 1.0, 1.5)),   # x the stage widths; time grows about as its square
        Knob("augment", choices=("basic", "chain")),
        Knob("loc_weight", 0.0, 1.0),
    ), sec_per_unit=0.07, overhead_s=15.0, kind="model", request="brushpen.safety.detector_train:DetectorTrainRequest",
        runner="brushpen.safety.detector_train:train_request"),
}
CLI_NAMES = {"gan": "gan", "text": "text", "detector": "safety", "detector-train": "detector-train"}
MIN_BUDGET_S = 10.0   # for a base other than the shipped one, whose speed is not measured here


@dataclass
class TuneResult:
    ref: str                                # base:out, the best trial's adapter
    path: Path
    study: str
    storage: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    trials: list[dict] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    refit: dict | None = None               # the longer retraining of the best settings, when asked


def space_of(name: str) -> Space:
    key = CLI_NAMES.get(name, name)
    if key not in SPACES:
        raise BadParameter(f"no search space for '{name}': tune takes {', '.join(CLI_NAMES)}")
    return SPACES[key]


def hand_set(space: Space, req: Any) -> dict[str, Any]:
    """Trial 0: the request's own values of the knobs (GAN: `lr_g` None means G at `lr`)."""
    return {k.name: getattr(req, k.name) for k in space.knobs}


def estimate_s(space: Space, req: Any) -> float | None:
    """Trial 0's time on one thread from the shipped model's measured speed; None for other bases."""
    length = getattr(req, space.length, None) or 100
    if space.kind == "model":   # the shipped architecture's speed, scaled by the width's square
        return space.overhead_s + space.sec_per_unit * float(length) * getattr(req, "width", 1.0) ** 2
    if getattr(req, "base", None) != families.family(space.family).default_model:
        return None
    return space.overhead_s + space.sec_per_unit * float(length)


def check_budget(space: Space, req: Any, budget_s: float) -> None:
    """Refuse, up front, a budget too small for even the hand-set trial, saying the minimum."""
    need = estimate_s(space, req)
    if budget_s < (need if need is not None else MIN_BUDGET_S):
        raise BadParameter(f"a budget of {budget_s:.0f} s is too small for even the hand-set trial: it needs "
                           f"about {need if need is not None else MIN_BUDGET_S:.0f} s on one thread"
                           + (f" ({space.length} {getattr(req, space.length)})" if need is not None else ""))


def final_value(space: Space, metrics: dict, last: dict) -> float:
    if space.kind == "model":
        return float(metrics[space.metric])
    if space.family == "gan":
        return float(last.get("kid", math.nan))
    if space.family == "text":
        return float(metrics["heldout_loss"])
    aucs = [metrics[k] for k in ("val_auc_new_after", "val_auc_old_after") if k in metrics]
    return float(sum(aucs) / len(aucs)) if aucs else math.nan


def gan_kid(progress: Callable[[FinetuneEvent], None], last: dict, seed: int) -> Callable:
    """The GAN's intermediate figure: KID x 1000 of G_ema against its training images, at every snapshot."""
    import numpy as np
    import torch

    from brushpen.gan.metrics import inception_features, kernel_inception_distance
    from brushpen.gan.pipeline import to_uint8

    ref: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def on_snapshot(tr) -> None:
        reals = tr.data.images
        if "f" not in ref:
            ref["f"] = inception_features(reals)
        n, G = len(reals), tr.G_ema
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, G.z_dim, generator=gen)
        labels = None
        if tr.num_classes:
            labels = tr.data.labels[torch.randint(0, len(tr.data.labels), (n,), generator=gen)]
        fakes = torch.from_numpy(to_uint8(G.synthesis(G.map(z, labels), noise_mode="none"))).permute(0, 3, 1, 2)
        kid = 1000 * kernel_inception_distance(inception_features(fakes), ref["f"], subsets=50)
        last["kid"] = kid
        progress(FinetuneEvent(tr.nimg, int(tr.cfg.kimg * 1000), None,
                               f"kimg {tr.nimg / 1000:.3f}: KID x 1000 {kid:.1f}", {"kid": kid}))

    return on_snapshot
