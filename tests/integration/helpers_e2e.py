"""Client-side helpers shared by the end-to-end tests."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from ckpt_builder import SPEC
from tests.utils.archives import nnunet_files, write_zip

SMALL = {"n_samples": 256, "n_anchors": 32}
TERMINAL = {"succeeded", "partial", "failed", "cancelled"}


def upload_pilot(c: httpx.Client, tmp: Path, n_cases: int = 3) -> dict[str, Any]:
    path = write_zip(tmp / f"pilot-{time.monotonic_ns()}.zip", nnunet_files(n_cases=n_cases, k=2))
    with open(path, "rb") as fh:
        r = c.post("/v1/pilot-sets", files={"archive": ("pilot.zip", fh)})
    assert r.status_code == 201, r.text
    return r.json()


def register(c: httpx.Client, ckpt: Path | bytes, name: str, wait: int = 120) -> dict[str, Any]:
    data = ckpt if isinstance(ckpt, bytes) else ckpt.read_bytes()
    r = c.post(
        "/v1/models",
        params={"wait": wait},
        files={"spec": (None, json.dumps({**SPEC, "name": name})), "checkpoint": ("checkpoint_final.pth", data)},
    )
    assert r.status_code == 201, r.text
    return r.json()


def _poll(c: httpx.Client, url: str, what: str, timeout: float, until: Any, seen: list | None, every: float) -> dict[str, Any]:  # type: ignore[type-arg]
    """GET `url` every `every` s until its status is in `until` (`seen` collects every answer)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = c.get(url)
        assert r.status_code == 200, r.text
        body = r.json()
        if seen is not None:
            seen.append(body)
        if body["status"] in until:
            return body
        time.sleep(every)
    raise AssertionError(f"{what} still {body['status']} after {timeout}s: {body}")


def poll(c: httpx.Client, ranking_id: str, timeout: float = 240, until=TERMINAL, seen: list | None = None) -> dict[str, Any]:  # type: ignore[type-arg]
    return _poll(c, f"/v1/rankings/{ranking_id}", f"ranking {ranking_id}", timeout, until, seen, 0.2)


def poll_confirmation(c: httpx.Client, ranking_id: str, confirmation_id: str, timeout: float = 300, seen: list | None = None) -> dict[str, Any]:  # type: ignore[type-arg]
    """GET the confirmation every 0.1 s until it has finished (`seen` collects every answer)."""
    return _poll(c, f"/v1/rankings/{ranking_id}/confirmations/{confirmation_id}", f"confirmation {confirmation_id}",
                 timeout, TERMINAL, seen, 0.1)


def wait_item_running(c: httpx.Client, ranking_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = c.get(f"/v1/rankings/{ranking_id}").json()
        if any(it["status"] == "running" and it["stage"] not in (None, "loading") for it in body["items"]):
            return body
        if body["status"] in TERMINAL:
            raise AssertionError(f"ranking finished before any item was seen running: {body}")
        time.sleep(0.05)
    raise AssertionError("no item started running")


def running_ranking(c: httpx.Client, tmp: Path, checkpoints: list[Path], *, n_cases: int, seed: int) -> tuple[list[str], str]:
    """Upload a pilot set, register `checkpoints`, start ranking them and wait until one item runs;
    returns (model ids, ranking id): the starting point of the fault tests."""
    ps = upload_pilot(c, tmp, n_cases=n_cases)
    models = [register(c, p, f"tiny-{seed}-{i}")["id"] for i, p in enumerate(checkpoints)]
    rid = c.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": models, "config": {**SMALL, "seed": seed}}).json()["id"]
    wait_item_running(c, rid)
    return models, rid
