"""The job queue, in the Models tab: open batches and fine-tuning jobs, and the workers serving them.

It reads the same store the API and `brushpen worker` use, so with PostgreSQL every replica shows
the whole deployment's queue; `/metrics` has the same figures for Prometheus.
"""

from __future__ import annotations

import time

import gradio as gr

from brushpen.generators.jobs import JobStore
from brushpen.studio_ui.i18n import t

BATCH_HEADERS = ["id", "status", "done", "failed", "total", "endpoint"]
WORKER_HEADERS = ["worker", "families", "lines done", "failed", "heartbeat (s ago)"]


def queue_rows() -> tuple[list[list], list[list], str]:
    """(open batches, workers, a one-line summary) for the two tables."""
    store = JobStore()
    batches = [[b.id, b.status, b.completed, b.failed, b.total, b.endpoint] for b in store.open_batches()]
    now = time.time()
    workers = [[w.id, w.families, w.lines_done, w.lines_failed, round(now - w.heartbeat_at, 1)]
               for w in store.workers()]
    waiting = sum(b[4] - b[2] - b[3] for b in batches)
    summary = f"{len(batches)} open jobs, {waiting} lines to run, {len(workers)} workers on {store.describe()}"
    return batches or [[""] * len(BATCH_HEADERS)], workers or [[""] * len(WORKER_HEADERS)], summary


def build() -> None:
    with gr.Accordion(t("Job queue"), open=False):
        summary = gr.Markdown()
        batches = gr.Dataframe(headers=BATCH_HEADERS, interactive=False, label=t("Open batches and jobs"))
        workers = gr.Dataframe(headers=WORKER_HEADERS, interactive=False, label=t("Workers"))
        refresh = gr.Button(t("Refresh the queue"))
    refresh.click(queue_rows, None, [batches, workers, summary], concurrency_id="models", api_name="job_queue")
