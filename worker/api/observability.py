"""What ``/readyz`` and ``/metrics`` report beyond the request counters: whether the
servers behind the API answer, the upload queue's depth, and the review loop.

Both collectors run at scrape time; a scrape answers (without their figures) when
the broker or the database is down.
"""

from __future__ import annotations

import logging

import sqlalchemy.exc
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob
from catalog.review_results import AGREEMENT_WINDOW, review_stats
from catalog.reviews import queue_lengths
from worker.api.limits import QueueDepth
from worker.config import Settings
from worker.service.celery_app import make_celery
from worker.storage import get_store

log = logging.getLogger(__name__)


def readiness(settings: Settings) -> dict[str, str]:
    """Each dependency: ``ok``, or ``unavailable (<error type>)``.

    ``/readyz`` answers anyone, so it names which server is down but not where it
    lives: the full error (socket path, host and port, endpoint, bucket) goes to the
    log only.
    """
    checks: dict[str, str] = {}
    for name, check in DEPENDENCIES:
        try:
            check(settings)
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            log.warning("readyz: %s unavailable: %s: %s", name, type(exc).__name__, exc)
            checks[name] = f"unavailable ({type(exc).__name__})"
    return checks


def _database_answers(settings: Settings) -> None:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        session.execute(text("SELECT 1"))
        session.execute(select(ClassificationJob.id).limit(1))


def _broker_answers(settings: Settings) -> None:
    with make_celery(settings).connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=2)


def _storage_answers(settings: Settings) -> None:
    get_store(settings).exists("uploads/readyz-probe")


#: What the API needs, each with a check that raises when it cannot be used.
DEPENDENCIES = (
    ("database", _database_answers),
    ("broker", _broker_answers),
    ("storage", _storage_answers),
)


class DepthCollector:
    def __init__(self, depth: QueueDepth) -> None:
        self.depth = depth

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily("fashion_api_queue_depth", "Uploads waiting (as the API sees).")
        try:
            gauge.add_metric([], self.depth.current())
        except Exception:  # noqa: BLE001 - a scrape must answer when the broker is down
            return
        yield gauge


class ReviewCollector:
    """The review loop, read from the database at each scrape (so every API process
    reports the same figures): items waiting per queue, answers, agreement."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import GaugeMetricFamily

        try:
            with self.sessions() as session:
                lengths = queue_lengths(session=session)
                stats = review_stats(session=session)
        except sqlalchemy.exc.SQLAlchemyError:
            return
        waiting = GaugeMetricFamily(
            "fashion_review_queue_length", "Items waiting for a reviewer.", labels=["queue"]
        )
        for queue, length in lengths.items():
            waiting.add_metric([queue.value], length)
        yield waiting
        answers = GaugeMetricFamily(
            "fashion_reviews", "Review answers stored, by answer.", labels=["answer"]
        )
        for answer, count in stats.by_answer.items():
            answers.add_metric([answer], count)
        yield answers
        if stats.agreement is not None:
            yield GaugeMetricFamily(
                "fashion_review_model_agreement",
                f"Share of the latest (up to {AGREEMENT_WINDOW}) category answers where the "
                "model's top class was the reviewer's.",
                value=stats.agreement,
            )
