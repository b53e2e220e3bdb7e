"""The classification pipeline for one job, as a plain function.

fetch → validate → preprocess → predict → result and similar items in one
transaction. Celery tasks call it; so can a test or a script. A bad upload ends
the job ``failed`` with its error code; transient failures (storage or database
unreachable) propagate so the caller can retry.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache

from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, utcnow
from catalog.queries import as_uuid
from catalog.similar import rank_similar, replace_similar_items
from worker import metrics
from worker.classifier import get_classifier
from worker.config import Settings
from worker.errors import FashionError, JobNotFoundError
from worker.preprocess import ModelInput, prepare
from worker.storage import ObjectStore, make_store

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"done", "failed"})


@cache
def _store_for(settings: Settings, pid: int) -> ObjectStore:
    return make_store(settings)


def get_store(settings: Settings) -> ObjectStore:
    """This process's object store (boto3 clients do not survive fork)."""
    return _store_for(settings, os.getpid())


def classify_job(job_id: str, *, settings: Settings) -> str:
    """Run job ``job_id`` to a terminal state and return it (``done`` or ``failed``).

    A job already ``done`` or ``failed`` is left alone, so a duplicate delivery
    of the same message is harmless.
    """
    status = classify_jobs([job_id], settings=settings)[job_id]
    if status is None:
        raise JobNotFoundError(job_id)
    return status


def _claim(
    session: Session, job_ids: Sequence[str], max_attempts: int, retries: Mapping[str, int]
) -> tuple[dict[str, str], dict[str, str | None]]:
    """Mark the jobs ``running`` (one attempt more); past ``max_attempts``, ``poison``.

    Deliveries that our own retry path sent after a transient error (``retries``,
    carried in the message) are not counted against ``max_attempts``: those runs
    ended cleanly. What is left are deliveries whose worker never came back.

    Returns the claimed jobs (id → image key) and the settled ones: id → status
    for jobs already terminal (a duplicate delivery), ``None`` for unknown ids.
    """
    wanted = {job_id: as_uuid(job_id) for job_id in job_ids}
    jobs = {
        str(job.id): job
        for job in session.scalars(
            select(ClassificationJob)
            .where(ClassificationJob.id.in_([u for u in wanted.values() if u is not None]))
            .with_for_update()
        )
    }
    claimed: dict[str, str] = {}
    settled: dict[str, str | None] = {}
    now = utcnow()
    for job_id, parsed in wanted.items():
        job = jobs.get(str(parsed)) if parsed else None
        if job is None:
            settled[job_id] = None
        elif job.status in TERMINAL_STATUSES:
            log.info("job %s is already %s; skipping duplicate delivery", job_id, job.status)
            settled[job_id] = job.status
        elif job.attempts - retries.get(job_id, 0) >= max_attempts:
            # Redis has no dead-letter queue: a job that keeps killing or stalling
            # its worker would be redelivered for ever. Stop it here.
            job.status = "failed"
            job.error_code = "poison"
            job.error_message = (
                f"delivered {job.attempts - retries.get(job_id, 0) + 1} times without "
                f"finishing (limit {max_attempts})"
            )
            job.finished_at = now
            log.error("job %s: %s", job_id, job.error_message)
            metrics.job_finished("failed", "poison", _latency(job))
            settled[job_id] = "failed"
        else:
            job.status = "running"
            job.attempts += 1
            job.started_at = now
            job.requeued_at = None
            claimed[job_id] = job.image_key
    return claimed, settled


def _fetch_and_preprocess(settings: Settings, image_key: str) -> ModelInput | FashionError:
    try:
        data = get_store(settings).get(image_key)
        return prepare(
            data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
        )
    except FashionError as exc:
        return exc


def classify_jobs(
    job_ids: Sequence[str], *, settings: Settings, retries: Mapping[str, int] | None = None
) -> dict[str, str | None]:
    """Run several jobs together: one claim, concurrent fetches, one batched inference.

    Returns each id's terminal status (``None`` for an unknown job). Bad uploads
    end ``failed`` with their code; transient failures (storage or database
    unreachable) propagate, leaving the claimed jobs ``running`` for the caller
    to retry. Micro-batches of interactive uploads and single jobs share this path.
    ``retries`` (job id → retry number) marks deliveries sent by that retry path.
    """
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        work, statuses = _claim(session, job_ids, settings.max_attempts, retries or {})
    if not work:
        return statuses

    if len(work) == 1:
        loaded = [_fetch_and_preprocess(settings, next(iter(work.values())))]
    else:
        with ThreadPoolExecutor(min(len(work), settings.fetch_threads)) as pool:
            loaded = list(pool.map(lambda key: _fetch_and_preprocess(settings, key), work.values()))
    for job_id, item in zip(work, loaded, strict=True):
        if isinstance(item, FashionError):
            fail_job(job_id, code=item.code, message=item.message, settings=settings)
            statuses[job_id] = "failed"
    good = [
        (job_id, item)
        for job_id, item in zip(work, loaded, strict=True)
        if not isinstance(item, FashionError)
    ]
    if not good:
        return statuses

    classifier = get_classifier(settings)
    predictions = classifier.classify([item for _, item in good])
    metrics.batch("interactive", len(good))
    latencies = []
    with sessions.begin() as session:
        for (job_id, _), prediction in zip(good, predictions, strict=True):
            job = session.get(ClassificationJob, uuid.UUID(job_id), with_for_update=True)
            ranked = rank_similar(
                session=session,
                probabilities=prediction.probabilities,
                embedding=prediction.embedding,
                model_version=classifier.version,
                uncertain=prediction.uncertain,
                top_k=settings.similar_top_k,
                cache_seconds=settings.similar_cache_seconds,
            )
            job.status = "done"
            job.label = prediction.label
            job.confidence = prediction.confidence
            job.uncertain = prediction.uncertain
            job.probabilities = prediction.probabilities
            job.model_version = classifier.version
            job.error_code = job.error_message = None
            job.finished_at = utcnow()
            replace_similar_items(session=session, job=job, ranked=ranked)
            statuses[job_id] = "done"
            latencies.append(_latency(job))
    for latency in latencies:
        metrics.job_finished("done", None, latency)
    return statuses


def fail_job(job_id: str, *, code: str, message: str, settings: Settings) -> None:
    """Record a terminal failure with its stable code and human message."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        job = session.get(ClassificationJob, uuid.UUID(job_id), with_for_update=True)
        if job is None or job.status == "done":
            return
        job.status = "failed"
        job.error_code = code
        job.error_message = message
        job.finished_at = utcnow()
        latency = _latency(job)
    log.warning("job %s failed: %s: %s", job_id, code, message)
    metrics.job_finished("failed", code, latency)


def _latency(job: ClassificationJob) -> float | None:
    """Seconds from upload to result (SQLite hands back naive UTC timestamps)."""
    if job.created_at is None or job.finished_at is None:
        return None
    created, finished = (
        t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in (job.created_at, job.finished_at)
    )
    return (finished - created).total_seconds()
