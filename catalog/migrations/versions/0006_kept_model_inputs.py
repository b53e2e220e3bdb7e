"""keep each catalog photo's model input, so a new model re-classifies without fetching

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_input", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("model_input_busy", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("model_input_key", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("model_input_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("preprocess_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        for column in (
            "preprocess_version",
            "model_input_sha256",
            "model_input_key",
            "model_input_busy",
            "model_input",
        ):
            batch_op.drop_column(column)
