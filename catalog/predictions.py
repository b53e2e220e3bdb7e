"""The product lifecycle: a catalog photo gets a prediction or an error code
(``catalog.codes.ErrorCode``) per model version, in one place.

Like ``catalog.lifecycle`` (the jobs'), each change is a keyword-only function with
an explicit ``session``: the caller owns the transaction. The skip rule
(``already_done``) says which products a run still has to classify.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, exists, select, update
from sqlalchemy.orm import Session

from catalog.codes import ErrorCode
from catalog.embeddings import encode_embedding
from catalog.models import Product, ProductPrediction, utcnow


def already_done(version: str, not_before: dt.datetime | None) -> ColumnElement[bool]:
    """SQL condition on ``Product``: the product needs nothing more from a run with
    this skip rule (``version`` has its row, classified at or after ``not_before``
    when that is set)."""
    condition = and_(
        ProductPrediction.product_id == Product.id, ProductPrediction.model_version == version
    )
    if not_before is not None:
        condition = and_(condition, ProductPrediction.classified_at >= not_before)
    return exists().where(condition)


@dataclass(frozen=True)
class KeptInput:
    """A photo's model input as the catalog keeps it (see ``Product.model_input``)."""

    pixels: bytes
    busy_background: bool
    source_key: str
    sha256: str
    preprocess_version: int


@dataclass(frozen=True)
class ProductOutcome:
    """One product photo's result: a prediction, or the error code it ended with; the
    model input to keep when the photo was fetched for it; and, when it was fetched
    (``fetched``), the version tag it had then (``None``: it was missing)."""

    product_id: int
    label: int | None = None
    confidence: float | None = None
    probabilities: Sequence[float] | None = None
    embedding: Any = None
    error: ErrorCode | None = None
    kept_input: KeptInput | None = None
    fetched: bool = False
    photo_etag: str | None = None


def record_predictions(
    *, session: Session, model_version: str, outcomes: Sequence[ProductOutcome]
) -> None:
    """Write each product's prediction or error for ``model_version``: one upsert of
    its ``product_predictions`` rows (the other versions' rows are left as they
    are), and, where the photo was read for it, one bulk UPDATE of ``products`` with
    the model input kept and the photo's version tag.

    A product with an error counts as done for this model (the skip rule), so no
    run queues it again until a new model or an ``all`` run.
    """
    if not outcomes:
        return
    now = utcnow()
    outputs = [
        {
            "label": outcome.label,
            "confidence": outcome.confidence,
            "probabilities": (
                None
                if outcome.probabilities is None
                else [round(float(p), 4) for p in outcome.probabilities]
            ),
            "embedding": (
                None if outcome.embedding is None else encode_embedding(outcome.embedding)
            ),
            "error": None if outcome.error is None else outcome.error.value,
        }
        for outcome in outcomes
    ]
    read = [
        {
            "id": outcome.product_id,
            **_kept_columns(outcome.kept_input),
            **({"photo_etag": outcome.photo_etag} if outcome.fetched else {}),
        }
        for outcome in outcomes
        if outcome.fetched or outcome.kept_input is not None
    ]
    if read:
        session.execute(update(Product), read)
    categories = dict(
        session.execute(
            select(Product.id, Product.category).where(
                Product.id.in_([outcome.product_id for outcome in outcomes])
            )
        ).all()
    )
    _upsert_predictions(
        session,
        [
            {
                "product_id": outcome.product_id,
                "model_version": model_version,
                "category": categories[outcome.product_id],
                "classified_at": now,
                **output,
            }
            for outcome, output in zip(outcomes, outputs, strict=True)
            if outcome.product_id in categories
        ],
    )


def _upsert_predictions(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert each (product, model version)'s row, or replace the one there: one
    statement, ``INSERT … ON CONFLICT DO UPDATE`` on both engines."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(ProductPrediction)
    replaced = ("category", "label", "confidence", "probabilities", "embedding")
    statement = statement.on_conflict_do_update(
        index_elements=["product_id", "model_version"],
        set_={name: statement.excluded[name] for name in (*replaced, "classified_at", "error")},
    )
    session.execute(statement, rows)


def _kept_columns(kept: KeptInput | None) -> dict[str, Any]:
    if kept is None:
        return {}
    return {
        "model_input": kept.pixels,
        "model_input_busy": kept.busy_background,
        "model_input_key": kept.source_key,
        "model_input_sha256": kept.sha256,
        "preprocess_version": kept.preprocess_version,
    }


def forget_predictions(*, session: Session, product_ids: Sequence[int]) -> None:
    """Delete every version's prediction of these products (their photo changed):
    no version offers them until it has classified the new photo."""
    session.execute(
        delete(ProductPrediction).where(ProductPrediction.product_id.in_(list(product_ids)))
    )


def mark_products_poison(
    *, session: Session, product_ids: Sequence[int], model_version: str
) -> None:
    """These products' photos kept killing their workers: code ``poison``."""
    record_predictions(
        session=session,
        model_version=model_version,
        outcomes=[ProductOutcome(product_id, error=ErrorCode.POISON) for product_id in product_ids],
    )
