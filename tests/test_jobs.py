"""The pipeline for one job, called directly (no broker), on both storage/database setups."""

from __future__ import annotations

import io
import uuid

import pytest

from catalog.db import get_sessionmaker
from catalog.queries import get_job, similar_for_job
from tests.support.factories import make_product, png_bytes, random_embedding
from tests.support.jobs import enqueue_by_hand, job_row
from worker.config import Settings
from worker.errors import JobNotFoundError
from worker.service.jobs import classify_job, classify_jobs
from worker.storage import get_store


@pytest.fixture(params=["local", "services"])
def settings(request: pytest.FixtureRequest) -> Settings:
    name = "local_settings" if request.param == "local" else "service_settings"
    return request.getfixturevalue(name)


def test_job_ends_done_with_the_right_label_and_similar_items(
    settings, fashion_mnist, bundled_model
) -> None:
    index = 1  # a Pullover in the test split
    label = int(fashion_mnist.test_labels[index])
    version, size = bundled_model
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        for in_stock in (5, 0):
            category = make_product(
                session,
                category="Pullover",
                stock_quantity=in_stock,
                embedding=random_embedding(size),
                model_version=version,
            ).category
    job_id = enqueue_by_hand(settings, png_bytes(fashion_mnist.test_images[index]))

    assert classify_job(job_id, settings=settings) == "done"

    with get_sessionmaker(settings.resolved_database_url)() as session:
        job = get_job(session=session, job_id=job_id)
        assert (job.status, job.label, job.label_name) == ("done", label, category)
        assert job.attempts == 1 and job.finished_at is not None
        assert sum(job.probabilities) == pytest.approx(1.0, abs=1e-4)
        assert job.model_version
        similar = similar_for_job(session=session, job_id=job_id)
        assert len(similar) == 1 and similar[0].stock_quantity > 0


def test_corrupt_upload_ends_failed_with_its_code(settings) -> None:
    job_id = enqueue_by_hand(settings, b"\x89PNG\r\n\x1a\n truncated")
    assert classify_job(job_id, settings=settings) == "failed"
    with get_sessionmaker(settings.resolved_database_url)() as session:
        job = get_job(session=session, job_id=job_id)
        assert (job.status, job.error_code) == ("failed", "corrupt")
        assert job.error_message


def test_missing_object_ends_failed_object_missing(settings) -> None:
    job_id = enqueue_by_hand(settings, None)
    assert classify_job(job_id, settings=settings) == "failed"
    with get_sessionmaker(settings.resolved_database_url)() as session:
        assert get_job(session=session, job_id=job_id).error_code == "object_missing"


def test_duplicate_delivery_does_not_run_the_job_twice(local_settings, fashion_mnist) -> None:
    job_id = enqueue_by_hand(local_settings, png_bytes(fashion_mnist.test_images[0]))
    assert classify_job(job_id, settings=local_settings) == "done"
    assert classify_job(job_id, settings=local_settings) == "done"
    with get_sessionmaker(local_settings.resolved_database_url)() as session:
        assert get_job(session=session, job_id=job_id).attempts == 1


def test_unknown_job_id_raises(local_settings) -> None:
    with pytest.raises(JobNotFoundError):
        classify_job(str(uuid.uuid4()), settings=local_settings)


def test_a_photo_on_a_busy_background_is_flagged_by_the_photo_threshold(
    settings, fashion_mnist
) -> None:
    from tests.support.photos import trousers_on_a_rug

    # Nothing is uncertain on a plain background, everything on a busy one.
    strict = settings.model_copy(
        update={"uncertain_threshold": 0.0, "photo_uncertain_threshold": 1.0}
    )
    tile = enqueue_by_hand(strict, png_bytes(fashion_mnist.test_images[0]))
    photo = enqueue_by_hand(strict, trousers_on_a_rug())

    assert classify_job(tile, settings=strict) == classify_job(photo, settings=strict) == "done"

    with get_sessionmaker(strict.resolved_database_url)() as session:
        flags = {
            job_id: get_job(session=session, job_id=job_id).uncertain for job_id in (tile, photo)
        }
        assert (flags[tile], flags[photo]) == (False, True)
        assert get_job(session=session, job_id=photo).label == 1  # Trouser, flag or not


def test_an_upload_flagged_uncertain_has_its_review_thumbnail_stored_beside_it(
    settings, fashion_mnist
) -> None:
    """The review page serves it, so it never decodes an upload; an upload that is not
    flagged never reaches the page and gets none."""
    from PIL import Image

    from tests.support.photos import trousers_on_a_rug
    from worker.pipeline.thumbnail import THUMBNAIL_PIXELS
    from worker.storage import get_store, thumbnail_key

    flag_all = settings.model_copy(
        update={"uncertain_threshold": 1.0, "photo_uncertain_threshold": 1.0}
    )
    flag_none = settings.model_copy(
        update={"uncertain_threshold": 0.0, "photo_uncertain_threshold": 0.0}
    )
    flagged = enqueue_by_hand(flag_all, trousers_on_a_rug())
    plain = enqueue_by_hand(flag_none, png_bytes(fashion_mnist.test_images[0]))

    assert classify_job(flagged, settings=flag_all) == "done"
    assert classify_job(plain, settings=flag_none) == "done"

    with get_sessionmaker(settings.resolved_database_url)() as session:
        jobs = {job_id: get_job(session=session, job_id=job_id) for job_id in (flagged, plain)}
    assert (jobs[flagged].uncertain, jobs[plain].uncertain) == (True, False)
    store = get_store(settings)
    shown = Image.open(io.BytesIO(store.get(thumbnail_key(jobs[flagged].image_key))))
    assert shown.format == "JPEG" and max(shown.size) == THUMBNAIL_PIXELS
    assert not store.exists(thumbnail_key(jobs[plain].image_key))


def test_a_done_upload_keeps_where_its_time_went_stage_by_stage(settings, fashion_mnist) -> None:
    """``timings``: each stage in ms (queued, fetch, preprocess, inference, similar,
    write), adding up to the job's created → finished."""
    from catalog.codes import JOB_STAGES
    from catalog.models import as_utc

    job_id = enqueue_by_hand(settings, png_bytes(fashion_mnist.test_images[0]))
    assert classify_job(job_id, settings=settings) == "done"

    with get_sessionmaker(settings.resolved_database_url)() as session:
        job = get_job(session=session, job_id=job_id)
        timings, created, finished = job.timings, job.created_at, job.finished_at
    assert tuple(timings) == JOB_STAGES
    assert all(ms >= 0 for ms in timings.values()) and timings["inference"] > 0
    total_ms = (as_utc(finished) - as_utc(created)).total_seconds() * 1000
    assert sum(timings.values()) == pytest.approx(total_ms, abs=0.1)


def test_an_upload_its_message_carried_is_classified_without_fetching_it(
    settings, fashion_mnist
) -> None:
    """The bytes a message carries stand in for the stored photo (issue 36: one S3
    round trip less per upload), but only when they are the upload's own."""
    data = png_bytes(fashion_mnist.test_images[0])
    carried, forged = enqueue_by_hand(settings, data), enqueue_by_hand(settings, data)
    for job_id in (carried, forged):  # gone from storage: a fetch would fail
        get_store(settings).delete(f"uploads/{job_id}")

    statuses = classify_jobs(
        [carried, forged],
        settings=settings,
        photos={carried: data, forged: png_bytes(fashion_mnist.test_images[1])},
    )

    assert statuses == {carried: "done", forged: "failed"}
    assert job_row(settings, carried).label == int(fashion_mnist.test_labels[0])
    # Not its upload (another sha256): fetched instead, and the stored one is missing.
    assert job_row(settings, forged).error_code == "object_missing"
