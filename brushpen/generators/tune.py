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

import dataclasses
import json
import math
import os
import socket
import time
import warnings
from typing import Any, Callable

from brushpen.adapters import FinetuneEvent, check_name
from brushpen.errors import BadInput, BadParameter
from brushpen.generators.tune_publish import (importances, load_study, publish, refit_best,  # noqa: F401
                                              remove_trial, setup_lock, show, storage_url, studies_dir,
                                              trial_row, trials_table)
from brushpen.generators.tune_space import (CLI_NAMES, SPACES, Space, TuneResult, check_budget,  # noqa: F401
                                            check_free, estimate_s, final_value, gan_kid, hand_set,
                                            model_dir_of, space_of)
from brushpen.store import scrub_paths


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
        check_free(space, out, study_name)
    url = storage_url(study_name, storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)   # heartbeats, metric names
    with setup_lock(url):   # workers starting together make the study, and trial 0, once
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
            remove_trial(model_dir_of(space, trial_out), trial_out)
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
            if not hand and ev.step < ev.total and time.monotonic() - start > search_s:   # done work is kept
                raise optuna.TrialPruned("the budget ran out")
            value = ev.metrics.get(space.report)
            if value is not None and ev.step > 0:
                trial.report(float(value), ev.step)
                if ev.step < ev.total and trial.should_prune():   # never at the end: the work is done
                    raise optuna.TrialPruned(f"pruned at step {ev.step}")

        kwargs = {"on_snapshot": gan_kid(on_event, last, seed)} if space.family == "gan" else {}
        try:
            result = finetune(treq, on_event, **kwargs)
            value = final_value(space, result.metrics, last)
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
            on_trial(trial_row(frozen))

    callbacks = [after_trial]
    if trials is not None:
        callbacks.append(optuna.study.MaxTrialsCallback(trials, states=None))
    if trials is None or sum(t.state.is_finished() for t in st.trials) < trials:   # else: publish what is there
        st.optimize(objective, timeout=search_s, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    if cancelled:
        raise cancelled[0]   # the caller's own cancel, as it raised it
    result = publish(st, space, req, url, seed)
    if refit > 0 and not cancelled:
        refit_best(result, st, space, req, finetune, budget_s - (time.monotonic() - start), seed, progress)
    return result
