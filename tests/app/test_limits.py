"""Per-tenant limits: storage quota, rankings in flight, request rate per key (429 + Retry-After +
code, nothing stored from a refused upload), and the retention purge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from app.limits import RateLimiter, tenant_storage_bytes
from app.services.pilot_sets import purge_expired
from models_registry.tables import Model, PilotSet, RankingJob, utcnow
from tests.utils.api import api, dispatcher, keys, make_settings, sessions  # noqa: F401 - fixtures
from tests.utils.archives import nnunet_files, write_zip

SPEC = {"name": "m", "format": "nnssl", "catalog": "demo-resenc-mae"}
LIMITS: dict[str, int] = {}


@pytest.fixture
def settings(tmp_path):  # type: ignore[no-untyped-def]
    over = {"quota_storage_bytes": 0, "quota_concurrent_rankings": 0, "rate_limit_per_minute": 0, **LIMITS}
    return make_settings(tmp_path, max_upload_bytes=8 << 20, max_checkpoint_bytes=1 << 20, device="cpu", **over)


@pytest.fixture
def limits(request):  # type: ignore[no-untyped-def]
    LIMITS.clear()
    LIMITS.update(request.param)
    yield
    LIMITS.clear()


def _upload(api, key, tmp_path, name="p"):  # type: ignore[no-untyped-def]
    with open(write_zip(tmp_path / f"{name}.zip", nnunet_files(2)), "rb") as fh:
        return api.post("/v1/pilot-sets", headers={"X-API-Key": key}, files={"archive": (f"{name}.zip", fh)})


def _register(api, key, size=500):  # type: ignore[no-untyped-def]
    return api.post("/v1/models", headers={"X-API-Key": key},
                    files={"spec": (None, json.dumps(SPEC)), "checkpoint": ("c", b"w" * size)})


@pytest.mark.parametrize("limits", [{"quota_storage_bytes": 400_000}], indirect=True)
def test_storage_quota_refuses_with_429_and_keeps_nothing(limits, api, keys, settings, tmp_path):
    from app.storage import Storage

    storage = Storage(settings.storage_root)
    first = _upload(api, keys["a"], tmp_path, "one")
    assert first.status_code == 201, first.text
    tenant = api.app.state.ctx.sessions().get(PilotSet, first.json()["id"]).tenant_id
    used = tenant_storage_bytes(storage, tenant)
    assert 0 < used <= 400_000
    refused = _register(api, keys["a"], size=400_000 - used + 1)  # one byte too many once stored
    assert refused.status_code == 429 and refused.json()["code"] == "storage_quota_exceeded"
    assert refused.headers["Retry-After"].isdigit()
    assert tenant_storage_bytes(storage, tenant) == used  # the refused checkpoint is gone
    uploads = []
    for i in range(400_000 // used + 2):  # pilot sets until the quota is reached
        uploads.append(_upload(api, keys["a"], tmp_path, f"more{i}"))
        if uploads[-1].status_code != 201:
            break
    assert uploads[-1].status_code == 429 and uploads[-1].json()["code"] == "storage_quota_exceeded"
    assert tenant_storage_bytes(storage, tenant) <= 400_000
    with api.app.state.ctx.sessions() as s:  # no row for what was refused
        assert s.query(Model).count() == 0
        assert s.query(PilotSet).count() == sum(u.status_code == 201 for u in [first, *uploads])
    assert _upload(api, keys["b"], tmp_path, "other").status_code == 201  # another tenant has its own quota


@pytest.mark.parametrize("limits", [{"quota_storage_bytes": 1000}], indirect=True)
def test_a_declared_length_over_the_quota_is_refused_before_streaming(limits, api, keys):
    r = api.post("/v1/pilot-sets", headers={"X-API-Key": keys["a"], "Content-Type": "multipart/form-data; boundary=x",
                                            "Content-Length": "5000"}, content=b"x" * 5000)
    assert r.status_code == 429 and r.json()["code"] == "storage_quota_exceeded"


@pytest.mark.parametrize("limits", [{"quota_concurrent_rankings": 1}], indirect=True)
def test_rankings_in_flight_are_capped(limits, api, keys, tmp_path, sessions):  # noqa: F811
    h = {"X-API-Key": keys["a"]}
    ps = _upload(api, keys["a"], tmp_path).json()["id"]
    model = _register(api, keys["a"]).json()["id"]
    body = {"pilot_set_id": ps, "model_ids": [model]}
    first = api.post("/v1/rankings", headers={**h, "Idempotency-Key": "k"}, json=body)
    assert first.status_code == 202 and first.json()["status"] == "queued"
    second = api.post("/v1/rankings", headers=h, json={**body, "config": {"seed": 1}})
    assert second.status_code == 429 and second.json()["code"] == "too_many_rankings" and second.headers["Retry-After"] == "30"
    assert api.post("/v1/rankings", headers={**h, "Idempotency-Key": "k"}, json=body).status_code == 202  # a replay is no new ranking
    with sessions() as s:
        s.get(RankingJob, first.json()["id"]).status = "succeeded"
        s.commit()
    assert api.post("/v1/rankings", headers=h, json={**body, "config": {"seed": 1}}).status_code == 202


@pytest.mark.parametrize("limits", [{"rate_limit_per_minute": 5}], indirect=True)
def test_a_key_past_its_rate_gets_429_per_key(limits, api, keys):
    codes = [api.get("/v1/models", headers={"X-API-Key": keys["a"]}).status_code for _ in range(7)]
    assert codes[:5] == [200] * 5 and codes[5:] == [429, 429]
    r = api.get("/v1/models", headers={"X-API-Key": keys["a"]})
    assert r.json()["code"] == "rate_limited" and 1 <= int(r.headers["Retry-After"]) <= 60
    assert api.get("/v1/models", headers={"X-API-Key": keys["b"]}).status_code == 200  # per key
    assert api.get("/healthz").status_code == 200  # unauthenticated probes are not counted


def test_rate_windows_local_and_in_redis():
    local = RateLimiter(3)
    for _ in range(3):
        local.hit("k", now=120.0)
    with pytest.raises(Exception) as err:
        local.hit("k", now=150.5)
    assert err.value.code == "rate_limited" and err.value.headers["Retry-After"] == "30"
    local.hit("k", now=180.0)  # a new window
    key = f"test-{os.getpid()}-{utcnow().timestamp()}"
    a, b = RateLimiter(3, "redis://127.0.0.1:6379/15"), RateLimiter(3, "redis://127.0.0.1:6379/15")
    a.hit(key, now=60.0)
    b.hit(key, now=61.0)  # two API processes share the count through Redis
    a.hit(key, now=62.0)
    with pytest.raises(Exception):
        b.hit(key, now=63.0)
    down = RateLimiter(1, "redis://127.0.0.1:1/0")  # unreachable Redis: counted in this process, not refused
    down.hit("x", now=0.0)
    with pytest.raises(Exception):
        down.hit("x", now=1.0)


def test_purge_removes_expired_pilot_sets_with_their_files(api, keys, settings, tmp_path, sessions):  # noqa: F811
    from app.storage import Storage

    storage = Storage(settings.storage_root)
    old, new = (_upload(api, keys["a"], tmp_path, n).json()["id"] for n in ("old", "new"))
    model = _register(api, keys["a"]).json()["id"]
    job = api.post("/v1/rankings", headers={"X-API-Key": keys["a"]}, json={"pilot_set_id": old, "model_ids": [model]}).json()["id"]
    with sessions() as s:
        s.get(PilotSet, old).created_at = utcnow() - timedelta(days=31)
        old_path = storage.resolve(s.get(PilotSet, old).storage_path)
        new_path = storage.resolve(s.get(PilotSet, new).storage_path)
        s.commit()
    assert old_path.is_dir() and any(old_path.rglob("*.nii.gz"))
    assert purge_expired(sessions, storage, 0) == 0  # retention off
    assert purge_expired(sessions, storage, 30) == 1
    with sessions() as s:
        assert s.get(PilotSet, old) is None and s.get(RankingJob, job) is None and s.get(PilotSet, new) is not None
    assert not old_path.exists() and new_path.is_dir()
    assert api.get(f"/v1/pilot-sets/{old}", headers={"X-API-Key": keys["a"]}).status_code == 404
    r = api.delete(f"/v1/pilot-sets/{new}", headers={"X-API-Key": keys["a"]})  # DELETE leaves nothing on disk either
    assert r.status_code == 204 and not new_path.exists()


def test_the_purge_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env["TOPORANK_DATA_DIR"] = str(tmp_path)
    off = subprocess.run([sys.executable, "-m", "toporank.cli", "purge"], env=env, capture_output=True, text=True, timeout=120)
    assert off.returncode == 0 and "retention is off" in off.stdout
    env["TOPORANK_PILOT_SET_TTL_DAYS"] = "30"
    on = subprocess.run([sys.executable, "-m", "toporank.cli", "purge"], env=env, capture_output=True, text=True, timeout=120)
    assert on.returncode == 0 and "purged 0 pilot set(s) older than 30 days" in on.stdout
