"""Local diffusers text-to-image pipelines as image models (`brushpen models add PATH`).

A user who already has a Stable Diffusion or SD-Turbo folder on disk links it into the store's
`diffusers/` family; this module loads it offline (safetensors only, never a pickle), swaps its
scheduler by name as A1111's sampler menu does, and runs it with a per-image seed.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from brushpen.errors import BadParameter, BrokenModel

# Menu name -> diffusers scheduler class. Each is built from the pipeline's own scheduler config,
# so the noise schedule the model was trained with is kept.
SCHEDULERS = {
    "euler": "EulerDiscreteScheduler",
    "euler-a": "EulerAncestralDiscreteScheduler",
    "dpm++2m": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
}
MAX_STEPS = 150
MAX_SIDE = 2048


@dataclass
class DiffusionCall:
    prompt: str
    negative_prompt: str | None
    steps: int
    guidance: float
    width: int
    height: int
    scheduler: str | None


def pipeline_index(path: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(path) / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise BrokenModel(f"{path}/model_index.json is unreadable: {e}") from e


def native_size(path: Path) -> int:
    """The pipeline's default image side: the UNet's latent size times the VAE's down-sampling."""
    try:
        unet = json.loads((Path(path) / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((Path(path) / "vae" / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return 512
    size = unet.get("sample_size", 64)
    size = size[0] if isinstance(size, (list, tuple)) else size
    return int(size) * 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)


def size_multiple(path: Path) -> int:
    """Width and height must be multiples of this (VAE down-sampling times the UNet's)."""
    try:
        unet = json.loads((Path(path) / "unet" / "config.json").read_text(encoding="utf-8"))
        vae = json.loads((Path(path) / "vae" / "config.json").read_text(encoding="utf-8"))
        return 2 ** (len(vae["block_out_channels"]) - 1) * 2 ** (len(unet["block_out_channels"]) - 1)
    except (OSError, json.JSONDecodeError, KeyError):
        return 8


@lru_cache(maxsize=2)
def load_pipeline(path: str) -> Any:
    import diffusers
    import transformers
    from diffusers import DiffusionPipeline

    # Loading logs a progress bar per component and warnings about optional image processors.
    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        pipe = DiffusionPipeline.from_pretrained(path, use_safetensors=True, local_files_only=True)
    except (OSError, ValueError, EnvironmentError) as e:
        raise BrokenModel(f"could not load the diffusers pipeline at {path}: {e}") from e
    if "prompt" not in inspect.signature(pipe.__call__).parameters:
        raise BrokenModel(f"{path} holds a {type(pipe).__name__}, not a text-to-image pipeline")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def check_call(path: Path, call: DiffusionCall) -> None:
    if not call.prompt or not call.prompt.strip():
        raise BadParameter("this is a text-to-image model: give a prompt")
    if not 1 <= call.steps <= MAX_STEPS:
        raise BadParameter(f"steps must lie in 1..{MAX_STEPS}, got {call.steps}")
    if not 0 <= call.guidance <= 30:
        raise BadParameter(f"guidance must lie in 0..30, got {call.guidance}")
    mult = size_multiple(path)
    for side, value in (("width", call.width), ("height", call.height)):
        if not mult <= value <= MAX_SIDE or value % mult:
            raise BadParameter(f"{side} must be a multiple of {mult} in {mult}..{MAX_SIDE}, got {value}")
    if call.scheduler is not None and call.scheduler not in SCHEDULERS:
        raise BadParameter(f"unknown scheduler '{call.scheduler}': choose one of {', '.join(SCHEDULERS)}")


def run(path: Path, call: DiffusionCall, seed: int,
        on_step: Callable[[int], None] | None = None) -> Any:
    """One image from one seed; `on_step(i)` after each denoising step. Returns a PIL image."""
    import diffusers

    pipe = load_pipeline(str(path))
    default = getattr(pipe, "_brushpen_default_scheduler", None)
    if default is None:
        default = pipe._brushpen_default_scheduler = pipe.scheduler
    pipe.scheduler = default if call.scheduler is None else \
        getattr(diffusers, SCHEDULERS[call.scheduler]).from_config(default.config)

    def step_end(_pipe: Any, i: int, _t: Any, kwargs: dict) -> dict:
        if on_step is not None:
            on_step(i + 1)
        return kwargs

    with torch.inference_mode():
        out = pipe(prompt=call.prompt, negative_prompt=call.negative_prompt or None,
                   num_inference_steps=call.steps, guidance_scale=call.guidance,
                   width=call.width, height=call.height,
                   generator=torch.Generator().manual_seed(seed), callback_on_step_end=step_end)
    return out.images[0]
