"""Stored scores: one row per (pilot set, model, config hash, numeric mode), a duplicate delivery
gets the first row back, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import sessionmaker

from models_registry.migrate import upgrade_head
from models_registry.scores import find_score, score_ids_by_model, store_score
from models_registry.tables import Model, ModelScore, PilotSet, Tenant


def _world(engine):  # type: ignore[no-untyped-def]
    upgrade_head(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    with sessions() as s:
        t = Tenant(name="hospital")
        s.add(t)
        s.flush()
        ps = PilotSet(tenant_id=t.id, name="p", layout="nnunet", labels={"background": 0, "a": 1}, num_foreground=1,
                      channels={"0": "T1"}, storage_path="x")
        models = [Model(tenant_id=t.id, name=f"m{i}", format="nnssl", spec={}, stages=[], checkpoint_path="c", sha256="0" * 64,
                        size_bytes=1, status="ready") for i in range(2)]
        s.add_all([ps, *models])
        s.commit()
        return sessions, ps.id, [m.id for m in models]


def _store(s, ps_id, model_id, grtd, mode="cpu-fp32"):  # type: ignore[no-untyped-def]
    return store_score(s, pilot_set_id=ps_id, model_id=model_id, config_hash="h" * 64, numeric_mode=mode, config={"seed": 0},
                       checkpoint_sha256="0" * 64,
                       code_version="1", grtd=grtd, lbtc=0.5, result={"baselines": {"logme": 1.0}, "timings": {"total": 2.0}})


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_duplicate_delivery_gets_the_first_row(backend, request):  # type: ignore[no-untyped-def]
    engine = request.getfixturevalue("sqlite_engine" if backend == "sqlite" else "pg_engine")
    sessions, ps_id, (m0, m1) = _world(engine)
    with sessions() as s:
        first = _store(s, ps_id, m0, -0.1)
        s.commit()
        assert first.baselines == {"logme": 1.0} and first.timings == {"total": 2.0}
    with sessions() as s:
        again = _store(s, ps_id, m0, -0.9)  # same key: the unique constraint fires, the first row comes back
        s.commit()
        assert again.id == first.id and again.grtd == -0.1
        assert s.query(ModelScore).count() == 1
        assert find_score(s, ps_id, m0, "h" * 64, "cpu-fp32").id == first.id
        assert find_score(s, ps_id, m1, "h" * 64, "cpu-fp32") is None and find_score(s, ps_id, m0, "g" * 64, "cpu-fp32") is None
        assert find_score(s, ps_id, m0, "h" * 64, "cuda-bf16") is None  # computed another way: not the same score
        assert score_ids_by_model(s, ps_id, "h" * 64, "cpu-fp32", [m0, m1]) == {m0: first.id}
        assert score_ids_by_model(s, ps_id, "g" * 64, "cpu-fp32", [m0, m1]) == {}
        assert score_ids_by_model(s, ps_id, "h" * 64, "cuda-bf16", [m0, m1]) == {}
    with sessions() as s:  # the same key in another numeric mode is a second row, not a duplicate
        gpu = _store(s, ps_id, m0, -0.2, mode="cuda-bf16")
        s.commit()
        assert gpu.id != first.id and s.query(ModelScore).count() == 2
        assert find_score(s, ps_id, m0, "h" * 64, "cuda-bf16").grtd == -0.2
