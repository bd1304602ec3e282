"""Rankings: creation, idempotency, score reuse, cancel, read-time fusion, evaluation, isolation.

Score rows are written here the way the worker writes them (models_registry), so these tests
exercise the API's side of the contract; the worker side runs for real in tests/integration.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models_registry.jobs import refresh_job
from models_registry.tables import Model, ModelScore, RankingItem, RankingJob
from tests.utils.factories import score_row
from tests.utils.archives import nnunet_files, write_zip
from transferability.evaluation import kendall_tau, spearman, top1_regret, weighted_tau
from transferability.bootstrap import rank_uncertainty
from transferability.fusion import fuse

SPEC = {"name": "m", "format": "nnssl", "catalog": "demo-resenc-mae"}


@pytest.fixture
def world(api, keys, tmp_path):  # type: ignore[no-untyped-def]
    """Tenant a: one pilot set (K=2) and four models."""
    h = {"X-API-Key": keys["a"]}
    with open(write_zip(tmp_path / "p.zip", nnunet_files(2)), "rb") as fh:
        ps = api.post("/v1/pilot-sets", headers=h, files={"archive": ("p.zip", fh)}).json()
    models = []
    for i in range(4):
        spec = {**SPEC, "name": f"model-{i}"}
        r = api.post("/v1/models", headers=h, files={"spec": (None, json.dumps(spec)), "checkpoint": ("c", f"w{i}".encode() * 50)})
        models.append(r.json()["id"])
    return {"h": h, "ps": ps["id"], "models": models}


def start(api, world, models=None, config=None, key=None, **extra):  # type: ignore[no-untyped-def]
    body = {"pilot_set_id": world["ps"], "model_ids": models or world["models"], **extra}
    if config is not None:
        body["config"] = config
    headers = dict(world["h"])
    if key:
        headers["Idempotency-Key"] = key
    return api.post("/v1/rankings", headers=headers, json=body)


SCORES = {0: (-0.30, 0.80), 1: (-0.10, 0.70), 2: (-0.20, 0.95), 3: (-0.50, 0.60)}


def replicates_for(idx: int, seed: int = 0, draws: str = "d0", n: int = 50) -> dict:
    """Stored replicates as the worker writes them: model idx's scores plus noise, on shared draws."""
    rng = np.random.default_rng([idx, seed])
    g, l = SCORES[idx]
    return {"method": "half-sampling", "n_cases": 8, "subset_size": 4, "n_replicates": n, "seed": 0, "draws": draws,
            "grtd": (g + rng.normal(0, 0.03, n)).tolist(), "lbtc": (l + rng.normal(0, 0.03, n)).tolist()}


def complete(sessions, ranking_id, fail=(), baselines=True, replicates=None):  # type: ignore[no-untyped-def]
    """Write score rows and finish items as the worker does (`replicates(idx)`: their bootstrap replicates)."""
    with sessions() as s:
        job = s.get(RankingJob, ranking_id)
        for it in job.items:
            idx = [m.id for m in s.query(Model).order_by(Model.created_at, Model.id)].index(it.model_id)
            if idx in fail:
                it.status, it.error_code, it.error_detail = "failed", "scoring_error", "boom"
                continue
            g, l = SCORES[idx]
            sc = score_row(job.pilot_set_id, it.model_id, job.config_hash, config=job.config, grtd=g, lbtc=l,
                           baselines={"logme": 0.1 * idx, "gbc": -float(idx)} if baselines else {},
                           replicates=replicates(idx) if replicates else None)
            s.add(sc)
            s.flush()
            it.status, it.score_id, it.progress = "succeeded", sc.id, 1.0
        s.flush()
        refresh_job(s, ranking_id)
        s.commit()


def test_create_ranking_dispatches_one_task_per_model(api, world, dispatcher, sessions):
    r = start(api, world)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "queued" and body["progress"] == 0
    assert r.headers["Location"] == f"/v1/rankings/{body['id']}"
    assert [it["model_id"] for it in body["items"]] == world["models"]
    assert all(it["status"] == "queued" and it["grtd"] is None for it in body["items"])
    with sessions() as s:
        item_ids = [it.id for it in s.get(RankingJob, body["id"]).items]
    assert sorted(dispatcher.scored) == sorted(item_ids)
    assert len(body["config_hash"]) == 64 and body["config"]["n_samples"] == 4096


def test_idempotency_key(api, world, dispatcher):
    first = start(api, world, key="k-1")
    again = start(api, world, key="k-1")
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert len(dispatcher.scored) == 4
    other = start(api, world, models=world["models"][:2], key="k-1")
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    assert start(api, world, key="k-2").json()["id"] != first.json()["id"]



def test_a_concurrent_duplicate_key_replays_with_location(api, world, dispatcher, monkeypatch):
    """Two requests with one Idempotency-Key race: the loser's insert hits the unique constraint and it
    answers with the winner's job, flagged as replayed and with the same Location as a plain replay."""
    from app.services import rankings as service

    first = start(api, world, key="k-race")
    real = service.find_replay
    calls = []

    def not_yet_committed(session, tenant, key, body_hash):  # type: ignore[no-untyped-def]
        calls.append(key)
        return None if len(calls) == 1 else real(session, tenant, key, body_hash)

    monkeypatch.setattr(service, "find_replay", not_yet_committed)
    again = start(api, world, key="k-race")
    assert len(calls) == 2  # the pre-check missed, the insert failed, the lookup after it found the winner
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.headers["Location"] == first.headers["Location"] == f"/v1/rankings/{first.json()['id']}"
    assert len(dispatcher.scored) == 4  # nothing dispatched twice


def test_rank_409_until_done_then_fused_order(api, world, sessions):
    rid = start(api, world).json()["id"]
    r = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"])
    assert r.status_code == 409 and r.json()["code"] == "ranking_incomplete" and r.headers["Retry-After"] == "5"
    r = api.get("/v1/rank", params={"ranking_id": rid, "partial": "true"}, headers=world["h"])
    assert r.status_code == 409 and r.json()["code"] == "no_scores"
    complete(sessions, rid)
    ranking = api.get(f"/v1/rankings/{rid}", headers=world["h"]).json()
    assert ranking["status"] == "succeeded" and ranking["progress"] == 1.0
    assert ranking["items"][2]["grtd"] == SCORES[2][0] and ranking["items"][2]["baselines"]["logme"] == pytest.approx(0.2)
    body = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()
    expected = fuse({world["models"][i]: SCORES[i] for i in range(4)}, 2)
    assert body["alpha"] == pytest.approx(expected.alpha) and body["K"] == 2 and body["partial"] is False
    assert [m["model_id"] for m in body["models"]] == [m.model_id for m in expected.models]
    for got, exp in zip(body["models"], expected.models):
        assert got["rank"] == exp.rank and got["fused"] == pytest.approx(exp.score)
        assert got["grtd_norm"] == pytest.approx(exp.grtd_norm) and got["lbtc_norm"] == pytest.approx(exp.lbtc_norm)
        assert got["name"].startswith("model-")
    pinned = api.get("/v1/rank", params={"ranking_id": rid, "alpha": 1.0}, headers=world["h"]).json()
    assert pinned["alpha"] == 1.0 and pinned["models"][0]["model_id"] == world["models"][1]  # best GRTD
    again = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()
    assert again == body


def test_rank_carries_the_uncertainty_fused_from_stored_replicates(api, world, sessions):
    rid = start(api, world).json()["id"]
    complete(sessions, rid, replicates=replicates_for)
    body = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()
    u = body["uncertainty"]
    ids = world["models"]
    want = rank_uncertainty({ids[i]: SCORES[i] for i in range(4)},
                            {ids[i]: (replicates_for(i)["grtd"], replicates_for(i)["lbtc"]) for i in range(4)},
                            2, 8, a=body["a"], b=body["b"])
    assert u["available"] is True and u["n_replicates_used"] == 50 and u["n_cases"] == 8 and u["effective_cases"]["grtd"] == 8
    assert u["n_distinct_halves"] == 35 and "note" not in u  # 50 seeded draws among the C(8, 4) = 70 halves
    assert u["models"].keys() == set(ids) and u["p_above"] == want["p_above"]
    for m in ids:
        assert u["models"][m]["fused_interval"] == pytest.approx(want["models"][m]["fused_interval"])
        assert u["models"][m]["p_rank1"] == want["models"][m]["p_rank1"]
    top = body["models"][0]["model_id"]
    assert u["top_model"] == top and u["stable"] == (u["models"][top]["p_rank1"] >= 0.9)
    lean = api.get("/v1/rank", params={"ranking_id": rid, "uncertainty": "false"}, headers=world["h"]).json()
    assert "uncertainty" not in lean and lean["models"] == body["models"]


def test_report_is_one_self_contained_page_for_its_owner_only(api, world, sessions, keys):
    rid = start(api, world).json()["id"]
    r = api.get(f"/v1/rankings/{rid}/report", headers=world["h"])
    assert r.status_code == 409 and r.json()["code"] == "ranking_incomplete"
    complete(sessions, rid, replicates=replicates_for)
    truth = {world["models"][i]: 0.8 - 0.1 * i for i in range(4)}
    assert api.post(f"/v1/rankings/{rid}/evaluation", headers=world["h"], json={"truth": truth}).status_code == 201
    r = api.get(f"/v1/rankings/{rid}/report", headers=world["h"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert page.startswith("<!DOCTYPE html>") and page.count('<figure data-figure="') == 4 and page.count("<svg") == 4
    lowered = page.lower()
    for remote in ("<script", "<link", "<img", "@import", "url(http", 'src="http', 'href="http', "@font-face"):
        assert remote not in lowered, remote
    assert "Evaluation against fine-tuning" in page and "weighted τ" in page and "0" * 64 in page  # provenance sha256
    assert all(f"model-{i}" in page for i in range(4)) and "Stable" in page or "Not stable" in page
    other = api.get(f"/v1/rankings/{rid}/report", headers={"X-API-Key": keys["b"]})
    assert other.status_code == 404


def test_rank_says_why_there_is_no_uncertainty(api, world, sessions):
    rid = start(api, world).json()["id"]
    complete(sessions, rid)  # rows without replicates (n_bootstrap = 0, or scored before they existed)
    u = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()["uncertainty"]
    assert u["available"] is False and "no replicates" in u["reason"] and len(u["models_without"]) == 4
    rid = start(api, world, config={"n_samples": 300}).json()["id"]
    complete(sessions, rid, replicates=lambda i: replicates_for(i, draws=f"d{i % 2}"))
    u = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()["uncertainty"]
    assert u["available"] is False and "different draws" in u["reason"]
    rid = start(api, world, config={"n_samples": 400}).json()["id"]  # a one-case pilot set, as the worker stores it
    complete(sessions, rid, replicates=lambda i: {"method": "half-sampling", "n_cases": 1,
                                                  "unavailable": "a pilot set of one case cannot be resampled"})
    u = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()["uncertainty"]
    assert u["available"] is False and "one case cannot be resampled" in u["reason"] and "models" not in u


@pytest.mark.parametrize(
    ("device", "precision", "stored_mode", "reused"),
    [
        ("cpu", "mixed", "cpu-fp32", True),
        ("cpu", "fp32", "cpu-fp32", True),  # precision changes nothing on the CPU: same mode, reused
        ("cpu", "mixed", "cuda-bf16", False),  # a GPU score is not a CPU score
        ("cuda", "mixed", "cuda-bf16", True),
        ("cuda", "fp32", "cuda-bf16", False),  # fp32 asked on the GPU: the bf16 score does not do
        ("cuda", "fp32", "cuda-fp32", True),
        ("cuda", "mixed", "cpu-fp32", False),
        ("auto", "mixed", "cpu-fp32", False),  # the API cannot know the workers' device: the worker decides
    ],
)
def test_scores_are_reused_only_in_the_numeric_mode_the_workers_will_use(api, world, sessions, dispatcher, monkeypatch,
                                                                          device, precision, stored_mode, reused):
    rid = start(api, world, config={"n_samples": 256}).json()["id"]
    complete(sessions, rid)
    with sessions() as s:
        for sc in s.query(ModelScore).all():
            sc.numeric_mode = stored_mode
        s.commit()
    monkeypatch.setattr(api.app.state.ctx.settings, "device", device)
    dispatcher.scored.clear()
    body = start(api, world, config={"n_samples": 256, "precision": precision}).json()
    assert body["status"] == ("succeeded" if reused else "queued")
    assert [it["reused"] for it in body["items"]] == [reused] * len(body["items"])
    assert len(dispatcher.scored) == (0 if reused else len(body["items"]))


def test_precision_is_validated_and_not_part_of_the_config_hash(api, world):
    a = start(api, world, config={"n_samples": 256}).json()
    b = start(api, world, config={"n_samples": 256, "precision": "fp32"}).json()
    assert a["config_hash"] == b["config_hash"]
    r = start(api, world, config={"precision": "fp16"})
    assert r.status_code == 422 and "precision" in r.json()["detail"]


def test_fusion_params_stored_with_the_ranking(api, world, sessions):
    rid = start(api, world, fusion={"alpha": 0.0}).json()["id"]
    complete(sessions, rid)
    body = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()
    assert body["alpha"] == 0.0 and body["models"][0]["model_id"] == world["models"][2]  # best LBTC


def test_score_reuse_without_recomputation(api, world, dispatcher, sessions):
    rid = start(api, world, config={"n_samples": 256}).json()["id"]
    complete(sessions, rid)
    dispatcher.scored.clear()
    r = start(api, world, config={"n_samples": 256})
    body = r.json()
    assert body["status"] == "succeeded" and all(it["reused"] for it in body["items"])
    assert dispatcher.scored == []
    assert api.get("/v1/rank", params={"ranking_id": body["id"]}, headers=world["h"]).status_code == 200
    other = start(api, world, config={"n_samples": 512}).json()
    assert other["status"] == "queued" and len(dispatcher.scored) == 4 and other["config_hash"] != body["config_hash"]
    with sessions() as s:
        assert s.query(ModelScore).count() == 4


def test_partial_results(api, world, sessions):
    rid = start(api, world).json()["id"]
    complete(sessions, rid, fail=(3,))
    body = api.get(f"/v1/rankings/{rid}", headers=world["h"]).json()
    assert body["status"] == "partial" and body["items"][3]["error"] == {"code": "scoring_error", "detail": "boom"}
    r = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"])
    assert r.status_code == 409 and "Retry-After" not in r.headers
    r = api.get("/v1/rank", params={"ranking_id": rid, "partial": "true"}, headers=world["h"])
    assert r.status_code == 200 and r.json()["missing"] == [world["models"][3]] and len(r.json()["models"]) == 3


def test_cancel(api, world, sessions):
    rid = start(api, world).json()["id"]
    with sessions() as s:  # one item already running on a worker
        job = s.get(RankingJob, rid)
        job.items[0].status = "running"
        s.commit()
    r = api.post(f"/v1/rankings/{rid}/cancel", headers=world["h"])
    assert r.status_code == 202 and r.json()["cancel_requested"] is True
    assert [it["status"] for it in r.json()["items"]] == ["running", "cancelled", "cancelled", "cancelled"]
    assert r.json()["status"] == "running"  # until the running task notices
    with sessions() as s:
        s.get(RankingJob, rid).items[0].status = "cancelled"
        s.flush()
        refresh_job(s, rid)
        s.commit()
    assert api.get(f"/v1/rankings/{rid}", headers=world["h"]).json()["status"] == "cancelled"
    r = api.post(f"/v1/rankings/{rid}/cancel", headers=world["h"])
    assert r.status_code == 409 and r.json()["code"] == "ranking_finished"


def test_rejections_and_isolation(api, world, keys, sessions):
    hb = {"X-API-Key": keys["b"]}
    with sessions() as s:
        m = s.get(Model, world["models"][1])
        m.status, m.error_code, m.error_detail = "invalid", "missing_keys", "encoder keys absent"
        s.commit()
    r = start(api, world)
    assert r.status_code == 422 and r.json()["code"] == "model_invalid" and "missing_keys" in r.json()["errors"][0]["problem"]
    ok = [world["models"][0], world["models"][2]]
    assert start(api, world, models=[ok[0], ok[0]]).json()["code"] == "duplicate_models"
    assert start(api, world, models=[ok[0], "mdl_nope"]).status_code == 404
    r = start(api, world, models=ok, config={"n_samples": 1})
    assert r.status_code == 422 and r.json()["code"] == "invalid_config"
    r = start(api, world, models=ok, config={"bogus": 1})
    assert r.status_code == 422 and "bogus" in r.json()["detail"]
    rid = start(api, world, models=ok).json()["id"]
    # tenant b sees none of it
    assert api.get(f"/v1/rankings/{rid}", headers=hb).status_code == 404
    assert api.get("/v1/rank", params={"ranking_id": rid}, headers=hb).status_code == 404
    assert api.post(f"/v1/rankings/{rid}/cancel", headers=hb).status_code == 404
    assert api.post(f"/v1/rankings/{rid}/evaluation", headers=hb, json={"truth": {}}).status_code == 404
    assert api.get("/v1/rankings", headers=hb).json()["rankings"] == []
    r = api.post("/v1/rankings", headers=hb, json={"pilot_set_id": world["ps"], "model_ids": ok})
    assert r.status_code == 404 and r.json()["code"] == "pilot_set_not_found"


def test_evaluation_metrics(api, world, sessions):
    rid = start(api, world).json()["id"]
    complete(sessions, rid)
    truth = {world["models"][i]: d for i, d in enumerate([0.80, 0.78, 0.85, 0.70])}
    r = api.post(f"/v1/rankings/{rid}/evaluation", headers=world["h"], json={"truth": truth})
    assert r.status_code == 201, r.text
    metrics = r.json()["metrics"]
    assert set(metrics) == {"fused", "grtd", "lbtc", "logme", "gbc"}
    ids = sorted(truth)
    for name, idx in (("grtd", 0), ("lbtc", 1)):
        s = [SCORES[world["models"].index(m)][idx] for m in ids]
        t = [truth[m] for m in ids]
        assert metrics[name]["weighted_tau"] == pytest.approx(weighted_tau(s, t))
        assert metrics[name]["kendall_tau"] == pytest.approx(kendall_tau(s, t))
        assert metrics[name]["spearman"] == pytest.approx(spearman(s, t))
        assert metrics[name]["top1_regret"] == pytest.approx(top1_regret(s, t))
    assert metrics["lbtc"]["top1_regret"] == 0.0 and metrics["lbtc"]["n_models"] == 4
    r = api.post(f"/v1/rankings/{rid}/evaluation", headers=world["h"], json={"truth": {"mdl_other": 0.5}})
    assert r.status_code == 422 and r.json()["code"] == "unknown_models"
    r = api.post(f"/v1/rankings/{rid}/evaluation", headers=world["h"], json={"truth": {world["models"][0]: 0.5}})
    assert r.status_code == 409 and r.json()["code"] == "too_few_scored_models"


def test_deleting_model_or_pilot_set(api, world, sessions):
    rid = start(api, world).json()["id"]
    complete(sessions, rid)
    assert api.delete(f"/v1/models/{world['models'][0]}", headers=world["h"]).status_code == 204
    body = api.get("/v1/rank", params={"ranking_id": rid}, headers=world["h"]).json()
    assert len(body["models"]) == 3 and world["models"][0] not in {m["model_id"] for m in body["models"]}
    assert api.delete(f"/v1/pilot-sets/{world['ps']}", headers=world["h"]).status_code == 204
    assert api.get(f"/v1/rankings/{rid}", headers=world["h"]).status_code == 404
    with sessions() as s:
        assert s.query(ModelScore).count() == 0 and s.query(RankingItem).count() == 0


def test_broker_down_fails_items_with_503(api, world, dispatcher):
    dispatcher.fail = True
    r = start(api, world)
    assert r.status_code == 503 and r.json()["code"] == "broker_unavailable"
    rid = r.json()["detail"].split()[-2]
    body = api.get(f"/v1/rankings/{rid}", headers=world["h"]).json()
    assert body["status"] == "failed" and body["items"][0]["error"]["code"] == "broker_unavailable"
    assert math.isfinite(body["progress"])
