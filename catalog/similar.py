"""Choose the in-stock products to offer beside a classified upload.

Walking-skeleton rule: in-stock products (stock > 0) of the predicted category,
scored by the probability the model gives that category, ties broken by the
larger stock and then by sku so the order is stable. Embedding similarity
replaces this in the catalog issue.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from catalog.models import CATEGORIES, ClassificationJob, Product, SimilarItem


def rank_similar(
    *, session: Session, probabilities: Sequence[float], top_k: int
) -> list[tuple[Product, float]]:
    """The top ``top_k`` in-stock products of the most probable category, with scores."""
    if len(probabilities) != len(CATEGORIES):
        raise ValueError(f"expected {len(CATEGORIES)} probabilities, got {len(probabilities)}")
    label = max(range(len(probabilities)), key=probabilities.__getitem__)
    products = session.scalars(
        select(Product)
        .where(Product.category == CATEGORIES[label], Product.stock_quantity > 0)
        .order_by(Product.stock_quantity.desc(), Product.sku)
        .limit(top_k)
    ).all()
    return [(product, float(probabilities[label])) for product in products]


def replace_similar_items(
    *, session: Session, job: ClassificationJob, ranked: Sequence[tuple[Product, float]]
) -> None:
    """Make ``ranked`` the job's similar items, replacing any from an earlier run."""
    session.execute(delete(SimilarItem).where(SimilarItem.job_id == job.id))
    session.add_all(
        SimilarItem(job_id=job.id, rank=rank, product_id=product.id, score=score)
        for rank, (product, score) in enumerate(ranked, start=1)
    )
