"""Confirmations through the API: validation, fold units and dispatch, reuse of fine-tune records,
progress and Dice read back, the top-1 verdict, the automatic evaluation, cancel, isolation.

Fine-tune records are written here the way the worker writes them (models_registry.confirmations);
the worker side runs for real in tests/worker/test_confirmation_tasks.py and tests/integration."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models_registry.confirmations import fold_plan, refresh_confirmation, store_record
from models_registry.finetune_cost import COST_TABLE
from models_registry.tables import Confirmation, ConfirmationItem, Evaluation, Model, RankingJob
from tests.app.test_api_rankings import SCORES, complete, start, world  # noqa: F401 - the `world` fixture
from transferability.evaluation import weighted_tau
from transferability.fusion import fuse

DEMO_STAGES = [{"name": f"enc{i}", "channels": c, "stride": [s, s, s], "role": "encoder"} for i, (c, s) in enumerate(zip((8, 16, 32, 64), (1, 2, 4, 8)))]


@pytest.fixture
def ranked(api, world, sessions):  # type: ignore[no-untyped-def]
    """A finished ranking of the four models (fused order from SCORES; K = 2, two pilot cases)."""
    rid = start(api, world).json()["id"]
    complete(sessions, rid)
    order = [m.model_id for m in fuse({world["models"][i]: SCORES[i] for i in range(4)}, 2).models]
    return {**world, "rid": rid, "order": order}


def confirm(api, ranked, **body):  # type: ignore[no-untyped-def]
    return api.post(f"/v1/rankings/{ranked['rid']}/confirmations", headers=ranked["h"], json=body)


def finish_units(sessions, cid, dice_of, fail=()):  # type: ignore[no-untyped-def]
    """Store a fine-tune record per queued unit as the worker does; `dice_of(model, fold)`."""
    with sessions() as s:
        conf = s.get(Confirmation, cid)
        ps_id = s.get(RankingJob, conf.ranking_id).pilot_set_id
        for it in conf.items:
            if it.status != "queued":
                continue
            if (it.model_id, it.fold) in fail:
                it.status, it.error_code, it.error_detail = "failed", "finetune_error", "boom"
                continue
            d = dice_of(it.model_id, it.fold)
            rec = store_record(s, pilot_set_id=ps_id, model_id=it.model_id, key_hash=it.key_hash, device="cpu", fold=it.fold,
                               dice=d, per_class={"1": d, "2": d / 2}, result={"dice": d}, code_version="1")
            it.status, it.record_id, it.progress = "succeeded", rec.id, 1.0
        s.flush()
        refresh_confirmation(s, cid)
        s.commit()


def test_409_until_the_ranking_has_finished(api, world, sessions, dispatcher):
    rid = start(api, world).json()["id"]
    r = api.post(f"/v1/rankings/{rid}/confirmations", headers=world["h"], json={"top_k": 2, "steps": 5})
    assert r.status_code == 409 and r.json()["code"] == "ranking_not_finished"
    assert dispatcher.finetuned == []


def test_top_k_queues_one_unit_per_model_and_fold(api, ranked, dispatcher, sessions):
    r = confirm(api, ranked, top_k=2, steps=5)
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["Location"] == f"/v1/rankings/{ranked['rid']}/confirmations/{body['id']}"
    assert [m["model_id"] for m in body["models"]] == ranked["order"][:2]
    assert [m["predicted_rank"] for m in body["models"]] == [1, 2] and body["predicted_top"] == ranked["order"][0]
    assert body["n_folds"] == 2 and sorted(len(f) for f in body["fold_plan"]) == [1, 1]  # 2 cases: leave-one-out
    assert body["status"] == "queued" and body["steps"] == 5 and body["seed"] == 0
    # the benchmark truth's transfer recipe: encoder frozen for half the steps, then at a tenth of the rate
    assert body["finetune"]["encoder_warmup_steps"] == 2 and body["finetune"]["encoder_lr_scale"] == 0.1
    assert all(len(m["folds"]) == 2 and m["dice_mean"] is None for m in body["models"])
    with sessions() as s:
        units = s.get(Confirmation, body["id"]).items
        assert sorted(dispatcher.finetuned) == sorted(u.id for u in units) and len(units) == 4
        assert len({u.key_hash for u in units}) == 2  # one key per fold, shared by the models (the model is in the row's key)
    assert body["top1_confirmed"] is None and body["evaluation"] is None


def test_bad_requests_are_422(api, ranked, settings):
    cases = [
        ({"top_k": 5, "steps": 5}, "top_k_too_large"),
        ({"models": ["mdl_nope"], "steps": 5}, "model_not_scored"),
        ({"top_k": 2, "models": [ranked["order"][0]], "steps": 5}, "invalid_request"),
        ({"top_k": 2, "steps": settings.max_finetune_steps + 1}, "steps_over_cap"),
        ({"top_k": 2, "steps": 5, "finetune": {"nope": 1}}, "invalid_finetune_config"),
        ({"top_k": 2, "steps": 5, "finetune": {"seed": 3}}, "invalid_finetune_config"),
        ({"top_k": 2, "steps": 5, "finetune": {"patch": [0, 16, 16]}}, "invalid_finetune_config"),
        ({"top_k": 2, "steps": 5, "folds": 3}, "too_many_folds"),
    ]
    for body, code in cases:
        r = confirm(api, ranked, **body)
        assert r.status_code == 422 and r.json()["code"] == code, (body, r.text)
    assert confirm(api, ranked, top_k=2, steps=0).status_code == 422  # schema: steps >= 1


def test_finished_confirmation_reports_dice_verdict_and_records_an_evaluation(api, ranked, sessions):
    top, second = ranked["order"][:2]
    cid = confirm(api, ranked, top_k=2, steps=5).json()["id"]
    dice = {(top, 0): 0.70, (top, 1): 0.74, (second, 0): 0.80, (second, 1): 0.84}
    finish_units(sessions, cid, lambda m, f: dice[(m, f)])
    body = api.get(f"/v1/rankings/{ranked['rid']}/confirmations/{cid}", headers=ranked["h"]).json()
    assert body["status"] == "succeeded" and body["progress"] == 1.0 and body["finished_at"]
    m0, m1 = body["models"]
    assert m0["dice_mean"] == pytest.approx(0.72) and m0["dice_std"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert m1["dice_se"] == pytest.approx(np.std([0.80, 0.84], ddof=1) / math.sqrt(2))
    assert [f["dice"] for f in m0["folds"]] == [0.70, 0.74] and m0["per_class"]["2"] == pytest.approx(0.36)
    # the predicted top is 0.08 below the best, whose standard error is 0.02: not confirmed
    assert body["best_model"] == second and body["top1_confirmed"] is False and body["top1_note"] is None
    ev = body["evaluation"]
    assert ev is not None and ev["n_models"] == 2
    fused = fuse({top: SCORES[ranked["models"].index(top)], second: SCORES[ranked["models"].index(second)]}, 2)
    expected = weighted_tau([m.score for m in fused.models], [0.72 if m.model_id == top else 0.82 for m in fused.models])
    assert ev["metrics"]["fused"]["weighted_tau"] == pytest.approx(expected) and expected < 0
    with sessions() as s:
        row = s.get(Evaluation, ev["id"])
        assert row.source == "confirmation" and row.confirmation_id == cid and row.truth[top] == pytest.approx(0.72)


def test_the_same_request_again_reuses_every_fold(api, ranked, sessions, dispatcher):
    cid = confirm(api, ranked, top_k=2, steps=5).json()["id"]
    finish_units(sessions, cid, lambda m, f: 0.5 + 0.1 * f + (0.2 if m == ranked["order"][0] else 0.0))
    sent = len(dispatcher.finetuned)
    again = confirm(api, ranked, top_k=2, steps=5).json()
    assert len(dispatcher.finetuned) == sent  # nothing queued
    assert again["status"] == "succeeded" and all(f["reused"] for m in again["models"] for f in m["folds"])
    assert again["top1_confirmed"] is True and again["evaluation"] is not None  # recorded at once, by the API
    other_seed = confirm(api, ranked, top_k=2, steps=5, seed=1).json()
    assert other_seed["status"] == "queued" and len(dispatcher.finetuned) == sent + 4


def test_one_model_gives_no_tau_and_says_so(api, ranked, sessions):
    cid = confirm(api, ranked, top_k=1, steps=5).json()["id"]
    finish_units(sessions, cid, lambda m, f: 0.6)
    body = api.get(f"/v1/rankings/{ranked['rid']}/confirmations/{cid}", headers=ranked["h"]).json()
    assert body["status"] == "succeeded" and body["evaluation"] is None
    assert "at least 2" in body["note"] and body["top1_confirmed"] is None and "fewer than 2" in body["top1_note"]


def test_a_failed_fold_leaves_that_model_out(api, ranked, sessions):
    top, second = ranked["order"][:2]
    cid = confirm(api, ranked, top_k=2, steps=5).json()["id"]
    finish_units(sessions, cid, lambda m, f: 0.6, fail=[(second, 1)])
    body = api.get(f"/v1/rankings/{ranked['rid']}/confirmations/{cid}", headers=ranked["h"]).json()
    assert body["status"] == "partial" and body["models"][1]["status"] == "partial"
    assert body["models"][1]["folds"][1]["error"]["code"] == "finetune_error" and body["models"][1]["n_folds_done"] == 1
    assert body["evaluation"] is None and "1 model(s)" in body["note"]


def test_cancel(api, ranked, sessions):
    cid = confirm(api, ranked, top_k=2, steps=5).json()["id"]
    url = f"/v1/rankings/{ranked['rid']}/confirmations/{cid}/cancel"
    r = api.post(url, headers=ranked["h"])
    assert r.status_code == 202 and r.json()["status"] == "cancelled" and r.json()["cancel_requested"] is True
    assert all(f["status"] == "cancelled" for m in r.json()["models"] for f in m["folds"])
    assert r.json()["note"] == "cancelled: no evaluation"
    assert api.post(url, headers=ranked["h"]).json()["code"] == "confirmation_finished"


def test_other_tenants_get_404(api, ranked, keys):
    cid = confirm(api, ranked, top_k=2, steps=5).json()["id"]
    hb = {"X-API-Key": keys["b"]}
    base = f"/v1/rankings/{ranked['rid']}/confirmations"
    assert api.get(f"{base}/{cid}", headers=hb).status_code == 404
    assert api.post(f"{base}/{cid}/cancel", headers=hb).status_code == 404
    assert api.post(base, headers=hb, json={"top_k": 1, "steps": 5}).json()["code"] == "ranking_not_found"
    assert api.get(f"{base}/cf_nope", headers=ranked["h"]).json()["code"] == "confirmation_not_found"


def test_broker_down_fails_the_units_with_503(api, ranked, dispatcher):
    dispatcher.fail = True
    r = confirm(api, ranked, top_k=2, steps=5)
    assert r.status_code == 503 and r.json()["code"] == "broker_unavailable"


def test_expected_cost_from_the_measured_table(api, ranked, sessions):
    import json

    entry = json.loads(COST_TABLE.read_text())["entries"][0]
    top = ranked["order"][0]
    with sessions() as s:
        s.get(Model, top).stages = DEMO_STAGES
        s.get(Model, ranked["order"][1]).stages = [{**st, "channels": 2 * st["channels"]} for st in DEMO_STAGES]
        s.commit()
    body = confirm(api, ranked, top_k=2, steps=10, finetune={"patch": [16, 16, 16]}).json()
    cost = body["expected_cost"]["per_model"]
    scale = 16**3 / math.prod(entry["patch"])
    assert cost[top]["seconds_per_model"] == pytest.approx(2 * 10 * entry["seconds_per_step"] * scale + 2 * entry["seconds_per_test_case"])
    other = cost[ranked["order"][1]]
    assert other["seconds_per_model"] is None and "no measured fine-tuning cost" in other["reason"]
    assert body["expected_cost"]["seconds"] is None  # one model has no estimate
    assert body["finetune"]["patch"] == [16, 16, 16] and body["finetune"]["threads"] is None


def test_fold_plan_holds_every_case_out_once():
    for n, f in [(2, 2), (5, 5), (7, 5), (12, 5), (9, 3)]:
        plan = fold_plan(n, f, seed=3)
        assert sorted(i for fold in plan for i in fold) == list(range(n))
        assert max(map(len, plan)) - min(map(len, plan)) <= 1
        assert plan == fold_plan(n, f, seed=3)
    assert fold_plan(12, 5, 0) != fold_plan(12, 5, 1)
    with pytest.raises(ValueError):
        fold_plan(1, 2, 0)
    with pytest.raises(ValueError):
        fold_plan(4, 5, 0)


def test_units_are_unique_per_model_and_fold(ranked, api, sessions):
    cid = confirm(api, ranked, top_k=2, steps=5).json()["id"]
    with sessions() as s:
        units = s.query(ConfirmationItem).filter_by(confirmation_id=cid).all()
        assert len({(u.model_id, u.fold) for u in units}) == len(units) == 4
