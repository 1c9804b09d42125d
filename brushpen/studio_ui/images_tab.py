"""The Images tab: generate from any image model in the store, download, walk between seeds.

GAN models show truncation ψ, style mixing and a class prompt; diffusers pipelines show prompt,
negative prompt, steps, guidance, size and scheduler, as A1111 does. Every image is saved to the
history with its settings, so "PNG info" can read it back later.
"""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from brushpen.generators.history import record_images, record_walk
from brushpen.generators.diffusion import SCHEDULERS
from brushpen.generators.images import (ImageModelInfo, ImageRequest, WalkRequest, generate_images,
                                        image_models, seed_walk)
from brushpen.generators.requests import from_values
from brushpen.studio_ui.common import random_seed, seed_or_none, user_errors, zip_files
from brushpen.studio_ui.i18n import t


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
    gan_box: gr.Group
    sd_box: gr.Group
    paths: gr.State
    to_checker: gr.Button
    backend: gr.Dropdown | None = None

    def settings_outputs(self) -> list:
        """The components `settings_updates` fills, in its order."""
        return [self.model, self.prompt, self.negative, self.seed, self.n, self.psi, self.mix_seed, self.crossover,
                self.steps, self.guidance, self.width, self.height, self.scheduler, self.gan_box, self.sd_box]


def _models() -> dict:
    return {m.name: m for m in image_models()}


def _prompt_look(info: ImageModelInfo | None) -> dict:
    """The prompt box's label and hint: a GAN's prompt is a word naming one of its classes."""
    if info is not None and info.kind == "diffusers":
        return {"label": "Prompt", "placeholder": "Describe the image"}
    hint = ("A word naming a class: " + ", ".join(info.class_names)) if info and info.class_names \
        else "This model takes no prompt"
    return {"label": "Prompt (class)", "placeholder": hint}


def _controls_for(name: str | None) -> list:
    """Show the GAN or the diffusers controls (as A1111 does) and size the image to the model."""
    info = _models().get(name)
    is_gan = info is None or info.kind == "gan"
    side = info.resolution if info else None
    return [gr.update(**_prompt_look(info)), gr.update(visible=not is_gan), gr.update(visible=is_gan),
            gr.update(visible=not is_gan), gr.update(value=side), gr.update(value=side)]


def settings_updates(s: dict) -> list:
    """Every control set to an image's settings (n=1, so the same image comes back), for
    `ImagesTab.settings_outputs`. The model's own controls are shown here rather than by the
    model dropdown's event, which would reset the size to the model's native one."""
    info = _models().get(s.get("model"))
    is_gan = s.get("kind", "gan") == "gan"
    prompt = (s.get("label") or s.get("prompt") or "") if is_gan else (s.get("prompt") or "")
    return [s.get("model"), gr.update(value=prompt, **_prompt_look(info)),
            gr.update(value=s.get("negative_prompt") or "", visible=not is_gan), s.get("seed"), 1,
            s.get("truncation_psi") if s.get("truncation_psi") is not None else 1.0,
            s.get("mix_seed") if s.get("mix_seed") is not None else -1, s.get("mix_cutoff") or 4,
            s.get("steps") or 20, s.get("guidance") if s.get("guidance") is not None else 7.5,
            s.get("width") or 512, s.get("height") or 512, s.get("scheduler") or "default",
            gr.update(visible=is_gan), gr.update(visible=not is_gan)]


def _backends_for(name: str | None) -> dict:
    """The Backend dropdown for a model: torch, plus the edge variants `brushpen export` made for it."""
    info = _models().get(name)
    choices = info.backends if info is not None else ["torch"]
    return gr.update(choices=choices, value="torch", interactive=len(choices) > 1)


@user_errors
def _generate(model: str, prompt: str, negative_prompt: str, seed: float, n: float, truncation_psi: float,
              mix_seed: float, mix_cutoff: float, steps: float, guidance: float, width: float, height: float,
              scheduler: str, backend: str = "torch", progress: gr.Progress = gr.Progress()) -> tuple:
    # The controls by ImageRequest field name; what the model's kind does not use keeps the default.
    info = _models().get(model)
    values = {"model": model, "n": int(n), "seed": seed_or_none(seed), "prompt": prompt or None,
              "truncation_psi": float(truncation_psi), "steps": int(steps), "guidance": float(guidance)}
    if info is None or info.kind == "gan":
        mix = seed_or_none(mix_seed)
        values.update(mix_seed=mix, mix_cutoff=int(mix_cutoff) if mix is not None else None, backend=backend or None)
    else:
        values.update(negative_prompt=negative_prompt or None, width=int(width), height=int(height),
                      scheduler=None if scheduler == "default" else scheduler)
    req = from_values(ImageRequest, values, skip_none=True)
    progress((0, req.n), desc="generating")
    images = generate_images(req, progress=lambda d, t: progress((d, t), desc="generating"))
    items = record_images(images)
    paths = [it.path for it in items]
    first = images[0].settings
    zipped = zip_files(paths, f"{items[0].id}-x{len(paths)}")
    seeds = f"seed {first['seed']}" if len(images) == 1 else f"seeds {first['seed']}–{first['seed'] + len(images) - 1}"
    status = (f"{len(images)} image(s) from **{first['model']}**, {seeds}"
              + (f", class {first['label']}" if first.get("label") else "")
              + (f", backend {first['backend']}" if first.get("backend", "torch") != "torch" else ""))
    gallery = [(p, f"seed {im.settings['seed']}") for p, im in zip(paths, images)]
    return gallery, zipped, status, paths, first["seed"]


@user_errors
def _walk(model: str, seed_a: float, seed_b: float, frames: float, psi: float, prompt: str, fmt: str,
          progress: gr.Progress = gr.Progress()) -> str:
    req = WalkRequest(model=model, seed_a=int(seed_a), seed_b=int(seed_b), frames=int(frames),
                      truncation_psi=float(psi), prompt=prompt or None, format=(fmt or "webp").lower())
    data = seed_walk(req, progress=lambda d, t: progress((d, t), desc="walking"))
    return str(record_walk(req, data).path)


def build() -> ImagesTab:
    models = _models()
    names = list(models)
    first = names[0] if names else None
    info = models.get(first)
    is_gan = info is None or info.kind == "gan"   # the first model's controls show from the start
    side = info.resolution if info else 512
    with gr.Tab(t("Images"), id="images"):
        with gr.Row():
            with gr.Column(scale=2):
                model = gr.Dropdown(names, value=first, label=t("Model"), elem_id="images-model")
                prompt = gr.Textbox(lines=2, elem_id="images-prompt", **_prompt_look(info))
                negative = gr.Textbox(label=t("Negative prompt"), visible=not is_gan, elem_id="images-negative")
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label=t("Seed (-1: random)"), minimum=-1,
                                     elem_id="images-seed")
                    dice = gr.Button(t("🎲 Random"), size="sm", min_width=40, elem_id="images-dice")
                n = gr.Slider(1, 64, value=8, step=1, label=t("Number of images"), elem_id="images-n")
                with gr.Group(visible=is_gan) as gan_box:
                    psi = gr.Slider(0, 1.5, value=0.7, step=0.05, label=t("Truncation ψ"), elem_id="images-psi")
                    mix_seed = gr.Number(value=-1, precision=0, label=t("Style-mix seed (-1: off)"), minimum=-1)
                    crossover = gr.Slider(1, 9, value=4, step=1, label=t("Style-mix crossover layer"))
                    backends = info.backends if info is not None else ["torch"]
                    backend = gr.Dropdown(backends, value="torch", label=t("Backend (onnx: noise off, no style mix)"),
                                          interactive=len(backends) > 1, elem_id="images-backend")
                with gr.Group(visible=not is_gan) as sd_box:
                    steps = gr.Slider(1, 150, value=20, step=1, label=t("Steps"), elem_id="images-steps")
                    guidance = gr.Slider(0, 30, value=7.5, step=0.5, label=t("Guidance (CFG scale)"))
                    with gr.Row():
                        width = gr.Number(value=side, precision=0, label=t("Width"), elem_id="images-width")
                        height = gr.Number(value=side, precision=0, label=t("Height"), elem_id="images-height")
                    scheduler = gr.Dropdown(["default", *SCHEDULERS], value="default",
                                            label=t("Scheduler (default: the pipeline's own)"))
                go = gr.Button(t("Generate"), variant="primary", elem_id="images-generate")
            with gr.Column(scale=3):
                gallery = gr.Gallery(label=t("Images"), format="png", columns=4, elem_id="images-gallery")
                status = gr.Markdown(elem_id="images-status")
                with gr.Row():
                    zipped = gr.File(label=t("Download all (zip)"))
                    to_checker = gr.Button(t("Send to checker"), elem_id="images-to-checker")
        with gr.Accordion(t("Seed walk"), open=False):
            with gr.Row():
                seed_a = gr.Number(value=0, precision=0, label=t("From seed"))
                seed_b = gr.Number(value=1, precision=0, label=t("To seed"))
                frames = gr.Slider(2, 60, value=16, step=1, label=t("Frames"))
                # Lossless WebP keeps the provenance watermark; GIF's palette loses it but plays anywhere.
                fmt = gr.Radio(["WebP", "GIF"], value="WebP", label=t("Format"))
                walk_go = gr.Button(t("Walk"), elem_id="images-walk-go")
            walk_out = gr.Image(label=t("Seed walk (animated)"), type="filepath", elem_id="images-walk")
        paths = gr.State([])

    # .input (the user picked a model), not .change: a PNG-info re-run sets the model and the size
    # together, and .change would then reset the size to the model's native one.
    model.input(_controls_for, model, [prompt, negative, gan_box, sd_box, width, height], concurrency_id="light")
    model.input(_backends_for, model, backend, concurrency_id="light")
    dice.click(random_seed, None, seed, concurrency_id="light")
    go.click(_generate, [model, prompt, negative, seed, n, psi, mix_seed, crossover, steps, guidance, width,
                         height, scheduler, backend], [gallery, zipped, status, paths, seed_a],
             concurrency_id="images", concurrency_limit=1, api_name="generate_images")
    walk_go.click(_walk, [model, seed_a, seed_b, frames, psi, prompt, fmt], walk_out,
                  concurrency_id="images", concurrency_limit=1, api_name="seed_walk")
    return ImagesTab(model, prompt, negative, seed, n, psi, mix_seed, crossover, steps, guidance, width,
                     height, scheduler, gan_box, sd_box, paths, to_checker, backend)
