"""What the web backend calls: ``submit`` an upload, read its ``result``.

``submit`` stores the bytes, inserts the job row (``queued``), commits, then
enqueues task ``fashion.classify`` with the job id. If the broker cannot be
reached the job is marked ``failed`` (``enqueue_failed``) and ``SubmitError`` is
raised, so the caller always learns the truth and no row is left dangling.

A non-Python backend can do the same: put the object, insert the row, and
publish a Celery protocol-2 JSON message for task ``fashion.classify`` with
``args: ["<job id>"]`` on queue ``interactive`` (see README).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kombu.exceptions

from catalog.codes import TERMINAL_STATUSES, ErrorCode
from catalog.db import get_sessionmaker
from catalog.lifecycle import create_job, fail_job
from catalog.queries import get_job, similar_for_job
from worker.config import Settings, get_settings
from worker.errors import ImageError
from worker.service.messages import DEFAULT_CHUNK_SIZE, send_classify, send_product_chunks
from worker.storage import get_store


def printable_filename(filename: str) -> str:
    """The name as the database can store it: valid UTF-8 (undecodable bytes become
    "?"), no NUL, at most 255 characters."""
    return filename.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")[:255]


class SubmitError(RuntimeError):
    """The upload could not be queued; the job (if any) was marked failed."""


@dataclass(frozen=True)
class JobResult:
    job_id: str
    status: str
    label: int | None = None
    name: str | None = None
    confidence: float | None = None
    uncertain: bool | None = None
    model_version: str | None = None
    error: dict[str, str] | None = None
    similar: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "status": self.status,
            "label": self.label,
            "name": self.name,
            "confidence": self.confidence,
            "uncertain": self.uncertain,
            "model_version": self.model_version,
            "error": self.error,
            "similar": self.similar,
        }


def submit(
    data: bytes, filename: str, *, settings: Settings | None = None, queue: str | None = None
) -> str:
    """Store one upload and queue it for classification; returns the job id.

    An upload over ``FASHION_MAX_UPLOAD_BYTES`` is refused (``ImageError``,
    ``too_large``) before anything is stored or recorded.
    """
    settings = settings or get_settings()
    if len(data) > settings.max_upload_bytes:
        raise ImageError(
            ErrorCode.TOO_LARGE,
            f"the upload is {len(data)} bytes; the limit is {settings.max_upload_bytes} bytes",
        )
    filename = printable_filename(filename)
    job_id = uuid.uuid4()
    image_key = f"uploads/{job_id}"
    get_store(settings).put(image_key, data)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        create_job(
            session=session,
            job_id=job_id,
            image_key=image_key,
            filename=filename,
            content_sha256=hashlib.sha256(data).hexdigest(),
        )
    try:
        send_classify(settings, str(job_id), queue=queue)
    except kombu.exceptions.OperationalError as exc:
        with sessions.begin() as session:
            fail_job(
                session=session,
                job_id=str(job_id),
                code=ErrorCode.ENQUEUE_FAILED,
                message=str(exc),
            )
        raise SubmitError(f"could not queue job {job_id}: {exc}") from exc
    return str(job_id)


def result(job_id: str, *, settings: Settings | None = None) -> JobResult | None:
    """The job's current state and, once done, its similar items; ``None`` if unknown."""
    settings = settings or get_settings()
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:
            return None
        similar = similar_for_job(session=session, job_id=job.id) or []
        summary = job.as_dict()
    return JobResult(
        job_id=summary["job_id"],
        status=summary["status"],
        label=summary["label"],
        name=summary["name"],
        confidence=summary["confidence"],
        uncertain=summary["uncertain"],
        model_version=summary["model_version"],
        error=summary["error"],
        similar=[
            {"rank": item.rank, "sku": item.sku, "name": item.name, "score": item.score}
            for item in similar
        ],
    )


def wait(
    job_ids: Iterable[str],
    *,
    timeout: float,
    settings: Settings | None = None,
    poll_interval: float = 0.1,
) -> dict[str, JobResult | None]:
    """Poll until every job is ``done``/``failed`` or ``timeout`` seconds pass."""
    pending = list(job_ids)
    results: dict[str, JobResult | None] = {}
    deadline = time.monotonic() + timeout
    while True:
        for job_id in pending:
            results[job_id] = result(job_id, settings=settings)
        pending = [
            job_id for job_id in pending if not (results[job_id] and results[job_id].finished)
        ]
        if not pending or time.monotonic() >= deadline:
            return results
        time.sleep(poll_interval)


def enqueue_product_classification(
    product_ids: list[int],
    *,
    settings: Settings | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Queue product photos for classification on the bulk queue, in chunks; returns the count."""
    send_product_chunks(settings or get_settings(), product_ids, chunk_size=chunk_size)
    return len(product_ids)
