"""Runtime settings, read from `TOPORANK_*` environment variables (one source for API, worker, CLI).

The embedded default needs no servers: SQLite registry, Celery's filesystem broker and a SQLite
result backend, all under `TOPORANK_DATA_DIR`. Production sets the database and broker URLs and
`TOPORANK_ENV=production`, which refuses to start with the development secret.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SECRET = "dev-insecure-change-me"


class Settings(BaseSettings):
    """All knobs of a TopoRank deployment; every field maps to `TOPORANK_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix="TOPORANK_", extra="ignore")

    env: Literal["development", "production"] = "development"
    data_dir: Path = Field(default=Path(".data"), description="Root of the embedded default's files.")
    storage_dir: Path | None = Field(default=None, description="Uploaded archives, checkpoints, cases.")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite under data_dir if unset.")
    broker_url: str | None = Field(default=None, description="Celery broker; filesystem:// under data_dir if unset.")
    result_backend: str | None = Field(default=None, description="Celery results; SQLite under data_dir if unset.")
    secret_key: str = Field(default=DEV_SECRET, description="Pepper for API-key hashes.")
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0)
    max_checkpoint_bytes: int = Field(default=4 * 1024**3, gt=0)
    max_archive_entries: int = Field(default=10_000, gt=0)
    max_compression_ratio: float = Field(default=200.0, gt=1)
    max_extracted_bytes: int = Field(default=20 * 1024**3, gt=0)
    max_case_voxels: int = Field(default=512 * 512 * 1024, gt=0, description="Per NIfTI file, checked from its header.")
    max_pilot_cases: int = Field(default=2000, gt=0)
    max_task_attempts: int = Field(default=3, gt=0, description="Deliveries of one scoring task before it fails.")
    max_finetune_steps: int = Field(default=2000, gt=0, description="Cap on a confirmation's optimiser steps per fold.")
    visibility_timeout_s: int = Field(default=6 * 3600, gt=0, description="Redis redelivery; above the longest task.")
    task_queue: str = Field(default="toporank", min_length=1, max_length=100, description="Celery queue name.")
    quota_storage_bytes: int = Field(default=500 * 1024**3, ge=0, description="Per tenant: bytes of stored pilot sets and models; 0 = no quota.")
    quota_concurrent_rankings: int = Field(default=20, ge=0, description="Per tenant: rankings queued or running at once; 0 = no limit.")
    rate_limit_per_minute: int = Field(default=1200, ge=0, description="Requests per API key and minute; 0 = off.")
    pilot_set_ttl_days: float = Field(default=0.0, ge=0, description="`toporank purge` deletes pilot sets older than this; 0 = keep.")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    broker_poll_s: float = Field(
        default=0.1, gt=0, le=60, description="Embedded default: how often a worker looks for new messages in the filesystem broker.",
    )
    prefetch_next: bool = Field(
        default=True,
        description="A worker loads the next queued model of a ranking (and keeps the pilot set's cases) while it scores the current one.",
    )
    log_level: str = "INFO"
    host: str = "127.0.0.1"
    port: int = 8000

    @model_validator(mode="after")
    def _production_refuses_defaults(self) -> "Settings":
        if self.env == "production":
            if self.secret_key == DEV_SECRET or len(self.secret_key) < 16:
                raise ValueError("TOPORANK_SECRET_KEY must be set to a strong secret (>= 16 chars) in production")
            if self.database_url is None or self.database_url.startswith("sqlite"):
                raise ValueError("TOPORANK_DATABASE_URL must point to PostgreSQL in production")
            if self.broker_url is None or self.broker_url.startswith("filesystem"):
                raise ValueError("TOPORANK_BROKER_URL must point to Redis in production")
        return self

    @property
    def data_root(self) -> Path:
        return self.data_dir.expanduser().resolve()

    @property
    def storage_root(self) -> Path:
        return (self.storage_dir or self.data_root / "storage").expanduser().resolve()

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_root / 'toporank.db'}"

    @property
    def celery_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        """Folder of Celery's filesystem transport (embedded default only)."""
        return self.data_root / "broker"

    @property
    def celery_result_backend(self) -> str:
        return self.result_backend or f"db+sqlite:///{self.data_root / 'celery-results.db'}"

    @property
    def embedded(self) -> bool:
        return self.celery_broker_url.startswith("filesystem")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (tests clear the cache with `get_settings.cache_clear()`)."""
    return Settings()
