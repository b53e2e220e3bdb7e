"""Celery tasks: thin wrappers that take ids, call plain functions, declare retries."""

from __future__ import annotations

import datetime as dt
import logging

import botocore.exceptions
import sqlalchemy.exc
from celery import Task
from celery.signals import worker_process_init

from worker.celery_app import (
    CLASSIFY_PRODUCTS_TASK,
    CLASSIFY_TASK,
    MODEL_CHECK_TASK,
    RECLASSIFY_TASK,
    app,
)
from worker.classifier import get_classifier
from worker.config import get_settings
from worker.errors import FashionError
from worker.jobs import classify_job, fail_job, get_store
from worker.products import classify_products as classify_product_chunk
from worker.reclassify import reclassify_if_model_changed, start_run

log = logging.getLogger(__name__)

#: Failures that may pass: storage or database unreachable, timed out or reset.
TRANSIENT_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    sqlalchemy.exc.OperationalError,
)


@worker_process_init.connect
def _load_per_process(**_kwargs: object) -> None:
    """Load the model and open the store in each child, after fork, never at import."""
    settings = get_settings()
    get_classifier(settings)
    get_store(settings)


class ClassifyTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:  # type: ignore[no-untyped-def]
        """Retries are spent or the error was unexpected: end the job ``failed``."""
        if isinstance(exc, FashionError) or not args:
            return
        code = "retries_exhausted" if isinstance(exc, TRANSIENT_ERRORS) else "internal_error"
        try:
            fail_job(
                args[0],
                code=code,
                message=f"{type(exc).__name__}: {exc}"[:2000],
                settings=get_settings(),
            )
        except Exception:  # noqa: BLE001 - the database may be the thing that is down
            log.exception("could not record failure of job %s", args[0])


#: Transient failures are retried with exponential backoff and jitter; nobody reads results.
RETRY_POLICY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": get_settings().task_max_retries,
    "ignore_result": True,
}


@app.task(name=CLASSIFY_TASK, base=ClassifyTask, **RETRY_POLICY)
def classify(job_id: str) -> str:
    """Classify the upload of job ``job_id``; the outcome is written to its row."""
    return classify_job(job_id, settings=get_settings())


@app.task(name=CLASSIFY_PRODUCTS_TASK, **RETRY_POLICY)
def classify_products(product_ids: list[int], not_before: str | None = None) -> dict[str, int]:
    """Classify a chunk of catalog product photos (bulk queue); idempotent per model version.

    ``not_before`` (ISO 8601) is set by ``all`` runs: products this model classified
    before it are done again.
    """
    result = classify_product_chunk(
        product_ids,
        settings=get_settings(),
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
