"""Catalog photos' model inputs are kept: a re-classification fetches and decodes
nothing that has not changed (issue 17, part 1). Real PostgreSQL and S3 server."""

from __future__ import annotations

import hashlib

import numpy as np
from sqlalchemy import select

from catalog.db import get_sessionmaker
from catalog.models import Product, utcnow
from tests.support.factories import make_product, png_bytes
from tests.support.jobs import predictions
from worker.service import products as bulk
from worker.storage import get_store


def catalog_with_photos(settings, fashion_mnist, count: int = 6) -> list[int]:  # type: ignore[no-untyped-def]
    store = get_store(settings)
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        ids = []
        for index in range(count):
            product = make_product(session, category="Bag")
            product.image_key = f"products/photo-{index}.png"
            store.put(product.image_key, png_bytes(fashion_mnist.test_images[index]))
            ids.append(product.id)
    return ids


def rows(settings, ids: list[int]) -> list[Product]:  # type: ignore[no-untyped-def]
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return list(
            session.scalars(select(Product).where(Product.id.in_(ids)).order_by(Product.id))
        )


def said(settings, ids: list[int]) -> list:  # type: ignore[no-untyped-def]
    """The live version's predictions of ``ids``, in their order."""
    done = predictions(settings)
    return [done[i] for i in ids]


def delete_photos(settings, products: list[Product]) -> None:  # type: ignore[no-untyped-def]
    store = get_store(settings)
    for product in products:
        store.client.delete_object(Bucket=store.bucket, Key=store._key(product.image_key))


def test_the_first_run_keeps_each_photos_model_input(service_settings, fashion_mnist) -> None:
    ids = catalog_with_photos(service_settings, fashion_mnist)
    result = bulk.classify_products(ids, settings=service_settings)
    assert (result.classified, result.failed) == (6, 0)
    for index, product in enumerate(rows(service_settings, ids)):
        photo = png_bytes(fashion_mnist.test_images[index])
        pixels = np.frombuffer(product.model_input, dtype=np.uint8)
        assert pixels.shape == (784,)
        assert product.model_input_key == product.image_key
        assert product.model_input_sha256 == hashlib.sha256(photo).hexdigest()
        assert product.preprocess_version == bulk.PREPROCESS_VERSION
        assert product.model_input_busy is False


def test_a_second_run_needs_no_photo(service_settings, fashion_mnist) -> None:
    ids = catalog_with_photos(service_settings, fashion_mnist)
    bulk.classify_products(ids, settings=service_settings)
    first = said(service_settings, ids)
    delete_photos(service_settings, rows(service_settings, ids))  # any GET: object_missing

    result = bulk.classify_products(ids, settings=service_settings, not_before=utcnow())

    assert (result.classified, result.failed, result.skipped) == (6, 0, 0)
    again = said(service_settings, ids)
    assert [p.classified_at > q.classified_at for p, q in zip(again, first, strict=True)] == [
        True
    ] * 6
    assert [p.label for p in again] == [p.label for p in first]
    assert [p.embedding for p in again] == [p.embedding for p in first]


def test_a_new_photo_key_or_preprocessing_version_fetches_again(
    service_settings, fashion_mnist, monkeypatch
) -> None:
    ids = catalog_with_photos(service_settings, fashion_mnist)
    bulk.classify_products(ids, settings=service_settings)
    with get_sessionmaker(service_settings.resolved_database_url).begin() as session:
        session.get(Product, ids[0]).image_key = "products/replaced.png"  # never stored
    result = bulk.classify_products(ids, settings=service_settings, not_before=utcnow())
    assert (result.classified, result.failed) == (5, 1)
    assert said(service_settings, ids)[0].error == "object_missing"

    delete_photos(service_settings, rows(service_settings, ids)[1:])
    monkeypatch.setattr(bulk, "PREPROCESS_VERSION", bulk.PREPROCESS_VERSION + 1)
    result = bulk.classify_products(ids, settings=service_settings, not_before=utcnow())
    assert (result.classified, result.failed) == (0, 6)  # every input was out of date
