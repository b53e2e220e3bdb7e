"""Webhook deliveries, called directly: every attempt leaves a row, whatever the URL."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from catalog.db import get_sessionmaker
from catalog.lifecycle import create_job
from catalog.models import WebhookDelivery
from worker.service.webhooks import deliver


def test_a_callback_url_stored_before_it_was_refused_is_recorded_as_refused_not_raised(
    local_settings,
) -> None:
    """A URL with CR/LF passed the check once; its delivery raised httpx.InvalidURL
    with a traceback and left no row. Now it is refused and the attempt recorded."""
    job_id = uuid.uuid4()
    with get_sessionmaker(local_settings.resolved_database_url).begin() as session:
        create_job(
            session=session,
            job_id=job_id,
            image_key=f"uploads/{job_id}",
            filename="x.png",
            content_sha256="0" * 64,
            callback_url="http://93.184.216.34/hook\r\nX-Injected: 1",
        )

    assert deliver(str(job_id), 1, local_settings) is True

    with get_sessionmaker(local_settings.resolved_database_url)() as session:
        (attempt,) = session.scalars(select(WebhookDelivery)).all()
    assert (attempt.attempt, attempt.delivered, attempt.status_code) == (1, False, None)
    assert attempt.error.startswith("refused: callback_url must not contain")
