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
RESULTS = ROOT / "results" / "validation" / "cpu"


def _results() -> dict:
    """A tiny results.json: 5 models, 5 tasks (one held out, one with a constant truth)."""
    rng = np.random.default_rng(0)
    models = [f"m{i}" for i in range(5)]
    specs = {"t1": (1, False), "t2": (2, False), "t3": (3, False), "flat": (1, False), "held": (2, True)}
    tasks, truth, scores = {}, {}, {}
    for name, (k, held) in specs.items():
        tasks[name] = {"k": k, "held_out": held, "regime": "ID"}
        quality = rng.normal(size=5)
        truth[name] = {m: {"dice": [0.0, 0.0, 0.0] if name == "flat" else list(0.5 + 0.1 * q + 0.01 * rng.normal(size=3))}
                       for m, q in zip(models, quality)}
        scores[name] = {DEFAULT_DECODER: {m: {"metrics": {"grtd_penalised": float(q + rng.normal()),
                                                          "grtd_contracted": float(rng.normal()),
                                                          "lbtc": float(q + rng.normal())}}
                                          for m, q in zip(models, quality)}}
    return {"inputs": {"tasks": tasks, "models": models}, "truth": truth, "scores": scores}


def test_leave_one_task_out_on_a_synthetic_run(tmp_path: Path) -> None:
    out = leave_one_task_out(_results())
    assert out["grtd_variant"] in ("penalised", "contracted") and out["kind"] == "auto"
    rows = out["tasks"]
    assert rows["flat"]["tau_default"] is None and rows["flat"]["tau_calibrated"] is None
    for t in ("t1", "t2", "t3", "held"):
        r = rows[t]
        assert math.isfinite(r["tau_default"]) and math.isfinite(r["tau_calibrated"])
        assert r["alpha_default"] == task_alpha(r["k"])
        assert r["fold_calibration"]["kind"] in ("gate", "per_k")
    means = out["means"]
    assert means["all"]["n_tasks"] == 4 and means["held_out"]["tasks"] == ["held"]
    assert means["all"]["default"] == pytest.approx(np.mean([rows[t]["tau_default"] for t in ("t1", "t2", "t3", "held")]))
    assert means["held_out"]["calibrated"] == rows["held"]["tau_calibrated"]
    fitted = out["fitted_on_all_tasks"]
    assert fitted["n_evaluations"] == 4 and fitted["n_skipped"] == 1 and fitted["distinct_k"] == [1, 2, 3]

    src = tmp_path / "results.json"
    src.write_text(json.dumps(_results()))
    dest = tmp_path / "out" / "calibration.json"
    assert main([str(src), "--out", str(dest), "--kind", "per_k"]) == 0
    written = json.loads(dest.read_text())
    assert written["kind"] == "per_k" and written["source"] == str(src)
    assert written["fitted_on_all_tasks"]["calibration"]["kind"] == "per_k"


def test_default_gate_tau_must_be_the_reports() -> None:
    data = _results()
    data["tables"] = {"table1": {f"fused_{v}": {"tasks": {t: 0.123 for t in data["inputs"]["tasks"]}}
                                 for v in ("penalised", "contracted")}}
    with pytest.raises(AssertionError, match="committed table"):
        leave_one_task_out(data)


def test_committed_calibration_figures_are_what_the_module_computes() -> None:
    data = json.loads((RESULTS / "results.json").read_text())
    committed = json.loads((RESULTS / "calibration.json").read_text())
    out = leave_one_task_out(data)
    assert {"source": committed["source"], **out} == committed
    fused = data["tables"]["table1"][f"fused_{out['grtd_variant']}"]["tasks"]
    assert {t: r["tau_default"] for t, r in out["tasks"].items()} == fused  # the report's fused tau, None where undefined
