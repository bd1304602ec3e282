"""The `toporank` command line on the embedded default (fresh data dir, no servers)."""

import os
import subprocess
import sys


def _run(args, data_dir):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env["TOPORANK_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "toporank.cli", *args], env=env, capture_output=True, text=True, timeout=120)


def test_migrate_create_tenant_and_requeue_on_a_fresh_data_dir(tmp_path):
    assert _run(["migrate"], tmp_path).returncode == 0
    assert (tmp_path / "toporank.db").is_file()
    made = _run(["create-tenant", "clinic-a"], tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip().splitlines()[-1]
    assert len(key) >= 32 and key not in made.stderr
    again = _run(["create-tenant", "clinic-a"], tmp_path)
    assert again.stdout.strip() != made.stdout.strip()  # a new key every time, never a stored one
    out = _run(["requeue"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "re-queued 0 ranking item(s), 0 confirmation fold(s) and 0 model validation(s)" in out.stdout


def test_unknown_command_is_a_usage_error(tmp_path):
    out = _run(["frobnicate"], tmp_path)
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_create_tenant_on_a_fresh_data_dir_migrates_the_embedded_registry(tmp_path):
    """No `migrate` first: the embedded SQLite registry is created on the spot (was a raw
    `no such table: tenants` traceback)."""
    made = _run(["create-tenant", "clinic-a"], tmp_path / "fresh")
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "fresh" / "toporank.db").is_file() and "Traceback" not in made.stderr


def _fresh_pg_database():  # type: ignore[no-untyped-def]
    import secrets

    from sqlalchemy import create_engine, text

    server = os.environ.get("TOPORANK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"toporank_cli_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return admin, name, server.rsplit("/", 1)[0] + f"/{name}"


def test_a_server_registry_behind_the_schema_gets_one_line_not_a_traceback(tmp_path, monkeypatch):
    from sqlalchemy import text

    admin, name, url = _fresh_pg_database()
    try:
        monkeypatch.setenv("TOPORANK_DATABASE_URL", url)
        env_run = lambda args: subprocess.run(  # noqa: E731
            [sys.executable, "-m", "toporank.cli", *args], capture_output=True, text=True, timeout=120,
            env={**{k: v for k, v in os.environ.items() if k != "TOPORANK_DATA_DIR"}, "TOPORANK_DATA_DIR": str(tmp_path)},
        )
        for command in (["create-tenant", "clinic-a"], ["requeue"]):
            out = env_run(command)
            assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
            assert out.stderr.strip().splitlines() == [
                "toporank: the registry database is not at the current schema; run `toporank migrate` first"]
        assert env_run(["migrate"]).returncode == 0  # never migrated behind the operator's back, but on request
        made = env_run(["create-tenant", "clinic-a"])
        assert made.returncode == 0, made.stderr
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_an_unreachable_server_registry_gets_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TOPORANK_DATABASE_URL", "postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nothing")
    out = subprocess.run([sys.executable, "-m", "toporank.cli", "create-tenant", "x"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TOPORANK_DATA_DIR": str(tmp_path)})
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert out.stderr.startswith("toporank: cannot open the registry database (OperationalError)") and "s3cret" not in out.stderr


def test_serve_pins_an_auto_device_for_the_api_and_its_worker(monkeypatch):
    """`serve` resolves TOPORANK_DEVICE=auto once, so its API knows the numeric mode of the scores to reuse."""
    import torch

    from toporank.cli import _pin_device
    from toporank.settings import get_settings

    monkeypatch.setenv("TOPORANK_DEVICE", "auto")
    get_settings.cache_clear()
    try:
        pinned = _pin_device(get_settings())
        want = "cuda" if torch.cuda.is_available() else "cpu"
        assert pinned.device == want and os.environ["TOPORANK_DEVICE"] == want and get_settings().device == want
    finally:
        get_settings.cache_clear()
