"""docker/healthcheck.py: HTTP checks against a loopback server, the worker reply matching, usage."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType

import pytest

from deploy_helpers import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("toporank_docker_healthcheck", REPO / "docker" / "healthcheck.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = _load()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        status = {"/healthz": 200, "/healthcheck": 200}.get(self.path, 503)
        self.send_response(status)
        self.end_headers()
        self.wfile.write(b"ok" if status == 200 else b"down")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[int]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def test_check_http_healthy_and_unhealthy(server: int) -> None:
    assert hc.check_http(f"http://127.0.0.1:{server}/healthz") is True
    assert hc.check_http(f"http://127.0.0.1:{server}/readyz") is False  # 503


def test_check_http_refused_port_is_unhealthy() -> None:
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert hc.check_http(f"http://127.0.0.1:{port}/healthz", timeout=1.0) is False


def test_api_and_flower_modes_use_their_ports(server: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPORANK_PORT", str(server))
    monkeypatch.setenv("FLOWER_PORT", str(server))
    assert hc.main(["healthcheck.py", "api"]) == 0
    assert hc.main(["healthcheck.py", "flower"]) == 0
    monkeypatch.setenv("TOPORANK_PORT", "1")  # nothing listens on port 1
    assert hc.main(["healthcheck.py", "api"]) == 1


def test_worker_reply_must_come_from_this_host() -> None:
    replies = [{"celery@abc123": {"ok": "pong"}}, {"gpu1@other": {"ok": "pong"}}]
    assert hc.worker_replied(replies, "abc123") is True
    assert hc.worker_replied(replies, "other") is True
    assert hc.worker_replied(replies, "abc") is False
    assert hc.worker_replied([], "abc123") is False


def test_usage_errors() -> None:
    assert hc.main(["healthcheck.py"]) == 2
    assert hc.main(["healthcheck.py", "nope"]) == 2


@pytest.mark.integration
@pytest.mark.slow
def test_worker_mode_against_a_real_celery_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Celery worker on this host answers -> healthy; only a worker on another host -> unhealthy."""
    import os
    import socket
    import subprocess
    import sys
    import time
    import uuid

    from toporank.settings import get_settings

    base = os.environ.get("TOPORANK_TEST_REDIS", "redis://127.0.0.1:6379").rstrip("/")
    db = f"{base}/13"
    here, other = socket.gethostname(), f"elsewhere-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TOPORANK_BROKER_URL", db)
    monkeypatch.setenv("TOPORANK_ENV", "development")
    get_settings.cache_clear()

    def start(node: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "celery", "-b", db, "worker", "-n", node, "--pool=solo",
               "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "ERROR"]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_until(healthy: bool, deadline_s: float) -> bool:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if hc.check_worker(timeout=1.0) is healthy:
                return True
        return False

    proc = start(f"hc-{uuid.uuid4().hex[:8]}@{other}")
    try:
        time.sleep(3.0)  # let it subscribe; it must still not count as this host's worker
        assert hc.check_worker(timeout=1.0) is False
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    proc = start(f"hc-{uuid.uuid4().hex[:8]}@{here}")
    try:
        assert wait_until(True, 30.0), "a worker on this host never answered the ping"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        get_settings.cache_clear()
