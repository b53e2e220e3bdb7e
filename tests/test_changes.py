"""Nightly work proportional to change (issue 17, part 2): a ``changed`` run lists the
bucket's ETags, queues only new and changed photos and products of another model,
and says why. Real PostgreSQL, Redis, S3 server and a bulk worker."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from click.testing import CliRunner
from sqlalchemy import select

from catalog.codes import ErrorCode, ReclassifyMode
from catalog.db import get_sessionmaker
from catalog.models import Product
from tests.support.factories import add_prediction, png_bytes
from tests.support.jobs import add_products, classified_at, predictions, wait_for_run
from worker.cli import main
from worker.config import get_settings
from worker.pipeline.classifier import model_version
from worker.pipeline.preprocess import PREPROCESS_VERSION
from worker.service.celery_app import worker_environment
from worker.service.changes import listing_prefixes, plan_changes
from worker.service.reclassify import start_run
from worker.storage import LocalStore, get_store


def products(settings) -> dict[int, Product]:  # type: ignore[no-untyped-def]
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return {p.id: p for p in session.scalars(select(Product))}


def test_local_and_s3_listings_give_each_key_a_tag_that_changes_with_it(
    tmp_path, service_settings
) -> None:
    for store in (LocalStore(tmp_path / "objects"), get_store(service_settings)):
        store.put("products/a.png", b"one")
        store.put("products/b.png", b"two")
        store.put("uploads/c.png", b"three")
        before = dict(store.list_etags("products/"))
        assert set(before) == {"products/a.png", "products/b.png"}
        assert store.fetch("products/a.png").etag == before["products/a.png"]
        store.put("products/a.png", b"one, replaced")
        after = dict(store.list_etags("products/"))
        assert after["products/a.png"] != before["products/a.png"]
        assert after["products/b.png"] == before["products/b.png"]
        assert set(dict(store.list_etags(""))) == {
            "products/a.png",
            "products/b.png",
            "uploads/c.png",
        }


def test_an_s3_listing_pages_past_1000_keys(service_settings) -> None:
    store = get_store(service_settings)
    keys = [f"products/{i:05d}.png" for i in range(1205)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda key: store.put(key, key.encode()), keys))
    assert sorted(key for key, _ in store.list_etags("products/")) == keys


def test_listing_prefixes_cover_every_key_with_the_fewest_listings() -> None:
    assert listing_prefixes(["products/a.png", "products/x/b.png"]) == ["products/"]
    assert listing_prefixes(["catalog/1.png", "products/a.png"]) == ["catalog/", "products/"]
    assert listing_prefixes(["top.png", "products/a.png"]) == [""]


def test_nightly_run_queues_only_what_changed_and_says_why(
    service_settings, start_worker, fashion_mnist, monkeypatch
) -> None:
    ids = add_products(service_settings, fashion_mnist, 40)
    start_worker(service_settings, queues="bulk", concurrency=1)
    first = start_run(ReclassifyMode.CHANGED, settings=service_settings, chunk_size=16)
    assert first.total == 40 and first.reasons["new"] == 40
    wait_for_run(service_settings, first.id)
    recorded = products(service_settings)
    assert all(recorded[i].photo_etag and recorded[i].model_input for i in ids)

    # Nothing changed: nothing to do.
    idle = start_run(ReclassifyMode.CHANGED, settings=service_settings)
    assert idle.total == 0
    assert idle.reasons == {
        "new": 0,
        "photo_changed": 0,
        "photo_unverified": 0,
        "preprocessing": 0,
        "model": 0,
        "unchanged": 40,
    }

    # One photo replaced in place by another garment, one deleted.
    store = get_store(service_settings)
    replaced, deleted = ids[0], ids[1]
    trouser = next(i for i, label in enumerate(fashion_mnist.test_labels) if label == 1)
    store.put(recorded[replaced].image_key, png_bytes(fashion_mnist.test_images[trouser]))
    store.client.delete_object(Bucket=store.bucket, Key=store._key(recorded[deleted].image_key))
    before = classified_at(service_settings)
    run = start_run(ReclassifyMode.CHANGED, settings=service_settings)
    assert run.total == 2 and run.reasons["photo_changed"] == 2
    assert run.reasons["unchanged"] == 38
    wait_for_run(service_settings, run.id)
    after, said = products(service_settings), predictions(service_settings)
    assert said[replaced].predicted_category == "Trouser"
    assert after[replaced].photo_etag != recorded[replaced].photo_etag
    assert said[deleted].error == ErrorCode.OBJECT_MISSING
    assert after[deleted].photo_etag is None
    untouched = [i for i in ids if i not in (replaced, deleted)]
    assert all(said[i].classified_at == before[i] for i in untouched)

    # The deleted photo stays missing: still nothing to do. `fashion status` says why.
    assert start_run(ReclassifyMode.CHANGED, settings=service_settings).total == 0
    for key, value in worker_environment(service_settings).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(main, ["status", "--ping-timeout", "0.2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "(changed, cli)" in result.output and "why: unchanged 40" in result.output


def test_a_new_model_reclassifies_from_kept_inputs_without_reading_photos(
    service_settings, fashion_mnist
) -> None:
    ids = add_products(service_settings, fashion_mnist, 5)
    with get_sessionmaker(service_settings.resolved_database_url).begin() as session:
        for product in session.scalars(select(Product).where(Product.id.in_(ids))):
            add_prediction(session, product, model_version="an-older-model", label=0)
            product.photo_etag = dict(get_store(service_settings).list_etags("catalog/"))[
                product.image_key
            ]
            product.model_input_key = product.image_key
            product.model_input = bytes(784)
            product.preprocess_version = PREPROCESS_VERSION  # kept inputs are current
    with get_sessionmaker(service_settings.resolved_database_url)() as session:
        plan = plan_changes(
            session=session,
            store=get_store(service_settings),
            version=model_version(service_settings),
        )
    assert plan.product_ids == ids and plan.refetch == []
    assert plan.reasons["model"] == 5


def test_products_classified_before_tags_were_kept_are_read_once_more(
    service_settings, fashion_mnist
) -> None:
    ids = add_products(service_settings, fashion_mnist, 3)
    version = model_version(service_settings)
    with get_sessionmaker(service_settings.resolved_database_url).begin() as session:
        for product in session.scalars(select(Product).where(Product.id.in_(ids))):
            add_prediction(session, product, model_version=version, label=0)
            product.model_input_key = product.image_key
    with get_sessionmaker(service_settings.resolved_database_url).begin() as session:
        plan = plan_changes(session=session, store=get_store(service_settings), version=version)
    assert plan.reasons["photo_unverified"] == 3
    assert plan.refetch == ids


def test_reclassify_changed_on_embedded_defaults_reads_only_a_replaced_photo(
    cli_env,
    start_worker,
    fashion_mnist,
) -> None:
    """The local folder store: tags from the files, the CLI prints why."""
    ids = add_products(cli_env, fashion_mnist, 12)
    start_worker(cli_env, queues="bulk")
    runner = CliRunner()
    first = runner.invoke(main, ["reclassify", "--changed", "--wait", "--timeout", "120"])
    assert first.exit_code == 0, first.output
    assert "queued 12 products" in first.stdout and "new 12" in first.stdout
    before = classified_at(cli_env)

    key = products(cli_env)[ids[3]].image_key
    trouser = next(i for i, label in enumerate(fashion_mnist.test_labels) if label == 1)
    time.sleep(0.01)  # a new modification time even on a coarse clock
    get_store(cli_env).put(key, png_bytes(fashion_mnist.test_images[trouser]))
    again = runner.invoke(main, ["reclassify", "--changed", "--wait", "--timeout", "120"])
    assert again.exit_code == 0, again.output
    assert "queued 1 products" in again.stdout
    assert "photo changed 1, unchanged 11" in again.stdout
    after = classified_at(cli_env)
    assert [i for i in ids if after[i] != before[i]] == [ids[3]]
    assert predictions(cli_env)[ids[3]].predicted_category == "Trouser"
