"""PostgreSQL stopped and started again while a ranking runs (a private cluster, initdb + pg_ctl
on its own port, so the shared server stays up): the API answers 503 `database_unavailable` while
the database is away and recovers by itself; the running score carries on and is stored once."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers_e2e import poll, running_ranking
from services import Stack, free_port, make_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)


class PrivatePostgres:
    """A throwaway cluster owned by the `postgres` user (initdb refuses root), trust auth, local port."""

    def __init__(self) -> None:
        assert PG_BIN is not None, "PostgreSQL server binaries not found under /usr/lib/postgresql"
        self.root = Path(tempfile.mkdtemp(prefix="toporank-pg-"))
        pw = __import__("pwd").getpwnam("postgres")
        os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self._as_postgres(str(PG_BIN / "initdb"), "-D", str(self.root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def _as_postgres(self, *argv: str) -> None:
        out = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "server.log"), "-w",
                          "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1", "start")

    def stop(self) -> None:
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        except AssertionError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def pg_and_stack(tmp_path) -> Iterator[tuple[PrivatePostgres, Stack]]:
    pg = PrivatePostgres()
    pg.start()
    try:
        for stack in make_stack("postgres", tmp_path, database_url=pg.url):
            yield pg, stack
    finally:
        pg.remove()


def test_the_database_restarted_mid_ranking(pg_and_stack, checkpoints, tmp_path):  # type: ignore[no-untyped-def]
    pg, stack = pg_and_stack
    c = stack.client()
    (model,), rid = running_ranking(c, tmp_path, checkpoints[:1], n_cases=3, seed=9)
    pg.stop()
    down = c.get(f"/v1/rankings/{rid}")
    assert down.status_code == 503 and down.json()["code"] == "database_unavailable" and down.headers["Retry-After"].isdigit()
    assert c.get("/readyz").status_code == 503
    time.sleep(3)
    pg.start()
    done = poll(c, rid, timeout=300)  # the API is back by itself (stale pooled connections are replaced)
    assert done["status"] == "succeeded", (done, stack.log("worker")[-3000:])
    assert done["items"][0]["attempts"] == 1  # the running score was not thrown away...
    assert "database unreachable" in stack.log("worker")  # ...though it met the outage (heartbeat skipped or store retried)
    from sqlalchemy import create_engine, text

    engine = create_engine(pg.url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM model_scores WHERE model_id = :m"), {"m": model}).scalar_one() == 1
    engine.dispose()
    assert "Traceback" not in stack.log("api")
