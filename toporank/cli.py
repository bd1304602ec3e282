"""`toporank` command line: serve (embedded), api, worker, migrate, create-tenant, requeue, demo zoo, demo.

Heavy modules (FastAPI app, Celery worker, torch) are imported inside the subcommands.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence


def _settings():  # type: ignore[no-untyped-def]
    from toporank.settings import get_settings

    return get_settings()


def _open_registry(settings):  # type: ignore[no-untyped-def]
    """An engine on a registry at the current schema, for the commands that read or write it.

    The embedded SQLite registry is created and migrated on the spot; a server database is never
    migrated behind the operator's back: if it is behind (or unreachable) the command ends with
    one line saying what to do, not a traceback.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from models_registry.db import make_engine
    from models_registry.migrate import at_head, upgrade_head

    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(url, pool_size=1)
    try:
        if url.startswith("sqlite"):
            upgrade_head(engine)
        elif not at_head(engine):
            raise SystemExit("toporank: the registry database is not at the current schema; run `toporank migrate` first")
    except SQLAlchemyError as exc:
        engine.dispose()
        raise SystemExit(f"toporank: cannot open the registry database ({type(exc).__name__}); check TOPORANK_DATABASE_URL "
                         "and that the server is up") from None
    except SystemExit:
        engine.dispose()
        raise
    return engine


def cmd_migrate(_args: argparse.Namespace) -> int:
    """alembic upgrade head on TOPORANK_DATABASE_URL (SQLite under the data dir by default)."""
    from models_registry.db import make_engine
    from models_registry.migrate import upgrade_head

    engine = make_engine(_settings().sqlalchemy_url, pool_size=1)
    try:
        upgrade_head(engine)
    finally:
        engine.dispose()
    print("database at head")
    return 0


def cmd_create_tenant(args: argparse.Namespace) -> int:
    """Create a tenant (or add a key to an existing one) and print its new API key once."""
    from models_registry.db import make_sessionmaker, session_scope
    from models_registry.tenants import create_tenant

    settings = _settings()
    engine = _open_registry(settings)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            tenant, key = create_tenant(s, args.name, settings.secret_key)
            tenant_id = tenant.id
    finally:
        engine.dispose()
    print(key)
    print(f"tenant {tenant_id}", file=sys.stderr)
    return 0


def worker_argv(queue: str, loglevel: str, pool: str = "prefork") -> list[str]:
    return [
        "worker",
        f"--queues={queue}",
        "--concurrency=1",
        "--prefetch-multiplier=1",
        f"--pool={pool}",
        "--without-gossip",
        "--without-mingle",
        f"--loglevel={loglevel}",
        f"--hostname=toporank-{os.getpid()}@%h",
    ]


SERVE_PID_ENV = "TOPORANK_SERVE_PID"
"""Set by `serve` for the worker it starts: the worker watches that its parent is still there."""
ORPHAN_GRACE_S = 10.0


def _watch_parent(parent_pid: int, grace: float = ORPHAN_GRACE_S) -> None:
    """A daemon thread of serve's worker: once serve is gone (its parent pid changes), give Celery's
    cold shutdown (the parent-death SIGQUIT) `grace` seconds, then kill the worker's own process
    group, main and pool process alike. Celery's shutdown can hang; an orphan must not live on."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        time.sleep(grace)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="serve-watchdog", daemon=True).start()


def cmd_worker(args: argparse.Namespace) -> int:
    """One Celery worker process: concurrency 1, prefetch 1 (run one per GPU)."""
    from worker.celery_app import app

    settings = _settings()
    serve_pid = os.environ.get(SERVE_PID_ENV, "")
    if serve_pid.isdigit() and os.getpgrp() == os.getpid():  # started by serve, in a group of its own
        _watch_parent(int(serve_pid))
    app.worker_main(worker_argv(settings.task_queue, args.loglevel or settings.log_level))
    return 0


def _serve_api(host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    uvicorn.run("app.main:create_app", factory=True, host=host, port=port, workers=workers, log_level="info")


def cmd_api(args: argparse.Namespace) -> int:
    """API only (production: run `toporank migrate` first; workers run separately)."""
    settings = _settings()
    _serve_api(args.host or settings.host, args.port or settings.port, args.workers)
    return 0


WORKER_STOP_GRACE_S = 20.0
"""How long `serve` gives its worker's cold shutdown before killing the worker's process group."""


def _die_with_parent(parent_pid: int):  # type: ignore[no-untyped-def]
    """A preexec hook: the worker gets SIGQUIT (Celery's cold shutdown: the running task is
    abandoned, its pool process terminated) when `serve` dies without stopping it (a SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None

    def hook() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGQUIT, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(0)

    return hook


def cmd_serve(args: argparse.Namespace) -> int:
    """Embedded mode: migrate, re-queue crashed work, start one worker process and the API."""
    from app.dispatch import CeleryDispatcher
    from app.recovery import requeue_unfinished
    from models_registry.db import make_engine, make_sessionmaker
    from models_registry.migrate import upgrade_head

    settings = _settings()
    if settings.device == "auto":
        settings = _pin_device(settings)
    settings.data_root.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.sqlalchemy_url, pool_size=1)
    try:
        upgrade_head(engine)
        counts = requeue_unfinished(make_sessionmaker(engine), CeleryDispatcher(settings))
    finally:
        engine.dispose()
    if counts["items"] or counts["models"] or counts["finetunes"]:
        print(f"re-queued {counts['items']} ranking item(s), {counts['finetunes']} confirmation fold(s) and "
              f"{counts['models']} model validation(s)", file=sys.stderr)
    worker = None
    if not args.no_worker:
        # Its own session: a signal to serve's process group (Ctrl-C, systemd's KillMode=control-group)
        # reaches serve alone, which then stops the worker and its pool process together. A group
        # signal reaching both Celery's main process and its pool child could leave the main process
        # hung in its warm shutdown.
        worker = subprocess.Popen(
            [sys.executable, "-m", "toporank.cli", "worker"], env={**os.environ, SERVE_PID_ENV: str(os.getpid())},
            start_new_session=True, preexec_fn=_die_with_parent(os.getpid()),
        )
    # uvicorn handles SIGTERM/SIGINT itself, then restores these handlers and re-raises the signal:
    # raising SystemExit from it lets the `finally` below stop the worker.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGINT, _exit_on_signal)
    try:
        _serve_api(args.host or settings.host, args.port or settings.port)
    finally:
        if worker is not None:
            _stop_worker(worker, WORKER_STOP_GRACE_S)
    return 0


def _pin_device(settings):  # type: ignore[no-untyped-def]
    """Resolve `TOPORANK_DEVICE=auto` once for the API and the worker serve starts: the API then
    knows the numeric mode scores will be computed in, and reuses stored ones at once."""
    try:
        from worker.adapters import resolve_device
    except ImportError:  # an API-only install: the workers live elsewhere, keep `auto`
        return settings
    from toporank.settings import get_settings

    os.environ["TOPORANK_DEVICE"] = resolve_device("auto")
    get_settings.cache_clear()
    return get_settings()


def _exit_on_signal(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_worker(worker: subprocess.Popen[bytes], grace: float) -> None:
    """Cold-shut the worker down (SIGQUIT: a running item is abandoned and stays `running`, so the
    next start re-queues it), then kill whatever is left of its process group after `grace` seconds."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGQUIT)
        try:
            worker.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(worker.pid, signal.SIGKILL)  # the pool process too, if the main one left it behind
    except (ProcessLookupError, PermissionError):
        pass
    worker.wait()


def cmd_requeue(_args: argparse.Namespace) -> int:
    """Send every unfinished item and validation again (after a broker lost its queue, say).

    Tasks are idempotent, so a message that still exists only causes a no-op duplicate.
    """
    from app.dispatch import CeleryDispatcher
    from app.recovery import requeue_unfinished
    from models_registry.db import make_sessionmaker

    settings = _settings()
    engine = _open_registry(settings)
    try:
        counts = requeue_unfinished(make_sessionmaker(engine), CeleryDispatcher(settings))
    finally:
        engine.dispose()
    print(f"re-queued {counts['items']} ranking item(s), {counts['finetunes']} confirmation fold(s) and "
          f"{counts['models']} model validation(s); "
          f"{counts['cancelled']} cancelled item(s) closed")
    return 0


def cmd_zoo_import(args: argparse.Namespace) -> int:
    """Register every downloaded release under DIR as a shared model (toporank.zoo); non-zero if one was skipped."""
    from pathlib import Path

    from app.dispatch import CeleryDispatcher
    from app.storage import Storage
    from models_registry.db import make_sessionmaker
    from toporank.zoo import format_table, import_zoo

    folder = Path(args.dir)
    if not folder.is_dir():
        raise SystemExit(f"toporank: {args.dir} is not a folder")
    settings = _settings()
    engine = _open_registry(settings)
    try:
        rows = import_zoo(
            folder, make_sessionmaker(engine), Storage(settings.storage_root), CeleryDispatcher(settings).validate_model,
            progress=lambda r: print(f"{r.name}: {r.status}", file=sys.stderr, flush=True),
        )
    finally:
        engine.dispose()
    if not rows:
        raise SystemExit(f"toporank: {args.dir} has no subfolders (one per downloaded model)")
    print(format_table(rows))
    return 0 if all(r.ok for r in rows) else 1


def cmd_purge(args: argparse.Namespace) -> int:
    """Delete the pilot sets older than TOPORANK_PILOT_SET_TTL_DAYS (rows, their rankings and scores, files)."""
    from app.services.pilot_sets import purge_expired
    from app.storage import Storage
    from models_registry.db import make_sessionmaker

    settings = _settings()
    if settings.pilot_set_ttl_days <= 0:
        print("retention is off (TOPORANK_PILOT_SET_TTL_DAYS is 0): nothing purged")
        return 0
    engine = _open_registry(settings)
    try:
        n = purge_expired(make_sessionmaker(engine), Storage(settings.storage_root), settings.pilot_set_ttl_days)
    finally:
        engine.dispose()
    print(f"purged {n} pilot set(s) older than {settings.pilot_set_ttl_days:g} days, with their rankings, scores and files")
    return 0


def cmd_build_demo_zoo(args: argparse.Namespace) -> int:
    from worker import demo_zoo

    return int(demo_zoo.main(args.rest) or 0)


def cmd_demo(args: argparse.Namespace) -> int:
    from toporank import demo

    return int(demo.main(args.rest) or 0)


PASS_THROUGH = {"build-demo-zoo": cmd_build_demo_zoo, "demo": cmd_demo}
"""Subcommands whose options belong to another module's parser: their arguments pass untouched."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toporank", description="Training-free ranking of 3D medical encoders.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="embedded mode: API + one worker, SQLite, filesystem broker")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--no-worker", action="store_true", help="do not start the worker process")
    s.set_defaults(func=cmd_serve)
    a = sub.add_parser("api", help="the API only (production)")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    a.set_defaults(func=cmd_api)
    w = sub.add_parser("worker", help="one Celery worker process (one per GPU)")
    w.add_argument("--loglevel")
    w.set_defaults(func=cmd_worker)
    m = sub.add_parser("migrate", help="alembic upgrade head")
    m.set_defaults(func=cmd_migrate)
    t = sub.add_parser("create-tenant", help="create a tenant and print a new API key")
    t.add_argument("name")
    t.set_defaults(func=cmd_create_tenant)
    r = sub.add_parser("requeue", help="send unfinished work to the broker again (after losing its queue)")
    r.set_defaults(func=cmd_requeue)
    from toporank import rank_command

    rank_command.add_parser(sub)
    pg = sub.add_parser("purge", help="delete pilot sets older than TOPORANK_PILOT_SET_TTL_DAYS (run it daily, e.g. from cron)")
    pg.set_defaults(func=cmd_purge)
    zoo = sub.add_parser("zoo", help="the shared zoo")
    zoo_sub = zoo.add_subparsers(dest="zoo_command", required=True)
    zi = zoo_sub.add_parser("import", help="register a folder of downloaded OpenMind releases (one subfolder each) as shared models")
    zi.add_argument("dir")
    zi.set_defaults(func=cmd_zoo_import)
    z = sub.add_parser("build-demo-zoo", help="build the small demo checkpoints (worker.demo_zoo)")
    z.add_argument("rest", nargs="*", help="options of worker.demo_zoo (see toporank build-demo-zoo --help)")
    z.set_defaults(func=cmd_build_demo_zoo)
    d = sub.add_parser("demo", help="end-to-end demo (toporank.demo)")
    d.add_argument("rest", nargs="*", help="options of toporank.demo (see toporank demo --help)")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASS_THROUGH:
        return int(PASS_THROUGH[argv[0]](argparse.Namespace(rest=argv[1:])) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
