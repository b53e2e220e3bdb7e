"""The classification pipeline for one job, as a plain function.

fetch → validate → preprocess → predict → result and similar items in one
transaction. Celery tasks call it; so can a test or a script. A bad upload ends
the job ``failed`` with its error code; transient failures (storage or database
unreachable) propagate so the caller can retry.
"""

from __future__ import annotations

import logging
import os
import uuid
from functools import cache

import numpy as np

from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, utcnow
from catalog.queries import get_job
from catalog.similar import rank_similar, replace_similar_items
from worker.classifier import get_classifier
from worker.config import Settings
from worker.errors import FashionError, JobNotFoundError
from worker.preprocess import normalize, preprocess
from worker.storage import ObjectStore, make_store

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"done", "failed"})


@cache
def _store_for(settings: Settings, pid: int) -> ObjectStore:
    return make_store(settings)


def get_store(settings: Settings) -> ObjectStore:
    """This process's object store (boto3 clients do not survive fork)."""
    return _store_for(settings, os.getpid())


def classify_job(job_id: str, *, settings: Settings) -> str:
    """Run job ``job_id`` to a terminal state and return it (``done`` or ``failed``).

    A job already ``done`` or ``failed`` is left alone, so a duplicate delivery
    of the same message is harmless.
    """
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        if job.status in TERMINAL_STATUSES:
            log.info("job %s is already %s; skipping duplicate delivery", job_id, job.status)
            return job.status
        job.status = "running"
        job.attempts += 1
        job.started_at = utcnow()
        image_key = job.image_key

    try:
        data = get_store(settings).get(image_key)
        pixels = preprocess(
            data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
        )
    except FashionError as exc:
        fail_job(job_id, code=exc.code, message=exc.message, settings=settings)
        return "failed"

    classifier = get_classifier(settings)
    prediction = classifier.predict(normalize(pixels[np.newaxis]))[0]

    with sessions.begin() as session:
        job = session.get(ClassificationJob, uuid.UUID(job_id), with_for_update=True)
        ranked = rank_similar(
            session=session,
            probabilities=prediction.probabilities,
            embedding=prediction.embedding,
            model_version=classifier.version,
            uncertain=prediction.uncertain,
            top_k=settings.similar_top_k,
            cache_seconds=settings.similar_cache_seconds,
        )
        job.status = "done"
        job.label = prediction.label
        job.confidence = prediction.confidence
        job.uncertain = prediction.uncertain
        job.probabilities = prediction.probabilities
        job.model_version = classifier.version
        job.error_code = job.error_message = None
        job.finished_at = utcnow()
        replace_similar_items(session=session, job=job, ranked=ranked)
    return "done"


def fail_job(job_id: str, *, code: str, message: str, settings: Settings) -> None:
    """Record a terminal failure with its stable code and human message."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        job = session.get(ClassificationJob, uuid.UUID(job_id), with_for_update=True)
        if job is None or job.status == "done":
            return
        job.status = "failed"
        job.error_code = code
        job.error_message = message
        job.finished_at = utcnow()
    log.warning("job %s failed: %s: %s", job_id, code, message)
