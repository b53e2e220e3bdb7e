"""No job is left behind and none loops for ever: the sweeper queues stuck jobs again;
a job (or a catalog photo) that keeps coming back ends with code ``poison``."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid

import pytest
import redis

from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob
from tests.support.factories import make_product, png_bytes
from tests.support.jobs import enqueue_by_hand, job_row, predictions
from worker import client
from worker.service import retry
from worker.service.jobs import classify_jobs
from worker.service.sweeper import sweep


def set_job(settings, job_id: str, **values) -> None:
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        job = session.get(ClassificationJob, uuid.UUID(job_id))
        for key, value in values.items():
            setattr(job, key, value)


def test_a_job_delivered_too_often_ends_poison(local_settings, fashion_mnist) -> None:
    settings = local_settings.model_copy(update={"max_attempts": 3})
    job_id = enqueue_by_hand(settings, png_bytes(fashion_mnist.test_images[0]))
    set_job(settings, job_id, status="running", attempts=3)  # three workers died on it

    assert classify_jobs([job_id], settings=settings) == {job_id: "failed"}
    row = job_row(settings, job_id)
    assert (row.status, row.error_code, row.attempts) == ("failed", "poison", 3)
    assert "delivered 4 times" in row.error_message


def test_sweeper_requeues_only_jobs_stuck_past_the_deadline(service_settings) -> None:
    settings = service_settings.model_copy(update={"stuck_after_seconds": 60})
    now = dt.datetime.now(dt.UTC)
    old = now - dt.timedelta(seconds=120)
    lost_queued = enqueue_by_hand(settings, b"x")
    set_job(settings, lost_queued, created_at=old)
    dead_running = enqueue_by_hand(settings, b"x")
    set_job(settings, dead_running, status="running", started_at=old, attempts=1)
    fresh_queued = enqueue_by_hand(settings, b"x")
    busy_running = enqueue_by_hand(settings, b"x")
    set_job(settings, busy_running, status="running", started_at=now, attempts=1)
    finished = enqueue_by_hand(settings, b"x")
    set_job(settings, finished, status="done", created_at=old)

    assert sorted(sweep(settings, now=now)) == sorted([lost_queued, dead_running])
    queue = redis.Redis.from_url(settings.resolved_broker_url)
    assert queue.llen(settings.interactive_queue) == 2
    # Queued again just now: not again on the next sweep, only after another deadline.
    assert sweep(settings, now=now + dt.timedelta(seconds=30)) == []
    # Two deadlines later every unfinished job is stuck, the finished one never. (Not
    # just one: the jobs were created after ``now``, seconds after on a loaded machine.)
    later = sweep(settings, now=now + dt.timedelta(seconds=120))
    assert sorted(later) == sorted([lost_queued, dead_running, fresh_queued, busy_running])


def test_a_lost_message_is_recovered_by_beat_and_a_real_worker(
    service_settings, start_worker, start_beat, fashion_mnist
) -> None:
    settings = service_settings.model_copy(update={"stuck_after_seconds": 1, "sweep_seconds": 0.5})
    job_id = client.submit(png_bytes(fashion_mnist.test_images[0]), "a.png", settings=settings)
    # The broker loses the message (e.g. Redis restarted without persistence).
    redis.Redis.from_url(settings.resolved_broker_url).delete(settings.interactive_queue)
    start_worker(settings, queues="interactive")
    start_beat(settings)
    result = client.wait([job_id], timeout=60, settings=settings)[job_id]
    assert result.status == "done"
    assert result.label == int(fashion_mnist.test_labels[0])
    time.sleep(1.5)  # further sweeps leave the finished job alone
    row = job_row(settings, job_id)
    assert (row.status, row.attempts, row.requeued_at) == ("done", 1, None)


def test_retries_after_transient_errors_do_not_count_as_deliveries(
    local_settings, fashion_mnist
) -> None:
    settings = local_settings.model_copy(update={"max_attempts": 3})
    job_id = enqueue_by_hand(settings, png_bytes(fashion_mnist.test_images[0]))
    # Three clean runs that hit a transient error, each re-sent by the retry path.
    set_job(settings, job_id, status="running", attempts=3)

    assert classify_jobs([job_id], settings=settings, retries={job_id: 3}) == {job_id: "done"}
    assert job_row(settings, job_id).attempts == 4


def test_a_redelivered_chunk_is_split_and_a_photo_that_keeps_coming_back_ends_poison(
    service_settings, bundled_model
) -> None:
    with get_sessionmaker(service_settings.resolved_database_url).begin() as session:
        ids = [make_product(session, category="Bag").id for _ in range(5)]
    queue = redis.Redis.from_url(service_settings.resolved_broker_url)

    retry.resend_redelivered_chunk(ids, None, 1, service_settings)
    sent = [json.loads(m) for m in queue.lrange(service_settings.bulk_queue, 0, -1)]
    assert sorted(m["headers"]["argsrepr"] for m in sent) == [repr([ids[:3]]), repr([ids[3:]])]
    assert all("'redeliveries': 1" in m["headers"]["kwargsrepr"] for m in sent)

    queue.delete(service_settings.bulk_queue)
    retry.resend_redelivered_chunk(
        ids[:1], None, service_settings.max_attempts - 1, service_settings
    )
    assert queue.llen(service_settings.bulk_queue) == 1  # sent on once more
    retry.resend_redelivered_chunk(ids[:1], None, service_settings.max_attempts, service_settings)
    assert queue.llen(service_settings.bulk_queue) == 1  # not again: it is settled
    said = predictions(service_settings, bundled_model[0])
    poisoned = said[ids[0]]
    assert (poisoned.error, poisoned.model_version) == ("poison", bundled_model[0])
    assert all(i not in said or said[i].error is None for i in ids[1:])


def test_time_limits_and_visibility_timeout_must_nest() -> None:
    from pydantic import ValidationError

    from worker.config import Settings

    redis_settings = Settings(broker_url="redis://127.0.0.1:6379/0")
    options = redis_settings.broker_transport_options
    assert options["visibility_timeout"] == 900 > redis_settings.task_time_limit + 60
    with pytest.raises(ValidationError, match="must exceed task_time_limit"):
        Settings(visibility_timeout=100, task_time_limit=90, retry_backoff_max=60)
    with pytest.raises(ValidationError, match="soft_time_limit must be below"):
        Settings(task_soft_time_limit=90, task_time_limit=90)
