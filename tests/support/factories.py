"""Small factories for test data: rows in the catalog, photos as bytes, API keys."""

from __future__ import annotations

import datetime as dt
import io
import uuid
from decimal import Decimal

import numpy as np
from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog.api_keys import NewKey, create_api_key
from catalog.codes import JobStatus, KeyScope, ReviewAnswer, ReviewQueue
from catalog.db import get_sessionmaker
from catalog.embeddings import encode_embedding
from catalog.models import CATEGORIES, ApiKey, ClassificationJob, Product, ProductPrediction, Review
from catalog.queries import upsert_product
from catalog.reviews import record_answer
from catalog.versions import register_version
from worker.config import Settings

S3_CREDENTIALS = {"s3_access_key_id": "testing", "s3_secret_access_key": "testing"}


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def random_embedding(size: int, seed: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=size).astype(np.float32)


def make_product(
    session: Session,
    *,
    sku: str | None = None,
    category: str = "Trouser",
    stock_quantity: int = 5,
    price: str = "19.99",
    embedding: np.ndarray | None = None,
    model_version: str | None = None,
) -> Product:
    """A product; with ``embedding`` and ``model_version`` it looks already classified."""
    product = upsert_product(
        session=session,
        sku=sku or f"SKU-{uuid.uuid4().hex[:8]}",
        name=f"{category} sample",
        category=category,
        price=Decimal(price),
        stock_quantity=stock_quantity,
        image_key=None,
    )
    if embedding is not None:
        add_prediction(
            session,
            product,
            model_version=model_version,
            label=CATEGORIES.index(category),
            confidence=0.9,
            embedding=embedding,
        )
    return product


def add_prediction(
    session: Session,
    product: Product,
    *,
    model_version: str,
    label: int | None = None,
    confidence: float | None = None,
    probabilities: list[float] | None = None,
    embedding: np.ndarray | None = None,
    error: str | None = None,
    classified_at: dt.datetime | None = None,
) -> ProductPrediction:
    """What ``model_version`` said of ``product``'s photo, as a worker records it; the
    version is registered (live, if no version is) as a worker's first start does."""
    register_version(
        session=session,
        version=model_version,
        engine="float",
        artifact=f"models/{model_version}/",
        card={},
        live_if_none=True,
    )
    prediction = ProductPrediction(
        product_id=product.id,
        model_version=model_version,
        category=product.category,
        label=label,
        confidence=confidence,
        probabilities=probabilities,
        embedding=(
            None if embedding is None else encode_embedding(embedding / np.linalg.norm(embedding))
        ),
        error=error,
        classified_at=classified_at or dt.datetime.now(dt.UTC),
    )
    session.add(prediction)
    session.flush()
    return prediction


def make_flagged_upload(
    session: Session,
    *,
    probabilities: list[float] | None = None,
    image_key: str | None = None,
    filename: str = "upload.jpg",
) -> ClassificationJob:
    """A finished upload the model flagged ``uncertain`` (top class: the largest of
    ``probabilities``, by default Pullover 0.55 against Coat 0.40)."""
    if probabilities is None:
        probabilities = [0.0, 0.0, 0.55, 0.0, 0.40, 0.0, 0.05, 0.0, 0.0, 0.0]
    job_id = uuid.uuid4()
    label = int(np.argmax(probabilities))
    job = ClassificationJob(
        id=job_id,
        image_key=image_key or f"uploads/{job_id}",
        filename=filename,
        content_sha256=uuid.uuid4().hex * 2,
        status=JobStatus.DONE.value,
        label=label,
        confidence=float(probabilities[label]),
        uncertain=True,
        probabilities=probabilities,
        model_version="test-model",
        attempts=1,
        finished_at=dt.datetime.now(dt.UTC),
    )
    session.add(job)
    session.flush()
    return job


def make_reviewer(session: Session, name: str = "alice") -> ApiKey:
    """A reviewer-scope API key's row (its key is not needed in data tests)."""
    create_api_key(session=session, name=name, scope=KeyScope.REVIEWER)
    return session.scalar(select(ApiKey).where(ApiKey.name == name))


def answer(
    session: Session,
    reviewer: ApiKey,
    item: ClassificationJob | Product,
    given: ReviewAnswer,
    label: int | None = None,
    *,
    queue: ReviewQueue = ReviewQueue.UPLOADS,
) -> Review:
    """``reviewer``'s answer about an upload (or, with ``queue``, a product)."""
    return record_answer(
        session=session,
        reviewer=reviewer,
        queue=queue,
        item_id=str(item.id),
        answer=given,
        label=label,
    )


def make_key(settings: Settings, name: str = "web", scope: KeyScope = KeyScope.BACKEND) -> NewKey:
    """An API key (a backend's by default); the key itself is in ``.key``."""
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        return create_api_key(session=session, name=name, scope=scope)
