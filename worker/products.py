"""Classify catalog product photos in batches: label, confidence and embedding per product.

Used by the bulk queue (``fashion.classify_products``) after an import and by
re-classification. One call handles one chunk: fetch the photos concurrently,
preprocess them, run one batched inference, write every result with one bulk
UPDATE. A photo that is missing or unreadable does not stop the chunk: that
product records its error code instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import not_, or_, select, update

from catalog.db import get_sessionmaker
from catalog.embeddings import encode_embedding
from catalog.models import Product, utcnow
from worker import metrics
from worker.classifier import get_classifier
from worker.config import Settings
from worker.errors import FashionError
from worker.jobs import get_store
from worker.preprocess import ModelInput, prepare
from worker.reclassify import already_done

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    classified: int
    failed: int
    skipped: int


def _load(settings: Settings, image_key: str | None) -> ModelInput | FashionError:
    if image_key is None:
        return FashionError("no_photo", "the product has no photo")
    try:
        data = get_store(settings).get(image_key)
        return prepare(
            data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_image_pixels
        )
    except FashionError as exc:
        return exc


def classify_products(
    product_ids: Sequence[int], *, settings: Settings, not_before: dt.datetime | None = None
) -> ChunkResult:
    """Classify the photos of ``product_ids``, skipping those this model already did.

    ``not_before`` narrows the skip to products classified at or after it (an
    ``all`` re-classification run); ``None`` skips any product this model did.
    """
    classifier = get_classifier(settings)
    sessions = get_sessionmaker(settings.resolved_database_url)
    with sessions() as session:
        rows = session.execute(
            select(Product.id, Product.image_key).where(
                Product.id.in_(list(product_ids)),
                or_(
                    Product.model_version.is_(None),
                    not_(already_done(classifier.version, not_before)),
                ),
            )
        ).all()
    skipped = len(product_ids) - len(rows)
    if not rows:
        return ChunkResult(0, 0, skipped)
    with ThreadPoolExecutor(settings.fetch_threads) as pool:
        loaded = list(pool.map(lambda row: _load(settings, row.image_key), rows))
    good = [i for i, item in enumerate(loaded) if isinstance(item, ModelInput)]
    predictions = classifier.classify([loaded[i] for i in good])
    now = utcnow()
    updates = []
    for i, prediction in zip(good, predictions, strict=True):
        updates.append(
            {
                "id": rows[i].id,
                "predicted_label": prediction.label,
                "predicted_confidence": prediction.confidence,
                "model_version": classifier.version,
                "embedding": encode_embedding(prediction.embedding),
                "classified_at": now,
                "classification_error": None,
                "updated_at": now,
            }
        )
    for i, item in enumerate(loaded):
        if isinstance(item, FashionError):
            log.warning("product %s: %s: %s", rows[i].id, item.code, item.message)
            updates.append(
                {
                    "id": rows[i].id,
                    "predicted_label": None,
                    "predicted_confidence": None,
                    "model_version": classifier.version,
                    "embedding": None,
                    "classified_at": now,
                    "classification_error": item.code,
                    "updated_at": now,
                }
            )
    with sessions.begin() as session:
        session.execute(update(Product), updates)
    metrics.batch("bulk", len(good))
    metrics.products_classified("done", len(good))
    for item in loaded:
        if isinstance(item, FashionError):
            metrics.products_classified(item.code)
    return ChunkResult(len(good), len(rows) - len(good), skipped)


def mark_poison(product_ids: Sequence[int], *, settings: Settings, deliveries: int) -> None:
    """Record that these products' photos kept killing their workers: code ``poison``.

    They count as done for this model (the skip rule), so no run queues them again
    until a new model or an ``all`` run; ``fashion reclassify`` reports them failed.
    """
    version = get_classifier(settings).version
    now = utcnow()
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        session.execute(
            update(Product)
            .where(Product.id.in_(list(product_ids)))
            .values(
                predicted_label=None,
                predicted_confidence=None,
                model_version=version,
                embedding=None,
                classified_at=now,
                classification_error="poison",
                updated_at=now,
            )
        )
    metrics.products_classified("poison", len(product_ids))
    log.error(
        "products %s: delivered %d times without finishing; marked poison",
        list(product_ids),
        deliveries,
    )
