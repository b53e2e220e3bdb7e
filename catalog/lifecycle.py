"""The job lifecycle: every state change of an upload's job, in one place.

An upload's job goes ``queued`` → ``running`` → ``done`` | ``failed``
(``catalog.codes.JobStatus``); a catalog product's predictions change in
``catalog.predictions``, by the same rules. Each change is a
keyword-only function with an explicit ``session``: the caller owns the
transaction, so a change and whatever goes with it (similar items, a batch's
other jobs) commit together or not at all. Nothing here knows Celery, storage or
the model; the worker calls these functions and reports metrics from what they
return.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, delete, func, or_, select
from sqlalchemy.orm import Session

from catalog.codes import TERMINAL_STATUSES, ErrorCode, JobStatus
from catalog.models import (
    ClassificationJob,
    Review,
    SimilarItem,
    WebhookDelivery,
    as_utc,
    utcnow,
)
from catalog.queries import as_uuid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Finished:
    """A job that reached a terminal state, for the caller's metrics and logs."""

    job_id: str
    status: JobStatus
    code: ErrorCode | None
    latency_s: float | None
    #: The job has a ``callback_url``: the caller sends its webhook.
    callback: bool = False
    #: The job as callers see it (``catalog.public.job_answer``, JSON-ready), where the
    #: one who finished it had it in hand: announced with its end.
    answer: dict[str, Any] | None = None


@dataclass
class Claim:
    """What ``claim_jobs`` did with each id it was given.

    ``claimed``: now ``running``, id → image key (``digests``: id → the upload's
    sha256). ``settled``: not to be worked on, id → its terminal status, or ``None``
    for an unknown id. ``finished``: those this claim ended (``poison``).
    """

    claimed: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    settled: dict[str, JobStatus | None] = field(default_factory=dict)
    finished: list[Finished] = field(default_factory=list)


def job_latency(job: ClassificationJob) -> float | None:
    """Seconds from upload to result."""
    if job.created_at is None or job.finished_at is None:
        return None
    return (as_utc(job.finished_at) - as_utc(job.created_at)).total_seconds()


def _finished(job: ClassificationJob, code: ErrorCode | None = None) -> Finished:
    return Finished(
        str(job.id), JobStatus(job.status), code, job_latency(job), job.callback_url is not None
    )


def create_job(
    *,
    session: Session,
    job_id: uuid.UUID,
    image_key: str,
    filename: str | None,
    content_sha256: str,
    deadline: dt.timedelta | None = None,
    api_key_id: int | None = None,
    idempotency_key: str | None = None,
    callback_url: str | None = None,
) -> ClassificationJob:
    """A new upload's job, ``queued``; not started within ``deadline`` it ends ``expired``."""
    now = utcnow()
    job = ClassificationJob(
        id=job_id,
        image_key=image_key,
        filename=filename,
        content_sha256=content_sha256,
        status=JobStatus.QUEUED.value,
        created_at=now,
        deadline_at=None if deadline is None else now + deadline,
        api_key_id=api_key_id,
        idempotency_key=idempotency_key,
        callback_url=callback_url,
    )
    session.add(job)
    return job


def _overdue(job: ClassificationJob, now: dt.datetime) -> bool:
    """Never started, and past its deadline."""
    return (
        job.status == JobStatus.QUEUED
        and job.deadline_at is not None
        and as_utc(job.deadline_at) < now
    )


def claim_jobs(
    *,
    session: Session,
    job_ids: Sequence[str],
    max_attempts: int,
    retries: Mapping[str, int] | None = None,
) -> Claim:
    """Mark the jobs ``running`` (one attempt more); past ``max_attempts``, ``poison``;
    never started and past their deadline, ``expired``.

    Deliveries that the retry path sent after a transient error (``retries``,
    carried in the message) are not counted against ``max_attempts``: those runs
    ended cleanly. What is left are deliveries whose worker never came back.
    Jobs already terminal (a duplicate delivery) are left alone.
    """
    retries = retries or {}
    wanted = {job_id: as_uuid(job_id) for job_id in job_ids}
    jobs = {
        str(job.id): job
        for job in session.scalars(
            select(ClassificationJob)
            .where(ClassificationJob.id.in_([u for u in wanted.values() if u is not None]))
            .with_for_update()
        )
    }
    claim = Claim()
    now = utcnow()
    for job_id, parsed in wanted.items():
        job = jobs.get(str(parsed)) if parsed else None
        if job is None:
            claim.settled[job_id] = None
        elif job.status in TERMINAL_STATUSES:
            log.info("job %s is already %s; skipping duplicate delivery", job_id, job.status)
            claim.settled[job_id] = JobStatus(job.status)
        elif _overdue(job, now):
            waited = (now - as_utc(job.created_at)).total_seconds()
            _finish_failed(
                job, ErrorCode.EXPIRED, f"not started within its deadline ({waited:.1f} s)", now
            )
            log.warning("job %s: %s", job_id, job.error_message)
            claim.settled[job_id] = JobStatus.FAILED
            claim.finished.append(_finished(job, ErrorCode.EXPIRED))
        elif job.attempts - retries.get(job_id, 0) >= max_attempts:
            # Redis has no dead-letter queue: a job that keeps killing or stalling
            # its worker would be redelivered for ever. Stop it here.
            deliveries = job.attempts - retries.get(job_id, 0) + 1
            _finish_failed(
                job,
                ErrorCode.POISON,
                f"delivered {deliveries} times without finishing (limit {max_attempts})",
                now,
            )
            log.error("job %s: %s", job_id, job.error_message)
            claim.settled[job_id] = JobStatus.FAILED
            claim.finished.append(_finished(job, ErrorCode.POISON))
        else:
            job.status = JobStatus.RUNNING.value
            job.attempts += 1
            job.started_at = now
            job.requeued_at = None
            claim.claimed[job_id] = job.image_key
            claim.digests[job_id] = job.content_sha256
    return claim


def complete_job(
    *,
    session: Session,
    job_id: str,
    label: int,
    confidence: float,
    uncertain: bool,
    probabilities: list[float],
    model_version: str,
    family: str | None = None,
    timings: Mapping[str, float] | None = None,
) -> tuple[ClassificationJob, Finished]:
    """Record a job's result: ``done``. The caller adds its similar items in the same
    transaction (``catalog.similar.replace_similar_items``).

    ``timings``: the ms of the stages the worker timed since its claim; the job keeps
    them with ``queued`` (created → claimed) and ``write`` (the rest, up to
    ``finished_at``), so they add up to ``created_at`` → ``finished_at``."""
    job = session.get(ClassificationJob, uuid.UUID(job_id), with_for_update=True)
    job.status = JobStatus.DONE.value
    job.label = label
    job.confidence = confidence
    job.uncertain = uncertain
    job.family = family
    job.probabilities = probabilities
    job.model_version = model_version
    job.error_code = job.error_message = None
    job.finished_at = utcnow()
    if timings is not None and job.started_at is not None:
        started, created = as_utc(job.started_at), as_utc(job.created_at)
        since_claim = (job.finished_at - started).total_seconds() * 1000
        job.timings = {
            "queued": round((started - created).total_seconds() * 1000, 2),
            **{stage: round(ms, 2) for stage, ms in timings.items()},
            "write": round(max(0.0, since_claim - sum(timings.values())), 2),
        }
    return job, _finished(job)


def fail_job(*, session: Session, job_id: str, code: ErrorCode, message: str) -> Finished | None:
    """Record a terminal failure with its stable code and human message.

    A job already ``done`` keeps its result (``None`` is returned), as does an unknown id.
    """
    job = session.get(ClassificationJob, uuid.UUID(job_id), with_for_update=True)
    if job is None or job.status == JobStatus.DONE:
        return None
    _finish_failed(job, ErrorCode(code), message, utcnow())
    return _finished(job, ErrorCode(code))


def _finish_failed(job: ClassificationJob, code: ErrorCode, message: str, now: dt.datetime) -> None:
    job.status = JobStatus.FAILED.value
    job.error_code = code.value
    job.error_message = message
    job.finished_at = now


def requeue_stuck(
    *, session: Session, stuck_after: dt.timedelta, limit: int, now: dt.datetime | None = None
) -> list[str]:
    """Jobs ``queued`` or ``running`` for ``stuck_after`` without news, oldest first, at
    most ``limit``: stamped ``requeued_at`` (so the next sweep waits again) and returned,
    for the caller to send again. Their state does not change."""
    now = now or utcnow()
    cutoff = now - stuck_after
    job = ClassificationJob
    stuck = or_(
        and_(
            job.status == JobStatus.QUEUED.value,
            func.coalesce(job.requeued_at, job.created_at) < cutoff,
        ),
        and_(
            job.status == JobStatus.RUNNING.value,
            func.coalesce(job.requeued_at, job.started_at) < cutoff,
        ),
    )
    jobs = session.scalars(
        select(job)
        .where(stuck)
        .order_by(job.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for row in jobs:
        row.requeued_at = now
    return [str(row.id) for row in jobs]


def expire_overdue(
    *, session: Session, limit: int, now: dt.datetime | None = None
) -> list[Finished]:
    """Jobs still ``queued`` past their deadline end ``failed`` (``expired``), at most
    ``limit``: their message may never reach a worker (Celery drops an expired
    message unread), so the sweeper settles them."""
    now = now or utcnow()
    jobs = session.scalars(
        select(ClassificationJob)
        .where(
            ClassificationJob.status == JobStatus.QUEUED.value,
            ClassificationJob.deadline_at < now,
        )
        .order_by(ClassificationJob.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    for job in jobs:
        _finish_failed(job, ErrorCode.EXPIRED, "not started within its deadline", now)
    return [_finished(job, ErrorCode.EXPIRED) for job in jobs]


def old_jobs(*, session: Session, created_before: dt.datetime, limit: int) -> list[tuple[str, str]]:
    """(job id, image key) of finished jobs created before ``created_before``, oldest
    first, at most ``limit``: what retention erases."""
    rows = session.execute(
        select(ClassificationJob.id, ClassificationJob.image_key)
        .where(
            ClassificationJob.created_at < created_before,
            ClassificationJob.status.in_([status.value for status in TERMINAL_STATUSES]),
        )
        .order_by(ClassificationJob.created_at)
        .limit(limit)
    ).all()
    return [(str(job_id), key) for job_id, key in rows]


def delete_jobs(*, session: Session, job_ids: Sequence[str]) -> int:
    """Erase jobs with their similar items, webhook attempts and reviews; returns how many."""
    ids = [parsed for parsed in map(as_uuid, job_ids) if parsed is not None]
    if not ids:
        return 0
    # Explicit, not ON DELETE CASCADE alone: SQLite enforces foreign keys only when asked.
    session.execute(delete(SimilarItem).where(SimilarItem.job_id.in_(ids)))
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.job_id.in_(ids)))
    session.execute(delete(Review).where(Review.job_id.in_(ids)))
    result = session.execute(delete(ClassificationJob).where(ClassificationJob.id.in_(ids)))
    return result.rowcount
