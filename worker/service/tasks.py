"""Celery tasks: thin wrappers that take ids, call plain functions, declare retries."""

from __future__ import annotations

import datetime as dt
import logging

import botocore.exceptions
import sqlalchemy.exc
from celery import Task
from celery.app.task import Context
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    worker_init,
    worker_process_init,
    worker_ready,
)
from celery.utils.time import get_exponential_backoff_interval
from celery_batches import Batches

from catalog.codes import ErrorCode
from worker.config import Settings, get_settings
from worker.pipeline.classifier import get_classifier
from worker.service import logs, metrics
from worker.service.celery_app import (
    CLASSIFY_PRODUCTS_TASK,
    CLASSIFY_TASK,
    MODEL_CHECK_TASK,
    RECLASSIFY_TASK,
    SWEEP_TASK,
    app,
    make_celery,
)
from worker.service.jobs import classify_jobs, fail_job
from worker.service.products import classify_products as classify_product_chunk
from worker.service.products import mark_poison
from worker.service.reclassify import reclassify_if_model_changed, start_run
from worker.service.sweeper import sweep
from worker.storage import get_store

log = logging.getLogger(__name__)

#: Failures that may pass: storage or database unreachable, timed out or reset, or a
#: task interrupted at its soft time limit (a hung connection, say).
TRANSIENT_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    sqlalchemy.exc.OperationalError,
    SoftTimeLimitExceeded,
)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _configure_logs(logger: logging.Logger, **_kwargs: object) -> None:
    """Job ids on every record; JSON lines with ``FASHION_LOG_FORMAT=json``."""
    logs.configure(logger, get_settings())


@worker_init.connect
def _enable_metrics(**_kwargs: object) -> None:
    """Metrics (``FASHION_METRICS_PORT``) are set up before the pool forks..."""
    metrics.enable(get_settings())


@worker_ready.connect
def _serve_metrics(**_kwargs: object) -> None:
    """...and served by the main process once the pool is up."""
    metrics.serve(get_settings())


@worker_process_init.connect
def _load_per_process(**_kwargs: object) -> None:
    """Load the model and open the store in each child, after fork, never at import."""
    settings = get_settings()
    get_classifier(settings)
    get_store(settings)


def _record_failure(job_id: str, code: ErrorCode, exc: BaseException, settings: Settings) -> None:
    try:
        fail_job(
            job_id, code=code, message=f"{type(exc).__name__}: {exc}"[:2000], settings=settings
        )
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        log.exception("could not record failure of job %s", job_id)


def retry_delay(retry: int, maximum: float) -> float:
    """Exponential backoff with full jitter, as Celery's ``retry_backoff`` computes it
    (at least 1 s, at most ``maximum``)."""
    delay = get_exponential_backoff_interval(
        factor=1, retries=retry, maximum=int(maximum), full_jitter=True
    )
    return min(maximum, max(1.0, delay))


def _retry_or_fail(
    job_ids: list[str], retries: dict[str, int], exc: BaseException, settings: Settings
) -> None:
    """Re-queue jobs hit by a transient error with backoff, or fail those out of retries."""
    for job_id in job_ids:
        retry = retries.get(job_id, 0) + 1
        if retry > settings.task_max_retries:
            _record_failure(job_id, ErrorCode.RETRIES_EXHAUSTED, exc, settings)
            continue
        log.warning("job %s: %s; retry %d in a moment", job_id, exc, retry)
        make_celery(settings).send_task(
            CLASSIFY_TASK,
            args=[job_id],
            kwargs={"retry": retry},
            queue=settings.interactive_queue,
            countdown=retry_delay(retry, settings.retry_backoff_max),
        )


def classify_batch(job_ids: list[str], retries: dict[str, int], settings: Settings) -> None:
    """Classify a micro-batch; never raises, so every message is acknowledged.

    A transient error re-queues the batch's jobs with backoff; an unexpected one
    is isolated by running the jobs one at a time, so only the job that causes
    it ends ``failed`` (``internal_error``).
    """
    with logs.job_context(job_ids=job_ids):
        _classify_batch(job_ids, retries, settings)


def _classify_batch(job_ids: list[str], retries: dict[str, int], settings: Settings) -> None:
    try:
        classify_jobs(job_ids, settings=settings, retries=retries)
    except TRANSIENT_ERRORS as exc:
        _retry_or_fail(job_ids, retries, exc, settings)
    except Exception as exc:  # noqa: BLE001 - a job must end failed, never vanish
        if len(job_ids) > 1:
            for job_id in job_ids:
                classify_batch([job_id], retries, settings)
            return
        log.exception("job %s failed unexpectedly", job_ids[0])
        _record_failure(job_ids[0], ErrorCode.INTERNAL_ERROR, exc, settings)


#: Transient failures are retried with exponential backoff and jitter; nobody reads results.
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": int(get_settings().retry_backoff_max),
    "retry_jitter": True,
    "max_retries": get_settings().task_max_retries,
    "ignore_result": True,
}


def classify_micro_batch(requests: list) -> None:
    """Classify uploads (message args: ``[job_id]``), micro-batched.

    celery-batches buffers the messages a worker has received and flushes them
    as one call every ``FASHION_BATCH_MAX_WAIT_MS`` or at ``FASHION_BATCH_MAX_SIZE``
    messages, whichever comes first; an idle worker therefore adds at most the
    wait to a single upload. Messages are acknowledged after the batch returns.
    """
    job_ids = [str(request.args[0]) for request in requests]
    retries = {str(r.args[0]): int((r.kwargs or {}).get("retry", 0)) for r in requests}
    classify_batch(list(dict.fromkeys(job_ids)), retries, get_settings())


def classify_one(job_id: str, retry: int = 0) -> None:
    """Classify one upload: the same path, one message per call (no micro-batching)."""
    classify_batch([job_id], {job_id: retry}, get_settings())


# Micro-batching needs timers that fire every few milliseconds; the filesystem
# transport's worker loop runs them every 2 s, so there (and with
# FASHION_BATCH_MAX_SIZE=1) each message is its own task. Same name, same
# message format, same pipeline.
if get_settings().micro_batch_size > 1:
    classify = app.task(
        name=CLASSIFY_TASK,
        base=Batches,
        flush_every=get_settings().micro_batch_size,
        flush_interval=get_settings().batch_max_wait_ms / 1000,
        acks_late=True,
        ignore_result=True,
    )(classify_micro_batch)
else:
    classify = app.task(name=CLASSIFY_TASK, acks_late=True, ignore_result=True)(classify_one)


def resend_redelivered_chunk(
    product_ids: list[int], not_before: str | None, redeliveries: int, settings: Settings
) -> None:
    """A chunk came back unacknowledged: its worker died (or stopped) holding it.

    It may hold a photo that kills workers, and Redis would hand it out for ever.
    Send it on in halves, counting: a photo that keeps coming back is cornered in
    about log2(chunk size) deliveries and, alone and delivered
    ``FASHION_MAX_ATTEMPTS`` times, ends with code ``poison``. The others are
    classified normally; a chunk that was only held by a stopping worker just
    costs one split.
    """
    if len(product_ids) == 1 and redeliveries >= settings.max_attempts:
        mark_poison(product_ids, settings=settings, deliveries=redeliveries)
        return
    middle = (len(product_ids) + 1) // 2
    for part in (product_ids[:middle], product_ids[middle:]):
        if part:
            make_celery(settings).send_task(
                CLASSIFY_PRODUCTS_TASK,
                args=[part],
                kwargs={"not_before": not_before, "redeliveries": redeliveries},
                queue=settings.bulk_queue,
            )


@app.task(name=CLASSIFY_PRODUCTS_TASK, bind=True, **RETRY_POLICY)
def classify_products(
    self: Task, product_ids: list[int], not_before: str | None = None, redeliveries: int = 0
) -> dict[str, int]:
    """Classify a chunk of catalog product photos (bulk queue); idempotent per model version.

    ``not_before`` (ISO 8601) is set by ``all`` runs: products this model classified
    before it are done again. ``redeliveries`` counts how often this chunk's
    products came back from a worker that never acknowledged them.
    """
    with logs.job_context(product_ids=product_ids):
        return _classify_products(self.request, product_ids, not_before, redeliveries)


def _classify_products(
    request: Context, product_ids: list[int], not_before: str | None, redeliveries: int
) -> dict[str, int]:
    settings = get_settings()
    if (request.delivery_info or {}).get("redelivered"):
        log.warning("chunk of %d products was redelivered; splitting it", len(product_ids))
        resend_redelivered_chunk(product_ids, not_before, redeliveries + 1, settings)
        return {"classified": 0, "failed": 0, "skipped": 0}
    result = classify_product_chunk(
        product_ids,
        settings=settings,
        not_before=dt.datetime.fromisoformat(not_before) if not_before else None,
    )
    return {"classified": result.classified, "failed": result.failed, "skipped": result.skipped}


@app.task(name=RECLASSIFY_TASK, **RETRY_POLICY)
def reclassify(mode: str = "stale", trigger: str = "beat") -> int:
    """Start a bulk re-classification run (beat's nightly schedule); returns the run id."""
    return start_run(mode, settings=get_settings(), trigger=trigger).id


@app.task(name=MODEL_CHECK_TASK, **RETRY_POLICY)
def reclassify_on_model_change() -> int | None:
    """Start a ``stale`` run the first time a worker sees a new default model version."""
    return reclassify_if_model_changed(get_settings())


@app.task(name=SWEEP_TASK, **RETRY_POLICY)
def sweep_stuck_jobs() -> int:
    """Queue again every job stuck ``queued`` or ``running`` (beat, every minute)."""
    return len(sweep(get_settings()))
