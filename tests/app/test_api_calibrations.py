"""Calibrations through the API: fit on the tenant's evaluations, leave-one-out figures and warnings,
`/v1/rank?fusion=calibrated`, the `gate` every ranking response names, isolation between tenants."""

from __future__ import annotations

import pytest

from tests.app.test_api_rankings import SCORES, complete, start, world  # noqa: F401 - the `world` fixture
from transferability.fusion import task_alpha


def evaluated_rankings(api, world, sessions, truths):  # type: ignore[no-untyped-def]
    rids = []
    for truth_of in truths:
        started = start(api, world).json()
        rid = started["id"]
        if started["status"] != "succeeded":  # later rankings reuse the first one's stored scores
            complete(sessions, rid)
        truth = {world["models"][i]: truth_of(i) for i in range(4)}
        assert api.post(f"/v1/rankings/{rid}/evaluation", headers=world["h"], json={"truth": truth}).status_code == 201
        rids.append(rid)
    return rids


def test_no_evaluations_is_409(api, world):
    r = api.post("/v1/calibrations", headers=world["h"], json={})
    assert r.status_code == 409 and r.json()["code"] == "no_usable_evaluations"
    assert api.post("/v1/calibrations", headers=world["h"], json={"kind": "nope"}).status_code == 422


def test_truth_that_follows_grtd_moves_the_gate_to_grtd(api, world, sessions, keys):
    # truth ranks like GRTD (SCORES: model 1 > 2 > 0 > 3); the default gate at K = 2 leans on LBTC
    grtd_like = [lambda i: SCORES[i][0] + 1.0, lambda i: 2 * SCORES[i][0] + 3.0, lambda i: SCORES[i][0] + 0.5]
    rids = evaluated_rankings(api, world, sessions, grtd_like)
    r = api.post("/v1/calibrations", headers=world["h"], json={})
    assert r.status_code == 201, r.text
    cal = r.json()
    assert cal["kind"] == "per_k" and cal["distinct_k"] == [2] and cal["n_evaluations"] == 3
    assert cal["alpha_by_k"]["2"] > task_alpha(2) and cal["mean_tau_fitted"] > cal["mean_tau_default"]
    assert cal["loo_tau_fitted"] is not None and len(cal["loo"]) == 3
    assert any("below 5" in w or "5" in w for w in cal["warnings"])
    default = api.get("/v1/rank", headers=world["h"], params={"ranking_id": rids[0]}).json()
    assert default["gate"] == {"source": "default", "calibration_id": None}
    calibrated = api.get("/v1/rank", headers=world["h"], params={"ranking_id": rids[0], "fusion": "calibrated"}).json()
    assert calibrated["gate"] == {"source": "calibrated", "calibration_id": cal["id"]}
    assert calibrated["alpha"] == pytest.approx(cal["alpha_by_k"]["2"])
    by_grtd = sorted(range(4), key=lambda i: -SCORES[i][0])
    assert [m["model_id"] for m in calibrated["models"]] == [world["models"][i] for i in by_grtd]
    # the default never changes silently
    assert api.get("/v1/rank", headers=world["h"], params={"ranking_id": rids[0]}).json()["models"] == default["models"]
    pinned = api.get("/v1/rank", headers=world["h"], params={"ranking_id": rids[0], "alpha": 0.5}).json()
    assert pinned["gate"]["source"] == "request"
    both = api.get("/v1/rank", headers=world["h"], params={"ranking_id": rids[0], "fusion": "calibrated", "alpha": 0.5})
    assert both.status_code == 422 and both.json()["code"] == "conflicting_fusion"
    listed = api.get("/v1/calibrations", headers=world["h"]).json()["calibrations"]
    assert [c["id"] for c in listed] == [cal["id"]] and len(listed[0]["evaluation_ids"]) == 3
    hb = {"X-API-Key": keys["b"]}
    assert api.get("/v1/calibrations", headers=hb).json()["calibrations"] == []
    assert api.get("/v1/rank", headers=hb, params={"ranking_id": rids[0], "fusion": "calibrated"}).status_code == 404


def test_calibrated_without_a_calibration_is_409(api, world, sessions):
    rid = start(api, world).json()["id"]
    complete(sessions, rid)
    r = api.get("/v1/rank", headers=world["h"], params={"ranking_id": rid, "fusion": "calibrated"})
    assert r.status_code == 409 and r.json()["code"] == "no_calibration"


def test_the_latest_evaluation_of_a_ranking_is_its_one_example(api, world, sessions):
    rid = evaluated_rankings(api, world, sessions, [lambda i: SCORES[i][1]])[0]
    truth = {world["models"][i]: SCORES[i][0] for i in range(4)}
    api.post(f"/v1/rankings/{rid}/evaluation", headers=world["h"], json={"truth": truth})
    cal = api.post("/v1/calibrations", headers=world["h"], json={"kind": "per_k"}).json()
    assert cal["n_evaluations"] == 1 and cal["loo_tau_fitted"] is None  # one example: no leave-one-out
    assert cal["alpha_by_k"]["2"] > task_alpha(2)  # fitted on the second (GRTD-like) truth
