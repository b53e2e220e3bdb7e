"""Classify catalog product photos in batches: label, confidence and embedding per product.

Used by the bulk queue (``fashion.classify_products``) after an import and by
re-classification. One call handles one chunk: take the kept model inputs that
are still valid from the catalog, fetch and prepare the other photos, run one
batched inference, write every result (and the newly made inputs) with one bulk
UPDATE. A photo that is missing or unreadable does not stop the chunk: that
product records its error code instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Row, not_, select

from catalog.codes import ErrorCode, JobStatus, ModelState
from catalog.db import get_sessionmaker
from catalog.models import Product
from catalog.predictions import (
    KeptInput,
    ProductOutcome,
    already_done,
    mark_products_poison,
    record_predictions,
)
from catalog.versions import get_version
from worker.config import Settings
from worker.errors import FashionError
from worker.pipeline.preprocess import IMAGE_SIZE, PREPROCESS_VERSION, ModelInput
from worker.service import metrics
from worker.service.jobs import fetch_all, prepare_fetched
from worker.service.registry import classifier_for, live_version_name
from worker.storage import StoredObject

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    classified: int
    failed: int
    skipped: int


def classify_products(
    product_ids: Sequence[int],
    *,
    settings: Settings,
    not_before: dt.datetime | None = None,
    model_version: str | None = None,
) -> ChunkResult:
    """Classify the photos of ``product_ids`` with ``model_version`` (default: the live
    one), skipping those it already did; only that version's rows are written.

    ``not_before`` narrows the skip to products classified at or after it (an
    ``all`` re-classification run); ``None`` skips any product this model did.
    A product whose kept model input is still valid (same photo key, same
    preprocessing version) is classified from it: no fetch, no decode. The others
    are fetched and prepared, and their inputs kept for the next model.
    """
    sessions = get_sessionmaker(settings.resolved_database_url)
    if model_version is not None and not _still_filled(sessions, model_version):
        # Retired (or never registered here) while its chunks waited on the queue.
        log.warning("dropping a chunk for model %s: it is not live or a candidate", model_version)
        return ChunkResult(0, 0, len(product_ids))
    classifier = classifier_for(settings, model_version or live_version_name(settings))
    with sessions() as session:
        rows = session.execute(
            select(
                Product.id,
                Product.image_key,
                Product.model_input,
                Product.model_input_busy,
                Product.model_input_key,
                Product.preprocess_version,
            ).where(
                Product.id.in_(list(product_ids)),
                not_(already_done(classifier.version, not_before)),
            )
        ).all()
    skipped = len(product_ids) - len(rows)
    if not rows:
        return ChunkResult(0, 0, skipped)
    loaded, kept, etags = _load(settings, rows)
    good = [i for i, item in enumerate(loaded) if isinstance(item, ModelInput)]
    predictions = classifier.classify([loaded[i] for i in good])
    outcomes = [
        ProductOutcome(
            rows[i].id,
            label=prediction.label,
            confidence=prediction.confidence,
            probabilities=prediction.probabilities,
            embedding=prediction.embedding,
            kept_input=kept.get(i),
            fetched=i in etags,
            photo_etag=etags.get(i),
        )
        for i, prediction in zip(good, predictions, strict=True)
    ]
    for i, (row, item) in enumerate(zip(rows, loaded, strict=True)):
        if isinstance(item, FashionError):
            log.warning("product %s: %s: %s", row.id, item.code, item.message)
            outcomes.append(
                ProductOutcome(row.id, error=item.code, fetched=i in etags, photo_etag=etags.get(i))
            )
    with sessions.begin() as session:
        record_predictions(session=session, model_version=classifier.version, outcomes=outcomes)
    metrics.batch("bulk", len(good))
    metrics.products_classified(JobStatus.DONE, len(good))
    for item in loaded:
        if isinstance(item, FashionError):
            metrics.products_classified(item.code)
    return ChunkResult(len(good), len(rows) - len(good), skipped)


def _still_filled(sessions, version: str) -> bool:  # type: ignore[no-untyped-def]
    with sessions() as session:
        row = get_version(session=session, version=version)
        return row is not None and row.state != ModelState.RETIRED


def _has_valid_input(row: Row) -> bool:
    return (
        row.model_input is not None
        and row.image_key is not None
        and row.model_input_key == row.image_key
        and row.preprocess_version == PREPROCESS_VERSION
    )


def _load(
    settings: Settings, rows: Sequence[Row]
) -> tuple[list[ModelInput | FashionError], dict[int, KeptInput], dict[int, str | None]]:
    """Each row's model input, from the catalog where it is kept and valid, else
    fetched and prepared; and, by row index, the inputs to keep and the version tag
    of each photo fetched (``None`` for a missing one)."""
    loaded: list[ModelInput | FashionError | None] = [
        ModelInput(
            pixels=np.frombuffer(row.model_input, dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE),
            busy_background=bool(row.model_input_busy),
        )
        if _has_valid_input(row)
        else None
        for row in rows
    ]
    missing = [i for i, item in enumerate(loaded) if item is None]
    fetched = fetch_all(settings, [rows[i].image_key for i in missing])
    kept: dict[int, KeptInput] = {}
    etags: dict[int, str | None] = {}
    for i, item in zip(missing, fetched, strict=True):
        loaded[i] = prepare_fetched(settings, item)
        if isinstance(item, StoredObject):
            etags[i] = item.etag
        elif item.code == ErrorCode.OBJECT_MISSING:
            etags[i] = None  # recorded as missing: the listing will not have it either
        if isinstance(loaded[i], ModelInput):
            kept[i] = KeptInput(
                pixels=np.ascontiguousarray(loaded[i].pixels, dtype=np.uint8).tobytes(),
                busy_background=loaded[i].busy_background,
                source_key=rows[i].image_key,
                sha256=hashlib.sha256(item.data).hexdigest(),
                preprocess_version=PREPROCESS_VERSION,
            )
    return loaded, kept, etags


def mark_products_poison_and_count(
    product_ids: Sequence[int],
    *,
    settings: Settings,
    deliveries: int,
    model_version: str | None = None,
) -> None:
    """``predictions.mark_products_poison`` for ``model_version`` (default: the live
    one), in a transaction of its own, then counted in the metrics and logged: their
    photos kept killing workers.

    They count as done for this model (the skip rule), so no run queues them again
    until a new model or an ``all`` run; ``fashion reclassify`` reports them failed.
    """
    version = model_version or live_version_name(settings)
    with get_sessionmaker(settings.resolved_database_url).begin() as session:
        mark_products_poison(session=session, product_ids=product_ids, model_version=version)
    metrics.products_classified(ErrorCode.POISON, len(product_ids))
    log.error(
        "products %s: delivered %d times without finishing; marked poison",
        list(product_ids),
        deliveries,
    )
