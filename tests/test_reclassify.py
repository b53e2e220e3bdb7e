"""Bulk re-classification runs, `fashion status` and the beat schedule."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
from celery.schedules import crontab
from click.testing import CliRunner
from sqlalchemy import func, select

from catalog.db import get_sessionmaker
from catalog.models import CATEGORIES, Product, ProductPrediction, ReclassifyRun
from tests.support.jobs import add_products, classified_at, wait_for_run
from worker.cli import main
from worker.config import Settings
from worker.pipeline.classifier import model_version
from worker.service.messages import MODEL_CHECK_TASK, RECLASSIFY_TASK, beat_schedule
from worker.service.products import classify_products
from worker.service.reclassify import (
    latest_run,
    reclassify_if_model_changed,
    run_progress,
    start_run,
)
from worker.service.status import collect
from worker.service.sweeper import resume_stalled_run, sweep


def test_stale_then_all_runs_through_a_real_bulk_worker(
    service_settings, start_worker, fashion_mnist
) -> None:
    ids = add_products(service_settings, fashion_mnist, 100)
    start_worker(service_settings, queues="bulk", concurrency=2)

    first = start_run("stale", settings=service_settings, chunk_size=16)
    assert first.total == 100  # the product without a photo is not queued
    wait_for_run(service_settings, first.id)
    progress = run_progress(service_settings, first.id)
    assert (progress.done, progress.failed, progress.total) == (100, 0, 100)
    snapshot = collect(service_settings, ping_timeout=2.0)
    assert len(snapshot["workers"]) == 1 and snapshot["workers"][0].startswith("test-")
    assert snapshot["reclassify"]["finished"] and snapshot["reclassify"]["eta_s"] == 0
    assert snapshot["models"] == {"live": first.model_version, "candidates": []}
    before = classified_at(service_settings)

    # Nothing is stale any more: a second stale run queues nothing.
    assert start_run("stale", settings=service_settings).total == 0

    # --all does every photo again, each exactly once more.
    again = start_run("all", settings=service_settings, chunk_size=32)
    assert again.total == 100
    wait_for_run(service_settings, again.id)
    after = classified_at(service_settings)
    assert all(after[i] > before[i] for i in ids)
    with get_sessionmaker(service_settings.resolved_database_url)() as session:
        labels = session.execute(
            select(ProductPrediction.label, Product.category)
            .join(Product, Product.id == ProductPrediction.product_id)
            .where(Product.id.in_(ids))
        ).all()
    correct = sum(CATEGORIES[label] == category for label, category in labels)
    assert correct >= 85  # Fashion-MNIST training photos; the model is ~94 % accurate


def test_an_interrupted_all_run_is_resumed_not_restarted(service_settings, fashion_mnist) -> None:
    ids = add_products(service_settings, fashion_mnist, 40)
    classify_products(ids, settings=service_settings)  # everything current
    interrupted = start_run("all", settings=service_settings, chunk_size=10)
    assert interrupted.total == 40
    # The run's messages are lost (no worker ever ran them) except the first two chunks.
    redis_queue_purge(service_settings)
    not_before = interrupted.not_before
    classify_products(ids[:20], settings=service_settings, not_before=not_before)
    progress = run_progress(service_settings, interrupted.id)
    assert (progress.done, progress.finished) == (20, False)

    resumed = start_run("all", settings=service_settings, chunk_size=10)
    assert resumed.not_before == not_before
    assert resumed.total == 20  # only what the interrupted run had not done
    queued = [decode_task(message) for message in bulk_messages(service_settings)]
    assert sorted(i for args, _ in queued for i in args[0]) == sorted(ids[20:])
    assert {kwargs["not_before"] for _, kwargs in queued} == {not_before.isoformat()}


def test_the_sweeper_resumes_a_run_whose_chunk_was_lost(service_settings, fashion_mnist) -> None:
    ids = add_products(service_settings, fashion_mnist, 60)
    stalled = start_run("stale", settings=service_settings, chunk_size=10)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=service_settings.stuck_after_seconds + 1)
    # Its chunks still wait on the queue: slow, not lost, whatever the time.
    assert resume_stalled_run(service_settings, now=later) is None

    # A worker did four chunks; the other two messages were lost.
    redis_queue_purge(service_settings)
    classify_products(ids[:40], settings=service_settings)
    assert resume_stalled_run(service_settings) is None  # it classified something just now
    assert not run_progress(service_settings, stalled.id).finished

    assert sweep(service_settings, now=later) == []  # no upload job is stuck
    with get_sessionmaker(service_settings.resolved_database_url)() as session:
        resumed = latest_run(session)
    assert (resumed.id, resumed.mode, resumed.trigger) == (stalled.id + 1, "stale", "sweeper")
    assert (resumed.total, resumed.chunk_size) == (20, 10)
    queued = [decode_task(message) for message in bulk_messages(service_settings)]
    assert sorted(i for args, _ in queued for i in args[0]) == sorted(ids[40:])
    # Its chunks are queued now: a second sweep leaves it alone.
    assert resume_stalled_run(service_settings, now=later) is None

    classify_products(ids[40:], settings=service_settings)
    assert run_progress(service_settings, stalled.id).finished
    assert run_progress(service_settings, resumed.id).finished
    assert resume_stalled_run(service_settings, now=later) is None


def redis_queue_purge(settings: Settings) -> None:
    import redis

    redis.Redis.from_url(settings.resolved_broker_url).delete(settings.bulk_queue)


def bulk_messages(settings: Settings) -> list[bytes]:
    import redis

    return redis.Redis.from_url(settings.resolved_broker_url).lrange(settings.bulk_queue, 0, -1)


def decode_task(message: bytes) -> tuple[list, dict]:
    """(args, kwargs) of a Celery protocol-2 JSON message as kombu stores it in Redis."""
    import base64

    envelope = json.loads(message)
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return args, kwargs


def test_chunk_task_skips_only_what_the_run_already_did(local_settings, fashion_mnist) -> None:
    ids = add_products(local_settings, fashion_mnist, 6)
    assert classify_products(ids, settings=local_settings).classified == 6
    assert classify_products(ids, settings=local_settings).skipped == 6
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    result = classify_products(ids, settings=local_settings, not_before=later)
    assert (result.classified, result.skipped) == (6, 0)


def test_status_reports_queue_depth_jobs_and_run_on_real_services(
    service_settings, fashion_mnist
) -> None:
    add_products(service_settings, fashion_mnist, 30)
    run = start_run("stale", settings=service_settings, chunk_size=8)
    snapshot = collect(service_settings, ping_timeout=0.5)
    assert snapshot["queues"] == {
        service_settings.interactive_queue: 0,
        service_settings.bulk_queue: 4,
    }
    assert snapshot["workers"] == []
    assert snapshot["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert snapshot["reclassify"]["run_id"] == run.id
    assert (snapshot["reclassify"]["done"], snapshot["reclassify"]["total"]) == (0, 30)
    assert snapshot["reclassify"]["eta_s"] is None  # nothing done yet: no rate, no ETA


def test_reclassify_and_status_commands_on_embedded_defaults(
    cli_env, start_worker, fashion_mnist
) -> None:
    add_products(cli_env, fashion_mnist, 20)
    runner = CliRunner()
    queued = runner.invoke(main, ["reclassify", "--chunk", "8"])
    assert queued.exit_code == 0, queued.output
    assert "queued 20 products in 3 chunks" in queued.stdout
    status = runner.invoke(main, ["status", "--json", "--ping-timeout", "0.2"])
    assert status.exit_code == 0, status.output
    snapshot = json.loads(status.stdout)
    assert snapshot["queues"]["bulk"] == 3
    assert snapshot["reclassify"]["total"] == 20

    start_worker(cli_env, queues="bulk")
    waited = runner.invoke(main, ["reclassify", "--all", "--wait", "--timeout", "120"])
    assert waited.exit_code == 0, waited.output
    assert "20 done, 0 of them failed" in waited.stdout
    with get_sessionmaker(cli_env.resolved_database_url)() as session:
        runs = session.scalar(select(func.count()).select_from(ReclassifyRun))
    assert runs == 2


def test_beat_schedules_the_nightly_run_and_the_model_check() -> None:
    schedule = beat_schedule(
        Settings(reclassify_cron="30 3 * * 1-5", reclassify_nightly_mode="stale")
    )
    nightly = schedule["nightly-reclassify"]
    assert nightly["task"] == RECLASSIFY_TASK
    assert nightly["schedule"] == crontab(minute="30", hour="3", day_of_week="1-5")
    assert nightly["kwargs"] == {"mode": "stale", "trigger": "nightly"}
    assert schedule["reclassify-on-model-change"]["task"] == MODEL_CHECK_TASK
    assert "nightly-reclassify" not in beat_schedule(Settings(reclassify_cron=""))


def test_a_bad_crontab_is_refused_with_its_value() -> None:
    with pytest.raises(ValueError, match="not a crontab line"):
        Settings(reclassify_cron="every night")


def test_a_new_model_version_starts_one_stale_run(local_settings, fashion_mnist) -> None:
    add_products(local_settings, fashion_mnist, 5)
    run_id = reclassify_if_model_changed(local_settings)
    assert run_id is not None
    progress = run_progress(local_settings, run_id)
    assert (progress.total, progress.trigger, progress.model_version) == (
        5,
        "model-change",
        model_version(local_settings),
    )
    assert reclassify_if_model_changed(local_settings) is None  # only once per version


def test_beat_rolls_out_a_new_model_through_a_real_worker(
    service_settings, start_worker, start_beat, fashion_mnist
) -> None:
    add_products(service_settings, fashion_mnist, 20)
    settings = service_settings.model_copy(update={"model_check_seconds": 0.5})
    start_worker(settings, queues="bulk")
    start_beat(settings)
    deadline = time.monotonic() + 60
    while (progress := run_progress(settings)) is None or not progress.finished:
        assert time.monotonic() < deadline, f"no finished model-change run: {progress}"
        time.sleep(0.2)
    assert (progress.trigger, progress.mode, progress.done) == ("model-change", "stale", 20)
    with get_sessionmaker(settings.resolved_database_url)() as session:
        runs = session.scalar(select(func.count()).select_from(ReclassifyRun))
    assert runs == 1  # later checks saw the run and started no other
