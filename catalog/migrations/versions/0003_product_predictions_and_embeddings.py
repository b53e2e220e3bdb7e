"""product predictions and embeddings

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "updated_at",
                sa.DateTime(timezone=True),
                server_default=sa.func.now(),
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("predicted_label", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("predicted_confidence", sa.Double(), nullable=True))
        batch_op.add_column(sa.Column("model_version", sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column("embedding", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("classified_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("classification_error", sa.String(length=64), nullable=True))
        batch_op.create_index(
            batch_op.f("ix_products_model_version"), ["model_version"], unique=False
        )
        batch_op.create_index(
            "ix_products_similar_lookup",
            ["category", "model_version", "stock_quantity"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index("ix_products_similar_lookup")
        batch_op.drop_index(batch_op.f("ix_products_model_version"))
        batch_op.drop_column("classification_error")
        batch_op.drop_column("classified_at")
        batch_op.drop_column("embedding")
        batch_op.drop_column("model_version")
        batch_op.drop_column("predicted_confidence")
        batch_op.drop_column("predicted_label")
        batch_op.drop_column("updated_at")
