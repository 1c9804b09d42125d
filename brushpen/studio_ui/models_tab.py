"""The Models tab: every model in the store with its card and metrics, and the job queue."""

from __future__ import annotations

import gradio as gr

from brushpen.store import list_models
from brushpen.studio_ui import queue_panel
from brushpen.studio_ui.i18n import t


def _rows() -> list[list[str]]:
    return [[m.family, m.name, f"{m.size_bytes / 1e6:.1f} MB", m.key_metric(), ", ".join(m.adapters)]
            for m in list_models()]


def _show(ref: str | None) -> tuple[str, dict]:
    for m in list_models():
        if m.ref == ref:
            return m.card() or "_(this model has no card)_", m.metrics
    return "", {}


def build() -> None:
    with gr.Tab(t("Models"), id="models"):
        table = gr.Dataframe(value=_rows, headers=["family", "name", "size", "key metric", "adapters"],
                             interactive=False, label=t("Models in the store"))
        refs = [m.ref for m in list_models()]
        pick = gr.Dropdown(refs, value=refs[0] if refs else None, label=t("Model"))
        with gr.Row():
            card = gr.Markdown(value=lambda: _show(refs[0])[0] if refs else "")
            metrics = gr.JSON(value=lambda: _show(refs[0])[1] if refs else {}, label=t("metrics.json"))
        refresh = gr.Button(t("Refresh"))
        pick.change(_show, pick, [card, metrics], concurrency_id="models", api_name="model_card")
        refresh.click(lambda: (_rows(), gr.update(choices=[m.ref for m in list_models()])),
                      None, [table, pick], concurrency_id="models")
        queue_panel.build()
