"""Leave-one-task-out calibration of the fusion gate on the validation benchmark's results.

`python -m bench.validation.calibration results/validation/v2/results.json --out results/validation/v2/calibration.json`

One `transferability.calibration.CalibrationExample` per admitted, scored tuning task, built as the
report scores the product's fused metric (decoder `DEFAULT_DECODER`, GRTD `penalised`, the
realistic zoo, truth = mean fine-tune Dice over the seeds, K of the task). For every task, a
calibration is fitted on all the other tasks and both it and the default gate score the left-out
task; the per-task weighted tau and the means over all these tasks and the informative ones are
printed as JSON, together with the calibration fitted on every task. The default gate's tau of each
task is checked to be the report's fused tau. Sealed held-out tasks have no scores and never enter.
(The v1 figures, from v1's schema, are in `results/validation/cpu/calibration.json` and
docs/validation-v1.md.)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.validation.analysis import agreement, mean_finite
from bench.validation.report import DEFAULT_DECODER, PRODUCT, metric_values
from transferability.calibration import (
    CalibrationExample,
    calibration_report,
    example_tau,
    fit_calibration,
)
from transferability.fusion import task_alpha

GROUPS = ("all", "informative")
VARIANT = PRODUCT.removeprefix("fused_")


def _same(x: float | None, y: float | None) -> bool:
    """Equal floats, or both undefined (NaN or None, as NaN reads back from JSON)."""
    nx = x is None or not math.isfinite(x)
    ny = y is None or not math.isfinite(y)
    return (nx and ny) or (not nx and not ny and x == y)


def task_examples(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per admitted, scored tuning task: its CalibrationExample and the report's view of it."""
    inputs = results["inputs"]
    realistic = [m for m, info in inputs["models"].items() if info.get("realistic", True)]
    roster = [r for r in results["roster"] if r["group"] == "tuning" and (r.get("verdict") or {}).get("admitted")
              and DEFAULT_DECODER in results["scores"].get(r["task"], {})]
    stored = results.get("tables", {}).get("table1", {}).get("realistic", {}).get(PRODUCT, {}).get("tasks")
    out: dict[str, Any] = {}
    for r in roster:
        t = r["task"]
        k = int(inputs["tasks"][t]["k"])
        truth = {m: float(np.nanmean([np.nan if d is None else d for d in results["truth"][t][m]["dice"]])) for m in realistic}
        values = metric_values(results["scores"][t][DEFAULT_DECODER], k, realistic)
        grtd, lbtc = values[f"grtd_{VARIANT}"], values["lbtc"]
        ex = CalibrationExample(scores={m: (grtd[m], lbtc[m]) for m in grtd if m in lbtc}, truth=truth, num_foreground_classes=k)
        a = agreement(values[PRODUCT], truth)
        if a["n_models"] >= 3:  # the report leaves a task with fewer than 3 models without a tau
            mine = example_tau(ex, task_alpha(k))
            if not _same(mine, a["weighted_tau"]):
                raise AssertionError(f"{t}: default-gate tau {mine!r} differs from the report's fused tau {a['weighted_tau']!r}")
        if stored is not None and not _same(a["weighted_tau"], stored.get(t)):
            raise AssertionError(f"{t}: fused tau {a['weighted_tau']!r} differs from the committed table's {stored.get(t)!r}")
        out[t] = {"example": ex if a["n_models"] >= 3 else None, "k": k, "informative": bool(r["verdict"]["informative"]),
                  "n_models": a["n_models"], "report_fused_tau": a["weighted_tau"]}
    return {"variant": VARIANT, "tasks": out}


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def leave_one_task_out(results: Mapping[str, Any], kind: str = "auto") -> dict[str, Any]:
    """Default vs leave-one-task-out calibrated weighted tau per task, their means, and the
    calibration fitted on every task (all as plain JSON; undefined taus are None)."""
    built = task_examples(results)
    tasks = built["tasks"]
    names = [t for t in tasks if tasks[t]["example"] is not None]
    examples = [tasks[t]["example"] for t in names]
    rep = calibration_report(examples, kind=kind)
    loo = {names[e["index"]]: e for e in rep.loo}

    per_task: dict[str, Any] = {}
    for t, info in tasks.items():
        row = {key: info[key] for key in ("k", "informative", "n_models")}
        row.update(tau_default=math.nan, tau_calibrated=math.nan, alpha_default=task_alpha(info["k"]),
                   alpha_calibrated=None, fold_calibration=None)
        if t in loo:
            e = loo[t]
            others = [examples[i] for i, n in enumerate(names) if n != t]
            fold = fit_calibration(others, kind=kind)  # what the report's fold fitted, kept for the record
            if fold.alpha_for(info["k"]) != e["alpha_fitted"]:
                raise AssertionError(f"{t}: fold calibration differs from the report's")
            row.update(tau_default=e["tau_default"], tau_calibrated=e["tau_fitted"], alpha_calibrated=e["alpha_fitted"],
                       fold_calibration=fold.to_dict())
        per_task[t] = row

    members = {
        "all": list(per_task),
        "informative": [t for t, r in per_task.items() if r["informative"]],
    }
    means = {}
    for g in GROUPS:
        scored = [t for t in members[g] if math.isfinite(per_task[t]["tau_default"])]
        means[g] = {
            "default": mean_finite([per_task[t]["tau_default"] for t in scored]),
            "calibrated": mean_finite([per_task[t]["tau_calibrated"] for t in scored]),
            "n_tasks": len(scored),
            "tasks": scored,
        }
    return _clean({
        "decoder": DEFAULT_DECODER,
        "grtd_variant": built["variant"],
        "kind": kind,
        "tasks": per_task,
        "means": means,
        "fitted_on_all_tasks": {
            "calibration": rep.calibration.to_dict(),
            "alpha_by_task_k": {str(k): rep.calibration.alpha_for(k) for k in sorted({r["k"] for r in per_task.values()})},
            "default_alpha_by_task_k": {str(k): task_alpha(k) for k in sorted({r["k"] for r in per_task.values()})},
            "n_evaluations": rep.n_evaluations,
            "n_skipped": rep.n_skipped,
            "distinct_k": rep.distinct_k,
            "in_sample_tau_default": rep.mean_tau_default,
            "in_sample_tau_fitted": rep.mean_tau_fitted,
            "warnings": rep.warnings,
        },
    })


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.validation.calibration", description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results.json written by `python -m bench.validation run`")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--kind", default="auto", choices=("auto", "gate", "per_k"), help="calibration kind (default auto)")
    args = p.parse_args(list(argv) if argv is not None else None)
    out = leave_one_task_out(json.loads(args.results.read_text()), kind=args.kind)
    out = {"source": str(args.results), **out}
    text = json.dumps(out, indent=1, sort_keys=True) + "\n"
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
