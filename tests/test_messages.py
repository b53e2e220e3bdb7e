"""Task messages as they arrive: the documented shapes pass, anything else is dropped
alone with a warning, never a traceback in the worker."""

from __future__ import annotations

import datetime as dt

import pytest

from worker.service.celery_app import make_celery
from worker.service.messages import (
    CLASSIFY_PRODUCTS_TASK,
    MalformedMessage,
    ProductChunk,
    product_chunk_arguments,
)
from worker.service.tasks import register_tasks

MALFORMED_CHUNKS = [
    (["x"], {}),
    ([[1, 2]], {"not_before": 5}),
    ([[1], [2]], {}),
    ([[1]], {"redeliveries": -1}),
    ([[True]], {}),
    ([[0]], {}),
    ([[]], {}),
    ([[1]], {"surprise": 1}),
    ([[1]], ["not", "an", "object"]),
]


def test_a_product_chunk_in_the_documented_shape_is_read() -> None:
    assert product_chunk_arguments([[3, 1, 2]], None) == ProductChunk([3, 1, 2], None, 0)
    chunk = product_chunk_arguments([(7,)], {"not_before": "2026-12-01T00:00:00+00:00"})
    assert chunk.not_before == dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert product_chunk_arguments([[7]], {"redeliveries": 2}).redeliveries == 2


@pytest.mark.parametrize(("args", "kwargs"), MALFORMED_CHUNKS)
def test_a_malformed_product_chunk_is_refused(args, kwargs) -> None:
    with pytest.raises(MalformedMessage):
        product_chunk_arguments(args, kwargs)


def test_the_chunk_task_drops_a_malformed_message_with_a_warning(local_settings, caplog) -> None:
    """They raised TypeError or ProgrammingError tracebacks in the worker."""
    app = make_celery(local_settings)
    register_tasks(app, local_settings)
    task = app.tasks[CLASSIFY_PRODUCTS_TASK]
    with caplog.at_level("WARNING"):
        for args, kwargs in MALFORMED_CHUNKS:
            if not isinstance(kwargs, dict):
                continue  # Celery itself refuses non-object kwargs before the task
            outcome = task.apply(args=args, kwargs=kwargs).get()
            assert outcome == {"classified": 0, "failed": 0, "skipped": 0}
    assert caplog.text.count(f"dropping a malformed {CLASSIFY_PRODUCTS_TASK} message") == 8
