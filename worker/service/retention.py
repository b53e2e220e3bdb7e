"""Customers' photos are personal data: erased on request and after a retention period.

``erase`` removes uploads' objects, then their job rows (with similar items and
webhook attempts): killed in between, the rows are still there and the next run
deletes again (deleting a missing object is not an error). ``purge`` erases every
finished job created more than ``FASHION_RETENTION_DAYS`` ago; beat runs it daily
(``FASHION_PURGE_CRON``), ``fashion purge`` by hand. Catalog product photos are the
shop's own and are not touched.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from catalog.db import get_sessionmaker
from catalog.lifecycle import delete_jobs, old_jobs
from catalog.models import utcnow
from worker.config import Settings
from worker.storage import get_store, thumbnail_key

log = logging.getLogger(__name__)

#: Jobs erased per transaction.
PURGE_BATCH = 500


@dataclass(frozen=True)
class PurgeReport:
    cutoff: dt.datetime
    jobs: int
    dry_run: bool

    def as_dict(self) -> dict[str, object]:
        return {"cutoff": self.cutoff.isoformat(), "jobs": self.jobs, "dry_run": self.dry_run}


def erase(settings: Settings, jobs: Sequence[tuple[str, str]]) -> int:
    """Erase (job id, image key) pairs: objects first (the photo and its review
    thumbnail), then rows; returns rows deleted."""
    store = get_store(settings)
    for _, image_key in jobs:
        store.delete(image_key)
        store.delete(thumbnail_key(image_key))
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        return delete_jobs(session=session, job_ids=[job_id for job_id, _ in jobs])


def purge(
    settings: Settings, *, older_than: dt.timedelta | None = None, dry_run: bool = False
) -> PurgeReport:
    """Erase finished uploads created before now − ``older_than`` (default: the
    retention period); with ``dry_run`` only count them."""
    if older_than is None:
        older_than = dt.timedelta(days=settings.retention_days)
    cutoff = utcnow() - older_than
    sessions = get_sessionmaker(settings.resolved_database_url)
    total = 0
    while True:
        with sessions() as session:
            batch = old_jobs(
                session=session,
                created_before=cutoff,
                limit=PURGE_BATCH if not dry_run else 1_000_000_000,
            )
        if dry_run or not batch:
            total += len(batch)
            break
        total += erase(settings, batch)
    if total and not dry_run:
        log.info("retention: erased %d upload(s) created before %s", total, cutoff.isoformat())
    return PurgeReport(cutoff, total, dry_run)
