"""bulk re-classification runs; indexes for run progress and similar-item refreshes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reclassify_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("model_version", sa.String(length=100), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("trigger", sa.String(length=32), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("mode IN ('all', 'stale')", name="ck_runs_mode"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_reclassify_runs_model_version", "reclassify_runs", ["model_version"])
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index("ix_products_classified", ["model_version", "classified_at"])
        batch_op.create_index("ix_products_category_updated", ["category", "updated_at"])


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_classified")
        batch_op.drop_index("ix_products_category_updated")
    op.drop_index("ix_reclassify_runs_model_version", table_name="reclassify_runs")
    op.drop_table("reclassify_runs")
