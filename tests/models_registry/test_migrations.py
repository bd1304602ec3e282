"""`alembic upgrade head` on a fresh database yields exactly the ORM metadata; data migrations keep rows."""

from __future__ import annotations

import json

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

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


def _at_0001_with_scores(engine) -> None:
    """A registry at revision 0001 holding three scores: CPU, CUDA bf16, and one without diagnostics."""
    from alembic import command

    from models_registry.migrate import alembic_config

    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('tn', 't', CURRENT_TIMESTAMP)"))
        conn.execute(text("INSERT INTO pilot_sets (id, tenant_id, name, status, layout, labels, num_foreground, channels, storage_path, "
                          "created_at) VALUES ('ps', 'tn', 'p', 'ready', 'nnunet', '{}', 1, '{}', 'x', CURRENT_TIMESTAMP)"))
        for i in range(3):
            conn.execute(text("INSERT INTO models (id, tenant_id, name, format, spec, stages, checkpoint_path, sha256, size_bytes, "
                              f"status, created_at) VALUES ('m{i}', 'tn', 'm', 'nnssl', '{{}}', '[]', 'c', 's', 1, 'ready', CURRENT_TIMESTAMP)"))
        results = [{"diagnostics": {"device": "cpu", "autocast": "fp32"}}, {"diagnostics": {"device": "cuda", "autocast": "bf16"}}, {}]
        for i, result in enumerate(results):
            conn.execute(
                text("INSERT INTO model_scores (id, pilot_set_id, model_id, config_hash, config, grtd, lbtc, baselines, result, timings, "
                     "checkpoint_sha256, code_version, created_at) VALUES (:id, 'ps', :m, 'h', '{}', -0.1, 0.5, '{}', :r, '{}', 's', '1', "
                     "CURRENT_TIMESTAMP)"),
                {"id": f"sc{i}", "m": f"m{i}", "r": json.dumps(result)},
            )


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def test_0002_backfills_the_numeric_mode_from_each_scores_diagnostics(backend, request):
    engine = request.getfixturevalue("sqlite_engine" if backend == "sqlite" else "pg_engine")
    _at_0001_with_scores(engine)
    upgrade_head(engine)
    with engine.connect() as conn:
        modes = dict(conn.execute(text("SELECT id, numeric_mode FROM model_scores ORDER BY id")).all())
    assert modes == {"sc0": "cpu-fp32", "sc1": "cuda-bf16", "sc2": "unknown"}
    with engine.connect() as conn:  # 0003: rows scored before the bootstrap have no replicates
        assert conn.execute(text("SELECT replicates FROM model_scores")).scalars().all() == [None, None, None]
    assert _diff(engine) == []
