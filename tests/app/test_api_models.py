"""POST/GET/DELETE /v1/models: streaming upload, spec validation, async validation, isolation."""

from __future__ import annotations

import hashlib
import json

from models_registry.tables import Model

SPEC = {"name": "demo mae", "format": "nnssl", "catalog": "demo-resenc-mae"}


def upload(api, key, spec=SPEC, data=b"\x80\x02fake-checkpoint-bytes" * 100, wait=None):  # type: ignore[no-untyped-def]
    params = {"wait": wait} if wait is not None else None
    return api.post(
        "/v1/models",
        headers={"X-API-Key": key},
        params=params,
        files={"spec": (None, json.dumps(spec) if isinstance(spec, dict) else spec), "checkpoint": ("../../etc/passwd", data)},
    )


def test_register_model_stores_file_and_enqueues_validation(api, keys, dispatcher, settings, sessions):
    data = b"ckpt" * 5000
    r = upload(api, keys["a"], data=data)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["sha256"] == hashlib.sha256(data).hexdigest()
    assert body["size_bytes"] == len(data)
    assert body["status"] == "validating" and body["load_report"] is None
    names = [s["name"] for s in body["stages"]]
    assert names[:4] == ["enc0", "enc1", "enc2", "enc3"] and "dec0" in names  # declared, from the catalog
    assert dispatcher.validated == [body["id"]]
    with sessions() as s:
        row = s.get(Model, body["id"])
        path = settings.storage_root / row.checkpoint_path
    assert path.read_bytes() == data
    assert "passwd" not in str(path) and settings.storage_root in path.parents
    assert not any((settings.storage_root / "tmp").iterdir())


def test_model_get_list_delete_and_isolation(api, keys, settings, sessions):
    mid = upload(api, keys["a"]).json()["id"]
    ha, hb = {"X-API-Key": keys["a"]}, {"X-API-Key": keys["b"]}
    assert api.get(f"/v1/models/{mid}", headers=ha).json()["id"] == mid
    assert [m["id"] for m in api.get("/v1/models", headers=ha).json()["models"]] == [mid]
    assert api.get("/v1/models", headers=hb).json()["models"] == []
    for method in ("get", "delete"):
        r = getattr(api, method)(f"/v1/models/{mid}", headers=hb)
        assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    with sessions() as s:
        folder = (settings.storage_root / s.get(Model, mid).checkpoint_path).parent
    assert folder.is_dir()
    assert api.delete(f"/v1/models/{mid}", headers=ha).status_code == 204
    assert not folder.exists()
    assert api.get(f"/v1/models/{mid}", headers=ha).status_code == 404


def test_bad_specs_are_422_with_field_errors(api, keys, dispatcher):
    r = upload(api, keys["a"], spec="{not json")
    assert r.status_code == 422 and r.json()["code"] == "invalid_spec"
    r = upload(api, keys["a"], spec={"name": "x", "format": "keras"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_spec"
    assert any(e["field"] == "format" for e in r.json()["errors"])
    r = upload(api, keys["a"], spec={"name": "x", "format": "nnssl", "catalog": "no-such-entry"})
    assert r.status_code == 422 and "unknown catalog entry" in r.json()["detail"]
    r = upload(api, keys["a"], data=b"")
    assert r.status_code == 422 and r.json()["code"] == "empty_checkpoint"
    r = api.post("/v1/models", headers={"X-API-Key": keys["a"]}, files={"spec": (None, json.dumps(SPEC))})
    assert r.status_code == 422 and r.json()["code"] == "missing_field"
    r = api.post("/v1/models", headers={"X-API-Key": keys["a"]}, json=SPEC)
    assert r.status_code == 415 and r.json()["code"] == "unsupported_media_type"
    assert dispatcher.validated == []


def test_oversized_checkpoint_is_413_and_leaves_nothing(api, keys, settings):
    r = upload(api, keys["a"], data=b"x" * (settings.max_checkpoint_bytes + 10))
    assert r.status_code == 413 and r.json()["code"] == "upload_too_large"
    assert not any((settings.storage_root / "tmp").iterdir())
    assert not (settings.storage_root / "tenants").exists()


def test_broker_down_means_503_and_no_model(api, keys, dispatcher, sessions):
    dispatcher.fail = True
    r = upload(api, keys["a"])
    assert r.status_code == 503 and r.json()["code"] == "broker_unavailable"
    with sessions() as s:
        assert s.query(Model).count() == 0


def test_wait_returns_validated_model(api, keys, sessions, dispatcher):
    """`?wait` polls the row; here a validation is written before the wait ends."""
    import threading
    import time

    def validate_soon() -> None:
        for _ in range(100):
            if dispatcher.validated:
                break
            time.sleep(0.02)
        with sessions() as s:
            m = s.get(Model, dispatcher.validated[0])
            m.status, m.load_report = "ready", {"n_loaded": 3}
            s.commit()

    t = threading.Thread(target=validate_soon)
    t.start()
    r = upload(api, keys["a"], wait=5)
    t.join()
    assert r.status_code == 201 and r.json()["status"] == "ready" and r.json()["load_report"] == {"n_loaded": 3}


def test_catalog_lists_entries(api, keys):
    names = [e["name"] for e in api.get("/v1/catalog", headers={"X-API-Key": keys["a"]}).json()["entries"]]
    assert "demo-resenc-mae" in names and "openmind-resencl-mae" in names
