"""Confirmations (fine-tuning a ranking's top models by cross-validation over its pilot cases) and
calibrations (a tenant's fusion gate fitted on its evaluations).

New tables `finetune_records` (one fine-tune of a model on one fold, reused under the same key),
`confirmations` and `confirmation_items` (one per model and fold); evaluations gain `source`
(`user`, or `confirmation` for the one a finished confirmation records) and `confirmation_id`;
`calibrations` holds each fitted gate with its report.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 13:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "finetune_records",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("pilot_set_id", sa.String(40), nullable=False),
        sa.Column("model_id", sa.String(40), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("device", sa.String(16), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=False),
        sa.Column("dice", sa.Float(), nullable=True),
        sa.Column("per_class", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("code_version", sa.String(32), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.ForeignKeyConstraint(["pilot_set_id"], ["pilot_sets.id"], name="fk_finetune_records_pilot_set_id_pilot_sets", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_finetune_records_model_id_models", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_finetune_records"),
        sa.UniqueConstraint("pilot_set_id", "model_id", "key_hash", "device", name="uq_finetune_records_key"),
    )
    op.create_index("ix_finetune_records_pilot_set_id", "finetune_records", ["pilot_set_id"])
    op.create_index("ix_finetune_records_model_id", "finetune_records", ["model_id"])
    op.create_table(
        "confirmations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("ranking_id", sa.String(40), nullable=False),
        sa.Column("model_ids", sa.JSON(), nullable=False),
        sa.Column("predicted_top", sa.String(40), nullable=True),
        sa.Column("fold_plan", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("expected_cost", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("evaluation_id", sa.String(40), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", _TZ, nullable=False),
        sa.Column("updated_at", _TZ, nullable=False),
        sa.Column("finished_at", _TZ, nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_confirmations_tenant_id_tenants", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["ranking_id"], ["ranking_jobs.id"], name="fk_confirmations_ranking_id_ranking_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_confirmations"),
    )
    op.create_index("ix_confirmations_tenant_id", "confirmations", ["tenant_id"])
    op.create_index("ix_confirmations_ranking_id", "confirmations", ["ranking_id"])
    op.create_table(
        "confirmation_items",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("confirmation_id", sa.String(40), nullable=False),
        sa.Column("model_id", sa.String(40), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64), nullable=True),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("record_id", sa.String(40), nullable=True),
        sa.Column("reused", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_detail", sa.Text(), nullable=True),
        sa.Column("started_at", _TZ, nullable=True),
        sa.Column("finished_at", _TZ, nullable=True),
        sa.Column("heartbeat_at", _TZ, nullable=True),
        sa.ForeignKeyConstraint(
            ["confirmation_id"], ["confirmations.id"], name="fk_confirmation_items_confirmation_id_confirmations", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name="fk_confirmation_items_model_id_models", ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["record_id"], ["finetune_records.id"], name="fk_confirmation_items_record_id_finetune_records", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_confirmation_items"),
        sa.UniqueConstraint("confirmation_id", "model_id", "fold", name="uq_confirmation_items_unit"),
    )
    op.create_index("ix_confirmation_items_confirmation_id", "confirmation_items", ["confirmation_id"])
    op.create_index("ix_confirmation_items_model_id", "confirmation_items", ["model_id"])
    op.create_index("ix_confirmation_items_status", "confirmation_items", ["status"])
    op.create_table(
        "calibrations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("evaluation_ids", sa.JSON(), nullable=False),
        sa.Column("created_at", _TZ, nullable=False),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name="fk_calibrations_tenant_id_tenants", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_calibrations"),
    )
    op.create_index("ix_calibrations_tenant_id", "calibrations", ["tenant_id"])
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="user"))
        batch_op.add_column(sa.Column("confirmation_id", sa.String(40), nullable=True))
        batch_op.create_foreign_key(
            "fk_evaluations_confirmation_id_confirmations", "confirmations", ["confirmation_id"], ["id"], ondelete="SET NULL"
        )


def downgrade() -> None:
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_constraint("fk_evaluations_confirmation_id_confirmations", type_="foreignkey")
        batch_op.drop_column("confirmation_id")
        batch_op.drop_column("source")
    op.drop_table("calibrations")
    op.drop_table("confirmation_items")
    op.drop_table("confirmations")
    op.drop_table("finetune_records")
