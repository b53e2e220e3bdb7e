"""shadow_predictions: what a staged candidate said of an upload the live version answered

A share of uploads (``FASHION_SHADOW_SHARE``) is classified by the staged candidate
too, after the live answer is committed; its label, confidence, flag and top
similar SKUs are kept here beside the job's own, the evidence for a promote
(``fashion model list``). ``model_versions.engine_timings`` keeps what ``fashion
model stage`` measured of each engine on the serving host.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "shadow_predictions",
        sa.Column(
            "job_id",
            sa.Uuid(),
            sa.ForeignKey("classification_jobs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model_version", sa.String(length=100), primary_key=True),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("uncertain", sa.Boolean(), nullable=False),
        sa.Column("similar_skus", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index(
        "ix_shadow_predictions_version", "shadow_predictions", ["model_version", "created_at"]
    )
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("engine_timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("engine_timings")
    op.drop_index("ix_shadow_predictions_version", table_name="shadow_predictions")
    op.drop_table("shadow_predictions")
