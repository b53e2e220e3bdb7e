"""Prometheus metrics from the workers, on ``FASHION_METRICS_PORT`` (unset: off).

Pool processes count into prometheus_client's multiprocess files (one folder
per worker, ``PROMETHEUS_MULTIPROC_DIR``, made on start-up); the worker's main
process serves ``/metrics``, merging them, plus two gauges read at scrape time:
queue depth from the broker and jobs by state from the catalog. Every worker
reports those two the same, so aggregate them with ``max``, not ``sum``.

- ``fashion_jobs_finished_total{status, code}``: uploads that reached a terminal state.
- ``fashion_job_latency_seconds``: upload to result (job created → finished).
- ``fashion_job_stage_seconds{stage}``: each stage of a ``done`` upload
  (``catalog.codes.JOB_STAGES``: queued, fetch, preprocess, inference, similar,
  write; they add up to the latency).
- ``fashion_batch_size{queue}``: images per inference (micro-batch or bulk chunk).
- ``fashion_products_classified_total{outcome}``: catalog photos (``done`` or a code).
- ``fashion_queue_depth{queue}``, ``fashion_jobs{state}``: at scrape time.

Nothing here runs unless metrics are on: the recording functions are no-ops
and prometheus_client is not even imported.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from catalog.lifecycle import Finished
from worker.config import Settings

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30)

_metrics: dict[str, Any] = {}
_created: list[str] = []


def enable(settings: Settings) -> None:
    """Set up the metrics in the worker's main process, before the pool forks."""
    if _metrics or settings.metrics_port is None:
        return
    # The pool processes inherit the folder through prometheus_client's variable,
    # which it reads itself; one we made is removed at shutdown.
    folder = settings.prometheus_multiproc_dir
    if folder is None:
        _created.append(tempfile.mkdtemp(prefix="fashion-metrics-"))
        folder = Path(_created[-1])
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    from prometheus_client import Counter, Histogram, values

    # prometheus_client picks multiprocess mode when it is first imported, and
    # Flower's Celery plugin (in the container image) imports it before the folder
    # is set: without this, pool processes counted in private memory, unseen.
    values.ValueClass = values.get_value_class()

    _metrics["jobs"] = Counter(
        "fashion_jobs_finished", "Uploads that reached a terminal state.", ["status", "code"]
    )
    _metrics["latency"] = Histogram(
        "fashion_job_latency_seconds",
        "Upload to result: job created to job finished.",
        buckets=LATENCY_BUCKETS,
    )
    _metrics["stages"] = Histogram(
        "fashion_job_stage_seconds",
        "Each stage of a done upload (they add up to fashion_job_latency_seconds).",
        ["stage"],
        buckets=STAGE_BUCKETS,
    )
    _metrics["batch"] = Histogram(
        "fashion_batch_size", "Images per inference.", ["queue"], buckets=BATCH_BUCKETS
    )
    _metrics["products"] = Counter(
        "fashion_products_classified", "Catalog photos classified.", ["outcome"]
    )


def cleanup() -> None:
    """Remove the metrics folder this process made (the worker is shutting down)."""
    for folder in _created:
        shutil.rmtree(folder, ignore_errors=True)
    _created.clear()


def serve(settings: Settings) -> None:
    """Serve ``/metrics`` from this (the main) process on the configured port."""
    if not _metrics:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(_ScrapeTimeCollector(settings))
    start_http_server(settings.metrics_port, addr=settings.metrics_bind, registry=registry)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_bind, settings.metrics_port)


def jobs_finished(finished: Iterable[Finished]) -> None:
    """Count jobs that reached a terminal state, and their upload → result latency."""
    if not _metrics:
        return
    for job in finished:
        _metrics["jobs"].labels(status=job.status.value, code=job.code or "").inc()
        if job.latency_s is not None:
            _metrics["latency"].observe(job.latency_s)


def stages(timings: Mapping[str, float] | None) -> None:
    """One done upload's stages (ms, as ``classification_jobs.timings`` keeps them)."""
    if _metrics and timings:
        for stage, ms in timings.items():
            _metrics["stages"].labels(stage=stage).observe(ms / 1000)


def batch(queue: str, size: int) -> None:
    if _metrics:
        _metrics["batch"].labels(queue=queue).observe(size)


def products_classified(outcome: str, count: int = 1) -> None:
    if _metrics and count:
        _metrics["products"].labels(outcome=outcome).inc(count)


class _ScrapeTimeCollector:
    """Queue depth and jobs by state, read when Prometheus scrapes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from worker.service.status import job_counts, queue_depths

        depth = GaugeMetricFamily(
            "fashion_queue_depth", "Messages waiting on the queue.", labels=["queue"]
        )
        jobs = GaugeMetricFamily("fashion_jobs", "Uploads by state.", labels=["state"])
        try:
            for queue, count in queue_depths(self.settings).items():
                depth.add_metric([queue], count)
            for state, count in job_counts(self.settings)[0].items():
                jobs.add_metric([state], count)
        except Exception:  # noqa: BLE001 - a scrape must answer even when a server is down
            log.warning("metrics: could not read queue depth or job counts", exc_info=True)
        yield depth
        yield jobs
