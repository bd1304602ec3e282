"""The method study (bench/validation/study.py) on a synthetic v2 results.json: every pre-registered
config is evaluated on the admitted tuning tasks only, the combinations are what the plan says, and
the one-standard-error rule picks the simplest config near the best."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.validation import study
from bench.validation.report import BASELINES

MODELS = [f"m{i}" for i in range(7)] + ["m0-r50"]
RAW = ("grtd_penalised", "grtd_contracted", "lbtc", *BASELINES)


def _entry(rng: np.random.Generator, quality: float, noise: float) -> dict:
    metrics = {m: float(quality * (1.0 if m == "lbtc" else 0.3) + noise * rng.normal()) for m in RAW}
    metrics["grtd"] = metrics["grtd_penalised"]
    return {"metrics": metrics, "per_stage": {"lbtc": {"enc2": metrics["lbtc"] + 0.01 * rng.normal(), "enc3": metrics["lbtc"]}}}


def _results(seed: int = 0) -> dict:
    """Three admitted tuning tasks, one that failed admission, one held-out task with truth only (and
    no score: reading it would fail), every decoder of the v2 sweep and every study pass."""
    rng = np.random.default_rng(seed)
    tasks, truth, scores, passes, roster = {}, {}, {}, {}, []
    for name, k, group, admitted in (("t1", 1, "tuning", True), ("t2", 2, "tuning", True), ("t3", 4, "tuning", True),
                                     ("failed", 2, "tuning", False), ("held", 1, "held_out", True)):
        tasks[name] = {"k": k, "held_out": group == "held_out", "regime": "ID"}
        quality = {m: rng.normal() for m in MODELS}
        truth[name] = {m: {"dice": list(0.5 + 0.1 * quality[m] + 0.01 * rng.normal(size=3))} for m in MODELS}
        roster.append({"task": name, "group": group, "verdict": {"admitted": admitted, "informative": True}})
        if group == "tuning":
            scores[name] = {d: {m: _entry(rng, quality[m], 0.5) for m in MODELS}
                            for d in ("kaiming-0", "kaiming-1", "kaiming-2", "kaiming-3", "kaiming-4", "xavier-0", "gaussian-0")}
            passes[name] = {p: {m: _entry(rng, quality[m], 0.5) for m in MODELS} for p in ("E3", "E2", "P2", "P4")}
    models = {m: {"realistic": "-r" not in m} for m in MODELS}
    return {"inputs": {"tasks": tasks, "models": models}, "truth": truth, "scores": scores, "pass_scores": passes, "roster": roster}


def test_every_config_is_evaluated_on_the_admitted_tuning_tasks_only() -> None:
    out = study.evaluate(_results(), n_boot=200)
    assert out["tasks"] == ["t1", "t2", "t3"] and out["n_configs"] == len(study.CONFIGS) == 43
    assert out["models"] == [m for m in MODELS if "-r" not in m]
    for name, row in out["configs"].items():
        assert set(row["tau"]) == {"t1", "t2", "t3"}, name
        assert math.isfinite(row["mean"]) and row["lo"] <= row["mean"] + 1e-12 and row["hi"] >= row["mean"] - 1e-12, name
        assert row["diff_se"][name] == 0.0
    full = study.evaluate(_results(), zoo="full", n_boot=50)
    assert full["models"] == MODELS


def test_the_combinations_are_the_plans() -> None:
    r = _results()
    ctx = study.Context(r, [m for m in MODELS if "-r" not in m], ["t1", "t2", "t3"])
    by = {c.name: c for c in study.CONFIGS}
    d = ctx.decoder("t2")
    assert ctx.scores(by["product_v1"], "t2") == pytest.approx(d["fused_penalised"])
    assert ctx.scores(by["product_v1"], "t2") == pytest.approx(study.gated(d["grtd_penalised"], d["lbtc"], 2))
    assert ctx.scores(by["lbtc_enc3"], "t2") == {m: r["scores"]["t2"]["kaiming-0"][m]["per_stage"]["lbtc"]["enc3"] for m in ctx.models}
    avg = ctx.scores(by["grtd_pen_avg5"], "t2")
    m0 = np.mean([r["scores"]["t2"][f"kaiming-{i}"]["m0"]["metrics"]["grtd_penalised"] for i in range(5)])
    assert avg["m0"] == pytest.approx(m0)
    neg = ctx.scores(by["fused_neg_grtd"], "t2")
    flipped = study.gated({m: -v for m, v in d["grtd_penalised"].items()}, d["lbtc"], 2)
    assert neg == pytest.approx(flipped)
    assert ctx.scores(by["gbc_enc3"], "t1") == {m: r["pass_scores"]["t1"]["E3"][m]["metrics"]["gbc"] for m in ctx.models}
    # normalisations: min-max, z, ranks
    assert study.normalised({"a": 1.0, "b": 3.0, "c": 2.0}, "minmax") == {"a": 0.0, "b": 1.0, "c": 0.5}
    z = study.normalised({"a": 1.0, "b": 3.0, "c": 2.0}, "z")
    assert z["c"] == pytest.approx(0.0) and z["b"] == pytest.approx(-z["a"])
    assert study.normalised({"a": 5.0, "b": 5.0, "c": 9.0}, "rank") == {"a": 0.25, "b": 0.25, "c": 1.0}
    assert study.mean_rank([{"a": 1, "b": 2, "c": 3}, {"a": 3, "b": 2, "c": 1}]) == {"a": 2.0, "b": 2.0, "c": 2.0}
    assert study.mean_rank([{"a": 1, "b": 2}, {"a": 3, "b": 2}], [1, 0]) == {"a": 1.0, "b": 2.0}


def test_the_one_standard_error_rule_prefers_the_simplest_config_near_the_best() -> None:
    names = [c.name for c in study.CONFIGS]
    rows = {n: {"mean": 0.0, "level": c.level, "diff_se": {o: 0.05 for o in names}} for n, c in zip(names, study.CONFIGS)}
    rows["rank_fitted"]["mean"] = 0.40  # the best, level 3
    rows["fused_rank"]["mean"] = 0.37  # level 2, within one SE (0.05)
    rows["lbtc_p4"]["mean"] = 0.36  # level 0, within one SE: the simplest near the best
    rows["lbtc"]["mean"] = 0.30  # level 0, but 0.10 below: outside
    sel = study.select({"configs": rows})
    assert sel["best_mean"] == "rank_fitted" and sel["default"] == "lbtc_p4"
    assert set(sel["within_one_se"]) == {"rank_fitted", "fused_rank", "lbtc_p4"}
    assert sel["runner_up"] == "fused_rank"  # the rule once more without the default: lowest level within one SE of the best
    rows["lbtc"]["mean"] = 0.36  # a tie of level: the plan's order decides (lbtc before lbtc_p4)
    assert study.select({"configs": rows})["default"] == "lbtc"


def test_the_cli_writes_the_study_with_its_selection(tmp_path: Path) -> None:
    src = tmp_path / "results.json"
    src.write_text(json.dumps(_results()))
    out = tmp_path / "study.json"
    study.N_BOOT, saved = 100, study.N_BOOT
    try:
        assert study.main([str(src), "--out", str(out)]) == 0
    finally:
        study.N_BOOT = saved
    data = json.loads(out.read_text())
    assert data["selection"]["default"] in data["realistic"]["configs"] and set(data) == {"realistic", "full", "selection"}
