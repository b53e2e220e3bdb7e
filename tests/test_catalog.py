from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import event, func, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catalog.db import get_engine, get_sessionmaker
from catalog.lifecycle import create_job
from catalog.models import CATEGORIES, Product, ProductPrediction, SimilarItem
from catalog.queries import (
    audit_mismatches,
    get_job,
    get_product,
    similar_for_job,
)
from catalog.similar import EF_SEARCH, rank_similar, replace_similar_items
from tests.support.factories import make_product

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


VERSION = "test-model-1"
SHIRT_OR_TOP = [0.45, 0.0, 0.05, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0]


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def rank(
    session: Session,
    probabilities,
    embedding,
    *,
    uncertain=False,
    top_k=5,
    family=None,
    ef_search=EF_SEARCH,
):
    ranked = rank_similar(
        session=session,
        probabilities=probabilities,
        embedding=embedding,
        model_version=VERSION,
        uncertain=uncertain,
        top_k=top_k,
        family=family,
        ef_search=ef_search,
    )
    return [(product.sku, round(score, 3)) for product, score in ranked]


def test_similar_items_are_ranked_by_cosine_similarity(session: Session) -> None:
    make_product(session, sku="T-near", embedding=unit(1, 0.1, 0), model_version=VERSION)
    make_product(session, sku="T-mid", embedding=unit(1, 1, 0), model_version=VERSION)
    make_product(session, sku="T-far", embedding=unit(0, 0, 1), model_version=VERSION)
    ranked = rank(session, TROUSER_PROBABILITIES, unit(1, 0, 0), top_k=2)
    assert ranked == [("T-near", pytest.approx(0.995, abs=2e-3)), ("T-mid", 0.707)]


def test_lookups_of_one_shape_each_rank_by_their_own_upload(session: Session) -> None:
    """PostgreSQL's statement is built once per (categories, version, k, size): the
    upload's vector is bound per lookup, never kept from the first."""
    make_product(session, sku="T-x", embedding=unit(1, 0, 0), model_version=VERSION)
    make_product(session, sku="T-y", embedding=unit(0, 1, 0), model_version=VERSION)
    for _ in range(2):
        assert rank(session, TROUSER_PROBABILITIES, unit(1, 0.1, 0), top_k=1)[0][0] == "T-x"
        assert rank(session, TROUSER_PROBABILITIES, unit(0.1, 1, 0), top_k=1)[0][0] == "T-y"


def test_only_in_stock_products_of_the_category_and_model_version_qualify(session) -> None:
    make_product(session, sku="T-ok", embedding=unit(1, 0), model_version=VERSION)
    make_product(
        session, sku="T-sold-out", stock_quantity=0, embedding=unit(1, 0), model_version=VERSION
    )
    make_product(session, sku="T-old-model", embedding=unit(1, 0), model_version="older")
    make_product(session, sku="T-unclassified")
    make_product(
        session,
        sku="D-other-category",
        category="Dress",
        embedding=unit(1, 0),
        model_version=VERSION,
    )
    assert [sku for sku, _ in rank(session, TROUSER_PROBABILITIES, unit(1, 0))] == ["T-ok"]


def test_uncertain_upload_draws_from_its_top_two_categories(session) -> None:
    make_product(
        session, sku="SHIRT", category="Shirt", embedding=unit(1, 0.2), model_version=VERSION
    )
    make_product(
        session, sku="TOP", category="T-shirt/top", embedding=unit(1, 0), model_version=VERSION
    )
    make_product(
        session, sku="PULL", category="Pullover", embedding=unit(1, 0), model_version=VERSION
    )
    assert [sku for sku, _ in rank(session, SHIRT_OR_TOP, unit(1, 0))] == ["SHIRT"]
    assert [sku for sku, _ in rank(session, SHIRT_OR_TOP, unit(1, 0), uncertain=True)] == [
        "TOP",
        "SHIRT",
    ]


def test_a_sure_family_draws_from_all_of_its_categories(session) -> None:
    # Surely footwear (0.95), unsure which: Sneaker 0.4, Ankle boot 0.35, Sandal 0.2.
    footwear = [0.05, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0.4, 0.0, 0.35]
    for sku, category, embedding in (
        ("SNEAKER", "Sneaker", unit(1, 0.5)),
        ("BOOT", "Ankle boot", unit(1, 0)),
        ("SANDAL", "Sandal", unit(1, 0.1)),
        ("TOP", "T-shirt/top", unit(1, 0)),
    ):
        make_product(
            session, sku=sku, category=category, embedding=embedding, model_version=VERSION
        )
    assert [sku for sku, _ in rank(session, footwear, unit(1, 0))] == ["SNEAKER"]
    assert [sku for sku, _ in rank(session, footwear, unit(1, 0), family="footwear")] == [
        "BOOT",
        "SANDAL",
        "SNEAKER",
    ]
    # Unsure of the family too: the two most probable categories, as before.
    assert [
        sku for sku, _ in rank(session, footwear, unit(1, 0), uncertain=True, family="footwear")
    ] == ["BOOT", "SNEAKER"]


def test_a_catalog_change_is_seen_by_the_next_lookup(session) -> None:
    product = make_product(session, sku="T-1", embedding=unit(1, 0), model_version=VERSION)
    assert [sku for sku, _ in rank(session, TROUSER_PROBABILITIES, unit(1, 0))] == ["T-1"]
    product.stock_quantity = 0
    session.flush()
    assert rank(session, TROUSER_PROBABILITIES, unit(1, 0)) == []
    make_product(session, sku="T-2", embedding=unit(0, 1), model_version=VERSION)
    assert [sku for sku, _ in rank(session, TROUSER_PROBABILITIES, unit(1, 0))] == ["T-2"]


def test_a_product_that_sells_out_is_not_offered_by_the_next_lookup(session) -> None:
    product = make_product(session, sku="T-1", embedding=unit(1, 0), model_version=VERSION)
    make_product(session, sku="T-2", embedding=unit(1, 1), model_version=VERSION)
    assert len(rank(session, TROUSER_PROBABILITIES, unit(1, 0))) == 2
    product.stock_quantity = 0
    session.flush()
    assert [sku for sku, _ in rank(session, TROUSER_PROBABILITIES, unit(1, 0))] == ["T-2"]


def test_embeddings_survive_float16_storage(session) -> None:
    vector = np.random.default_rng(0).normal(size=256).astype(np.float32)
    vector /= np.linalg.norm(vector)
    make_product(session, sku="T-1", embedding=vector, model_version=VERSION)
    [(_, score)] = rank(session, TROUSER_PROBABILITIES, vector)
    assert score == pytest.approx(1.0, abs=1e-3)


def test_rerunning_a_job_replaces_its_similar_items(session: Session) -> None:
    for i in range(3):
        make_product(session, sku=f"T-{i}", embedding=unit(1, i), model_version=VERSION)
    job = make_job(session)
    session.flush()
    for _ in range(2):
        ranked = rank_similar(
            session=session,
            probabilities=TROUSER_PROBABILITIES,
            embedding=unit(1, 0),
            model_version=VERSION,
            uncertain=False,
            top_k=5,
        )
        replace_similar_items(session=session, job=job, ranked=ranked)
        session.flush()
    rows = session.scalars(select(SimilarItem).where(SimilarItem.job_id == job.id)).all()
    assert sorted(row.rank for row in rows) == [1, 2, 3]
    result = similar_for_job(session=session, job_id=job.id)
    assert [item.sku for item in result] == ["T-0", "T-1", "T-2"]
    assert result[0].score > result[1].score > result[2].score


def test_audit_lists_disagreeing_products_most_confident_first(session) -> None:
    make_product(session, sku="OK", embedding=unit(1, 0), model_version=VERSION)
    low = make_product(session, sku="LOW", embedding=unit(1, 0), model_version=VERSION)
    high = make_product(session, sku="HIGH", embedding=unit(1, 0), model_version=VERSION)
    for product, category, confidence in ((low, "Dress", 0.6), (high, "Coat", 0.95)):
        prediction = session.get(ProductPrediction, (product.id, VERSION))
        prediction.label, prediction.confidence = CATEGORIES.index(category), confidence
    session.flush()
    assert [p.sku for p in audit_mismatches(session=session)] == ["HIGH", "LOW"]


def test_unknown_or_malformed_job_ids_are_none(session: Session) -> None:
    assert get_job(session=session, job_id=str(uuid.uuid4())) is None
    assert get_job(session=session, job_id="not-a-uuid") is None
    assert similar_for_job(session=session, job_id="not-a-uuid") is None


def test_rewritten_moved_and_sold_out_products_are_seen_by_the_next_lookup(session) -> None:
    from catalog.embeddings import encode_embedding

    products = [
        make_product(session, sku=f"T-{i}", embedding=unit(1, i), model_version=VERSION)
        for i in range(4)
    ]
    assert rank(session, TROUSER_PROBABILITIES, unit(1, 0))[0][0] == "T-0"

    # A bulk run rewrites embeddings; the catalog moves one product and sells out another.
    said = {p.id: session.get(ProductPrediction, (p.id, VERSION)) for p in products}
    said[products[3].id].embedding = encode_embedding(unit(1, 0))
    said[products[0].id].embedding = encode_embedding(unit(0, 1))
    products[1].category = "Shirt"
    products[2].stock_quantity = 0
    session.flush()
    assert rank(session, TROUSER_PROBABILITIES, unit(1, 0)) == [("T-3", 1.0), ("T-0", 0.0)]
    make_product(session, sku="T-new", embedding=unit(1, 0.1), model_version=VERSION)
    assert [sku for sku, _ in rank(session, TROUSER_PROBABILITIES, unit(1, 0))] == [
        "T-3",
        "T-new",
        "T-0",
    ]


def test_postgresql_lookups_walk_the_hnsw_index_with_the_filters_applied(postgresql_url) -> None:
    """Once a version's indexes are built (and the table analysed), a lookup in a
    catalog of a few thousand products walks the partial HNSW graph of that version
    and category, and reaches ``products`` by primary key; the filters stay in the
    query (checked above)."""
    from catalog import similar
    from catalog.embeddings import INDEXED_DIMENSIONS, encode_embedding
    from catalog.vector_indexes import build_version_indexes, version_index_name

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5000, INDEXED_DIMENSIONS)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = dt.datetime.now(dt.UTC)
    with get_sessionmaker(postgresql_url).begin() as session:
        session.execute(
            insert(Product),
            [
                {
                    "id": i + 1,
                    "sku": f"P-{i}",
                    "name": "x",
                    "category": CATEGORIES[i % 10],
                    "price": 1,
                    "stock_quantity": 3,
                }
                for i in range(len(vectors))
            ],
        )
        session.execute(
            insert(ProductPrediction),
            [
                {
                    "product_id": i + 1,
                    "model_version": VERSION,
                    "category": CATEGORIES[i % 10],
                    "label": i % 10,
                    "embedding": encode_embedding(vector),
                    "classified_at": now,
                }
                for i, vector in enumerate(vectors)
            ],
        )
    build_version_indexes(get_engine(postgresql_url), VERSION, INDEXED_DIMENSIONS)
    with get_sessionmaker(postgresql_url).begin() as session:
        query = rng.normal(size=INDEXED_DIMENSIONS).astype(np.float32)
        ranked = rank(session, TROUSER_PROBABILITIES, query)
        assert len(ranked) == 5
        plan = similar.explain_lookup(
            session=session,
            probabilities=TROUSER_PROBABILITIES,
            embedding=query,
            model_version=VERSION,
            uncertain=False,
            top_k=5,
        )
    assert f"Index Scan using {version_index_name(VERSION, 'Trouser')} " in plan
    assert "ix_products_category_stock" not in plan  # products by primary key only


def test_upgrading_postgresql_turns_stored_embeddings_into_searchable_vectors(
    empty_database,
) -> None:
    """Migration 0007 converts the float16 bytes of an existing catalog to halfvec;
    0013 moves them to the version's rows, which are searched."""
    from catalog.db import upgrade
    from catalog.embeddings import encode_embedding

    url = empty_database
    upgrade(url, "0006")
    stored = encode_embedding(unit(1, 2, 3))
    with get_engine(url).begin() as connection:
        connection.execute(
            text(
                "INSERT INTO products (sku, name, category, price, stock_quantity, "
                "embedding, model_version, classified_at) "
                "VALUES ('T-1', 'x', 'Trouser', 1, 3, :e, :v, CURRENT_TIMESTAMP)"
            ),
            {"e": stored, "v": VERSION},
        )
    upgrade(url)
    with get_sessionmaker(url)() as session:
        product = get_product(session=session, sku="T-1")
        assert session.get(ProductPrediction, (product.id, VERSION)).embedding == stored
        assert rank(session, TROUSER_PROBABILITIES, unit(1, 2, 3)) == [("T-1", 1.0)]


def test_every_float16_value_survives_the_postgresql_text_form() -> None:
    """``halfvec_text`` (a lookup table, for speed) writes each float16 exactly."""
    from catalog.embeddings import halfvec_text, parse_halfvec_text

    every = np.arange(1 << 16, dtype=np.uint16)
    finite = every[np.isfinite(every.view("<f2"))]
    back = np.frombuffer(parse_halfvec_text(halfvec_text(finite.tobytes())), dtype="<u2")
    np.testing.assert_array_equal(back, finite)


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_the_move_to_predictions_per_version_keeps_every_prediction_and_similar_item(
    engine, request, tmp_path
) -> None:
    """Migrations 0013-0015 move each classified product's outputs from ``products``
    to ``product_predictions`` (nothing is classified again) and drop the columns;
    unclassified products get no row, similar items stay, and the moved embeddings
    are searched as before."""
    import json

    from catalog.db import upgrade
    from catalog.embeddings import encode_embedding, halfvec_text
    from catalog.models import ProductPrediction

    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    else:
        url = request.getfixturevalue("empty_database")
    upgrade(url, "0012")
    stored = encode_embedding(unit(1, 2, 3))
    probabilities = [0.0] * 4 + [0.93] + [0.07] + [0.0] * 4
    with get_engine(url).begin() as connection:
        insert = text(
            "INSERT INTO products (sku, name, category, price, stock_quantity, predicted_label, "
            "predicted_confidence, predicted_probabilities, embedding, model_version, "
            "classified_at, classification_error) VALUES (:sku, 'x', :category, 1, 3, :label, "
            ":confidence, :probabilities, :embedding, :version, :at, :error)"
        )
        rows = [
            (
                "C-1",
                "Coat",
                4,
                0.93,
                json.dumps(probabilities),
                stored,
                VERSION,
                "2026-12-01",
                None,
            ),
            ("B-1", "Bag", None, None, None, None, VERSION, "2026-12-02", "corrupt"),
            ("N-1", "Bag", None, None, None, None, None, None, None),  # never classified
        ]
        for sku, category, label, confidence, probs, embedding, version, at, error in rows:
            if engine == "postgresql" and embedding is not None:
                embedding = halfvec_text(embedding)
            connection.execute(
                insert,
                {
                    "sku": sku,
                    "category": category,
                    "label": label,
                    "confidence": confidence,
                    "probabilities": probs,
                    "embedding": embedding,
                    "version": version,
                    "at": None if at is None else f"{at} 00:00:00+00:00",
                    "error": error,
                },
            )
    with get_sessionmaker(url).begin() as session:
        coat_id = get_product(session=session, sku="C-1").id
        job_id = uuid.uuid4()
        create_job(
            session=session,
            job_id=job_id,
            image_key="uploads/x",
            filename="x.png",
            content_sha256="0" * 64,
        )
        session.flush()
        session.add(SimilarItem(job_id=job_id, product_id=coat_id, rank=1, score=0.9))

    upgrade(url)

    with get_sessionmaker(url)() as session:
        rows = {row.product_id: row for row in session.scalars(select(ProductPrediction))}
        products = {p.sku: p for p in session.scalars(select(Product))}
        assert set(rows) == {products["C-1"].id, products["B-1"].id}
        moved = rows[products["C-1"].id]
        assert (moved.model_version, moved.category, moved.label, moved.confidence) == (
            VERSION,
            "Coat",
            4,
            0.93,
        )
        assert moved.probabilities == probabilities
        assert moved.embedding == stored
        assert moved.classified_at.date() == dt.date(2026, 12, 1)
        failed = rows[products["B-1"].id]
        assert (failed.error, failed.label, failed.embedding) == ("corrupt", None, None)
        assert session.scalar(select(func.count()).select_from(SimilarItem)) == 1
        coat_probabilities = [0.0] * 4 + [1.0] + [0.0] * 5
        assert rank(session, coat_probabilities, unit(1, 2, 3)) == [("C-1", 1.0)]
    columns = {column["name"] for column in inspect(get_engine(url)).get_columns("products")}
    assert not columns & {"predicted_label", "model_version", "embedding", "classified_at"}


def test_a_similarity_score_never_leaves_minus_one_to_one(session: Session) -> None:
    """float16 storage rounds an exact match's cosine to 1.000026 (58 % of random
    128-d unit vectors); a score is a cosine, and callers were shown the excess."""
    rng = np.random.default_rng(0)
    rng.normal(size=128)
    query = rng.normal(size=128).astype(np.float32)
    query /= np.linalg.norm(query)
    make_product(session, sku="SAME", category="Trouser", embedding=query, model_version=VERSION)
    ranked = rank_similar(
        session=session,
        probabilities=TROUSER_PROBABILITIES,
        embedding=query,
        model_version=VERSION,
        uncertain=False,
        top_k=1,
    )
    assert [(product.sku, score) for product, score in ranked] == [("SAME", 1.0)]


def test_a_lookup_with_the_default_candidate_list_sends_no_set_config(postgresql_url) -> None:
    """Every PostgreSQL connection starts with the search's settings (``catalog.db``):
    a lookup sends one statement (the search), not two; another ``ef_search`` is set
    for its own transaction only."""
    statements: list[str] = []
    engine = get_engine(postgresql_url)

    def record(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        statements.append(statement)

    with get_sessionmaker(postgresql_url).begin() as session:
        make_product(session, sku="T-near", embedding=unit(1, 0.1, 0), model_version=VERSION)
        assert session.scalar(text("SHOW hnsw.ef_search")) == "100"
        assert session.scalar(text("SHOW hnsw.iterative_scan")) == "relaxed_order"
        event.listen(engine, "before_cursor_execute", record)
        try:
            default = rank(session, TROUSER_PROBABILITIES, unit(1, 0, 0))
            searched_once = [s for s in statements if "set_config" not in s]
            assert len(statements) == len(searched_once) == 1
            wider = rank(session, TROUSER_PROBABILITIES, unit(1, 0, 0), ef_search=400)
        finally:
            event.remove(engine, "before_cursor_execute", record)
        assert sum("set_config" in s for s in statements) == 1 and default == wider
    with get_sessionmaker(postgresql_url)() as session:  # the wider list was local
        assert session.scalar(text("SHOW hnsw.ef_search")) == "100"
