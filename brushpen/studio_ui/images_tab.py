"""The Images tab: generate from any image model in the store, download, walk between seeds.

GAN models show truncation ψ, style mixing and a class prompt; diffusers pipelines show prompt,
negative prompt, steps, guidance, size and scheduler, as A1111 does. Every image is saved to the
history with its settings, so "PNG info" can read it back later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import gradio as gr

from brushpen.generators.history import history_dir, record_images
from brushpen.generators.images import (ImageRequest, WalkRequest, generate_images, image_models,
                                        seed_walk)
from brushpen.store import atomic_write_bytes
from brushpen.studio_ui.common import random_seed, seed_or_none, user_errors, zip_files


@dataclass
class ImagesTab:
    """The components other tabs write into (PNG info re-runs) or read from (send to checker)."""

    model: gr.Dropdown
    prompt: gr.Textbox
    negative: gr.Textbox
    seed: gr.Number
    n: gr.Slider
    psi: gr.Slider
    mix_seed: gr.Number
    crossover: gr.Slider
    steps: gr.Slider
    guidance: gr.Slider
    width: gr.Number
    height: gr.Number
    scheduler: gr.Dropdown
    paths: gr.State
    to_checker: gr.Button


def _models() -> dict:
    return {m.name: m for m in image_models()}


def _controls_for(name: str | None) -> list:
    """Show the GAN or the diffusers controls, and say which classes a GAN prompt can name."""
    info = _models().get(name)
    is_gan = info is None or info.kind == "gan"
    hint = ("A word naming a class: " + ", ".join(info.class_names)) if is_gan and info and info.class_names \
        else ("This model takes no prompt" if is_gan else "Describe the image")
    side = info.resolution if info else None
    return [gr.update(placeholder=hint, label="Prompt (class)" if is_gan else "Prompt"),
            gr.update(visible=not is_gan), gr.update(visible=is_gan), gr.update(visible=not is_gan),
            gr.update(value=side), gr.update(value=side)]


@user_errors
def _generate(model: str, prompt: str, negative: str, seed: float, n: float, psi: float, mix_seed: float,
              crossover: float, steps: float, guidance: float, width: float, height: float, scheduler: str,
              progress: gr.Progress = gr.Progress()) -> tuple:
    info = _models().get(model)
    is_gan = info is None or info.kind == "gan"
    mix = seed_or_none(mix_seed) if is_gan else None
    req = ImageRequest(model=model, n=int(n), seed=seed_or_none(seed), prompt=prompt or None,
                       truncation_psi=float(psi), mix_seed=mix, mix_cutoff=int(crossover) if mix is not None else None,
                       negative_prompt=None if is_gan else (negative or None), steps=int(steps),
                       guidance=float(guidance), scheduler=None if is_gan or scheduler in (None, "default") else scheduler,
                       width=None if is_gan else int(width), height=None if is_gan else int(height))
    progress((0, req.n), desc="generating")
    images = generate_images(req, progress=lambda d, t: progress((d, t), desc="generating"))
    items = record_images(images)
    paths = [it.path for it in items]
    first = images[0].settings
    zipped = zip_files(paths, f"{items[0].id}-x{len(paths)}")
    status = (f"{len(images)} image(s) from **{first['model']}**, seeds {first['seed']}–{first['seed'] + len(images) - 1}"
              + (f", class {first['label']}" if first.get("label") else ""))
    gallery = [(p, f"seed {im.settings['seed']}") for p, im in zip(paths, images)]
    return gallery, zipped, status, paths, first["seed"]


@user_errors
def _walk(model: str, seed_a: float, seed_b: float, frames: float, psi: float, prompt: str,
          progress: gr.Progress = gr.Progress()) -> str:
    req = WalkRequest(model=model, seed_a=int(seed_a), seed_b=int(seed_b), frames=int(frames),
                      truncation_psi=float(psi), prompt=prompt or None, format="webp")
    data = seed_walk(req, progress=lambda d, t: progress((d, t), desc="walking"))
    name = f"walk-{time.strftime('%Y%m%d-%H%M%S')}-{req.model}-{req.seed_a}-{req.seed_b}.webp"
    return str(atomic_write_bytes(history_dir() / "walks" / name, data))


def build() -> ImagesTab:
    models = _models()
    names = list(models)
    first = names[0] if names else None
    with gr.Tab("Images", id="images"):
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Dropdown(names, value=first, label="Model")
                prompt = gr.Textbox(label="Prompt (class)", lines=2)
                negative = gr.Textbox(label="Negative prompt", visible=False)
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label="Seed (-1: random)", minimum=-1)
                    dice = gr.Button("Random seed", size="sm")
                n = gr.Slider(1, 64, value=8, step=1, label="Number of images")
                with gr.Group(visible=True) as gan_box:
                    psi = gr.Slider(0, 1.5, value=0.7, step=0.05, label="Truncation ψ")
                    mix_seed = gr.Number(value=-1, precision=0, label="Style-mix seed (-1: off)", minimum=-1)
                    crossover = gr.Slider(1, 9, value=4, step=1, label="Style-mix crossover layer")
                with gr.Group(visible=False) as sd_box:
                    steps = gr.Slider(1, 150, value=20, step=1, label="Steps")
                    guidance = gr.Slider(0, 30, value=7.5, step=0.5, label="Guidance (CFG scale)")
                    with gr.Row():
                        width = gr.Number(value=512, precision=0, label="Width")
                        height = gr.Number(value=512, precision=0, label="Height")
                    scheduler = gr.Dropdown(["default", "euler", "euler-a", "dpm++2m", "ddim", "pndm", "lms", "unipc"],
                                            value="default", label="Scheduler")
                go = gr.Button("Generate", variant="primary", elem_id="images-generate")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label="Images", format="png", columns=4, elem_id="images-gallery")
                status = gr.Markdown(elem_id="images-status")
                with gr.Row():
                    zipped = gr.File(label="Download all (zip)")
                    to_checker = gr.Button("Send to checker")
        with gr.Accordion("Seed walk", open=False):
            with gr.Row():
                seed_a = gr.Number(value=0, precision=0, label="From seed")
                seed_b = gr.Number(value=1, precision=0, label="To seed")
                frames = gr.Slider(2, 60, value=16, step=1, label="Frames")
                walk_go = gr.Button("Walk")
            walk_out = gr.Image(label="Seed walk (animated WebP)", type="filepath", elem_id="images-walk")
        paths = gr.State([])

    model.change(_controls_for, model, [prompt, negative, gan_box, sd_box, width, height], concurrency_id="light")
    dice.click(random_seed, None, seed, concurrency_id="light")
    go.click(_generate, [model, prompt, negative, seed, n, psi, mix_seed, crossover, steps, guidance, width,
                         height, scheduler], [gallery, zipped, status, paths, seed_a],
             concurrency_id="images", concurrency_limit=1, api_name="generate_images")
    walk_go.click(_walk, [model, seed_a, seed_b, frames, psi, prompt], walk_out,
                  concurrency_id="images", concurrency_limit=1, api_name="seed_walk")
    return ImagesTab(model, prompt, negative, seed, n, psi, mix_seed, crossover, steps, guidance, width,
                     height, scheduler, paths, to_checker)
