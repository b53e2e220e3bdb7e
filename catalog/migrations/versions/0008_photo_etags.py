"""nightly runs find changed photos: products keep the photo's version tag, runs say why

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.add_column(sa.Column("photo_etag", sa.String(length=128), nullable=True))
    with op.batch_alter_table("reclassify_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reasons", sa.JSON(), nullable=True))
        batch_op.drop_constraint("ck_runs_mode", type_="check")
        batch_op.create_check_constraint("ck_runs_mode", "mode IN ('all', 'stale', 'changed')")


def downgrade() -> None:
    op.execute("DELETE FROM reclassify_runs WHERE mode = 'changed'")
    with op.batch_alter_table("reclassify_runs", schema=None) as batch_op:
        batch_op.drop_constraint("ck_runs_mode", type_="check")
        batch_op.create_check_constraint("ck_runs_mode", "mode IN ('all', 'stale')")
        batch_op.drop_column("reasons")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_column("photo_etag")
