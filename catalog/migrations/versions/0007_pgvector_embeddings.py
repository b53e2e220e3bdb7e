"""similar items searched by PostgreSQL: embeddings as pgvector halfvec, HNSW index

On PostgreSQL the ``embedding`` column becomes pgvector's ``halfvec`` (the same
float16 values, converted row by row) with one partial HNSW index (cosine) per
category for vectors of 512 dimensions, v1's size (a lookup searches one or two
categories; per category was measured better than one index over all products,
docs/catalog.md). The server must have pgvector (>= 0.8 for iterative
index scans): compose's ``pgvector/pgvector`` image has it. SQLite keeps its
bytes and its exact search: nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

from catalog.codes import CATEGORIES
from catalog.embeddings import DTYPE, halfvec_type, hnsw_index_name, hnsw_index_sql

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BATCH = 5_000
#: The bundled model's embedding size when this migration was written (v1: two
#: members × 256); later sizes get migrations of their own (0012).
INDEXED_DIMENSIONS = 512


def _require_pgvector(bind: sa.Connection) -> None:
    available = bind.scalar(
        sa.text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
    )
    if available is None:
        raise RuntimeError(
            "this PostgreSQL server has no pgvector extension, which the catalog needs for "
            "similar items: install it (Debian: postgresql-16-pgvector) or use an image "
            "that has it (pgvector/pgvector:pg16, as in docker-compose.yml)"
        )
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    _require_pgvector(bind)
    op.add_column("products", sa.Column("embedding_halfvec", halfvec_type(), nullable=True))
    products = sa.table(
        "products",
        sa.column("id", sa.Integer),
        sa.column("embedding", sa.LargeBinary),
        sa.column("embedding_halfvec", halfvec_type()),
    )
    last_id = 0
    while True:
        rows = bind.execute(
            sa.select(products.c.id, products.c.embedding)
            .where(products.c.id > last_id, products.c.embedding.is_not(None))
            .order_by(products.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        bind.execute(
            products.update()
            .where(products.c.id == sa.bindparam("row_id"))
            .values(embedding_halfvec=sa.bindparam("vector")),
            [
                {"row_id": row.id, "vector": np.frombuffer(row.embedding, DTYPE).astype("f4")}
                for row in rows
            ],
        )
        last_id = rows[-1].id
    op.drop_column("products", "embedding")
    op.alter_column("products", "embedding_halfvec", new_column_name="embedding")
    for category in CATEGORIES:
        op.execute(hnsw_index_sql(INDEXED_DIMENSIONS, category))


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    for index in range(len(CATEGORIES)):
        op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(INDEXED_DIMENSIONS, index)}")
    op.add_column("products", sa.Column("embedding_bytes", sa.LargeBinary(), nullable=True))
    products = sa.table(
        "products",
        sa.column("id", sa.Integer),
        sa.column("embedding", halfvec_type()),
        sa.column("embedding_bytes", sa.LargeBinary),
    )
    rows = bind.execute(
        sa.select(products.c.id, products.c.embedding).where(products.c.embedding.is_not(None))
    ).all()
    if rows:
        bind.execute(
            products.update()
            .where(products.c.id == sa.bindparam("row_id"))
            .values(embedding_bytes=sa.bindparam("blob")),
            [
                {"row_id": row.id, "blob": np.asarray(row.embedding, "f4").astype(DTYPE).tobytes()}
                for row in rows
            ],
        )
    op.drop_column("products", "embedding")
    op.alter_column("products", "embedding_bytes", new_column_name="embedding")
