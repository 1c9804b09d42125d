"""The deepfake checker: the detector learns a fixture set (AUC asserted), calibration and bands,
the metrics, every bad-file kind in a scan, the JSON and CSV reports, provenance read-back, the
CLI and `POST /v1/detections` against the real server.

The fixture: "real" 64x64 textures with a 1/f spectrum (like photos) against "fakes" made from
other such textures by 2x down-sampling and up-sampling (bilinear, or a transposed-conv-like
nearest + 3x3 smoothing), all stored as PNG alike. A small detector trains on it in ~15 s.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, PngImagePlugin

from brushpen.safety.calibrate import average_precision, calibrate, roc_auc, threshold_at_fpr
from brushpen.safety.detector import DetectorConfig, load_detector

TINY = DetectorConfig(widths=(16, 24, 32), strides=(1, 2, 2))


def texture(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A colour texture with a 1/f amplitude spectrum: photo-like statistics, no up-sampling trace."""
    f = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2
    amp = 1.0 / np.maximum(np.sqrt(f), 1.0 / size) ** rng.uniform(0.8, 1.2)
    chans = []
    for _ in range(3):
        spec = amp * np.exp(2j * np.pi * rng.random((size, size)))
        chans.append(np.real(np.fft.ifft2(spec)))
    arr = np.stack(chans, -1)
    arr = (arr - arr.mean()) / (arr.std() + 1e-8) * rng.uniform(25, 50) + rng.uniform(80, 170, 3)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def fake_of(im: Image.Image, kind: int) -> Image.Image:
    small = im.resize((32, 32), Image.BICUBIC)
    if kind == 0:
        return small.resize((64, 64), Image.BILINEAR)
    return small.resize((64, 64), Image.NEAREST).filter(ImageFilter.SMOOTH)


def make_fixture(root: Path, counts: dict[str, int]) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for split, n in counts.items():
        for i in range(n):
            d = root / "real" / split
            d.mkdir(parents=True, exist_ok=True)
            texture(rng).save(d / f"r{i:04d}.png")
            fam = ("bilinear", "nearest")[i % 2]
            d = root / "fakes" / fam / split
            d.mkdir(parents=True, exist_ok=True)
            fake_of(texture(rng), i % 2).save(d / f"f{i:04d}.png")
    return root / "real", root / "fakes"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from brushpen.safety.detector_train import TrainConfig, train_detector

    root = tmp_path_factory.mktemp("det")
    real, fakes = make_fixture(root / "data", {"train": 160, "val": 60, "test": 60})
    store = root / "weights"
    out = store / "safety" / "detector"
    train_detector(TrainConfig(out=out, real=[real], fake=[fakes], steps=150, batch=32, snap=75, model=TINY,
                               progress=False), log=lambda m: None)
    return {"root": root, "real": real, "fakes": fakes, "store": store, "model": out}


def test_detector_beats_chance_on_the_fixture(trained: dict) -> None:
    from brushpen.safety.detector_data import gather
    from brushpen.safety.detector_eval import evaluate

    model = load_detector(trained["model"])
    rows = evaluate(model, gather([trained["real"]], [trained["fakes"]]), settings=("in-distribution",),
                    progress=False)
    by_family = {r["family"]: r for r in rows}
    assert set(by_family) == {"bilinear", "nearest", "all"}
    assert by_family["all"]["auc"] >= 0.9, rows
    assert min(r["auc"] for r in rows) >= 0.85, rows
    assert by_family["all"]["n_real"] == 60 and by_family["all"]["n_fake"] == 60
    cal = model.calibration
    assert 0 < cal.temperature and 0 <= cal.t_real <= cal.t_fake <= 1
    assert json.loads((trained["model"] / "train.json").read_text())["steps"] == 150


def test_training_refuses_to_overwrite_a_checkpoint_and_resumes(trained: dict, tmp_path: Path) -> None:
    from brushpen.errors import BadParameter
    from brushpen.safety.detector_train import TrainConfig, train_detector

    cfg = TrainConfig(out=tmp_path / "m", real=[trained["real"]], fake=[trained["fakes"]], steps=4, snap=2,
                      model=TINY, progress=False)
    train_detector(cfg, log=lambda m: None)
    with pytest.raises(BadParameter, match="--resume"):
        train_detector(cfg, log=lambda m: None)
    logs: list[str] = []
    cfg.resume, cfg.steps = True, 6
    train_detector(cfg, log=logs.append)
    assert any("resumed at step 4" in m for m in logs)
    assert json.loads((tmp_path / "m" / "train.json").read_text())["steps"] == 6


def test_image_logit_adds_the_largest_region_logit_and_old_models_load_without_it(tmp_path: Path) -> None:
    import torch

    from brushpen.safety.detector import Detector, save_detector

    torch.manual_seed(0)
    fused = Detector(TINY).eval()
    plain = Detector(DetectorConfig(widths=TINY.widths, strides=TINY.strides, region_max=False)).eval()
    plain.load_state_dict(fused.state_dict())
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        lf, wf = fused(x)
        lp, wp = plain(x)
    assert torch.equal(wf, wp)
    assert torch.allclose(lf, lp + wp.amax(dim=(1, 2, 3)), atol=1e-6)
    assert not torch.allclose(lf, lp, atol=1e-3)
    # a config.json written before `region_max` existed loads as the plain pooled head it was trained as
    save_detector(plain, tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    del meta["architecture"]["region_max"]
    (tmp_path / "old" / "config.json").write_text(json.dumps(meta))
    old = load_detector(tmp_path / "old")
    assert old.config.region_max is False
    with torch.no_grad():
        assert torch.allclose(old(x)[0], lp, atol=1e-6)


def test_splice_localisation_scores_the_region_map_against_the_masks(tmp_path: Path) -> None:
    import torch

    from brushpen.safety.detector import Detector
    from brushpen.safety.detector_data import Sample
    from brushpen.safety.detector_eval import splice_localisation

    rng = np.random.default_rng(0)
    samples = []
    for i in range(4):
        image, mask = tmp_path / f"s{i}.png", tmp_path / f"m{i}.png"
        arr = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        m = np.zeros((64, 64), np.uint8)
        m[:, :32 if i % 2 else 16] = 255
        arr[m > 0] = 255                      # the "pasted" region is white
        Image.fromarray(arr).save(image)
        Image.fromarray(m).save(mask)
        samples.append(Sample(image, 1, "splice", "test", mask))
    model = Detector(TINY).eval()
    assert splice_localisation(model, [Sample(s.path, 1, "stylegan", "test") for s in samples]) is None
    # a map that is brightness itself: the white pasted region scores above the noise around it
    with torch.no_grad():
        model.body = torch.nn.AvgPool2d(4)   # (B, 6, 16, 16): RGB + NPR, down to the head's grid
        model.fc, model.loc = torch.nn.Conv2d(6, 1, 1), torch.nn.Conv2d(6, 1, 1)
        model.loc.weight.zero_()
        model.loc.weight[0, :3] = 1.0
        model.loc.bias.zero_()
    assert splice_localisation(model, samples) == {"pixel_auc": pytest.approx(1.0, abs=0.02), "n_images": 4}
    with torch.no_grad():
        model.loc.weight.zero_()             # a constant map cannot tell: every pixel ties
    assert splice_localisation(model, samples)["pixel_auc"] == 0.5


def test_calibration_probabilities_and_bands() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 4, 4000)                       # true log-odds ...
    labels = (rng.random(4000) < 1 / (1 + np.exp(-logits))).astype(int)
    cal = calibrate(logits * 4, labels)          # ... made 4x over-confident: T must come out near 4
    assert 3.2 < cal.temperature < 5.0
    p = cal.probability(np.linspace(-500, 500, 101))
    assert np.all((p >= 0) & (p <= 1)) and np.all(np.diff(p) >= 0)
    scores = cal.probability(logits * 4)
    assert np.mean(scores[labels == 0] >= cal.t_fake) <= 0.01           # the stated FPR
    assert np.mean(scores[labels == 1] < cal.t_real) <= 0.01            # the stated FNR
    for s in np.linspace(0, 1, 201):
        v = cal.verdict(float(s))
        assert v == ("fake" if s >= cal.t_fake else "real" if s < cal.t_real else "uncertain")
    # Overlapping classes: the bands collapse onto the FPR threshold rather than cross.
    mixed = calibrate(rng.normal(0, 1, 400), np.r_[np.zeros(200), np.ones(200)])
    assert mixed.t_real <= mixed.t_fake


def test_metrics_match_brute_force() -> None:
    rng = np.random.default_rng(2)
    s, y = rng.integers(0, 20, 300).astype(float), rng.integers(0, 2, 300)
    pos, neg = s[y == 1], s[y == 0]
    brute = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(s, y) == pytest.approx(brute, abs=1e-12)
    assert average_precision(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    reals = np.arange(1000) / 1000
    assert np.mean(reals >= threshold_at_fpr(reals, 0.01)) <= 0.01


def _png(im: Image.Image, **chunks: str) -> bytes:
    buf, info = io.BytesIO(), PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    im.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def bad_folder(root: Path) -> dict[str, str]:
    """Every kind of bad file, plus good ones; returns {name: expected error fragment or ''}."""
    from brushpen.safety import watermark

    rng = np.random.default_rng(3)
    root.mkdir(parents=True)
    good = texture(rng)
    (root / "good.png").write_bytes(_png(good))
    big = texture(rng, 200).crop((0, 0, 200, 130))  # a photo-like backdrop: a black one would be out of scope
    big.paste(texture(rng), (0, 0)), big.paste(texture(rng), (64, 0)), big.paste(texture(rng, 128).crop((0, 0, 72, 130)), (128, 0))
    big.save(root / "large.jpg", quality=92)
    texture(rng).resize((40, 40)).save(root / "small.png")
    settings = {"model": "emoji64", "seed": 7}
    marked = watermark.embed(texture(rng), watermark.payload_for(settings))
    (root / "marked.png").write_bytes(_png(marked, brushpen=json.dumps(settings)))
    whole = _png(texture(rng))
    (root / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (root / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(rng.integers(0, 256, 500, dtype=np.uint8)))
    (root / "notes.txt").write_text("not an image")
    Image.new("1", (12000, 12000)).save(root / "bomb.png")        # 144 MP in a few kB
    Image.new("RGB", (8, 8)).save(root / "tiny.png")
    with zipfile.ZipFile(root / "upload.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inside/ok.png", _png(texture(rng)))
        zf.writestr("../escape.png", _png(texture(rng)))
        zf.writestr("/etc/absolute.png", _png(texture(rng)))
        zf.writestr("zeros.png", b"\0" * (4 << 20))                  # ~1000:1: a zip bomb
    (root / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    return {"good.png": "", "large.jpg": "", "small.png": "", "marked.png": "", "truncated.png": "truncated",
            "corrupt.png": "", "notes.txt": "not an image", "bomb.png": "decompression bomb", "tiny.png": "too small",
            "upload.zip!inside/ok.png": "", "upload.zip!../escape.png": "'..'",
            "upload.zip!/etc/absolute.png": "absolute path", "upload.zip!zeros.png": "compression ratio",
            "broken.zip": "not a readable zip"}


def test_scan_reports_every_bad_file_and_never_stops(trained: dict, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from brushpen.generators import checker

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(trained["store"]))
    expected = bad_folder(tmp_path / "in")
    results = list(checker.scan_paths([tmp_path / "in", tmp_path / "missing.png"], heatmaps_dir=tmp_path / "heat"))
    by_name = {r.path.replace(str(tmp_path / "in") + "/", ""): r for r in results}
    assert set(by_name) == set(expected) | {str(tmp_path / "missing.png")}
    assert "no such file" in by_name[str(tmp_path / "missing.png")].error
    for name, fragment in expected.items():
        r = by_name[name]
        if name in ("good.png", "large.jpg", "small.png", "marked.png", "upload.zip!inside/ok.png"):
            # our watermark proves AI generation, whatever the score: the verdict says so (provenance)
            want = (checker.AI_MADE,) if name == "marked.png" else checker.VERDICTS
            assert r.error is None and 0 <= r.score <= 1 and r.verdict in want, r
            assert r.basis == ("provenance" if name == "marked.png" else "detector")
            assert Path(r.heatmap).is_file() and Image.open(r.heatmap).size == (
                (r.width, r.height) if min(r.width, r.height) >= 64 else Image.open(r.heatmap).size)
        else:
            assert r.error and fragment in r.error and r.score is None, (name, r.error)
    assert by_name["large.jpg"].tiles == 6 and by_name["good.png"].tiles == 1
    mark = by_name["marked.png"].provenance
    assert mark["watermark"]["found"] and mark["settings"] == {"model": "emoji64", "seed": 7}
    assert mark["watermark"]["image_id"] == __import__("brushpen.safety.watermark", fromlist=["x"]).payload_for(
        {"model": "emoji64", "seed": 7}).image_id
    assert not by_name["good.png"].provenance["watermark"]["found"]
    assert by_name["good.png"].provenance["settings"] == {}
    # The total-size cap of a zip is counted on the bytes read.
    capped = list(checker.scan_paths([tmp_path / "in" / "upload.zip"], limits=checker.ScanLimits(zip_max_total=100)))
    assert "total uncompressed size" in capped[0].error or "larger than" in capped[0].error


def test_reports_have_the_documented_schema(trained: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture) -> None:
    from brushpen.cli.main import main
    from brushpen.generators import checker

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(trained["store"]))
    bad_folder(tmp_path / "in")
    # `brushpen detect PATH...` is the scan.
    assert main(["detect", str(tmp_path / "in"), "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv"),
                 "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["summary"]
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report) == {"schema", "model", "calibration", "results", "summary"}
    assert report["schema"] == checker.SCHEMA and report["summary"] == summary
    assert set(report["calibration"]) == {"temperature", "t_real", "t_fake", "rule"}
    for row in report["results"]:
        assert set(row) == {"path", "score", "verdict", "heatmap", "provenance", "error", "width", "height", "tiles",
                            "scope", "basis", "evidence"}
    assert summary["total"] == 14 and summary["error"] == 9
    assert summary["real"] + summary["uncertain"] + summary["fake"] == 4 and summary["ai-made"] == 1
    with open(tmp_path / "r.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0].keys()) == checker.CSV_COLUMNS and len(rows) == 14
    marked = next(r for r in rows if r["path"].endswith("marked.png"))
    assert marked["watermark_found"] == "true" and json.loads(marked["png_settings"])["seed"] == 7
    assert marked["verdict"] == "ai-made" and marked["basis"] == "provenance" and "watermark" in marked["evidence"]
    assert marked["c2pa_state"] == "none" and marked["c2pa_recovered"] == "false"   # marked by hand: no manifest kept


def test_api_detections(trained: dict, tmp_path: Path) -> None:
    from api_server import Server

    home = tmp_path / "home"
    home.mkdir()
    srv = Server(home, trained["store"], api_key="k-123")
    srv.start()
    try:
        rng = np.random.default_rng(4)
        pngs = [_png(texture(rng)), _png(fake_of(texture(rng), 0))]
        url, auth = srv.url + "/v1/detections", srv.headers()
        r = httpx.post(url, headers=auth, timeout=60,
                       files=[("file", ("a.png", pngs[0], "image/png")), ("file", ("b.png", pngs[1], "image/png")),
                              ("file", ("c.txt", b"hello", "text/plain"))], data={"heatmaps": "true"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert [d["path"] for d in body["data"]] == ["a.png", "b.png", "c.txt"]
        assert body["summary"]["total"] == 3 and body["summary"]["error"] == 1
        assert "not an image" in body["data"][2]["error"]
        assert all(0 <= d["score"] <= 1 for d in body["data"][:2])
        heat = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["heatmap_b64"])))
        assert heat.size == (64, 64)
        r = httpx.post(url, headers=auth, timeout=60, json={"images": [
            {"name": "x.png", "b64_json": base64.b64encode(pngs[1]).decode()}, {"b64_json": "***"}]})
        assert r.status_code == 200, r.text
        data = r.json()["data"]
        assert data[0]["verdict"] in ("real", "uncertain", "fake") and "base64" in data[1]["error"]
        assert "heatmap_b64" not in data[0]
        bad = httpx.post(url, headers=auth, json={"images": [{"b64_json": "AA=="}], "extra": 1})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "unknown_parameter"
        missing = httpx.post(url, headers=auth, json={"images": [{"b64_json": "AA=="}], "model": "nope"})
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
        assert httpx.post(url, json={"images": [{"b64_json": "AA=="}]}).status_code == 401
        many = httpx.post(url, headers=auth, json={"images": [{"b64_json": "AA=="}] * 65})
        assert many.status_code == 400
    finally:
        srv.stop()


def test_out_of_scope_images_get_a_reason_not_a_score(trained: dict, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """An emoji-like graphic is not a photo: the checker says so (with the reason) in every face,
    still reads its provenance, and scores it only when the gate is turned off."""
    from api_server import Server

    from brushpen.cli.main import main
    from brushpen.generators import checker
    from brushpen.safety import watermark

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(trained["store"]))
    graphic = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(graphic).ellipse((16, 16, 112, 112), fill=(255, 204, 0))
    marked = watermark.embed(graphic, watermark.payload_for({"model": "emoji64", "seed": 3}))
    photo = texture(np.random.default_rng(11))
    items = [("graphic.png", _png(graphic)), ("marked.png", _png(marked)), ("photo.png", _png(photo))]
    gated = {r.path: r for r in checker.check_images(items)}
    for name in ("graphic.png", "marked.png"):
        r = gated[name]
        assert r.score is None and r.error is None and r.scope.startswith("not a photograph")
    assert gated["graphic.png"].verdict == checker.OUT_OF_SCOPE and gated["graphic.png"].basis == "scope"
    # the mark is still read, and it wins over the gate: our emoji are AI-made, and the verdict says so
    assert gated["marked.png"].provenance["watermark"]["found"]
    assert gated["marked.png"].verdict == checker.AI_MADE and gated["marked.png"].basis == "provenance"
    assert gated["photo.png"].verdict in checker.VERDICTS and gated["photo.png"].scope is None
    assert checker.summarize(list(gated.values()))[checker.OUT_OF_SCOPE] == 1
    ungated = checker.check_images(items[:1], scope_gate=False)[0]
    assert ungated.verdict in checker.VERDICTS and 0 <= ungated.score <= 1

    # CLI: the line says why; --no-scope-gate scores it.
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "graphic.png").write_bytes(items[0][1])
    assert main(["detect", str(folder), "--csv", str(tmp_path / "r.csv")]) == 0
    row = next(csv.DictReader(open(tmp_path / "r.csv", newline="")))
    assert row["verdict"] == "out-of-scope" and row["score"] == "" and row["scope"].startswith("not a photograph")
    assert main(["detect", str(folder), "--csv", str(tmp_path / "s.csv"), "--no-scope-gate"]) == 0
    assert next(csv.DictReader(open(tmp_path / "s.csv", newline="")))["verdict"] in checker.VERDICTS

    # API: the same, and a bad flag is a 400.
    home = tmp_path / "home"
    home.mkdir()
    srv = Server(home, trained["store"])
    srv.start()
    try:
        url = srv.url + "/v1/detections"
        body = {"images": [{"name": "g.png", "b64_json": base64.b64encode(items[0][1]).decode()}]}
        d = httpx.post(url, json=body, timeout=60).json()["data"][0]
        assert d["verdict"] == "out-of-scope" and d["score"] is None and "one colour" in d["scope"]
        d = httpx.post(url, json={**body, "scope_gate": False}, timeout=60).json()["data"][0]
        assert d["verdict"] in ("real", "uncertain", "fake") and d["scope"] is None
        r = httpx.post(url, files=[("file", ("g.png", items[0][1], "image/png"))], data={"scope_gate": "maybe"})
        assert r.status_code == 400 and "true or false" in r.text
    finally:
        srv.stop()


def test_one_request_has_a_pixel_budget_across_its_files(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 4 KB one-bit PNG can hold 36 MP: one request may decode at most 80 MP in all (hardening,
    item 6); the images past the budget get an error, the ones before it are checked."""
    from brushpen.generators import checker

    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(trained["store"]))
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 8000
    small = _png(texture(np.random.default_rng(2)))
    items = [("a.png", buf.getvalue()), ("b.png", buf.getvalue()), ("c.png", buf.getvalue()), ("d.png", small)]
    results = checker.check_images(items)
    assert [r.error is None for r in results] == [True, True, False, True]   # 72 MP, then 108 > 80, then 4 kB px
    assert "pixel budget of 80,000,000" in results[2].error and results[2].score is None
    assert results[3].verdict in checker.VERDICTS
