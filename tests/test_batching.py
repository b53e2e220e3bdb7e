"""Micro-batched interactive jobs: one claim, one inference, per-job outcomes."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter

import pytest
import redis

from tests.support.factories import png_bytes
from tests.support.jobs import enqueue_by_hand, job_row
from tests.support.servers import free_port
from worker import client
from worker.service import retry
from worker.service.celery_app import make_celery
from worker.service.jobs import classify_jobs
from worker.service.messages import CLASSIFY_TASK, send_classify


def test_a_batch_gives_each_job_its_own_outcome(service_settings, fashion_mnist) -> None:
    good = [
        enqueue_by_hand(service_settings, png_bytes(fashion_mnist.test_images[i])) for i in range(5)
    ]
    corrupt = enqueue_by_hand(service_settings, b"GIF89a not really")
    missing = enqueue_by_hand(service_settings, None)
    unknown = str(uuid.uuid4())
    classify_jobs([good[0]], settings=service_settings)  # already done: a duplicate below

    statuses = classify_jobs([*good, corrupt, missing, unknown], settings=service_settings)

    assert statuses == {
        **dict.fromkeys(good, "done"),
        corrupt: "failed",
        missing: "failed",
        unknown: None,
    }
    rows = {job_id: job_row(service_settings, job_id) for job_id in good}
    assert [rows[j].label for j in good] == [int(fashion_mnist.test_labels[i]) for i in range(5)]
    assert all(row.attempts == 1 for row in rows.values())  # the duplicate was not re-run
    assert len({rows[j].started_at for j in good[1:]}) == 1  # claimed together
    assert job_row(service_settings, corrupt).error_code == "corrupt"
    assert job_row(service_settings, missing).error_code == "object_missing"


def test_an_unexpected_error_fails_only_the_job_that_causes_it(
    local_settings, fashion_mnist, monkeypatch
) -> None:
    jobs = [
        enqueue_by_hand(local_settings, png_bytes(fashion_mnist.test_images[i])) for i in range(3)
    ]
    real = retry.classify_jobs

    def broken_for_the_second(job_ids, *, settings, **options):
        if jobs[1] in job_ids:
            raise RuntimeError("bug triggered by this upload")
        return real(job_ids, settings=settings, **options)

    monkeypatch.setattr(retry, "classify_jobs", broken_for_the_second)
    retry.classify_batch(jobs, {}, local_settings)

    outcomes = [job_row(local_settings, job_id) for job_id in jobs]
    assert [row.status for row in outcomes] == ["done", "failed", "done"]
    assert outcomes[1].error_code == "internal_error"
    assert "bug triggered by this upload" in outcomes[1].error_message


def test_storage_down_requeues_with_backoff_then_fails_when_retries_run_out(
    service_settings, fashion_mnist
) -> None:
    unreachable = service_settings.model_copy(
        update={"s3_endpoint_url": f"http://127.0.0.1:{free_port()}", "task_max_retries": 2}
    )
    job_id = enqueue_by_hand(service_settings, png_bytes(fashion_mnist.test_images[0]))
    queue = redis.Redis.from_url(service_settings.resolved_broker_url)

    retry.classify_batch([job_id], {}, unreachable)
    assert job_row(service_settings, job_id).status == "running"
    retried = [json.loads(m) for m in queue.lrange(service_settings.interactive_queue, 0, -1)]
    assert len(retried) == 1
    headers = retried[0]["headers"]
    assert headers["argsrepr"] == repr([job_id]) and headers["eta"]  # delayed, not immediate
    assert "'retry': 1" in headers["kwargsrepr"]

    retry.classify_batch([job_id], {job_id: 2}, unreachable)  # the last retry fails too
    row = job_row(service_settings, job_id)
    assert (row.status, row.error_code) == ("failed", "retries_exhausted")
    assert "Could not connect" in row.error_message


def test_a_burst_is_micro_batched_by_a_real_worker(
    service_settings, start_worker, fashion_mnist
) -> None:
    start_worker(service_settings, queues="interactive", prefetch=service_settings.batch_max_size)
    # Let the worker come up, so the burst below arrives while it is listening.
    warm = client.submit(
        png_bytes(fashion_mnist.test_images[0]), "w.png", settings=service_settings
    )
    assert client.wait([warm], timeout=60, settings=service_settings)[warm].status == "done"

    # Many web processes uploading at once: rows and objects first, then the
    # messages back to back, as concurrent requests would send them.
    burst = [
        enqueue_by_hand(service_settings, png_bytes(image))
        for image in fashion_mnist.test_images[1:41]
    ]
    sender = make_celery(service_settings)
    for job_id in burst:
        sender.send_task(CLASSIFY_TASK, args=[job_id], queue=service_settings.interactive_queue)
    results = client.wait(burst, timeout=60, settings=service_settings)
    assert all(job.status == "done" for job in results.values())
    started = Counter(job_row(service_settings, job_id).started_at for job_id in burst)
    assert max(started.values()) > 1, "no two uploads of the burst shared a batch"
    assert max(started.values()) <= service_settings.batch_max_size


@pytest.mark.parametrize("eager", [True, False])
def test_an_idle_worker_starts_a_lone_upload_without_waiting_for_the_timer(
    service_settings, start_worker, fashion_mnist, eager
) -> None:
    """Eager (the default), an upload that finds the pool process free starts at once;
    not eager, it waits the whole batch timer (here 1 s) for neighbours."""
    settings = service_settings.model_copy(update={"batch_max_wait_ms": 1000, "batch_eager": eager})
    start_worker(settings, queues="interactive", prefetch=settings.batch_max_size)
    jobs = [
        client.submit(png_bytes(image), "one.png", settings=settings)
        for image in fashion_mnist.test_images[:1]
    ]
    assert client.wait(jobs, timeout=60, settings=settings)[jobs[0]].status == "done"
    time.sleep(1.5)  # the worker idle again, its timer gone
    lone = client.submit(png_bytes(fashion_mnist.test_images[1]), "two.png", settings=settings)
    assert client.wait([lone], timeout=30, settings=settings)[lone].status == "done"

    queued_ms = job_row(settings, lone).timings["queued"]
    if eager:
        assert queued_ms < 500, queued_ms
    else:
        assert queued_ms >= 900, queued_ms


def test_micro_batching_is_off_where_the_worker_loop_cannot_time_it() -> None:
    from worker.config import Settings

    assert Settings(broker_url="redis://127.0.0.1:6379/0").micro_batch_size == 16
    assert Settings(broker_url="redis://127.0.0.1:6379/0", batch_max_size=1).micro_batch_size == 1
    assert Settings().micro_batch_size == 1  # embedded defaults: filesystem transport


def _idle_worker_with_slow_flush(service_settings, start_worker, fashion_mnist):
    """A real micro-batching worker whose batches wait 0.5 s, even with a process free
    (not eager), so messages sent back to back are sure to share one batch; warmed up
    with one upload."""
    settings = service_settings.model_copy(update={"batch_max_wait_ms": 500, "batch_eager": False})
    start_worker(settings, queues="interactive", prefetch=settings.batch_max_size)
    warm = client.submit(png_bytes(fashion_mnist.test_images[0]), "w.png", settings=settings)
    assert client.wait([warm], timeout=60, settings=settings)[warm].status == "done"
    return settings


def test_a_malformed_message_is_dropped_alone_and_its_batch_neighbours_finish(
    service_settings, start_worker, fashion_mnist
) -> None:
    settings = _idle_worker_with_slow_flush(service_settings, start_worker, fashion_mnist)
    first, dropped, last = (
        enqueue_by_hand(settings, png_bytes(image)) for image in fashion_mnist.test_images[1:4]
    )
    sender, queue = make_celery(settings), settings.interactive_queue
    sender.send_task(CLASSIFY_TASK, args=[], queue=queue)
    sender.send_task(CLASSIFY_TASK, args=[first], queue=queue)
    sender.send_task(CLASSIFY_TASK, args=["not-a-job-id"], queue=queue)
    sender.send_task(CLASSIFY_TASK, args=[dropped], kwargs={"retry": "abc"}, queue=queue)
    sender.send_task(CLASSIFY_TASK, args=[first, last], queue=queue)
    sender.send_task(CLASSIFY_TASK, args=[last], queue=queue)

    results = client.wait([first, last], timeout=30, settings=settings)
    assert [results[job_id].status for job_id in (first, last)] == ["done", "done"]
    # Its only message was malformed: the job waits for the sweeper, as if never sent.
    assert job_row(settings, dropped).status == "queued"


def test_one_job_sent_in_several_spellings_is_classified_once(
    service_settings, start_worker, fashion_mnist
) -> None:
    settings = _idle_worker_with_slow_flush(service_settings, start_worker, fashion_mnist)
    job_id = enqueue_by_hand(settings, png_bytes(fashion_mnist.test_images[1]))
    sender = make_celery(settings)
    for spelling in (job_id, job_id.upper(), "{" + job_id + "}"):
        sender.send_task(CLASSIFY_TASK, args=[spelling], queue=settings.interactive_queue)

    assert client.wait([job_id], timeout=30, settings=settings)[job_id].status == "done"
    assert job_row(settings, job_id).attempts == 1


def test_retries_waiting_for_their_eta_do_not_hold_back_a_fresh_upload(
    service_settings, start_worker, fashion_mnist
) -> None:
    """Sixteen delayed messages (retries after a storage blip) used to fill every
    prefetch slot of the worker until they were due."""
    settings = _idle_worker_with_slow_flush(service_settings, start_worker, fashion_mnist)
    waiting = [
        enqueue_by_hand(settings, png_bytes(image)) for image in fashion_mnist.test_images[1:17]
    ]
    for job_id in waiting:
        send_classify(settings, job_id, retry=1, countdown=120)
    fresh = client.submit(png_bytes(fashion_mnist.test_images[20]), "f.png", settings=settings)

    assert client.wait([fresh], timeout=20, settings=settings)[fresh].status == "done"
    assert {job_row(settings, job_id).status for job_id in waiting} == {"queued"}  # not yet due
