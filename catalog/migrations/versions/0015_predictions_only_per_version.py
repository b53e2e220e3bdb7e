"""products keeps no model outputs: they are product_predictions rows per version

The contract step of the move (docs/rollout.md): every reader now reads
``product_predictions``, so ``products`` drops its prediction columns and their
indexes. On PostgreSQL the similar-item graphs move too: one partial HNSW index per
(model version, category) over ``product_predictions`` (``catalog.vector_indexes``)
is built for every version that has embeddings, before the graphs over ``products``
(migrations 0007 and 0012) are dropped, so the search always has one.

Downgrading copies the live version's predictions (``model_versions``) back.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from catalog.codes import CATEGORIES
from catalog.embeddings import INDEXED_DIMENSIONS, halfvec_type, hnsw_index_name, hnsw_index_sql
from catalog.vector_indexes import version_dimensions, version_index_name, version_index_sql

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

#: The sizes 0007 and 0012 indexed on ``products``.
OLD_SIZES = (INDEXED_DIMENSIONS, 64)
COLUMNS = (
    "predicted_label",
    "predicted_confidence",
    "predicted_probabilities",
    "model_version",
    "embedding",
    "classified_at",
    "classification_error",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        versions = bind.scalars(
            sa.text("SELECT DISTINCT model_version FROM product_predictions ORDER BY 1")
        ).all()
        for version in versions:
            dimensions = version_dimensions(bind, version)
            if dimensions is not None:
                for category in CATEGORIES:
                    op.execute(version_index_sql(version, category, dimensions, concurrently=False))
        for dimensions in OLD_SIZES:
            op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(dimensions)}")
            for index in range(len(CATEGORIES)):
                op.execute(f"DROP INDEX IF EXISTS {hnsw_index_name(dimensions, index)}")
    op.drop_index("ix_products_similar_lookup", table_name="products")
    op.drop_index("ix_products_classified", table_name="products")
    op.drop_index("ix_products_model_version", table_name="products")
    # Plain ALTER TABLE on both engines (SQLite >= 3.35): a batch copy of ``products``
    # on SQLite would DROP the table, and with foreign keys on, that cascades.
    for column in COLUMNS:
        op.execute(f"ALTER TABLE products DROP COLUMN {column}")
    op.create_index("ix_products_category_stock", "products", ["category", "stock_quantity"])


def downgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    op.drop_index("ix_products_category_stock", table_name="products")
    with op.batch_alter_table("products") as batch:
        batch.add_column(sa.Column("predicted_label", sa.Integer()))
        batch.add_column(sa.Column("predicted_confidence", sa.Double()))
        batch.add_column(sa.Column("predicted_probabilities", sa.JSON()))
        batch.add_column(sa.Column("model_version", sa.String(length=100)))
        batch.add_column(sa.Column("embedding", halfvec_type() if postgresql else sa.LargeBinary()))
        batch.add_column(sa.Column("classified_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("classification_error", sa.String(length=64)))
    op.execute(
        "UPDATE products SET predicted_label = p.label, predicted_confidence = p.confidence, "
        "predicted_probabilities = p.probabilities, model_version = p.model_version, "
        "embedding = p.embedding, classified_at = p.classified_at, "
        "classification_error = p.error "
        "FROM product_predictions p JOIN model_versions m ON m.version = p.model_version "
        "WHERE m.state = 'live' AND p.product_id = products.id"
    )
    op.create_index("ix_products_model_version", "products", ["model_version"])
    op.create_index("ix_products_classified", "products", ["model_version", "classified_at"])
    op.create_index(
        "ix_products_similar_lookup", "products", ["category", "model_version", "stock_quantity"]
    )
    if postgresql:
        for dimensions in OLD_SIZES:
            for category in CATEGORIES:
                op.execute(hnsw_index_sql(dimensions, category))
        versions = bind.scalars(sa.text("SELECT DISTINCT model_version FROM product_predictions"))
        for version in versions.all():
            for category in CATEGORIES:
                op.execute(f"DROP INDEX IF EXISTS {version_index_name(version, category)}")
