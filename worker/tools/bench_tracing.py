"""What OpenTelemetry tracing costs an upload, in ``fashion bench``.

Three interactive workers, each on a queue of its own, side by side: tracing off,
on as shipped (one trace in ten kept, ``worker.tracing.DEFAULT_SAMPLE_RATIO``) and on
with every trace kept (``OTEL_TRACES_SAMPLER=parentbased_always_on``), both
exporting to a loopback OTLP/HTTP sink in this process (``OtlpSink``: it answers
and counts, as a collector would, without decoding). Rounds alternate between them,
so the machine's drift falls on all three alike; the figures are the server-side
median (row created → finished) of each, and each traced one against the untraced.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Callable
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import redis

from worker.config import Settings
from worker.service.celery_app import WORKER_APP
from worker.tools.harness import WorkerProcess

#: The variants: the environment each worker gets (``None`` removes a variable).
VARIANTS: dict[str, dict[str, str | None]] = {
    "off": {"OTEL_EXPORTER_OTLP_ENDPOINT": None},
    "sampled": {"OTEL_TRACES_SAMPLER": None},
    "all": {"OTEL_TRACES_SAMPLER": "parentbased_always_on"},
}
ROUNDS = 3


class OtlpSink:
    """A loopback OTLP/HTTP endpoint that accepts every export (an empty protobuf
    answer is a valid one) and counts the requests and bytes it was sent."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                self.rfile.read(length)
                sink.requests += 1
                sink.bytes += length
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def measure_tracing(
    settings: Settings,
    measure: Callable[[Settings, int], list[float]],
    count: int,
    workdir: Path,
) -> dict[str, Any]:
    """Server-side p50 (ms) of uploads with tracing off, sampled and all kept, over
    ``ROUNDS`` rounds of ``count`` uploads each; ``measure(settings, count)`` submits
    uploads on ``settings``' interactive queue and returns their latencies."""
    with ExitStack() as stack:
        sink = OtlpSink()
        stack.callback(sink.close)
        queues: dict[str, Settings] = {}
        for name, overrides in VARIANTS.items():
            queue = f"{settings.interactive_queue}-tracing-{name}"
            variant = settings.model_copy(update={"interactive_queue": queue})
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url, **overrides}
            worker = WorkerProcess(
                variant,
                app=WORKER_APP,
                queue=queue,
                concurrency=1,
                log_path=workdir / f"tracing-{name}-worker.log",
                env=env,
            )
            stack.callback(worker.stop)
            stack.callback(redis.Redis.from_url(settings.resolved_broker_url).delete, queue)
            queues[name] = variant
        for variant in queues.values():  # warm: connections, caches, the model
            measure(variant, 10)
        medians: dict[str, list[float]] = {name: [] for name in queues}
        for _ in range(ROUNDS):
            for name, variant in queues.items():
                medians[name].append(statistics.median(measure(variant, count)))
    p50 = {name: round(statistics.median(values), 2) for name, values in medians.items()}
    return {
        "tracing_interactive_p50_ms": p50,
        "tracing_overhead_pct": {
            name: round(100 * (p50[name] / p50["off"] - 1), 1) for name in ("sampled", "all")
        },
        "tracing_exported": {"requests": sink.requests, "bytes": sink.bytes},
    }
