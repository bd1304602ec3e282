"""The whole contract against a real uvicorn API and a real Celery worker process, on the
embedded default (SQLite + filesystem broker) and on PostgreSQL + Redis."""

from __future__ import annotations

import math
import signal

import pytest

from helpers_e2e import SMALL, poll, poll_confirmation, register, upload_pilot, wait_item_running
from transferability.fusion import fuse

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def world(stack, checkpoints, tmp_path_factory):  # type: ignore[no-untyped-def]
    c = stack.client()
    ps = upload_pilot(c, tmp_path_factory.mktemp("pilot"))
    models = [register(c, p, f"tiny-{i}") for i, p in enumerate(checkpoints)]
    return {"ps": ps, "models": models}


def test_models_validated_by_worker(stack, world):
    for m in world["models"]:
        assert m["status"] == "ready", m
        assert m["load_report"]["format"] == "nnssl" and m["load_report"]["n_loaded"] > 0
        assert m["load_report"]["sha256"] == m["sha256"]
        names = [s["name"] for s in m["stages"]]
        assert names == ["enc0", "enc1", "enc2", "dec0", "dec1"]
    c = stack.client()
    bad = register(c, b"definitely not a torch checkpoint" * 10, "garbage")
    assert bad["status"] == "invalid" and bad["error"]["code"] in ("unreadable_checkpoint", "wrong_format")
    r = c.post("/v1/rankings", json={"pilot_set_id": world["ps"]["id"], "model_ids": [world["models"][0]["id"], bad["id"]]})
    assert r.status_code == 422 and r.json()["code"] == "model_invalid"


def test_ranking_end_to_end_with_reuse_and_evaluation(stack, world):
    c = stack.client()
    ids = [m["id"] for m in world["models"]]
    body = {"pilot_set_id": world["ps"]["id"], "model_ids": ids, "config": SMALL}
    r = c.post("/v1/rankings", json=body, headers={"Idempotency-Key": "e2e-1"})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    assert c.post("/v1/rankings", json=body, headers={"Idempotency-Key": "e2e-1"}).json()["id"] == rid
    seen: list = []
    done = poll(c, rid, seen=seen)
    assert done["status"] == "succeeded", done
    assert any(it["status"] == "running" and it["stage"] for snap in seen for it in snap["items"]), "no progress seen"
    for it in done["items"]:
        assert it["reused"] is False and it["attempts"] == 1
        assert it["grtd"] <= 0 and 0 <= it["lbtc"] <= 1
        assert it["baselines"] and it["timings"]
    rank = c.get("/v1/rank", params={"ranking_id": rid})
    assert rank.status_code == 200
    expected = fuse({it["model_id"]: (it["grtd"], it["lbtc"]) for it in done["items"]}, 2)
    assert [m["model_id"] for m in rank.json()["models"]] == [m.model_id for m in expected.models]
    # same config again: every score reused, nothing recomputed
    again = c.post("/v1/rankings", json=body).json()
    assert again["status"] == "succeeded" and all(it["reused"] for it in again["items"])
    assert [it["grtd"] for it in again["items"]] == [it["grtd"] for it in done["items"]]
    truth = {mid: 0.5 + 0.1 * i for i, mid in enumerate(ids)}
    ev = c.post(f"/v1/rankings/{rid}/evaluation", json={"truth": truth})
    assert ev.status_code == 201 and {"fused", "grtd", "lbtc"} <= set(ev.json()["metrics"])
    other = stack.client("b")
    assert other.get(f"/v1/rankings/{rid}").status_code == 404
    assert other.get("/v1/rank", params={"ranking_id": rid}).status_code == 404


def test_confirmation_fine_tunes_the_top_models_and_evaluates_the_ranking(stack, world):
    c = stack.client()
    ids = [m["id"] for m in world["models"]]
    rid = c.post("/v1/rankings", json={"pilot_set_id": world["ps"]["id"], "model_ids": ids, "config": SMALL}).json()["id"]
    ranked = poll(c, rid)
    assert ranked["status"] == "succeeded", ranked
    body = {"top_k": 2, "steps": 3, "finetune": {"patch": [16, 16, 16], "batch_size": 1}}
    r = c.post(f"/v1/rankings/{rid}/confirmations", json=body)
    assert r.status_code == 202, r.text
    first = r.json()
    cid = first["id"]
    assert first["status"] == "queued" and first["n_folds"] == 3  # 3 pilot cases: leave-one-out
    assert r.headers["Location"] == f"/v1/rankings/{rid}/confirmations/{cid}"
    top2 = [m["model_id"] for m in first["models"]]
    expected = fuse({it["model_id"]: (it["grtd"], it["lbtc"]) for it in ranked["items"]}, 2)
    assert top2 == [m.model_id for m in expected.models][:2] and first["predicted_top"] == top2[0]
    seen: list = []
    done = poll_confirmation(c, rid, cid, seen=seen)
    assert done["status"] == "succeeded", (done, stack.log("worker")[-3000:])
    assert any(snap["status"] == "running" for snap in seen), "no progress seen"
    assert done["progress"] == 1.0 and done["finished_at"] and done["steps"] == 3
    for m in done["models"]:
        assert m["status"] == "succeeded" and m["n_folds_done"] == done["n_folds"] == 3
        assert math.isfinite(m["dice_mean"]) and 0.0 <= m["dice_mean"] <= 1.0
        assert m["dice_se"] is not None and math.isfinite(m["dice_se"])
        for f in m["folds"]:
            assert f["status"] == "succeeded" and f["attempts"] == 1 and not f["reused"]
            assert 0.0 <= f["dice"] <= 1.0 and set(f["per_class"]) == {"1", "2"}
    assert isinstance(done["top1_confirmed"], bool)
    ev = done["evaluation"]
    assert ev is not None and ev["n_models"] == 2 and {"fused", "grtd", "lbtc"} <= set(ev["metrics"])
    assert math.isfinite(ev["metrics"]["fused"]["weighted_tau"])
    # the same request again: every fold reused at once
    again = c.post(f"/v1/rankings/{rid}/confirmations", json=body).json()
    assert again["status"] == "succeeded" and all(f["reused"] for m in again["models"] for f in m["folds"])
    assert [m["dice_mean"] for m in again["models"]] == [m["dice_mean"] for m in done["models"]]
    other = stack.client("b")
    assert other.get(f"/v1/rankings/{rid}/confirmations/{cid}").status_code == 404
    assert other.post(f"/v1/rankings/{rid}/confirmations", json=body).status_code == 404
    assert other.post(f"/v1/rankings/{rid}/confirmations/{cid}/cancel").status_code == 404


def test_worker_killed_mid_task_job_still_completes(stack, world):
    c = stack.client()
    mid = world["models"][1]["id"]
    body = {"pilot_set_id": world["ps"]["id"], "model_ids": [mid], "config": {**SMALL, "seed": 7}}
    rid = c.post("/v1/rankings", json=body).json()["id"]
    wait_item_running(c, rid)
    children = stack.pool_children()
    assert children, "the worker has no pool process"
    for child in children:
        child.send_signal(signal.SIGKILL)
    done = poll(c, rid)
    assert done["status"] == "succeeded", (done, stack.log("worker")[-3000:])
    assert done["items"][0]["attempts"] == 2


def test_cancel_running_ranking(stack, world):
    c = stack.client()
    ids = [m["id"] for m in world["models"]]
    body = {"pilot_set_id": world["ps"]["id"], "model_ids": ids, "config": {**SMALL, "seed": 11}}
    rid = c.post("/v1/rankings", json=body).json()["id"]
    wait_item_running(c, rid)
    r = c.post(f"/v1/rankings/{rid}/cancel")
    assert r.status_code == 202
    done = poll(c, rid)
    assert done["status"] == "cancelled", done
    assert sum(it["status"] == "cancelled" for it in done["items"]) >= 2
    assert c.get("/v1/rank", params={"ranking_id": rid}).status_code == 409
