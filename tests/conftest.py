"""Shared fixtures: one torch thread, a private store and home, and tiny synthetic image folders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# The box has two cores and a long training run holds one: every test stays on one thread.
torch.set_num_threads(1)
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["BRUSHPEN_THREADS"] = "1"
os.environ["OMP_NUM_THREADS"] = "1"

REPO = Path(__file__).resolve().parent.parent
PYTHON = str(REPO / ".venv" / "bin" / "python")
CLASS_NAMES = ["Circles", "Squares", "Flags"]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: one thread, offline, our store and home."""
    env = dict(os.environ)
    env.update({"BRUSHPEN_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "BRUSHPEN_DEVICE": "cpu"})
    env.update(extra)
    return env


def apply_copy_events(events) -> tuple[list[str], int, object]:
    """Apply `stream_copy`'s events as a display does (append a delta, swap on replace, clear on
    drop): the variants shown at the end, how many deltas came, and the `done` event's result."""
    shown: dict[int, str] = {}
    deltas, result = 0, None
    for ev in events:
        if ev.kind == "delta":
            shown[ev.variant] = shown.get(ev.variant, "") + ev.text
            deltas += 1
        elif ev.kind == "replace":
            shown[ev.variant] = ev.text
        elif ev.kind == "drop":
            shown.pop(ev.variant, None)
        elif ev.kind == "done":
            result = ev.result
    return [shown[i] for i in sorted(shown)], deltas, result


@pytest.fixture
def brushpen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("BRUSHPEN_HOME", str(home))
    return home


@pytest.fixture
def weights_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "weights"
    store.mkdir()
    monkeypatch.setenv("BRUSHPEN_WEIGHTS", str(store))
    return store


def shape_image(kind: int, colour: tuple[int, int, int], size: int, offset: int) -> Image.Image:
    """A white tile with a coloured circle (0), square (1) or two-band flag (2)."""
    arr = np.full((size, size, 3), 255, dtype=np.uint8)
    yy, xx = np.mgrid[:size, :size]
    c = size / 2 - 0.5 + offset
    if kind == 0:
        mask = (yy - c) ** 2 + (xx - c) ** 2 <= (size / 3) ** 2
    elif kind == 1:
        mask = (abs(yy - c) <= size / 4) & (abs(xx - c) <= size / 4)
    else:
        mask = yy < size // 2
        arr[~mask] = (255 - colour[0], 255 - colour[1], 255 - colour[2])
    arr[mask] = colour
    return Image.fromarray(arr)


def write_shape_folder(folder: Path, n: int = 64, size: int = 16, seed: int = 0) -> dict:
    """n PNGs of simple coloured shapes and a dataset.json labelling each with its shape."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(n):
        kind = i % len(CLASS_NAMES)
        colour = tuple(int(v) for v in rng.integers(0, 200, 3))
        name = f"img{i:03d}.png"
        shape_image(kind, colour, size, int(rng.integers(-1, 2))).save(folder / name)
        labels.append([name, kind])
    spec = {"labels": labels, "class_names": CLASS_NAMES}
    (folder / "dataset.json").write_text(json.dumps(spec), encoding="utf-8")
    return spec


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 labelled 16x16 shape images (read-only: tests must not write into it)."""
    folder = tmp_path_factory.mktemp("shapes")
    write_shape_folder(folder)
    return folder


def tiny_generator(num_classes: int = 3, resolution: int = 16, seed: int = 0):
    """A small, randomly initialised generator (a few thousand parameters)."""
    from brushpen.gan.networks import StyleGANGenerator

    torch.manual_seed(seed)
    names = CLASS_NAMES[:num_classes] if num_classes else None
    channels = [32, 16, 8] if resolution == 16 else [32, 16, 8, 8]
    G = StyleGANGenerator(resolution=resolution, z_dim=16, w_dim=16, mapping_layers=2,
                          channels=channels, num_classes=num_classes, class_names=names)
    # Noise strengths start at zero; make them count so noise handling is really exercised.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
    return G.eval()


def save_tiny_sd_pipeline(folder: Path) -> Path:
    """A randomly initialised, tiny StableDiffusionPipeline (UNet, VAE, CLIP text encoder, tokenizer),
    built from configs here and saved as safetensors: no weights of this shape exist offline.

    It draws 32x32 noise-like images in well under a second per step, which is all the plumbing
    (model add, prompts, schedulers, seeds, metadata) needs.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16,
                                attention_head_dim=4,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        norm_num_groups=8, layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=600, hidden_size=16, intermediate_size=32,
                                                num_hidden_layers=2, num_attention_heads=2,
                                                max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                                pad_token_id=1))
    # A character-level CLIP vocabulary (no merges): enough to tokenize any lowercase ASCII prompt.
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789.,!?'-":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
