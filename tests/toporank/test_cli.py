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
    assert "re-queued 0 ranking item(s) and 0 model validation(s)" in out.stdout


def test_unknown_command_is_a_usage_error(tmp_path):
    out = _run(["frobnicate"], tmp_path)
    assert out.returncode == 2 and "invalid choice" in out.stderr
