"""The weight store: listing models with their key metric, atomic writes, unsafe-weight refusal, lookups."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from brushpen.errors import BrokenModel, ModelNotFound, UnsafeWeights
from brushpen.store import (atomic_write_bytes, atomic_write_json, check_safe_weight, list_models,
                            publish_dir, read_metrics, resolve_model, staging_dir, update_metrics)


def make_model(root: Path, family: str, name: str, metrics: dict | None = None,
               weight_bytes: int = 1000) -> Path:
    folder = root / family / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"resolution": 16}', encoding="utf-8")
    (folder / "model.safetensors").write_bytes(b"\0" * weight_bytes)
    if metrics is not None:
        (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    return folder


def test_list_models_reads_family_size_and_key_metric(weights_store: Path) -> None:
    make_model(weights_store, "gan", "emoji16", {"fid": 42.123456, "kimg": 12.5}, weight_bytes=5000)
    make_model(weights_store, "gan", "early", {"kimg": 3})
    make_model(weights_store, "text", "copy", {"val_loss": 1.5, "perplexity": 4.48})
    make_model(weights_store, "safety", "nometrics")
    (weights_store / "gan" / "not_a_model").mkdir()  # no config.json: ignored
    (weights_store / "gan" / "emoji16" / "adapters" / "winter").mkdir(parents=True)

    models = list_models()
    assert [m.ref for m in models] == ["gan/early", "gan/emoji16", "text/copy", "safety/nometrics"]
    by_ref = {m.ref: m for m in models}
    emoji = by_ref["gan/emoji16"]
    assert emoji.family == "gan" and emoji.name == "emoji16"
    expected_size = sum(p.stat().st_size for p in emoji.path.rglob("*") if p.is_file())
    assert emoji.size_bytes == expected_size and emoji.size_bytes > 5000
    assert emoji.metrics == {"fid": 42.123456, "kimg": 12.5}
    assert emoji.key_metric() == "fid=42.12"  # fid wins over kimg for a GAN
    assert emoji.adapters == ["winter"]
    assert by_ref["gan/early"].key_metric() == "kimg=3"
    assert by_ref["text/copy"].key_metric() == "val_loss=1.5"
    assert by_ref["safety/nometrics"].key_metric() == "-"


def test_list_models_of_an_empty_or_missing_store(tmp_path: Path) -> None:
    assert list_models(tmp_path / "nowhere") == []
    assert list_models(tmp_path) == []


def test_broken_metrics_json_is_a_clear_error(weights_store: Path) -> None:
    folder = make_model(weights_store, "gan", "broken")
    (folder / "metrics.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BrokenModel, match="metrics.json"):
        read_metrics(folder)


def test_atomic_write_json_replaces_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.json"
    atomic_write_json(target, {"a": 1, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [1, 2]}
    atomic_write_json(target, {"c": "new"})
    assert json.loads(target.read_text()) == {"c": "new"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]
    assert (target.stat().st_mode & 0o777) == 0o644


def test_atomic_write_failure_keeps_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"ok": True})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})  # not JSON-serializable
    assert json.loads(target.read_text()) == {"ok": True}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json"]


def test_atomic_write_bytes_round_trip(tmp_path: Path) -> None:
    data = bytes(range(256)) * 10
    atomic_write_bytes(tmp_path / "blob.bin", data)
    assert (tmp_path / "blob.bin").read_bytes() == data


@pytest.mark.parametrize("name", ["model.pt", "G.pth", "network.pkl", "w.pickle",
                                  "pytorch_model.bin", "last.ckpt"])
def test_check_safe_weight_refuses_pickles(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeWeights) as err:
        check_safe_weight(tmp_path / name)
    msg = str(err.value)
    assert name in msg and "pickle" in msg and ".safetensors" in msg


@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "net.onnx", "net.onnx.data"])
def test_check_safe_weight_accepts_safe_formats(tmp_path: Path, name: str) -> None:
    assert check_safe_weight(tmp_path / name) == tmp_path / name


def test_check_safe_weight_refuses_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(UnsafeWeights, match="only safetensors"):
        check_safe_weight(tmp_path / "weights.h5")


def test_resolve_model_by_name_family_and_path(weights_store: Path) -> None:
    gan = make_model(weights_store, "gan", "emoji16")
    text = make_model(weights_store, "text", "copy")
    assert resolve_model("emoji16") == gan
    assert resolve_model("emoji16", family="gan") == gan
    assert resolve_model("text/copy") == text
    assert resolve_model(str(gan)) == gan


def test_resolve_model_unknown_names_the_known_models(weights_store: Path) -> None:
    make_model(weights_store, "gan", "emoji16")
    make_model(weights_store, "text", "copy")
    with pytest.raises(ModelNotFound) as err:
        resolve_model("nope")
    msg = str(err.value)
    assert "'nope'" in msg and "gan/emoji16" in msg and "text/copy" in msg
    assert ModelNotFound.http_status == 404
    # Restricted to a family, only that family's models are suggested.
    with pytest.raises(ModelNotFound) as err:
        resolve_model("copy", family="gan")
    assert "gan/emoji16" in str(err.value) and "text/copy" not in str(err.value)


def test_resolve_model_in_an_empty_store(weights_store: Path) -> None:
    with pytest.raises(ModelNotFound, match="none"):
        resolve_model("emoji64")


def test_update_metrics_merges(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    assert update_metrics(folder, kimg=4.0) == {"kimg": 4.0}
    merged = update_metrics(folder, fid=31.5, kimg=8.0)
    assert merged == {"kimg": 8.0, "fid": 31.5}
    assert read_metrics(folder) == {"kimg": 8.0, "fid": 31.5}
    assert sorted(os.listdir(folder)) == ["metrics.json"]


def test_publish_dir_swaps_whole_folders(tmp_path: Path) -> None:
    final = tmp_path / "checkpoint"
    for version in ("v1", "v2"):
        stage = staging_dir(final)
        (stage / "state.json").write_text(version)
        publish_dir(stage, final)
        assert (final / "state.json").read_text() == version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


class SimulatedKill(BaseException):
    """Stands for a SIGKILL: raised at a chosen file operation inside publish_dir."""


def _complete(folder: Path) -> bool:
    return all((folder / name).exists() for name in ("a.json", "b.json", "c.json"))


def _write_version(folder: Path, version: str) -> None:
    for name in ("a.json", "b.json", "c.json"):
        (folder / name).write_text(json.dumps({"version": version}))


@pytest.mark.parametrize("start", ["final", "old_only", "final_and_stale_old"])
def test_publish_dir_survives_a_kill_at_every_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  start: str) -> None:
    """Whatever state earlier kills left, a kill inside publish_dir keeps one complete folder."""
    import shutil

    from brushpen.checkpoint import find_checkpoint

    real_replace, real_rmtree = os.replace, shutil.rmtree
    k = 0
    while True:
        root = tmp_path / f"try{k}"
        final, old = root / "checkpoint", root / ".checkpoint.old"
        root.mkdir()
        if start in ("final", "final_and_stale_old"):
            final.mkdir()
            _write_version(final, "v1")
        if start in ("old_only", "final_and_stale_old"):
            old.mkdir()
            _write_version(old, "v0" if start == "final_and_stale_old" else "v1")
        for folder in (final, old):  # the marker files find_checkpoint looks for
            if folder.exists():
                (folder / "state.json").write_text("{}")
                (folder / "rng.safetensors").write_text("")
        stage = staging_dir(final)
        _write_version(stage, "v2")
        (stage / "state.json").write_text("{}")
        (stage / "rng.safetensors").write_text("")

        calls = 0

        def op(real):
            def wrapped(*args, **kw):
                nonlocal calls
                calls += 1
                if calls == k + 1:
                    if real is real_rmtree:  # a kill half-way through deleting a folder
                        victims = sorted(Path(args[0]).iterdir())
                        for v in victims[: len(victims) // 2]:
                            v.unlink()
                    raise SimulatedKill
                return real(*args, **kw)
            return wrapped

        monkeypatch.setattr(os, "replace", op(real_replace))
        monkeypatch.setattr(shutil, "rmtree", op(real_rmtree))
        try:
            publish_dir(stage, final)
            finished = True
        except SimulatedKill:
            finished = False
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
            monkeypatch.setattr(shutil, "rmtree", real_rmtree)
        found = find_checkpoint(final)
        assert found is not None, f"{start}: kill at file operation {k + 1} left no checkpoint"
        assert _complete(found), f"{start}: kill at file operation {k + 1} left a partial {found.name}"
        version = json.loads((found / "a.json").read_text())["version"]
        assert version in ("v1", "v2"), f"{start}: fell back to a stale copy ({version})"
        if finished:
            assert found == final and version == "v2"
            assert not old.exists()
            break
        k += 1
    assert k >= 2  # at least two distinct kill points were exercised


def test_scrub_paths_hides_the_store_and_home(weights_store: Path, brushpen_home: Path) -> None:
    from brushpen.store import scrub_paths

    text = f"cannot read {weights_store}/gan/x/config.json nor {brushpen_home}/jobs/ft-1/data.zip"
    assert scrub_paths(text) == "cannot read <store>/gan/x/config.json nor <home>/jobs/ft-1/data.zip"
    assert scrub_paths("no paths here") == "no paths here"


# A writer that stages a folder file by file, slowly, then publishes it, `rounds` times, once the parent says go.
_WRITER = """
import json, sys, time
from pathlib import Path
from brushpen.store import publish_dir, staging_dir
final, gate, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
(gate / f"ready-{me}").touch()
while not (gate / "go").exists():
    time.sleep(0.001)
for i in range(3):
    stage = staging_dir(final)
    for name in ("a.json", "b.json", "c.json"):
        (stage / name).write_text(json.dumps({"version": f"{me}.{i}"}))
        time.sleep(0.05)
    publish_dir(stage, final)
"""


def test_processes_staging_and_publishing_one_folder_all_succeed(tmp_path: Path) -> None:
    # Replicas and workers sharing a home convert the text base on first use together; a writer must
    # not sweep away another live writer's staging folder as if a kill had left it.
    from conftest import PYTHON, subprocess_env

    final, gate = tmp_path / "store" / "model", tmp_path / "gate"
    gate.mkdir()
    writers = [f"w{i}" for i in range(6)]
    procs = [subprocess.Popen([PYTHON, "-c", _WRITER, str(final), str(gate), me], env=subprocess_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for me in writers]
    deadline = time.time() + 120
    while not all((gate / f"ready-{me}").exists() for me in writers):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a writer did not start"
        time.sleep(0.01)
    (gate / "go").touch()
    for p, me in zip(procs, writers):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, f"{me}: {err[-600:]}"
    versions = {json.loads((final / n).read_text())["version"] for n in ("a.json", "b.json", "c.json")}
    assert len(versions) == 1 and versions.pop().endswith(".2")   # one writer's whole, last folder
    assert sorted(p.name for p in final.parent.iterdir()) == ["model"]   # nothing staged is left behind


def test_staging_leftovers_of_dead_writers_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    final = tmp_path / "model"
    live = staging_dir(final)                        # this process, still writing
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f".model.staging-{dead.pid}@{socket.gethostname()}-abc123"
    legacy = tmp_path / ".model.staging-k2j4h5"      # named before writers were recorded
    elsewhere = tmp_path / ".model.staging-77@another-host-xyz"   # another machine's, on a shared store
    for d in (gone, legacy, elsewhere):
        d.mkdir()
    staging_dir(final)
    left = {p.name for p in tmp_path.iterdir()}
    assert live.name in left and elsewhere.name in left
    assert gone.name not in left and legacy.name not in left
