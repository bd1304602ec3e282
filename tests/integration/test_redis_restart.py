"""Redis restarted while a ranking runs (a private redis-server, so the shared one stays up): with
its append-only file on, as docker-compose runs it, the ranking finishes by itself; with
persistence off the queued messages are gone and `toporank requeue`, as docs/deploy.md says,
recovers them. Either way every score is stored once."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from helpers_e2e import poll, running_ranking
from services import Stack, free_port, make_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class PrivateRedis:
    def __init__(self, folder: Path, aof: bool) -> None:
        self.folder, self.aof, self.port = folder, aof, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                "--save", "", "--appendonly", "yes" if self.aof else "no", "--appendfsync", "always"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, 30, "the private redis-server")

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.exceptions.ConnectionError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(params=["aof", "no-persistence"])
def redis_stack(request, tmp_path) -> Iterator[tuple[Stack, PrivateRedis]]:  # type: ignore[no-untyped-def]
    server = PrivateRedis(tmp_path / "redis", aof=request.param == "aof")
    server.start()
    (tmp_path / "stack").mkdir()
    try:
        for stack in make_stack("postgres", tmp_path / "stack", redis_url=server.url):
            yield stack, server
    finally:
        server.stop()


def test_a_redis_restart_mid_ranking(redis_stack, checkpoints, tmp_path):  # type: ignore[no-untyped-def]
    stack, server = redis_stack
    c = stack.client()
    models, rid = running_ranking(c, tmp_path, checkpoints[:2], n_cases=2, seed=5)  # with prefetch 1 the other item waits in Redis
    server.stop()
    assert c.get("/readyz").status_code == 503  # the broker is down, and the API says so
    server.start()
    if server.aof:
        done = poll(c, rid, timeout=300)  # nothing to do: the messages survived the restart
    else:
        def first_done_second_waiting() -> bool:
            items = c.get(f"/v1/rankings/{rid}").json()["items"]
            return sorted(it["status"] for it in items) == ["queued", "succeeded"]

        wait_for(first_done_second_waiting, 180, "the running item to finish")
        time.sleep(20)  # longer than the visibility timeout: the queued message is really gone
        assert first_done_second_waiting()
        assert "re-queued 1 ranking item(s)" in stack.cli("requeue")  # the documented recovery
        done = poll(c, rid, timeout=300)
    assert done["status"] == "succeeded", (done, stack.log("worker")[-3000:])
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.env["TOPORANK_DATABASE_URL"])
    with engine.connect() as conn:
        counts = [int(conn.execute(text("SELECT count(*) FROM model_scores WHERE model_id = :m"), {"m": m}).scalar_one()) for m in models]
    engine.dispose()
    assert counts == [1, 1]
