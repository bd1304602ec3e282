"""PostgreSQL + Redis: the whole worker (parent and pool process) is SIGKILLed mid-task; a new
worker gets the unacknowledged message back after the visibility timeout and completes the job.
(The embedded mode's answer to the same crash is the start-up re-queue: test_embedded_serve.py.)"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import pytest

from helpers_e2e import SMALL, poll, register, upload_pilot, wait_item_running
from services import Stack, make_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg_stack(tmp_path_factory) -> Iterator[Stack]:
    yield from make_stack("postgres", tmp_path_factory.mktemp("redelivery"))


def test_whole_worker_killed_message_redelivered(pg_stack, checkpoints, tmp_path):
    c = pg_stack.client()
    ps = upload_pilot(c, tmp_path, n_cases=2)
    model = register(c, checkpoints[2], "tiny")
    rid = c.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": [model["id"]], "config": SMALL}).json()["id"]
    wait_item_running(c, rid)
    killed_at = time.monotonic()
    pg_stack.stop("worker", signal.SIGKILL)
    assert c.get(f"/v1/rankings/{rid}").json()["status"] == "running"
    pg_stack.start_worker()
    done = poll(c, rid, timeout=300)
    assert done["status"] == "succeeded", (done, pg_stack.log("worker")[-3000:])
    assert done["items"][0]["attempts"] == 2
    # redelivery waited for the visibility timeout (15 s here), i.e. it was Redis, not a re-send
    assert time.monotonic() - killed_at >= 14
