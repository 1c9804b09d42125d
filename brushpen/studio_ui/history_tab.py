"""The History tab: recent outputs with their settings, and "PNG info" to read an image's settings
back from its file and re-run them in the Images tab."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from brushpen.generators.history import HistoryItem, list_history
from brushpen.generators.images import format_parameters, read_png_settings
from brushpen.studio_ui.common import user_errors
from brushpen.studio_ui.images_tab import ImagesTab, settings_updates
from brushpen.studio_ui.i18n import t


def _caption(it: HistoryItem) -> str:
    s = it.settings
    if it.kind == "walk":
        return f"{s.get('model')} · walk {s.get('seed_a')}→{s.get('seed_b')}"
    return f"{s.get('model')} · seed {s.get('seed')}"


def _recent() -> tuple[list, list[list]]:
    """The newest images and walks (one gallery) and copy results (a table), newest first."""
    images = [(it.path, _caption(it)) for it in list_history(500) if it.kind != "copy"][:48]
    copy = [[it.id, it.settings.get("brief", ""), it.settings.get("kind", ""), it.settings.get("seed"),
             " | ".join(it.texts)] for it in list_history(50, "copy")]
    return images, copy


@user_errors
def _png_info(file: str | None) -> tuple[str, dict]:
    if not file:   # the file was cleared: nothing to show, and nothing wrong
        return "", {}
    settings = read_png_settings(Path(file))
    if not settings:
        return "This image carries no generation settings.", {}
    if set(settings) == {"parameters"}:
        return f"Made elsewhere (A1111-style parameters):\n\n```\n{settings['parameters']}\n```", {}
    return f"```\n{format_parameters(settings)}\n```", settings


def _rerun(settings: dict) -> list:
    """The Images tab set to an image's settings, and shown."""
    if not settings:
        raise gr.Error("read an image's settings first")
    return settings_updates(settings) + [gr.Tabs(selected="images")]


def build(images: ImagesTab, tabs: gr.Tabs) -> None:
    with gr.Tab(t("History"), id="history") as tab:
        refresh = gr.Button(t("Refresh"), size="sm")
        gallery = gr.Gallery(label=t("Recent images and walks"), format="png", columns=8, elem_id="history-gallery",
                             value=lambda: _recent()[0])
        table = gr.Dataframe(headers=["id", "brief", "kind", "seed", "variants"], interactive=False,
                             value=lambda: _recent()[1], label=t("Recent copy"), elem_id="history-copy")
        with gr.Accordion(t("PNG info"), open=True):
            with gr.Row():
                drop = gr.File(label=t("Drop an image made here"), file_types=["image"], type="filepath",
                               elem_id="pnginfo-file")
                with gr.Column():
                    text = gr.Markdown(elem_id="pnginfo-text")
                    settings = gr.JSON(label=t("settings"))
                    rerun = gr.Button(t("Send to Images"), elem_id="pnginfo-rerun")
    refresh.click(_recent, None, [gallery, table], concurrency_id="light")
    tab.select(_recent, None, [gallery, table], concurrency_id="light", api_name=False)
    drop.change(_png_info, drop, [text, settings], concurrency_id="light", api_name="png_info")
    rerun.click(_rerun, settings, images.settings_outputs() + [tabs], concurrency_id="light", api_name="rerun")
