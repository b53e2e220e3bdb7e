"""What happens when classifying goes wrong: retry, isolate, or give up with a code.

- **Transient** errors (storage or database unreachable, a task interrupted at its
  soft time limit) send the upload again after an exponential, jittered delay,
  counting the retry in the message; past ``FASHION_TASK_MAX_RETRIES`` the job
  ends ``retries_exhausted``.
- An **unexpected** error in a micro-batch is isolated by running its jobs one at
  a time, so only the job that causes it ends ``internal_error``.
- A message whose job is **not in the catalog** (a backend that publishes before
  it commits the row) is sent again a few times over ~8 s, then dropped with a
  warning naming the job.
- A bulk chunk that comes back **redelivered** (its worker died holding it) is sent
  on in halves, counting; a photo that keeps coming back ends ``poison``.

Every path ends with each job ``done`` or ``failed``, or queued again: nothing is
dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import botocore.exceptions
import sqlalchemy.exc
from celery.exceptions import SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval

from catalog.codes import ErrorCode
from worker.config import Settings
from worker.service import logs
from worker.service.jobs import classify_jobs, fail_job_and_notify
from worker.service.messages import send_classify, send_product_chunks
from worker.service.products import mark_products_poison_and_count

log = logging.getLogger(__name__)

#: Failures that may pass: storage or database unreachable, timed out or reset, or a
#: task interrupted at its soft time limit (a hung connection, say).
TRANSIENT_ERRORS = (
    botocore.exceptions.ConnectionError,
    botocore.exceptions.HTTPClientError,
    sqlalchemy.exc.OperationalError,
    SoftTimeLimitExceeded,
)


#: Resends of a message whose job row is not there yet, after 0.25, 0.5, 1, 2 and 4 s.
UNKNOWN_JOB_RESENDS = 5


def task_retry_policy(settings: Settings) -> dict[str, object]:
    """Celery's own retry options for the tasks that are not upload batches: transient
    failures retried with exponential backoff and jitter; nobody reads results."""
    return {
        "autoretry_for": TRANSIENT_ERRORS,
        "retry_backoff": True,
        "retry_backoff_max": int(settings.retry_backoff_max),
        "retry_jitter": True,
        "max_retries": settings.task_max_retries,
        "ignore_result": True,
    }


def retry_delay(retry: int, maximum: float) -> float:
    """Exponential backoff with full jitter, as Celery's ``retry_backoff`` computes it
    (at least 1 s, at most ``maximum``)."""
    delay = get_exponential_backoff_interval(
        factor=1, retries=retry, maximum=int(maximum), full_jitter=True
    )
    return min(maximum, max(1.0, delay))


def _record_failure(job_id: str, code: ErrorCode, exc: BaseException, settings: Settings) -> None:
    try:
        fail_job_and_notify(
            job_id, code=code, message=f"{type(exc).__name__}: {exc}"[:2000], settings=settings
        )
    except Exception:  # noqa: BLE001 - the database may be the thing that is down
        log.exception("could not record failure of job %s", job_id)


def retry_or_fail(
    job_ids: list[str], retries: dict[str, int], exc: BaseException, settings: Settings
) -> None:
    """Queue jobs hit by a transient error again with backoff, or fail those out of retries."""
    for job_id in job_ids:
        retry = retries.get(job_id, 0) + 1
        if retry > settings.task_max_retries:
            _record_failure(job_id, ErrorCode.RETRIES_EXHAUSTED, exc, settings)
            continue
        log.warning("job %s: %s; retry %d in a moment", job_id, exc, retry)
        send_classify(
            settings,
            job_id,
            retry=retry,
            countdown=retry_delay(retry, settings.retry_backoff_max),
        )


def classify_batch(
    job_ids: list[str],
    retries: dict[str, int],
    settings: Settings,
    photos: Mapping[str, bytes] | None = None,
) -> None:
    """Classify a micro-batch; never raises, so every message is acknowledged.
    ``photos``: the bytes some messages carried (``messages.message_photo``).

    A transient error queues the batch's jobs again with backoff; an unexpected one
    is isolated by running the jobs one at a time, so only the job that causes
    it ends ``failed`` (``internal_error``).
    """
    with logs.job_context(job_ids=job_ids):
        try:
            statuses = classify_jobs(job_ids, settings=settings, retries=retries, photos=photos)
        except TRANSIENT_ERRORS as exc:
            retry_or_fail(job_ids, retries, exc, settings)
            return
        except Exception as exc:  # noqa: BLE001 - a job must end failed, never vanish
            if len(job_ids) > 1:
                for job_id in job_ids:
                    classify_batch([job_id], retries, settings, photos)
                return
            log.exception("job %s failed unexpectedly", job_ids[0])
            _record_failure(job_ids[0], ErrorCode.INTERNAL_ERROR, exc, settings)
            return
        unknown = [job_id for job_id, status in statuses.items() if status is None]
        if unknown:
            wait_for_rows(unknown, retries, settings)


def wait_for_rows(job_ids: list[str], retries: dict[str, int], settings: Settings) -> None:
    """Messages for jobs the catalog does not have: perhaps their row is not committed
    yet, so send each again after a growing delay; after ``UNKNOWN_JOB_RESENDS``
    tries, drop it with a warning naming it."""
    for job_id in job_ids:
        resend = retries.get(job_id, 0) + 1
        if resend > UNKNOWN_JOB_RESENDS:
            log.warning(
                "dropping the message for job %s: no such job in the catalog after %d tries",
                job_id,
                UNKNOWN_JOB_RESENDS,
            )
            continue
        delay = 0.25 * 2 ** (resend - 1)
        log.info("job %s is not in the catalog (yet); trying again in %.2f s", job_id, delay)
        send_classify(settings, job_id, retry=resend, countdown=delay)


def resend_redelivered_chunk(
    product_ids: list[int],
    not_before: str | None,
    redeliveries: int,
    settings: Settings,
    *,
    model_version: str | None = None,
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
        mark_products_poison_and_count(
            product_ids, settings=settings, deliveries=redeliveries, model_version=model_version
        )
        return
    send_product_chunks(
        settings,
        product_ids,
        chunk_size=(len(product_ids) + 1) // 2,
        not_before=not_before,
        redeliveries=redeliveries,
        model_version=model_version,
    )
