"""One trace shows an upload from the HTTP request to the commit (issue 36): with
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, the API and the worker export OpenTelemetry spans
over OTLP/HTTP (here to a loopback receiver), the message carries the trace's
context, and the worker's log lines carry its id."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.factories import make_key, png_bytes
from tests.support.otlp import OtlpReceiver, trace_tree


def test_one_trace_follows_an_upload_from_the_api_through_the_worker(
    service_settings, start_worker, start_api, fashion_mnist, monkeypatch
) -> None:
    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # export every 0.1 s
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")  # every trace
    start_worker(service_settings)
    api = start_api(service_settings)
    key = make_key(service_settings)

    for index in (1, 2):  # the second, on warm processes, is the one looked at
        answer = httpx.post(
            f"{api.url}/v1/classifications",
            params={"wait": 10},
            content=png_bytes(fashion_mnist.test_images[index]),
            headers={"Authorization": f"Bearer {key.key}", "Content-Type": "image/png"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text

    def upload_trace() -> list:
        requests = [s for s in receiver.spans if s.name == "POST /v1/classifications"]
        if len(requests) < 2:
            return []
        return receiver.trace(max(requests, key=lambda s: s.start_ns).trace_id)

    deadline = time.monotonic() + 15
    while not {"fashion-api", "fashion-worker"} <= {s.service for s in upload_trace()}:
        assert time.monotonic() < deadline, sorted({(s.service, s.name) for s in receiver.spans})
        time.sleep(0.2)
    time.sleep(0.5)  # the worker's last spans (its commit) follow its batch span
    spans = upload_trace()
    names = {(span.service, span.name) for span in spans}
    print("\n" + trace_tree(spans))

    assert ("fashion-api", "POST /v1/classifications") in names
    assert ("fashion-api", "S3.PutObject") in names  # the photo stored
    assert ("fashion-worker", "fashion.classify") in names  # the worker's micro-batch
    # The photo came in the message (FASHION_INLINE_PHOTO_BYTES): no S3 GET.
    assert ("fashion-worker", "S3.GetObject") not in names
    assert ("fashion-worker", "PUBLISH") in names  # the notice of its end
    for service in ("fashion-api", "fashion-worker"):  # and the database, on both sides
        statements = {name for where, name in names if where == service}
        assert any(name.startswith(("INSERT", "UPDATE", "SELECT")) for name in statements), service
    assert len({span.trace_id for span in spans}) == 1


LOG_PROBE = """
import logging, sys
from opentelemetry import trace
from worker import tracing
from worker.config import Settings
from worker.service import logs

assert tracing.configure("probe")
logger = logging.getLogger("probe")
handler = logging.StreamHandler(sys.stdout)
logger.addHandler(handler)
logs.configure(logger, Settings(log_format="json"))
with trace.get_tracer("probe").start_as_current_span("work") as span:
    print(format(span.get_span_context().trace_id, "032x"))
    logger.warning("inside the span")
"""


def test_log_lines_carry_the_trace_id_when_traces_are_on(tmp_path) -> None:
    """In a process of its own: tracing sets process-wide instrumentation."""
    receiver = OtlpReceiver()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    env["FASHION_DATA_DIR"] = str(tmp_path)
    env["OTEL_TRACES_SAMPLER"] = "always_on"
    printed = subprocess.run(
        [sys.executable, "-c", LOG_PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()

    trace_id, line = printed[0], json.loads(printed[1])
    assert line["message"] == "inside the span" and line["trace_id"] == trace_id


SAMPLING_PROBE = """
from opentelemetry import trace
from worker import tracing

assert tracing.configure("probe")
tracer = trace.get_tracer("probe")
kept = 0
for _ in range(1000):
    with tracer.start_as_current_span("upload"):
        kept += tracing.current_trace_id() is not None
print(kept)
"""


@pytest.mark.parametrize(("sampler", "low", "high"), [(None, 60, 140), ("always_on", 1000, 1000)])
def test_one_trace_in_ten_is_kept_unless_the_sampler_is_set(sampler, low, high) -> None:
    """Keeping every trace cost the worker up to +11 % of its median: by default one
    trace in ten is kept (and only a kept one's id is logged)."""
    receiver = OtlpReceiver()
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url}
    env.pop("OTEL_TRACES_SAMPLER", None)
    if sampler:
        env["OTEL_TRACES_SAMPLER"] = sampler
    printed = subprocess.run(
        [sys.executable, "-c", SAMPLING_PROBE], env=env, capture_output=True, text=True, check=True
    ).stdout

    assert low <= int(printed) <= high
