"""`toporank serve` (API + one worker, SQLite, filesystem broker, no servers): a crash of the whole
service mid-task loses the broker's message, and the next start re-queues the job, which completes."""

from __future__ import annotations

import secrets
import signal
import sys

import httpx
import pytest

from services import Stack, free_port, wait_for
from helpers_e2e import SMALL, poll, register, upload_pilot, wait_item_running

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_serve_crash_then_restart_requeues_and_completes(tmp_path, checkpoints):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(
        TOPORANK_DATA_DIR=str(tmp_path / "data"),
        TOPORANK_SECRET_KEY="serve-secret-0123456789",
        TOPORANK_DEVICE="cpu",
        TOPORANK_LOG_LEVEL="WARNING",
        TOPORANK_TASK_QUEUE=f"toporank-serve-{secrets.token_hex(4)}",
        OMP_NUM_THREADS="1",
    )
    stack = Stack("serve", tmp_path, env, port=free_port())
    argv = [sys.executable, "-m", "toporank.cli", "serve", "--port", str(stack.port)]
    try:
        stack.spawn("serve", argv)
        wait_for(lambda: httpx.get(stack.url + "/readyz", timeout=2).status_code == 200, 90, "serve readiness")
        stack.keys["a"] = stack.cli("create-tenant", "clinic").strip()
        c = stack.client()
        ps = upload_pilot(c, tmp_path, n_cases=2)
        model = register(c, checkpoints[0], "tiny")
        assert model["status"] == "ready"
        rid = c.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": [model["id"]], "config": SMALL}).json()["id"]
        wait_item_running(c, rid)
        import psutil

        old = [p for p in psutil.Process(stack.procs["serve"].pid).children(recursive=True)]  # the worker and its pool
        assert old, "serve has no worker process"
        stack.stop("serve", signal.SIGKILL)  # serve's process group; its worker lives in a session of its own
        stack.spawn("serve", argv)
        wait_for(lambda: httpx.get(stack.url + "/readyz", timeout=2).status_code == 200, 90, "serve restart")
        done = poll(c, rid)
        assert done["status"] == "succeeded", (done, stack.log("serve")[-3000:])
        assert done["items"][0]["attempts"] == 2
        assert "re-queued 1 ranking item" in stack.log("serve")

        def orphans_gone() -> bool:  # parent-death SIGQUIT, else the worker's watchdog after its grace
            return not [p for p in old if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

        wait_for(orphans_gone, 60, "the crashed serve's worker to go")
    finally:
        stack.stop("serve")


def test_serve_stopped_by_sigterm_takes_its_worker_down(tmp_path):
    """A SIGTERM to the serve process alone: serve stops its worker (and the worker's pool) itself."""
    import os

    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(TOPORANK_DATA_DIR=str(tmp_path / "data"), TOPORANK_LOG_LEVEL="WARNING",
               TOPORANK_TASK_QUEUE=f"toporank-serve-{secrets.token_hex(4)}")
    stack = Stack("serve", tmp_path, env, port=free_port())
    proc = stack.spawn("serve", [sys.executable, "-m", "toporank.cli", "serve", "--port", str(stack.port)])
    try:
        wait_for(lambda: httpx.get(stack.url + "/readyz", timeout=2).status_code == 200, 90, "serve readiness")
        workers = [c for c in psutil.Process(proc.pid).children() if "worker" in " ".join(c.cmdline())]
        assert len(workers) == 1
        everything = _started(proc)[1:]  # the worker and its pool process
        proc.send_signal(signal.SIGTERM)  # the serve process alone, as a user's `kill` or the demo does
        proc.wait(timeout=60)
        gone, alive = psutil.wait_procs(everything, timeout=30)
        assert not alive, stack.log("serve")[-2000:]
    finally:
        stack.stop("serve")


def _started(proc):  # type: ignore[no-untyped-def]
    """serve, its worker and the worker's pool process, once all three exist."""
    import psutil

    def family():  # type: ignore[no-untyped-def]
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        return procs if len(procs) >= 3 else None

    return wait_for(family, 60, "the worker's pool process")


def _serve_env(tmp_path):  # type: ignore[no-untyped-def]
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(TOPORANK_DATA_DIR=str(tmp_path / "data"), TOPORANK_SECRET_KEY="serve-secret-0123456789", TOPORANK_DEVICE="cpu",
               TOPORANK_LOG_LEVEL="WARNING", TOPORANK_TASK_QUEUE=f"toporank-serve-{secrets.token_hex(4)}", OMP_NUM_THREADS="1")
    return env


def test_serve_stopped_by_a_signal_to_its_process_group_leaves_nothing_behind(tmp_path, checkpoints):
    """systemd's KillMode=control-group SIGTERMs every process of the group at once. Mid-score, that
    used to leave Celery's main process hung in its warm shutdown after its pool child died. Now the
    worker lives in its own session, serve stops it (cold) and everything is gone in bounded time;
    the abandoned item is re-queued by the next start and completes."""
    import os

    import psutil

    stack = Stack("serve", tmp_path, _serve_env(tmp_path), port=free_port())
    argv = [sys.executable, "-m", "toporank.cli", "serve", "--port", str(stack.port)]
    try:
        proc = stack.spawn("serve", argv)
        wait_for(lambda: httpx.get(stack.url + "/readyz", timeout=2).status_code == 200, 90, "serve readiness")
        stack.keys["a"] = stack.cli("create-tenant", "clinic").strip()
        c = stack.client()
        ps = upload_pilot(c, tmp_path, n_cases=2)
        model = register(c, checkpoints[0], "tiny")
        rid = c.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": [model["id"]], "config": SMALL}).json()["id"]
        wait_item_running(c, rid)
        everything = _started(proc)
        os.killpg(proc.pid, signal.SIGTERM)  # serve's group only: the worker's session is its own
        gone, alive = psutil.wait_procs(everything, timeout=60)
        assert not alive, ([p.cmdline() for p in alive], stack.log("serve")[-3000:])
        stack.procs.pop("serve").wait(timeout=5)
        stack.spawn("serve", argv)
        wait_for(lambda: httpx.get(stack.url + "/readyz", timeout=2).status_code == 200, 90, "serve restart")
        done = poll(c, rid)
        assert done["status"] == "succeeded" and done["items"][0]["attempts"] == 2, (done, stack.log("serve")[-3000:])
        assert "re-queued 1 ranking item" in stack.log("serve")
    finally:
        stack.stop("serve")


def test_serve_stopped_by_ctrl_c_leaves_nothing_behind(tmp_path):
    """Ctrl-C in a terminal: SIGINT to the foreground process group."""
    import os

    import psutil

    stack = Stack("serve", tmp_path, _serve_env(tmp_path), port=free_port())
    proc = stack.spawn("serve", [sys.executable, "-m", "toporank.cli", "serve", "--port", str(stack.port)])
    try:
        wait_for(lambda: httpx.get(stack.url + "/readyz", timeout=2).status_code == 200, 90, "serve readiness")
        everything = _started(proc)
        os.killpg(proc.pid, signal.SIGINT)
        gone, alive = psutil.wait_procs(everything, timeout=60)
        assert not alive, ([p.cmdline() for p in alive], stack.log("serve")[-3000:])
    finally:
        stack.stop("serve")


def test_an_orphaned_serve_worker_kills_itself(tmp_path):
    """Without the parent-death signal (or when Celery's shutdown hangs on it), the worker's
    watchdog still ends it: its parent is gone, so after the grace it kills its own process group."""
    import os

    import psutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(TOPORANK_DATA_DIR=str(tmp_path / "data"), TOPORANK_LOG_LEVEL="WARNING",
               TOPORANK_TASK_QUEUE=f"toporank-orphan-{secrets.token_hex(4)}")
    parent_code = (
        "import os, subprocess, sys, time\n"
        "env = dict(os.environ, TOPORANK_SERVE_PID=str(os.getpid()))\n"
        "w = subprocess.Popen([sys.executable, '-m', 'toporank.cli', 'worker'], env=env, start_new_session=True,\n"
        "                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "print(w.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    import subprocess

    parent = subprocess.Popen([sys.executable, "-c", parent_code], env=env, stdout=subprocess.PIPE, text=True)
    worker = psutil.Process(int(parent.stdout.readline()))
    wait_for(lambda: worker.children(), 60, "the worker's pool process")
    pool = worker.children()
    parent.kill()  # no parent-death signal was set up: only the watchdog can end the worker
    parent.wait()
    assert worker.is_running()
    try:
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in [worker, *pool]), 40,
                 "the orphaned worker and its pool to end")
    finally:
        for p in [worker, *pool]:  # never leave one behind, even when the test fails
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
