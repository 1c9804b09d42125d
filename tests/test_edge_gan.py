"""Edge variants of the GAN generator on a tiny random generator: ONNX parity and dynamic batch,
int8 error bounds, export determinism, the same seed giving the same image on every backend through
`generate_images`, broken or mismatched files as `BrokenModel`, and the API's 400 for a backend a
model does not have (against the real server)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from brushpen.edge import gan
from brushpen.edge.common import available_backends, load_session
from brushpen.errors import BadParameter, BrokenModel
from brushpen.gan.pipeline import StyleGANPipeline
from conftest import tiny_generator


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with `shapes` (tiny class-conditional GAN) exported to fp32, int8 and a 20-step student."""
    root = tmp_path_factory.mktemp("edge-gan") / "weights"
    model = root / "gan" / "shapes"
    StyleGANPipeline(tiny_generator()).save_pretrained(model)
    gan.export(model, int8=True, student=True, student_steps=20)
    return root


@pytest.fixture
def use_store(store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(store))
    monkeypatch.setenv("BRUSHPEN_HOME", str(tmp_path / "home"))
    return store


def model_dir(store: Path) -> Path:
    return store / "gan" / "shapes"


def test_export_writes_every_variant_and_its_report(store: Path) -> None:
    edge = model_dir(store) / "edge"
    assert available_backends(model_dir(store)) == ["torch", "onnx", "onnx-int8", "student"]
    report = json.loads((edge / "report.json").read_text())
    assert report["onnx"]["max_abs_err"] <= 1e-4 and report["student"]["steps"] == 20
    info = json.loads((edge / "model.json").read_text())
    assert [t["name"] for t in info["inputs"]] == ["z", "truncation_psi", "labels"]
    assert info["outputs"][0]["shape"] == ["batch", 3, 16, 16] and info["extra"]["noise_mode"] == "none"
    # Weights live inside the file: no external-data file beside it.
    assert not list(edge.glob("*.data"))
    assert (model_dir(store) / "edge" / "student" / "config.json").exists()
    assert json.loads((edge / "student" / "config.json").read_text())["channels"] == [16, 8, 4]


@pytest.mark.parametrize("batch", [1, 5])
def test_fp32_onnx_matches_torch_at_any_batch(store: Path, batch: int) -> None:
    G = gan.load_generator(model_dir(store))
    sess, _ = load_session(model_dir(store) / "edge" / "model.onnx", threads=1)
    feeds = gan.example_inputs(G, range(100, 100 + batch), psi=0.7)
    out = sess.run(None, feeds)[0]
    assert out.shape == (batch, 3, 16, 16)
    assert np.abs(out - gan.torch_images(G, feeds)).max() <= 1e-4
    # psi is an input: per image ([batch]) as well as shared ([1]).
    feeds["truncation_psi"] = np.linspace(0.2, 1.0, batch).astype(np.float32)
    out = sess.run(None, feeds)[0]
    for i in range(batch):
        one = {k: v[i:i + 1] for k, v in feeds.items()}
        assert np.abs(out[i:i + 1] - gan.torch_images(G, one)).max() <= 1e-4


def test_int8_is_quantized_and_close(store: Path) -> None:
    import onnx

    G = gan.load_generator(model_dir(store))
    edge = model_dir(store) / "edge"
    graph = onnx.load(str(edge / "model.int8.onnx")).graph
    ops = {n.op_type for n in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)
    feeds = gan.example_inputs(G, range(200, 216))
    ref = gan.torch_images(G, feeds)
    sess, _ = load_session(edge / "model.int8.onnx", threads=1)
    err = np.abs(sess.run(None, feeds)[0] - ref)
    # A random toy generator is far rougher than a trained one (emoji64: mean 0.038 on the [-1, 1]
    # scale, where two seeds differ by ~0.5): here an int8 image must lie at most half as far from
    # its fp32 twin as the images of two different seeds lie from each other.
    between_seeds = np.abs(ref - np.roll(ref, 1, axis=0)).mean()
    assert err.mean() <= 0.5 * between_seeds, (err.mean(), between_seeds)
    assert (edge / "model.int8.onnx").stat().st_size < (edge / "model.onnx").stat().st_size


def test_export_is_deterministic(store: Path) -> None:
    G = gan.load_generator(model_dir(store))
    first = gan.onnx_bytes(G)
    assert first == gan.onnx_bytes(gan.load_generator(model_dir(store)))
    assert first == (model_dir(store) / "edge" / "model.onnx").read_bytes()


def test_same_seed_same_image_on_every_backend(use_store: Path) -> None:
    from brushpen.generators.images import ImageRequest, generate_images

    def pixels(backend: str, **kw) -> tuple[np.ndarray, list[dict]]:
        images = generate_images(ImageRequest(model="shapes", n=4, seed=11, backend=backend, **kw))
        return np.stack([np.asarray(i.image, dtype=np.float32) for i in images]), [i.settings for i in images]

    ref, _ = pixels("torch", truncation_psi=0.8)
    onnx_px, settings = pixels("onnx", truncation_psi=0.8)
    assert [s["backend"] for s in settings] == ["onnx"] * 4 and settings[2]["seed"] == 13
    assert np.abs(onnx_px - ref).max() <= 1.0        # uint8 levels: at most a rounding step
    int8_px, _ = pixels("onnx-int8", truncation_psi=0.8)
    assert np.abs(int8_px - ref).mean() < 0.5 * np.abs(ref - np.roll(ref, 1, axis=0)).mean()
    # A class given by name reaches every backend.
    a, _ = pixels("torch", label="flag")
    b, _ = pixels("onnx", label="flag")
    assert np.abs(a - b).max() <= 1.0
    # The student draws the same z and class for a seed: its images are its own pipeline's for that seed.
    stu, settings = pixels("student", truncation_psi=0.8)
    assert settings[0]["backend"] == "student"
    own = StyleGANPipeline.from_pretrained(model_dir(use_store) / "edge" / "student")
    for i in range(4):
        img = own(1, torch.Generator().manual_seed(11 + i), truncation_psi=0.8, noise_mode="none", output_type="np")
        assert np.array_equal(img[0].astype(np.float32), stu[i])
    metrics = json.loads((model_dir(use_store) / "edge" / "student" / "metrics.json").read_text())
    assert metrics["l1_vs_teacher"] < metrics["l1_vs_teacher_start"]   # distillation moved it toward the teacher


def test_backend_refusals(use_store: Path) -> None:
    from brushpen.generators.images import ImageRequest, generate_images

    with pytest.raises(BadParameter, match="unknown backend 'tpu'"):
        generate_images(ImageRequest(model="shapes", seed=1, backend="tpu"))
    with pytest.raises(BadParameter, match="noise"):
        generate_images(ImageRequest(model="shapes", seed=1, backend="onnx", noise_mode="random"))
    with pytest.raises(BadParameter, match="style mixing"):
        generate_images(ImageRequest(model="shapes", seed=1, backend="onnx-int8", mix_seed=2, mix_cutoff=2))


def test_broken_or_mismatched_files_are_broken_model(use_store: Path, monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from brushpen.generators.images import ImageRequest, generate_images

    store = tmp_path / "weights"
    shutil.copytree(use_store, store, symlinks=True)
    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(store))
    edge = model_dir(store) / "edge"
    req = lambda: ImageRequest(model="shapes", seed=3, backend="onnx")  # noqa: E731
    generate_images(req())

    # Truncated: its hash no longer matches the JSON.
    data = (edge / "model.onnx").read_bytes()
    (edge / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BrokenModel, match="sha256"):
        generate_images(req())
    # Corrupt bytes whose hash the JSON vouches for: onnxruntime's refusal becomes BrokenModel.
    meta = json.loads((edge / "model.json").read_text())
    meta["sha256"] = gan.sha256_file(edge / "model.onnx")
    (edge / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BrokenModel, match="onnxruntime cannot load"):
        generate_images(req())
    # A valid graph whose JSON describes other inputs.
    (edge / "model.onnx").write_bytes(data)
    meta["sha256"] = gan.sha256_file(edge / "model.onnx")
    meta["inputs"] = meta["inputs"][:2]
    (edge / "model.json").write_text(json.dumps(meta))
    with pytest.raises(BrokenModel, match="description says"):
        generate_images(req())
    # Not JSON at all.
    (edge / "model.json").write_text("{not json")
    with pytest.raises(BrokenModel, match="not a valid edge description"):
        generate_images(req())


@pytest.mark.slow   # starts the real server: ~15 s alone, 45 s on a loaded box
def test_api_unavailable_backend_is_400(tmp_path: Path) -> None:
    from api_server import Server, make_home, make_store

    store = make_store(tmp_path)   # `shapes` without any edge/ folder
    srv = Server(make_home(tmp_path), store)
    srv.start()
    try:
        url = srv.url + "/v1/images/generations"
        r = httpx.post(url, json={"model": "shapes", "seed": 1, "backend": "onnx-int8"}, timeout=60)
        assert r.status_code == 400, r.text
        assert "not available for this model" in r.json()["error"]["message"]
        r = httpx.post(url, json={"model": "shapes", "seed": 1, "backend": "gpu"}, timeout=60)
        assert r.status_code == 400 and "unknown backend 'gpu'" in r.json()["error"]["message"]
        # Exported while the server runs: the backend is there on the next request.
        gan.export(store / "gan" / "shapes")
        r = httpx.post(url, json={"model": "shapes", "seed": 1, "backend": "onnx"}, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        srv.stop()
    assert "Traceback" not in srv.server_log()
