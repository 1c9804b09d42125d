"""AutoML (`brushpen/generators/tune.py`, `brushpen tune`): a real tiny study on the tiny detector of
test_detector_lora (2-4 trials of 20 steps each) that publishes the best adapter with the study in
its card, resumes after a kill, shares one study between two processes, records a failing trial and
goes on, and refuses a budget too small for one trial; and a `detector-train` study that trains
whole detectors from scratch on the same tiny data."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image
from test_detector_lora import env, setup  # noqa: F401 -- the tiny detector, its data, a private store

from brushpen.adapters import list_adapters
from brushpen.errors import BadParameter
from brushpen.generators.tune import show, tune
from brushpen.safety.lora_train import DetectorFinetuneRequest
from conftest import PYTHON, subprocess_env

FLAGS = ["--steps", "20", "--snap", "10", "--batch", "16", "--count", "20", "--replay", "0.25",
         "--replay-count", "40", "--threads", "1"]


def request(env: dict, out: str, lr: float = 5e-3) -> DetectorFinetuneRequest:
    return DetectorFinetuneRequest(fake=env["new_fake"], real=env["new_real"], out=out, rank=4, steps=20, batch=16,
                                   lr=lr, count=20, replay=0.25, replay_count=40, snap=10)


def cli(env: dict, *args: str) -> list[str]:
    return [PYTHON, "-m", "brushpen.cli.main", "tune", "detector", "--fake", str(env["new_fake"]),
            "--real", str(env["new_real"]), *FLAGS, *args]


def finished(db: Path) -> int:
    """Finished trials; 0 while Optuna is still creating the study's tables in a new file."""
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from trials where state in ('COMPLETE', 'PRUNED', 'FAIL')"
                               ).fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def running(db: Path) -> bool:
    """A trial after the first is running and has reported a validation AUC: a kill now cuts it."""
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from trials t join trial_intermediate_values v on "
                           "v.trial_id = t.trial_id where t.state = 'RUNNING' and t.number >= 1").fetchone()[0] > 0


def test_a_tiny_study_publishes_the_best_adapter_with_its_card(env: dict) -> None:
    rows: list[dict] = []
    result = tune("detector", request(env, "near"), budget_s=600, trials=4, seed=0, refit=0, on_trial=rows.append)
    assert [r["trial"] for r in rows] == [0, 1, 2, 3]
    # trial 0 is the hand-set request, enqueued
    assert rows[0]["params"] == {"lr": 5e-3, "rank": 4, "replay": 0.25, "loc_weight": 0.5}
    done = [r for r in rows if r["state"] == "complete"]
    assert result.best_value == max(r["value"] for r in done) and result.ref == "detector:near"
    # published like any fine-tune, the trials' own adapters gone
    assert list_adapters(env["base"]) == ["near"]
    card = (result.path / "card.md").read_text()
    assert "## Tuning" in card and "Optuna study `near`" in card and "| 0 | complete |" in card
    tuning = json.loads((result.path / "metrics.json").read_text())["tuning"]
    assert tuning["best_trial"] == result.best_trial and len(tuning["trials"]) == 4 and tuning["seed"] == 0
    info = show("near")
    assert len(info["trials"]) == 4 and info["family"] == "safety" and info["knobs"][0] == "lr"
    # the same name again needs --resume
    with pytest.raises(BadParameter, match="--resume"):
        tune("detector", request(env, "near"), budget_s=600, trials=4)


def test_a_failing_trial_is_recorded_and_the_search_goes_on(env: dict) -> None:
    rows: list[dict] = []
    result = tune("detector", request(env, "broken", lr=1e30), budget_s=600, trials=3, seed=0, on_trial=rows.append)
    assert rows[0]["state"] == "fail" and "not finite" in rows[0]["reason"]
    assert [r["state"] for r in rows[1:]] == ["complete", "complete"] and result.best_trial in (1, 2)
    # the refit (half the budget by default): the best settings again, for 16x the steps
    assert result.refit["field"] == "steps" and result.refit["length"] == 320 and result.refit["factor"] == 16
    card = (result.path / "card.md").read_text()
    assert ("## Refit" in card) == result.refit["published"]
    assert not [a for a in list_adapters(env["base"]) if a.startswith("broken.")]   # no trial or refit left


def test_a_budget_too_small_for_one_trial_is_refused(env: dict) -> None:
    with pytest.raises(BadParameter, match=r"needs about 23 s"):
        tune("detector", request(env, "tiny"), budget_s=5)


def test_the_copy_recipe_fits_a_ten_minute_budget() -> None:
    """The shipped `taglines` recipe (40 steps of batch 8) takes about 5 minutes on one thread, so a
    10-minute tune of it is accepted and a 2-minute one refused, saying what it needs."""
    from brushpen.generators.tune import check_budget, space_of
    from brushpen.text.lora import TextFinetuneRequest

    taglines = TextFinetuneRequest(data="pairs.jsonl", out="t", rank=8, lr=1e-3, max_steps=40)
    check_budget(space_of("text"), taglines, 600)
    with pytest.raises(BadParameter, match=r"needs about \d+ s on one thread \(max_steps 40\)"):
        check_budget(space_of("text"), taglines, 120)


def test_a_killed_tune_resumes_and_reruns_the_running_trial(env: dict, tmp_path: Path) -> None:
    run_env = subprocess_env(BRUSHPEN_WEIGHTS=str(env["store"]), BRUSHPEN_HOME=os.environ["BRUSHPEN_HOME"])
    db = Path(os.environ["BRUSHPEN_HOME"]) / "studies" / "kill.db"
    proc = subprocess.Popen(cli(env, "--out", "kill", "--budget", "10m", "--trials", "3", "--heartbeat", "1"),
                            env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (db.exists() and finished(db) >= 1 and running(db)):
        time.sleep(0.05)
    assert db.exists() and running(db), proc.stderr.read() if proc.poll() is not None else "too slow"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = finished(db)
    time.sleep(4)   # past the grace period of 3 heartbeats: the running trial is stale
    out = subprocess.run(cli(env, "--out", "kill", "--budget", "10m", "--trials", "4", "--heartbeat", "1",
                             "--resume"), env=run_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["adapter"] == "detector:kill" and result["trials"] >= 4
    with sqlite3.connect(db) as con:
        states = dict(con.execute("select number, state from trials").fetchall())
        retried = con.execute("select count(*) from trial_system_attributes where key = 'failed_trial'").fetchone()[0]
    # the killed trial was failed as stale, and queued again with its settings; finished ones kept
    assert before <= sum(s in ("COMPLETE", "PRUNED") for s in states.values()) and retried >= 1, (states, out.stderr)
    assert list(states.values()).count("FAIL") == 1   # the killed one, which its retry replaced


def test_two_workers_share_one_study(env: dict, tmp_path: Path) -> None:
    run_env = subprocess_env(BRUSHPEN_WEIGHTS=str(env["store"]), BRUSHPEN_HOME=os.environ["BRUSHPEN_HOME"])
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    # started together; the first to arrive makes the study, the other joins it (--resume)
    args = ["--out", "shared", "--budget", "10m", "--trials", "6", "--storage", url, "--study", "shared", "--resume"]
    # one worker refits the best settings at the end; the other only searches (--refit 0)
    workers = [subprocess.Popen(cli(env, *args, "--seed", str(seed), "--refit", refit) + ["--steps", "40"],
                                env=run_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for seed, refit in ((0, "0.5"), (1, "0"))]
    for p in workers:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    info = show("shared", url)
    numbers = [r["trial"] for r in info["trials"]]
    assert len(numbers) == len(set(numbers)) >= 6
    with sqlite3.connect(tmp_path / "shared.db") as con:
        workers = {json.loads(v) for (v,) in con.execute(
            "select value_json from trial_user_attributes where key = 'worker'")}
    assert len(workers) == 2, workers   # both processes completed trials of their own


def test_auto_jobs_are_checked_up_front(env: dict) -> None:
    """The API's and the studio's way in: a fine-tuning job with hyperparameters {"auto": {...}}."""
    from brushpen.generators.finetune_jobs import FinetuneJobRequest, create_job
    from brushpen.generators.jobs import JobStore

    store = JobStore()
    record = store.add_file("mine.zip", "fine-tune", b"PK\x05\x06" + b"\0" * 18)
    for auto, match in (({"budget_s": 5}, "too small"), ({"budget": 60}, "auto takes"),
                        ({"budget_s": 60, "trials": 0}, "trials must be"), ("60", "auto takes")):
        with pytest.raises(BadParameter, match=match):
            create_job(store, FinetuneJobRequest("detector", record.id, "auto", {"steps": 20, "auto": auto}))
    job = create_job(store, FinetuneJobRequest("detector", record.id, "auto", {"steps": 20,
                                                                                "auto": {"budget_s": 60, "trials": 2}}))
    assert job.hyperparameters["auto"] == {"budget_s": 60, "trials": 2} and job.status in ("validating", "in_progress")


def test_a_raising_progress_callback_stops_the_search(env: dict) -> None:
    """A job's cancel raises from the progress callback: the search stops and the error reaches the caller."""
    class Stop(Exception):
        pass

    def progress(ev) -> None:
        if ev.metrics.get("trial") == 1:
            raise Stop("cancelled")

    with pytest.raises(Stop):
        tune("detector", request(env, "stopped"), budget_s=600, trials=4, progress=progress)
    info = show("stopped")
    assert [(r["trial"], r["state"]) for r in info["trials"]] == [(0, "complete"), (1, "pruned")]
    assert info["trials"][1]["reason"] == "cancelled"


def test_a_trial_whose_budget_runs_out_at_its_last_event_is_kept(env: dict) -> None:
    """The budget running out at a trial's final event (its work done, its adapter perhaps written)
    no longer prunes it: it completes, and no trial adapter is left in the store."""
    budget, first = 40.0, []

    def progress(ev) -> None:   # trial 1's last event arrives only after the budget is spent
        first.append(first[0] if first else time.monotonic())   # the tune's clock started before this
        if ev.metrics.get("trial") == 1 and ev.step == ev.total:
            time.sleep(max(0.0, first[0] + budget + 0.5 - time.monotonic()))

    rows: list[dict] = []
    tune("detector", request(env, "late"), budget_s=budget, trials=2, refit=0, progress=progress,
         on_trial=rows.append)
    assert [(r["trial"], r["state"]) for r in rows] == [(0, "complete"), (1, "complete")], rows
    assert [a for a in list_adapters(env["base"]) if a.startswith("late")] == ["late"]


def test_publish_removes_a_stopped_trials_leftover_adapter(env: dict) -> None:
    """A trial stopped after writing its adapter has no recorded path; publishing still removes the
    adapter it left (`<out>.t<N>`), as it removes every finished trial's."""
    import shutil

    import optuna

    from brushpen.generators.tune_publish import load_study

    result = tune("detector", request(env, "left"), budget_s=600, trials=1, refit=0)
    st = load_study("left")
    first = st.trials[0]
    st.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params=first.params,
                                           distributions=first.distributions,
                                           user_attrs={"reason": "the budget ran out"}))
    shutil.copytree(result.path, result.path.parent / "left.t1")   # what such a trial leaves behind
    assert [a for a in list_adapters(env["base"]) if a.startswith("left")] == ["left", "left.t1"]
    again = tune("detector", request(env, "left"), budget_s=600, trials=2, refit=0, resume=True)
    assert again.best_trial == 0 and [a for a in list_adapters(env["base"]) if a.startswith("left")] == ["left"]


def test_detector_train_tunes_a_whole_detector_into_the_store(env: dict) -> None:
    """`brushpen tune detector-train`: trials train detectors from scratch (width, augmentation, lr,
    localisation weight); the best is published as a servable model, never over one it did not make."""
    from brushpen.generators.checker import check_images
    from brushpen.safety.detector import load_detector

    run_env = subprocess_env(BRUSHPEN_WEIGHTS=str(env["store"]), BRUSHPEN_HOME=os.environ["BRUSHPEN_HOME"])
    old = env["root"] / "old"
    base = [PYTHON, "-m", "brushpen.cli.main", "tune", "detector-train", "--fake", str(old / "fakes"), "--real",
            str(old / "real"), "--steps", "20", "--snap", "10", "--batch", "16", "--threads", "1"]
    stale = env["store"] / "safety" / "scratch.t2" / "checkpoint"   # as a pruned trial leaves it
    stale.mkdir(parents=True)
    out = subprocess.run(base + ["--out", "scratch", "--budget", "5m", "--trials", "3", "--refit", "0.2"],
                         env=run_env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["model"] == "scratch" and result["trials"] == 3 and 0.5 <= result["val_auc"] <= 1.0
    assert "validation AUC" in out.stderr   # the pruner's figure, at every checkpoint
    folder = env["store"] / "safety" / "scratch"
    assert sorted(p.name for p in (env["store"] / "safety").iterdir() if not p.name.startswith(".")) == \
        ["detector", "scratch"]   # the trials' own models are gone
    assert not (folder / "checkpoint").exists()
    model = load_detector(folder)
    widths = {1.0: (24, 32, 32, 64, 64), 0.5: (12, 16, 16, 32, 32), 0.75: (18, 24, 24, 48, 48),
              1.5: (36, 48, 48, 96, 96)}[result["params"]["width"]]
    assert model.config.widths == widths and model.calibration.rule != "uncalibrated"
    card = (folder / "card.md").read_text()
    assert card.startswith("# scratch:") and "## Tuning" in card and "scratch.t" not in card.split("## Tuning")[0]
    images, _ = env["test"]
    pngs = []
    for i, image in enumerate(images[:4]):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        pngs.append((f"{i}.png", buf.getvalue()))
    verdicts = check_images(pngs, model="scratch", scope_gate=False)   # served by name, like any detector
    assert len(verdicts) == 4 and all(v.error is None and 0.0 <= v.score <= 1.0 for v in verdicts)
    info = show("scratch")
    assert info["knobs"] == ["lr", "width", "augment", "loc_weight"] and info["trials"][0]["params"]["width"] == 1.0
    # the shipped (here: the tiny) detector is never replaced
    refused = subprocess.run(base + ["--out", "detector", "--budget", "5m"], env=run_env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "already holds a model 'detector'" in refused.stderr
    assert (env["base"] / "model.safetensors").exists()
