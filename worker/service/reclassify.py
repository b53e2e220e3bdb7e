"""Bulk re-classification of the catalog: plan a run, queue its chunks, report progress.

``fashion reclassify``, the nightly beat schedule and the model-change check all
call ``start_run``. A run queues every product photo that still needs the
current model (``stale``), every photo (``all``), or -- the nightly default --
those whose photo or model changed (``changed``, see ``worker.service.changes``;
the run records how many of each and why) in chunks on the bulk queue;
each chunk task skips what is already done, so re-running resumes rather than
repeats. An interrupted ``all`` run is resumed by the next ``all`` run for the
same model version: it keeps the first run's ``not_before``.

A run is for one model version (default: the live one) and writes only that
version's ``product_predictions`` rows: filling a candidate changes nothing the
live version answers with. Progress is read from those rows (see
``ReclassifyRun``), so it survives worker restarts and needs no counters kept in
step with the queue.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, not_, select
from sqlalchemy.orm import Session

from catalog.codes import ReclassifyMode
from catalog.db import get_sessionmaker
from catalog.models import Product, ProductPrediction, ReclassifyRun, as_utc, utcnow
from catalog.predictions import already_done
from catalog.versions import filled_versions
from worker.config import Settings
from worker.service.changes import REASONS, invalidate_kept_inputs, plan_changes
from worker.service.messages import DEFAULT_CHUNK_SIZE, send_product_chunks
from worker.service.registry import live_version_name, register_configured
from worker.storage import get_store

log = logging.getLogger(__name__)

#: Progress rate is measured over this trailing window.
RATE_WINDOW = dt.timedelta(seconds=60)


@dataclass(frozen=True)
class Progress:
    run_id: int
    mode: str
    model_version: str
    trigger: str
    started_at: dt.datetime
    reasons: dict[str, int] | None
    total: int
    done: int
    failed: int
    rate_per_s: float
    eta_s: float | None
    #: When the run last classified a product (``None``: not yet); the sweeper
    #: resumes a run that has been silent too long (``worker.service.sweeper``).
    last_classified_at: dt.datetime | None = None

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "model_version": self.model_version,
            "trigger": self.trigger,
            "started_at": self.started_at.isoformat(),
            "reasons": self.reasons,
            "total": self.total,
            "done": self.done,
            "failed": self.failed,
            "finished": self.finished,
            "rate_per_s": round(self.rate_per_s, 1),
            "eta_s": None if self.eta_s is None else round(self.eta_s, 1),
        }


def _unfinished_all_run(session: Session, version: str) -> ReclassifyRun | None:
    run = session.scalars(
        select(ReclassifyRun)
        .where(
            ReclassifyRun.mode == ReclassifyMode.ALL.value, ReclassifyRun.model_version == version
        )
        .order_by(ReclassifyRun.id.desc())
        .limit(1)
    ).first()
    if run is None or run.not_before is None:
        return None
    return None if progress_of(session, run).finished else run


def start_run(
    mode: str,
    *,
    settings: Settings,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    trigger: str = "cli",
    version: str | None = None,
) -> ReclassifyRun:
    """Record a run and queue its products in chunks on the bulk queue; returns the run.

    The run row is committed before the first message is sent, so progress is
    visible at once; if the broker fails half-way, the exception propagates and
    running the same command again queues what is still missing.
    """
    if mode not in tuple(ReclassifyMode):
        raise ValueError(f"mode must be one of {', '.join(ReclassifyMode)}, not {mode!r}")
    mode = ReclassifyMode(mode)
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    version = version or live_version_name(settings)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        now = utcnow()
        not_before: dt.datetime | None = None
        reasons: dict[str, int] | None = None
        if mode == ReclassifyMode.CHANGED:
            plan = plan_changes(session=session, store=get_store(settings), version=version)
            invalidate_kept_inputs(session=session, product_ids=plan.refetch)
            # Every queued product is redone, even one this model did before today.
            product_ids, reasons, not_before = plan.product_ids, plan.reasons, now
        else:
            if mode == ReclassifyMode.ALL:
                resumed = _unfinished_all_run(session, version)
                not_before = resumed.not_before if resumed else now
                if resumed:
                    log.info("resuming the 'all' run %s (not before %s)", resumed.id, not_before)
            product_ids = list(
                session.scalars(
                    select(Product.id)
                    .where(
                        Product.image_key.is_not(None),
                        not_(already_done(version, not_before)),
                    )
                    .order_by(Product.id)
                )
            )
        run = ReclassifyRun(
            mode=mode.value,
            model_version=version,
            not_before=not_before,
            total=len(product_ids),
            chunk_size=chunk_size,
            trigger=trigger,
            started_at=now,
            reasons=reasons,
        )
        session.add(run)
        session.flush()
        session.expunge(run)
    send_product_chunks(
        settings, product_ids, chunk_size=chunk_size, not_before=not_before, model_version=version
    )
    log.info(
        "run %s: queued %d products (%s, model %s%s)",
        run.id,
        run.total,
        mode,
        version,
        f", {describe_reasons(reasons)}" if reasons else "",
    )
    return run


def describe_reasons(reasons: dict[str, int]) -> str:
    """``"new 3, model 120, unchanged 9877"``: the non-zero counts, in ``REASONS`` order."""
    return ", ".join(
        f"{reason.replace('_', ' ')} {reasons[reason]}" for reason in REASONS if reasons.get(reason)
    )


def progress_of(
    session: Session, run: ReclassifyRun, *, now: dt.datetime | None = None
) -> Progress:
    """How far ``run`` has got, its rate over the last minute and its ETA."""
    now = now or utcnow()
    started = as_utc(run.started_at)
    touched = and_(
        ProductPrediction.model_version == run.model_version,
        ProductPrediction.classified_at >= started,
    )
    done, failed, recent, last = session.execute(
        select(
            func.count(),
            func.count(ProductPrediction.error),
            func.count().filter(ProductPrediction.classified_at >= now - RATE_WINDOW),
            func.max(ProductPrediction.classified_at),
        ).where(touched)
    ).one()
    done = min(done, run.total)
    window = min(RATE_WINDOW.total_seconds(), max((now - started).total_seconds(), 1e-3))
    rate = recent / window
    remaining = run.total - done
    eta = 0.0 if remaining == 0 else (remaining / rate if rate > 0 else None)
    return Progress(
        run_id=run.id,
        mode=run.mode,
        model_version=run.model_version,
        trigger=run.trigger,
        started_at=started,
        reasons=run.reasons,
        total=run.total,
        done=done,
        failed=min(failed, done),
        rate_per_s=rate,
        eta_s=eta,
        last_classified_at=None if last is None else as_utc(last),
    )


def latest_run(session: Session) -> ReclassifyRun | None:
    """The run started last, finished or not."""
    return session.scalars(select(ReclassifyRun).order_by(ReclassifyRun.id.desc()).limit(1)).first()


def run_progress(settings: Settings, run_id: int | None = None) -> Progress | None:
    """Progress of run ``run_id`` (default: the latest); ``None`` if there is none."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        run = latest_run(session) if run_id is None else session.get(ReclassifyRun, run_id)
        return None if run is None else progress_of(session, run)


def reclassify_if_model_changed(
    settings: Settings, *, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> int | None:
    """Register the configured model (a candidate when another is live) and start a
    ``stale`` run -- its fill -- for each live or candidate version that has had no
    run yet; returns the first new run's id (``None``: nothing new)."""
    register_configured(settings)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        versions = filled_versions(session=session)
        seen = set(
            session.scalars(
                select(ReclassifyRun.model_version).where(ReclassifyRun.model_version.in_(versions))
            )
        )
    started = []
    for version in versions:
        if version not in seen:
            log.info("model %s has no run yet: filling its catalog predictions", version)
            run = start_run(
                ReclassifyMode.STALE,
                settings=settings,
                chunk_size=chunk_size,
                trigger="model-change",
                version=version,
            )
            started.append(run.id)
    return started[0] if started else None


def start_runs_for_every_version(mode: str, *, settings: Settings, trigger: str) -> list[int]:
    """``start_run`` for the live version, then for each candidate (the nightly run:
    a candidate, and the previous live version kept for a rollback, stay filled)."""
    live = live_version_name(settings)
    with get_sessionmaker(settings.resolved_database_url)() as session:
        versions = filled_versions(session=session)
    ordered = [live, *(version for version in versions if version != live)]
    return [
        start_run(mode, settings=settings, trigger=trigger, version=version).id
        for version in ordered
    ]
