"""What the bootstrap adds to a model's scoring time, at the defaults (N = 4096, 512 anchors, B = 200).

    python -m bench.bootstrap_cost [--cases 4 8 16] [--device cpu]

Scores the demo architecture (random weights: the time does not depend on them) on demo pilot sets
of M cases with `worker.pipeline.score_model` and reads its phase timings: the ratio is the
`bootstrap` phase over everything else of the same run (load, extraction, GRTD, LBTC, baselines).
Then, on synthetic features alone, the bootstrap's GRTD cost per stage against M (it grows with
the number of case pairs). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def score_run(n_cases: int, device: str, tmp: Path) -> dict[str, Any]:
    """One real scoring at the defaults; the bootstrap's share of it."""
    import torch

    from models_registry.catalog import resolve_spec
    from models_registry.specs import ModelSpec
    from transferability.config import ScoringConfig
    from worker.demo_zoo import adaptation_plan, build_demo_pilot_set, build_demo_unet, load_pilot_cases, write_nnssl_checkpoint
    from worker.pipeline import score_model

    name = "demo-resenc-mae"
    ckpt = tmp / f"m{n_cases}" / "checkpoint_final.pth"
    write_nnssl_checkpoint(ckpt, dict(build_demo_unet(0).state_dict()), adaptation_plan(name))
    cases = load_pilot_cases(build_demo_pilot_set(tmp / f"ps{n_cases}", n_cases=n_cases, seed=1))
    spec = resolve_spec(ModelSpec(name=name, format="nnssl", catalog=name))
    torch.manual_seed(0)
    res = score_model(spec, ckpt, cases, ScoringConfig(), device=device)
    t = res.timings
    rest = t["total"] - t["bootstrap"]
    return {
        "n_cases": n_cases,
        "n_points": res.diagnostics["n_points"],
        "n_anchors": res.diagnostics["n_anchors"],
        "timings_s": {k: round(v, 3) for k, v in t.items()},
        "bootstrap_s": t["bootstrap"],
        "scoring_without_bootstrap_s": rest,
        "added_fraction": t["bootstrap"] / rest,
        "quantile_band_misses": (res.replicates or {}).get("quantile_band_misses"),
    }


def synthetic_stage(n_cases: int, n_points: int = 4096, dim: int = 32, replicates: int = 200) -> dict[str, Any]:
    """GRTD bootstrap of one stage on synthetic features: preparation and per-replicate time, and the
    full-set GRTD of the same stage (both variants, as the worker computes it) for scale."""
    from transferability import bootstrap as bs
    from transferability.grtd import grtd_stage_details

    rng = np.random.default_rng(1)
    case = rng.integers(0, n_cases, n_points)
    y = rng.integers(0, 3, n_points)
    x = rng.normal(size=(n_points, dim)) + 2.0 * np.eye(3, dim)[y] + 0.7 * rng.normal(size=(n_cases, dim))[case]
    t0 = time.perf_counter()
    grtd_stage_details(x, y, variant="penalised", extra_variants="contracted")
    t_full = time.perf_counter() - t0
    masks = bs.case_subsets(n_cases, replicates, 0)
    t0 = time.perf_counter()
    rep = bs.GRTDStageReplicates(x, y, case)
    t_prep = time.perf_counter() - t0
    rep.value(masks[0])  # first call imports scipy.sparse
    t0 = time.perf_counter()
    for row in masks:
        rep.value(row)
    t_reps = time.perf_counter() - t0
    return {
        "n_cases": n_cases,
        "grtd_stage_s": t_full,
        "bootstrap_prepare_s": t_prep,
        "bootstrap_replicates_s": t_reps,
        "per_replicate_ms": 1e3 * t_reps / replicates,
        "bootstrap_over_grtd": (t_prep + t_reps) / t_full,
        "quantile_band_misses": rep.band_misses,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--synthetic-cases", type=int, nargs="+", default=[4, 10, 30, 60])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out")
    a = p.parse_args(argv)
    out: dict[str, Any] = {
        "bench": "bootstrap_cost",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0))},
        "device": a.device,
        "defaults": {"n_samples": 4096, "n_anchors": 512, "n_bootstrap": 200},
        "target_added_fraction": 0.30,
    }
    with tempfile.TemporaryDirectory() as tmp:
        out["scoring"] = [score_run(m, a.device, Path(tmp)) for m in a.cases]
    out["synthetic_grtd_stage"] = [synthetic_stage(m) for m in a.synthetic_cases]
    text = json.dumps(out, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
