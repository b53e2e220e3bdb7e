"""Every submitted job reaches a terminal state: queue again the ones that got stuck.

A job can be left ``queued`` (its message was lost: broker restarted without
persistence, purged queue) or ``running`` (its worker died, or a retry could not
be sent). Beat runs ``sweep`` every ``FASHION_SWEEP_SECONDS``: each job that has
been queued or running for ``FASHION_STUCK_AFTER_SECONDS`` without news is sent
again. Sending again is always safe: a worker skips jobs already ``done`` or
``failed``, and a job delivered more than ``FASHION_MAX_ATTEMPTS`` times ends
``failed`` with code ``poison`` instead of looping.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import and_, func, or_, select

from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, utcnow
from worker.celery_app import CLASSIFY_TASK, make_celery
from worker.config import Settings

log = logging.getLogger(__name__)

#: Jobs queued again per sweep at most; the next sweep takes the rest.
SWEEP_LIMIT = 1000


def sweep(settings: Settings, *, now: dt.datetime | None = None) -> list[str]:
    """Queue stuck jobs again; returns their ids."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(seconds=settings.stuck_after_seconds)
    job = ClassificationJob
    stuck = or_(
        and_(job.status == "queued", func.coalesce(job.requeued_at, job.created_at) < cutoff),
        and_(job.status == "running", func.coalesce(job.requeued_at, job.started_at) < cutoff),
    )
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        jobs = session.scalars(
            select(job)
            .where(stuck)
            .order_by(job.created_at)
            .limit(SWEEP_LIMIT)
            .with_for_update(skip_locked=True)
        ).all()
        for row in jobs:
            row.requeued_at = now
        job_ids = [str(row.id) for row in jobs]
    app = make_celery(settings)
    for job_id in job_ids:
        app.send_task(CLASSIFY_TASK, args=[job_id], queue=settings.interactive_queue)
    if job_ids:
        log.warning("sweeper: queued %d stuck job(s) again", len(job_ids))
    return job_ids
