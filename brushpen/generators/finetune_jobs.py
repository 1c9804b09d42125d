"""Fine-tuning jobs: a LoRA training run started from the API or the studio, run by the batch worker.

A fine-tuning job is a batch with one line, endpoint `/v1/fine_tuning/jobs`, in the same SQLite
`JobStore` and run by the same `Worker` as batch jobs, so it inherits their guarantees: it survives
a server restart (the line is claimed again and the family trainer resumes from its checkpoint), a
job that keeps killing the server is failed after `MAX_ATTEMPTS`, and cancelling is one status
change. Training reports progress as events (step, loss, a message) in a table beside the
batches. A job is read back as a `FinetuneJob` and its events as `JobEvent`s, in brushpen's terms:
the API shows them in OpenAI's `fine_tuning.job` and `fine_tuning.job.event` shapes, and the studio
plots them.

The training data is an uploaded file (purpose `fine-tune`): a JSONL of copy examples for the
copywriter, a zip of images for the GAN, a zip with `fake/` and `real/` folders for the detector.

A detector job with `hyperparameters.federated` is a federated simulation instead
(`safety.federated_sim`): the zip is split into sites that train one new detector together, named
by the suffix, with one event per round (the global model's AUC and each site's).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from brushpen import families
from brushpen.adapters import FinetuneEvent, check_name, list_adapters
from brushpen.config import get_settings
from brushpen.errors import BadInput, BadParameter, BrushpenError, ModelNotFound
from brushpen.generators.jobs import JobEvent, JobStore, current_batch_id
from brushpen.store import scrub_paths
from brushpen.text.lora_data import parse_line
from brushpen.ziputil import check_upload

ENDPOINT = "/v1/fine_tuning/jobs"
FILE_PURPOSE = "fine-tune"
# Request fields the job sets itself, and ones a remote client must not set: paths on the server
# (heldout, families' manifest), the thread count, and the GAN's full/scratch modes, which write
# whole models rather than an adapter.
RESERVED = ("base", "data", "fake", "real", "out", "resume", "progress", "mode", "threads", "command",
            "heldout", "families")


class Cancelled(BrushpenError):
    """The job was cancelled while it trained."""


@dataclass
class FinetuneJobRequest:
    model: str                        # the base: emoji64, smollm2-135m, detector
    training_file: str                # a file id (purpose fine-tune)
    suffix: str                       # the adapter's name
    hyperparameters: dict[str, Any] = field(default_factory=dict)   # rank, steps, kimg, epochs, ...


@dataclass
class FinetuneJob:
    """A fine-tuning job as brushpen keeps it: its request, where it stands, and what it made."""
    id: str
    model: str
    family: str
    training_file: str
    suffix: str
    hyperparameters: dict[str, Any]
    # The job store's status (validating, in_progress, finalizing, cancelling, completed, failed,
    # cancelled, expired), except that a job whose training failed is "failed", not "completed".
    status: str
    created_at: int
    finished_at: int | None
    fine_tuned_model: str | None      # base:suffix, once trained
    metrics: dict[str, Any] | None
    error: dict | None                # a failed job's error body (message, type, param, code)
    progress: dict[str, Any] | None   # the data of its latest event: step, total_steps, train_loss, ...


def family_of(model: str) -> str:
    """The model family of a base name, so the right trainer runs."""
    from brushpen.edge.export import model_family

    return model_family(model)[1]


def request_class(family: str) -> type:
    return families.family(family).request_class()


def allowed_hyperparameters(family: str) -> list[str]:
    """The request's own fields, and `auto` (tuning: {"budget_s", "trials", "seed"}) for a family
    with a search space (`generators.tune.SPACES`)."""
    from brushpen.generators.tune import SPACES

    own = [f.name for f in dataclasses.fields(request_class(family)) if f.name not in RESERVED]
    return own + (["auto"] if family in SPACES else []) + (["federated"] if family == "safety" else [])


# The `federated` hyperparameter: each key's type, and its default.
FEDERATED = {"sites": (int, 4), "partition": (str, "iid"), "rounds": (int, 10), "local_steps": (int, 50),
             "strategy": (str, "fedavg"), "min_sites": (int, 0), "dp_noise": (float, 0.0), "dp_clip": (float, 1.0),
             "seed": (int, 0)}
MAX_SITES = 8


def _federated(body: dict) -> dict | None:
    """The `federated` hyperparameter, checked and completed with defaults (`FEDERATED`)."""
    from brushpen.safety.federated import PARTITIONS
    from brushpen.safety.federated_flower import FederationConfig

    fed = body["hyperparameters"].get("federated")
    if fed is None:
        return None
    if not isinstance(fed, dict) or set(fed) - set(FEDERATED):
        raise BadParameter("federated takes {" + ", ".join(f'"{k}"' for k in FEDERATED) + "}")
    out = {}
    for key, (kind, default) in FEDERATED.items():
        value = fed.get(key, default)
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
        if isinstance(value, bool) or not ok:
            raise BadParameter(f"federated.{key} must be {'a number' if kind is float else kind.__name__}")
        out[key] = kind(value)
    if not 1 <= out["sites"] <= MAX_SITES:
        raise BadParameter(f"federated.sites must be 1..{MAX_SITES}")
    if out["partition"] not in PARTITIONS:
        raise BadParameter(f"federated.partition must be one of {', '.join(PARTITIONS)}")
    out["min_sites"] = out["min_sites"] or out["sites"]
    FederationConfig(out=body["suffix"], **federation_args(out)).check()
    return out


def federation_args(fed: dict) -> dict:
    return {k: fed[k] for k in ("rounds", "local_steps", "strategy", "min_sites", "dp_noise", "dp_clip", "seed")}


def _auto(body: dict) -> dict | None:
    """The `auto` hyperparameter, checked: {"budget_s": seconds > 0, "trials": N >= 1, "seed": int}."""
    auto = body["hyperparameters"].get("auto")
    if auto is None:
        return None
    if not isinstance(auto, dict) or set(auto) - {"budget_s", "trials", "seed", "refit"}:
        raise BadParameter('auto takes {"budget_s": seconds, "trials": N, "seed": S, "refit": share}')
    budget, trials, seed = auto.get("budget_s"), auto.get("trials"), auto.get("seed", 0)
    refit = auto.get("refit", 0.5)
    if isinstance(refit, bool) or not isinstance(refit, (int, float)) or not 0 <= refit <= 0.9:
        raise BadParameter("auto.refit must be a share of the budget in 0..0.9")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget <= 0:
        raise BadParameter("auto.budget_s must be a number of seconds > 0")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int) or trials < 1):
        raise BadParameter("auto.trials must be an integer >= 1")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise BadParameter("auto.seed must be an integer")
    return {"budget_s": float(budget), "trials": trials, "seed": seed, "refit": float(refit)}


def create_job(store: JobStore, req: FinetuneJobRequest) -> FinetuneJob:
    """Validate a request fully (base, file, name, hyperparameters) and queue it for the worker."""
    family = family_of(req.model)
    if not families.family(family).finetunes:
        raise BadParameter(f"'{req.model}' is a {family} model: fine-tuning takes a "
                           f"{', '.join(families.finetunable())} model")
    check_name(req.suffix)
    record = store.get_file(req.training_file)
    if record.purpose != FILE_PURPOSE:
        raise BadParameter(f"file '{req.training_file}' was not uploaded with purpose '{FILE_PURPOSE}'")
    kind = families.family(family).data_kind
    if not record.filename.lower().endswith(kind):
        raise BadInput(f"a {family} fine-tune takes a {kind} file; '{record.filename}' is not one")
    allowed = allowed_hyperparameters(family)
    unknown = sorted(set(req.hyperparameters) - set(allowed))
    if unknown:
        raise BadParameter(f"unknown hyperparameters {', '.join(unknown)} for a {family} fine-tune; "
                           f"allowed: {', '.join(allowed)}")
    body = {"model": req.model, "family": family, "training_file": req.training_file, "suffix": req.suffix,
            "hyperparameters": req.hyperparameters}
    try:   # the trainer's own checks, now, so a bad value is a 400 rather than a failed job later
        probe = _build_request(family, body, Path("train" + kind), resume=False)
        probe.validate()
    except TypeError as e:   # a value of the wrong type for its field
        raise BadParameter(f"bad hyperparameters for a {family} fine-tune: {e}") from None
    auto = _auto(body)
    if auto is not None:
        from brushpen.generators.tune import check_budget, space_of

        check_budget(space_of(family), probe, auto["budget_s"])
    if _federated(body) is not None:
        from brushpen.safety.detector_train import model_dir

        if auto is not None:
            raise BadParameter("a job is either auto or federated, not both")
        if model_dir(req.suffix).exists():
            raise BadParameter(f"the store already holds a detector '{req.suffix}': pick another suffix")
    job_id = "ftjob-" + secrets.token_hex(12)
    store.create_single(job_id, req.training_file, ENDPOINT, body)
    return get_job(store, job_id)


def get_job(store: JobStore, job_id: str) -> FinetuneJob:
    """The job, read from the store; ModelNotFound for an unknown id."""
    rows = store.single(job_id, ENDPOINT)
    if rows is None:
        raise ModelNotFound(f"no fine-tuning job with id '{job_id}'")
    batch, line = rows
    body = json.loads(line["body"])
    response = json.loads(line["response"]) if line["response"] else {}
    last = events(store, job_id, limit=1)
    status = batch.status
    if status == "completed" and line["status_code"] and line["status_code"] >= 300:
        status = "failed"   # the worker finished the job, but its training failed
    finished = batch.completed_at or batch.failed_at or batch.cancelled_at or batch.expired_at
    return FinetuneJob(id=job_id, model=body["model"], family=body["family"], training_file=body["training_file"],
                       suffix=body["suffix"], hyperparameters=body["hyperparameters"], status=status,
                       created_at=batch.created_at, finished_at=finished,
                       fine_tuned_model=response.get("fine_tuned_model"), metrics=response.get("metrics"),
                       error=response.get("error") if status in ("failed", "expired") else None,
                       progress=last[0].data if last else None)


def list_jobs(store: JobStore, limit: int = 20) -> list[FinetuneJob]:
    return [get_job(store, i) for i in store.job_ids(ENDPOINT, limit)]


def cancel_job(store: JobStore, job_id: str) -> FinetuneJob:
    get_job(store, job_id)   # a clear 404 for an unknown id
    store.cancel(job_id)
    return get_job(store, job_id)


def add_event(store: JobStore, job_id: str, message: str, data: dict | None = None, level: str = "info") -> None:
    store.add_event(job_id, level, message, data)


def events(store: JobStore, job_id: str, limit: int = 1000, after: int | None = None) -> list[JobEvent]:
    """The job's events, newest first (as OpenAI lists them); `after` = only those with a larger seq."""
    return store.events(job_id, limit, after)


def work_dir(job_id: str) -> Path:
    return get_settings().home / "finetune" / job_id


def _data_file(store: JobStore, job_id: str, file_id: str, suffix: str) -> Path:
    path = work_dir(job_id) / f"train{suffix}"
    if not path.exists():
        from brushpen.store import atomic_write_bytes

        atomic_write_bytes(path, store.file_content(file_id))
    return path


def _build_request(family: str, body: dict, data: Path, resume: bool) -> Any:
    cls = request_class(family)
    names = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {k: v for k, v in body["hyperparameters"].items() if k != "auto"}
    values["base"] = body["model"]
    values["out"] = body["suffix"]
    if "data" in names:
        values["data"] = data
    else:   # the detector takes the one zip, with fake/ and real/ folders, as both sources
        values["fake"], values["real"] = data, data
    if "resume" in names:
        values["resume"] = resume
    return cls(**{k: v for k, v in values.items() if k in names})


def run_job(store: JobStore, body: dict) -> tuple[int, dict]:
    """The worker's side: train, streaming events; (status, response) like any batch line."""
    job_id = current_batch_id()
    if job_id is None:
        raise BadParameter("a fine-tuning job runs only inside the job worker")
    family = body["family"]
    attempts = store.attempts(job_id).get(0, 1)
    resume = attempts > 1
    add_event(store, job_id, ("resuming" if resume else "starting") +
              f" a {family} fine-tune of {body['model']} into adapter '{body['suffix']}'")
    data = _data_file(store, job_id, body["training_file"], families.family(family).data_kind)
    req = _build_request(family, body, data, resume)
    finetune = families.family(family).finetune()
    last_write = [0.0]
    lock = threading.Lock()
    # A job that gets further than any earlier attempt is not the kind that stops the server: its
    # attempts start over, so restarts during a long run do not fail it (one that dies at the same
    # point every time still is, after MAX_ATTEMPTS).
    reached = max((e.data.get("step", 0) for e in events(store, job_id) if e.data), default=0)
    further = [False]

    def progress(ev: FinetuneEvent) -> None:
        if store.status(job_id) in ("cancelling", "cancelled"):
            raise Cancelled("cancelled")
        if not further[0] and ev.step > reached:
            further[0] = True
            store.count_as_first_attempt(job_id, 0)
        now = time.monotonic()
        with lock:   # at most ~2 events a second reach the database; the last step always does
            if now - last_write[0] < 0.5 and ev.step < ev.total:
                return
            last_write[0] = now
        add_event(store, job_id, ev.message or f"step {ev.step}/{ev.total}",
                  {"step": ev.step, "total_steps": ev.total, "train_loss": ev.loss, **ev.metrics})

    auto, fed = _auto(body), _federated(body)
    try:
        if fed is not None:
            result = _federate(store, job_id, body, data, fed, resume)
        elif auto is None:
            result = finetune(req, progress)
        else:
            result = _tune(store, job_id, family, req, auto, resume, progress)
    except Cancelled:
        add_event(store, job_id, "cancelled", level="warn")
        return 499, {"error": {"message": "cancelled", "type": "cancelled", "code": None}}
    except BrushpenError as e:
        add_event(store, job_id, scrub_paths(f"failed: {e}"), level="error")
        raise
    add_event(store, job_id, f"done: {'detector' if fed else 'adapter'} {result.ref}",
              {"fine_tuned_model": result.ref})
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float, str, bool))}
    return 200, {"fine_tuned_model": result.ref, "adapter_path": scrub_paths(str(result.path)), "metrics": metrics}


def _tune(store: JobStore, job_id: str, family: str, req: Any, auto: dict, resume: bool, progress) -> Any:
    """An `auto` job: the settings searched within the budget (`generators.tune`), one event per
    finished trial (`data.trial`, the row the studio's live table shows); the study is the job's."""
    from brushpen.adapters import FinetuneResult
    from brushpen.generators.tune import tune

    def on_trial(row: dict) -> None:
        add_event(store, job_id, f"trial {row['trial']}: {row['state']}, value {row['value']}",
                  {"trial": row})

    res = tune(family, req, budget_s=auto["budget_s"], trials=auto["trials"], seed=auto["seed"],
               refit=auto["refit"], study=job_id, resume=resume, progress=progress, on_trial=on_trial)
    add_event(store, job_id, f"best: trial {res.best_trial}, {res.best_value:.4g}",
              {"importances": res.importances, "best_trial": res.best_trial})
    return FinetuneResult(ref=res.ref, path=res.path, metrics={
        "best_value": res.best_value, "best_trial": res.best_trial, "trials": len(res.trials),
        "pruned": sum(r["state"] == "pruned" for r in res.trials),
        "failed": sum(r["state"] == "fail" for r in res.trials), "study": res.study,
        **({"refit_length": res.refit["length"], "refit_value": res.refit["value"],
            "refit_published": res.refit["published"]} if res.refit else {}),
        **{f"best_{k}": v for k, v in res.best_params.items()}})


def _federate(store: JobStore, job_id: str, body: dict, data: Path, fed: dict, resume: bool) -> Any:
    """A federated job: the zip split into `sites` that train a new detector together (each its own
    process); one event per round with the global model's AUC and each site's."""
    from brushpen.adapters import FinetuneResult
    from brushpen.safety.detector_train import model_dir
    from brushpen.safety.federated import LocalConfig
    from brushpen.safety.federated_flower import FederationConfig, state_dir
    from brushpen.safety.federated_sim import simulate
    from brushpen.safety.lora_train import _unpack_zip

    folder = _unpack_zip(data, work_dir(job_id) / "data")
    name = body["suffix"]
    cfg = FederationConfig(out=name, resume=resume and (state_dir(name) / "state.json").exists(),
                           **federation_args(fed))

    def on_round(entry: dict) -> None:
        if store.status(job_id) in ("cancelling", "cancelled"):
            raise Cancelled("cancelled")
        sites = {s: v.get("val_auc") for s, v in entry["sites"].items()}
        central = (entry.get("central") or {}).get("auc")
        add_event(store, job_id, f"round {entry['round']}/{cfg.rounds}: global AUC "
                  + (f"{central:.4f}" if central is not None else "-") + ", "
                  + ", ".join(f"{s} {v:.4f}" for s, v in sites.items() if v is not None)
                  + (f"; rejected {len(entry['rejected'])}" if entry["rejected"] else ""),
                  {"round": entry["round"], "rounds": cfg.rounds, "global_auc": central, "site_auc": sites,
                   "epsilon": entry.get("epsilon")})

    record = simulate(folder, fed["sites"], fed["partition"], cfg, LocalConfig(seed=fed["seed"]), threads=1,
                      log=lambda m: add_event(store, job_id, m), on_round=on_round)
    central = record.get("central") or {}
    return FinetuneResult(ref=name, path=model_dir(name), metrics={
        "global_auc": central.get("auc"), "rounds": record["rounds"], "sites": fed["sites"],
        "partition": fed["partition"], "strategy": fed["strategy"], "epsilon": record["privacy"]["epsilon"],
        "rejected": sum(len(h["rejected"]) for h in record["history"])})


def base_dir(model: str) -> Path:
    """The store folder whose adapters/ holds a base model's adapters (also for the text base,
    whose weights live in the cache but whose adapters live in weights/text/smollm2-135m/)."""
    from brushpen.store import store_root
    from brushpen.text.base import BASE_ALIASES, BASE_NAME
    from brushpen.store import resolve_model

    if model in BASE_ALIASES:
        return store_root() / "text" / BASE_NAME
    return resolve_model(model)


def adapters_of(model: str) -> list[str]:
    """`base:name` of every adapter of a base model."""
    from brushpen.text.base import BASE_ALIASES, BASE_NAME

    folder = base_dir(model)
    base = BASE_NAME if model in BASE_ALIASES else folder.name
    return [f"{base}:{a}" for a in list_adapters(folder)]


def check_training_file(filename: str, data: bytes) -> None:
    """Refuse an unusable fine-tuning upload at once: a .jsonl of JSON objects, or a safe .zip."""
    name = filename.lower()
    if name.endswith(".jsonl"):
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise BadInput(f"'{filename}' is not UTF-8 text: {e}") from None
        # the copywriter trainer's own row checks
        rows = [parse_line(raw, f"line {n} of '{filename}'") for n, raw in enumerate(lines, 1) if raw.strip()]
        if not rows:
            raise BadInput(f"'{filename}' holds no examples")
    elif name.endswith(".zip"):
        check_upload(filename, data)
    else:
        raise BadInput(f"'{filename}': fine-tuning data is a .jsonl (copy examples) or a .zip (images)")
