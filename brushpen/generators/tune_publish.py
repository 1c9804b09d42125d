"""Publishing a tune: the best trial becomes `<out>` with the study in its card, a longer refit of
its settings replaces it when it scores at least as well, the other trials' leftovers are removed,
and `brushpen tune show` reads a study back (every trial, the importance of each setting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from brushpen.adapters import FinetuneEvent, check_name
from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter
from brushpen.generators.tune_space import (Space, TuneResult, final_value, gan_kid, hand_set, model_dir_of)
from brushpen.store import atomic_write_json, atomic_write_text, file_lock, publish_dir, scrub_paths, staging_dir


def studies_dir() -> Path:
    return get_settings().home / "studies"


def storage_url(study: str, storage: str | None = None) -> str:
    check_name(study)
    if storage:
        return storage
    studies_dir().mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{studies_dir() / study}.db"


def trial_row(t) -> dict:
    return {"trial": t.number, "state": t.state.name.lower(), "value": t.value, "params": dict(t.params),
            "seconds": round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
            if t.datetime_complete and t.datetime_start else None,
            "reached": max(t.intermediate_values) if t.intermediate_values else None,
            "reason": t.user_attrs.get("reason"), "adapter": t.user_attrs.get("adapter"),
            "s_per_unit": t.user_attrs.get("s_per_unit")}


MAX_REFIT = 16.0   # the refit trains at most this many times the request's length


def refit_best(result: TuneResult, st, space: Space, req: Any, finetune: Callable, remaining_s: float, seed: int,
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
        remove_trial(model_dir_of(space, f"{req.out}.refit"), f"{req.out}.refit")
    rreq = dataclasses.replace(req, out=f"{req.out}.refit", resume=False, **result.best_params, **extra,
                               **{space.length: new_length})
    last: dict = {}
    emit = progress or (lambda ev: None)
    kwargs = {"on_snapshot": gan_kid(emit, last, seed)} if space.family == "gan" else {}
    t0 = time.monotonic()
    res = finetune(rreq, lambda ev: emit(FinetuneEvent(ev.step, ev.total, ev.loss, f"refit: {ev.message}",
                                                        ev.metrics)), **kwargs)
    value = final_value(space, res.metrics, last)
    better = math.isfinite(value) and (value <= result.best_value if space.direction == "minimize"
                                       else value >= result.best_value)
    record = {"length": new_length, "field": space.length, "factor": round(factor, 2), "value": value,
              "seconds": round(time.monotonic() - t0, 1), "published": better}
    if better:
        with _publish_lock(result.path):
            _publish_refit(result, res, space, record, new_length, factor, length, value)
    remove_trial(res.path, f"{req.out}.refit")
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


def publish(st, space: Space, req: Any, url: str, seed: int) -> TuneResult:
    """The best trial's adapter becomes `<out>`, with the study in its card; the other finished
    trials' adapters and work folders are removed."""
    from optuna.trial import TrialState

    complete = [t for t in st.trials if t.state == TrialState.COMPLETE and "path" in t.user_attrs]
    if not complete:
        reasons = "; ".join(f"trial {t.number}: {t.user_attrs.get('reason', t.state.name.lower())}"
                            for t in st.trials)
        raise BadInput(f"no trial of study '{st.study_name}' finished: {reasons}")
    best = min(complete, key=lambda t: t.value if space.direction == "minimize" else -t.value)
    rows = [trial_row(t) for t in st.trials]
    imp = importances(st)
    src = Path(best.user_attrs["path"])
    final = src.parent / req.out
    with _publish_lock(final):
        return _publish_locked(st, space, req, url, seed, best, rows, imp, src, final)


def setup_lock(url: str):
    """On a SQLite file, a lock beside it: processes of one machine create and seed a study in turn."""
    if url.startswith("sqlite:///"):
        return file_lock(Path(url.removeprefix("sqlite:///") + ".lock"))
    return contextlib.nullcontext()


def _publish_lock(final: Path):
    """One worker at a time publishes `final` (several may finish a shared study together)."""
    return file_lock(final.parent / f".{final.name}.lock")


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
                remove_trial(model_dir_of(space, name), name)
            # a trial stopped after its adapter was written has no "path" but left the adapter
            remove_trial(Path(t.user_attrs["path"]) if "path" in t.user_attrs else src.parent / name, name)
    ref = req.out if space.kind == "model" else f"{src.parent.parent.name}:{req.out}"
    return TuneResult(ref=ref, path=final, study=st.study_name, storage=scrub_paths(url),
                      best_trial=best.number, best_value=float(best.value), best_params=dict(best.params),
                      trials=rows, importances=imp)


def remove_trial(adapter: Path | None, name: str) -> None:
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
    rows = [trial_row(t) for t in st.trials]
    return {"study": study, "family": st.user_attrs.get("family"), "direction": st.direction.name.lower(),
            "knobs": knobs, "trials": rows, "importances": importances(st),
            "pruned": sum(r["state"] == "pruned" for r in rows), "failed": sum(r["state"] == "fail" for r in rows)}
