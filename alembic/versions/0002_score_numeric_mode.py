"""Stored scores carry their numeric mode (device kind + precision), part of the reuse key.

Existing rows get the mode their own diagnostics recorded (`device` and `autocast`): a CUDA score
computed under bf16 autocast is `cuda-bf16`, everything else `cpu-fp32`. Rows without diagnostics
get `unknown`, which no worker ever asks for, so they stay readable and are never reused.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 07:00:00
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_scores = sa.table("model_scores", sa.column("id", sa.String), sa.column("result", sa.JSON), sa.column("numeric_mode", sa.String))


def _mode_of(result: Any) -> str:
    if isinstance(result, str):  # some drivers hand JSON back as text
        try:
            result = json.loads(result)
        except ValueError:
            return "unknown"
    diag = (result or {}).get("diagnostics") if isinstance(result, dict) else None
    if not isinstance(diag, dict) or "device" not in diag:
        return "unknown"
    if str(diag["device"]).startswith("cuda"):
        return "cuda-bf16" if diag.get("autocast") == "bf16" else "cuda-fp32"
    return "cpu-fp32"


def upgrade() -> None:
    with op.batch_alter_table("model_scores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("numeric_mode", sa.String(length=16), nullable=True))
    conn = op.get_bind()
    for row_id, result in conn.execute(sa.select(_scores.c.id, _scores.c.result)).all():
        conn.execute(_scores.update().where(_scores.c.id == row_id).values(numeric_mode=_mode_of(result)))
    with op.batch_alter_table("model_scores", schema=None) as batch_op:
        batch_op.alter_column("numeric_mode", existing_type=sa.String(length=16), nullable=False)
        batch_op.drop_constraint("uq_model_scores_key", type_="unique")
        batch_op.create_unique_constraint("uq_model_scores_key", ["pilot_set_id", "model_id", "config_hash", "numeric_mode"])


def downgrade() -> None:
    # Two modes of one key would collide under the old constraint: keep the first row of each key.
    conn = op.get_bind()
    keep: dict[tuple[str, str, str], str] = {}
    t = sa.table("model_scores", sa.column("id", sa.String), sa.column("pilot_set_id", sa.String), sa.column("model_id", sa.String),
                 sa.column("config_hash", sa.String), sa.column("created_at", sa.DateTime))
    for row in conn.execute(sa.select(t.c.id, t.c.pilot_set_id, t.c.model_id, t.c.config_hash).order_by(t.c.created_at, t.c.id)).all():
        key = (row.pilot_set_id, row.model_id, row.config_hash)
        if key in keep:
            conn.execute(t.delete().where(t.c.id == row.id))
        else:
            keep[key] = row.id
    with op.batch_alter_table("model_scores", schema=None) as batch_op:
        batch_op.drop_constraint("uq_model_scores_key", type_="unique")
        batch_op.create_unique_constraint("uq_model_scores_key", ["pilot_set_id", "model_id", "config_hash"])
        batch_op.drop_column("numeric_mode")
