"""Leave-one-task-out calibration of the fusion gate on the benchmark's results (bench/validation/calibration.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bench.validation.calibration import leave_one_task_out, main
from bench.validation.report import DEFAULT_DECODER
from transferability.fusion import task_alpha

ROOT = Path(__file__).resolve().parents[2]


def _results() -> dict:
    """A tiny v2 results.json: 5 realistic models and a ladder rung, 5 tuning tasks (one with a
    constant truth, one not admitted) and a sealed held-out task with truth only."""
    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(5)] + ["m0-r50"]
    specs = {"t1": 1, "t2": 2, "t3": 3, "flat": 1, "failed": 2, "held": 2}
    tasks, truth, scores, roster = {}, {}, {}, []
    for name, k in specs.items():
        tasks[name] = {"k": k, "held_out": name == "held", "regime": "ID"}
        quality = rng.normal(size=len(models))
        truth[name] = {m: {"dice": [0.0, 0.0, 0.0] if name == "flat" else list(0.5 + 0.1 * q + 0.01 * rng.normal(size=3))}
                       for m, q in zip(models, quality)}
        admitted = name != "failed"
        roster.append({"task": name, "group": "held_out" if name == "held" else "tuning",
                       "verdict": {"admitted": admitted, "informative": name in ("t1", "t2")}})
        if name != "held":
            scores[name] = {DEFAULT_DECODER: {m: {"metrics": {"grtd_penalised": float(q + rng.normal()),
                                                              "grtd_contracted": float(rng.normal()),
                                                              "lbtc": float(q + rng.normal())}}
                                              for m, q in zip(models, quality)}}
    info = {m: {"realistic": not m.endswith("-r50")} for m in models}
    return {"inputs": {"tasks": tasks, "models": info}, "truth": truth, "scores": scores, "roster": roster}


def test_leave_one_task_out_on_a_synthetic_run(tmp_path: Path) -> None:
    out = leave_one_task_out(_results())
    assert out["grtd_variant"] == "penalised" and out["kind"] == "auto"
    rows = out["tasks"]
    assert set(rows) == {"t1", "t2", "t3", "flat"}  # not the failed task, never the sealed one
    assert rows["flat"]["tau_default"] is None and rows["flat"]["tau_calibrated"] is None
    for t in ("t1", "t2", "t3"):
        r = rows[t]
        assert math.isfinite(r["tau_default"]) and math.isfinite(r["tau_calibrated"])
        assert r["alpha_default"] == task_alpha(r["k"])
        assert r["fold_calibration"]["kind"] in ("gate", "per_k")
        assert r["n_models"] == 5  # the realistic zoo: the ladder rung is left out
    means = out["means"]
    assert means["all"]["n_tasks"] == 3 and means["informative"]["tasks"] == ["t1", "t2"]
    assert means["all"]["default"] == pytest.approx(np.mean([rows[t]["tau_default"] for t in ("t1", "t2", "t3")]))
    fitted = out["fitted_on_all_tasks"]
    assert fitted["n_evaluations"] == 3 and fitted["n_skipped"] == 1 and fitted["distinct_k"] == [1, 2, 3]

    src = tmp_path / "results.json"
    src.write_text(json.dumps(_results()))
    dest = tmp_path / "out" / "calibration.json"
    assert main([str(src), "--out", str(dest), "--kind", "per_k"]) == 0
    written = json.loads(dest.read_text())
    assert written["kind"] == "per_k" and written["source"] == str(src)
    assert written["fitted_on_all_tasks"]["calibration"]["kind"] == "per_k"


def test_default_gate_tau_must_be_the_reports() -> None:
    data = _results()
    data["tables"] = {"table1": {"realistic": {"fused_penalised": {"tasks": {t: 0.123 for t in data["inputs"]["tasks"]}}}}}
    with pytest.raises(AssertionError, match="committed table"):
        leave_one_task_out(data)
