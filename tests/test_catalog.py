from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catalog.db import get_engine, get_sessionmaker
from catalog.models import SimilarItem
from catalog.queries import create_job, get_job, get_product, similar_for_job
from catalog.similar import rank_similar, replace_similar_items
from tests.conftest import make_product

TROUSER_PROBABILITIES = [0.01, 0.9, 0.01, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01]


def make_job(session: Session):
    return create_job(
        session=session,
        job_id=uuid.uuid4(),
        image_key="uploads/x",
        filename="x.png",
        content_sha256=hashlib.sha256(b"x").hexdigest(),
    )


def test_migrations_create_the_three_tables(database_url: str) -> None:
    tables = set(inspect(get_engine(database_url)).get_table_names())
    assert {"products", "classification_jobs", "similar_items", "alembic_version"} <= tables


def test_upsert_product_inserts_then_updates_by_sku(session: Session) -> None:
    make_product(session, sku="TRS-1", stock_quantity=3)
    make_product(session, sku="TRS-1", stock_quantity=7, price="25.00")
    product = get_product(session=session, sku="TRS-1")
    assert product.stock_quantity == 7 and product.price == Decimal("25.00")
    count = session.scalar(select(func.count()).select_from(type(product)))
    assert count == 1


def test_unknown_category_is_refused(session: Session) -> None:
    with pytest.raises(ValueError, match="unknown category"):
        make_product(session, category="Hat")


def test_database_enforces_the_category_list(database_url: str) -> None:
    with pytest.raises(IntegrityError), get_sessionmaker(database_url).begin() as session:
        product = make_product(session)
        product.category = "Hat"
        session.flush()


def test_similar_items_are_in_stock_products_of_the_predicted_category(session: Session) -> None:
    in_stock = [make_product(session, sku=f"T-{i}", stock_quantity=i + 1) for i in range(3)]
    make_product(session, sku="T-sold-out", stock_quantity=0)
    make_product(session, sku="D-1", category="Dress")
    ranked = rank_similar(session=session, probabilities=TROUSER_PROBABILITIES, top_k=2)
    assert [product.sku for product, _ in ranked] == ["T-2", "T-1"]
    assert all(score == pytest.approx(0.9) for _, score in ranked)
    assert {p.sku for p in in_stock} >= {product.sku for product, _ in ranked}


def test_rerunning_a_job_replaces_its_similar_items(session: Session) -> None:
    for i in range(3):
        make_product(session, sku=f"T-{i}")
    job = make_job(session)
    session.flush()
    for _ in range(2):
        ranked = rank_similar(session=session, probabilities=TROUSER_PROBABILITIES, top_k=5)
        replace_similar_items(session=session, job=job, ranked=ranked)
        session.flush()
    rows = session.scalars(select(SimilarItem).where(SimilarItem.job_id == job.id)).all()
    assert sorted(row.rank for row in rows) == [1, 2, 3]
    result = similar_for_job(session=session, job_id=job.id)
    assert [item.rank for item in result] == [1, 2, 3]
    assert all(item.category == "Trouser" for item in result)


def test_unknown_or_malformed_job_ids_are_none(session: Session) -> None:
    assert get_job(session=session, job_id=str(uuid.uuid4())) is None
    assert get_job(session=session, job_id="not-a-uuid") is None
    assert similar_for_job(session=session, job_id="not-a-uuid") is None
