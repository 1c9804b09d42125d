"""StyleGAN2 networks and pipeline: shapes, seeded determinism, fused/unfused equality, truncation, mixing, labels, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from brushpen.errors import BadParameter, UnsafeWeights
from brushpen.gan.networks import ModulatedConv2d, StyleGANDiscriminator, StyleGANGenerator
from brushpen.gan.pipeline import StyleGANPipeline
from brushpen.store import resolve_model
from conftest import CLASS_NAMES, tiny_generator


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("num_classes", [0, 3])
@pytest.mark.parametrize("resolution", [16, 32])
def test_generator_and_discriminator_shapes(num_classes: int, resolution: int) -> None:
    G = tiny_generator(num_classes, resolution)
    channels = [32, 16, 8] if resolution == 16 else [32, 16, 8, 8]
    D = StyleGANDiscriminator(resolution, channels, num_classes)
    z = torch.randn(5, G.z_dim)
    labels = torch.tensor([0, 1, 2, 0, 1]) if num_classes else None
    ws = G.map(z, labels)
    assert ws.shape == (5, G.num_ws, 16)
    # One w per conv, plus one for the last toRGB: 1 conv at 4x4, 2 per higher resolution.
    assert G.num_ws == 1 + 2 * (len(channels) - 1) + 1
    img = G(z, labels)
    assert img.shape == (5, 3, resolution, resolution)
    assert torch.isfinite(img).all()
    logits = D(img, labels)
    assert logits.shape == (5,)
    assert torch.isfinite(logits).all()


def test_conditional_generator_needs_labels() -> None:
    G = tiny_generator(3)
    with pytest.raises(ValueError, match="labels"):
        G(torch.randn(2, G.z_dim))


def test_projection_discriminator_depends_on_label() -> None:
    torch.manual_seed(0)
    D = StyleGANDiscriminator(16, [32, 16, 8], num_classes=3)
    img = torch.randn(4, 3, 16, 16)
    a = D(img, torch.zeros(4, dtype=torch.long))
    b = D(img, torch.full((4,), 2, dtype=torch.long))
    assert not torch.allclose(a, b)


def test_same_seed_same_pixels_different_seed_different_pixels() -> None:
    pipe = StyleGANPipeline(tiny_generator(3))
    # noise_mode="random" on purpose: noise must come from the seeded generator too.
    a = pipe(3, seeded(7), output_type="np")
    b = pipe(3, seeded(7), output_type="np")
    c = pipe(3, seeded(8), output_type="np")
    assert a.shape == (3, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 1.0
    # Pixels vary within an image as well as across seeds (not a blank output).
    assert a.std() > 1.0


def test_random_noise_changes_pixels_only_through_noise() -> None:
    G = tiny_generator(0)
    z = torch.randn(2, G.z_dim, generator=seeded(0))
    with torch.no_grad():
        r1 = G(z, noise_mode="random", generator=seeded(1))
        r2 = G(z, noise_mode="random", generator=seeded(2))
        c1, c2 = G(z, noise_mode="const"), G(z, noise_mode="const")
    assert torch.equal(c1, c2)
    assert not torch.allclose(r1, r2)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_conv_fused_equals_unfused(demodulate: bool) -> None:
    torch.manual_seed(0)
    conv = ModulatedConv2d(8, 6, 3, w_dim=16, demodulate=demodulate)
    with torch.no_grad():
        conv.affine.bias.normal_()  # styles far from 1, so modulation really matters
    x, w = torch.randn(4, 8, 8, 8), torch.randn(4, 16)
    with torch.no_grad():
        fused, unfused = conv(x, w, fused=True), conv(x, w, fused=False)
    assert fused.shape == (4, 6, 8, 8)
    assert (fused - unfused).abs().max().item() <= 1e-5
    # Demodulation normalizes each output channel: unit-variance input -> roughly unit-variance output.
    if demodulate:
        assert 0.5 < fused.std().item() < 2.0


def test_generator_fused_equals_unfused() -> None:
    G = tiny_generator(3)
    z = torch.randn(4, G.z_dim, generator=seeded(3))
    labels = torch.tensor([0, 1, 2, 1])
    with torch.no_grad():
        a = G(z, labels, noise_mode="const", fused=True)
        b = G(z, labels, noise_mode="const", fused=False)
    assert (a - b).abs().max().item() <= 1e-5
    assert a.std().item() > 1e-3


def test_truncation_psi_zero_gives_the_mean_image() -> None:
    G = tiny_generator(3)
    with torch.no_grad():
        G.mapping.w_avg.normal_()  # a non-trivial "average" w
    pipe = StyleGANPipeline(G)
    imgs = pipe(4, seeded(0), truncation_psi=0.0, noise_mode="const", output_type="np")
    for img in imgs[1:]:
        assert np.array_equal(img, imgs[0])
    # psi=1 leaves the z's in charge: the four images then differ.
    free = pipe(4, seeded(0), truncation_psi=1.0, noise_mode="const", output_type="np")
    assert not np.array_equal(free[0], free[1])


def test_style_mixing_changes_image_and_cutoff_is_checked() -> None:
    G = tiny_generator(3)
    pipe = StyleGANPipeline(G)
    base = pipe(2, seeded(1), label=0, noise_mode="const", output_type="np")
    mixed = pipe(2, seeded(1), label=0, noise_mode="const", output_type="np",
                 mix_generator=seeded(99), mix_cutoff=2)
    assert not np.array_equal(base, mixed)
    # Mixing with the same z as the base leaves the image unchanged: only the second w differs.
    same = pipe(2, seeded(1), label=0, noise_mode="const", output_type="np",
                mix_generator=seeded(1), mix_cutoff=2)
    assert np.array_equal(base, same)
    for bad in (0, G.num_ws, G.num_ws + 3):
        with pytest.raises(BadParameter, match="crossover"):
            pipe(1, seeded(1), mix_generator=seeded(2), mix_cutoff=bad)


def test_style_mixing_cutoff_changes_only_later_ws() -> None:
    G = tiny_generator(0)
    z, z2 = torch.randn(2, G.z_dim), torch.randn(2, G.z_dim)
    with torch.no_grad():
        ws = G.map(z, mix_z=z2, mix_cutoff=3)
        plain, other = G.map(z), G.map(z2)
    assert torch.equal(ws[:, :3], plain[:, :3])
    assert torch.equal(ws[:, 3:], other[:, 3:])


def test_label_lookup_by_name_index_and_errors() -> None:
    G = tiny_generator(3)
    assert G.config.class_names == CLASS_NAMES
    pipe = StyleGANPipeline(G)
    assert pipe.label_index("flag") == 2
    assert pipe.label_index("Flags") == 2
    assert pipe.label_index("CIRCLE") == 0
    assert pipe.label_index("1") == 1 and pipe.label_index(1) == 1
    assert pipe.label_index(None) is None
    with pytest.raises(BadParameter) as err:
        pipe.label_index("dragon")
    assert "dragon" in str(err.value)
    for name in CLASS_NAMES:
        assert name in str(err.value)
    with pytest.raises(BadParameter, match="out of range"):
        pipe.label_index(3)
    # A label fixes the class: every image of the batch is generated with it.
    a = pipe(2, seeded(4), label="flag", noise_mode="const", output_type="np")
    b = pipe(2, seeded(4), label=2, noise_mode="const", output_type="np")
    assert np.array_equal(a, b)


def test_label_lookup_handles_group_names() -> None:
    from brushpen.gan.data import EMOJI_GROUPS

    G = StyleGANGenerator(resolution=8, z_dim=8, w_dim=8, mapping_layers=1, channels=[8, 8],
                          num_classes=len(EMOJI_GROUPS), class_names=EMOJI_GROUPS)
    pipe = StyleGANPipeline(G)
    assert pipe.label_index("flag") == EMOJI_GROUPS.index("Flags")
    assert pipe.label_index("food") == EMOJI_GROUPS.index("Food & Drink")
    assert pipe.label_index("animal") == EMOJI_GROUPS.index("Animals & Nature")
    assert pipe.label_index("Animals & Nature") == EMOJI_GROUPS.index("Animals & Nature")


def test_unconditional_model_refuses_a_label() -> None:
    pipe = StyleGANPipeline(tiny_generator(0))
    with pytest.raises(BadParameter, match="unconditional"):
        pipe(1, seeded(0), label="flag")


def test_bad_pipeline_parameters() -> None:
    pipe = StyleGANPipeline(tiny_generator(0))
    with pytest.raises(BadParameter):
        pipe(0, seeded(0))
    with pytest.raises(BadParameter):
        pipe(1, seeded(0), truncation_psi=-0.5)


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    G = tiny_generator(3)
    with torch.no_grad():
        G.mapping.w_avg.normal_()  # buffers must survive the round trip too
    pipe = StyleGANPipeline(G)
    pipe.save_pretrained(tmp_path / "model")
    files = sorted(p.name for p in (tmp_path / "model").iterdir())
    assert "config.json" in files
    assert any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)

    loaded = StyleGANPipeline.from_pretrained(resolve_model(tmp_path / "model"))
    assert loaded.class_names == CLASS_NAMES
    assert loaded.generator.num_ws == G.num_ws
    for (name, a), (_, b) in zip(G.state_dict().items(), loaded.generator.state_dict().items()):
        assert torch.equal(a, b), name
    for psi in (1.0, 0.5):
        a = pipe(3, seeded(11), truncation_psi=psi, output_type="np")
        b = loaded(3, seeded(11), truncation_psi=psi, output_type="np")
        assert np.array_equal(a, b)


@pytest.mark.parametrize("weight_name", ["model.pt", "model.pkl", "diffusion_pytorch_model.bin"])
def test_pickle_only_folder_is_refused(tmp_path: Path, weights_store: Path, weight_name: str) -> None:
    StyleGANPipeline(tiny_generator(0)).save_pretrained(tmp_path / "good")
    for folder in (tmp_path / "bad", weights_store / "gan" / "bad"):
        folder.mkdir(parents=True)
        (folder / "config.json").write_bytes((tmp_path / "good" / "config.json").read_bytes())
        (folder / weight_name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(UnsafeWeights, match=weight_name.replace(".", r"\.")):
        resolve_model(tmp_path / "bad")
    with pytest.raises(UnsafeWeights, match="safetensors"):
        resolve_model("bad", family="gan")
    # The same folder with a safetensors file next to the pickle is fine: the pickle is ignored.
    (tmp_path / "bad" / "model.safetensors").write_bytes(
        (next((tmp_path / "good").glob("*.safetensors"))).read_bytes())
    assert resolve_model(tmp_path / "bad") == tmp_path / "bad"
