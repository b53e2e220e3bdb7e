"""HNSW indexes for the bundled model's 64-dimensional embeddings (model v2.1)

Migration 0007 indexed v1's 512-d embeddings; v2's pair gave 128-d and v2.1's one
ResNet-20 gives 64-d, which PostgreSQL searched exactly (a sequential scan) for
want of an index. One partial HNSW index (cosine) per category for vectors of 64
dimensions, like 0007's. The 512-d ones stay: they hold no rows once the catalog
is re-classified by the new model, and a model rolled back to v1 finds them.
SQLite searches exactly: nothing to do there.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

from catalog.codes import CATEGORIES
from catalog.embeddings import hnsw_index_name, hnsw_index_sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

DIMENSIONS = 64


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for category in CATEGORIES:
        op.execute(hnsw_index_sql(DIMENSIONS, category))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for index in range(len(CATEGORIES)):
        op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(DIMENSIONS, index)}")
