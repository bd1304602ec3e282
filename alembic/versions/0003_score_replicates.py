"""Stored scores carry their bootstrap replicates (per-replicate raw GRTD and LBTC over half-samples
of the pilot cases), fused at read time into intervals and rank probabilities.

Rows stored before have none (NULL): a ranking over them reports its uncertainty as unavailable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("replicates", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_scores", schema=None) as batch_op:
        batch_op.drop_column("replicates")
