"""Celery tasks: thin wrappers that take ids, call plain functions, declare retries.

``register_tasks`` puts them on an app (``worker.service.worker_app`` does, for the
processes that run them); the names and argument shapes are
``worker.service.messages``'s, the retry and poison policy ``worker.service.retry``'s.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import billiard.pool
from celery import Celery, Task
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_received,
    task_revoked,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
)

from catalog.codes import ErrorCode
from worker import tracing
from worker.config import Settings
from worker.service import health, logs, metrics
from worker.service.batching import MicroBatches
from worker.service.jobs import fail_job_and_notify
from worker.service.messages import (
    CLASSIFY_PRODUCTS_TASK,
    CLASSIFY_TASK,
    MODEL_CHECK_TASK,
    PURGE_TASK,
    RECLASSIFY_TASK,
    SWEEP_TASK,
    WEBHOOK_TASK,
    MalformedMessage,
    classify_arguments,
    message_photo,
    product_chunk_arguments,
)
from worker.service.products import classify_products
from worker.service.reclassify import reclassify_if_model_changed, start_runs_for_every_version
from worker.service.registry import live_classifier
from worker.service.retention import purge
from worker.service.retry import (
    TRANSIENT_ERRORS,
    classify_batch,
    resend_redelivered_chunk,
    task_retry_policy,
)
from worker.service.rollout import index_filled_versions
from worker.service.sweeper import sweep
from worker.service.webhooks import WebhookFailed, deliver
from worker.storage import get_store

log = logging.getLogger(__name__)

#: How long a pool process that is leaving waits for the main process to read its
#: last results (billiard: 30 s). See ``bound_pool_exit_wait``.
POOL_EXIT_WAIT_S = 2.0


def connect_signals(settings: Settings) -> None:
    """Logs, metrics and per-process resources of a worker started with ``settings``."""

    @after_setup_logger.connect(weak=False)
    @after_setup_task_logger.connect(weak=False)
    def configure_logs(logger: logging.Logger, **_kwargs: object) -> None:
        """Job ids on every record; JSON lines with ``FASHION_LOG_FORMAT=json``."""
        logs.configure(logger, settings)

    @worker_init.connect(weak=False)
    def enable_metrics(**_kwargs: object) -> None:
        """Metrics (``FASHION_METRICS_PORT``) are set up before the pool forks..."""
        metrics.enable(settings)

    @worker_init.connect(weak=False)
    def bound_pool_exit_wait(**_kwargs: object) -> None:
        """A warm shutdown that lands after a batch was written to a pool process but
        before the process said it took it: Celery (5.6) drops the batch from the pool's
        cache and stops reading results once the cache is empty, while the process
        runs the batch and then waits, 300 × 0.1 s in billiard (4.3), for results that
        nobody reads (py-spy: the main process in ``Pool.join``, the pool process in
        ``_ensure_messages_consumed``). The worker took 32 s to stop instead of ~3 (5
        of 18 SIGTERMs of ``test_sigterm_finishes_or_returns_in_flight_work``): past
        compose's 10 s grace period, so it was killed and its prefetched uploads waited
        for the visibility timeout. With the bound: 4.3-4.4 s. The batch's messages are
        never acknowledged, so they are delivered again either way (a finished job
        skips the duplicate). Set before the pool forks; its processes inherit it."""
        interval = billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL
        billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = round(POOL_EXIT_WAIT_S / interval)

    @worker_init.connect(weak=False)
    def yield_to_uploads(sender: object = None, **_kwargs: object) -> None:
        """A bulk-only worker lowers its CPU priority before its pool forks, so on
        shared cores the scheduler runs upload work first."""
        consumed = set(sender.app.amqp.queues.consume_from or ())
        if consumed == {settings.bulk_queue} and settings.bulk_nice:
            os.nice(settings.bulk_nice)
            log.info("bulk-only worker: niceness raised by %d", settings.bulk_nice)

    @worker_ready.connect(weak=False)
    def serve_metrics(**_kwargs: object) -> None:
        """...and served by the main process once the pool is up."""
        metrics.serve(settings)

    @worker_shutdown.connect(weak=False)
    def remove_metrics_folder(**_kwargs: object) -> None:
        metrics.cleanup()

    @worker_ready.connect(weak=False)
    def record_start(sender: object = None, **_kwargs: object) -> None:
        """The heartbeat ``fashion health`` reads starts with the worker..."""
        health.beat(settings, sender.hostname)

    @task_received.connect(weak=False)
    def record_message_taken(sender: object = None, **_kwargs: object) -> None:
        """...and is renewed by every message it takes."""
        health.beat(settings, sender.hostname)

    @task_revoked.connect(weak=False)
    def expire_unread(
        sender: object = None, request: object = None, expired: bool = False, **_kwargs: object
    ) -> None:
        """Celery drops an upload's message past its ``expires`` unread (without
        micro-batching; celery-batches hands it to the claim, which expires it):
        end the job ``expired`` now rather than at the next sweep."""
        if not expired or getattr(sender, "name", None) != CLASSIFY_TASK:
            return
        try:
            job_id, _ = classify_arguments(list(request.args or ()), request.kwargs)
            fail_job_and_notify(
                job_id,
                code=ErrorCode.EXPIRED,
                message="not started within its deadline",
                settings=settings,
            )
        except (MalformedMessage, *TRANSIENT_ERRORS):
            log.warning("could not expire the job of message %s now; the sweeper will", request.id)

    @worker_process_init.connect(weak=False)
    def load_per_process(**_kwargs: object) -> None:
        """Load the model and open the store in each child, after fork, never at import
        (and start exporting traces there, when they are on)."""
        tracing.configure("fashion-worker")
        live_classifier(settings)
        get_store(settings)


def register_tasks(app: Celery, settings: Settings) -> None:
    """Register every task on ``app``."""
    policy = task_retry_policy(settings)
    _register_upload_tasks(app, settings)
    _register_catalog_tasks(app, settings, policy)
    _register_scheduled_tasks(app, settings, policy)
    _register_webhook_task(app, settings)


def _register_upload_tasks(app: Celery, settings: Settings) -> None:
    def classify_micro_batch(requests: list) -> None:
        """Classify uploads (message args: ``[job_id]``), micro-batched.

        celery-batches buffers the messages a worker has received and flushes them
        as one call every ``FASHION_BATCH_MAX_WAIT_MS`` or at ``FASHION_BATCH_MAX_SIZE``
        messages, whichever comes first; with ``FASHION_BATCH_EAGER`` also at once
        while a pool process is free (``batching.MicroBatches``), so an idle worker
        adds no wait. Messages are acknowledged after the batch returns.
        """
        retries, photos = {}, {}
        for request in requests:
            try:
                job_id, retry = classify_arguments(request.args, request.kwargs)
            except MalformedMessage as exc:
                log.error("dropping malformed message %s: %s", request.id, exc)
                continue
            retries[job_id] = retry
            if (photo := message_photo(request.kwargs)) is not None:
                photos[job_id] = photo
        if retries:
            with tracing.batch_span(CLASSIFY_TASK, [r.request_dict or {} for r in requests]):
                classify_batch(list(retries), retries, settings, photos)

    def classify_one(*args: object, **kwargs: object) -> None:
        """Classify one upload: the same path, one message per call (no micro-batching)."""
        try:
            job_id, retry = classify_arguments(list(args), kwargs)
        except MalformedMessage as exc:
            log.error("dropping malformed message: %s", exc)
            return
        photo = message_photo(kwargs)
        photos = {} if photo is None else {job_id: photo}
        classify_batch([job_id], {job_id: retry}, settings, photos)

    # Micro-batching needs timers that fire every few milliseconds; the filesystem
    # transport's worker loop runs them every 2 s, so there (and with
    # FASHION_BATCH_MAX_SIZE=1) each message is its own task. Same name, same
    # message format, same pipeline.
    if settings.micro_batch_size > 1:
        app.task(
            name=CLASSIFY_TASK,
            base=MicroBatches,
            flush_every=settings.micro_batch_size,
            flush_interval=settings.batch_max_wait_ms / 1000,
            eager=settings.batch_eager,
            acks_late=True,
            ignore_result=True,
        )(classify_micro_batch)
    else:
        app.task(name=CLASSIFY_TASK, acks_late=True, ignore_result=True)(classify_one)


#: A chunk task's answer when it classified nothing itself (dropped or resent).
NOTHING_DONE = {"classified": 0, "failed": 0, "skipped": 0}


def _register_catalog_tasks(app: Celery, settings: Settings, policy: dict) -> None:
    @app.task(name=CLASSIFY_PRODUCTS_TASK, bind=True, **policy)
    def classify_product_chunk(self: Task, *args: Any, **kwargs: Any) -> dict[str, int]:
        """Classify a chunk of catalog product photos (bulk queue) with the message's
        ``model_version`` (default: the live one); idempotent per version.
        ``not_before`` (ISO 8601) is set by ``all`` runs: products this model
        classified before it are done again. ``redeliveries`` counts how often this
        chunk's products came back from a worker that never acknowledged them. A
        malformed message is dropped with a warning (``messages.product_chunk_arguments``)."""
        try:
            chunk = product_chunk_arguments(list(args), kwargs)
        except MalformedMessage as exc:
            log.warning("dropping a malformed %s message: %s", CLASSIFY_PRODUCTS_TASK, exc)
            return dict(NOTHING_DONE)
        product_ids = chunk.product_ids
        with logs.job_context(product_ids=product_ids):
            if (self.request.delivery_info or {}).get("redelivered"):
                log.warning("chunk of %d products was redelivered; splitting it", len(product_ids))
                not_before = chunk.not_before.isoformat() if chunk.not_before else None
                resend_redelivered_chunk(
                    product_ids,
                    not_before,
                    chunk.redeliveries + 1,
                    settings,
                    model_version=chunk.model_version,
                )
                return dict(NOTHING_DONE)
            result = classify_products(
                product_ids,
                settings=settings,
                not_before=chunk.not_before,
                model_version=chunk.model_version,
            )
            return {
                "classified": result.classified,
                "failed": result.failed,
                "skipped": result.skipped,
            }


def _register_scheduled_tasks(app: Celery, settings: Settings, policy: dict) -> None:
    """What beat sends: runs, the new-model check, the sweeper, retention."""

    @app.task(name=RECLASSIFY_TASK, **policy)
    def reclassify(mode: str = "stale", trigger: str = "beat") -> int:
        """Start a bulk re-classification run for every live and candidate version
        (beat's nightly schedule); returns the live version's run id."""
        return start_runs_for_every_version(mode, settings=settings, trigger=trigger)[0]

    @app.task(name=MODEL_CHECK_TASK, **policy)
    def reclassify_on_model_change() -> int | None:
        """Register a newly configured model as a candidate and start the fill of each
        version that has had none; build the indexes of each version whose fill is
        complete. Returns the first new run's id."""
        run_id = reclassify_if_model_changed(settings)
        index_filled_versions(settings)
        return run_id

    @app.task(name=SWEEP_TASK, **policy)
    def sweep_stuck_jobs() -> int:
        """Queue again every job stuck ``queued`` or ``running`` (beat, every minute)."""
        return len(sweep(settings))

    @app.task(name=PURGE_TASK, **policy)
    def purge_expired_uploads() -> int:
        """Erase uploads older than ``FASHION_RETENTION_DAYS`` (beat, daily)."""
        return purge(settings).jobs


def _register_webhook_task(app: Celery, settings: Settings) -> None:
    @app.task(
        name=WEBHOOK_TASK,
        bind=True,
        acks_late=True,
        ignore_result=True,
        autoretry_for=(WebhookFailed, *TRANSIENT_ERRORS),
        retry_backoff=True,
        retry_backoff_max=int(settings.retry_backoff_max),
        retry_jitter=True,
        max_retries=settings.webhook_max_attempts - 1,
    )
    def deliver_webhook(self: Task, job_id: str) -> None:
        """POST a finished job's result to its callback URL, signed; retried with backoff."""
        with logs.job_context(job_ids=[job_id]):
            deliver(job_id, self.request.retries + 1, settings)
