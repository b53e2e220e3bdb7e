"""The classification pipeline for one job, as a plain function.

fetch → validate → preprocess → predict (the live model version) → result and
similar items in one transaction → (a share) the candidate's shadow answer → the
review thumbnail of each upload flagged ``uncertain``.
Celery tasks call it; so can a test or a script. A bad upload ends the job
``failed`` with its error code; transient failures (storage or database
unreachable) propagate so the caller can retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import redis

from catalog import lifecycle
from catalog.codes import ErrorCode, JobStatus
from catalog.db import get_sessionmaker
from catalog.lifecycle import Claim, Finished, claim_jobs, complete_job
from catalog.models import ClassificationJob, Product
from catalog.public import SimilarItem, job_answer
from catalog.similar import rank_similar, replace_similar_items
from worker.config import Settings
from worker.errors import FashionError, JobNotFoundError
from worker.pipeline import thumbnail
from worker.pipeline.classifier import Prediction
from worker.pipeline.preprocess import ModelInput, prepare
from worker.service import messages, metrics, shadow, webhooks
from worker.service.registry import live_classifier
from worker.storage import StoredObject, get_store, thumbnail_key

log = logging.getLogger(__name__)


def classify_job(job_id: str, *, settings: Settings) -> str:
    """Run job ``job_id`` to a terminal state and return it (``done`` or ``failed``).

    A job already ``done`` or ``failed`` is left alone, so a duplicate delivery
    of the same message is harmless.
    """
    status = classify_jobs([job_id], settings=settings)[job_id]
    if status is None:
        raise JobNotFoundError(job_id)
    return status


def fetch(settings: Settings, image_key: str | None) -> StoredObject | FashionError:
    """One photo from storage (at most the upload limit + 1 bytes, and its version
    tag), or its error."""
    if image_key is None:
        return FashionError(ErrorCode.NO_PHOTO, "the product has no photo")
    try:
        return get_store(settings).fetch(image_key, max_bytes=settings.max_upload_bytes)
    except FashionError as exc:
        return exc


def fetch_all(
    settings: Settings, image_keys: Sequence[str | None]
) -> list[StoredObject | FashionError]:
    """``fetch`` for each key, ``FASHION_FETCH_THREADS`` at a time."""
    if len(image_keys) <= 1:
        return [fetch(settings, key) for key in image_keys]
    with ThreadPoolExecutor(min(len(image_keys), settings.fetch_threads)) as pool:
        return list(pool.map(lambda key: fetch(settings, key), image_keys))


def photos_of(
    settings: Settings,
    claim: Claim,
    photos: Mapping[str, bytes] | None,
) -> list[StoredObject | FashionError]:
    """Each claimed job's photo, in claim order: the bytes its message carried when
    they are the upload's (the same sha256 as its row), fetched from storage otherwise
    (``fetch_all``)."""
    carried: dict[str, StoredObject] = {}
    for job_id, data in (photos or {}).items():
        if job_id not in claim.claimed:
            continue
        if hashlib.sha256(data).hexdigest() == claim.digests.get(job_id):
            carried[job_id] = StoredObject(data, etag=None)
        else:
            log.warning("job %s: its message's photo is not its upload; fetching it", job_id)
    to_fetch = [job_id for job_id in claim.claimed if job_id not in carried]
    fetched = dict(
        zip(to_fetch, fetch_all(settings, [claim.claimed[j] for j in to_fetch]), strict=True)
    )
    return [carried.get(job_id) or fetched[job_id] for job_id in claim.claimed]


def prepare_fetched(
    settings: Settings, fetched: StoredObject | FashionError
) -> ModelInput | FashionError:
    """A fetched photo as the model's input, or the error it ends with; uploads and
    catalog photos alike, so both are judged by the same limits.

    A batch's photos are fetched concurrently (``fetch_all``: storage latency) and
    prepared one after the other in one thread: decoding is CPU work, and decoded in
    eight threads, sixteen 40 Mpx uploads took the process to ~1 GB (each thread's
    malloc arena kept its own ~120 MB), against ~270 MB this way."""
    if isinstance(fetched, FashionError):
        return fetched
    try:
        return prepare(
            fetched.data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
        )
    except FashionError as exc:
        return exc


def classify_jobs(
    job_ids: Sequence[str],
    *,
    settings: Settings,
    retries: Mapping[str, int] | None = None,
    photos: Mapping[str, bytes] | None = None,
) -> dict[str, str | None]:
    """Run several jobs together: one claim, concurrent fetches, one batched inference.

    Returns each id's terminal status (``None`` for an unknown job). Bad uploads
    end ``failed`` with their code; transient failures (storage or database
    unreachable) propagate, leaving the claimed jobs ``running`` for the caller
    to retry. Micro-batches of interactive uploads and single jobs share this path.
    ``retries`` (job id → retry number) marks deliveries sent by that retry path;
    ``photos`` (job id → bytes) are the uploads their messages carried (``photos_of``).

    The live model version labels and searches (one classifier: the job records
    its version). Once the answers are committed and notified, ``shadow.compare``
    classifies ``FASHION_SHADOW_SHARE`` of them with the staged candidate too, from
    the inputs in memory (one more batched inference, ~1-3 ms here; it holds this
    process, not the answers).
    """
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        claim = claim_jobs(
            session=session, job_ids=job_ids, max_attempts=settings.max_attempts, retries=retries
        )
    finished(settings, claim.finished)
    statuses = dict(claim.settled)
    work = claim.claimed
    if not work:
        return statuses

    clock = StageClock()
    fetched = photos_of(settings, claim, photos)
    clock.lap("fetch")
    loaded = [prepare_fetched(settings, item) for item in fetched]
    for job_id, item in zip(work, loaded, strict=True):
        if isinstance(item, FashionError):
            fail_job_and_notify(job_id, code=item.code, message=item.message, settings=settings)
            statuses[job_id] = JobStatus.FAILED
    good = [
        (job_id, item)
        for job_id, item in zip(work, loaded, strict=True)
        if not isinstance(item, FashionError)
    ]
    if not good:
        return statuses
    clock.lap("preprocess")

    # One classifier for the label and the similar items: the job records its version.
    classifier = live_classifier(settings)
    predictions = classifier.classify([item for _, item in good])
    clock.lap("inference")
    metrics.batch("interactive", len(good))
    results = record_results(settings, classifier.version, good, predictions, clock)
    statuses.update((record.job_id, JobStatus.DONE) for record in results)
    finished(settings, results)
    shadow.compare(settings, good, classifier.version)
    photos = dict(zip(work, fetched, strict=True))
    flagged = [job_id for (job_id, _), p in zip(good, predictions, strict=True) if p.uncertain]
    store_thumbnails(
        settings,
        [
            (work[job_id], photo)
            for job_id in flagged
            if isinstance(photo := photos[job_id], StoredObject)
        ],
    )
    return statuses


#: The stages the worker times itself; ``complete_job`` adds ``queued`` and ``write``.
WORKER_STAGES = ("fetch", "preprocess", "inference", "similar")


class StageClock:
    """A batch's stages since its claim (``time.perf_counter``), in ms, for the jobs'
    ``timings`` (``catalog.codes.JOB_STAGES``)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.stages: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        """Record the ms since the last lap as ``stage``."""
        now = time.perf_counter()
        self.stages[stage] = (now - self._last) * 1000
        self._last = now


def record_results(
    settings: Settings,
    version: str,
    good: Sequence[tuple[str, ModelInput]],
    predictions: Sequence[Prediction],
    clock: StageClock,
) -> list[Finished]:
    """Each job's result, similar items and stage timings, in one transaction."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    results, timings = [], []
    with sessions.begin() as session:
        for (job_id, _), prediction in zip(good, predictions, strict=True):
            ranked = rank_similar(
                session=session,
                probabilities=prediction.probabilities,
                embedding=prediction.embedding,
                model_version=version,
                uncertain=prediction.uncertain,
                top_k=settings.similar_top_k,
                ef_search=settings.similar_ef_search,
                family=prediction.family if prediction.family_only else None,
            )
            clock.lap("similar")
            job, done = complete_job(
                session=session,
                job_id=job_id,
                label=prediction.label,
                confidence=prediction.confidence,
                uncertain=prediction.uncertain,
                probabilities=prediction.probabilities,
                model_version=version,
                family=prediction.family,
                timings={stage: clock.stages[stage] for stage in WORKER_STAGES},
            )
            replace_similar_items(session=session, job=job, ranked=ranked)
            clock.lap("write")  # the next job's "similar" starts here
            timings.append(job.timings)
            results.append(dataclasses.replace(done, answer=answer_in_hand(job, ranked)))
    for job_timings in timings:
        metrics.stages(job_timings)
    return results


def answer_in_hand(job: ClassificationJob, ranked: Sequence[tuple[Product, float]]) -> dict:
    """The finished job as callers see it (``catalog.public.job_answer``), from what the
    worker just wrote: announced with its end, so a waiting caller is answered without
    reading the catalog again."""
    similar = [
        SimilarItem(
            rank=rank,
            sku=product.sku,
            name=product.name,
            score=float(score),
            in_stock=product.in_stock,
        )
        for rank, (product, score) in enumerate(ranked, start=1)
    ]
    return job_answer(job, similar).model_dump(mode="json", by_alias=True)


def store_thumbnails(settings: Settings, photos: Sequence[tuple[str, StoredObject]]) -> None:
    """The review thumbnail of each (image key, fetched photo), stored beside the photo
    (``storage.thumbnail_key``), so the review page never decodes an upload. Made from
    the bytes in memory, after the answers went out; a failure is logged, and the page
    makes the thumbnail on its first view instead."""
    store = get_store(settings)
    for image_key, photo in photos:
        try:
            data = thumbnail.make(
                photo.data,
                max_bytes=settings.max_upload_bytes,
                max_pixels=settings.max_image_pixels,
            )
            store.put(thumbnail_key(image_key), data, content_type="image/jpeg")
        except Exception:  # noqa: BLE001 - the answer is given; the page can make it later
            log.warning("no review thumbnail for %s", image_key, exc_info=True)


def finished(settings: Settings, records: Sequence[Finished]) -> None:
    """What follows a job's end, once its transaction committed: the announcement that
    wakes its waiters (``messages.FINISHED_CHANNEL``), metrics, webhooks. A notice that
    cannot be sent is logged; waiters find the job by their safety-net poll."""
    try:
        messages.announce_finished(
            settings,
            [record.job_id for record in records],
            {record.job_id: record.answer for record in records if record.answer is not None},
        )
    except redis.RedisError:
        log.warning("could not announce %d finished job(s)", len(records), exc_info=True)
    metrics.jobs_finished(records)
    webhooks.notify(settings, records)


def fail_job_and_notify(job_id: str, *, code: ErrorCode, message: str, settings: Settings) -> None:
    """``lifecycle.fail_job`` in a transaction of its own, then what follows a job's end
    (``finished``: metrics, its webhook) and a warning in the log."""
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        record = lifecycle.fail_job(session=session, job_id=job_id, code=code, message=message)
    if record is not None:
        log.warning("job %s failed: %s: %s", job_id, code, message)
        finished(settings, [record])
