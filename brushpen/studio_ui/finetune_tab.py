"""The Fine-tune tab: start a LoRA fine-tune from an uploaded zip or JSONL, watch its progress and
loss, and list the adapters it made; or, for the detector, a federated simulation (the zip split
into sites that train one new detector, AUC per round for each site and the global model). Jobs go
into the same job store the API's batch and fine-tuning jobs use, and the server's batch worker runs
them, so a job started here shows up at `GET /v1/fine_tuning/jobs` too and survives a restart of the
studio."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pandas as pd

from brushpen import families
from brushpen.errors import BadInput
from brushpen.generators import finetune_jobs
from brushpen.generators.finetune_jobs import FILE_PURPOSE, FinetuneJobRequest
from brushpen.generators.jobs import JobStore
from brushpen.studio_ui.common import user_errors
from brushpen.studio_ui.i18n import t

# The base each fine-tunable family ships, by its label in the dropdown.
BASES = {f"{fam.label}: {fam.default_model} ({fam.data_help})": fam.default_model
         for fam in (families.family(name) for name in families.finetunable())}
MAX_UPLOAD = 64 << 20
# The words the tab shows for a job's status (the job store's), the same as the API's, so a job
# reads alike in both.
SHOWN_STATUS = {"validating": "validating_files", "in_progress": "running", "finalizing": "running",
                "cancelling": "running", "completed": "succeeded", "failed": "failed", "cancelled": "cancelled",
                "expired": "failed"}


def _store() -> JobStore:
    return JobStore()


@user_errors
def start(base_label: str, upload: str | None, name: str, rank: float, length: float, auto: bool = False,
          budget_min: float = 0, trials: float = 0, federated: bool = False, sites: float = 4,
          partition: str = "iid", rounds: float = 10, local_steps: float = 50, strategy: str = "fedavg",
          dp_noise: float = 0.0):
    if not upload:
        raise BadInput("upload the training data first (a .zip of images or a .jsonl of examples)")
    path = Path(upload)
    if path.stat().st_size > MAX_UPLOAD:
        raise BadInput(f"{path.name} is larger than {MAX_UPLOAD >> 20} MB")
    data = path.read_bytes()
    finetune_jobs.check_training_file(path.name, data)
    model = BASES[base_label]
    family = finetune_jobs.family_of(model)
    hyper = {"rank": int(rank)}
    allowed = finetune_jobs.allowed_hyperparameters(family)
    fam = families.family(family)
    if length and fam.length_field in allowed:
        hyper[fam.length_field] = float(length) if fam.length_is_float else int(length)
    if auto:   # the settings above are the hand-set trial 0; the search tries others within the budget
        hyper["auto"] = {"budget_s": float(budget_min or 0) * 60, **({"trials": int(trials)} if trials else {})}
    if federated:
        if family != "safety":
            raise BadInput("federated training is for the detector: pick the detector as the base model")
        hyper = {"federated": {"sites": int(sites), "partition": partition, "rounds": int(rounds),
                               "local_steps": int(local_steps), "strategy": strategy, "dp_noise": float(dp_noise)}}
    store = _store()
    record = store.add_file(path.name, FILE_PURPOSE, data)
    job = finetune_jobs.create_job(store, FinetuneJobRequest(model, record.id, name.strip(), hyper))
    return job.id, *poll(job.id)


def _plot(job_id: str) -> pd.DataFrame:
    rows = [e.data for e in reversed(finetune_jobs.events(_store(), job_id, limit=5000))
            if e.data and e.data.get("train_loss") is not None]
    return pd.DataFrame({"step": [r["step"] for r in rows], "loss": [r["train_loss"] for r in rows]})


TRIAL_COLUMNS = ["trial", "state", "value", "settings", "seconds", "note"]


def _trials(job_id: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """An auto job's trials so far (table and metric-by-trial plot), and the importances at the end."""
    evs = list(reversed(finetune_jobs.events(_store(), job_id, limit=5000)))
    rows = [e.data["trial"] for e in evs if e.data and isinstance(e.data.get("trial"), dict)]
    table = pd.DataFrame([[r["trial"], r["state"], r["value"], ", ".join(f"{k} {v:.4g}" if isinstance(v, float)
                                                                        else f"{k} {v}" for k, v in r["params"].items()),
                           r["seconds"], r.get("reason") or ""] for r in rows], columns=TRIAL_COLUMNS)
    done = [r for r in rows if r["value"] is not None]
    points = pd.DataFrame({"trial": [r["trial"] for r in done], "value": [r["value"] for r in done]})
    imp = next((e.data["importances"] for e in evs if e.data and "importances" in e.data), None)
    words = ("Importance of each setting (fANOVA): " + ", ".join(f"{k} {v:.2f}" for k, v in imp.items())) if imp else ""
    return table, points, words


def _rounds(job_id: str) -> pd.DataFrame:
    """A federated job's AUC per round: the global model's (on the held-out share) and each site's."""
    rows = []
    for e in reversed(finetune_jobs.events(_store(), job_id, limit=5000)):
        if e.data and "round" in e.data:
            if e.data.get("global_auc") is not None:
                rows.append((e.data["round"], e.data["global_auc"], "global"))
            rows += [(e.data["round"], v, site) for site, v in e.data["site_auc"].items() if v is not None]
    return pd.DataFrame(rows, columns=["round", "auc", "model"])


def poll(job_id: str | None):
    """(status line, loss plot data, recent event log, trials table, metric by trial, AUC by round)."""
    if not job_id:
        return ("", pd.DataFrame({"step": [], "loss": []}), "", pd.DataFrame(columns=TRIAL_COLUMNS),
                pd.DataFrame({"trial": [], "value": []}), pd.DataFrame(columns=["round", "auc", "model"]))
    store = _store()
    job = finetune_jobs.get_job(store, job_id)
    prog = job.progress or {}
    done = f" step {prog.get('step')}/{prog.get('total_steps')}" if prog.get("step") is not None else ""
    status = f"**{job.id}**: {SHOWN_STATUS[job.status]}{done}"
    if job.fine_tuned_model:
        what = "Detector" if "federated" in job.hyperparameters else "Adapter"
        status += f". {what}: `{job.fine_tuned_model}`; use it as the model name anywhere."
    if job.error:
        status += f". Error: {job.error.get('message')}"
    log = "\n".join(e.message for e in reversed(finetune_jobs.events(store, job_id, limit=12)))
    table, points, importances = _trials(job_id) if "auto" in job.hyperparameters else (
        pd.DataFrame(columns=TRIAL_COLUMNS), pd.DataFrame({"trial": [], "value": []}), "")
    if importances:
        status += f". {importances}"
    return status, _plot(job_id), log, table, points, _rounds(job_id)


@user_errors
def cancel(job_id: str | None):
    if job_id:
        finetune_jobs.cancel_job(_store(), job_id)
    return poll(job_id)


def adapters_table() -> list[list[str]]:
    rows = []
    for label, model in BASES.items():
        try:
            rows += [[model, ref] for ref in finetune_jobs.adapters_of(model)]
        except Exception:   # a base missing from this store lists nothing
            continue
    return rows


def build() -> None:
    with gr.Tab(t("Fine-tune"), id="finetune"):
        gr.Markdown("Train a small LoRA adapter on your own data. GAN: a zip of 50-200 images. Copywriter: a "
                    "JSONL of `{\"brief\", \"kind\", \"copy\"}` or `{\"text\"}` rows. Detector: a zip with "
                    "`fake/` and `real/` folders. The job runs in the background; this tab follows it.")
        with gr.Row():
            base = gr.Dropdown(list(BASES), value=list(BASES)[0], label=t("Base model"))
            upload = gr.File(label=t("Training data (.zip or .jsonl)"), file_types=[".zip", ".jsonl"], type="filepath")
        with gr.Row():
            name = gr.Textbox("my-adapter", label=t("Adapter name"), max_lines=1)
            rank = gr.Number(4, label=t("LoRA rank"), precision=0, minimum=1, maximum=64)
            length = gr.Number(0, label=t("Length (GAN kimg / copy steps / detector steps; 0 = default)"), minimum=0)
        with gr.Row():
            auto = gr.Checkbox(False, label=t("Auto: search the settings within a budget"), elem_id="finetune-auto",
                               info="the rank and length above are the hand-set first trial (Optuna, TPE + pruning)")
            budget = gr.Number(10, label=t("Budget (minutes)"), minimum=0.1, elem_id="finetune-budget")
            trials = gr.Number(0, label=t("At most this many trials (0: as the budget allows)"), precision=0,
                               minimum=0, elem_id="finetune-trials")
        with gr.Accordion(t("Federated (detector): sites that keep their images train one detector"), open=False):
            gr.Markdown("The zip is split into sites; each site and the server run as their own process and only "
                        "weights travel (Flower). A fifth of the images is the held-out set that scores the global "
                        "model; the name above names the new detector. See docs/federated.md.")
            with gr.Row():
                federated = gr.Checkbox(False, label=t("Federated"), elem_id="finetune-federated")
                sites = gr.Number(4, label=t("Sites"), precision=0, minimum=1, maximum=finetune_jobs.MAX_SITES)
                partition = gr.Dropdown(["iid", "by-family", "by-source"], value="iid", label=t("Split"),
                                        info="by-family: fake/GENERATOR/ folders dealt to sites")
                strategy = gr.Dropdown(["fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi"], value="fedavg",
                                       label=t("Strategy"))
            with gr.Row():
                rounds = gr.Number(10, label=t("Rounds"), precision=0, minimum=1)
                local_steps = gr.Number(50, label=t("Local steps per round"), precision=0, minimum=1)
                dp_noise = gr.Number(0, label=t("DP noise multiplier (0: off)"), minimum=0)
        with gr.Row():
            go = gr.Button(t("Start fine-tune"), variant="primary")
            stop = gr.Button(t("Cancel"))
        job_id = gr.Textbox(label=t("Job"), interactive=False)
        status = gr.Markdown()
        plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=260)
        log = gr.Textbox(label=t("Events"), lines=6, interactive=False)
        trial_table = gr.Dataframe(headers=TRIAL_COLUMNS, interactive=False, label=t("Trials (Auto)"),
                                   elem_id="finetune-trials-table")
        trial_plot = gr.ScatterPlot(x="trial", y="value", title="Metric by trial (Auto)", height=220)
        round_plot = gr.LinePlot(x="round", y="auc", color="model", title="AUC per round (Federated)", height=240,
                                 elem_id="finetune-rounds")
        adapters = gr.Dataframe(value=adapters_table, headers=["base", "adapter"], interactive=False,
                                label=t("Adapters in the store"))
        timer = gr.Timer(2.0)
        shown = [status, plot, log, trial_table, trial_plot, round_plot]
        go.click(start, [base, upload, name, rank, length, auto, budget, trials, federated, sites, partition, rounds,
                         local_steps, strategy, dp_noise], [job_id, *shown],
                 concurrency_id="light", api_name="start_finetune")
        stop.click(cancel, job_id, shown, concurrency_id="light", api_name="cancel_finetune")
        timer.tick(user_errors(poll), job_id, shown, concurrency_id="poll", show_progress="hidden",
                   api_name="finetune_status")
        timer.tick(adapters_table, None, adapters, concurrency_id="poll", show_progress="hidden",
                   api_name="adapters")
