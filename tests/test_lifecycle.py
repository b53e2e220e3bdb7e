"""The job and product lifecycle as plain functions on a session: no Celery, no Redis.

Run on SQLite and on the real PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import datetime as dt
import uuid

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.codes import ErrorCode, JobStatus
from catalog.db import get_sessionmaker
from catalog.embeddings import encode_embedding
from catalog.lifecycle import (
    claim_jobs,
    complete_job,
    create_job,
    delete_jobs,
    expire_overdue,
    fail_job,
    old_jobs,
    requeue_stuck,
)
from catalog.models import ClassificationJob, ProductPrediction, utcnow
from catalog.predictions import ProductOutcome, mark_products_poison, record_predictions
from tests.support.factories import make_product

PROBABILITIES = [0.01, 0.91, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]


def new_job(session: Session, *, deadline: dt.timedelta | None = None) -> str:
    job_id = uuid.uuid4()
    create_job(
        session=session,
        job_id=job_id,
        image_key=f"uploads/{job_id}",
        filename="photo.jpg",
        content_sha256="0" * 64,
        deadline=deadline,
    )
    session.flush()
    return str(job_id)


def complete(session: Session, job_id: str):  # type: ignore[no-untyped-def]
    return complete_job(
        session=session,
        job_id=job_id,
        label=1,
        confidence=0.91,
        uncertain=False,
        probabilities=PROBABILITIES,
        model_version="m1",
    )


def row(session: Session, job_id: str) -> ClassificationJob:
    return session.get(ClassificationJob, uuid.UUID(job_id))


def test_a_new_job_is_queued_with_no_attempts(session) -> None:
    job = row(session, new_job(session))
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)


def test_claiming_runs_known_jobs_and_settles_unknown_and_finished_ones(session) -> None:
    waiting, finished = new_job(session), new_job(session)
    fail_job(session=session, job_id=finished, code=ErrorCode.CORRUPT, message="damaged")
    unknown, garbage = str(uuid.uuid4()), "not-a-uuid"

    claim = claim_jobs(
        session=session, job_ids=[waiting, finished, unknown, garbage], max_attempts=5
    )

    assert claim.claimed == {waiting: f"uploads/{waiting}"}
    assert claim.settled == {finished: JobStatus.FAILED, unknown: None, garbage: None}
    assert claim.finished == []
    assert (row(session, waiting).status, row(session, waiting).attempts) == ("running", 1)


def test_a_job_delivered_too_often_ends_poison_but_retries_do_not_count(session) -> None:
    job_id = new_job(session)
    for _ in range(3):
        claim_jobs(session=session, job_ids=[job_id], max_attempts=3)
    # Two of those three deliveries were clean retries: it may run again.
    again = claim_jobs(session=session, job_ids=[job_id], max_attempts=3, retries={job_id: 2})
    assert job_id in again.claimed

    poisoned = claim_jobs(session=session, job_ids=[job_id], max_attempts=3)
    job = row(session, job_id)
    assert poisoned.settled == {job_id: JobStatus.FAILED}
    assert (job.status, job.error_code) == ("failed", "poison")
    assert [(f.status, f.code) for f in poisoned.finished] == [(JobStatus.FAILED, ErrorCode.POISON)]
    assert "delivered 5 times" in job.error_message  # this delivery included


def test_completing_a_job_records_the_answer_and_its_latency(session) -> None:
    job_id = new_job(session)
    claim_jobs(session=session, job_ids=[job_id], max_attempts=5)
    job, finished = complete(session, job_id)
    assert (job.status, job.label, job.model_version, job.error_code) == ("done", 1, "m1", None)
    assert finished.status == JobStatus.DONE and finished.latency_s >= 0


def test_a_done_job_keeps_its_result_when_a_late_failure_arrives(session) -> None:
    job_id = new_job(session)
    complete(session, job_id)
    assert (
        fail_job(session=session, job_id=job_id, code=ErrorCode.INTERNAL_ERROR, message="x") is None
    )
    assert row(session, job_id).status == JobStatus.DONE


def test_stuck_jobs_are_stamped_for_sending_again_oldest_first(database_url) -> None:
    sessions = get_sessionmaker(database_url)
    with sessions.begin() as session:
        stuck_queued, fresh, stuck_running = (new_job(session) for _ in range(3))
        claim_jobs(session=session, job_ids=[stuck_running], max_attempts=5)
    later = utcnow() + dt.timedelta(minutes=10)
    with sessions.begin() as session:
        row(session, fresh).created_at = later
    with sessions.begin() as session:
        sent = requeue_stuck(
            session=session, stuck_after=dt.timedelta(minutes=5), limit=10, now=later
        )
    assert sorted(sent) == sorted([stuck_queued, stuck_running])
    with sessions.begin() as session:
        assert row(session, stuck_queued).status == JobStatus.QUEUED  # state unchanged
        assert row(session, stuck_queued).requeued_at is not None
        # Stamped: the next sweep a moment later leaves them alone.
        assert (
            requeue_stuck(session=session, stuck_after=dt.timedelta(minutes=5), limit=10, now=later)
            == []
        )


def test_product_predictions_and_errors_are_written_for_the_model_version(session) -> None:
    good, bad, killer = (make_product(session, category="Bag") for _ in range(3))
    record_predictions(
        session=session,
        model_version="m2",
        outcomes=[
            ProductOutcome(good.id, label=8, confidence=0.97, embedding=np.ones(4) / 2),
            ProductOutcome(bad.id, error=ErrorCode.BLANK),
        ],
    )
    mark_products_poison(session=session, product_ids=[killer.id], model_version="m2")
    session.expire_all()
    products = {i: session.get(ProductPrediction, (i, "m2")) for i in (good.id, bad.id, killer.id)}
    assert (products[good.id].label, products[good.id].error) == (8, None)
    assert products[good.id].embedding is not None
    assert (products[bad.id].label, products[bad.id].error) == (None, "blank")
    assert products[killer.id].error == "poison"
    assert {p.model_version for p in products.values()} == {"m2"}


def test_a_job_not_started_by_its_deadline_is_expired_at_claim_and_by_the_sweep(
    session,
) -> None:
    overdue, also_overdue, patient, started = (
        new_job(session, deadline=dt.timedelta(seconds=-1)),
        new_job(session, deadline=dt.timedelta(seconds=-1)),
        new_job(session, deadline=dt.timedelta(hours=1)),
        new_job(session, deadline=dt.timedelta(seconds=-1)),
    )
    row(session, started).status = JobStatus.RUNNING.value  # started in time, then retried

    claim = claim_jobs(session=session, job_ids=[overdue, patient, started], max_attempts=5)
    swept = expire_overdue(session=session, limit=100)

    assert claim.settled == {overdue: JobStatus.FAILED}
    assert set(claim.claimed) == {patient, started}
    assert [(f.job_id, f.code) for f in claim.finished] == [(overdue, ErrorCode.EXPIRED)]
    assert [(f.job_id, f.code) for f in swept] == [(also_overdue, ErrorCode.EXPIRED)]
    for job_id in (overdue, also_overdue):
        assert row(session, job_id).status == JobStatus.FAILED
        assert row(session, job_id).error_code == ErrorCode.EXPIRED
    assert expire_overdue(session=session, limit=100) == []


def test_old_finished_jobs_are_listed_for_erasure_and_deleted_with_their_rows(session) -> None:
    old_done, old_queued, recent_done = new_job(session), new_job(session), new_job(session)
    for job_id in (old_done, recent_done):
        complete(session, job_id)
    for job_id in (old_done, old_queued):
        row(session, job_id).created_at = utcnow() - dt.timedelta(days=40)
    session.flush()

    old = old_jobs(session=session, created_before=utcnow() - dt.timedelta(days=30), limit=10)

    assert old == [(old_done, f"uploads/{old_done}")]
    assert delete_jobs(session=session, job_ids=[old_done]) == 1
    session.expire_all()
    assert row(session, old_done) is None
    assert row(session, old_queued) is not None and row(session, recent_done) is not None


def test_each_model_version_keeps_its_own_prediction_row_for_a_product(session) -> None:
    """A candidate's fill writes its own rows: the live version's stay as they were."""
    coat = make_product(session, category="Coat")
    record_predictions(
        session=session,
        model_version="live",
        outcomes=[ProductOutcome(coat.id, label=4, confidence=0.9, embedding=np.ones(4) / 2)],
    )
    record_predictions(
        session=session,
        model_version="candidate",
        outcomes=[ProductOutcome(coat.id, label=2, confidence=0.6, embedding=-np.ones(4) / 2)],
    )
    record_predictions(
        session=session,
        model_version="candidate",
        outcomes=[ProductOutcome(coat.id, error=ErrorCode.CORRUPT)],
    )
    session.expire_all()
    rows = {
        row.model_version: row
        for row in session.scalars(
            select(ProductPrediction).where(ProductPrediction.product_id == coat.id)
        )
    }
    assert set(rows) == {"live", "candidate"}
    live, candidate = rows["live"], rows["candidate"]
    assert (live.label, live.confidence, live.error, live.category) == (4, 0.9, None, "Coat")
    assert live.embedding == encode_embedding(np.ones(4) / 2)
    assert (candidate.label, candidate.embedding, candidate.error) == (None, None, "corrupt")


def test_a_product_moved_to_another_category_moves_its_prediction_rows(session) -> None:
    product = make_product(session, sku="X-1", category="Coat")
    record_predictions(
        session=session,
        model_version="live",
        outcomes=[ProductOutcome(product.id, label=4, confidence=0.9, embedding=np.ones(4))],
    )
    make_product(session, sku="X-1", category="Pullover")
    session.expire_all()
    assert session.scalars(select(ProductPrediction.category)).all() == ["Pullover"]
