"""One upload through the whole system: storage → broker → real `celery worker` → catalog."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from catalog.db import get_sessionmaker
from catalog.queries import get_job
from tests.support.factories import make_product, png_bytes, random_embedding
from worker import client
from worker.config import Settings


def seed_every_category(settings: Settings, version: str, size: int) -> None:
    from catalog.models import CATEGORIES

    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        for category in CATEGORIES:
            for stock in (3, 0):
                make_product(
                    session,
                    category=category,
                    stock_quantity=stock,
                    embedding=random_embedding(size),
                    model_version=version,
                )


@pytest.mark.parametrize("setup", ["services", "embedded"])
def test_upload_travels_through_a_real_worker_to_the_catalog(
    setup: str, request, start_worker, fashion_mnist, bundled_model
) -> None:
    settings = request.getfixturevalue(
        "service_settings" if setup == "services" else "local_settings"
    )
    seed_every_category(settings, *bundled_model)
    worker = start_worker(settings)
    index = 2  # a Trouser in the test split
    expected = int(fashion_mnist.test_labels[index])

    good = client.submit(
        png_bytes(fashion_mnist.test_images[index]), "trouser.png", settings=settings
    )
    bad = client.submit(b"GIF89a but not really", "broken.gif", settings=settings)
    sneaker_index = int(np.flatnonzero(fashion_mnist.test_labels == 7)[0])
    shoe = client.submit(
        png_bytes(fashion_mnist.test_images[sneaker_index]), "sneaker.png", settings=settings
    )
    results = client.wait([good, bad, shoe], timeout=90, settings=settings)

    assert worker.poll() is None, "the worker died"
    done = results[good]
    assert done.status == "done", done
    assert done.label == expected
    assert 0.0 < done.confidence <= 1.0
    # Only the in-stock product of that category -- of the top two if uncertain.
    assert len(done.similar) == (2 if done.uncertain else 1)
    assert results[bad].status == "failed"
    assert results[bad].error["code"] in {"corrupt", "unsupported_format"}
    # Footwear is one family: recorded on the job; a sure family draws similar items
    # from its categories only (one in-stock product each here).
    assert done.family is None
    assert results[shoe].status == "done" and results[shoe].name == "Sneaker"
    assert results[shoe].family == "footwear" and not results[shoe].uncertain
    assert 1 <= len(results[shoe].similar) <= 3
    with get_sessionmaker(settings.resolved_database_url)() as session:
        row = get_job(session=session, job_id=good)
        assert row.attempts == 1 and row.model_version == done.model_version


def test_submit_fails_loudly_when_the_broker_is_unreachable(local_settings, tmp_path) -> None:
    settings = local_settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with pytest.raises(client.SubmitError):
        client.submit(b"bytes", "x.png", settings=settings)
    with get_sessionmaker(settings.resolved_database_url)() as session:
        from catalog.models import ClassificationJob

        jobs = session.query(ClassificationJob).all()
        assert [(job.status, job.error_code) for job in jobs] == [("failed", "enqueue_failed")]


def test_result_of_an_unknown_job_is_none(local_settings) -> None:
    assert client.result(str(uuid.uuid4()), settings=local_settings) is None
