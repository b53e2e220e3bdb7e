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
"""

from __future__ import annotations

import datetime as dt
import logging

from catalog.db import get_sessionmaker
from catalog.lifecycle import expire_overdue, requeue_stuck
from worker.config import Settings
from worker.service.jobs import finished
from worker.service.messages import send_classify

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
    return job_ids
