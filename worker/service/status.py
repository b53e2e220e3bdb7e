"""What ops look at: queue depths, live workers, jobs by state, throughput, the bulk run,
which model version is live and which are candidates.

Works on any configured broker (Redis in production, the filesystem transport
on the embedded defaults): queue depth is the broker's own message count from a
passive queue declaration, and workers are those answering a broadcast ping.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kombu.exceptions import ChannelError
from sqlalchemy import func, select

from catalog.codes import JobStatus, ModelState
from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, utcnow
from catalog.versions import list_versions
from worker.config import Settings
from worker.service.celery_app import make_celery
from worker.service.reclassify import run_progress

THROUGHPUT_WINDOW = dt.timedelta(seconds=60)


def queue_depths(settings: Settings) -> dict[str, int]:
    """Messages waiting on each queue (not counting those a worker holds unacknowledged)."""
    app = make_celery(settings)
    depths: dict[str, int] = {}
    with app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=1)
        channel = connection.default_channel
        for queue in (settings.interactive_queue, settings.bulk_queue):
            try:
                depths[queue] = channel.queue_declare(queue=queue, passive=True).message_count
            except ChannelError:  # Redis drops the key of an empty list: nothing waits
                depths[queue] = 0
    return depths


def live_workers(settings: Settings, *, timeout: float = 1.0) -> list[str]:
    """Names of the workers that answered a ping within ``timeout`` seconds."""
    replies = make_celery(settings).control.ping(timeout=timeout) or []
    return sorted(name for reply in replies for name in reply)


def job_counts(settings: Settings) -> tuple[dict[str, int], float]:
    """Jobs by state, and jobs finished per second over the last minute."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        counts = {status.value: 0 for status in JobStatus}
        counts.update(
            session.execute(
                select(ClassificationJob.status, func.count()).group_by(ClassificationJob.status)
            ).all()
        )
        finished = session.scalar(
            select(func.count()).where(
                ClassificationJob.finished_at >= utcnow() - THROUGHPUT_WINDOW
            )
        )
    return counts, finished / THROUGHPUT_WINDOW.total_seconds()


def model_states(settings: Settings) -> dict[str, Any]:
    """The live version and the candidates (newest first), as the registry says."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        rows = list_versions(session=session)
    return {
        "live": next((row.version for row in rows if row.state == ModelState.LIVE), None),
        "candidates": [row.version for row in rows if row.state == ModelState.CANDIDATE],
    }


def collect(settings: Settings, *, ping_timeout: float = 1.0) -> dict[str, Any]:
    """One snapshot; the keys are what ``fashion status --json`` prints."""
    jobs, jobs_per_s = job_counts(settings)
    run = run_progress(settings)
    return {
        "queues": queue_depths(settings),
        "workers": live_workers(settings, timeout=ping_timeout),
        "jobs": jobs,
        "throughput": {"jobs_per_s": round(jobs_per_s, 2)},
        "reclassify": run.as_dict() if run else None,
        "models": model_states(settings),
    }
