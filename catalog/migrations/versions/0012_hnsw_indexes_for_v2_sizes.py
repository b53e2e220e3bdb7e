"""HNSW indexes for model v2's embedding sizes: 128 (the shipped pair) and 64 (one net)

Migration 0007 indexed v1's 512-d embeddings; v2's pair of ResNet-20s gives 128-d,
which PostgreSQL searched exactly (a sequential scan) for want of an index, and a
single ResNet-20 (issue 20's candidates) gives 64-d. One partial HNSW index
(cosine) per category for each size, like 0007's. The 512-d ones stay: they hold
no rows once the catalog is re-classified, and a model rolled back to v1 finds
them. SQLite searches exactly: nothing to do there.

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

SIZES = (128, 64)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for dimensions in SIZES:
        for category in CATEGORIES:
            op.execute(hnsw_index_sql(dimensions, category))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for dimensions in SIZES:
        for index in range(len(CATEGORIES)):
            op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(dimensions, index)}")
