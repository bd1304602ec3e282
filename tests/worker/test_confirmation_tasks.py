"""Confirmation folds run in-process for real: tiny nnssl checkpoints registered through the API and
validated by the worker's task body, a 3-case pilot set, a finished ranking (score rows written as
the worker writes them), then `finetune_item_impl` on every dispatched fold (a few optimiser steps on
16^3 patches). Held-out Dice, the automatic evaluation, reuse, reproducibility, cancel, the attempt
limit, deleted inputs and start-up re-queueing."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from sqlalchemy import select, text

from app.recovery import requeue_unfinished
from models_registry.db import make_engine
from models_registry.jobs import refresh_job
from models_registry.tables import (
    Confirmation,
    ConfirmationItem,
    Evaluation,
    FinetuneRecord,
    RankingJob,
)
from tests.integration.ckpt_builder import build_checkpoint
from tests.utils.factories import score_row, tiny_world
from transferability.evaluation import weighted_tau
from transferability.fusion import fuse
from worker.tasks import WorkerContext, finetune_item_impl

# one torch thread: the API default (threads None: all of them) is ~10x slower here when other processes share the 2 cores
TINY = {"patch": [16, 16, 16], "batch_size": 1, "threads": 1}
STEPS = 3
# (grtd, lbtc) per model, in registration order: model 1 fuses first, model 0 second, model 2 last
SCORES = [(-0.20, 0.80), (-0.05, 0.90), (-0.60, 0.30)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("ckpts")
    return [build_checkpoint(root / f"m{i}" / "checkpoint_final.pth", seed=i) for i in range(len(SCORES))]


@pytest.fixture
def world(api, keys, settings, sessions, dispatcher, checkpoints, tmp_path):  # type: ignore[no-untyped-def]
    """Tenant a: three validated tiny models, a 3-case pilot set (K = 2), a finished ranking of the three."""
    h = {"X-API-Key": keys["a"]}
    ctx = WorkerContext(settings, sessions, settings.storage_root)
    ps, models = tiny_world(api, h, ctx, checkpoints, tmp_path, n_cases=3)
    assert sorted(dispatcher.validated) == sorted(models)
    r = api.post("/v1/rankings", headers=h, json={"pilot_set_id": ps, "model_ids": models})
    assert r.status_code == 202, r.text
    rid = r.json()["id"]
    with sessions() as s:  # finished as the worker finishes it, without scoring for real
        job = s.get(RankingJob, rid)
        for it in job.items:
            g, l = SCORES[models.index(it.model_id)]
            sc = score_row(ps, it.model_id, job.config_hash, config=job.config, grtd=g, lbtc=l,
                           baselines={"logme": g + l, "gbc": -l})
            s.add(sc)
            s.flush()
            it.status, it.score_id, it.progress = "succeeded", sc.id, 1.0
        s.flush()
        refresh_job(s, rid)
        s.commit()
    assert api.get(f"/v1/rankings/{rid}", headers=h).json()["status"] == "succeeded"
    return {"h": h, "ps": ps, "models": models, "rid": rid, "ctx": ctx}


def confirm(api, world, **body):  # type: ignore[no-untyped-def]
    r = api.post(f"/v1/rankings/{world['rid']}/confirmations", headers=world["h"], json={"steps": STEPS, "finetune": TINY, **body})
    assert r.status_code == 202, r.text
    return r.json()


def get(api, world, cid):  # type: ignore[no-untyped-def]
    r = api.get(f"/v1/rankings/{world['rid']}/confirmations/{cid}", headers=world["h"])
    assert r.status_code == 200, r.text
    return r.json()


def units(sessions, cid):  # type: ignore[no-untyped-def]
    """(id, model, fold, status, attempts, error code, reused) of each fold, in position order."""
    with sessions() as s:
        return [(u.id, u.model_id, u.fold, u.status, u.attempts, u.error_code, u.reused) for u in s.get(Confirmation, cid).items]


def records(sessions, cid):  # type: ignore[no-untyped-def]
    """(model, fold) -> (dice, per_class, losses) of the confirmation's stored fine-tune records."""
    with sessions() as s:
        out = {}
        for u in s.get(Confirmation, cid).items:
            rec = s.get(FinetuneRecord, u.record_id) if u.record_id else None
            if rec is not None:
                out[(u.model_id, u.fold)] = (rec.dice, rec.per_class, rec.result["losses"])
        return out


def _finite01(x) -> bool:  # type: ignore[no-untyped-def]
    return isinstance(x, float) and math.isfinite(x) and 0.0 <= x <= 1.0


def test_folds_fine_tune_for_real_and_the_last_records_the_evaluation(api, world, sessions, dispatcher):
    body = confirm(api, world, top_k=2)
    cid = body["id"]
    assert body["status"] == "queued" and body["n_folds"] == 3  # 3 cases: leave-one-out
    top2 = [m["model_id"] for m in body["models"]]
    assert top2 == [world["models"][1], world["models"][0]] and body["predicted_top"] == world["models"][1]
    assert body["expected_cost"]["per_model"].keys() == set(top2)
    sent = list(dispatcher.finetuned)
    assert sorted(sent) == sorted(u[0] for u in units(sessions, cid)) and len(sent) == 6

    for i, unit_id in enumerate(sent):
        assert finetune_item_impl(world["ctx"], unit_id) == "succeeded"
        if i == 0:
            mid = get(api, world, cid)
            assert mid["status"] == "running" and 0 < mid["progress"] < 1 and mid["evaluation"] is None
    assert all(u[3:7] == ("succeeded", 1, None, False) for u in units(sessions, cid))
    recs = records(sessions, cid)
    assert len(recs) == 6
    for dice, per_class, losses in recs.values():
        assert _finite01(dice)
        assert set(per_class) == {"1", "2"} and all(v is None or _finite01(v) for v in per_class.values())
        assert len(losses) == STEPS and all(math.isfinite(v) for _, v in losses)

    done = get(api, world, cid)
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["finished_at"]
    assert done["steps"] == STEPS and done["finetune"]["patch"] == [16, 16, 16] and done["finetune"]["batch_size"] == 1
    assert [len(f) for f in done["fold_plan"]] == [1, 1, 1] and len({c for f in done["fold_plan"] for c in f}) == 3
    for m in done["models"]:
        assert m["status"] == "succeeded" and m["n_folds_done"] == 3
        dice = [f["dice"] for f in m["folds"]]
        assert dice == [recs[(m["model_id"], f)][0] for f in range(3)]
        assert m["dice_mean"] == pytest.approx(sum(dice) / 3)
        assert all(_finite01(v) or v is None for v in m["per_class"].values())
        assert m["dice_std"] is not None and math.isfinite(m["dice_std"])
        assert m["dice_se"] == pytest.approx(m["dice_std"] / math.sqrt(3))
        assert all(f["stage"] == "done" and f["progress"] == 1.0 and f["n_test"] == 1 for f in m["folds"])
    assert isinstance(done["top1_confirmed"], bool)
    ev = done["evaluation"]
    assert ev is not None and ev["n_models"] == 2 and done["note"] is None
    assert {"fused", "grtd", "lbtc"} <= set(ev["metrics"])
    for name in ("fused", "grtd", "lbtc"):
        assert set(ev["metrics"][name]) >= {"weighted_tau", "kendall_tau", "spearman", "top1_regret"}
        assert math.isfinite(ev["metrics"][name]["weighted_tau"])
    assert {"logme", "gbc"} <= set(ev["metrics"])  # the stored baselines are evaluated too
    truth = {m["model_id"]: m["dice_mean"] for m in done["models"]}
    fused = fuse({m: SCORES[world["models"].index(m)] for m in top2}, 2)
    expected = weighted_tau([f.score for f in fused.models], [truth[f.model_id] for f in fused.models])
    assert ev["metrics"]["fused"]["weighted_tau"] == pytest.approx(expected)
    with sessions() as s:
        row = s.get(Evaluation, ev["id"])
        assert row.source == "confirmation" and row.confirmation_id == cid and row.truth == pytest.approx(truth)
    best = max(done["models"], key=lambda m: m["dice_mean"])
    assert done["best_model"] == best["model_id"]
    assert done["top1_confirmed"] is (truth[top2[0]] >= best["dice_mean"] - best["dice_se"])

    # a duplicate delivery of a finished fold is a no-op
    assert finetune_item_impl(world["ctx"], sent[0]) == "succeeded"
    assert units(sessions, cid)[0][3:5] == ("succeeded", 1)
    with sessions() as s:
        assert len(s.scalars(select(FinetuneRecord.id)).all()) == 6
    assert get(api, world, cid)["evaluation"]["id"] == ev["id"]

    # the same request again: every fold reused at once, nothing sent, the evaluation recorded by the API
    again = confirm(api, world, top_k=2)
    assert len(dispatcher.finetuned) == 6
    assert again["status"] == "succeeded" and all(f["reused"] for m in again["models"] for f in m["folds"])
    assert [m["dice_mean"] for m in again["models"]] == [m["dice_mean"] for m in done["models"]]
    assert again["evaluation"] is not None and again["evaluation"]["id"] != ev["id"]

    # the same fold fine-tuned again from scratch, same seed: bit-identical Dice, per class and losses
    top = top2[0]
    with sessions() as s:
        s.execute(FinetuneRecord.__table__.delete().where(FinetuneRecord.model_id == top))
        s.commit()
    rerun = confirm(api, world, top_k=2)
    resent = dispatcher.finetuned[6:]
    assert rerun["status"] == "running" and len(resent) == 3  # the other model's folds reused at once
    for unit_id in resent:
        assert finetune_item_impl(world["ctx"], unit_id) == "succeeded"
    again_recs = records(sessions, rerun["id"])
    assert again_recs == recs
    final = get(api, world, rerun["id"])
    assert final["status"] == "succeeded"
    assert [f["reused"] for m in final["models"] for f in m["folds"]] == [False] * 3 + [True] * 3


def test_cancel_attempt_limit_stored_record_and_deleted_inputs(api, world, sessions, settings):
    ctx = world["ctx"]
    # cancelled while a fold was running (a redelivery after a crash): the worker cancels it without fine-tuning
    c1 = confirm(api, world, top_k=2, seed=1)
    u1 = units(sessions, c1["id"])
    with sessions() as s:
        s.get(ConfirmationItem, u1[0][0]).status = "running"
        s.commit()
    r = api.post(f"/v1/rankings/{world['rid']}/confirmations/{c1['id']}/cancel", headers=world["h"])
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert finetune_item_impl(ctx, u1[0][0]) == "cancelled"
    assert finetune_item_impl(ctx, u1[1][0]) == "cancelled"  # cancelled by the API before it ran
    body = get(api, world, c1["id"])
    assert body["status"] == "cancelled" and body["note"] == "cancelled: no evaluation"
    assert all(f["status"] == "cancelled" and f["dice"] is None for m in body["models"] for f in m["folds"])
    with sessions() as s:
        assert s.scalars(select(FinetuneRecord.id)).all() == []

    c2 = confirm(api, world, top_k=2, seed=2)
    u2 = units(sessions, c2["id"])
    # delivered again after the worker died max_task_attempts times: failed, not fine-tuned again
    with sessions() as s:
        s.get(ConfirmationItem, u2[0][0]).attempts = settings.max_task_attempts
        s.commit()
    assert finetune_item_impl(ctx, u2[0][0]) == "failed"
    assert units(sessions, c2["id"])[0][3:6] == ("failed", settings.max_task_attempts, "worker_lost")
    # a record stored under the fold's key on this device kind (another delivery won): reused, no attempt
    _, model, fold, *_ = u2[1]
    with sessions() as s:
        unit = s.get(ConfirmationItem, u2[1][0])
        s.add(FinetuneRecord(pilot_set_id=world["ps"], model_id=model, key_hash=unit.key_hash, device="cpu", fold=fold,
                             dice=0.5, per_class={"1": 0.4, "2": 0.6}, result={"dice": 0.5}, code_version="1"))
        s.commit()
    assert finetune_item_impl(ctx, u2[1][0]) == "succeeded"
    assert units(sessions, c2["id"])[1][3:7] == ("succeeded", 0, None, True)
    assert get(api, world, c2["id"])["models"][0]["folds"][1]["dice"] == 0.5
    assert finetune_item_impl(ctx, "cfi_missing") == "gone"

    # the model deleted through the API: its folds go with it (cascade), a late message finds nothing
    other = u2[-1][1]
    assert api.delete(f"/v1/models/{other}", headers=world["h"]).status_code == 204
    assert finetune_item_impl(ctx, u2[-1][0]) == "gone"
    # a unit whose model row vanished without the cascade (foreign keys off): failed "gone"
    c3 = confirm(api, world, models=[world["models"][1]], seed=3)
    u3 = units(sessions, c3["id"])
    engine = make_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            conn.execute(text("PRAGMA foreign_keys=OFF"))
            conn.execute(text("DELETE FROM models WHERE id = :id"), {"id": world["models"][1]})
            conn.commit()
    finally:
        engine.dispose()
    assert finetune_item_impl(ctx, u3[0][0]) == "failed"
    assert units(sessions, c3["id"])[0][3:6] == ("failed", 0, "gone")


def test_requeue_unfinished_resends_confirmation_folds(api, world, sessions, dispatcher):
    c1 = confirm(api, world, top_k=2, seed=4)
    c2 = confirm(api, world, models=[world["models"][0]], seed=5)
    u1, u2 = units(sessions, c1["id"]), units(sessions, c2["id"])
    with sessions() as s:
        s.get(ConfirmationItem, u1[0][0]).status = "running"  # left running by a crash
        s.get(ConfirmationItem, u1[1][0]).status, s.get(ConfirmationItem, u1[1][0]).attempts = "running", 1
        s.get(ConfirmationItem, u1[2][0]).status = "failed"  # finished: not sent again
        conf2 = s.get(Confirmation, c2["id"])
        conf2.cancel_requested = True  # cancel asked while its folds sat in the queue
        s.get(ConfirmationItem, u2[0][0]).status = "running"
        s.commit()
    dispatcher.finetuned.clear()
    counts = requeue_unfinished(sessions, dispatcher)
    assert counts == {"items": 0, "models": 0, "finetunes": 5, "cancelled": 3}
    assert sorted(dispatcher.finetuned) == sorted(u[0] for u in u1 if u[0] != u1[2][0])
    assert [u[3] for u in units(sessions, c1["id"])] == ["queued", "queued", "failed", "queued", "queued", "queued"]
    assert [u[3] for u in units(sessions, c2["id"])] == ["cancelled"] * 3
    assert get(api, world, c2["id"])["status"] == "cancelled"
    assert get(api, world, c1["id"])["status"] == "running"
    # the re-sent fold that had started once runs again from attempt 2
    assert finetune_item_impl(world["ctx"], u1[1][0]) == "succeeded"
    assert units(sessions, c1["id"])[1][3:5] == ("succeeded", 2)



def test_deleting_a_model_with_queued_folds_lets_the_confirmation_finish(api, world, sessions, dispatcher):
    """The model of a confirmation's last unfinished folds is deleted: its folds go (cascade) and
    the other model's have all finished, so the confirmation has finished too (with a note: one
    model left, no evaluation)."""
    ctx = world["ctx"]
    body = confirm(api, world, top_k=2, seed=6)
    top, second = (m["model_id"] for m in body["models"])
    us = units(sessions, body["id"])
    with sessions() as s:  # the top model's folds stored by an earlier delivery: the worker reuses them, no fine-tuning
        for uid, model, fold, *_ in us:
            if model == top:
                key = s.get(ConfirmationItem, uid).key_hash
                s.add(FinetuneRecord(pilot_set_id=world["ps"], model_id=top, key_hash=key, device="cpu", fold=fold,
                                     dice=0.5, per_class={"1": 0.5, "2": 0.5}, result={"dice": 0.5}, code_version="1"))
        s.commit()
    assert [finetune_item_impl(ctx, uid) for uid, model, *_ in us if model == top] == ["succeeded"] * 3
    assert get(api, world, body["id"])["status"] == "running"
    assert api.delete(f"/v1/models/{second}", headers=world["h"]).status_code == 204
    assert [finetune_item_impl(ctx, uid) for uid, model, *_ in us if model == second] == ["gone"] * 3  # late messages
    dispatcher.finetuned.clear()
    assert requeue_unfinished(sessions, dispatcher)["finetunes"] == 0  # nothing left to run: nothing will refresh it
    after = get(api, world, body["id"])
    # observed: status "running", progress 0.5, finished_at None, note None -- for ever
    assert after["status"] != "running" and after["finished_at"] is not None
    assert after["evaluation"] is None and "1 model(s)" in (after["note"] or "")
