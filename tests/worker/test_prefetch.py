"""Loading the next model of a ranking ahead (worker.prefetch): the slot's rules with stand-in loads,
then `score_item_impl` for real on three tiny nnssl models: the next model is loaded while the
current one is scored and used by the next task, the scores are bit-identical to loading in the
foreground, and a stale, failed or switched-off slot changes nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import delete

from models_registry.tables import ModelScore, RankingItem, RankingJob
from tests.integration.ckpt_builder import build_checkpoint
from tests.utils.factories import tiny_world
from transferability.config import ScoringConfig
from worker import tasks
from worker.prefetch import LoadKey, Prefetcher
from worker.tasks import PREFETCH, WorkerContext, score_item_impl

KEY = LoadKey("c", "sha", "{}", "kaiming", 0, "cpu", 1)


# --------------------------------------------------------------------------- the slot
def test_take_hands_the_slot_to_its_item_only() -> None:
    slot: Prefetcher[str] = Prefetcher()
    release = threading.Event()
    slot.start("it1", KEY, "ps", ["case"], lambda: (release.wait(5), "model")[1])
    assert slot.pending_item() == "it1"
    taken = slot.take("it1")
    assert taken is not None and taken.cases == ["case"] and not taken.load.done()  # handed over while still loading
    release.set()
    assert taken.load.result(5) == "model" and taken.background_s is not None
    assert slot.take("it1") is None  # taken once


def test_another_item_waits_for_the_load_and_drops_it() -> None:
    slot: Prefetcher[str] = Prefetcher()
    finished = threading.Event()

    def load() -> str:
        time.sleep(0.2)
        finished.set()
        return "model"

    slot.start("it1", KEY, "ps", [], load)
    assert slot.take("it2") is None
    assert finished.is_set()  # no load left running beside the task that did not take it
    assert slot.pending_item() is None


def test_discard_and_restart_wait_for_the_running_load() -> None:
    slot: Prefetcher[str] = Prefetcher()
    order: list[str] = []

    def load(name: str) -> str:
        time.sleep(0.1)
        order.append(name)
        return name

    slot.start("it1", KEY, "ps", [], lambda: load("first"))
    slot.start("it2", KEY, "ps", [], lambda: load("second"))  # the first ends before the second starts
    assert order == ["first"] and slot.pending_item() == "it2"
    slot.discard()
    assert order == ["first", "second"] and slot.pending_item() is None


def test_a_failed_load_is_handed_over_as_failed_and_swallowed_when_dropped() -> None:
    slot: Prefetcher[str] = Prefetcher()

    def broken() -> str:
        raise RuntimeError("disk gone")

    slot.start("it1", KEY, "ps", [], broken)
    taken = slot.take("it1")
    assert taken is not None and isinstance(taken.load.exception(5), RuntimeError)
    slot.start("it1", KEY, "ps", [], broken)
    slot.discard()  # no exception escapes


def test_an_untaken_slot_is_dropped_when_idle() -> None:
    slot: Prefetcher[str] = Prefetcher(idle_drop_s=0.05)
    slot.start("it1", KEY, "ps", [], lambda: "model")
    deadline = time.monotonic() + 5
    while slot.pending_item() is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert slot.pending_item() is None


# --------------------------------------------------------------------------- the worker, for real
CONFIG = {"n_samples": 300, "n_anchors": 40, "k": 3, "n_bootstrap": 0}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("ckpts")
    return [build_checkpoint(root / f"m{i}" / "checkpoint_final.pth", seed=i) for i in range(3)]


@pytest.fixture(autouse=True)
def empty_slot():  # type: ignore[no-untyped-def]
    PREFETCH.discard()
    yield
    PREFETCH.discard()


@pytest.fixture
def ranking(api, keys, settings, sessions, checkpoints, tmp_path):  # type: ignore[no-untyped-def]
    """Tenant a: three validated tiny models and a queued ranking of them on a 2-case pilot set."""
    h = {"X-API-Key": keys["a"]}
    ctx = WorkerContext(settings, sessions, settings.storage_root)
    ps, models = tiny_world(api, h, ctx, checkpoints, tmp_path, n_cases=2)
    r = api.post("/v1/rankings", headers=h, json={"pilot_set_id": ps, "model_ids": models, "config": CONFIG})
    assert r.status_code == 202, r.text
    with sessions() as s:
        items = [it.id for it in sorted(s.get(RankingJob, r.json()["id"]).items, key=lambda it: it.position)]
    return {"ctx": ctx, "items": items, "rid": r.json()["id"]}


def _results(sessions, items: list[str]) -> list[dict]:  # type: ignore[no-untyped-def]
    with sessions() as s:
        out = []
        for item_id in items:
            item = s.get(RankingItem, item_id)
            assert item.status == "succeeded", (item.error_code, item.error_detail)
            out.append(dict(s.get(ModelScore, item.score_id).result))
        return out


def _requeue(sessions, rid: str) -> None:  # type: ignore[no-untyped-def]
    """Forget the scores and put the items back in the queue (to score the same ranking again)."""
    with sessions() as s:
        job = s.get(RankingJob, rid)
        for it in job.items:
            it.status, it.score_id, it.attempts, it.progress, it.started_at, it.finished_at = "queued", None, 0, 0.0, None, None
        s.flush()
        s.execute(delete(ModelScore).where(ModelScore.pilot_set_id == job.pilot_set_id))
        job.status = "queued"
        s.commit()


def _values(result: dict) -> tuple:  # type: ignore[type-arg]
    return result["grtd"], result["lbtc"], result["baselines"], result["per_stage"]


def test_next_model_is_loaded_ahead_and_scores_do_not_change(ranking, sessions, settings) -> None:
    ctx, items = ranking["ctx"], ranking["items"]
    assert score_item_impl(ctx, items[0]) == "succeeded"
    assert PREFETCH.pending_item() == items[1]  # loaded while item 0 was scored
    assert score_item_impl(ctx, items[1]) == "succeeded"
    assert PREFETCH.pending_item() == items[2]
    assert score_item_impl(ctx, items[2]) == "succeeded"
    assert PREFETCH.pending_item() is None  # nothing left to load
    ahead = _results(sessions, items)
    assert [r["diagnostics"]["prefetched"] for r in ahead] == [False, True, True]
    assert all(r["timings"]["prefetch_background_s"] > 0 for r in ahead[1:])
    assert "prefetch_background_s" not in ahead[0]["timings"]

    _requeue(sessions, ranking["rid"])
    settings.prefetch_next = False
    try:
        for item_id in items:
            assert score_item_impl(ctx, item_id) == "succeeded"
            assert PREFETCH.pending_item() is None
    finally:
        settings.prefetch_next = True
    foreground = _results(sessions, items)
    assert [r["diagnostics"]["prefetched"] for r in foreground] == [False, False, False]
    assert [_values(r) for r in ahead] == [_values(r) for r in foreground]  # bit-identical


def test_a_slot_for_another_item_or_a_failed_load_is_not_used(ranking, sessions) -> None:
    ctx, items = ranking["ctx"], ranking["items"]
    assert score_item_impl(ctx, items[0]) == "succeeded"
    assert PREFETCH.pending_item() == items[1]
    assert score_item_impl(ctx, items[2]) == "succeeded"  # out of order (another worker took item 1)
    assert _results(sessions, [items[2]])[0]["diagnostics"]["prefetched"] is False
    assert PREFETCH.pending_item() == items[1]  # started again by item 2, for the one still queued

    PREFETCH.discard()

    def broken_load() -> None:
        raise OSError("read error while loading ahead")

    _start(ctx, sessions, ranking["rid"], items[1], broken_load)  # the right key, but the load fails
    assert score_item_impl(ctx, items[1]) == "succeeded"  # loaded again in the foreground
    assert _results(sessions, [items[1]])[0]["diagnostics"]["prefetched"] is False


def test_models_with_a_stored_score_are_not_loaded_ahead(ranking, sessions) -> None:
    """Item 1's score exists already (another ranking stored it): item 0 loads item 2's model ahead."""
    ctx, items = ranking["ctx"], ranking["items"]
    assert score_item_impl(ctx, items[1]) == "succeeded"
    assert PREFETCH.pending_item() == items[2]
    PREFETCH.discard()
    with sessions() as s:
        s.get(RankingItem, items[1]).status = "queued"  # as in a second ranking: queued, but its score is stored
        s.commit()
    assert score_item_impl(ctx, items[0]) == "succeeded"
    assert PREFETCH.pending_item() == items[2]


def _start(ctx, sessions, rid: str, item_id: str, load) -> None:  # type: ignore[no-untyped-def]
    """Fill the slot for `item_id` under the key its task will look for, with `load`."""
    from models_registry.tables import Model, PilotSet

    with sessions() as s:
        job = s.get(RankingJob, rid)
        model = s.get(Model, s.get(RankingItem, item_id).model_id)
        cases = tasks.load_cases(ctx, s.get(PilotSet, job.pilot_set_id))
        key = tasks._load_key(ctx, model.checkpoint_path, model.sha256, dict(model.spec), ScoringConfig.from_dict(job.config),
                              cases[0].n_channels)
        PREFETCH.start(item_id, key, job.pilot_set_id, cases, load)
