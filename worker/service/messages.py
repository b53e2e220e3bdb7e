"""The messages the system sends: the one module that knows task names, queues and
argument shapes.

Every message is Celery protocol 2 in JSON (pickle is refused). A non-Python
backend that enqueues uploads itself sends exactly what ``send_classify`` sends
(README, "Enqueueing from a non-Python backend"). Workers read the arguments back
with ``classify_arguments``; tasks are registered under these names in
``worker.service.tasks``.

- ``fashion.classify`` on ``interactive``: args ``[job_id]``; kwargs ``retry`` (int,
  set by the retry path).
- ``fashion.classify_products`` on ``bulk``: args ``[[product_id, …]]``; kwargs
  ``not_before`` (ISO 8601, an ``all`` run's skip rule), ``redeliveries`` (int).
- ``fashion.reclassify`` on ``bulk``: kwargs ``mode`` (all / stale), ``trigger``.
- ``fashion.reclassify_on_model_change`` on ``bulk`` and ``fashion.sweep_stuck_jobs``
  on ``interactive``: no arguments (beat sends them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from celery.schedules import crontab

from worker.config import Settings
from worker.service.celery_app import make_celery

CLASSIFY_TASK = "fashion.classify"
CLASSIFY_PRODUCTS_TASK = "fashion.classify_products"
RECLASSIFY_TASK = "fashion.reclassify"
MODEL_CHECK_TASK = "fashion.reclassify_on_model_change"
SWEEP_TASK = "fashion.sweep_stuck_jobs"

#: Catalog products per bulk message: one batched inference and one write each.
DEFAULT_CHUNK_SIZE = 64


def send_classify(
    settings: Settings,
    job_id: str,
    *,
    retry: int = 0,
    countdown: float | None = None,
    queue: str | None = None,
) -> None:
    """Queue upload job ``job_id`` on the interactive queue (or ``queue``); a retry is
    numbered and sent after ``countdown`` seconds."""
    make_celery(settings).send_task(
        CLASSIFY_TASK,
        args=[job_id],
        kwargs={"retry": retry} if retry else None,
        queue=queue or settings.interactive_queue,
        countdown=countdown,
    )


def classify_arguments(args: Sequence[Any], kwargs: Mapping[str, Any] | None) -> tuple[str, int]:
    """A ``fashion.classify`` message's job id and retry number."""
    return str(args[0]), int((kwargs or {}).get("retry", 0))


def send_product_chunks(
    settings: Settings,
    product_ids: Sequence[int],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    not_before: dt.datetime | str | None = None,
    redeliveries: int | None = None,
) -> int:
    """Queue catalog products on the bulk queue in chunks; returns how many messages.

    ``not_before`` is an ``all`` run's skip rule; ``redeliveries`` counts how often
    these products came back from a worker that died holding them.
    """
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    kwargs: dict[str, Any] = {}
    if not_before is not None:
        kwargs["not_before"] = (
            not_before.isoformat() if isinstance(not_before, dt.datetime) else not_before
        )
    if redeliveries is not None:
        kwargs["redeliveries"] = redeliveries
    app = make_celery(settings)
    chunks = [
        list(product_ids[start : start + chunk_size])
        for start in range(0, len(product_ids), chunk_size)
    ]
    for chunk in chunks:
        app.send_task(
            CLASSIFY_PRODUCTS_TASK, args=[chunk], kwargs=kwargs or None, queue=settings.bulk_queue
        )
    return len(chunks)


def beat_schedule(settings: Settings) -> dict[str, dict]:
    """What beat sends: the stuck-job sweeper, the new-model check and the nightly
    re-classification (``FASHION_RECLASSIFY_CRON``)."""
    schedule: dict[str, dict] = {
        # On the interactive queue: it is kept short, so a long bulk run never
        # holds the sweeper back.
        "sweep-stuck-jobs": {
            "task": SWEEP_TASK,
            "schedule": settings.sweep_seconds,
            "options": {"queue": settings.interactive_queue, "expires": settings.sweep_seconds},
        },
        "reclassify-on-model-change": {
            "task": MODEL_CHECK_TASK,
            "schedule": settings.model_check_seconds,
            "options": {"queue": settings.bulk_queue, "expires": settings.model_check_seconds},
        },
    }
    if settings.reclassify_cron.strip():
        schedule["nightly-reclassify"] = {
            "task": RECLASSIFY_TASK,
            "schedule": crontab.from_string(settings.reclassify_cron),
            "kwargs": {"mode": settings.reclassify_nightly_mode, "trigger": "nightly"},
            "options": {"queue": settings.bulk_queue},
        }
    return schedule


def task_routes(settings: Settings) -> dict[str, dict[str, str]]:
    """Each task's queue, for a sender that does not name one (``celery call``, Flower)."""
    return {
        CLASSIFY_TASK: {"queue": settings.interactive_queue},
        CLASSIFY_PRODUCTS_TASK: {"queue": settings.bulk_queue},
        RECLASSIFY_TASK: {"queue": settings.bulk_queue},
        MODEL_CHECK_TASK: {"queue": settings.bulk_queue},
        SWEEP_TASK: {"queue": settings.interactive_queue},
    }
