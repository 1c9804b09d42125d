"""AutoML for the fine-tuners (Optuna): a time budget in, the best settings and an adapter out.

`tune(family, request, budget_s=...)` searches the settings of one family's LoRA fine-tune: each
trial is an ordinary fine-tune (`families.family(f).finetune()`) of the same request with other
settings, written as the adapter `<out>.t<N>`; the best one is published as `<out>` with a card
naming the study, the search space, every trial's settings and metric, and the seed.

- **The search spaces** are `SPACES`, one table per family. The request the user gives (its
  hand-set values, the shipped recipe by default) is trial 0, enqueued before any sampled trial,
  so the search can only match or beat it.
- **Sampler and pruner**: TPE (seeded) and the median pruner, fed with the intermediate figure each
  family already reports: the held-out loss for text (every `eval_every` steps), the validation AUC
  for the detector (at every checkpoint, `val_checks`), KID against the training images for the GAN
  (at every snapshot, measured here).
- **The study** lives in SQLite under `$BRUSHPEN_HOME/studies/NAME.db`, or in any database URL Optuna
  takes (`storage`), which is how several processes or machines join one study. `resume=True`
  continues a study: finished trials are kept, and a trial whose process died (no heartbeat for
  `3 x heartbeat_s`) is failed and queued again with the same settings.
- **Budget**: wall clock. No trial starts after it; a trial still running when it runs out is stopped,
  except the hand-set trial 0, which always completes. A budget shorter than trial 0's estimated time
  is refused up front, with the minimum stated. `trials` caps the study's finished trials.
- **Refit** (`refit`, half the budget by default): the search gets the rest of the budget, then the
  best settings are trained again for as much longer as the remaining time allows (at most 16x), and
  that model is published when it scores at least as well as the best trial. Without it the budget
  would all go to short trials, and a plain longer run of the hand-set recipe can beat them
  (BENCHMARKS.md, "AutoML").
- **A trial that fails** (NaN, an error, out of memory) is recorded as failed with its reason, and
  the search goes on; a cancelled job stops it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import shutil
import socket
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from brushpen import families
from brushpen.adapters import FinetuneEvent, check_name
from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.store import atomic_write_json, atomic_write_text, publish_dir, scrub_paths, staging_dir


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


def _model_dir(space: Space, name: str) -> Path:
    """A model space's output folder for `name` (its runner module's `model_dir`)."""
    return _load(space.runner.split(":")[0] + ":model_dir")(name)


def _check_free(space: Space, out: str, study: str) -> None:
    """A whole model is never published over one that this study did not make (the shipped detector...)."""
    folder = _model_dir(space, out)
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
    ), sec_per_unit=58.0, overhead_s=220.0),
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


def studies_dir() -> Path:
    return get_settings().home / "studies"


def storage_url(study: str, storage: str | None = None) -> str:
    check_name(study)
    if storage:
        return storage
    studies_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{studies_dir() / study}.db"


def _storage(url: str, heartbeat_s: int):
    import optuna

    import sqlalchemy.exc

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(5):   # workers racing to create the tables of a shared database: the loser retries
        try:
            return optuna.storages.RDBStorage(
                url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_s, grace_period=3 * heartbeat_s,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
        except sqlalchemy.exc.DatabaseError:
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


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


def _suggest(trial, space: Space, first: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k in space.knobs:
        if k.choices:
            choices = tuple(sorted(set(k.choices) | {first[k.name]}))   # the hand-set value is always a choice
            out[k.name] = trial.suggest_categorical(k.name, choices)
        elif k.integer:   # an enqueued hand-set value outside the range is still used as given
            out[k.name] = trial.suggest_int(k.name, int(k.low), int(k.high))
        else:
            out[k.name] = trial.suggest_float(k.name, k.low, k.high, log=k.log)
    return out


def _final(space: Space, metrics: dict, last: dict) -> float:
    if space.kind == "model":
        return float(metrics[space.metric])
    if space.family == "gan":
        return float(last.get("kid", math.nan))
    if space.family == "text":
        return float(metrics["heldout_loss"])
    aucs = [metrics[k] for k in ("val_auc_new_after", "val_auc_old_after") if k in metrics]
    return float(sum(aucs) / len(aucs)) if aucs else math.nan


def _gan_kid(progress: Callable[[FinetuneEvent], None], last: dict, seed: int) -> Callable:
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


def _trial_row(t) -> dict:
    return {"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params),
            "seconds": round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
            if t.datetime_complete and t.datetime_start else None,
            "reached": max(t.intermediate_values) if t.intermediate_values else None,
            "reason": t.user_attrs.get("reason"), "adapter": t.user_attrs.get("adapter"),
            "s_per_unit": t.user_attrs.get("s_per_unit")}


def tune(name: str, req: Any, *, budget_s: float, trials: int | None = None, seed: int = 0,
         study: str | None = None, storage: str | None = None, resume: bool = False, heartbeat_s: int = 10,
         refit: float = 0.5, progress: Callable[[FinetuneEvent], None] | None = None,
         on_trial: Callable[[dict], None] | None = None) -> TuneResult:
    """Search `req`'s settings within `budget_s` seconds; publish the best trial as `req.out`.

    `refit` (a share of the budget, 0..0.9): the search gets the rest, then the best settings are
    trained again for as much longer as the remaining time allows (at most `MAX_REFIT` x the
    length), and that model is published when it scores at least as well as the best trial."""
    import optuna

    space = space_of(name)
    req.validate()
    out = check_name(req.out)
    study_name = check_name(study or out)
    if budget_s <= 0 or (trials is not None and trials < 1):
        raise BadParameter("the budget must be > 0 and --trials >= 1")
    if not 0.0 <= refit <= 0.9:
        raise BadParameter(f"--refit is a share of the budget in 0..0.9, got {refit}")
    check_budget(space, req, budget_s)
    if space.kind == "model":
        _check_free(space, out, study_name)
    url = storage_url(study_name, storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)   # heartbeats, metric names
    with _setup_lock(url):   # workers starting together make the study, and trial 0, once
        try:
            st = optuna.create_study(study_name=study_name, storage=_storage(url, heartbeat_s),
                                     direction=space.direction, load_if_exists=resume,
                                     sampler=optuna.samplers.TPESampler(seed=seed),
                                     pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0))
        except optuna.exceptions.DuplicatedStudyError:
            raise BadParameter(f"study '{study_name}' exists: --resume to continue it, "
                               "or name another --study") from None
        first = hand_set(space, req)
        if not st.trials:
            st.set_metric_names([space.metric])
            st.set_user_attr("family", space.family)
            st.set_user_attr("tunes", name if space.kind == "model" else "adapter")
            st.set_user_attr("request", json.loads(json.dumps(dataclasses.asdict(req), default=str)))
            st.set_user_attr("space", [dataclasses.asdict(k) for k in space.knobs])
            st.set_user_attr("seed", seed)
            st.enqueue_trial(first, user_attrs={"hand_set": True}, skip_if_exists=True)
        else:
            # joining or resuming: a different sampler seed per worker, or all would propose the same settings
            st.sampler = optuna.samplers.TPESampler(seed=seed + len(st.trials))
    optuna.storages.fail_stale_trials(st)
    finetune = space.trainer()
    start, cancelled = time.monotonic(), []
    search_s = budget_s * (1 - refit)

    def objective(trial) -> float:
        params = _suggest(trial, space, first)
        trial_out = f"{out}.t{trial.number}"
        extra = {"val_checks": True} if space.family == "safety" and space.kind == "adapter" else {}
        if space.family == "gan":
            extra["lr_g"] = None   # G at D's rate
        treq = dataclasses.replace(req, out=trial_out, resume=False, **params, **extra)
        if space.kind == "model":   # a trial re-run after a kill starts afresh
            _remove_trial(_model_dir(space, trial_out), trial_out)
        last: dict = {}
        hand = trial.user_attrs.get("hand_set", False)
        ticks: list[tuple[float, int, int]] = []   # (time, step, total) of the training steps

        def on_event(ev: FinetuneEvent) -> None:
            if ev.step > 0 and ev.loss is not None:
                ticks.append((time.monotonic(), ev.step, ev.total))
            if progress is not None:
                try:   # the caller's callback raising (a job's cancel) stops the whole search
                    progress(FinetuneEvent(ev.step, ev.total, ev.loss, f"trial {trial.number}: {ev.message}",
                                           {**ev.metrics, "trial": trial.number}))
                except Exception as e:
                    cancelled.append(e)
                    raise
            if not hand and time.monotonic() - start > search_s:
                raise optuna.TrialPruned("the budget ran out")
            value = ev.metrics.get(space.report)
            if value is not None and ev.step > 0:
                trial.report(float(value), ev.step)
                if ev.step < ev.total and trial.should_prune():   # never at the end: the work is done
                    raise optuna.TrialPruned(f"pruned at step {ev.step}")

        kwargs = {"on_snapshot": _gan_kid(on_event, last, seed)} if space.family == "gan" else {}
        try:
            result = finetune(treq, on_event, **kwargs)
            value = _final(space, result.metrics, last)
            if not math.isfinite(value):
                raise BadInput(f"the trial's {space.metric} is not a number")
        except optuna.TrialPruned as e:
            trial.set_user_attr("reason", str(e))
            raise
        except Exception as e:   # noqa: BLE001 -- recorded, and the search goes on
            if cancelled:
                trial.set_user_attr("reason", "cancelled")
                st.stop()
                raise optuna.TrialPruned("cancelled") from None
            trial.set_user_attr("reason", scrub_paths(f"{type(e).__name__}: {e}")[:300])
            raise
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if len(ticks) >= 2 and ticks[-1][1] > ticks[0][1]:   # the refit's clock: seconds per length unit
            per_step = (ticks[-1][0] - ticks[0][0]) / (ticks[-1][1] - ticks[0][1])
            trial.set_user_attr("s_per_unit", per_step * ticks[-1][2] / float(getattr(treq, space.length)))
        trial.set_user_attr("adapter", result.ref)
        trial.set_user_attr("path", str(result.path))
        return value

    def after_trial(_study, frozen) -> None:
        if on_trial is not None:
            on_trial(_trial_row(frozen))

    callbacks = [after_trial]
    if trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(trials, states=None))
    if trials is None or sum(t.state.is_finished() for t in st.trials) < trials:   # else: publish what is there
        st.optimize(objective, timeout=search_s, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    if cancelled:
        raise cancelled[0]   # the caller's own cancel, as it raised it
    result = _publish(st, space, req, url, seed)
    if refit > 0 and not cancelled:
        _refit(result, st, space, req, finetune, budget_s - (time.monotonic() - start), seed, progress)
    return result


MAX_REFIT = 16.0   # the refit trains at most this many times the request's length


def _refit(result: TuneResult, st, space: Space, req: Any, finetune: Callable, remaining_s: float, seed: int,
           progress: Callable[[FinetuneEvent], None] | None) -> None:
    """The best settings trained again, `remaining_s / best trial's seconds` times as long (capped);
    published over `<out>` when its metric is at least the best trial's. Updates `result`."""
    best = next(r for r in result.trials if r["trial"] == result.best_trial)
    length = getattr(req, space.length, None)
    if length is None or not best["seconds"]:
        return
    # The length the remaining time buys: the trial's fixed cost (loading, evaluating, publishing)
    # once, then its measured seconds per unit of length; whole-trial seconds when unmeasured.
    spu = best.get("s_per_unit")
    if spu:
        fixed = max(0.0, best["seconds"] - spu * float(length))
        factor = min(MAX_REFIT, 0.9 * (remaining_s - fixed) / spu / float(length))
    else:
        factor = min(MAX_REFIT, remaining_s / best["seconds"])
    if factor < 1.5:   # too little time left to train meaningfully longer
        return
    new_length = round(float(length) * factor, 3) if isinstance(length, float) else int(length * factor)
    extra = {"lr_g": None} if space.family == "gan" else {}
    if hasattr(req, "snap"):
        extra["snap"] = max(req.snap, new_length // 4)
    if space.kind == "model":   # a refit cut short by a kill left its folder
        _remove_trial(_model_dir(space, f"{req.out}.refit"), f"{req.out}.refit")
    rreq = dataclasses.replace(req, out=f"{req.out}.refit", resume=False, **result.best_params, **extra,
                               **{space.length: new_length})
    last: dict = {}
    emit = progress or (lambda ev: None)
    kwargs = {"on_snapshot": _gan_kid(emit, last, seed)} if space.family == "gan" else {}
    t0 = time.monotonic()
    res = finetune(rreq, lambda ev: emit(FinetuneEvent(ev.step, ev.total, ev.loss, f"refit: {ev.message}",
                                                        ev.metrics)), **kwargs)
    value = _final(space, res.metrics, last)
    better = math.isfinite(value) and (value <= result.best_value if space.direction == "minimize"
                                       else value >= result.best_value)
    record = {"length": new_length, "field": space.length, "factor": round(factor, 2), "value": value,
              "seconds": round(time.monotonic() - t0, 1), "published": better}
    if better:
        with _publish_lock(result.path):
            _publish_refit(result, res, space, record, new_length, factor, length, value)
    _remove_trial(res.path, f"{req.out}.refit")
    result.refit = record


def _publish_refit(result: TuneResult, res: Any, space: Space, record: dict, new_length: Any, factor: float,
                   length: Any, value: float) -> None:
    """The refit's adapter over `<out>`, its card saying so (under the publish lock)."""
    stage = staging_dir(result.path)
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(res.path, stage)
    metrics = json.loads((stage / "metrics.json").read_text(encoding="utf-8"))
    tuning = json.loads((result.path / "metrics.json").read_text(encoding="utf-8")).get("tuning", {})
    metrics["tuning"] = {**tuning, "refit": record}
    atomic_write_json(stage / "metrics.json", metrics)
    card = (result.path / "card.md").read_text(encoding="utf-8")
    atomic_write_text(stage / "card.md", card + (
        f"\n## Refit\n\nThe published weights are the best settings trained again for {space.length} "
        f"{new_length} ({factor:.1f}x the trials' {length}) with the budget's remaining time: {space.metric} "
        f"{value:.4g}, against {result.best_value:.4g} for trial {result.best_trial}.\n"))
    publish_dir(stage, result.path)
    result.best_value = value


def importances(st) -> dict[str, float]:
    """fANOVA importance of each setting (Optuna's default evaluator); {} with too few trials."""
    import optuna

    try:
        return {k: round(v, 4) for k, v in optuna.importance.get_param_importances(st).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def _publish(st, space: Space, req: Any, url: str, seed: int) -> TuneResult:
    """The best trial's adapter becomes `<out>`, with the study in its card; the other finished
    trials' adapters and work folders are removed."""
    from optuna.trial import TrialState

    complete = [t for t in st.trials if t.state == TrialState.COMPLETE and "path" in t.user_attrs]
    if not complete:
        reasons = "; ".join(f"trial {t.number}: {t.user_attrs.get('reason', t.state.name.lower())}"
                            for t in st.trials)
        raise BadInput(f"no trial of study '{st.study_name}' finished: {reasons}")
    best = min(complete, key=lambda t: t.value if space.direction == "minimize" else -t.value)
    rows = [_trial_row(t) for t in st.trials]
    imp = importances(st)
    src = Path(best.user_attrs["path"])
    final = src.parent / req.out
    with _publish_lock(final):
        return _publish_locked(st, space, req, url, seed, best, rows, imp, src, final)


def _setup_lock(url: str):
    """On a SQLite file, a lock beside it: processes of one machine create and seed a study in turn."""
    if url.startswith("sqlite:///"):
        return _file_lock(Path(url.removeprefix("sqlite:///") + ".lock"))
    return contextlib.nullcontext()


def _publish_lock(final: Path):
    """One worker at a time publishes `final` (several may finish a shared study together)."""
    return _file_lock(final.parent / f".{final.name}.lock")


@contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish_locked(st, space: Space, req: Any, url: str, seed: int, best, rows: list[dict],
                    imp: dict[str, float], src: Path, final: Path) -> TuneResult:
    kept = final / "metrics.json"
    recorded = json.loads(kept.read_text(encoding="utf-8")).get("tuning", {}) if kept.exists() else {}
    refitted = recorded.get("best_trial") == best.number and (recorded.get("refit") or {}).get("published")
    if src.exists() and not refitted:   # another worker's refit of this same best trial stays
        stage = staging_dir(final)
        shutil.rmtree(stage, ignore_errors=True)
        shutil.copytree(src, stage)
        metrics = json.loads((stage / "metrics.json").read_text(encoding="utf-8"))
        metrics["tuning"] = {"study": st.study_name, "best_trial": best.number, "metric": space.metric,
                             "value": best.value, "params": best.params, "seed": seed, "trials": rows,
                             "importances": imp}
        atomic_write_json(stage / "metrics.json", metrics)
        card = (stage / "card.md").read_text(encoding="utf-8") if (stage / "card.md").exists() else ""
        card = card.replace(src.name, final.name)   # the trial's card, under the name it is published as
        atomic_write_text(stage / "card.md", card + _card_section(st, space, req, url, seed, best, rows, imp))
        publish_dir(stage, final)
    elif not src.exists() and recorded.get("best_trial") != best.number:
        raise BadInput(f"the best trial's adapter {src.name} is gone and {final.name} holds another trial")
    for t in st.trials:   # finished trials' leftovers; a trial still running elsewhere keeps its own
        if t.state.is_finished():
            name = f"{req.out}.t{t.number}"
            if space.kind == "model":   # a pruned or failed trial left its half-trained folder too
                _remove_trial(_model_dir(space, name), name)
            _remove_trial(Path(t.user_attrs["path"]) if "path" in t.user_attrs else None, name)
    ref = req.out if space.kind == "model" else f"{src.parent.parent.name}:{req.out}"
    return TuneResult(ref=ref, path=final, study=st.study_name, storage=scrub_paths(url),
                      best_trial=best.number, best_value=float(best.value), best_params=dict(best.params),
                      trials=rows, importances=imp)


def _remove_trial(adapter: Path | None, name: str) -> None:
    if adapter is not None and adapter.name == name:
        shutil.rmtree(adapter, ignore_errors=True)
    root = get_settings().home / "finetune"
    if root.is_dir():
        for work in root.rglob(f"*{name}"):
            if work.is_dir() and work.name.endswith(name):
                shutil.rmtree(work, ignore_errors=True)


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else "-" if v is None else str(v)


def trials_table(rows: list[dict], knobs: list[str]) -> str:
    head = "| trial | state | value | " + " | ".join(knobs) + " | s | stopped at | note |"
    lines = [head, "|" + "---|" * (len(knobs) + 6)]
    for r in rows:
        lines.append(f"| {r['trial']} | {r['state']} | {_fmt(r['value'])} | "
                     + " | ".join(_fmt(r["params"].get(k)) for k in knobs)
                     + f" | {_fmt(r['seconds'])} | {_fmt(r['reached'])} | {r.get('reason') or ''} |")
    return "\n".join(lines)


def _card_section(st, space: Space, req: Any, url: str, seed: int, best, rows: list[dict],
                  imp: dict[str, float]) -> str:
    knobs = [k.name for k in space.knobs]
    ranges = "\n".join(f"| {k.name} | " + (", ".join(map(str, k.choices)) if k.choices else
                                           f"{k.low:g} .. {k.high:g}{' (log)' if k.log else ''}") + " |"
                       for k in space.knobs)
    return (f"\n\n## Tuning\n\nThis {space.kind} is trial {best.number} of the Optuna study `{st.study_name}` "
            f"(`{scrub_paths(url)}`, TPE sampler seed {seed}, median pruner), {space.direction} "
            f"`{space.metric}`: **{best.value:.4g}**. Trial 0 is the hand-set request "
            f"({', '.join(f'{k} {_fmt(v)}' for k, v in hand_set(space, req).items())}).\n\n"
            f"| setting | searched |\n|---|---|\n{ranges}\n\n{trials_table(rows, knobs)}\n\n"
            + ("Importance (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items()) + "\n" if imp else ""))


def load_study(study: str, storage: str | None = None):
    import optuna

    url = storage_url(study, storage)
    if storage is None and not (studies_dir() / f"{study}.db").exists():
        raise BadParameter(f"no study '{study}' in {studies_dir()}")
    try:
        return optuna.load_study(study_name=study, storage=url)
    except KeyError:
        raise BadParameter(f"no study '{study}' in {scrub_paths(url)}") from None


def show(study: str, storage: str | None = None) -> dict:
    """`brushpen tune show`: every trial and the importance of each setting."""
    st = load_study(study, storage)
    knobs = [k["name"] for k in st.user_attrs.get("space", [])]
    rows = [_trial_row(t) for t in st.trials]
    return {"study": study, "family": st.user_attrs.get("family"), "direction": st.direction.name.lower(),
            "knobs": knobs, "trials": rows, "importances": importances(st),
            "pruned": sum(r["state"] == "pruned" for r in rows), "failed": sum(r["state"] == "fail" for r in rows)}
