"""Content Credentials (`brushpen/safety/credentials.py`): every output signed, read back, tampering
caught, a re-encoded image's manifest recovered through the watermark, an organisation's own
certificate, manifests made by another tool, and the checker's verdict rule."""

from __future__ import annotations

import binascii
import io
import json
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brushpen import errors
from brushpen.cli.main import main
from brushpen.generators import checker
from brushpen.generators.images import ImageRequest, WalkRequest, generate_images, seed_walk
from brushpen.safety import credentials, watermark
from conftest import PYTHON, subprocess_env


@pytest.fixture(scope="module")
def emoji() -> list:
    """Two images of the shipped emoji64 (64x64: big enough for the watermark)."""
    return generate_images(ImageRequest(model="emoji64", n=2, seed=3))


def _jpeg(data: bytes, quality: int = 90, scale: float = 1.0) -> bytes:
    im = Image.open(io.BytesIO(data)).convert("RGB")
    if scale != 1.0:
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def _retext(png: bytes, key: bytes, old: bytes, new: bytes) -> bytes:
    """The PNG with one tEXt chunk's value edited (its CRC fixed): pixels and manifest untouched."""
    pos = 8
    out = bytearray(png[:8])
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        if kind == b"tEXt" and body.startswith(key + b"\0"):
            body = body.replace(old, new, 1)
        crc = binascii.crc32(kind + body).to_bytes(4, "big")
        out += len(body).to_bytes(4, "big") + kind + body + crc
        pos += 12 + length
    return bytes(out)


def _texture(seed: int = 5) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.normal(128, 40, (12, 12, 3))
    img = np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 12, (96, 96, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def test_identity_is_made_once_with_private_keys(brushpen_home: Path, capsys: pytest.CaptureFixture) -> None:
    first = credentials.identity()
    folder = brushpen_home / "c2pa"
    for name in ("ca.key", "signer.key"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((folder / "signer.pem").stat().st_mode) == 0o644
    assert credentials.identity() == first and first.source == "local" and first.alg == "es256"
    assert main(["c2pa", "init", "--org", "Example Studio"]) == 0
    again = credentials.identity()
    assert again.chain_pem != first.chain_pem and "Example Studio" in again.signer
    assert "BEGIN" not in capsys.readouterr().out   # keys are never printed
    assert main(["c2pa", "init", "--org", ""]) == 2


def test_every_image_output_is_signed_and_reads_back(brushpen_home: Path, emoji: list, tmp_path: Path) -> None:
    # the service's encoder (API, studio history and batches use it) ...
    png = emoji[0].png_bytes()
    cred = credentials.read(png)
    assert cred["state"] == "valid" and cred["codes"] == [] and cred["ai_generated"]
    assert cred["actions"] == ["c2pa.created"] and cred["claim_generator"].startswith("brushpen ")
    assert cred["model"]["name"] == "emoji64" and cred["model"]["family"] == "gan"
    assert len(cred["model"]["weights_sha256"]) == 64
    payload = watermark.payload_for(emoji[0].settings)
    assert cred["soft_binding"] == credentials.soft_binding_value(payload)
    # the settings chunks are kept beside the manifest, and its generation assertion matches them
    with Image.open(io.BytesIO(png)) as im:
        assert json.loads(im.info["brushpen"]) == emoji[0].settings and "Seed: 3" in im.info["parameters"]
        assert np.array_equal(np.asarray(im.convert("RGB")), np.asarray(emoji[0].image))
    assert len(png) - len(emoji[0].png_bytes(sign=False)) < 6000
    # ... the CLI ...
    assert main(["image", "generate", "--n", "2", "--seed", "3", "--out", str(tmp_path / "out")]) == 0
    files = sorted((tmp_path / "out").glob("*.png"))
    assert len(files) == 2 and all(credentials.read(f.read_bytes())["state"] == "valid" for f in files)
    # ... walks, GIF and WebP alike
    for fmt in ("gif", "webp"):
        walk = credentials.read(seed_walk(WalkRequest(model="emoji64", frames=3, format=fmt)))
        assert walk["state"] == "valid" and walk["ai_generated"] and walk["model"]["name"] == "emoji64"
    # the manifest is kept in the store, named by the watermark payload
    assert (brushpen_home / "c2pa" / "manifests" / f"{credentials.payload_key(payload)}.png.c2pa").exists()


def test_signing_can_be_turned_off(brushpen_home: Path, emoji: list, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRUSHPEN_C2PA", "off")
    assert credentials.read(emoji[0].png_bytes())["state"] == "none"
    assert not (brushpen_home / "c2pa").exists()


def test_a_tampered_file_is_invalid_and_proves_nothing(brushpen_home: Path, emoji: list, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    png = emoji[1].png_bytes()
    bad = _retext(png, b"parameters", b"Seed: 4", b"Seed: 5")
    assert bad != png and Image.open(io.BytesIO(bad)).info["parameters"].count("Seed: 5") == 1
    cred = credentials.read(bad)
    assert cred["state"] == "invalid" and "assertion.dataHash.mismatch" in cred["codes"]
    (tmp_path / "bad.png").write_bytes(bad)
    assert main(["c2pa", "verify", str(tmp_path / "bad.png")]) == 1
    assert "invalid" in capsys.readouterr().out
    # in the checker the broken manifest is flagged and is no evidence; the watermark still is
    r = checker.check_images([("bad.png", bad)])[0]
    assert r.provenance["credentials"]["state"] == "invalid"
    assert r.verdict == checker.AI_MADE and len(r.evidence) == 1 and "watermark" in r.evidence[0]


def test_a_reencoded_image_is_none_then_recovered_through_the_watermark(brushpen_home: Path, emoji: list,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture) -> None:
    png = emoji[0].png_bytes()
    for data in (_jpeg(png, 90), _jpeg(png, 90, scale=0.5)):
        assert credentials.read(data)["state"] == "none"
        r = checker.check_images([("re.jpg", data)])[0]
        cred = r.provenance["credentials"]
        assert cred["recovered"] and cred["state"] == "valid" and cred["ai_generated"] and cred["signature_checked"]
        assert cred["codes"] == [] and cred["model"]["name"] == "emoji64"
        assert cred["recovered_key"] == credentials.payload_key(watermark.payload_for(emoji[0].settings))
        assert r.verdict == checker.AI_MADE and r.basis == "provenance"
        assert any("recovered through the brushpen watermark" in e for e in r.evidence)
    # the CLI says the same; a re-encoded PNG is checked against the stored claim signature
    (tmp_path / "re.jpg").write_bytes(_jpeg(png))
    assert main(["c2pa", "recover", str(tmp_path / "re.jpg")]) == 0
    assert "recovered through the brushpen watermark" in capsys.readouterr().out
    resaved = io.BytesIO()
    Image.open(io.BytesIO(png)).save(resaved, format="PNG")
    det = watermark.extract(Image.open(resaved).convert("RGB"))
    assert credentials.recover(det.payload, resaved.getvalue())["signature_checked"] is True
    # an unmarked photo has nothing to recover
    photo = io.BytesIO()
    _texture().save(photo, format="JPEG")
    (tmp_path / "photo.jpg").write_bytes(photo.getvalue())
    assert main(["c2pa", "recover", str(tmp_path / "photo.jpg")]) == 1


def test_an_organisations_certificate_signs_when_given(brushpen_home: Path, emoji: list, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    org = credentials.make_local_identity("Example Org", folder=tmp_path / "org")   # stands in for a real CA's
    assert main(["c2pa", "init", "--cert", str(org / "signer.pem"), "--key", str(org / "signer.key")]) == 0
    assert stat.S_IMODE((brushpen_home / "c2pa" / "org.key").stat().st_mode) == 0o600
    cred = credentials.read(emoji[0].png_bytes())
    assert "Example Org" in cred["signer"] and cred["state"] == "valid-untrusted"   # its root is not trusted yet
    assert main(["c2pa", "trust", str(org / "ca.pem")]) == 0
    assert credentials.read(emoji[0].png_bytes())["state"] == "valid"
    # from the environment, too (it wins over the files)
    other = credentials.make_local_identity("Env Org", folder=tmp_path / "env")
    monkeypatch.setenv("BRUSHPEN_C2PA_CERT", str(other / "signer.pem"))
    monkeypatch.setenv("BRUSHPEN_C2PA_KEY", str(other / "signer.key"))
    assert "Env Org" in credentials.read(emoji[0].png_bytes())["signer"]
    (tmp_path / "junk.pem").write_text("not a key")
    assert main(["c2pa", "init", "--cert", str(other / "signer.pem"), "--key", str(tmp_path / "junk.pem")]) == 2


def _foreign(tmp_path: Path, source_type: str) -> bytes:
    """A JPEG signed by "another tool", with c2pa-python directly and its own certificate."""
    import c2pa

    ident = credentials.make_local_identity("Other Vendor", folder=tmp_path / "vendor")
    chain, key = (ident / "signer.pem").read_bytes(), (ident / "signer.key").read_bytes()
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(b"es256", chain, key, None))
    manifest = {"claim_generator_info": [{"name": "OtherTool", "version": "2.0"}], "title": "x.jpg",
                "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": [
                    {"action": "c2pa.created", "digitalSourceType": source_type}]}}]}
    photo = io.BytesIO()
    _texture().save(photo, format="JPEG", quality=95)
    out = io.BytesIO()
    c2pa.Builder(manifest).sign(signer, "image/jpeg", io.BytesIO(photo.getvalue()), out)
    return out.getvalue()


def test_a_manifest_from_another_tool_is_read_and_weighed(brushpen_home: Path, tmp_path: Path) -> None:
    ai = _foreign(tmp_path, credentials.TRAINED)
    r = checker.check_images([("other.jpg", ai)])[0]
    cred = r.provenance["credentials"]
    assert cred["state"] == "valid-untrusted" and cred["claim_generator"] == "OtherTool 2.0"
    assert cred["ai_generated"] and "Other Vendor" in cred["signer"] and not cred["recovered"]
    assert r.verdict == checker.AI_MADE and r.basis == "provenance" and 0 <= r.score <= 1
    assert "OtherTool 2.0" in r.evidence[0]
    # a camera's manifest declares no AI generation: the detector decides
    camera = _foreign(tmp_path, "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture")
    r = checker.check_images([("camera.jpg", camera)])[0]
    assert r.provenance["credentials"]["state"] == "valid-untrusted"
    assert not r.provenance["credentials"]["ai_generated"]
    assert r.verdict in checker.VERDICTS and r.basis == "detector" and r.evidence == []


def test_sign_and_verify_an_image_made_elsewhere(brushpen_home: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "photo.jpg"
    _texture().save(src, format="JPEG")
    assert main(["c2pa", "sign", str(src)]) == 0
    signed = tmp_path / "photo.signed.jpg"
    cred = credentials.read(signed.read_bytes())
    assert cred["state"] == "valid" and cred["actions"] == ["c2pa.opened"] and not cred["ai_generated"]
    assert main(["c2pa", "sign", str(src), "--ai", "--out", str(tmp_path / "ai.jpg")]) == 0
    assert credentials.read((tmp_path / "ai.jpg").read_bytes())["ai_generated"]
    assert main(["c2pa", "verify", str(signed), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["state"] == "valid"
    (tmp_path / "junk.png").write_bytes(b"not an image")
    assert main(["c2pa", "sign", str(tmp_path / "junk.png")]) == 2
    assert main(["c2pa", "verify", str(tmp_path / "missing.png")]) == 2


# A child that signs `rounds` images as soon as the parent says go; with `remake`, it makes a fresh
# identity each round instead, as `brushpen c2pa init` run beside a live deployment does.
_SHARER = """
import sys, time
from pathlib import Path
from brushpen.safety import credentials
tmp, gate, me = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
rounds, remake = int(sys.argv[4]), sys.argv[5] == "remake"
src = tmp / "photo.jpg"
(gate / f"ready-{me}").touch()
while not (gate / "go").exists():
    time.sleep(0.001)
for i in range(rounds):
    if remake:
        credentials.make_local_identity(f"Remade {i}")
        continue
    out = credentials.sign_image_file(src, tmp / f"{me}-{i}.jpg")
    print(credentials.read(out.read_bytes())["state"], flush=True)
"""


def _release_together(tmp_path: Path, roles: list[tuple[str, int, str]]) -> list[subprocess.CompletedProcess]:
    env = subprocess_env(BRUSHPEN_HOME=str(tmp_path / "home"))
    gate = Path(tempfile.mkdtemp(dir=tmp_path))   # a fresh gate for each release
    procs = [subprocess.Popen([PYTHON, "-c", _SHARER, str(tmp_path), str(gate), me, str(rounds), mode], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for me, rounds, mode in roles]
    deadline = time.time() + 120
    while not all((gate / f"ready-{me}").exists() for me, _, _ in roles):
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a child did not start"
        time.sleep(0.01)
    (gate / "go").touch()
    out = []
    for p, (me, _, _) in zip(procs, roles):
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, f"{me}: {stderr[-800:]}"
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_processes_sharing_a_home_make_and_use_one_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # API replicas and workers share a home; on first use they all reach for an identity at once.
    _texture().save(tmp_path / "photo.jpg", format="JPEG")
    results = _release_together(tmp_path, [(f"first{i}", 1, "sign") for i in range(8)])
    assert [r.stdout.split() for r in results] == [["valid"]] * 8
    folder = tmp_path / "home" / "c2pa"
    monkeypatch.setenv("BRUSHPEN_HOME", str(tmp_path / "home"))
    ident = credentials.identity()
    signers = {credentials.read((tmp_path / f"first{i}-0.jpg").read_bytes())["signer"] for i in range(8)}
    assert signers == {credentials.read(credentials.sign_image_file(tmp_path / "photo.jpg",
                                                                    tmp_path / "mine.jpg").read_bytes())["signer"]}
    assert ident.chain_pem.startswith((folder / "signer.pem").read_bytes()[:64])
    # One process remakes the identity over and over while three sign: every signature holds,
    # though images signed by an identity since replaced no longer chain to today's CA.
    results = _release_together(tmp_path, [("remaker", 15, "remake")] + [(f"s{i}", 10, "sign") for i in range(3)])
    states = [s for r in results[1:] for s in r.stdout.split()]
    assert len(states) == 30 and set(states) <= {"valid", "valid-untrusted"}, states


def test_a_key_that_is_not_the_certificates_is_refused(brushpen_home: Path, tmp_path: Path) -> None:
    a = credentials.make_local_identity("Org A", folder=tmp_path / "a")
    b = credentials.make_local_identity("Org B", folder=tmp_path / "b")
    with pytest.raises(errors.BadParameter, match="not the key of the signer certificate"):
        credentials.use_organisation(a / "signer.pem", b / "signer.key")
    assert not (brushpen_home / "c2pa" / "org.pem").exists()   # nothing written
    assert main(["c2pa", "init", "--cert", str(a / "signer.pem"), "--key", str(b / "signer.key")]) == 2
