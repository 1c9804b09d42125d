"""Edge variants of the detector: the fp32 ONNX scoring graph matches torch (1e-4 on probabilities)
at any batch size, int8 keeps the AUC on a fixture, exports are byte-identical, broken graphs give
BrokenModel, the student is a working detector, and the checker (service, CLI, real API server)
serves every backend with torch's verdicts.

Fixtures: `test_detector`'s synthetic set (1/f textures vs up-sampled fakes), a TINY detector
trained on it for a few steps (not to saturation, so int8 has room to differ), and the shipped
detector copied into a private store.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from brushpen.edge.common import available_backends, load_session
from brushpen.edge.detector import export, load_backend
from brushpen.edge.detector_graph import OnnxDetector, onnx_bytes
from brushpen.errors import BadParameter, BrokenModel
from brushpen.safety.detector import load_detector, save_detector, score_image, to_tensor
from test_detector import TINY, fake_of, make_fixture, texture

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "weights" / "safety" / "detector"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A TINY detector trained 30 steps on the fixture, exported with int8 and a 20-step student."""
    from brushpen.safety.detector_train import TrainConfig, train_detector

    root = tmp_path_factory.mktemp("edge-det")
    real, fakes = make_fixture(root / "data", {"train": 48, "val": 24, "test": 32})
    model_dir = root / "weights" / "safety" / "detector"
    train_detector(TrainConfig(out=model_dir, real=[real], fake=[fakes], steps=30, batch=32, snap=30, model=TINY,
                               progress=False), log=lambda m: None)
    stages: list[str] = []
    report = export(model_dir, int8=True, student=True, student_minutes=None, student_steps=20,
                    progress=lambda stage, frac: stages.append(stage))
    return {"root": root, "store": root / "weights", "model": model_dir, "report": report, "stages": stages}


def test_fp32_graph_matches_torch_at_any_batch(tiny: dict) -> None:
    rep = tiny["report"]["onnx"]
    assert rep["max_abs_err_prob"] < 1e-4 and rep["max_abs_err_logit"] < 1e-3, rep
    assert rep["parity_patches"] == 64                          # the fixture's whole test split
    model = load_detector(tiny["model"])
    graph = load_backend(tiny["model"], "onnx", model)
    rng = np.random.default_rng(5)
    for batch in (1, 3, 33):                                    # dynamic batch, never seen at export
        patches = rng.integers(0, 256, (batch, 64, 64, 3), dtype=np.uint8)
        out = graph.run(patches)
        logit, where = model(to_tensor(patches))
        assert out["probability"].shape == (batch,) and out["region_probability"].shape == (batch, 1, 16, 16)
        assert np.abs(out["probability"] - model.calibration.probability(logit.detach().numpy())).max() < 1e-4
        assert np.abs(out["region_logit"] - where.detach().numpy()).max() < 1e-3
        heat = model.calibration.probability(where.detach().numpy())
        assert np.abs(out["region_probability"] - heat).max() < 1e-4
    # The graph's JSON carries what a caller needs besides the tiles.
    info = json.loads((tiny["model"] / "edge" / "model.json").read_text())
    assert info["inputs"][0] == {"name": "patches", "dtype": "uint8", "shape": ["batch", 64, 64, 3]}
    assert info["extra"]["tile"] == 64
    assert info["extra"]["calibration"]["temperature"] == pytest.approx(model.calibration.temperature)
    assert info["extra"]["calibration"]["t_fake"] == pytest.approx(model.calibration.t_fake)


def test_int8_keeps_the_auc_and_shrinks_the_file(tiny: dict) -> None:
    rep = tiny["report"]
    assert rep["onnx"]["auc"] > 0.6, rep["onnx"]
    assert rep["onnx"]["auc"] == pytest.approx(rep["torch"]["auc"], abs=1e-6)
    assert abs(rep["onnx-int8"]["auc"] - rep["onnx"]["auc"]) <= 0.02, rep
    assert rep["onnx-int8"]["mean_abs_err_prob"] < 0.03 and rep["onnx-int8"]["max_abs_err_logit"] < 0.5, rep
    assert rep["onnx-int8"]["size_bytes"] < 0.5 * rep["onnx"]["size_bytes"]
    info = json.loads((tiny["model"] / "edge" / "model.int8.json").read_text())
    assert "QDQ" in info["quantization"] and info["variant"] == "onnx-int8"
    import onnx

    ops = {n.op_type for n in onnx.load(str(tiny["model"] / "edge" / "model.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    report_md = (tiny["model"] / "edge" / "report.md").read_text()
    assert "onnx-int8" in report_md and "student-onnx" in report_md


def test_export_is_deterministic(tiny: dict) -> None:
    from brushpen.edge.detector import calibration_patches, training_samples
    from brushpen.edge.detector_graph import quantize_bytes

    model = load_detector(tiny["model"])
    first = onnx_bytes(model)
    assert onnx_bytes(model) == first
    calib = calibration_patches(training_samples(tiny["model"]))
    assert quantize_bytes(first, calib)[0] == quantize_bytes(first, calib)[0]


def test_student_is_a_calibrated_detector_and_a_backend(tiny: dict) -> None:
    sdir = tiny["model"] / "edge" / "student"
    student, teacher = load_detector(sdir), load_detector(tiny["model"])
    assert student.config.widths == tuple(w // 2 for w in TINY.widths)
    assert student.num_params() < teacher.num_params() / 2.5
    assert student.calibration.rule != "uncalibrated" and (sdir / "card.md").exists()
    record = json.loads((sdir / "distill.json").read_text())
    assert record["steps"] == 20 and record["threads"] == 1
    rep = tiny["report"]
    assert rep["student"]["params"] == student.num_params() and rep["student"]["mmacs_per_patch"] < \
        rep["torch"]["mmacs_per_patch"] / 2
    assert rep["student-onnx"]["max_abs_err_prob"] < 1e-4
    assert set(available_backends(tiny["model"])) == {"torch", "onnx", "onnx-int8", "student"}
    assert any("distil" in s for s in tiny["stages"]) and tiny["stages"][-1] == "done"


def test_broken_or_mismatched_graphs_raise_broken_model(tiny: dict, tmp_path: Path) -> None:
    model_dir = tmp_path / "detector"
    shutil.copytree(tiny["model"], model_dir)
    edge = model_dir / "edge"
    teacher = load_detector(model_dir)
    data = (edge / "model.onnx").read_bytes()
    (edge / "model.onnx").write_bytes(data[: len(data) // 2])              # truncated
    with pytest.raises(BrokenModel, match="sha256"):
        load_backend(model_dir, "onnx", teacher)
    with pytest.raises(BrokenModel, match="onnxruntime cannot load"):
        load_session(edge / "model.onnx", check_hash=False)
    (edge / "model.int8.onnx").write_bytes(data)                            # swapped in from another export
    with pytest.raises(BrokenModel, match="does not match"):
        load_backend(model_dir, "onnx-int8", teacher)
    (edge / "student.json").unlink()                                        # description gone
    with pytest.raises(BrokenModel, match="no student.json"):
        load_session(edge / "student.onnx")
    # A graph for another tile size, with a consistent JSON: caught by its shape, not by a crash.
    from brushpen.safety.detector import Calibration, Detector, DetectorConfig

    other = Detector(DetectorConfig(widths=(8,), strides=(1,), tile=32), Calibration())
    from brushpen.edge.detector import write_graph

    path = write_graph(other, onnx_bytes(other), edge, "model.onnx", "onnx", "x", "0")
    with pytest.raises(BrokenModel, match="not a detector graph for 64px"):
        OnnxDetector(path, teacher.config, teacher.calibration)
    with pytest.raises(BadParameter, match="unknown backend"):
        load_backend(model_dir, "tensorrt", teacher)
    # The weights retrained after the export: the graphs are stale, and say so.
    shutil.copytree(tiny["model"] / "edge", edge, dirs_exist_ok=True)
    assert load_backend(model_dir, "onnx", teacher).info.variant == "onnx"
    with torch.no_grad():
        teacher.fc.bias += 1.0
    save_detector(teacher, model_dir)
    with pytest.raises(BrokenModel, match="other weights"):
        load_backend(model_dir, "onnx-int8", teacher)


def _images(rng: np.random.Generator) -> dict[str, bytes]:
    out = {}
    for i, (w, h) in enumerate([(64, 64), (150, 100), (40, 48), (128, 128)]):
        base = texture(rng, max(w, h)).crop((0, 0, w, h))
        im = base if i % 2 == 0 else fake_of(texture(rng), i % 2).resize((w, h), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="PNG" if i < 3 else "JPEG", quality=90)
        out[f"img{i}.{'png' if i < 3 else 'jpg'}"] = buf.getvalue()
    return out


@pytest.fixture(scope="module")
def shipped_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped detector in a private store, exported (fp32) there: no data needed for that."""
    store = tmp_path_factory.mktemp("shipped") / "weights"
    dst = store / "safety" / "detector"
    dst.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(SHIPPED / name, dst / name)
    export(dst)
    return store


def test_checker_scores_the_same_on_torch_and_onnx(shipped_store: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from brushpen.cli.main import main
    from brushpen.generators import checker

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(shipped_store))
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in _images(np.random.default_rng(6)).items():
        (folder / name).write_bytes(data)
    runs = {b: list(checker.scan_paths([folder], heatmaps_dir=tmp_path / b, backend=b)) for b in ("torch", "onnx")}
    for t, o in zip(runs["torch"], runs["onnx"]):
        assert t.error is None and t.path == o.path and t.tiles == o.tiles
        assert t.verdict == o.verdict and abs(t.score - o.score) < 1e-4, (t, o)
        diff = np.abs(np.asarray(Image.open(t.heatmap), float) - np.asarray(Image.open(o.heatmap), float))
        assert diff.max() <= 1, t.path                               # overlays equal up to PNG rounding
    assert {r.tiles for r in runs["torch"]} == {1, 2, 4}
    # The CLI's --backend is the same service.
    assert main(["detect", str(folder), "--backend", "onnx", "--json", str(tmp_path / "r.json"), "--quiet"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["score"] for r in report["results"]] == [r.score for r in runs["onnx"]]
    assert main(["detect", str(folder), "--backend", "onnx-int8"]) == 2
    assert "not available" in capsys.readouterr().err


@pytest.mark.skipif(not (SHIPPED / "edge" / "model.onnx").exists(), reason="the shipped detector is not exported")
def test_committed_variants_load_and_agree_with_torch() -> None:
    teacher = load_detector(SHIPPED)
    rng = np.random.default_rng(8)
    image = texture(rng, 128)
    ref = score_image(teacher, image, heatmap=True)
    assert {"onnx", "onnx-int8", "student"} <= set(available_backends(SHIPPED))
    for backend in available_backends(SHIPPED):
        s = score_image(load_backend(SHIPPED, backend, teacher), image, heatmap=True)
        assert s.heatmap.shape == ref.heatmap.shape and 0 <= s.probability <= 1 and s.tiles == 4
        if backend == "onnx":
            assert abs(s.probability - ref.probability) < 1e-4
        elif backend == "onnx-int8":   # int8 approximates the teacher's logit; the student is its own model
            assert abs(s.logit - ref.logit) < 1.5, (s.logit, ref.logit)


def test_api_backend_field(tiny: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """`backend` on POST /v1/detections (the real app in-process, as test_edge_lm does: a server
    process costs 36 s to start on this loaded box): onnx gives torch's verdicts, the student
    answers over multipart, and an unknown or not-exported backend is a 400 that says why."""
    import base64

    from fastapi.testclient import TestClient

    from brushpen.api.app import ApiSettings, create_app

    shutil.copytree(tiny["model"], tiny["store"] / "safety" / "plain", ignore=shutil.ignore_patterns("edge"))
    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(tiny["store"]))
    images = [{"name": n, "b64_json": base64.b64encode(d).decode()} for n, d in
              _images(np.random.default_rng(9)).items()]
    with TestClient(create_app(ApiSettings(batch_worker=False))) as client:
        bodies = {b: client.post("/v1/detections", json={"images": images, "backend": b}) for b in ("torch", "onnx")}
        assert all(r.status_code == 200 for r in bodies.values()), bodies["onnx"].text
        torch_rows, onnx_rows = bodies["torch"].json()["data"], bodies["onnx"].json()["data"]
        assert bodies["onnx"].json()["backend"] == "onnx"
        assert [r["verdict"] for r in torch_rows] == [r["verdict"] for r in onnx_rows]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(torch_rows, onnx_rows)) < 1e-4
        r = client.post("/v1/detections", files=[("file", ("a.png", base64.b64decode(images[0]["b64_json"])))],
                        data={"backend": "student", "heatmaps": "true"})
        assert r.status_code == 200 and r.json()["data"][0]["heatmap_b64"], r.text
        bad = client.post("/v1/detections", json={"images": images[:1], "backend": "onnx", "model": "plain"})
        assert bad.status_code == 400 and "not available" in bad.text and "brushpen export" in bad.text, bad.text
        bad = client.post("/v1/detections", json={"images": images[:1], "backend": "gpu"})
        assert bad.status_code == 400 and "unknown backend" in bad.text, bad.text


def test_checker_tab_backend_dropdown(shipped_store: Path, brushpen_home: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The Checker tab's Backend dropdown reaches the service: onnx rows equal torch's; a bad choice is
    a message (gr.Error), not a traceback."""
    import gradio as gr

    from brushpen.studio_ui import checker_tab

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(shipped_store))
    files = []
    for name, data in list(_images(np.random.default_rng(10)).items())[:2]:
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    rows = {b: checker_tab._check(files, False, b)[0] for b in ("torch", "onnx")}
    assert [r[:2] for r in rows["torch"]] == [r[:2] for r in rows["onnx"]]
    assert all(abs(a[2] - b[2]) < 1e-4 for a, b in zip(rows["torch"], rows["onnx"]))
    with pytest.raises(gr.Error, match="not available"):
        checker_tab._check(files, False, "student")
    with gr.Blocks() as demo:
        checker_tab.build()
    dropdown = next(c for c in demo.config["components"] if c.get("props", {}).get("elem_id") == "checker-backend")
    assert [c[0] for c in dropdown["props"]["choices"]] == ["torch", "onnx"]    # what this store's detector has
