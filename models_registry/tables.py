"""Registry tables (architecture.md "Registry entities"); alembic migrations mirror this module.

Ids are opaque prefixed tokens (`mdl_…`, `ps_…`, `rk_…`); times are timezone-aware UTC. A model
with `tenant_id` NULL belongs to the shared zoo and is visible to every tenant (read-only).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

MODEL_STATUSES = ("validating", "ready", "invalid")
JOB_STATUSES = ("queued", "running", "succeeded", "partial", "failed", "cancelled")
ITEM_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL_ITEM = frozenset({"succeeded", "failed", "cancelled"})
TERMINAL_JOB = frozenset({"succeeded", "partial", "failed", "cancelled"})


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    """An opaque, unguessable id such as `ps_3f9c…` (96 random bits)."""
    return f"{prefix}_{secrets.token_hex(12)}"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Tenant(Base):
    __tablename__ = "tenants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("tn"))
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ApiKey(Base):
    """An API key, stored as HMAC-SHA256(secret_key, key); `prefix` is shown to admins only."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("key"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Model(Base):
    """A candidate encoder: validated spec, stored checkpoint, and the worker's load verdict."""

    __tablename__ = "models"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("mdl"))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), nullable=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(32))
    catalog: Mapped[str | None] = mapped_column(String(200), nullable=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    stages: Mapped[list[Any]] = mapped_column(JSON)
    checkpoint_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="validating")
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    load_report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    validated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class PilotSet(Base):
    """A labelled pilot set; cases live under per-tenant storage, `storage_path` is relative."""

    __tablename__ = "pilot_sets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ps"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="ready")
    layout: Mapped[str] = mapped_column(String(16))
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    num_foreground: Mapped[int] = mapped_column(Integer)
    channels: Mapped[dict[str, Any]] = mapped_column(JSON)
    storage_path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    cases: Mapped[list["PilotCase"]] = relationship(
        back_populates="pilot_set", cascade="all, delete-orphan", passive_deletes=True, order_by="PilotCase.position"
    )


class PilotCase(Base):
    __tablename__ = "pilot_cases"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("case"))
    pilot_set_id: Mapped[str] = mapped_column(ForeignKey("pilot_sets.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    shape: Mapped[list[Any]] = mapped_column(JSON)
    spacing: Mapped[list[Any]] = mapped_column(JSON)
    voxels_per_class: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_channels: Mapped[int] = mapped_column(Integer)
    pilot_set: Mapped[PilotSet] = relationship(back_populates="cases")


class RankingJob(Base):
    __tablename__ = "ranking_jobs"
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_ranking_jobs_idempotency"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("rk"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    pilot_set_id: Mapped[str] = mapped_column(ForeignKey("pilot_sets.id", ondelete="CASCADE"), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(64))
    fusion: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    items: Mapped[list["RankingItem"]] = relationship(
        back_populates="job", cascade="all, delete-orphan", passive_deletes=True, order_by="RankingItem.position"
    )


class RankingItem(Base):
    """One (ranking, model) unit of work: one Celery task, its progress and its score row."""

    __tablename__ = "ranking_items"
    __table_args__ = (UniqueConstraint("ranking_id", "model_id", name="uq_ranking_items_ranking_model"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("it"))
    ranking_id: Mapped[str] = mapped_column(ForeignKey("ranking_jobs.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    score_id: Mapped[str | None] = mapped_column(ForeignKey("model_scores.id", ondelete="SET NULL"), nullable=True)
    reused: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    job: Mapped[RankingJob] = relationship(back_populates="items")
    score: Mapped["ModelScore | None"] = relationship()


class ModelScore(Base):
    """Raw per-model scores, unique on (pilot set, model, config hash, numeric mode) and reused
    across rankings; `numeric_mode` is transferability.config.numeric_mode (e.g. `cuda-bf16`)."""

    __tablename__ = "model_scores"
    __table_args__ = (
        UniqueConstraint("pilot_set_id", "model_id", "config_hash", "numeric_mode", name="uq_model_scores_key"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("sc"))
    pilot_set_id: Mapped[str] = mapped_column(ForeignKey("pilot_sets.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    config_hash: Mapped[str] = mapped_column(String(64))
    numeric_mode: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    grtd: Mapped[float] = mapped_column(Float)
    lbtc: Mapped[float] = mapped_column(Float)
    baselines: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Per-replicate raw GRTD and LBTC over half-samples of the pilot cases (transferability.bootstrap),
    # fused at read time; kept out of `result` so that listing rankings does not carry them.
    replicates: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    checkpoint_sha256: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Evaluation(Base):
    """A ranking compared with fine-tuning truth: the user's (`source` user) or the one a finished
    confirmation recorded itself (`source` confirmation, `confirmation_id` set)."""

    __tablename__ = "evaluations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ev"))
    ranking_id: Mapped[str] = mapped_column(ForeignKey("ranking_jobs.id", ondelete="CASCADE"), index=True)
    truth: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(16), default="user", server_default="user")
    confirmation_id: Mapped[str | None] = mapped_column(ForeignKey("confirmations.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class FinetuneRecord(Base):
    """One fine-tuning run of a model on one fold of a pilot set (worker.finetune): held-out Dice.

    Unique on (pilot set, model, key hash, device): the key hashes the fold plan, the fold, the
    fine-tune config (steps, seed included) and the fine-tune code version, so a later
    confirmation asking for the same thing reuses the row; `device` (`cpu`, `cuda`) is where it ran."""

    __tablename__ = "finetune_records"
    __table_args__ = (UniqueConstraint("pilot_set_id", "model_id", "key_hash", "device", name="uq_finetune_records_key"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("ft"))
    pilot_set_id: Mapped[str] = mapped_column(ForeignKey("pilot_sets.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64))
    device: Mapped[str] = mapped_column(String(16))
    fold: Mapped[int] = mapped_column(Integer)
    dice: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: no class defined on the test cases
    per_class: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any]] = mapped_column(JSON)  # FinetuneResult.to_dict(): per case, losses, seconds, recipe
    code_version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Confirmation(Base):
    """Fine-tuning of some of a ranking's models by cross-validation over its pilot cases.

    `fold_plan` lists each fold's held-out case positions; the status is derived from the items
    (one per model and fold) like a ranking's. When every item has finished the worker records an
    Evaluation (truth = mean held-out Dice) or, with fewer than two models, says why in `note`."""

    __tablename__ = "confirmations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cf"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    ranking_id: Mapped[str] = mapped_column(ForeignKey("ranking_jobs.id", ondelete="CASCADE"), index=True)
    model_ids: Mapped[list[Any]] = mapped_column(JSON)
    predicted_top: Mapped[str | None] = mapped_column(String(40), nullable=True)
    fold_plan: Mapped[list[Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # FinetuneConfig.to_dict() with the base seed
    expected_cost: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    evaluation_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    items: Mapped[list["ConfirmationItem"]] = relationship(
        back_populates="confirmation", cascade="all, delete-orphan", passive_deletes=True, order_by="ConfirmationItem.position"
    )


class ConfirmationItem(Base):
    """One (confirmation, model, fold) unit of work: one Celery task, its progress and its record."""

    __tablename__ = "confirmation_items"
    __table_args__ = (UniqueConstraint("confirmation_id", "model_id", "fold", name="uq_confirmation_items_unit"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cfi"))
    confirmation_id: Mapped[str] = mapped_column(ForeignKey("confirmations.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    fold: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    key_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(64), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    record_id: Mapped[str | None] = mapped_column(ForeignKey("finetune_records.id", ondelete="SET NULL"), nullable=True)
    reused: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    confirmation: Mapped[Confirmation] = relationship(back_populates="items")
    record: Mapped["FinetuneRecord | None"] = relationship()


class CalibrationRecord(Base):
    """A tenant's fusion gate fitted on its own evaluations (transferability.calibration): the gate
    (`params`: Calibration.to_dict()) and the report of how it did (in sample, leave-one-out)."""

    __tablename__ = "calibrations"
    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=lambda: new_id("cal"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
    evaluation_ids: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


Index("ix_ranking_items_status", RankingItem.status)
Index("ix_models_status", Model.status)
Index("ix_confirmation_items_status", ConfirmationItem.status)
