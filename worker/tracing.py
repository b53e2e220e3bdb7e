"""OpenTelemetry traces: one trace shows an upload from the HTTP request to the commit.

On only where ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set (OpenTelemetry's own variable,
as are ``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER`` and the ``OTEL_BSP_*`` batching
ones); off, nothing of OpenTelemetry is imported. Unless ``OTEL_TRACES_SAMPLER``
says otherwise, one trace in ten is kept (``DEFAULT_SAMPLE_RATIO``), decided where
it starts (the API's request, or a message sent from outside it) and followed
downstream: keeping every trace cost the worker +0.5 % and +11 % of its median in
two runs of ``fashion bench`` (``tracing_overhead_pct``), one in ten −2.6 % and
−0.3 % (noise; README, "Traces"). On, a process exports its spans over OTLP/HTTP from a
background thread and runs the standard instrumentations: FastAPI (the API's
requests), Celery (a message's trace context travels in its headers), SQLAlchemy,
botocore (S3) and redis. The API calls ``configure`` in ``create_app``; a worker in
each pool process, after the fork. An upload micro-batch is one Celery task for many
messages, so its span (``batch_span``) continues the first message's trace and links
the others'. Log records carry ``trace_id`` (``worker.service.logs``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

_configured: list[str] = []

#: The share of traces kept where ``OTEL_TRACES_SAMPLER`` is not set.
DEFAULT_SAMPLE_RATIO = 0.1


def enabled() -> bool:
    """Whether traces are exported (``OTEL_EXPORTER_OTLP_ENDPOINT`` is set)."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def configure(service: str) -> bool:
    """Export this process's spans as ``service`` (unless ``OTEL_SERVICE_NAME`` says
    otherwise) and instrument Celery, SQLAlchemy, botocore and redis; once per
    process. Returns whether tracing is on."""
    if not enabled():
        return False
    if _configured:
        return True
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    name = os.environ.get("OTEL_SERVICE_NAME") or service
    # None: the SDK reads OTEL_TRACES_SAMPLER (and _ARG) itself.
    sampler = None
    if not os.environ.get("OTEL_TRACES_SAMPLER"):
        sampler = ParentBased(TraceIdRatioBased(DEFAULT_SAMPLE_RATIO))
    provider = TracerProvider(resource=Resource.create({"service.name": name}), sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    CeleryInstrumentor().instrument()
    # Its declared range ends below SQLAlchemy 2.1; what it hooks (engine creation and
    # the cursor-execute events) is unchanged there, and the test checks its spans.
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    BotocoreInstrumentor().instrument()
    RedisInstrumentor().instrument()
    _configured.append(name)
    return True


def instrument_app(app: Any) -> None:
    """Trace a FastAPI app's requests (when tracing is on)."""
    if configure("fashion-api"):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, excluded_urls="livez,readyz,metrics")


def batch_span(name: str, carriers: Sequence[Mapping[str, Any]]) -> Any:
    """A span around a batch of messages: a child of the first one's trace context
    (its headers, ``carriers``), linked to each; a no-op when tracing is off."""
    if not _configured or not carriers:
        return nullcontext()
    return _batch_span(name, carriers)


@contextmanager
def _batch_span(name: str, carriers: Sequence[Mapping[str, Any]]) -> Iterator[None]:
    from opentelemetry import trace
    from opentelemetry.propagate import extract

    contexts = [extract(dict(carrier)) for carrier in carriers]
    links = [
        trace.Link(span.get_span_context())
        for span in (trace.get_current_span(context) for context in contexts)
        if span.get_span_context().is_valid
    ]
    tracer = trace.get_tracer("fashion")
    with tracer.start_as_current_span(
        name, context=contexts[0], links=links, attributes={"fashion.messages": len(carriers)}
    ):
        yield


def current_trace_id() -> str | None:
    """The current span's trace id (32 hex digits), or ``None`` (none, not sampled, so
    not to be found in the viewer, or tracing off)."""
    if not _configured:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    kept = context.is_valid and context.trace_flags.sampled
    return format(context.trace_id, "032x") if kept else None
