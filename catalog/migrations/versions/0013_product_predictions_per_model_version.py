"""product_predictions: a product's model outputs per model version (the expand step)

A model's outputs for a product (label, confidence, probabilities, embedding, when,
error) get a table keyed by (product, model version), so a candidate model can fill
its own rows while the live model's stay searchable (docs/rollout.md). Today's
outputs are copied over as they are: nothing is classified again. The columns in
``products`` stay, and every write goes to both, until the readers move over.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from catalog.codes import CATEGORIES
from catalog.embeddings import halfvec_type

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_CATEGORY_LIST = ", ".join("'" + category.replace("'", "''") + "'" for category in CATEGORIES)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "product_predictions",
        sa.Column(
            "product_id",
            sa.Integer(),
            sa.ForeignKey("products.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("model_version", sa.String(length=100), primary_key=True),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("embedding", halfvec_type() if postgresql else sa.LargeBinary(), nullable=True),
        sa.Column("classified_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.CheckConstraint(
            f"category IN ({_CATEGORY_LIST})", name="ck_product_predictions_category"
        ),
    )
    op.create_index(
        "ix_product_predictions_version_category",
        "product_predictions",
        ["model_version", "category"],
    )
    op.execute(
        "INSERT INTO product_predictions (product_id, model_version, category, label, "
        "confidence, probabilities, embedding, classified_at, error) "
        "SELECT id, model_version, category, predicted_label, predicted_confidence, "
        "predicted_probabilities, embedding, classified_at, classification_error "
        "FROM products WHERE model_version IS NOT NULL AND classified_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_product_predictions_version_category", table_name="product_predictions")
    op.drop_table("product_predictions")
