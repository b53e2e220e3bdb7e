"""Choose the in-stock products to offer beside a classified upload.

Candidates are in-stock products (stock > 0) of the predicted category -- of the
two most probable categories when the upload is ``uncertain`` -- whose photos
were embedded by the *same model version* as the upload (embeddings of
different models are not comparable). They are ranked by cosine similarity of
the L2-normalised embeddings, i.e. a dot product, and the top ``k`` are kept.

Lookups are served from a per-process cache of each category's embedding
matrix, keyed by model version. An entry younger than ``cache_seconds`` is used
as it is; an older one is brought up to date *incrementally*: only the rows of
the category whose ``updated_at`` is at or after the newest one already seen
(less a margin for clock skew between writers) are read and patched in, so a
bulk re-classification that touches every product costs a lookup a few hundred
rows, not the whole category (a full reload per category per refresh took
interactive latency from ~30 ms to seconds during a 100 k-product run). The
whole matrix is reloaded every ``FULL_RELOAD_SECONDS`` as a backstop.

Stock, model version and category are always re-checked when the winners are
fetched, so a product that sold out or moved is never offered, even from a
stale matrix; a *new* product appears within ``cache_seconds``. See
docs/catalog.md for the figures and how this scales past 100 k products.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from catalog.embeddings import decode_embeddings
from catalog.models import CATEGORIES, ClassificationJob, Product, SimilarItem

DEFAULT_CACHE_SECONDS = 5.0
# Candidates fetched per requested item, so items sold out since the matrix was
# cached can be dropped without a second round trip.
OVERFETCH = 4


#: Changes written by a worker whose clock lags by up to this much are still seen.
REFRESH_MARGIN = dt.timedelta(seconds=10)
#: A category's matrix is rebuilt from scratch at least this often.
FULL_RELOAD_SECONDS = 300.0


@dataclass(frozen=True)
class _CategoryMatrix:
    loaded_at: float  # monotonic time of the last refresh
    full_loaded_at: float  # monotonic time of the last full load
    watermark: dt.datetime | None  # newest updated_at seen in the category
    product_ids: np.ndarray
    embeddings: np.ndarray


_cache: dict[tuple[str, str, str], _CategoryMatrix] = {}
_cache_lock = threading.Lock()


def candidate_categories(probabilities: Sequence[float], *, uncertain: bool) -> list[str]:
    if len(probabilities) != len(CATEGORIES):
        raise ValueError(f"expected {len(CATEGORIES)} probabilities, got {len(probabilities)}")
    order = np.argsort(np.asarray(probabilities))[::-1]
    return [CATEGORIES[int(index)] for index in order[: 2 if uncertain else 1]]


def _candidates(category: str, model_version: str):  # type: ignore[no-untyped-def]
    return (
        Product.category == category,
        Product.model_version == model_version,
        Product.stock_quantity > 0,
        Product.embedding.is_not(None),
    )


def _full_load(session: Session, category: str, model_version: str) -> _CategoryMatrix:
    rows = session.execute(
        select(Product.id, Product.embedding, Product.updated_at).where(
            *_candidates(category, model_version)
        )
    ).all()
    now = time.monotonic()
    return _CategoryMatrix(
        loaded_at=now,
        full_loaded_at=now,
        watermark=max((row.updated_at for row in rows), default=None),
        product_ids=np.array([row.id for row in rows], dtype=np.int64),
        embeddings=decode_embeddings([row.embedding for row in rows]),
    )


def _refresh(
    session: Session, cached: _CategoryMatrix, category: str, model_version: str
) -> _CategoryMatrix:
    """Patch in the category's rows changed since ``cached.watermark`` (less the margin)."""
    rows = session.execute(
        select(
            Product.id,
            Product.embedding,
            Product.updated_at,
            Product.stock_quantity,
            Product.model_version,
        ).where(
            Product.category == category,
            Product.updated_at >= cached.watermark - REFRESH_MARGIN,
        )
    ).all()
    if not rows:
        return replace(cached, loaded_at=time.monotonic())
    fresh = [
        row
        for row in rows
        if row.model_version == model_version and row.stock_quantity > 0 and row.embedding
    ]
    changed = np.array([row.id for row in rows], dtype=np.int64)
    keep = ~np.isin(cached.product_ids, changed)
    ids = np.concatenate([cached.product_ids[keep], [row.id for row in fresh]]).astype(np.int64)
    parts = [cached.embeddings[keep]] if keep.any() else []
    if fresh:
        parts.append(decode_embeddings([row.embedding for row in fresh]))
    embeddings = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
    return replace(
        cached,
        loaded_at=time.monotonic(),
        watermark=max(cached.watermark, max(row.updated_at for row in rows)),
        product_ids=ids,
        embeddings=embeddings,
    )


def _category_matrix(
    session: Session, category: str, model_version: str, cache_seconds: float
) -> _CategoryMatrix:
    key = (str(session.get_bind().url), category, model_version)
    with _cache_lock:
        cached = _cache.get(key)
    now = time.monotonic()
    if cached is not None and now - cached.loaded_at < cache_seconds:
        return cached
    if (
        cached is None
        or cached.watermark is None
        or now - cached.full_loaded_at >= FULL_RELOAD_SECONDS
    ):
        matrix = _full_load(session, category, model_version)
    else:
        matrix = _refresh(session, cached, category, model_version)
    with _cache_lock:
        _cache[key] = matrix
    return matrix


def rank_similar(
    *,
    session: Session,
    probabilities: Sequence[float],
    embedding: np.ndarray,
    model_version: str,
    uncertain: bool,
    top_k: int,
    cache_seconds: float = DEFAULT_CACHE_SECONDS,
) -> list[tuple[Product, float]]:
    """The ``top_k`` most similar in-stock products, best first, with cosine scores."""
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    ids, scores = [], []
    categories = candidate_categories(probabilities, uncertain=uncertain)
    for category in categories:
        matrix = _category_matrix(session, category, model_version, cache_seconds)
        if len(matrix.product_ids):
            ids.append(matrix.product_ids)
            scores.append(matrix.embeddings @ np.asarray(embedding, dtype=np.float32))
    if not ids:
        return []
    all_ids, all_scores = np.concatenate(ids), np.concatenate(scores)
    k = min(top_k * OVERFETCH, len(all_ids))
    best = np.argpartition(-all_scores, k - 1)[:k]
    best = best[np.argsort(-all_scores[best], kind="stable")]
    # Fetched by primary key alone and filtered here: with stock and model
    # version in the WHERE clause, PostgreSQL with stale statistics (right after
    # a bulk re-classification, before autoanalyze) picked the model-version
    # index and scanned every product of the model (3 ms instead of 0.2 ms).
    still_in_stock = {
        product.id: product
        for product in session.scalars(
            select(Product).where(Product.id.in_([int(i) for i in all_ids[best]]))
        )
        if product.stock_quantity > 0
        and product.model_version == model_version
        and product.category in categories
    }
    ranked = [
        (still_in_stock[int(all_ids[i])], float(all_scores[i]))
        for i in best
        if int(all_ids[i]) in still_in_stock
    ]
    return ranked[:top_k]


def replace_similar_items(
    *, session: Session, job: ClassificationJob, ranked: Sequence[tuple[Product, float]]
) -> None:
    """Make ``ranked`` the job's similar items, replacing any from an earlier run."""
    session.execute(delete(SimilarItem).where(SimilarItem.job_id == job.id))
    session.add_all(
        SimilarItem(job_id=job.id, rank=rank, product_id=product.id, score=score)
        for rank, (product, score) in enumerate(ranked, start=1)
    )
