"""What a web backend gets from ``worker.client``: refusals before anything is stored."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob
from catalog.queries import get_job
from tests.support.factories import png_bytes
from worker import client
from worker.errors import ImageError


def test_an_oversize_upload_is_refused_before_anything_is_stored(local_settings) -> None:
    settings = local_settings.model_copy(update={"max_upload_bytes": 1000})
    with pytest.raises(ImageError) as refused:
        client.submit(b"x" * 5000, "big.jpg", settings=settings)
    assert refused.value.code == "too_large"
    objects = settings.data_dir / "objects"
    assert not objects.exists() or [p for p in objects.rglob("*") if p.is_file()] == []
    with get_sessionmaker(settings.resolved_database_url)() as session:
        assert session.scalar(select(func.count()).select_from(ClassificationJob)) == 0


def test_a_file_name_that_is_not_utf8_is_stored_readably(service_settings, fashion_mnist) -> None:
    # What os.fsdecode gives for a Latin-1 "café.png" on a UTF-8 system.
    name = "caf\udce9.png\x00"
    job_id = client.submit(png_bytes(fashion_mnist.test_images[0]), name, settings=service_settings)
    with get_sessionmaker(service_settings.resolved_database_url)() as session:
        job = get_job(session=session, job_id=job_id)
        assert (job.filename, job.status) == ("caf?.png", "queued")
