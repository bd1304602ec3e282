"""The benchmark's planner (bench/validation/run.py): the seed rule, admission on the truth alone,
reserves called in by failed tasks, and the seal on held-out tasks, on synthetic records (no
fine-tuning): the decisions are a pure function of the records."""

from __future__ import annotations

import json
import subprocess
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench.validation import run as runmod
from bench.validation.profiles import Admission, Profile, SeedRule
from bench.validation.tasks import TaskSpec

MODELS = ("random-a", "random-b", "sup-tissue", "mae-brain", "sup-tissue-r50")
REALISTIC = [m for m in MODELS if m != "sup-tissue-r50"]


@dataclass
class _Member:
    name: str
    sha256: str
    spec: dict[str, Any]
    checkpoint: Path
    method: str = "x"
    variant: str = "x"
    pretrain: dict[str, Any] | None = None


def _spec(name: str, seed: int, held_out: bool = False) -> TaskSpec:
    return TaskSpec.from_dict({"name": name, "title": name, "regime": "ID", "held_out": held_out, "source": "mni152",
                               "label_recipe": "brain_mask", "labels": {"background": 0, "brain": 1}, "seed": seed,
                               "finetune": {"steps": 10}})


def _sealed(*specs: TaskSpec, name: str | None = None) -> runmod.Sealed:
    """Seal `specs` (under `name` instead of their own when given)."""
    return runmod.Sealed({name or s.name: s.spec_hash() for s in specs}, frozenset(runmod.content_digest(s) for s in specs))


def _profile(**kw: Any) -> Profile:
    base = Profile(name="t", zoo="smoke", seeds=(0, 1, 2), seed_rule=SeedRule(), admission=Admission(),
                   finetune={"encoder_warmup_steps": 5}, frozen={"steps": 5, "train_encoder": False},
                   decoders=(("kaiming", 0, 1), ("xavier", 0, 1)))
    return replace(base, **kw)


class _World:
    """A planner over synthetic truth: dice(task, model, seed, protocol) decides every record."""

    def __init__(self, tmp: Path, groups: runmod.TaskGroups, dice: Any, profile: Profile | None = None,
                 sealed: runmod.Sealed | None = None, freeze: dict[str, Any] | None = None) -> None:
        self.zoo = [_Member(m, f"{i:064d}", {"name": m, "format": "nnssl"}, tmp / m / "checkpoint_final.pth") for i, m in enumerate(MODELS)]
        self.profile = profile or _profile()
        self.dice = dice
        self.cache = runmod.Cache(tmp / "cache")

        def prepare(specs):
            return [runmod.TaskInput(s.name, s.to_dict(), s.spec_hash(), "", f"cases-{s.name}", s.k, s.regime, s.held_out) for s in specs]

        self.planner = runmod.Planner(self.profile, self.zoo, groups, self.cache, "cpu", prepare, sealed or _sealed(),
                                      freeze or {"committed": False})

    def settle(self, max_rounds: int = 10) -> tuple[list[runmod.TaskState], list[dict[str, Any]]]:
        """Plan, 'compute' every pending truth item from the synthetic dice, until nothing is pending."""
        for _ in range(max_rounds):
            states, items = self.planner.plan(lambda it: self.cache.get(it["kind"], it["key"]))
            pending = [it for it in items if self.cache.get(it["kind"], it["key"]) is None and it["kind"] == "finetune"]
            if not pending:
                return states, items
            for it in pending:
                d = self.dice(it["inputs"]["task"], it["inputs"]["model"], it["config"]["seed"], it["protocol"])
                self.cache.put("finetune", it["key"], {"dice": d, "inputs": it["inputs"]})
        raise AssertionError("the plan did not settle")


def _noisy(spread: float, noise: float, floor: float = 0.5):
    """Dice = floor + spread * (model rank) + noise * N(0, 1), seeded per (task, model, seed)."""
    def f(task, model, seed, protocol):
        rng = np.random.default_rng([zlib.crc32(task.encode()), MODELS.index(model), seed, protocol == "frozen"])
        return float(floor + spread * MODELS.index(model) / len(MODELS) + noise * rng.normal())
    return f


def test_seed_rule_adds_stages_only_while_split_half_tau_is_low() -> None:
    prof = _profile()
    clean = {s: {m: 0.5 + 0.1 * i for i, m in enumerate(REALISTIC)} for s in (0, 1, 2)}
    assert runmod.seed_plan(prof, clean, REALISTIC)["seeds"] == [0, 1, 2]
    rng = np.random.default_rng(0)
    noisy = {s: {m: float(rng.normal()) for m in REALISTIC} for s in range(7)}
    plan = runmod.seed_plan(prof, {s: noisy[s] for s in (0, 1, 2)}, REALISTIC)
    assert plan["seeds"][:3] == [0, 1, 2] and not plan["final"]
    full = runmod.seed_plan(prof, noisy, REALISTIC)
    assert full["final"] and len(full["decisions"]) >= 1 and full["decisions"][0]["seeds"] == [0, 1, 2]
    assert full["seeds"] == [0, 1, 2, 3, 4, 5, 6] or full["decisions"][-1]["add"] == []
    assert runmod.seed_plan(prof, None, REALISTIC) == {"seeds": [0, 1, 2], "final": False, "decisions": []}


def test_admission_looks_at_random_init_dice_and_spread_only() -> None:
    prof = _profile(admission=Admission(random_dice=(0.3, 0.85), spread_over_noise=1.0))
    good = {m: [0.5 + 0.1 * i + d for d in (0.0, 0.01, -0.01)] for i, m in enumerate(MODELS)}
    v = runmod.admission(prof, good, REALISTIC, ["random-a", "random-b"])
    assert v["admitted"] and v["informative"] and v["reasons"] == []
    ceiling = {m: [0.9 + 0.01 * i + d for d in (0.0, 0.005, -0.005)] for i, m in enumerate(MODELS)}
    v = runmod.admission(prof, ceiling, REALISTIC, ["random-a", "random-b"])
    assert not v["admitted"] and "outside [0.3, 0.85]" in v["reasons"][0]
    flat = {m: [0.5 + d for d in (0.0, 0.1, -0.1)] for m in MODELS}
    v = runmod.admission(prof, flat, REALISTIC, ["random-a", "random-b"])
    assert not v["admitted"] and any("spread over noise" in r for r in v["reasons"])


def test_a_failed_task_calls_its_groups_next_reserve_and_only_admitted_tuning_tasks_are_scored(tmp_path: Path) -> None:
    groups = runmod.TaskGroups(
        {"tuning": [_spec("good", 1), _spec("flat", 2)], "held_out": [_spec("sealed_one", 3, True)]},
        {"tuning": [_spec("spare", 4), _spec("spare2", 5)], "held_out": [_spec("sealed_spare", 6, True)]},
    )

    def dice(task, model, seed, protocol):
        if task == "flat":  # no spread between models: fails admission
            return 0.5 + 0.05 * np.random.default_rng([seed, MODELS.index(model)]).normal()
        return _noisy(0.4, 0.005)(task, model, seed, protocol)

    w = _World(tmp_path, groups, dice, sealed=_sealed(groups.primary["held_out"][0]))
    states, items = w.settle()
    by = {s.spec.name: s for s in states}
    assert [s.spec.name for s in states] == ["good", "flat", "spare", "sealed_one"]  # spare2 and the held-out reserve not needed
    assert by["flat"].verdict["admitted"] is False and by["spare"].replaces == "flat" and by["spare"].reserve
    assert by["good"].verdict["admitted"] and by["spare"].verdict["admitted"] and by["sealed_one"].verdict["admitted"]
    scored = {it["inputs"]["task"] for it in items if it["kind"] == "score"}
    assert scored == {"good", "spare"}  # never the failed task, never the sealed one
    frozen = [it for it in items if it["kind"] == "finetune" and it["protocol"] == "frozen" and it["inputs"]["task"] == "good"]
    assert sorted({it["config"]["seed"] for it in frozen}) == [100, 101, 102] and all(it["config"]["train_encoder"] is False for it in frozen)
    # the same records give the same plan (a resumed run decides the same)
    _, items2 = w.planner.plan(lambda it: w.cache.get(it["kind"], it["key"]))
    assert [it["key"] for it in items2] == [it["key"] for it in items]


def test_sealed_tasks_are_scored_only_after_a_committed_freeze(tmp_path: Path) -> None:
    held = _spec("sealed_one", 3, True)
    groups = runmod.TaskGroups({"tuning": [], "held_out": [held]}, {"tuning": [], "held_out": []})
    w = _World(tmp_path, groups, _noisy(0.4, 0.005), sealed=_sealed(held, name="other_name"))  # sealed by content too
    _, items = w.settle()
    assert not [it for it in items if it["kind"] == "score"]
    w2 = _World(tmp_path, groups, _noisy(0.4, 0.005), sealed=_sealed(held), freeze={"committed": True})
    _, items = w2.settle()
    scores = [it for it in items if it["kind"] == "score"]
    assert scores and all(it["sealed"] and it["freeze_committed"] for it in scores)
    # the worker refuses a sealed score that the plan did not clear
    bad = {**scores[0], "freeze_committed": False}
    with pytest.raises(runmod.SealedTaskError, match="sealed task"):
        runmod.run_item(bad)


def test_check_sealed_refuses_unsealed_or_changed_held_out_specs() -> None:
    held = _spec("h", 3, True)
    runmod.check_sealed([held], _sealed(held))
    with pytest.raises(RuntimeError, match="not in sealed.json"):
        runmod.check_sealed([held], runmod.Sealed({}, frozenset()))
    with pytest.raises(RuntimeError, match="differs from its sealed spec"):
        runmod.check_sealed([held], runmod.Sealed({"h": "0" * 64}, frozenset()))
    renamed = TaskSpec.from_dict({**held.to_dict(), "name": "other", "title": "x"})
    assert renamed in _sealed(held) and _spec("h2", 9, True) not in _sealed(held)


def test_freeze_state_needs_the_file_committed_and_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)
    git("init", "-q")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    monkeypatch.setattr(runmod, "REPO", repo)
    f = repo / "freeze.json"
    assert runmod.freeze_state(f)["exists"] is False
    f.write_text(json.dumps({"default": {"method": "x"}}))
    st = runmod.freeze_state(f)
    assert st["exists"] and not st["committed"]  # written, not committed
    git("add", "freeze.json")
    git("commit", "-q", "-m", "freeze")
    st = runmod.freeze_state(f)
    assert st["committed"] and len(st["commit"]) == 40
    f.write_text(json.dumps({"default": {"method": "y"}}))  # edited after the commit
    assert runmod.freeze_state(f)["committed"] is False
    f.write_text("[1, 2]")
    assert runmod.freeze_state(f)["committed"] is False
