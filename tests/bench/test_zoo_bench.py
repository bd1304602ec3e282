"""The zoo ranking benchmark (bench/zoo.py) at its smallest: two demo models (two pretraining steps),
two pilot cases, a small scoring config, the three arms (before, prefetch off, on) through a real
`toporank serve` each. Checks the report's structure, that its figures agree with one another, and
that the worker took the items in order and used the model loaded ahead; not a speed target."""

from __future__ import annotations

import json
import math
from pathlib import Path

import psutil
import pytest

from bench import zoo
from tests.integration.services import PG_SERVER
from tests.integration.services import REDIS as REDIS_SERVER

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SMALL = ["--models", "2", "--cases", "2", "--pretrain-steps", "2", "--pretrain-bank", "2",
         "--config", json.dumps({"n_samples": 256, "n_anchors": 32, "n_bootstrap": 20})]
ARM_KEYS = {"arm", "prefetch_next", "repeat", "setup_s", "e2e_s", "first_ranking_s", "n_models", "sum_model_total_s",
            "sum_task_total_s", "sum_load_s", "load_share", "dispatch_overhead_s", "n_prefetched", "run_order", "other_cpu_s", "host_steal_s",
            "first_taken_load_s",
            "leftover_processes", "models"}


def _service_processes(work_dir: str) -> list[str]:
    """Running `toporank.cli` processes whose data dir lies under `work_dir` (the bench's services)."""
    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if "toporank.cli" in " ".join(p.info["cmdline"] or []) and p.environ().get("TOPORANK_DATA_DIR", "").startswith(work_dir):
                out.append(" ".join(p.info["cmdline"]))
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            pass
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = str(tmp_path_factory.mktemp("bench-zoo"))
    out = zoo.run(zoo.parse_args([*SMALL, "--work-dir", work, "--before"]))
    out["_service_processes_after"] = _service_processes(work)
    return json.loads(json.dumps(out))  # what main prints: plain JSON


def test_report_has_both_arms_and_every_field(report: dict) -> None:
    assert set(report) >= {"machine", "options", "inputs", "arms", "comparison"}
    assert report["machine"]["cpus"] >= 1 and report["machine"]["platform"]
    assert [a["arm"] for a in report["arms"]] == ["before", "off", "on"]
    assert [a["prefetch_next"] for a in report["arms"]] == [False, False, True]
    assert report["inputs"]["models"] == ["demo-resenc-mae", "demo-resenc-genesis"] and report["inputs"]["n_cases"] == 2
    for arm in report["arms"]:
        assert set(arm) >= ARM_KEYS
        assert arm["n_models"] == len(arm["models"]) == 2
        for row in arm["models"]:
            assert row["status"] == "succeeded" and not row["reused"]
            for key in zoo.TIMING_KEYS:
                assert isinstance(row[key], float) and row[key] >= 0, (key, row)
            assert 0 <= row["started_s"] <= row["finished_s"]
        assert sorted(arm["run_order"]) == sorted(r["model"] for r in arm["models"])
    before, off, on = report["arms"]
    for arm in (before, off):
        assert arm["n_prefetched"] == 0 and not any(r["prefetched"] or r["prefetch_background_s"] for r in arm["models"])
    # the filesystem broker delivered in the order sent, so the worker had loaded each next model ahead
    assert all(arm["run_order"] == report["inputs"]["models"] for arm in report["arms"])
    assert on["n_prefetched"] == on["n_models"] - 1  # all but the first, which has nothing loaded beside it
    assert [r["prefetched"] for r in on["models"]] == [False, True]


def test_figures_agree_with_the_rows(report: dict) -> None:
    for arm in report["arms"]:
        rows = arm["models"]
        assert arm["sum_model_total_s"] == pytest.approx(sum(r["total"] for r in rows), abs=2e-3)
        assert arm["sum_task_total_s"] == pytest.approx(sum(r["task_total_s"] for r in rows), abs=2e-3)
        assert arm["sum_load_s"] == pytest.approx(sum(r["load"] for r in rows), abs=2e-3)
        assert arm["load_share"] == pytest.approx(arm["sum_load_s"] / arm["sum_model_total_s"], abs=1e-3)
        assert arm["dispatch_overhead_s"] == pytest.approx(arm["e2e_s"] - arm["sum_task_total_s"], abs=2e-3)
        assert arm["e2e_s"] >= max(r["total"] for r in rows)
        assert arm["e2e_s"] >= max(r["finished_s"] for r in rows) - min(r["started_s"] for r in rows) - 0.5  # DB vs bench clock
        assert arm["first_ranking_s"] > 0 and arm["other_cpu_s"] >= 0 and arm["host_steal_s"] >= 0


def test_comparison_is_consistent(report: dict) -> None:
    c = report["comparison"]
    before, off, on = report["arms"]
    assert c["e2e_off_s"] == off["e2e_s"] and c["e2e_on_s"] == on["e2e_s"] and c["load_off_s"] == off["sum_load_s"]
    assert c["e2e_before_s"] == before["e2e_s"]
    assert c["saved_s"] == pytest.approx(c["e2e_off_s"] - c["e2e_on_s"], abs=2e-3)
    assert c["saved_vs_before_s"] == pytest.approx(c["e2e_before_s"] - c["e2e_on_s"], abs=2e-3)
    assert c["target_met"] == (c["e2e_off_s"] - c["e2e_on_s"] >= c["load_off_s"])
    first = min(off["models"], key=lambda r: r["started_s"])
    assert c["load_hideable_off_s"] == pytest.approx(off["sum_load_s"] - first["load"], abs=2e-3)
    assert c["hideable_met"] == (c["e2e_off_s"] - c["e2e_on_s"] >= c["load_hideable_off_s"])
    assert math.isclose(c["ratio_on_over_off"], on["e2e_s"] / off["e2e_s"], abs_tol=1e-3)


def test_no_service_process_left_behind(report: dict) -> None:
    assert all(arm["leftover_processes"] == [] for arm in report["arms"])
    assert report["_service_processes_after"] == []


PG, REDIS = PG_SERVER, REDIS_SERVER  # the servers every PostgreSQL + Redis test uses (.ci/run starts them)


def _bench_leftovers_on_servers() -> tuple[list[str], list[bytes]]:
    """The bench's databases on the PostgreSQL server and its queues' keys on Redis."""
    import redis
    from sqlalchemy import create_engine, text

    engine = create_engine(PG)
    try:
        with engine.connect() as conn:
            dbs = list(conn.execute(text("SELECT datname FROM pg_database WHERE datname LIKE 'toporank_bench_%'")).scalars())
    finally:
        engine.dispose()
    r = redis.Redis.from_url(REDIS)
    try:
        return dbs, list(r.scan_iter(match="*toporank-bench-*"))
    finally:
        r.close()


def test_postgres_and_redis_arms_run_and_clean_up(tmp_path: Path) -> None:
    """`--database-url` / `--broker-url`: serve on a fresh database per arm and its own queue, all removed after."""
    before = _bench_leftovers_on_servers()
    out = zoo.run(zoo.parse_args([*SMALL, "--work-dir", str(tmp_path), "--database-url", PG, "--broker-url", REDIS,
                                   "--keep-service-dirs"]))
    assert [a["arm"] for a in out["arms"]] == ["off", "on"]
    for arm in out["arms"]:
        assert [r["status"] for r in arm["models"]] == ["succeeded", "succeeded"] and arm["leftover_processes"] == []
        assert all(r["started_s"] is not None for r in arm["models"])  # read from the arm's PostgreSQL database
    assert _bench_leftovers_on_servers() == before
    assert _service_processes(str(tmp_path)) == []
    service_dirs = list((tmp_path / "runs").iterdir())
    assert len(service_dirs) == 2 and all((d / "serve.log").is_file() for d in service_dirs)
    assert not list(tmp_path.rglob("*.db"))  # neither the registry nor the result backend was the embedded SQLite
