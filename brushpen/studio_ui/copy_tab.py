"""The Copy tab: a brief in, up to 16 variants in their own boxes: picked from checked drafts
(deliberate mode, the default), or streamed as they are written (plain sampling).

It applies `stream_copy`'s events (append a delta, swap on replace, clear on drop) to one box per
variant, so what the boxes end with equals `generate_copy`'s result for the same seed. Each box has
a copy button; the finished result goes into the history.
"""

from __future__ import annotations

from typing import Iterator

import gradio as gr

from brushpen.generators.copy import (DELIBERATE_TEMPERATURE, MAX_VARIANTS, CopyRequest, copy_models,
                                      plain_temperature, stream_copy)
from brushpen.generators.history import record_copy
from brushpen.studio_ui.common import random_seed, seed_or_none, user_errors
from brushpen.text.prompts import KINDS
from brushpen.studio_ui.i18n import t

DEFAULTS = CopyRequest(brief="-")


def _boxes(texts: list[str | None], n: int) -> list:
    return [gr.update(value=t or "", visible=i < n) for i, t in enumerate(texts)]


@user_errors
def _write(brief: str, kind: str, tone: str, audience: str, n: float, temperature: float, top_p: float,
           top_k: float, repetition_penalty: float, max_new_tokens: float, seed: float,
           backend: str = "torch", model: str | None = None, deliberate: bool = True,
           draft: float = DEFAULTS.draft, lang: str = "en") -> Iterator[list]:
    req = CopyRequest(brief=brief, kind=kind, tone=tone or None, audience=audience or None, n=int(n),
                      temperature=float(temperature), top_p=float(top_p), top_k=int(top_k),
                      repetition_penalty=float(repetition_penalty), max_new_tokens=int(max_new_tokens),
                      seed=seed_or_none(seed), backend=backend or "torch", model=model or None,
                      deliberate=bool(deliberate), draft=int(draft), lang=lang or "en")
    req.validate()  # a clear message before any box changes
    texts: list[str | None] = [""] * MAX_VARIANTS
    working = f"drafting {req.drafts} candidates and checking them..." if req.deliberate else "writing..."
    yield _boxes(texts, req.n) + [working]
    for ev in stream_copy(req):
        if ev.kind == "delta":
            texts[ev.variant] = (texts[ev.variant] or "") + ev.text
        elif ev.kind == "replace":
            texts[ev.variant] = ev.text
        elif ev.kind == "drop":
            texts[ev.variant] = None
        elif ev.kind == "done" and ev.result is not None:
            record_copy(ev.result)
            notes = "; ".join(ev.result.notes)
            status = (f"{len(ev.result.variants)} variant(s), seed {ev.result.settings['seed']}"
                      + (f". {notes}" if notes else ""))
            yield _boxes(texts, req.n) + [status + _failures(ev.result)]
            return
        yield _boxes(texts, req.n) + [working]


def _failures(result) -> str:
    """The closest rejected drafts and the checks they failed, for a deliberate run that came up short."""
    lines = []
    for v in result.rejected:
        failed = "; ".join(f"{c['name']}: {c['detail']}" for c in v.checks or [] if c["hard"] and not c["passed"])
        lines.append(f"\n- rejected: {v.text!r} ({failed})")
    return "".join(lines)


def build() -> None:
    with gr.Tab(t("Copy"), id="copy"):
        with gr.Row():
            with gr.Column(scale=2):
                brief = gr.Textbox(label=t("Brief"), lines=3, elem_id="copy-brief",
                                   placeholder="Reusable steel bottle that keeps drinks cold for 24 hours")
                with gr.Row():
                    kind = gr.Dropdown(list(KINDS), value=DEFAULTS.kind, label=t("Kind"))
                    lang = gr.Dropdown([("English", "en"), ("한국어 (Korean)", "ko")], value=DEFAULTS.lang,
                                       label=t("Language"), elem_id="copy-lang")
                # BASE:NAME entries are LoRA adapters (brand voices) made by `brushpen finetune text`.
                model = gr.Dropdown(copy_models(), value=copy_models()[0], label=t("Model"), elem_id="copy-model")
                with gr.Row():
                    tone = gr.Textbox(label=t("Tone"), placeholder="friendly")
                    audience = gr.Textbox(label=t("Audience"), placeholder="hikers")
                n = gr.Slider(1, MAX_VARIANTS, value=DEFAULTS.n, step=1, label=t("Variants"))
                with gr.Row():
                    deliberate = gr.Checkbox(value=DEFAULTS.deliberate, label=t("Deliberate: draft, check, pick"),
                                             info=t("off: plain sampling, streamed token by token"),
                                             elem_id="copy-deliberate")
                    draft = gr.Slider(1, 16, value=DEFAULTS.draft, step=1, label=t("Drafts per variant"),
                                      elem_id="copy-draft")
                with gr.Accordion(t("Sampling"), open=False):
                    temperature = gr.Slider(0, 2, value=DEFAULTS.temperature, step=0.05,
                                            label=t("Temperature (0: greedy)"))
                    top_p = gr.Slider(0.05, 1, value=DEFAULTS.top_p, step=0.05, label=t("Top-p"))
                    top_k = gr.Slider(0, 200, value=DEFAULTS.top_k, step=1, label=t("Top-k (0: off)"))
                    rep = gr.Slider(1, 2, value=DEFAULTS.repetition_penalty, step=0.01, label=t("Repetition penalty"))
                    max_new = gr.Slider(8, 512, value=DEFAULTS.max_new_tokens, step=8, label=t("Max new tokens"))
                backend = gr.Dropdown(["torch", "onnx", "onnx-int8"], value=DEFAULTS.backend, label=t("Backend"),
                                      info="onnx / onnx-int8: onnxruntime, after `brushpen export smollm2-135m --int8`",
                                      elem_id="copy-backend")
                with gr.Row():
                    seed = gr.Number(value=-1, precision=0, label=t("Seed (-1: random)"), minimum=-1,
                                     elem_id="copy-seed")
                    dice = gr.Button(t("🎲 Random"), size="sm", min_width=40)
                go = gr.Button(t("Write"), variant="primary", elem_id="copy-write")
            with gr.Column(scale=3):
                status = gr.Markdown(elem_id="copy-status")
                boxes = [gr.Textbox(label=f"Variant {i + 1}", buttons=["copy"], visible=i < DEFAULTS.n,
                                    interactive=False, elem_id=f"copy-variant-{i}") for i in range(MAX_VARIANTS)]
    dice.click(random_seed, None, seed, concurrency_id="light")
    # Each mode (and in plain sampling, each model) has its own tuned temperature: switching moves the slider to it.
    for switch in (deliberate, model):
        switch.change(lambda on, m: DELIBERATE_TEMPERATURE if on else plain_temperature(m or None),
                      [deliberate, model], temperature, concurrency_id="light")
    model.focus(lambda: gr.update(choices=copy_models()), None, model, concurrency_id="light")  # new adapters
    go.click(_write, [brief, kind, tone, audience, n, temperature, top_p, top_k, rep, max_new, seed, backend, model,
                      deliberate, draft, lang],
             boxes + [status], concurrency_id="copy", concurrency_limit=1, api_name="write_copy")
