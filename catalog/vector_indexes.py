"""The similar-item indexes of one model version: a partial HNSW graph per category.

Each (model version, category) gets its own partial index over
``product_predictions`` (pgvector, cosine, ``halfvec``), so

- a candidate's fill inserts into no graph: its rows match no index's predicate
  until its fill is complete and ``build_version_indexes`` runs (a 64-product chunk
  took 75 ms with a live graph against 9.8 ms without, docs/rollout.md);
- a lookup walks only the graph of its version and category;
- a retired version's graphs are dropped with ``drop_version_indexes``.

Built with ``CREATE INDEX CONCURRENTLY`` (uploads keep being answered meanwhile),
which cannot run inside a transaction: these functions take an ``Engine`` and use
an autocommit connection of their own. SQLite searches exactly and has none.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, Engine, text

from catalog.codes import CATEGORIES


def version_index_name(version: str, category: str) -> str:
    """``ix_pp_hnsw_<digest of version>_c<category index>``: a version tag may be
    longer than an identifier allows (63) and hold any character."""
    digest = hashlib.sha256(version.encode()).hexdigest()[:16]
    return f"ix_pp_hnsw_{digest}_c{CATEGORIES.index(category)}"


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def version_index_sql(
    version: str, category: str, dimensions: int, *, concurrently: bool = True
) -> str:
    """The partial HNSW index of ``version``'s predictions in ``category``. The
    expression and predicate are those ``catalog.similar`` queries with."""
    return (
        f"CREATE INDEX {'CONCURRENTLY ' if concurrently else ''}IF NOT EXISTS "
        f"{version_index_name(version, category)} ON product_predictions "
        f"USING hnsw ((embedding::halfvec({int(dimensions)})) halfvec_cosine_ops) "
        f"WHERE model_version = {_quoted(version)} AND category = {_quoted(category)}"
    )


def version_dimensions(connection: Connection, version: str) -> int | None:
    """The size of ``version``'s embeddings (``None``: it has embedded nothing)."""
    if connection.dialect.name != "postgresql":
        blob = connection.scalar(
            text(
                "SELECT embedding FROM product_predictions "
                "WHERE model_version = :v AND embedding IS NOT NULL LIMIT 1"
            ),
            {"v": version},
        )
        return None if blob is None else len(blob) // 2
    return connection.scalar(
        text(
            "SELECT vector_dims(embedding) FROM product_predictions "
            "WHERE model_version = :v AND embedding IS NOT NULL LIMIT 1"
        ),
        {"v": version},
    )


def existing_version_indexes(connection: Connection, version: str) -> list[str]:
    """The names of ``version``'s indexes that exist and are valid (a failed
    ``CONCURRENTLY`` build leaves an invalid one behind)."""
    if connection.dialect.name != "postgresql":
        return []
    names = [version_index_name(version, category) for category in CATEGORIES]
    return list(
        connection.scalars(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                "WHERE c.relname = ANY(:names) AND i.indisvalid ORDER BY c.relname"
            ),
            {"names": names},
        )
    )


def build_version_indexes(engine: Engine, version: str, dimensions: int) -> list[str]:
    """Build ``version``'s ten partial indexes (``CONCURRENTLY``; an invalid one left
    by an interrupted build is dropped first), then ``ANALYZE`` the tables its fill
    grew, so the planner costs the lookups with today's row counts; returns their
    names. Nothing on SQLite."""
    if engine.dialect.name != "postgresql":
        return []
    names = []
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        valid = set(existing_version_indexes(connection, version))
        for category in CATEGORIES:
            name = version_index_name(version, category)
            if name not in valid:
                connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
                connection.execute(text(version_index_sql(version, category, dimensions)))
            names.append(name)
        connection.execute(text("ANALYZE products, product_predictions"))
    return names


def drop_version_indexes(engine: Engine, version: str) -> None:
    """Drop ``version``'s indexes (``CONCURRENTLY``). Nothing on SQLite."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        for category in CATEGORIES:
            name = version_index_name(version, category)
            connection.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
