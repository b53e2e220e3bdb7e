"""Worker logs that carry the job: ``job_ids`` on every record logged while a task
works on uploads (or ``product_ids`` on catalog chunks), and JSON lines when
``FASHION_LOG_FORMAT=json`` (python-json-logger), for a log pipeline to index.

Celery configures the handlers; the ``after_setup_logger`` signals (connected in
``worker.service.tasks``) call ``configure`` on them. The job context is a contextvar
set around each task's work, so it follows the code without being passed along.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from worker import tracing
from worker.config import Settings

_context: contextvars.ContextVar[dict[str, list] | None] = contextvars.ContextVar(
    "fashion_log_context", default=None
)

JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(processName)s %(message)s"


@contextmanager
def job_context(**ids: Sequence) -> Iterator[None]:
    """Attach ``job_ids=[…]`` or ``product_ids=[…]`` to every record logged inside."""
    token = _context.set({key: list(value) for key, value in ids.items()})
    try:
        yield
    finally:
        _context.reset(token)


class JobContextFilter(logging.Filter):
    """Copies the job context onto each record (``record.job_ids``, ``record.product_ids``)
    and, when traces are on, the current trace's id (``record.trace_id``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            setattr(record, key, value)
        trace_id = tracing.current_trace_id()
        if trace_id is not None:
            record.trace_id = trace_id
        return True


def configure(logger: logging.Logger, settings: Settings) -> None:
    """Give ``logger``'s handlers the job context and, if asked for, JSON lines."""
    for handler in logger.handlers:
        if not any(isinstance(f, JobContextFilter) for f in handler.filters):
            handler.addFilter(JobContextFilter())
        if settings.log_format == "json":
            from pythonjsonlogger.json import JsonFormatter

            handler.setFormatter(JsonFormatter(JSON_FIELDS, timestamp=False))
