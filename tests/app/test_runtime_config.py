"""Process-level guarantees: the API never imports torch; Celery is set up for long GPU tasks;
the CLI's commands exist and create-tenant prints a working key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from toporank.cli import build_parser, worker_argv
from toporank.settings import Settings
from worker.celery_app import celery_config

REPO = Path(__file__).resolve().parents[2]


def test_api_and_task_modules_do_not_import_torch(tmp_path):
    code = (
        "import sys, os\n"
        "from app.main import create_app\n"
        "import worker.tasks, worker.celery_app, app.dispatch\n"
        "create_app()\n"
        "print('torch' in sys.modules, 'monai' in sys.modules)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "TOPORANK_DATA_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False False"


def test_celery_settings_for_long_gpu_tasks(tmp_path):
    redis = celery_config(Settings(data_dir=tmp_path, broker_url="redis://h:6379/0", visibility_timeout_s=7200))
    assert redis["task_acks_late"] and redis["task_reject_on_worker_lost"]
    assert redis["worker_prefetch_multiplier"] == 1 and redis["worker_concurrency"] == 1
    assert redis["broker_transport_options"]["visibility_timeout"] == 7200
    assert redis["broker_transport_options"]["unacked_restore_throttle"] == 1
    fs = celery_config(Settings(data_dir=tmp_path))
    assert fs["broker_url"] == "filesystem://" and fs["result_backend"].startswith("db+sqlite:///")
    assert Path(fs["broker_transport_options"]["data_folder_in"]).is_dir()
    assert fs["broker_transport_options"]["polling_interval"] == 0.1
    argv = worker_argv("q", "INFO")
    assert "--concurrency=1" in argv and "--prefetch-multiplier=1" in argv and "--pool=prefork" in argv


def test_cli_commands_and_create_tenant(tmp_path):
    parser = build_parser()
    for cmd in (["serve"], ["api"], ["worker"], ["migrate"], ["create-tenant", "x"], ["build-demo-zoo"], ["demo"]):
        assert parser.parse_args(cmd).func is not None
    env = {"PATH": "/usr/bin:/bin", "TOPORANK_DATA_DIR": str(tmp_path), "TOPORANK_SECRET_KEY": "k" * 20}
    run = lambda *a: subprocess.run([sys.executable, "-m", "toporank.cli", *a], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)  # noqa: E731
    assert run("migrate").returncode == 0
    out = run("create-tenant", "clinic")
    assert out.returncode == 0 and out.stdout.strip().startswith("trk_")
    from models_registry.db import make_engine, make_sessionmaker
    from models_registry.tenants import tenant_id_for_key

    engine = make_engine(f"sqlite:///{tmp_path / 'toporank.db'}")
    with make_sessionmaker(engine)() as s:
        assert tenant_id_for_key(s, out.stdout.strip(), "k" * 20) is not None
        assert tenant_id_for_key(s, out.stdout.strip(), "other-secret") is None
    engine.dispose()


def test_broker_readiness_probe(tmp_path):
    from app.dispatch import CeleryDispatcher

    assert CeleryDispatcher(Settings(data_dir=tmp_path)).broker_ok() is True
    assert CeleryDispatcher(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0")).broker_ok() is False


def test_demo_subcommands_pass_their_options_through(monkeypatch):
    import types

    import toporank
    import worker
    from toporank import cli

    calls = []
    zoo = types.SimpleNamespace(main=lambda argv: calls.append(("zoo", argv)) or 0)
    demo = types.SimpleNamespace(main=lambda argv: calls.append(("demo", argv)) or 3)
    monkeypatch.setitem(sys.modules, "worker.demo_zoo", zoo)
    monkeypatch.setattr(worker, "demo_zoo", zoo, raising=False)
    monkeypatch.setitem(sys.modules, "toporank.demo", demo)
    monkeypatch.setattr(toporank, "demo", demo, raising=False)
    assert cli.main(["build-demo-zoo", "--out", "x", "--steps", "2"]) == 0
    assert cli.main(["demo", "--port", "9"]) == 3
    assert calls == [("zoo", ["--out", "x", "--steps", "2"]), ("demo", ["--port", "9"])]


def test_the_api_caps_glibc_malloc_arenas_unless_told_otherwise(monkeypatch):
    """bench/api_load.py --mixed: with glibc's default arenas the API grew ~70 MB in 10 min; with 2 it
    stayed flat. An operator's own MALLOC_ARENA_MAX is left alone (glibc already applied it)."""
    import sys

    from app.main import limit_malloc_arenas

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert limit_malloc_arenas() is sys.platform.startswith("linux")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


def test_filesystem_broker_delivers_in_the_order_sent(tmp_path):
    """The filesystem transport delivers in file-name order, `<monotonic ms>_<uuid4>`: the dispatcher
    spaces its sends by a millisecond so that a ranking's items are taken in position order."""
    from kombu import Connection

    from app.dispatch import CeleryDispatcher
    from worker.celery_app import make_celery

    settings = Settings(data_dir=tmp_path)
    dispatcher = CeleryDispatcher(settings, make_celery(settings))
    sent = [f"it_{i:03d}" for i in range(40)]
    for item_id in sent:
        dispatcher.score_item(item_id)
    received = []
    with Connection(dispatcher.celery.conf.broker_url, transport_options=dispatcher.celery.conf.broker_transport_options) as conn:
        queue = conn.SimpleQueue(settings.task_queue)
        for _ in sent:
            message = queue.get(timeout=5)
            received.append(message.payload[0][0])  # Celery protocol 2: body = (args, kwargs, embed)
            message.ack()
        queue.close()
    assert received == sent
