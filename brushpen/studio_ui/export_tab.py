"""The Export tab: turn a model into its edge variants (ONNX fp32, int8, a distilled student) with
progress, then show the parity and quality report the export wrote. It calls `edge.export`, the
service behind `brushpen export`."""

from __future__ import annotations

import json

import gradio as gr

from brushpen import families
from brushpen.edge.common import available_backends, find_edge_dir
from brushpen.edge.export import ExportRequest, export_model, model_family
from brushpen.store import list_models
from brushpen.studio_ui.common import user_errors
from brushpen.studio_ui.i18n import t

def exportable() -> list[str]:
    """Store models of the families that export, plus the text base (which lives in the cache)."""
    return [m.name for m in list_models() if m.family in families.exportable()
            and (m.path / "config.json").exists()] + [families.default_model("text")]


def report_rows(model: str) -> tuple[list[list[str]], str]:
    """(rows of edge/report.json, a one-line summary) for the model, empty when never exported."""
    path, _ = model_family(model)
    edge = find_edge_dir(path)
    backends = ", ".join(available_backends(path))
    if edge is None or not (edge / "report.json").exists():
        return [], f"**{model}**: not exported yet. Backends: {backends}."
    report = json.loads((edge / "report.json").read_text(encoding="utf-8"))
    rows = [[variant, key, f"{value:.4g}" if isinstance(value, float) else str(value)]
            for variant, figures in report.items() for key, value in figures.items()]
    return rows, f"**{model}**: edge files in `{edge}`. Backends: {backends}."


@user_errors
def run_export(model: str, int8: bool, student: bool, progress: gr.Progress = gr.Progress()):
    if not model:
        raise gr.Error("pick a model to export")
    progress(0.0, desc="starting")
    export_model(ExportRequest(model, int8=int8, student=student), lambda stage, frac: progress(frac, desc=stage))
    return report_rows(model)


@user_errors
def show(model: str):
    return report_rows(model) if model else ([], "")


def build() -> None:
    with gr.Tab(t("Export"), id="export"):
        gr.Markdown("Export a model to ONNX for onnxruntime: fp32, optionally int8 and a distilled student. "
                    "The Images, Copy and Checker tabs can then run it with their Backend picker. "
                    "A student distils for several minutes on the CPU.")
        models = exportable()
        with gr.Row():
            model = gr.Dropdown(models, value=models[0] if models else None, label=t("Model"))
            int8 = gr.Checkbox(True, label=t("int8 (static QDQ for convnets, blockwise int8 MatMul for the LM)"))
            student = gr.Checkbox(False, label=t("distil a student (GAN, detector)"))
            go = gr.Button(t("Export"), variant="primary")
        summary = gr.Markdown()
        table = gr.Dataframe(headers=["variant", "figure", "value"], interactive=False, label=t("Report"))
        go.click(run_export, [model, int8, student], [table, summary], concurrency_id="export",
                 api_name="export")
        model.change(show, model, [table, summary], concurrency_id="light")
