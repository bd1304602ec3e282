"""Task bodies run in-process against the registry (the paths that need no scoring): redelivery
after the task finished, reuse of an existing score, cancel before start, attempt limit, deleted
inputs, reuse only in the worker's numeric mode, and start-up re-queueing of the embedded mode."""

from __future__ import annotations

import json

import pytest

from app.recovery import requeue_unfinished
from models_registry.tables import Model, RankingItem, RankingJob
from tests.utils.factories import score_row
from tests.utils.archives import nnunet_files, write_zip
from worker.tasks import WorkerContext, score_item_impl

SPEC = {"name": "m", "format": "nnssl", "catalog": "demo-resenc-mae"}


@pytest.fixture
def job(api, keys, tmp_path, settings):  # type: ignore[no-untyped-def]
    h = {"X-API-Key": keys["a"]}
    with open(write_zip(tmp_path / "p.zip", nnunet_files(1)), "rb") as fh:
        ps = api.post("/v1/pilot-sets", headers=h, files={"archive": ("p.zip", fh)}).json()
    mids = [
        api.post("/v1/models", headers=h, files={"spec": (None, json.dumps(SPEC)), "checkpoint": ("c", b"x" * (i + 10))}).json()["id"]
        for i in range(2)
    ]
    rid = api.post("/v1/rankings", headers=h, json={"pilot_set_id": ps["id"], "model_ids": mids}).json()["id"]
    ctx = WorkerContext(settings, api.app.state.ctx.sessions, settings.storage_root)
    return {"rid": rid, "ctx": ctx, "h": h, "ps": ps["id"], "mids": mids}


def _items(sessions, rid):  # type: ignore[no-untyped-def]
    with sessions() as s:
        return [(it.id, it.status, it.attempts, it.error_code, it.reused) for it in s.get(RankingJob, rid).items]


def test_existing_score_is_reused_and_finished_items_skipped(job, sessions):
    with sessions() as s:
        j = s.get(RankingJob, job["rid"])
        s.add(score_row(job["ps"], job["mids"][0], j.config_hash, config=j.config, grtd=-0.1, lbtc=0.9, result={}, timings={}))
        s.commit()
    item0 = _items(sessions, job["rid"])[0][0]
    assert score_item_impl(job["ctx"], item0) == "succeeded"
    assert _items(sessions, job["rid"])[0][1:] == ("succeeded", 0, None, True)
    assert score_item_impl(job["ctx"], item0) == "succeeded"  # duplicate delivery: no-op
    assert score_item_impl(job["ctx"], "it_missing") == "gone"


def test_a_score_of_another_numeric_mode_is_not_reused(job, sessions):
    """The test worker runs on the CPU (TOPORANK_DEVICE=cpu): a stored CUDA bf16 score is not its score."""
    with sessions() as s:
        j = s.get(RankingJob, job["rid"])
        s.add(score_row(job["ps"], job["mids"][0], j.config_hash, config=j.config, numeric_mode="cuda-bf16", result={}, timings={}))
        s.commit()
    item0 = _items(sessions, job["rid"])[0][0]
    assert score_item_impl(job["ctx"], item0) == "failed"  # scored for real: the test checkpoint is not a checkpoint
    _, status, attempts, code, reused = _items(sessions, job["rid"])[0]
    assert (status, attempts, reused) == ("failed", 1, False) and code == "unreadable_checkpoint"


def test_cancelled_ranking_and_attempt_limit(job, sessions, settings):
    ids = [i[0] for i in _items(sessions, job["rid"])]
    with sessions() as s:
        s.get(RankingItem, ids[1]).attempts = settings.max_task_attempts
        s.commit()
    assert score_item_impl(job["ctx"], ids[1]) == "failed"
    assert _items(sessions, job["rid"])[1][3] == "worker_lost"
    with sessions() as s:
        s.get(RankingJob, job["rid"]).cancel_requested = True
        s.commit()
    assert score_item_impl(job["ctx"], ids[0]) == "cancelled"
    with sessions() as s:
        assert s.get(RankingJob, job["rid"]).status == "cancelled"


def test_invalid_model_fails_item(job, sessions):
    with sessions() as s:
        m = s.get(Model, job["mids"][0])
        m.status, m.error_code, m.error_detail = "invalid", "missing_keys", "no encoder"
        s.commit()
    item0 = _items(sessions, job["rid"])[0][0]
    assert score_item_impl(job["ctx"], item0) == "failed"
    assert _items(sessions, job["rid"])[0][3] == "missing_keys"


def test_requeue_unfinished_at_startup(job, sessions, dispatcher):
    ids = [i[0] for i in _items(sessions, job["rid"])]
    with sessions() as s:
        s.get(RankingItem, ids[0]).status = "running"  # left running by a crash
        s.commit()
    dispatcher.scored.clear()
    dispatcher.validated.clear()
    counts = requeue_unfinished(sessions, dispatcher)
    assert counts == {"items": 2, "models": 2, "finetunes": 0, "cancelled": 0}
    assert sorted(dispatcher.scored) == sorted(ids) and sorted(dispatcher.validated) == sorted(job["mids"])
    assert [i[1] for i in _items(sessions, job["rid"])] == ["queued", "queued"]


def test_unreadable_pilot_set_fails_item(job, sessions, settings):
    import shutil

    from models_registry.tables import PilotSet

    with sessions() as s:
        shutil.rmtree(settings.storage_root / s.get(PilotSet, job["ps"]).storage_path)
    item0 = _items(sessions, job["rid"])[0][0]
    assert score_item_impl(job["ctx"], item0) == "failed"
    assert _items(sessions, job["rid"])[0][1:4] == ("failed", 1, "pilot_set_unreadable")


def test_warm_up_loads_the_scoring_modules_before_the_first_task():
    import sys

    from celery.signals import worker_process_init

    from worker.tasks import WARM_MODULES, _warm_up_pool_process, warm_up

    timings = warm_up("cpu")
    assert timings["device"] == "cpu" and timings["imports_s"] >= 0 and "cuda_s" not in timings
    assert all(m in sys.modules for m in WARM_MODULES)
    assert worker_process_init.has_listeners()
    _warm_up_pool_process()  # what the pool process runs after the fork: never raises
