"""Choose the in-stock products to offer beside a classified upload.

Candidates are in-stock products (stock > 0) of the predicted category -- of the
two most probable categories when the upload is ``uncertain``, of every category
of its family when only the family is sure (footwear) -- whose photos were
embedded by the *same model version* as the upload (embeddings of different
models are not comparable): each version's embeddings are its own rows of
``product_predictions``, so a candidate filling its rows changes nothing here.
They are ranked by cosine similarity and the top ``k`` kept. Every filter is part
of the query, so a product that sold out or moved category is never offered,
whatever the index returns.

The search runs in the database, so no process holds the catalog's embeddings
and a worker's memory does not grow with the catalog:

- PostgreSQL: one scan of the (version, category)'s partial HNSW index
  (``catalog.vector_indexes``: pgvector, cosine, ``halfvec``) per searched
  category, merged; stock is applied while the index is walked, with iterative
  index scans (pgvector >= 0.8) so that ``k`` rows still come back.
  Every connection starts with ``hnsw.ef_search`` at ``EF_SEARCH`` and relaxed-order
  iterative scans (``catalog.db``), so a lookup sends ``set_config`` (transaction
  scoped) only for another ``ef_search``; rows come back in relaxed order and are
  sorted exactly.
- SQLite (the embedded default, small catalogs): an exact scan of the candidate
  rows, streamed in partitions of ``SCAN_PARTITION`` with a running top ``k``.

docs/catalog.md has the figures (recall, latency at 100 k and 1 M products).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import numpy as np
from sqlalchemy import (
    Float,
    Select,
    bindparam,
    cast,
    delete,
    func,
    literal,
    select,
    text,
    union_all,
)
from sqlalchemy.orm import Session

from catalog.codes import FAMILIES
from catalog.db import SEARCH_EF_SEARCH
from catalog.embeddings import decode_embeddings, halfvec_type
from catalog.models import CATEGORIES, ClassificationJob, Product, ProductPrediction, SimilarItem

#: HNSW candidate list per lookup by default (``FASHION_SIMILAR_EF_SEARCH``), every
#: connection's own (``catalog.db``); the recall and latency it gives at 100 k and
#: 1 M products are in docs/catalog.md.
EF_SEARCH = SEARCH_EF_SEARCH
#: Rows an exact (SQLite) lookup reads per round trip.
SCAN_PARTITION = 2_000


def candidate_categories(
    probabilities: Sequence[float], *, uncertain: bool, family: str | None = None
) -> list[str]:
    """The predicted category; the two most probable when ``uncertain``; every
    category of ``family`` (most probable first) when sure of the family only."""
    if len(probabilities) != len(CATEGORIES):
        raise ValueError(f"expected {len(CATEGORIES)} probabilities, got {len(probabilities)}")
    order = [int(index) for index in np.argsort(np.asarray(probabilities))[::-1]]
    if family is not None and not uncertain:
        members = FAMILIES[family]
        return [CATEGORIES[index] for index in order if index in members]
    return [CATEGORIES[index] for index in order[: 2 if uncertain else 1]]


def _offerable(model_version: str):  # type: ignore[no-untyped-def]
    """In stock, embedded by ``model_version``: the filters besides the category.
    The version is rendered as a constant, so the planner can match the version's
    partial indexes."""
    return (
        ProductPrediction.model_version == literal(model_version, literal_execute=True),
        Product.in_stock,
        ProductPrediction.embedding.is_not(None),
    )


def _cosine(score: float) -> float:
    """A cosine similarity within [-1, 1]: float16 storage put 58 % of exact matches
    at 1.000026."""
    return min(1.0, max(-1.0, score))


def _unit(embedding: np.ndarray) -> np.ndarray | None:
    """``embedding`` as a float32 unit vector; ``None`` if it has no direction."""
    query = np.asarray(embedding, dtype=np.float32).ravel()
    norm = float(np.linalg.norm(query))
    if norm == 0.0 or not np.isfinite(norm):
        return None
    return query / norm


def rank_similar(
    *,
    session: Session,
    probabilities: Sequence[float],
    embedding: np.ndarray,
    model_version: str,
    uncertain: bool,
    top_k: int,
    ef_search: int = EF_SEARCH,
    family: str | None = None,
) -> list[tuple[Product, float]]:
    """The ``top_k`` most similar in-stock products, best first, with cosine scores.

    ``family``: sure of the family but not of the class (``Prediction.family_only``):
    search all of the family's categories.

    ``ef_search`` (PostgreSQL): the HNSW candidate list; larger finds more of the
    exact top ``k`` and takes longer.
    """
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    query = _unit(embedding)
    if query is None:
        return []
    categories = candidate_categories(probabilities, uncertain=uncertain, family=family)
    if session.get_bind().dialect.name == "postgresql":
        _configure_scan(session, ef_search)
        return _pgvector_search(session, query, categories, model_version, top_k)
    return _exact_search(session, query, categories, model_version, top_k)


def similar_to_product(
    *,
    session: Session,
    product: Product,
    model_version: str,
    top_k: int,
    ef_search: int = EF_SEARCH,
) -> list[tuple[Product, float]]:
    """In-stock products of ``product``'s listed category most like its photo as
    ``model_version`` saw it, best first, itself left out; empty until that version
    has embedded its photo."""
    embedding = session.scalar(
        select(ProductPrediction.embedding).where(
            ProductPrediction.product_id == product.id,
            ProductPrediction.model_version == model_version,
        )
    )
    if embedding is None:
        return []
    one_hot = [1.0 if name == product.category else 0.0 for name in CATEGORIES]
    ranked = rank_similar(
        session=session,
        probabilities=one_hot,
        embedding=decode_embeddings([embedding])[0],
        model_version=model_version,
        uncertain=False,
        top_k=top_k + 1,
        ef_search=ef_search,
    )
    return [(other, score) for other, score in ranked if other.id != product.id][:top_k]


@functools.lru_cache(maxsize=256)
def _pgvector_scans(
    categories: tuple[str, ...], model_version: str, top_k: int, dimensions: int
) -> Select:
    """One ``ORDER BY distance LIMIT k`` index scan per category, merged; the upload's
    vector is the bound parameter ``query``.

    Version, category and size are rendered as constants, so the planner can match
    each scan to the partial HNSW index of that version and category
    (``catalog.vector_indexes``). Built once per shape: building it took a third of
    a lookup's time in Python (~1 ms of ~3 at 5 000 products).
    """
    vector_type = halfvec_type(dimensions)
    distance = cast(ProductPrediction.embedding, vector_type).op("<=>", return_type=Float)(
        bindparam("query", type_=vector_type)
    )
    scans = [
        select(ProductPrediction.product_id.label("id"), distance.label("distance"))
        .select_from(ProductPrediction)
        .join(Product, Product.id == ProductPrediction.product_id)
        .where(
            ProductPrediction.category == literal(category, literal_execute=True),
            *_offerable(model_version),
        )
        .order_by(distance)
        .limit(top_k)
        for category in categories
    ]
    nearest = (scans[0] if len(scans) == 1 else union_all(*scans)).subquery()
    # The prediction's category is the product's (``upsert_product`` moves both in one
    # transaction); the product's own is checked here, on the k rows, not in each
    # scan: there, with stale statistics, PostgreSQL joined each scan to ``products``
    # through the category index, reading the whole category per graph candidate.
    return (
        select(Product, nearest.c.distance)
        .join(nearest, Product.id == nearest.c.id)
        .where(Product.category.in_(categories))
        .order_by(nearest.c.distance)
        .limit(top_k)
    )


def _configure_scan(session: Session, ef_search: int) -> None:
    """The scan's settings for this transaction, unless they are the connection's."""
    if ef_search == EF_SEARCH:
        return
    session.execute(
        select(
            func.set_config("hnsw.ef_search", str(int(ef_search)), True),
            func.set_config("hnsw.iterative_scan", "relaxed_order", True),
        )
    )


def _pgvector_search(
    session: Session, query: np.ndarray, categories: list[str], model_version: str, top_k: int
) -> list[tuple[Product, float]]:
    statement = _pgvector_scans(tuple(categories), model_version, top_k, len(query))
    rows = session.execute(statement, {"query": query.tolist()}).all()
    # Iterative scans return rows in relaxed order: sort them exactly.
    ranked = sorted(
        ((product, _cosine(1.0 - float(d))) for product, d in rows), key=lambda r: -r[1]
    )
    return ranked[:top_k]


def explain_lookup(
    *,
    session: Session,
    probabilities: Sequence[float],
    embedding: np.ndarray,
    model_version: str,
    uncertain: bool,
    top_k: int,
) -> str:
    """PostgreSQL's plan for the lookup ``rank_similar`` would run (for ops and the
    benchmark: which index it walks)."""
    query = _unit(embedding)
    if query is None:
        raise ValueError("the embedding has no direction (zero or not finite)")
    categories = candidate_categories(probabilities, uncertain=uncertain)
    statement = (
        _pgvector_scans(tuple(categories), model_version, top_k, len(query))
        .params(query=query.tolist())
        .compile(dialect=session.get_bind().dialect, compile_kwargs={"literal_binds": True})
    )
    _configure_scan(session, EF_SEARCH)
    # The query vector is a constant in the statement: shown as [...].
    plan = "\n".join(session.scalars(text(f"EXPLAIN {statement}")))
    return re.sub(r"'\[[^]]*\]'", "'[...]'", plan)


def _exact_search(
    session: Session, query: np.ndarray, categories: list[str], model_version: str, top_k: int
) -> list[tuple[Product, float]]:
    best_ids = np.zeros(0, dtype=np.int64)
    best_scores = np.zeros(0, dtype=np.float32)
    result = session.execute(
        select(ProductPrediction.product_id.label("id"), ProductPrediction.embedding)
        .select_from(ProductPrediction)
        .join(Product, Product.id == ProductPrediction.product_id)
        .where(
            ProductPrediction.category.in_(categories),
            ProductPrediction.category == Product.category,
            *_offerable(model_version),
        )
        .execution_options(yield_per=SCAN_PARTITION)
    )
    for partition in result.partitions():
        ids = np.array([row.id for row in partition], dtype=np.int64)
        scores = decode_embeddings([row.embedding for row in partition]) @ query
        ids, scores = np.concatenate([best_ids, ids]), np.concatenate([best_scores, scores])
        keep = np.argsort(-scores, kind="stable")[:top_k]
        best_ids, best_scores = ids[keep], scores[keep]
    if not len(best_ids):
        return []
    products = {
        product.id: product
        for product in session.scalars(
            select(Product).where(Product.id.in_([int(i) for i in best_ids]))
        )
    }
    return [
        (products[int(i)], _cosine(float(score)))
        for i, score in zip(best_ids, best_scores, strict=True)
        if int(i) in products
    ]


def replace_similar_items(
    *, session: Session, job: ClassificationJob, ranked: Sequence[tuple[Product, float]]
) -> None:
    """Make ``ranked`` the job's similar items, replacing any from an earlier run."""
    session.execute(delete(SimilarItem).where(SimilarItem.job_id == job.id))
    session.add_all(
        SimilarItem(job_id=job.id, rank=rank, product_id=product.id, score=score)
        for rank, (product, score) in enumerate(ranked, start=1)
    )
