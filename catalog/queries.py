"""Data functions for the web backend and the worker.

Every function is keyword-only and takes the ``session`` explicitly; the caller
owns the transaction. "Not found" is ``None``, never an exception.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.orm import Session, contains_eager, selectinload

from catalog.models import (
    CATEGORIES,
    ClassificationJob,
    Product,
    ProductPrediction,
    SimilarItem,
    live_version_name,
)


@dataclass(frozen=True)
class SimilarProduct:
    rank: int
    sku: str
    name: str
    category: str
    price: Decimal
    stock_quantity: int
    in_stock: bool
    score: float


def as_uuid(job_id: str | uuid.UUID) -> uuid.UUID | None:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(job_id)
    except ValueError:
        return None


def get_job(*, session: Session, job_id: str | uuid.UUID) -> ClassificationJob | None:
    parsed = as_uuid(job_id)
    return session.get(ClassificationJob, parsed) if parsed else None


def similar_for_job(*, session: Session, job_id: str | uuid.UUID) -> list[SimilarProduct] | None:
    """The similar products recorded for a job, best first; ``None`` if no such job."""
    job = get_job(session=session, job_id=job_id)
    if job is None:
        return None
    rows = session.execute(
        select(SimilarItem, Product)
        .join(Product, SimilarItem.product_id == Product.id)
        .where(SimilarItem.job_id == job.id)
        .order_by(SimilarItem.rank)
    ).all()
    return [
        SimilarProduct(
            rank=item.rank,
            sku=product.sku,
            name=product.name,
            category=product.category,
            price=product.price,
            stock_quantity=product.stock_quantity,
            in_stock=product.in_stock,
            score=item.score,
        )
        for item, product in rows
    ]


def get_product(*, session: Session, sku: str) -> Product | None:
    return session.scalar(select(Product).where(Product.sku == sku))


def upsert_product(
    *,
    session: Session,
    sku: str,
    name: str,
    category: str,
    price: Decimal,
    stock_quantity: int,
    image_key: str | None,
) -> Product:
    """Insert the product or update the one with the same sku."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; expected one of {list(CATEGORIES)}")
    if stock_quantity < 0:
        raise ValueError("stock_quantity must not be negative")
    product = get_product(session=session, sku=sku)
    if product is None:
        product = Product(sku=sku)
        session.add(product)
    product.name = name
    if product.id is not None and product.category != category:
        # Each version's rows are searched by the product's category (docs/rollout.md).
        session.execute(
            update(ProductPrediction)
            .where(ProductPrediction.product_id == product.id)
            .values(category=category)
        )
    product.category = category
    product.price = price
    product.stock_quantity = stock_quantity
    if product.image_key != image_key:
        # A reviewer's answer was about the old photo.
        product.reviewed_category = None
    product.image_key = image_key
    session.flush()
    return product


def audit_mismatches(*, session: Session, limit: int | None = None) -> list[Product]:
    """Products whose photo shows another category than the one listed: as a reviewer
    said (``reviewed_category``: these first), else as the live model predicts (most
    confident first). A product a reviewer confirmed as listed is not one. Each
    comes with its ``live_prediction`` loaded."""
    query = (
        select(Product)
        .outerjoin(ProductPrediction, live_prediction_of_product())
        .options(contains_eager(Product.live_prediction))
        .where(
            or_(
                and_(
                    Product.reviewed_category.is_not(None),
                    Product.reviewed_category != Product.category,
                ),
                and_(Product.reviewed_category.is_(None), model_disagrees()),
            )
        )
        .order_by(
            Product.reviewed_category.is_(None),
            ProductPrediction.confidence.desc(),
            Product.sku,
        )
    )
    return list(session.scalars(query.limit(limit) if limit else query))


def live_prediction_of_product() -> ColumnElement[bool]:
    """The join condition of ``Product`` to its live version's ``ProductPrediction``."""
    return and_(
        ProductPrediction.product_id == Product.id,
        ProductPrediction.model_version == live_version_name(),
    )


def model_disagrees() -> ColumnElement[bool]:
    """SQL condition (with ``ProductPrediction`` joined by ``live_prediction_of_product``):
    the live model puts the product's photo in another category than listed."""
    return and_(
        ProductPrediction.label.is_not(None),
        or_(
            *(
                (ProductPrediction.label == label) & (Product.category != name)
                for label, name in enumerate(CATEGORIES)
            )
        ),
    )


def all_products(*, session: Session) -> list[Product]:
    """Every product by SKU, each with its ``live_prediction`` loaded."""
    return list(
        session.scalars(
            select(Product).options(selectinload(Product.live_prediction)).order_by(Product.sku)
        )
    )


def find_idempotent_job(
    *, session: Session, api_key_id: int | None, idempotency_key: str
) -> ClassificationJob | None:
    """The job a caller made earlier with the same ``Idempotency-Key``, if any."""
    return session.scalar(
        select(ClassificationJob).where(
            ClassificationJob.api_key_id == api_key_id,
            ClassificationJob.idempotency_key == idempotency_key,
        )
    )
