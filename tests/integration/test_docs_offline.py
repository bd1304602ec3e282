"""/docs and /redoc render in headless Chromium with every host but 127.0.0.1 unreachable, as in a
closed hospital network: their assets come from the installed package, not from CDNs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import httpx
import pytest

from services import free_port, wait_for

OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Debian's chromium is not installed (scripts/test.sh installs it)"
    return path


def _rendered(url: str) -> str:
    """The page's DOM once its scripts have run (virtual time lets them finish), with the network cut off."""
    out = subprocess.run(
        [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", OFFLINE,
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.fixture
def api_url(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(TOPORANK_DATA_DIR=str(tmp_path / "data"), TOPORANK_LOG_LEVEL="WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "toporank.cli", "serve", "--no-worker", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{url}/healthz", timeout=2).status_code == 200, 60, "the API")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_swagger_ui_and_redoc_render_every_operation_offline(api_url):
    spec = httpx.get(f"{api_url}/openapi.json").json()
    ops = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    for page in ("/docs", "/redoc"):
        html = httpx.get(f"{api_url}{page}").text
        assert "cdn." not in html and "fonts.googleapis" not in html, f"{page} still points at the internet"
    swagger = _rendered(f"{api_url}/docs")
    assert 'class="swagger-ui' in swagger
    missing = [op for op in ops if f"-{op}" not in swagger]  # Swagger UI gives each operation the id operations-<tag>-<operationId>
    assert not missing, f"Swagger UI did not render {missing}"
    redoc = _rendered(f"{api_url}/redoc")
    missing = [op for op in ops if f"operation/{op}" not in redoc]  # ReDoc's section ids
    assert not missing, f"ReDoc did not render {missing}"
