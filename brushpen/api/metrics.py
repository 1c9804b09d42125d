"""`GET /metrics`: the job queue in Prometheus text format (prometheus-client), for any replica.

The figures come from the job store at scrape time (`jobs_stats`), so every replica reports the
whole deployment: queue depth and running lines per family, lines done and failed, line durations
as a histogram, open batches by status, and each worker's heartbeat age and line counts. With an
API key set it is behind the key like /v1 (Prometheus sends it with `authorization: {credentials: KEY}`).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from brushpen.api.auth import require_key
from brushpen.api.deps import Jobs
from brushpen.api.limits import run_blocking
from brushpen.generators.jobs import JobStore
from brushpen.generators.jobs_stats import BUCKETS, QueueStats, queue_stats

router = APIRouter(tags=["health"], dependencies=[Depends(require_key)])


class StoreCollector:
    """A prometheus-client collector over one snapshot of the store."""

    def __init__(self, stats: QueueStats):
        self.stats = stats

    def collect(self):
        s = self.stats
        queued = GaugeMetricFamily("brushpen_queue_lines", "Lines waiting or running in open batches",
                                   labels=["family"])
        running = GaugeMetricFamily("brushpen_running_lines", "Lines a worker holds a live lease on", labels=["family"])
        lines = CounterMetricFamily("brushpen_lines", "Lines finished", labels=["family", "outcome"])
        hist = HistogramMetricFamily("brushpen_line_seconds", "How long a line took to run", labels=["family"])
        for family, f in sorted(s.families.items()):
            queued.add_metric([family], f.queued)
            running.add_metric([family], f.running)
            lines.add_metric([family, "done"], f.done)
            lines.add_metric([family, "failed"], f.failed)
            buckets = [(str(b), n) for b, n in zip(BUCKETS, f.buckets)] + [("+Inf", f.timed)]
            hist.add_metric([family], buckets, f.seconds)
        batches = GaugeMetricFamily("brushpen_batches", "Batches and jobs by status", labels=["status"])
        for status, n in sorted(s.batches.items()):
            batches.add_metric([status], n)
        workers = GaugeMetricFamily("brushpen_workers", "Registered workers")
        workers.add_metric([], len(s.workers))
        age = GaugeMetricFamily("brushpen_worker_heartbeat_age_seconds", "Seconds since a worker's last heartbeat",
                                labels=["worker", "families"])
        done = CounterMetricFamily("brushpen_worker_lines", "Lines a worker finished",
                                   labels=["worker", "outcome"])
        for w in s.workers:
            age.add_metric([w.id, w.families], max(0.0, s.now - w.heartbeat_at))
            done.add_metric([w.id, "done"], w.lines_done)
            done.add_metric([w.id, "failed"], w.lines_failed)
        yield from (queued, running, lines, hist, batches, workers, age, done)


def render(store: JobStore) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(queue_stats(store)))
    return generate_latest(registry)


@router.get("/metrics", summary="The job queue and workers in Prometheus text format", response_class=Response,
            responses={200: {"description": "Prometheus text exposition format",
                             "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}})
async def metrics(jobs: Jobs) -> Response:
    return Response(await run_blocking(render, jobs), media_type=CONTENT_TYPE_LATEST)
