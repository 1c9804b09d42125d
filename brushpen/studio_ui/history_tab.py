"""The History tab: recent outputs with their settings, and "PNG info" to read an image's settings
back from its file and re-run them in the Images tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from brushpen.errors import BadInput
from brushpen.generators.history import list_history
from brushpen.generators.images import format_parameters, read_png_settings
from brushpen.studio_ui.common import user_errors
from brushpen.studio_ui.images_tab import ImagesTab


def _recent() -> tuple[list, list[list]]:
    images = [(it.path, f"{it.settings.get('model')} · seed {it.settings.get('seed')}")
              for it in list_history(48, "image")]
    copy = [[it.id, it.settings.get("brief", ""), it.settings.get("kind", ""), it.settings.get("seed"),
             " | ".join(it.texts)] for it in list_history(50, "copy")]
    return images, copy


@user_errors
def _png_info(file: str | None) -> tuple[str, dict]:
    if not file:
        raise BadInput("drop a PNG made by brushpen to read its settings")
    settings = read_png_settings(Path(file))
    if not settings:
        return "This image carries no generation settings.", {}
    if set(settings) == {"parameters"}:
        return f"Made elsewhere (A1111-style parameters):\n\n```\n{settings['parameters']}\n```", {}
    return f"```\n{format_parameters(settings)}\n```", settings


def _rerun(settings: dict) -> list:
    """The Images tab's controls set to an image's settings (n=1, so the same image comes back)."""
    if not settings:
        raise gr.Error("read an image's settings first")
    s = settings
    is_gan = s.get("kind", "gan") == "gan"
    return [s.get("model"), (s.get("label") or s.get("prompt") or "") if is_gan else (s.get("prompt") or ""),
            s.get("negative_prompt") or "", s.get("seed"), 1,
            s.get("truncation_psi") if s.get("truncation_psi") is not None else 1.0,
            s.get("mix_seed") if s.get("mix_seed") is not None else -1, s.get("mix_cutoff") or 4,
            s.get("steps") or 20, s.get("guidance") if s.get("guidance") is not None else 7.5,
            s.get("width") or 512, s.get("height") or 512, s.get("scheduler") or "default",
            gr.Tabs(selected="images")]


def build(images: ImagesTab, tabs: gr.Tabs) -> None:
    with gr.Tab("History", id="history"):
        refresh = gr.Button("Refresh")
        gallery = gr.Gallery(label="Recent images", format="png", columns=8, value=lambda: _recent()[0])
        table = gr.Dataframe(headers=["id", "brief", "kind", "seed", "variants"], interactive=False,
                             value=lambda: _recent()[1], label="Recent copy")
        with gr.Accordion("PNG info", open=True):
            with gr.Row():
                drop = gr.File(label="Drop an image made here", file_types=["image"], type="filepath",
                               elem_id="pnginfo-file")
                with gr.Column():
                    text = gr.Markdown(elem_id="pnginfo-text")
                    settings = gr.JSON(label="settings")
                    rerun = gr.Button("Send to Images")
    refresh.click(_recent, None, [gallery, table], concurrency_id="light")
    drop.change(_png_info, drop, [text, settings], concurrency_id="light", api_name="png_info")
    rerun.click(_rerun, settings, [images.model, images.prompt, images.negative, images.seed, images.n, images.psi,
                                   images.mix_seed, images.crossover, images.steps, images.guidance, images.width,
                                   images.height, images.scheduler, tabs], concurrency_id="light")
