"""The messages the system sends: the one module that knows task names, queues and
argument shapes.

Every message is Celery protocol 2 in JSON (pickle is refused). A non-Python
backend that enqueues uploads itself sends exactly what ``send_classify`` sends
(README, "Enqueueing from a non-Python backend"). Workers read the arguments back
with ``classify_arguments``; tasks are registered under these names in
``worker.service.tasks``.

- ``fashion.classify`` on ``interactive``: args ``[job_id]``; kwargs ``retry`` (int,
  set by the retry path) and ``photo`` (the upload's bytes in base64, when it is no
  larger than ``FASHION_INLINE_PHOTO_BYTES``: the worker then skips fetching it;
  optional, the stored object stays the record); ``expires`` set to the job's deadline.
- ``fashion.classify_products`` on ``bulk``: args ``[[product_id, …]]``; kwargs
  ``not_before`` (ISO 8601, an ``all`` run's skip rule), ``redeliveries`` (int).
- ``fashion.reclassify`` on ``bulk``: kwargs ``mode`` (all / stale), ``trigger``.
- ``fashion.reclassify_on_model_change`` on ``bulk`` and ``fashion.sweep_stuck_jobs``
  on ``interactive``: no arguments (beat sends them).
- ``fashion.deliver_webhook`` on ``webhooks``: args ``[job_id]``.
- ``fashion.purge`` on ``bulk``: no arguments (beat sends it daily).

Beside the queues, one Redis pub/sub channel (``FINISHED_CHANNEL``): a worker
publishes the ids of the jobs it just finished (space-separated), after the commit,
and on a second line, where it has them, their answers as callers see them (a JSON
object, id → ``JobResult`` by alias); ``?wait=`` in the API and ``client.wait`` wake
on it (``FinishedNotices``), and the API answers a waiting upload from it without
reading the catalog. A reader of the first line alone (an older API) still works.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from celery.schedules import crontab

from worker.config import Settings
from worker.service.celery_app import make_celery

log = logging.getLogger(__name__)

CLASSIFY_TASK = "fashion.classify"
CLASSIFY_PRODUCTS_TASK = "fashion.classify_products"
RECLASSIFY_TASK = "fashion.reclassify"
MODEL_CHECK_TASK = "fashion.reclassify_on_model_change"
SWEEP_TASK = "fashion.sweep_stuck_jobs"
WEBHOOK_TASK = "fashion.deliver_webhook"
PURGE_TASK = "fashion.purge"

#: Catalog products per bulk message: one batched inference and one write each.
DEFAULT_CHUNK_SIZE = 64


def send_classify(
    settings: Settings,
    job_id: str,
    *,
    retry: int = 0,
    countdown: float | None = None,
    queue: str | None = None,
    expires: float | None = None,
    photo: bytes | None = None,
) -> None:
    """Queue upload job ``job_id`` on the interactive queue (or ``queue``); a retry is
    numbered and sent after ``countdown`` seconds; a worker drops the message unread
    ``expires`` seconds from now (the job's deadline: the sweeper then ends it
    ``expired``). ``photo``, the upload's bytes (already stored), travels with the
    message so that the worker need not fetch them."""
    kwargs: dict[str, Any] = {}
    if retry:
        kwargs["retry"] = retry
    if photo is not None:
        kwargs["photo"] = base64.b64encode(photo).decode("ascii")
    make_celery(settings).send_task(
        CLASSIFY_TASK,
        args=[job_id],
        kwargs=kwargs or None,
        queue=queue or settings.interactive_queue,
        countdown=countdown,
        expires=expires,
    )


def send_webhook(settings: Settings, job_id: str) -> None:
    """Queue the delivery of job ``job_id``'s result to its callback URL (Celery
    retries it with backoff)."""
    make_celery(settings).send_task(WEBHOOK_TASK, args=[job_id], queue=settings.webhook_queue)


#: Where a worker announces the jobs it finished; waiters poll only as a slow safety
#: net for a notice that was lost (``SAFETY_POLL_S``).
FINISHED_CHANNEL = "fashion:finished"
SAFETY_POLL_S = 1.0


def pushes_completion(settings: Settings) -> bool:
    """Completion is announced where the broker is Redis (not the embedded defaults'
    folder broker: there, waiters poll)."""
    return not settings.filesystem_broker and settings.resolved_broker_url.startswith("redis")


@functools.lru_cache(maxsize=4)
def _publisher(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


#: Answers past this size (a batch's worth is ~20 kB) are left out of a notice: its
#: waiters read the catalog instead.
MAX_NOTICE_ANSWERS_BYTES = 256 * 1024


def announce_finished(
    settings: Settings,
    job_ids: Sequence[str],
    answers: Mapping[str, Mapping[str, Any]] | None = None,
) -> None:
    """Publish that ``job_ids`` finished (their rows are committed), with the
    ``answers`` (id → ``JobResult`` as JSON, by alias) of those it has: one message."""
    if not job_ids or not pushes_completion(settings):
        return
    payload = " ".join(job_ids)
    if answers:
        encoded = json.dumps(answers, separators=(",", ":"))
        if len(encoded) <= MAX_NOTICE_ANSWERS_BYTES:
            payload += "\n" + encoded
    _publisher(settings.resolved_broker_url).publish(FINISHED_CHANNEL, payload)


def finished_notice(payload: bytes | str) -> dict[str, dict[str, Any] | None]:
    """The job ids a ``FINISHED_CHANNEL`` message names, each with its answer, or
    ``None`` where the message has none (a second line that is not a JSON object of
    objects is ignored: the waiters read the catalog)."""
    text = payload.decode() if isinstance(payload, bytes) else payload
    ids, _, encoded = text.partition("\n")
    answers: Any = {}
    if encoded:
        try:
            answers = json.loads(encoded)
        except ValueError:
            log.warning("a finished-jobs notice's answers are not JSON; ignoring them")
    if not isinstance(answers, dict):
        answers = {}
    return {
        job_id: answer if isinstance(answer := answers.get(job_id), dict) else None
        for job_id in ids.split()
    }


class FinishedNotices:
    """A subscription to ``FINISHED_CHANNEL`` for a blocking waiter (``client.wait``):
    subscribed (confirmed by the server) before the caller first reads its jobs, so a
    job that finishes later is announced to it."""

    def __init__(self, settings: Settings) -> None:
        self._client = redis.Redis.from_url(
            settings.resolved_broker_url, socket_timeout=5, socket_connect_timeout=2
        )
        self._pubsub = self._client.pubsub()
        self._pubsub.subscribe(FINISHED_CHANNEL)
        self._pubsub.get_message(timeout=2)  # the subscription's confirmation

    def wait_for(self, job_ids: set[str], timeout: float) -> dict[str, dict[str, Any] | None]:
        """Those of ``job_ids`` the first notice naming any of them names, each with its
        answer or ``None`` (``finished_notice``); empty: none came within ``timeout``
        seconds."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
            if message and message["type"] == "message":
                notice = finished_notice(message["data"])
                named = {job_id: notice[job_id] for job_id in notice if job_id in job_ids}
                if named:
                    return named
        return {}

    def close(self) -> None:
        self._pubsub.close()
        self._client.close()


class MalformedMessage(ValueError):
    """A message whose arguments do not have the documented shape."""


def classify_arguments(args: Any, kwargs: Any) -> tuple[str, int]:
    """A ``fashion.classify`` message's job id, in its one canonical spelling (so the
    same job sent as ``ABC…`` and ``{abc…}`` is one job), and its retry number.

    Raises ``MalformedMessage`` for anything else: the caller drops that message
    alone, never its neighbours in a micro-batch.
    """
    if not isinstance(args, list | tuple) or len(args) != 1:
        raise MalformedMessage(f"args must be [job_id], not {args!r:.200}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise MalformedMessage(f"kwargs must be an object, not {kwargs!r:.200}")
    try:
        job_id = str(uuid.UUID(str(args[0])))
    except ValueError as exc:
        raise MalformedMessage(f"job id {args[0]!r:.100} is not a UUID") from exc
    retry = (kwargs or {}).get("retry", 0)
    if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
        raise MalformedMessage(f"retry must be a whole number ≥ 0, not {retry!r:.100}")
    return job_id, retry


def message_photo(kwargs: Any) -> bytes | None:
    """The upload's bytes a ``fashion.classify`` message carries (its ``photo``), or
    ``None``: none, or not base64 (logged; the worker fetches the stored photo, which
    is the record, so a bad copy costs a fetch and loses nothing)."""
    encoded = kwargs.get("photo") if isinstance(kwargs, Mapping) else None
    if encoded is None:
        return None
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, TypeError, ValueError):
        log.warning("a message's photo is not base64 (%.40r…); fetching the stored one", encoded)
        return None


@dataclass(frozen=True)
class ProductChunk:
    """A ``fashion.classify_products`` message's arguments, checked."""

    product_ids: list[int]
    not_before: dt.datetime | None
    redeliveries: int
    #: The model version to classify with (``None``: the live one).
    model_version: str | None = None


#: More ids than any chunk we send (``DEFAULT_CHUNK_SIZE``, a run's ``--chunk``).
MAX_CHUNK_IDS = 10_000


def product_chunk_arguments(args: Any, kwargs: Any) -> ProductChunk:
    """A ``fashion.classify_products`` message's arguments (``args: [[id, …]]``,
    ``kwargs: {not_before?: ISO 8601, redeliveries?: n, model_version?: tag}``), or
    ``MalformedMessage``: a malformed one raised ``TypeError``/``ProgrammingError``
    tracebacks in the worker."""
    if not isinstance(args, list | tuple) or len(args) != 1:
        raise MalformedMessage(f"args must be [[product_id, …]], not {args!r:.200}")
    if kwargs is not None and not isinstance(kwargs, Mapping):
        raise MalformedMessage(f"kwargs must be an object, not {kwargs!r:.200}")
    ids = args[0]
    if (
        not isinstance(ids, list | tuple)
        or not 0 < len(ids) <= MAX_CHUNK_IDS
        or not all(isinstance(i, int) and not isinstance(i, bool) and i > 0 for i in ids)
    ):
        raise MalformedMessage(f"product ids must be 1-{MAX_CHUNK_IDS} whole numbers > 0")
    kwargs = dict(kwargs or {})
    unknown = set(kwargs) - {"not_before", "redeliveries", "model_version"}
    if unknown:
        raise MalformedMessage(f"unknown arguments {sorted(unknown)!r:.200}")
    not_before = kwargs.get("not_before")
    if not_before is not None:
        try:
            not_before = dt.datetime.fromisoformat(not_before)
        except (TypeError, ValueError) as exc:
            raise MalformedMessage(f"not_before {not_before!r:.100} is not ISO 8601") from exc
    redeliveries = kwargs.get("redeliveries", 0)
    if isinstance(redeliveries, bool) or not isinstance(redeliveries, int) or redeliveries < 0:
        raise MalformedMessage(f"redeliveries must be a whole number ≥ 0, not {redeliveries!r}")
    model_version = kwargs.get("model_version")
    if model_version is not None and (
        not isinstance(model_version, str) or not 0 < len(model_version) <= 100
    ):
        raise MalformedMessage(f"model_version must be a version tag, not {model_version!r:.120}")
    return ProductChunk(list(ids), not_before, redeliveries, model_version)


def send_product_chunks(
    settings: Settings,
    product_ids: Sequence[int],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    not_before: dt.datetime | str | None = None,
    redeliveries: int | None = None,
    model_version: str | None = None,
) -> int:
    """Queue catalog products on the bulk queue in chunks; returns how many messages.

    ``not_before`` is an ``all`` run's skip rule; ``redeliveries`` counts how often
    these products came back from a worker that died holding them; ``model_version``
    is the version to classify with (``None``: whichever is live when a worker takes it).
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
    if model_version is not None:
        kwargs["model_version"] = model_version
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
    if settings.purge_cron.strip() and settings.retention_days:
        schedule["purge-expired-uploads"] = {
            "task": PURGE_TASK,
            "schedule": crontab.from_string(settings.purge_cron),
            "options": {"queue": settings.bulk_queue},
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
        WEBHOOK_TASK: {"queue": settings.webhook_queue},
        PURGE_TASK: {"queue": settings.bulk_queue},
    }
