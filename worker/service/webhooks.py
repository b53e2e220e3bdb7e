"""Result callbacks: a finished job with a ``callback_url`` is POSTed there, signed.

The body is the job exactly as ``GET /v1/classifications/{id}`` answers it. The
signature is Stripe's scheme, which backends already know how to check: header
``Fashion-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">`` with the
submitting API key's webhook secret; a receiver recomputes it and refuses a
timestamp older than a few minutes (replay). Delivery runs on its own queue
(``FASHION_WEBHOOK_QUEUE``) so a slow receiver never holds uploads back; a failed
attempt (network error, timeout, non-2xx) is retried with exponential backoff by
Celery, up to ``FASHION_WEBHOOK_MAX_ATTEMPTS``; every attempt is a row in
``webhook_deliveries``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable

import httpx

from catalog.api_keys import webhook_secret
from catalog.db import get_sessionmaker
from catalog.lifecycle import Finished
from catalog.models import WebhookDelivery
from catalog.public import job_result
from catalog.queries import get_job
from worker.callbacks import CallbackUrlError, check_callback_url
from worker.config import Settings
from worker.service.messages import send_webhook

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "Fashion-Signature"


class WebhookFailed(RuntimeError):
    """One delivery attempt did not get a 2xx answer; Celery retries it."""


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Fashion-Signature`` header's value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def notify(settings: Settings, finished: Iterable[Finished]) -> None:
    """Queue the webhook of each finished job that asked for one."""
    for record in finished:
        if record.callback:
            send_webhook(settings, record.job_id)


def deliver(job_id: str, attempt: int, settings: Settings) -> bool:
    """POST job ``job_id``'s result to its callback URL once; record the attempt.

    Returns ``True`` when delivered or when there is nothing to deliver (the job
    was erased meanwhile, or its URL is now refused: retrying would not help);
    raises ``WebhookFailed`` for an attempt worth retrying.
    """
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        job = get_job(session=session, job_id=job_id)
        if job is None or job.callback_url is None:
            return True
        url = job.callback_url
        secret = webhook_secret(session=session, api_key_id=job.api_key_id)
        state = job_result(session=session, job=job)
    body = json.dumps(state.model_dump(mode="json", by_alias=True), separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "Fashion-Job-Id": job_id}
    if secret is not None:
        headers[SIGNATURE_HEADER] = sign(secret, body, int(time.time()))
    status_code = error = None
    try:
        check_callback_url(url, allow_private=settings.webhook_allow_private)
        response = httpx.post(url, content=body, headers=headers, timeout=settings.webhook_timeout)
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}"
    except CallbackUrlError as exc:
        error = f"refused: {exc}"
    except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL is not an HTTPError
        error = f"{type(exc).__name__}: {exc}"[:1000]
    delivered = error is None
    with sessions.begin() as session:
        session.add(
            WebhookDelivery(
                job_id=job.id,
                attempt=attempt,
                url=url,
                status_code=status_code,
                error=error,
                delivered=delivered,
            )
        )
    if delivered:
        log.info("job %s: webhook delivered (attempt %d)", job_id, attempt)
        return True
    if error.startswith("refused"):
        log.warning("job %s: webhook not sent: %s", job_id, error)
        return True
    raise WebhookFailed(f"job {job_id}: webhook attempt {attempt} to {url}: {error}")
