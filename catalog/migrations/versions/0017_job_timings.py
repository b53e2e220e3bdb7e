"""classification_jobs.timings: where an upload's time went, stage by stage

The worker records, for each upload it finishes ``done``, the milliseconds of each
stage: ``queued`` (row created → claimed by a worker), ``fetch``, ``preprocess``
(decode + prepare), ``inference`` (its share of the batch's), ``similar`` (its
similar-item search) and ``write`` (its result and similar items, up to
``finished_at``). They add up to ``created_at`` → ``finished_at``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both engines (a batch copy on SQLite would rebuild the table).
    op.add_column("classification_jobs", sa.Column("timings", sa.JSON(), nullable=True))


def downgrade() -> None:
    # SQLite drops a column in place (3.35+); a batch copy would drop the table, and
    # with foreign keys on, the rows that refer to it.
    op.drop_column("classification_jobs", "timings")
