"""Faults against real processes: a worker SIGKILLed mid-score while a second one runs (the other
finishes the item, the score is stored once), and the API killed in the middle of an upload (no
pilot set row or folder is left behind; the partial upload file is swept)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers_e2e import SMALL, poll, register, upload_pilot
from services import Stack, make_stack, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory) -> Iterator[Stack]:
    yield from make_stack("postgres", tmp_path_factory.mktemp("faults"))


def _score_rows(stack: Stack, model_id: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(stack.env["TOPORANK_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM model_scores WHERE model_id = :m"), {"m": model_id}).scalar_one())
    finally:
        engine.dispose()


def test_a_worker_killed_mid_score_the_other_worker_finishes(pg_stack, checkpoints, tmp_path):
    c = pg_stack.client()
    pg_stack.spawn("worker2", [sys.executable, "-m", "toporank.cli", "worker", "--loglevel", "INFO"])
    wait_for(lambda: "ready" in pg_stack.log("worker2"), 60, "the second worker")
    ps = upload_pilot(c, tmp_path, n_cases=2)
    model = register(c, checkpoints[1], "tiny-faults")
    rid = c.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": [model["id"]], "config": {**SMALL, "seed": 3}}).json()["id"]
    # the worker that received the task is the one to kill (its whole process group: main and pool)
    received = "Task toporank.score_item["  # Celery's "Task ...[id] received" line (the banner lists the name alone)
    holder = wait_for(lambda: next((n for n in ("worker", "worker2") if received in pg_stack.log(n)), None), 120, "a worker to take the task")
    wait_for(lambda: c.get(f"/v1/rankings/{rid}").json()["items"][0]["status"] == "running", 120, "the item to run")
    other = "worker2" if holder == "worker" else "worker"
    pg_stack.stop(holder, signal.SIGKILL)
    done = poll(c, rid, timeout=300)
    assert done["status"] == "succeeded", (done, pg_stack.log(other)[-3000:])
    assert done["items"][0]["attempts"] == 2
    assert received in pg_stack.log(other)  # the survivor did it
    assert _score_rows(pg_stack, model["id"]) == 1


def test_the_api_killed_mid_upload_leaves_no_pilot_set(pg_stack, tmp_path):
    from tests.utils.archives import nnunet_files, write_zip

    storage = Path(pg_stack.env["TOPORANK_DATA_DIR"]) / "storage"
    folders_before = set(storage.glob("tenants/*/pilot_sets/*"))  # other tests of the module own some
    archive = write_zip(tmp_path / "big.zip", nnunet_files(n_cases=8, shape=(64, 64, 64)))
    data = archive.read_bytes()
    sent = threading.Event()

    def body() -> Iterator[bytes]:
        boundary = b"faultboundary"
        yield b"--" + boundary + b'\r\nContent-Disposition: form-data; name="archive"; filename="p.zip"\r\n\r\n'
        for i in range(0, len(data), 4096):
            yield data[i : i + 4096]
            if i > len(data) // 2:
                sent.set()
                time.sleep(0.5)  # half of it is in: the API gets killed while it waits for the rest
        yield b"\r\n--" + boundary + b"--\r\n"

    def upload() -> None:
        try:
            httpx.post(f"{pg_stack.url}/v1/pilot-sets", content=body(), timeout=30,
                       headers={"X-API-Key": pg_stack.keys["b"], "Content-Type": "multipart/form-data; boundary=faultboundary"})
        except httpx.HTTPError:
            pass  # the server died under it

    t = threading.Thread(target=upload)
    t.start()
    assert sent.wait(30)
    partial = wait_for(lambda: [p for p in (storage / "tmp").iterdir() if p.name.startswith("upload")], 20,
                       "the upload to be streaming into a temporary file")
    pg_stack.stop("api", signal.SIGKILL)
    t.join(30)
    pg_stack.start_api()  # a new API process sweeps the temporary files that no process holds
    c = pg_stack.client("b")
    assert c.get("/v1/pilot-sets").json()["pilot_sets"] == []
    assert set(storage.glob("tenants/*/pilot_sets/*")) == folders_before
    assert not [p for p in partial if p.exists()]
    assert upload_pilot(c, tmp_path)["n_cases"] == 3  # and the service works on
