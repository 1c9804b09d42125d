"""GAN LoRA: the low-rank update is exact, merges exactly, round-trips through the store, refuses
broken or foreign adapters, never touches the base, and a tiny fine-tune moves G to the target."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from brushpen.errors import BadInput, BrokenModel, ModelNotFound
from brushpen.gan.finetune import GanFinetuneRequest, finetune
from brushpen.gan.lora import (apply_lora, default_targets, load_adapted_generator, lora_modules, merge, save_adapter,
                               trainable_parameters)
from brushpen.gan.networks import ModulatedConv2d
from brushpen.gan.pipeline import StyleGANPipeline
from brushpen.generators.images import ImageRequest, generate_images, image_models
from brushpen.store import list_models
from brushpen.ziputil import unpack_zip
from conftest import tiny_generator

Z = torch.randn(6, 16, generator=torch.Generator().manual_seed(5))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def out(G, fused: bool = False) -> torch.Tensor:
    with torch.no_grad():
        return G(Z, LABELS, noise_mode="const", fused=fused)


def perturb(G, seed: int = 1) -> None:
    """Stand-in for training: random B's (as after some steps), so the adapter is not the identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lora in lora_modules(G).values():
            lora.lora_B.copy_(torch.randn(lora.lora_B.shape, generator=g) * 0.05)


def file_hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def base(weights_store: Path, brushpen_home: Path) -> Path:
    folder = weights_store / "gan" / "tiny"
    tiny_generator().save_pretrained(folder)
    return folder


def test_zero_b_is_identity_and_only_lora_trains() -> None:
    G = tiny_generator()
    before, total = out(G), sum(p.numel() for p in G.parameters())
    targets = apply_lora(G, rank=4)
    convs = [n for n, m in G.named_modules() if isinstance(m, ModulatedConv2d)]
    assert set(convs) <= set(targets) and all(f"{c}.affine" in targets for c in convs)
    assert "mapping.layers.0" in targets and targets == default_targets(tiny_generator())
    assert torch.equal(out(G), before)    # B = 0: exactly the base
    n = trainable_parameters(G)
    assert n == sum(l.lora_A.numel() + l.lora_B.numel() for l in lora_modules(G).values())
    assert 0 < n < total / 3


def test_training_steps_change_the_output_and_merge_is_exact() -> None:
    G = tiny_generator()
    before = out(G)
    apply_lora(G, rank=2)
    opt = torch.optim.Adam([p for p in G.parameters() if p.requires_grad], lr=0.01)
    for _ in range(3):   # pull the images towards white: any real loss moves B off zero
        loss = (G(Z, LABELS, noise_mode="const") - 1).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    unmerged = out(G)
    assert (unmerged - before).abs().max() > 1e-3
    assert torch.allclose(out(G, fused=True), unmerged, atol=1e-5)   # both conv paths see W'
    merge(G)
    assert not lora_modules(G) and "blocks.0.layers.0.conv.weight" in G.state_dict()
    assert (out(G) - unmerged).abs().max() <= 1e-5


def test_round_trip_through_the_store(base: Path, tmp_path: Path) -> None:
    before = file_hashes(base)
    G = tiny_generator()
    apply_lora(G, rank=4)
    perturb(G)
    G.mapping.w_avg.fill_(0.25)   # truncation uses the adapted mean w
    save_adapter(G, base / "adapters" / "blue", base, "tiny", {"kimg": 1.0}, "# blue\n")
    info = json.loads((base / "adapters" / "blue" / "adapter.json").read_text())
    assert info["base"] == "gan/tiny" and info["rank"] == 4 and info["family"] == "gan"
    assert info["trainable_params"] == trainable_parameters(G)
    assert [m.adapters for m in list_models() if m.name == "tiny"] == [["blue"]]
    assert "tiny:blue" in [m.name for m in image_models()]

    loaded = load_adapted_generator(base, base / "adapters" / "blue")
    assert (out(loaded) - out(G)).abs().max() <= 1e-5
    assert torch.equal(loaded.mapping.w_avg, G.mapping.w_avg)
    req = dict(n=3, seed=11, noise_mode="none", truncation_psi=0.7)
    adapted = generate_images(ImageRequest(model="tiny:blue", **req))
    plain = generate_images(ImageRequest(model="tiny", **req))
    again = generate_images(ImageRequest(model="tiny:blue", **req))
    pix = [np.asarray(i.image, dtype=np.int16) for i in adapted]
    assert all(np.array_equal(p, np.asarray(i.image)) for p, i in zip(pix, again))
    assert max(np.abs(p - np.asarray(i.image)).max() for p, i in zip(pix, plain)) > 10
    assert adapted[0].settings["model"] == "tiny:blue"
    # The service draws what the merged generator draws (16 px images carry no watermark).
    direct = StyleGANPipeline(loaded)(1, torch.Generator().manual_seed(11), truncation_psi=0.7, noise_mode="none")[0]
    assert np.array_equal(np.asarray(direct), pix[0])
    # The API lists the adapter as a model and serves it from the `model` field.
    from brushpen.api import service
    from brushpen.api.schemas import ImageGenerationRequest
    from brushpen.generators.catalog import catalog

    assert "tiny:blue" in catalog(refresh=True).images
    body = service.run_images(ImageGenerationRequest(model="tiny:blue", n=1, seed=11, noise_mode="none",
                                                     truncation_psi=0.7))
    png = Image.open(io.BytesIO(base64.b64decode(body["data"][0]["b64_json"])))
    assert np.array_equal(np.asarray(png.convert("RGB")), pix[0])
    # Merged into a plain model folder (the CLI), it loads like any generator and draws the same.
    from brushpen.cli.main import main
    from brushpen.gan.networks import StyleGANGenerator

    assert main(["finetune", "gan-merge", "tiny:blue", "--out", "tiny-blue"]) == 0
    plain_merged = StyleGANGenerator.from_pretrained(base.parent / "tiny-blue")
    assert (out(plain_merged) - out(loaded)).abs().max() <= 1e-6
    assert json.loads((base.parent / "tiny-blue" / "metrics.json").read_text())["merged_from"] == "tiny:blue"
    assert file_hashes(base) == before   # loading wrote nothing into the base folder
    with pytest.raises(ModelNotFound, match="no adapter 'nope'"):
        generate_images(ImageRequest(model="tiny:nope", n=1, seed=0))


def _saved(base: Path, name: str) -> Path:
    G = tiny_generator()
    apply_lora(G, rank=4)
    perturb(G)
    return save_adapter(G, base / "adapters" / name, base, "tiny")


def test_broken_foreign_and_rank_mismatched_adapters_are_refused(base: Path) -> None:
    before = file_hashes(base)
    broken = _saved(base, "broken")
    (broken / "adapter.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BrokenModel, match="unreadable"):
        load_adapted_generator(base, broken)

    foreign = _saved(base, "foreign")
    info = json.loads((foreign / "adapter.json").read_text())
    (foreign / "adapter.json").write_text(json.dumps({**info, "base_sha256": "0" * 64}))
    with pytest.raises(BrokenModel, match="other weights"):
        load_adapted_generator(base, foreign)
    with pytest.raises(BrokenModel, match="other weights"):
        generate_images(ImageRequest(model="tiny:foreign", n=1, seed=0))

    ranks = _saved(base, "ranks")
    (ranks / "adapter.json").write_text(json.dumps({**info, "rank": 8}))
    with pytest.raises(BrokenModel, match="rank mismatch"):
        load_adapted_generator(base, ranks)

    shapes = _saved(base, "shapes")   # right rank, wrong layer size: made for another architecture
    tensors = load_file(str(shapes / "adapter.safetensors"))
    key = next(k for k in tensors if k.endswith("lora_A"))
    tensors[key] = torch.zeros(4, 7)
    save_file(tensors, str(shapes / "adapter.safetensors"))
    with pytest.raises(BrokenModel, match="does not fit"):
        load_adapted_generator(base, shapes)

    (base / "adapters" / "empty").mkdir()
    with pytest.raises(BrokenModel, match="adapter.json is missing"):
        load_adapted_generator(base, base / "adapters" / "empty")
    assert file_hashes(base) == before


def two_band_folder(folder: Path, n: int = 24) -> Path:
    """Red over blue, 16x16, no labels: far from what the random tiny base draws."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = np.zeros((16, 16, 3), dtype=np.uint8)
        arr[:8] = np.clip([210, 40, 40] + rng.normal(0, 8, 3), 0, 255)
        arr[8:] = np.clip([40, 60, 210] + rng.normal(0, 8, 3), 0, 255)
        Image.fromarray(arr).save(folder / f"{i}.png")
    return folder


@torch.no_grad()
def band_distance(G, target: torch.Tensor) -> float:
    """Distance of the mean colour of each half (6 numbers, in [-1, 1] units) to the target's."""
    z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(1))
    x = G(z, torch.arange(64) % 3, noise_mode="none").clamp(-1, 1)
    means = torch.cat([x[:, :, :8].mean(dim=[0, 2, 3]), x[:, :, 8:].mean(dim=[0, 2, 3])])
    return float((means - target).norm())


def test_tiny_finetune_moves_the_generator_to_the_target(base: Path, tmp_path: Path) -> None:
    data = two_band_folder(tmp_path / "bands")
    zpath = tmp_path / "bands.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in sorted(data.iterdir()):
            zf.write(f, f"imgs/{f.name}")
    target = torch.tensor([210, 40, 40, 40, 60, 210], dtype=torch.float32) / 127.5 - 1
    before_hashes = file_hashes(base)
    events = []
    req = GanFinetuneRequest(base="tiny", data=zpath, out="bands", rank=4, kimg=0.16, batch=8, lr=0.01, lr_g=0.01,
                             augment="none", freeze_d=1, snapshot_kimg=0.08, threads=1)
    result = finetune(req, events.append)
    assert result.ref == "tiny:bands" and (result.path / "samples.png").exists()
    assert events[-1].step == events[-1].total == 160 and events[-1].loss is not None
    assert result.metrics["trainable_params_G"] == json.loads((result.path / "adapter.json").read_text())[
        "trainable_params"]
    d_base = band_distance(load_adapted_generator(base, None), target)
    d_adapted = band_distance(load_adapted_generator(base, result.path), target)
    assert d_adapted < 0.7 * d_base, (d_base, d_adapted)
    assert file_hashes(base) == before_hashes


def test_sample_grid_shows_the_target_classes() -> None:
    """A fine-tune's samples.png cycles through the target set's classes (faces only for a set of faces)."""
    from brushpen.gan.snapshot import sample_grid

    G = tiny_generator().eval()
    pipe = StyleGANPipeline(G)
    grid = np.asarray(sample_grid(G, seeds=[0, 1, 2], classes=[2]))
    r = G.resolution
    for i, seed in enumerate([0, 1, 2]):
        want = np.asarray(pipe(1, torch.Generator().manual_seed(seed), noise_mode="none", label=2)[0])
        assert np.array_equal(grid[:r, i * r:(i + 1) * r], want)
    assert not np.array_equal(np.asarray(sample_grid(G, seeds=[0, 1, 2])), grid)   # each seed's own label


def test_training_zips_are_unpacked_safely(tmp_path: Path) -> None:
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.png", b"x")
        zf.writestr("../escape.png", b"x")
    with pytest.raises(BadInput, match="unsafe path"):
        unpack_zip(evil, tmp_path / "out")
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "out").exists()
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("big.png", b"\0" * (4 << 20))
    with pytest.raises(BadInput, match="zip bomb"):
        unpack_zip(bomb, tmp_path / "out")
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())   # no staging folder left


def test_lora_run_resumes_exactly(base: Path, shapes_dir: Path) -> None:
    """4 + 4 steps with a resume in between write the same adapter as 8 steps in one go."""
    kw = dict(base="tiny", data=shapes_dir, batch=8, snapshot_kimg=0.032, augment="none", threads=1)
    whole = finetune(GanFinetuneRequest(out="whole", kimg=0.064, **kw), lambda e: None)
    finetune(GanFinetuneRequest(out="split", kimg=0.032, **kw), lambda e: None)
    split = finetune(GanFinetuneRequest(out="split", kimg=0.064, resume=True, **kw), lambda e: None)
    assert split.metrics["kimg"] == whole.metrics["kimg"] == 0.064
    a, b = load_file(str(whole.path / "adapter.safetensors")), load_file(str(split.path / "adapter.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().max() > 0 for k in a if k.endswith("lora_B"))   # it did train
