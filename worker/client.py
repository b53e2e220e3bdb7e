"""What the web backend calls: ``submit`` an upload, read its ``result``.

``submit`` stores the bytes, inserts the job row (``queued``), commits, then
enqueues task ``fashion.classify`` with the job id. If the broker cannot be
reached the job is marked ``failed`` (``enqueue_failed``) and ``SubmitError`` is
raised, so the caller always learns the truth and no row is left dangling.

A Python backend calls this module; any other backend uses the HTTP API
(``worker.api``, ``fashion api``), which calls ``submit_upload`` here. The raw
protocol underneath (object, row, Celery message) is in the README.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import kombu.exceptions
import redis
import sqlalchemy.exc

from catalog.codes import ErrorCode
from catalog.db import get_sessionmaker
from catalog.lifecycle import create_job, fail_job
from catalog.public import JobResult, job_result
from catalog.queries import find_idempotent_job, get_job
from worker.config import Settings, get_settings
from worker.errors import ImageError
from worker.service.messages import (
    DEFAULT_CHUNK_SIZE,
    SAFETY_POLL_S,
    FinishedNotices,
    pushes_completion,
    send_classify,
    send_product_chunks,
)
from worker.storage import get_store


def printable_filename(filename: str) -> str:
    """The name as the database can store it: valid UTF-8 (undecodable bytes become
    "?"), no NUL, at most 255 characters."""
    return filename.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:255]


class SubmitError(RuntimeError):
    """The upload could not be queued; the job (if any) was marked failed."""


class IdempotencyConflict(ValueError):
    """The ``Idempotency-Key`` was used before with other bytes."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"this idempotency key was used for other bytes (job {job_id})")
        self.job_id = job_id


@dataclass(frozen=True)
class Submission:
    """A submitted upload's job; ``created`` is ``False`` when an earlier request with
    the same idempotency key made it (nothing new was stored or queued)."""

    job_id: str
    created: bool


def submit(
    data: bytes, filename: str, *, settings: Settings | None = None, queue: str | None = None
) -> str:
    """Store one upload and queue it for classification; returns the job id.

    An upload over ``FASHION_MAX_UPLOAD_BYTES`` is refused (``ImageError``,
    ``too_large``) before anything is stored or recorded.
    """
    return submit_upload(data, filename, settings=settings or get_settings(), queue=queue).job_id


def submit_upload(
    data: bytes,
    filename: str,
    *,
    settings: Settings,
    queue: str | None = None,
    api_key_id: int | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
    content_type: str | None = None,
    job_id: uuid.UUID | None = None,
) -> Submission:
    """``submit``, with what the HTTP API adds: the caller's key, an idempotency key
    (the same key and bytes → the same job; other bytes → ``IdempotencyConflict``),
    a callback URL, and the new job's id (the API watches for it before it exists).

    The order makes a crash at any point safe: the object is stored, then the job
    row committed, then the message sent (carrying the bytes too, up to
    ``FASHION_INLINE_PHOTO_BYTES``, so the worker need not fetch them). Killed
    before the commit, nothing was accepted (at most an unreferenced object); killed
    after it, the sweeper sends the job's message again (without the bytes).
    """
    if len(data) > settings.max_upload_bytes:
        raise ImageError(
            ErrorCode.TOO_LARGE,
            f"the upload is {len(data)} bytes; the limit is {settings.max_upload_bytes} bytes",
        )
    sha256 = hashlib.sha256(data).hexdigest()
    sessions = get_sessionmaker(settings.resolved_database_url)
    if idempotency_key is not None:
        earlier = _earlier_submission(sessions, api_key_id, idempotency_key, sha256)
        if earlier is not None:
            return earlier
    job_id = job_id or uuid.uuid4()
    image_key = f"uploads/{job_id}"
    store = get_store(settings)
    store.put(image_key, data, content_type=content_type)
    deadline = settings.job_deadline_seconds or None
    try:
        with sessions.begin() as session:
            create_job(
                session=session,
                job_id=job_id,
                image_key=image_key,
                filename=printable_filename(filename),
                content_sha256=sha256,
                deadline=None if deadline is None else dt.timedelta(seconds=deadline),
                api_key_id=api_key_id,
                idempotency_key=idempotency_key,
                callback_url=callback_url,
            )
    except sqlalchemy.exc.IntegrityError:
        # The same idempotency key, sent twice at once: the other request won.
        store.delete(image_key)
        earlier = _earlier_submission(sessions, api_key_id, idempotency_key or "", sha256)
        if earlier is None:
            raise
        return earlier
    try:
        inline = len(data) <= settings.inline_photo_bytes
        send_classify(
            settings, str(job_id), queue=queue, expires=deadline, photo=data if inline else None
        )
    except kombu.exceptions.OperationalError as exc:
        with sessions.begin() as session:
            fail_job(
                session=session,
                job_id=str(job_id),
                code=ErrorCode.ENQUEUE_FAILED,
                message=str(exc),
            )
        raise SubmitError(f"could not queue job {job_id}: {exc}") from exc
    return Submission(str(job_id), created=True)


def _earlier_submission(
    sessions: object, api_key_id: int | None, idempotency_key: str, sha256: str
) -> Submission | None:
    with sessions() as session:
        job = find_idempotent_job(
            session=session, api_key_id=api_key_id, idempotency_key=idempotency_key
        )
        if job is None:
            return None
        if job.content_sha256 != sha256:
            raise IdempotencyConflict(str(job.id))
        return Submission(str(job.id), created=False)


def result(job_id: str, *, settings: Settings | None = None) -> JobResult | None:
    """The job's current state and, once done, its similar items; ``None`` if unknown."""
    settings = settings or get_settings()
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        return None if job is None else job_result(session=session, job=job)


def wait(
    job_ids: Iterable[str],
    *,
    timeout: float,
    settings: Settings | None = None,
    poll_interval: float = 0.1,
) -> dict[str, JobResult | None]:
    """Wait until every job is ``done``/``failed`` or ``timeout`` seconds pass.

    Where the broker is Redis, woken by the worker's notice that a job finished
    (``messages.FinishedNotices``), which carries the job's answer (no read needed)
    or names it (read then), reading again at least every ``SAFETY_POLL_S`` in case a
    notice was lost; elsewhere (the embedded defaults) every ``poll_interval``."""
    settings = settings or get_settings()
    pending = list(job_ids)
    results: dict[str, JobResult | None] = {}
    deadline = time.monotonic() + timeout
    notices = _subscribed(settings)
    to_read = pending
    try:
        while True:
            for job_id in to_read:
                results[job_id] = result(job_id, settings=settings)
            pending = [
                job_id for job_id in pending if not (results[job_id] and results[job_id].finished)
            ]
            remaining = deadline - time.monotonic()
            if not pending or remaining <= 0:
                return results
            to_read = pending
            if notices is None:
                time.sleep(min(poll_interval, remaining))
                continue
            try:  # the jobs a notice named, or all of them when none came in time
                named = notices.wait_for(set(pending), min(SAFETY_POLL_S, remaining))
            except redis.RedisError:  # Redis went away: poll the catalog meanwhile
                notices.close()
                notices = None
                continue
            if named:
                for job_id, answer in named.items():
                    if answer is not None:
                        results[job_id] = JobResult.from_json(answer)
                to_read = [job_id for job_id, answer in named.items() if answer is None]
    finally:
        if notices is not None:
            notices.close()


def _subscribed(settings: Settings) -> FinishedNotices | None:
    """A subscription to the worker's notices, or ``None`` where there are none (the
    folder broker) or Redis cannot be reached now (``wait`` then polls the catalog)."""
    if not pushes_completion(settings):
        return None
    try:
        return FinishedNotices(settings)
    except redis.RedisError:
        return None


def enqueue_product_classification(
    product_ids: list[int],
    *,
    settings: Settings | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Queue product photos for classification on the bulk queue, in chunks; returns the count."""
    send_product_chunks(settings or get_settings(), product_ids, chunk_size=chunk_size)
    return len(product_ids)
