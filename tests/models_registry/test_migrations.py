"""`alembic upgrade head` on a fresh database yields exactly the ORM metadata."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from models_registry.migrate import upgrade_head
from models_registry.tables import Base


def _diff(engine):
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)


def _check(engine) -> None:
    upgrade_head(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert _diff(engine) == []
    upgrade_head(engine)  # idempotent: already at head
    assert _diff(engine) == []


def test_upgrade_head_matches_metadata_sqlite(sqlite_engine):
    assert _diff(sqlite_engine) != []  # sanity: an empty database differs from the metadata
    _check(sqlite_engine)


@pytest.mark.integration
def test_upgrade_head_matches_metadata_postgres(pg_engine):
    _check(pg_engine)
