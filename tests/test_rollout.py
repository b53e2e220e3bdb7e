"""A new model version goes live without customers noticing (docs/rollout.md).

The registry's rules on both engines; then, against real PostgreSQL, Redis, S3 and
Celery workers: uploads keep their similar items while a candidate fills, follow
a promote and a rollback, and never mix versions.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catalog.codes import JobStatus, ModelState
from catalog.db import get_engine, get_sessionmaker
from catalog.models import (
    ModelVersion,
    Product,
    ProductPrediction,
    SimilarItem,
)
from catalog.vector_indexes import build_version_indexes, existing_version_indexes
from catalog.versions import (
    RegistryError,
    coverage,
    live_version,
    mark_indexed,
    promote,
    register_version,
    retire,
    rollback,
)
from tests.support.factories import (
    add_prediction,
    make_key,
    make_product,
    png_bytes,
)
from tests.support.jobs import add_catalog, add_products, predictions, wait_for_run
from tests.support.servers import wait_until
from worker import client
from worker.cli import main
from worker.config import Settings
from worker.pipeline.classifier import BUNDLED_MODEL
from worker.pipeline.preprocess import PREPROCESS_VERSION, prepare
from worker.service.products import classify_products
from worker.service.registry import live_version_name
from worker.service.rollout import index_when_filled, stage
from worker.storage import get_store


def register(session: Session, version: str) -> ModelVersion:
    return register_version(
        session=session,
        version=version,
        engine="float",
        artifact=f"models/{version}/",
        card={"test_accuracy": 0.9},
        live_if_none=True,
    )


def photographed(session: Session, count: int) -> list[Product]:
    products = [make_product(session, category="Bag") for _ in range(count)]
    for index, product in enumerate(products):
        product.image_key = f"catalog/{product.sku}-{index}.png"
    session.flush()
    return products


# -- the registry's rules, on SQLite and PostgreSQL -------------------------------------


def test_the_first_registered_version_goes_live_and_a_later_one_waits_as_a_candidate(
    session,
) -> None:
    assert live_version(session=session) is None
    assert register(session, "v1").state == ModelState.LIVE
    assert register(session, "v2").state == ModelState.CANDIDATE
    assert register(session, "v1").state == ModelState.LIVE  # registering again: no change
    assert live_version(session=session).version == "v1"


def test_promote_is_refused_until_the_fill_is_complete_and_indexed_unless_forced(
    session,
) -> None:
    register(session, "v1")
    register(session, "v2")
    first, second = photographed(session, 2)
    for product in (first, second):
        add_prediction(session, product, model_version="v1", label=8)
    add_prediction(session, first, model_version="v2", label=8)

    with pytest.raises(RegistryError) as refused:
        promote(session=session, version="v2", by="ops")
    assert "classified 1 of 2 catalog photos (50.0%)" in str(refused.value)
    assert "indexes are not built" in str(refused.value)
    assert live_version(session=session).version == "v1"

    add_prediction(session, second, model_version="v2", error="corrupt")
    assert coverage(session=session, version="v2").complete
    with pytest.raises(RegistryError, match="indexes are not built"):
        promote(session=session, version="v2", by="ops")
    mark_indexed(session=session, version="v2", dimensions=None)
    promote(session=session, version="v2", by="ops")
    states = dict(session.execute(select(ModelVersion.version, ModelVersion.state)).all())
    assert states == {"v1": ModelState.CANDIDATE, "v2": ModelState.LIVE}

    register(session, "v3")
    promote(session=session, version="v3", by="ops", force=True)  # an emergency
    assert live_version(session=session).promoted_by == "ops"


def test_rollback_makes_the_previously_live_version_live_again(session) -> None:
    register(session, "v1")
    with pytest.raises(RegistryError, match="nothing to roll back to"):
        rollback(session=session, by="ops")
    register(session, "v2")
    promote(session=session, version="v2", by="ops", force=True)
    assert rollback(session=session, by="ops").version == "v1"
    assert live_version(session=session).version == "v1"
    assert rollback(session=session, by="ops").version == "v2"  # and back


def test_retire_deletes_the_versions_predictions_and_never_the_live_one(session) -> None:
    register(session, "v1")
    register(session, "v2")
    product = photographed(session, 1)[0]
    for version in ("v1", "v2"):
        add_prediction(session, product, model_version=version, label=8)
    with pytest.raises(RegistryError, match="is live"):
        retire(session=session, version="v1")
    assert retire(session=session, version="v2") == 1
    left = session.scalars(select(ProductPrediction.model_version)).all()
    assert left == ["v1"]
    assert session.get(ModelVersion, "v2").state == ModelState.RETIRED
    with pytest.raises(RegistryError, match="retired"):
        promote(session=session, version="v2", by="ops", force=True)


def test_the_database_allows_one_live_version(session) -> None:
    register(session, "v1")
    register(session, "v2")
    with pytest.raises(IntegrityError):
        session.execute(
            update(ModelVersion).where(ModelVersion.version == "v2").values(state="live")
        )


def test_retired_versions_lose_their_postgresql_indexes(postgresql_url) -> None:
    with get_sessionmaker(postgresql_url).begin() as session:
        for index in range(3):
            make_product(
                session,
                sku=f"T-{index}",
                embedding=np.arange(1, 9, dtype=np.float32) + index,
                model_version="v1",
            )
        register(session, "v2")
        for product in session.scalars(select(Product)):
            add_prediction(session, product, model_version="v2", embedding=np.ones(8))
    engine = get_engine(postgresql_url)
    build_version_indexes(engine, "v2", 8)
    with engine.connect() as connection:
        assert len(existing_version_indexes(connection, "v2")) == 10
    settings = Settings(database_url=postgresql_url)
    from worker.service.rollout import retire as retire_version

    assert retire_version(settings, "v2") == 3
    with engine.connect() as connection:
        assert existing_version_indexes(connection, "v2") == []
        names = connection.scalars(
            text("SELECT indexname FROM pg_indexes WHERE indexname LIKE 'ix_pp_hnsw%'")
        ).all()
    assert names == []  # v1 was never indexed, v2's are gone


# -- with real services ------------------------------------------------------------------


def seeded_catalog(settings: Settings, fashion_mnist, count: int) -> list[int]:
    """``count`` products (250 distinct photos) with kept model inputs, classified by
    the live version in this process: a catalog as a first run leaves it."""
    ids = add_catalog(settings, fashion_mnist, count)
    store = get_store(settings)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        keys = session.scalars(select(Product.image_key).distinct()).all()
        for key in keys:
            kept = prepare(
                store.get(key),
                max_bytes=settings.max_upload_bytes,
                max_pixels=settings.max_image_pixels,
            )
            session.execute(
                update(Product)
                .where(Product.image_key == key)
                .values(
                    model_input=np.ascontiguousarray(kept.pixels, dtype=np.uint8).tobytes(),
                    model_input_busy=kept.busy_background,
                    model_input_key=key,
                    preprocess_version=PREPROCESS_VERSION,
                )
            )
    for start in range(0, len(ids), 500):
        classify_products(ids[start : start + 500], settings=settings)
    assert index_when_filled(settings, live_version_name(settings))
    return ids


class UploadStream:
    """Uploads sent one after another from a thread, each waited for: what came back."""

    def __init__(self, settings: Settings, photos: list[bytes], gap: float = 0.2) -> None:
        self.settings, self.photos, self.gap = settings, photos, gap
        self.results: list[tuple[float, client.JobResult]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> UploadStream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            sent = time.monotonic()
            photo = self.photos[index % len(self.photos)]
            job_id = client.submit(photo, "upload.png", settings=self.settings)
            result = client.wait([job_id], timeout=30, settings=self.settings)[job_id]
            self.results.append((sent, result))
            index += 1
            time.sleep(self.gap)


def versions_of_similar_items(settings: Settings, job_id: str) -> set[str]:
    """The versions that have embedded every product offered to the job: one
    answered by a version offers only products that version embedded."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        offered = session.scalars(
            select(SimilarItem.product_id).where(SimilarItem.job_id == job_id)
        ).all()
        counts = session.execute(
            select(ProductPrediction.model_version, func.count())
            .where(
                ProductPrediction.product_id.in_(offered), ProductPrediction.embedding.is_not(None)
            )
            .group_by(ProductPrediction.model_version)
        ).all()
    return {version for version, count in counts if count == len(offered)}


@pytest.mark.processes
def test_uploads_keep_similar_items_while_a_candidate_fills_and_follow_promote_and_rollback(
    service_settings, fashion_mnist, start_worker
) -> None:
    settings = service_settings.model_copy(update={"model_refresh_seconds": 1.0})
    seeded_catalog(settings, fashion_mnist, 3000)
    live = live_version_name(settings)
    start_worker(settings, queues="interactive")
    photos = [png_bytes(fashion_mnist.test_images[i]) for i in range(20)]

    # The bundled model's float engine: another version, which fills from kept inputs.
    with UploadStream(settings, photos) as during_fill:
        staged = stage(settings, BUNDLED_MODEL, engine="float")
        assert staged.version != live and staged.queued == 3000
        start_worker(settings, queues="bulk")
        wait_for_run(settings, staged.run_id, timeout=300)
    fill = [job for _, job in during_fill.results]
    assert len(fill) >= 5
    assert all(job.status == JobStatus.DONE and job.model_version == live for job in fill)
    assert [job for job in fill if not job.similar] == []  # 0 empty similar lists

    assert index_when_filled(settings, staged.version)
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        promote(session=session, version=staged.version, by="test")
        # The candidate forgets half the catalog (as if those photos changed), so an
        # answer that mixed versions -- labelled by one, searched with the other --
        # would offer a product the version it records never embedded.
        session.execute(
            text("DELETE FROM product_predictions WHERE model_version = :v AND product_id % 2 = 0"),
            {"v": staged.version},
        )
    promoted_at = time.monotonic()
    start_worker(settings, queues="interactive")  # one started after the promote, too
    with UploadStream(settings, photos, gap=0.1) as after_promote:
        wait_until(lambda: len(after_promote.results) >= 30, 120, "uploads after the promote")
    late = [job for sent, job in after_promote.results if sent > promoted_at + 1.5]
    assert late and all(job.model_version == staged.version and job.similar for job in late)
    for _, job in after_promote.results:
        assert job.model_version in versions_of_similar_items(settings, job.job_id)

    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        rollback(session=session, by="test")
    rolled_back_at = time.monotonic()
    with UploadStream(settings, photos, gap=0.1) as after_rollback:
        wait_until(lambda: len(after_rollback.results) >= 20, 120, "uploads after the rollback")
    late = [job for sent, job in after_rollback.results if sent > rolled_back_at + 1.5]
    assert late and all(job.model_version == live and job.similar for job in late)


def test_model_commands_walk_stage_promote_rollback_and_retire_on_embedded_defaults(
    cli_env, fashion_mnist, start_worker, open_api
) -> None:
    add_products(cli_env, fashion_mnist, 12)
    runner = CliRunner()

    def invoke(*args: str):  # type: ignore[no-untyped-def]
        return runner.invoke(main, list(args))

    listed = [json.loads(line) for line in invoke("model", "list", "--json").stdout.splitlines()]
    assert [(row["state"], row["predicted"], row["catalog_photos"]) for row in listed] == [
        ("live", 0, 12)
    ]
    live = listed[0]["version"]
    staged = json.loads(
        invoke("model", "stage", str(BUNDLED_MODEL), "--engine", "float", "--json").stdout
    )
    candidate = staged["version"]
    assert staged["queued"] == 12 and candidate != live

    refused = invoke("model", "promote", candidate)
    assert refused.exit_code == 1
    assert "classified 0 of 12 catalog photos" in refused.output
    assert "--force promotes anyway" in refused.output

    start_worker(cli_env, queues="bulk")
    filled = invoke("reclassify", "--wait", "--timeout", "120")
    assert filled.exit_code == 0, filled.output
    again = invoke(
        "model", "stage", str(BUNDLED_MODEL), "--engine", "float", "--wait", "--timeout", "120"
    )
    assert again.exit_code == 0, again.output
    assert f"{candidate}: filled and indexed" in again.output

    promoted = invoke("model", "promote", candidate)
    assert promoted.exit_code == 0, promoted.output
    assert f"{candidate} is live (was {live})" in promoted.output
    key = make_key(cli_env, "web-shop")
    shown = open_api(cli_env).get("/v1/models", headers={"Authorization": f"Bearer {key.key}"})
    assert shown.status_code == 200
    assert [(row["version"], row["state"], row["coverage"]) for row in shown.json()] == [
        (candidate, "live", 1.0),
        (live, "candidate", 1.0),
    ]

    assert f"{live} is live again" in invoke("model", "rollback").output
    retired = invoke("model", "retire", candidate)
    assert retired.exit_code == 0, retired.output
    assert f"{candidate} retired: 12 predictions" in retired.output
    assert invoke("model", "retire", live).exit_code == 1  # the live one stays
    with get_sessionmaker(cli_env.resolved_database_url)() as session:
        versions = set(session.scalars(select(ProductPrediction.model_version)))
    assert versions == {live}
    assert predictions(cli_env, candidate) == {}


def test_chunks_of_a_version_retired_while_they_waited_write_nothing(
    local_settings, fashion_mnist
) -> None:
    ids = add_products(local_settings, fashion_mnist, 6)
    staged = stage(local_settings, BUNDLED_MODEL, engine="float")  # its chunks are queued
    from worker.service.rollout import retire as retire_version

    assert retire_version(local_settings, staged.version) == 0
    result = classify_products(ids, settings=local_settings, model_version=staged.version)
    assert (result.classified, result.failed, result.skipped) == (0, 0, len(ids))
    assert predictions(local_settings, staged.version) == {}
    unknown = classify_products(ids, settings=local_settings, model_version="never-registered")
    assert unknown.skipped == len(ids)
