"""Every submitted job reaches a terminal state: queue again the ones that got stuck.

A job can be left ``queued`` (its message was lost: broker restarted without
persistence, purged queue) or ``running`` (its worker died, or a retry could not
be sent). Beat runs ``sweep`` every ``FASHION_SWEEP_SECONDS``: a job still
queued past its deadline ends ``expired`` (a worker drops an expired message
unread); each other job that has been queued or running for
``FASHION_STUCK_AFTER_SECONDS`` without news is sent again. Sending again is
always safe: a worker skips jobs already ``done`` or ``failed``, and a job
delivered more than ``FASHION_MAX_ATTEMPTS`` times ends ``failed`` with code
``poison`` instead of looping.

The same sweep resumes a bulk run that stalled (``resume_stalled_run``): one
whose chunk message was lost, so it would never finish on its own.
"""

from __future__ import annotations

import datetime as dt
import logging

from catalog.db import get_sessionmaker
from catalog.lifecycle import expire_overdue, requeue_stuck
from catalog.models import utcnow
from catalog.versions import filled_versions
from worker.config import Settings
from worker.service.jobs import finished
from worker.service.messages import send_classify
from worker.service.reclassify import latest_run, progress_of, start_run
from worker.service.status import queue_depths

log = logging.getLogger(__name__)

#: Jobs queued again per sweep at most; the next sweep takes the rest.
SWEEP_LIMIT = 1000


def sweep(settings: Settings, *, now: dt.datetime | None = None) -> list[str]:
    """Queue stuck jobs again; returns their ids."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        expired = expire_overdue(session=session, limit=SWEEP_LIMIT, now=now)
    if expired:
        log.warning("sweeper: %d job(s) passed their deadline unstarted: expired", len(expired))
        finished(settings, expired)
    with sessions.begin() as session:
        job_ids = requeue_stuck(
            session=session,
            stuck_after=dt.timedelta(seconds=settings.stuck_after_seconds),
            limit=SWEEP_LIMIT,
            now=now,
        )
    for job_id in job_ids:
        send_classify(settings, job_id)
    if job_ids:
        log.warning("sweeper: queued %d stuck job(s) again", len(job_ids))
    resume_stalled_run(settings, now=now)
    return job_ids


def resume_stalled_run(settings: Settings, *, now: dt.datetime | None = None) -> int | None:
    """Start the latest bulk run again if it stalled; returns the new run's id.

    A run stalls when one of its chunk messages is lost: kombu's Redis transport
    takes a message off the queue (BRPOP) before it records it as unacknowledged,
    so a worker killed between the two loses that chunk for good (the fault test
    that SIGKILLs a bulk worker saw it about once in 25 runs). Stalled means: not
    finished, for a version that is live or a candidate, nothing classified for
    ``FASHION_STUCK_AFTER_SECONDS``, and nothing waiting on the bulk queue (a
    long queue is slow, not lost). A new run of the same mode plans again from
    the catalog, which skips what the stalled run did, so it queues exactly what
    is missing; the stalled run's own progress, read from the products, then
    completes as well.
    """
    now = now or utcnow()
    with get_sessionmaker(settings.resolved_database_url)() as session:
        run = latest_run(session)
        if run is None or run.model_version not in filled_versions(session=session):
            return None
        progress = progress_of(session, run, now=now)
        chunk_size = run.chunk_size
    if progress.finished:
        return None
    last_news = progress.last_classified_at or progress.started_at
    if now - last_news < dt.timedelta(seconds=settings.stuck_after_seconds):
        return None
    if queue_depths(settings).get(settings.bulk_queue, 0):
        return None
    resumed = start_run(
        progress.mode,
        settings=settings,
        chunk_size=chunk_size,
        trigger="sweeper",
        version=progress.model_version,
    )
    log.warning(
        "sweeper: run %s stalled (nothing classified since %s, nothing queued): "
        "run %s queues the %d products it left",
        progress.run_id,
        last_news.isoformat(),
        resumed.id,
        resumed.total,
    )
    return resumed.id
