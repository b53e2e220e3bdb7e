"""Shadow comparison (a staged candidate answers a share of uploads after the live
answer) and the engine ``fashion model stage`` chooses on the serving host."""

from __future__ import annotations

import json
import shutil
import uuid

from sqlalchemy import select

from catalog.codes import JobStatus, ReviewAnswer
from catalog.db import get_sessionmaker
from catalog.models import ClassificationJob, ModelVersion, ShadowPrediction
from catalog.public import model_versions
from catalog.versions import register_version
from tests.support.factories import answer, make_reviewer, png_bytes
from tests.support.jobs import add_products
from worker import client
from worker.config import Settings
from worker.pipeline.classifier import BUNDLED_MODEL
from worker.service.jobs import classify_jobs
from worker.service.products import classify_products
from worker.service.registry import live_version_name
from worker.service.rollout import index_when_filled, stage


def test_the_shadowed_share_is_stable_per_job_and_near_the_setting() -> None:
    from worker.service.shadow import picked

    ids = [str(uuid.uuid4()) for _ in range(20_000)]
    share = sum(picked(job_id, 0.1) for job_id in ids) / len(ids)
    assert 0.09 <= share <= 0.11
    assert [picked(job_id, 0.1) for job_id in ids[:50]] == [
        picked(job_id, 0.1) for job_id in ids[:50]
    ]
    assert not any(picked(job_id, 0.0) for job_id in ids) and all(
        picked(job_id, 1.0) for job_id in ids
    )


def shadow_rows(settings: Settings) -> dict[str, ShadowPrediction]:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return {str(row.job_id): row for row in session.scalars(select(ShadowPrediction))}


def test_a_staged_candidate_answers_a_share_of_uploads_in_the_shadow_of_the_live_one(
    local_settings, fashion_mnist
) -> None:
    settings = local_settings.model_copy(update={"shadow_share": 1.0})
    ids = add_products(settings, fashion_mnist, 30)
    classify_products(ids, settings=settings)
    live = live_version_name(settings)
    photos = [png_bytes(fashion_mnist.test_images[i]) for i in range(6)]

    # No candidate: nothing is shadowed.
    first = client.submit(photos[0], "a.png", settings=settings)
    classify_jobs([first], settings=settings)
    assert shadow_rows(settings) == {}

    candidate = stage(settings, BUNDLED_MODEL, engine="float").version  # fill not run yet
    jobs = [client.submit(photo, "b.png", settings=settings) for photo in photos[:3]]
    assert set(classify_jobs(jobs, settings=settings).values()) == {JobStatus.DONE}
    rows = shadow_rows(settings)
    assert set(rows) == set(jobs)
    answered = client.wait(jobs, timeout=5, settings=settings)
    for job_id in jobs:
        assert answered[job_id].model_version == live  # the answer stays the live one's
        assert rows[job_id].model_version == candidate
        assert rows[job_id].similar_skus == []  # its catalog is not searchable yet

    # Filled and indexed: its similar items are kept too.
    classify_products(ids, settings=settings, model_version=candidate)
    assert index_when_filled(settings, candidate)
    late = client.submit(photos[3], "c.png", settings=settings)
    classify_jobs([late], settings=settings)
    assert shadow_rows(settings)[late].similar_skus

    # A reviewer's answer counts for both models' accuracy.
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        reviewer = make_reviewer(session)
        job = session.get(ClassificationJob, uuid.UUID(late))
        answer(session, reviewer, job, ReviewAnswer.LABEL, label=job.label)
    with get_sessionmaker(settings.resolved_database_url)() as session:
        shown = {row.version: row for row in model_versions(session=session)}
    assert shown[live].shadow is None
    compared = shown[candidate].shadow
    assert (compared.compared, compared.reviewed, compared.live_accuracy) == (4, 1, 1.0)
    same = sum(rows[j].label == answered[j].label for j in jobs) + 1  # `late` too
    assert compared.disagreement == round(1 - same / 4, 4)


def test_a_candidate_that_cannot_load_never_touches_the_answer(local_settings, fashion_mnist):
    settings = local_settings.model_copy(update={"shadow_share": 1.0})
    live = live_version_name(settings)
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        register_version(  # no artifact anywhere
            session=session, version="ghost", engine="float", artifact="models/ghost/", card={}
        )
    job_id = client.submit(png_bytes(fashion_mnist.test_images[0]), "a.png", settings=settings)
    assert classify_jobs([job_id], settings=settings) == {job_id: JobStatus.DONE}
    assert client.result(job_id, settings=settings).model_version == live
    assert shadow_rows(settings) == {}


def test_stage_times_each_engine_here_and_stages_the_fastest_within_parity(
    local_settings, tmp_path
) -> None:
    from worker.service.rollout import fastest_engine, time_engines

    folder = tmp_path / "model"
    folder.mkdir()
    for source in BUNDLED_MODEL.parent.glob("model*.tflite"):
        shutil.copy(source, folder / source.name)
    card = json.loads((BUNDLED_MODEL.parent / "model_card.json").read_text())
    card["int8"]["validation"]["int8_accuracy"] = (
        card["int8"]["validation"]["float_accuracy"] - 0.02
    )
    (folder / "model_card.json").write_text(json.dumps(card))

    timings = time_engines(folder / "model.tflite")
    assert {engine: timed["parity"] for engine, timed in timings.items()} == {
        "float": True,
        "int8": False,  # 2 points below float: never staged, however fast
        "dynamic": True,
    }
    assert all(timed["images_per_s"] > 0 for timed in timings.values())
    chosen = max(("float", "dynamic"), key=lambda engine: timings[engine]["images_per_s"])
    assert fastest_engine(timings) == chosen

    # The catalog runs the int8 engine, so whichever engine is staged is a new version.
    settings = local_settings.model_copy(update={"model_engine": "int8"})
    staged = stage(settings, folder / "model.tflite")
    assert staged.engine == fastest_engine(staged.engine_timings)
    assert staged.engine != "int8"
    with get_sessionmaker(settings.resolved_database_url)() as session:
        row = session.get(ModelVersion, staged.version)
        assert (row.engine, row.engine_timings) == (staged.engine, staged.engine_timings)
