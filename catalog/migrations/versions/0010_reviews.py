"""the review loop: reviews, reviewer sessions, key scopes, products' reviewed category
and predicted probabilities

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

CATEGORIES = (
    "'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', "
    "'Bag', 'Ankle boot'"
)


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", sa.String(length=16), nullable=False, server_default="backend")
        )
        batch_op.create_check_constraint("ck_api_keys_scope", "scope IN ('backend', 'reviewer')")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("predicted_probabilities", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("reviewed_category", sa.String(length=32), nullable=True))
        batch_op.create_check_constraint(
            "ck_products_reviewed_category",
            f"reviewed_category IN ({CATEGORIES}, 'out of catalog')",
        )
    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("image_key", sa.String(length=512), nullable=False),
        sa.Column("reviewer_id", sa.Integer(), nullable=True),
        sa.Column("reviewer_name", sa.String(length=100), nullable=False),
        sa.Column("answer", sa.String(length=16), nullable=False),
        sa.Column("label", sa.Integer(), nullable=True),
        sa.Column("model_label", sa.Integer(), nullable=True),
        sa.Column("model_version", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "answer IN ('label', 'out_of_catalog', 'skip')", name="ck_reviews_answer"
        ),
        sa.CheckConstraint("(job_id IS NULL) <> (product_id IS NULL)", name="ck_reviews_one_item"),
        sa.CheckConstraint(
            "(answer = 'label') = (label IS NOT NULL)", name="ck_reviews_label_with_answer"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["classification_jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["reviewer_id"], ["api_keys.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("job_id", "reviewer_id", name="uq_reviews_job_reviewer"),
        sa.UniqueConstraint("product_id", "image_key", "reviewer_id", name="uq_reviews_product"),
    )
    op.create_index("ix_reviews_job_id", "reviews", ["job_id"])
    op.create_index("ix_reviews_product_id", "reviews", ["product_id"])
    op.create_index("ix_reviews_reviewer_id", "reviews", ["reviewer_id"])
    op.create_index("ix_reviews_created_at", "reviews", ["created_at"])
    op.create_index(
        "ix_jobs_flagged",
        "classification_jobs",
        ["created_at"],
        postgresql_where=sa.text("status = 'done' AND uncertain"),
        sqlite_where=sa.text("status = 'done' AND uncertain"),
    )
    op.create_table(
        "review_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("api_key_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )


def downgrade() -> None:
    op.drop_table("review_sessions")
    op.drop_index("ix_jobs_flagged", table_name="classification_jobs")
    op.drop_index("ix_reviews_created_at", table_name="reviews")
    op.drop_index("ix_reviews_reviewer_id", table_name="reviews")
    op.drop_index("ix_reviews_product_id", table_name="reviews")
    op.drop_index("ix_reviews_job_id", table_name="reviews")
    op.drop_table("reviews")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_constraint("ck_products_reviewed_category", type_="check")
        batch_op.drop_column("reviewed_category")
        batch_op.drop_column("predicted_probabilities")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint("ck_api_keys_scope", type_="check")
        batch_op.drop_column("scope")
