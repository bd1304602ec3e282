"""Real services for end-to-end tests: a uvicorn API process and a Celery worker process.

Two stacks: `embedded` (SQLite + filesystem broker + SQLite result backend under a temp data
dir) and `postgres` (a fresh uniquely-named database on 127.0.0.1:5432, dropped afterwards, and
Redis db 15 with a unique queue name; only this run's keys are deleted).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

PG_SERVER = os.environ.get("TOPORANK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("TOPORANK_TEST_REDIS", "redis://127.0.0.1:6379/15")
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(fn: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Stack:
    mode: str
    tmp: Path
    env: dict[str, str]
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "toporank.cli", *args], env=self.env, cwd=REPO, capture_output=True, timeout=120)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        return out.stdout.decode()

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_api(self) -> None:
        self.port = self.port or free_port()
        self.spawn("api", [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                           "--port", str(self.port), "--log-level", "warning"])
        wait_for(lambda: httpx.get(self.url + "/readyz", timeout=2).status_code == 200, 60, "API readiness")

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.spawn("worker", [sys.executable, "-m", "toporank.cli", "worker", "--loglevel", "INFO"])

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def pool_children(self) -> list[psutil.Process]:
        proc = self.procs["worker"]
        return psutil.Process(proc.pid).children(recursive=True)

    def client(self, tenant: str = "a") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": self.keys[tenant]}, timeout=60)

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _pg_admin():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")


def make_stack(
    mode: str, tmp: Path, redis_url: str | None = None, database_url: str | None = None, env_extra: dict[str, str] | None = None
) -> Iterator[Stack]:
    """A migrated registry with two tenants, a worker and the API; `postgres` mode uses a fresh
    database on the shared PostgreSQL server (or the database at `database_url`) and the shared
    Redis (or the Redis at `redis_url`); `env_extra` adds or overrides settings."""
    from sqlalchemy import text

    token = secrets.token_hex(5)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(
        TOPORANK_DATA_DIR=str(tmp / "data"),
        TOPORANK_SECRET_KEY="integration-secret-0123456789",
        TOPORANK_MAX_UPLOAD_BYTES=str(16 << 20),
        TOPORANK_MAX_CHECKPOINT_BYTES=str(16 << 20),
        TOPORANK_DEVICE="cpu",
        TOPORANK_LOG_LEVEL="WARNING",
        TOPORANK_VISIBILITY_TIMEOUT_S="15",
        TOPORANK_TASK_QUEUE=f"toporank-it-{token}",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    env.update(env_extra or {})
    db_name = None
    if mode == "postgres" and database_url is not None:
        env["TOPORANK_DATABASE_URL"] = database_url
    elif mode == "postgres":
        db_name = f"toporank_it_{token}"
        with _pg_admin().connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{db_name}"'))
        env["TOPORANK_DATABASE_URL"] = PG_SERVER.rsplit("/", 1)[0] + f"/{db_name}"
    if mode == "postgres":
        env["TOPORANK_BROKER_URL"] = redis_url or REDIS
        env["TOPORANK_RESULT_BACKEND"] = redis_url or REDIS
    stack = Stack(mode, tmp, env)
    try:
        stack.cli("migrate")
        for t in ("a", "b"):
            stack.keys[t] = stack.cli("create-tenant", f"it-{t}-{token}").strip()
        stack.start_worker()
        stack.start_api()
        yield stack
    finally:
        for name in list(stack.procs):
            stack.stop(name)
        if db_name:
            with _pg_admin().connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)'))
            import redis

            if redis_url is None:
                r = redis.Redis.from_url(REDIS)
                for key in r.scan_iter(match=f"*toporank-it-{token}*"):
                    r.delete(key)
