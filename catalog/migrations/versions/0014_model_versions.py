"""model_versions: which model answers uploads is a row, not a setting

One row per registered model version, with its state (``candidate``, ``live``,
``retired``; one live at a time), its engine, where its artifact is and its card
(docs/rollout.md). The table starts empty: the configured model registers itself
as live on a worker's or the CLI's first start, so an upgraded catalog keeps
answering with the model that embedded it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from catalog.codes import ModelState

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_STATES = ", ".join(f"'{state.value}'" for state in ModelState)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(length=100), primary_key=True),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("artifact", sa.String(length=512), nullable=False),
        sa.Column("card", sa.JSON(), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("indexed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("promoted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("promoted_by", sa.String(length=100), nullable=True),
        sa.Column("retired_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(f"state IN ({_STATES})", name="ck_model_versions_state"),
    )
    op.create_index(
        "uq_model_versions_one_live",
        "model_versions",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'live'"),
        sqlite_where=sa.text("state = 'live'"),
    )


def downgrade() -> None:
    op.drop_index("uq_model_versions_one_live", table_name="model_versions")
    op.drop_table("model_versions")
