"""The Checker tab: drop images or a zip, get a verdict, score, heatmap and provenance per image,
a sortable table and a CSV. Images from the Images tab arrive here with "Send to checker"."""

from __future__ import annotations

import time
from pathlib import Path

import gradio as gr

from brushpen.edge.common import available_backends
from brushpen.errors import BrushpenError
from brushpen.families import default_model
from brushpen.generators.history import history_dir
from brushpen.store import resolve_model
from brushpen.studio_ui.common import user_errors
from brushpen.studio_ui.i18n import t

COLUMNS = ["file", "verdict", "score", "decided by", "watermark", "content credentials", "model (PNG)", "error",
           "why out of scope"]


def receive(paths: list[str]) -> tuple:
    """The Images tab's latest images, put into this tab's input, and this tab shown."""
    if not paths:
        raise gr.Error("generate some images first")
    return paths, gr.Tabs(selected="checker")


@user_errors
def _check(files: list[str] | None, heatmaps: bool, backend: str = "torch", scope_gate: bool = True,
           progress: gr.Progress = gr.Progress()) -> tuple:
    from brushpen.generators.checker import scan_paths, summarize, write_csv

    if not files:
        raise gr.Error("drop one or more images, or a zip of them")
    run = history_dir() / "checks" / time.strftime("%Y%m%d-%H%M%S")
    results = []
    for r in progress.tqdm(scan_paths([Path(f) for f in files], heatmaps_dir=run / "heatmaps" if heatmaps else None,
                                      backend=backend or "torch", scope_gate=scope_gate),
                              desc="checking", total=None):
        results.append(r)
    rows = []
    for r in results:
        mark = (r.provenance or {}).get("watermark") or {}
        settings = (r.provenance or {}).get("settings") or {}
        cred = (r.provenance or {}).get("credentials") or {}
        rows.append([Path(r.path).name, r.verdict or "", r.score if r.score is not None else None, r.basis or "",
                     ("brushpen: " + str(mark.get("model") or "?")) if mark.get("found") else "none",
                     _credential_cell(cred), settings.get("model", ""), r.error or "", r.scope or ""])
    csv_path = write_csv(results, run / "report.csv")
    shown = [(r.heatmap, f"{r.verdict} {r.score:.2f}") for r in results if r.heatmap] if heatmaps else []
    counts = summarize(results)
    status = ", ".join(f"{k}: {v}" for k, v in counts.items())
    return rows, str(csv_path), shown, status, credentials_panel(results)


def _credential_cell(cred: dict) -> str:
    state = cred.get("state") or "none"
    return state + (" (recovered)" if cred.get("recovered") else "")


def credentials_panel(results: list) -> str:
    """The "Content Credentials" panel: per image, the C2PA state, who signed, what it declares, and
    the verdict's evidence. A manifest that fails validation is flagged."""
    lines = []
    for r in results:
        cred = (r.provenance or {}).get("credentials") or {}
        state = cred.get("state") or "none"
        name = Path(r.path).name
        if r.error:
            continue
        if state == "none":
            line = f"- **{name}**: no Content Credentials"
        else:
            flag = "⚠️ **invalid manifest**" if state == "invalid" else f"`{state}`"
            line = (f"- **{name}**: {flag}" + (" (recovered through the brushpen watermark)" if cred.get("recovered")
                                               else "")
                    + f"; claim generator {cred.get('claim_generator') or '?'}; signer {cred.get('signer') or '?'}; "
                    + ("declares AI generation" if cred.get("ai_generated") else "no AI declaration"))
            if cred.get("codes"):
                line += f"; codes: {', '.join(cred['codes'])}"
        if r.basis == "provenance":
            line += f". **Verdict ai-made (provenance)**: {'; '.join(r.evidence)}"
        lines.append(line)
    return "**Content Credentials (C2PA)**\n\n" + ("\n".join(lines) if lines else "No image could be read.")


def _backends() -> list[str]:
    """What the detector has: torch, plus the variants `brushpen export detector` made."""
    try:
        return available_backends(resolve_model(default_model("safety"), family="safety"))
    except BrushpenError:
        return ["torch"]


def build() -> gr.File:
    with gr.Tab(t("Checker"), id="checker"):
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(label=t("Images or a zip"), file_count="multiple", type="filepath",
                                elem_id="checker-files")
                heatmaps = gr.Checkbox(value=True, label=t("Heatmaps"))
                scope_gate = gr.Checkbox(value=True, label=t("Answer out-of-scope for non-photos"),
                                         info="emoji, drawings and text get no score the detector cannot back; "
                                              "untick to score them anyway", elem_id="checker-scope-gate")
                backend = gr.Dropdown(_backends(), value="torch", label=t("Backend"), elem_id="checker-backend",
                                      info="onnx, onnx-int8 and student run the variants `brushpen export detector` made")
                go = gr.Button(t("Check"), variant="primary", elem_id="checker-go")
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="checker-status")
                table = gr.Dataframe(headers=COLUMNS, interactive=False, label=t("Verdicts (click a header to sort)"),
                                     elem_id="checker-table")
                creds = gr.Markdown(label=t("Content Credentials"), elem_id="checker-credentials",
                                    container=True)
                csv_file = gr.File(label=t("Report (CSV)"))
                maps = gr.Gallery(label=t("Heatmaps"), format="png", columns=6)
    go.click(_check, [files, heatmaps, backend, scope_gate], [table, csv_file, maps, status, creds],
             concurrency_id="checker",
             concurrency_limit=1, api_name="check_images")
    return files
