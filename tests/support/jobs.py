"""Jobs, runs and products driven by hand, as the product's own code would make them."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import exists, func, insert, select

from catalog.db import get_sessionmaker
from catalog.lifecycle import create_job
from catalog.models import (
    CATEGORIES,
    ApiKey,
    ClassificationJob,
    Product,
    ProductPrediction,
    live_version_name,
)
from catalog.queries import get_job, upsert_product
from tests.support.factories import png_bytes
from worker.config import Settings
from worker.service.reclassify import run_progress
from worker.storage import get_store


def never_sent_job(settings: Settings, owner: str | None = None) -> str:
    """A queued job row (of the API key named ``owner``) whose message is never sent:
    it stays queued until the test ends it."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        key_id = None
        if owner is not None:
            key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == owner))
        return str(
            create_job(
                session=session,
                job_id=uuid.uuid4(),
                image_key="uploads/never-sent",
                filename=None,
                content_sha256="0" * 64,
                api_key_id=key_id,
            ).id
        )


def enqueue_by_hand(settings: Settings, data: bytes | None) -> str:
    """Store ``data`` (unless None) and insert a queued job, as ``client.submit`` does."""
    job_id = uuid.uuid4()
    key = f"uploads/{job_id}"
    if data is not None:
        get_store(settings).put(key, data)
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        create_job(
            session=session,
            job_id=job_id,
            image_key=key,
            filename="upload.png",
            content_sha256=hashlib.sha256(data or b"").hexdigest(),
        )
    return str(job_id)


def job_row(settings, job_id: str) -> ClassificationJob:
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return get_job(session=session, job_id=job_id)


def add_products(settings: Settings, fashion_mnist, count: int) -> list[int]:
    """``count`` products with Fashion-MNIST photos in the configured store."""
    store = get_store(settings)
    ids = []
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        for index in range(count):
            label = int(fashion_mnist.train_labels[index])
            key = f"catalog/{index}.png"
            store.put(key, png_bytes(fashion_mnist.train_images[index]))
            product = upsert_product(
                session=session,
                sku=f"P-{index}",
                name=f"Item {index}",
                category=CATEGORIES[label],
                price=10,
                stock_quantity=3,
                image_key=key,
            )
            ids.append(product.id)
        # One product without a photo: never queued.
        upsert_product(
            session=session,
            sku="NO-PHOTO",
            name="No photo",
            category="Bag",
            price=10,
            stock_quantity=1,
            image_key=None,
        )
    return ids


def wait_for_run(settings: Settings, run_id: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = run_progress(settings, run_id)
        if progress.finished:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id}: {progress.done}/{progress.total} after {timeout} s")


def predictions(settings: Settings, version: str | None = None) -> dict[int, ProductPrediction]:
    """Each product's prediction by ``version`` (default: the live one), by product id;
    products it has not classified are left out."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        wanted = live_version_name() if version is None else version
        return {
            row.product_id: row
            for row in session.scalars(
                select(ProductPrediction).where(ProductPrediction.model_version == wanted)
            )
        }


def unclassified(settings: Settings) -> int:
    """Products with a photo that no model version has classified yet."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        return session.scalar(
            select(func.count())
            .select_from(Product)
            .where(
                Product.image_key.is_not(None),
                ~exists().where(ProductPrediction.product_id == Product.id),
            )
        )


def classified_at(settings: Settings) -> dict[int, dt.datetime | None]:
    """When the live version classified each product (``None``: not yet)."""
    with get_sessionmaker(settings.resolved_database_url)() as session:
        ids = session.scalars(select(Product.id)).all()
    done = predictions(settings)
    return {i: done[i].classified_at if i in done else None for i in ids}


def add_catalog(settings: Settings, fashion_mnist, count: int, *, distinct: int = 250) -> list[int]:
    """``count`` products in one INSERT, their photos ``distinct`` Fashion-MNIST training
    images in the store, shared round-robin (every product is still its own GET)."""
    images, labels = fashion_mnist.train_images, fashion_mnist.train_labels
    distinct = min(distinct, count)
    keys = [f"catalog/{index}.png" for index in range(distinct)]
    store = get_store(settings)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.put(keys[i], png_bytes(images[i])), range(distinct)))
    rows = [
        {
            "sku": f"FAULT-{index:06d}",
            "name": f"item {index}",
            "category": CATEGORIES[int(labels[index % distinct])],
            "price": 10,
            "stock_quantity": 3,
            "image_key": keys[index % distinct],
        }
        for index in range(count)
    ]
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions.begin() as session:
        session.execute(insert(Product), rows)
    with sessions() as session:
        return list(session.scalars(select(Product.id).order_by(Product.id)))
