"""Container healthcheck: `healthcheck.py api|flower|worker`, exit 0 when healthy, 1 otherwise.

Standard library only for `api` and `flower` (runs every 30 s, must stay cheap); `worker` asks the
Celery broker whether this container's worker answers a ping, without importing torch.
"""

from __future__ import annotations

import os
import socket
import sys
import urllib.error
import urllib.request


def check_http(url: str, timeout: float = 4.0) -> bool:
    """True when `url` answers 2xx within `timeout` seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed loopback URL)
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def check_api() -> bool:
    """The API process answers `GET /healthz` on its own port (TOPORANK_PORT)."""
    port = int(os.environ.get("TOPORANK_PORT", "8000"))
    return check_http(f"http://127.0.0.1:{port}/healthz")


def check_flower() -> bool:
    """Flower's unauthenticated `/healthcheck` answers."""
    port = int(os.environ.get("FLOWER_PORT", "5555"))
    return check_http(f"http://127.0.0.1:{port}/healthcheck")


def worker_replied(replies: list[dict[str, object]], hostname: str) -> bool:
    """True when a ping reply comes from a Celery node on `hostname` (node names are `name@host`)."""
    return any(node.rsplit("@", 1)[-1] == hostname for reply in replies for node in reply)


def check_worker(timeout: float = 10.0) -> bool:
    """This container's Celery worker answers a broadcast ping through the broker."""
    from celery import Celery

    from toporank.settings import get_settings

    hostname = socket.gethostname()
    app = Celery("toporank-healthcheck", broker=get_settings().celery_broker_url)
    try:
        # Only nodes named *@<this container> answer; the first reply ends the wait.
        replies = app.control.ping(timeout=timeout, pattern=f"*@{hostname}", matcher="glob", limit=1)
    except Exception:  # noqa: BLE001 - any broker error means "not healthy"
        return False
    finally:
        app.close()
    return worker_replied(replies or [], hostname)


CHECKS = {"api": check_api, "flower": check_flower, "worker": check_worker}


def main(argv: list[str]) -> int:
    """Run the check named by argv[1]; exit code 0 healthy, 1 unhealthy, 2 usage error."""
    if len(argv) != 2 or argv[1] not in CHECKS:
        print(f"usage: healthcheck.py {{{'|'.join(CHECKS)}}}", file=sys.stderr)
        return 2
    healthy = CHECKS[argv[1]]()
    if not healthy:
        print(f"{argv[1]}: unhealthy", file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
