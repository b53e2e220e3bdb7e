"""Task messages as they arrive: the documented shapes pass, anything else is dropped
alone with a warning, never a traceback in the worker."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
import redis

from tests.support.factories import png_bytes
from worker import client
from worker.service.celery_app import make_celery
from worker.service.messages import (
    CLASSIFY_PRODUCTS_TASK,
    MalformedMessage,
    ProductChunk,
    message_photo,
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


def _queued_kwargs(settings) -> list[dict]:
    queue = redis.Redis.from_url(settings.resolved_broker_url)
    messages = [json.loads(m) for m in queue.lrange(settings.interactive_queue, 0, -1)]
    return [json.loads(base64.b64decode(m["body"]))[1] for m in reversed(messages)]


def test_an_upload_up_to_the_inline_limit_travels_in_its_message(
    service_settings, fashion_mnist
) -> None:
    data = png_bytes(fashion_mnist.test_images[0])
    client.submit(data, "small.png", settings=service_settings)
    just_over = service_settings.model_copy(update={"inline_photo_bytes": len(data) - 1})
    client.submit(data, "large.png", settings=just_over)

    small, large = _queued_kwargs(service_settings)
    assert message_photo(small) == data
    assert "photo" not in (large or {}) and message_photo(large) is None


@pytest.mark.parametrize("photo", ["not base64!", 42, ["a"]])
def test_a_photo_that_is_not_base64_is_ignored_with_a_warning(photo, caplog) -> None:
    """The stored photo is the record: the worker fetches it instead."""
    assert message_photo({"photo": photo}) is None
    assert "not base64" in caplog.text
