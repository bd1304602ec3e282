"""The method study (docs/method-study.md, pre-registered): every candidate config's weighted τ on the
admitted tuning tasks of a v2 run, the one-standard-error selection rule, and the freeze file.

Pure functions over a `results.json` of `python -m bench.validation run` (its `scores`, `pass_scores`
and truth); nothing is computed but the configs' combinations of stored scores, and nothing of a
held-out task is read. Every config of the plan is evaluated and reported, the winner included.

    python -m bench.validation.study results/validation/v2/results.json --out results/validation/v2/study.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from bench.validation import stats
from bench.validation.analysis import agreement
from bench.validation.report import BASELINES, DEFAULT_DECODER, metric_values
from bench.validation.stats import _weighted_tau_batch
from transferability.fusion import task_alpha

Scores = dict[str, float]  # model -> score (higher = predicted better)
N_BOOT = 2000
BOOT_SEED = 11
RANK_INPUTS_ENC = ("lbtc", "grtd_pen_enc", "logme_enc3", "nce_enc3", "gbc_enc3", "regularized_hscore_enc3", "transrate_enc3")
"""The inputs of `rank_enc` and `rank_fitted` (docs/method-study.md, configs 41 and 43)."""
WEIGHT_GRID = (0, 1, 2)
KAIMING = tuple(f"kaiming-{i}" for i in range(5))


@dataclass(frozen=True)
class Config:
    """One candidate of the study: its name, complexity level (for the tie rule), what it is, and how
    it scores one task's models (`fn(ctx, task)`); `fitted` configs are scored leave one task out."""

    name: str
    level: int
    description: str
    fn: Callable[[Context, str], Scores]
    fitted: bool = False


class Context:
    """What the configs read: one task's stored scores over the models compared (the realistic zoo
    by default), and, for fitted configs, the other tasks they are fitted on."""

    def __init__(self, results: Mapping[str, Any], models: Sequence[str], tasks: Sequence[str]) -> None:
        self.results, self.models, self.tasks = results, list(models), list(tasks)
        self.truth = {t: {m: float(np.nanmean([np.nan if d is None else d for d in results["truth"][t][m]["dice"]])) for m in self.models}
                      for t in self.tasks}
        self._cache: dict[tuple[str, str], Scores] = {}

    def k(self, task: str) -> int:
        return int(self.results["inputs"]["tasks"][task]["k"])

    def decoder(self, task: str, decoder: str = DEFAULT_DECODER) -> dict[str, Scores]:
        """metric -> model -> value of one decoder config of the v2 sweep (fused scores over these models)."""
        return metric_values(self.results["scores"][task][decoder], self.k(task), self.models)

    def pass_metric(self, task: str, pass_name: str, metric: str) -> Scores:
        entries = self.results.get("pass_scores", {}).get(task, {}).get(pass_name, {})
        return {m: float(e["metrics"][metric]) for m, e in entries.items() if m in self.models and e["metrics"].get(metric) is not None}

    def lbtc_stage(self, task: str, stage: str) -> Scores:
        entries = self.results["scores"][task][DEFAULT_DECODER]
        return {m: float(e["per_stage"]["lbtc"][stage]) for m, e in entries.items() if m in self.models}

    def scores(self, config: Config, task: str) -> Scores:
        key = (config.name, task)
        if key not in self._cache:
            self._cache[key] = config.fn(self, task)
        return self._cache[key]


# ----------------------------------------------------------------------------- combinations
def normalised(values: Scores, how: str) -> Scores:
    """Min-max to [0, 1] (all 0.5 when constant), z-scores (all 0 when constant), or ranks scaled
    to [0, 1] (ties averaged), over the models given."""
    ids = sorted(values)
    if not ids:
        return {}
    x = np.asarray([values[m] for m in ids], np.float64)
    if how == "minmax":
        span = x.max() - x.min()
        y = (x - x.min()) / span if span > 0 else np.full_like(x, 0.5)
    elif how == "z":
        sd = x.std()
        y = (x - x.mean()) / sd if sd > 0 else np.zeros_like(x)
    elif how == "rank":
        y = (rankdata(x) - 1) / max(1, len(x) - 1)
    else:
        raise ValueError(f"unknown normalisation {how!r}")
    return dict(zip(ids, map(float, y)))


def gated(grtd: Scores, lbtc: Scores, k: int, how: str = "minmax", alpha: float | None = None) -> Scores:
    """α N(GRTD) + (1 − α) N(LBTC), α = the gate of K (metrics.md §5) unless given."""
    ids = [m for m in grtd if m in lbtc]
    a = task_alpha(k) if alpha is None else alpha
    g, b = normalised({m: grtd[m] for m in ids}, how), normalised({m: lbtc[m] for m in ids}, how)
    return {m: a * g[m] + (1 - a) * b[m] for m in ids}


def mean_rank(inputs: Sequence[Scores], weights: Sequence[float] | None = None) -> Scores:
    """The (weighted) mean of the inputs' ranks over the models they all score."""
    ids = sorted(set.intersection(*(set(s) for s in inputs)))
    if not ids:
        return {}
    w = np.ones(len(inputs)) if weights is None else np.asarray(weights, np.float64)
    ranks = np.asarray([rankdata([s[m] for m in ids]) for s in inputs])
    if w.sum() <= 0:
        return {m: 0.0 for m in ids}
    return dict(zip(ids, map(float, (w[:, None] * ranks).sum(0) / w.sum())))


def _avg_kaiming(ctx: Context, task: str, metric: str) -> Scores:
    """`metric` averaged over the kaiming decoders 0-4 (those the run has: all five in v2)."""
    per = [ctx.decoder(task, d)[metric] for d in KAIMING if d in ctx.results["scores"][task]]
    return {m: float(np.mean([p[m] for p in per])) for m in per[0] if all(m in p for p in per)}


def _grtd_enc(ctx: Context, task: str) -> Scores:
    return ctx.pass_metric(task, "E3", "grtd_penalised")


def _lbtc_pass(pass_name: str) -> Callable[[Context, str], Scores]:
    return lambda ctx, t: ctx.pass_metric(t, pass_name, "lbtc")


def _rank_inputs(ctx: Context, task: str) -> list[Scores]:
    by_name = {c.name: c for c in CONFIGS}
    return [ctx.scores(by_name[n], task) for n in RANK_INPUTS_ENC]


# ----------------------------------------------------------------------------- fitted configs
def _gate_fitted(ctx: Context, task: str) -> Scores:
    """The product's fusion with the gate fitted on the other tasks (transferability.calibration)."""
    from transferability.calibration import CalibrationExample, fit_calibration

    others = [t for t in ctx.tasks if t != task]
    examples = []
    for t in others:
        d = ctx.decoder(t)
        examples.append(CalibrationExample(scores={m: (d["grtd_penalised"][m], d["lbtc"][m]) for m in d["grtd_penalised"] if m in d["lbtc"]},
                                           truth=ctx.truth[t], num_foreground_classes=ctx.k(t)))
    cal = fit_calibration(examples, kind="auto")
    d = ctx.decoder(task)
    return gated(d["grtd_penalised"], d["lbtc"], ctx.k(task), alpha=cal.alpha_for(ctx.k(task)))


def _tau0(scores: Scores, truth: Mapping[str, float]) -> float:
    """Weighted τ with the study's rule for a score that cannot rank (constant): 0."""
    t = agreement(scores, truth)["weighted_tau"]
    return 0.0 if not math.isfinite(t) else float(t)


def _rank_fitted(ctx: Context, task: str) -> Scores:
    """The weighted mean rank of `RANK_INPUTS_ENC`, weights from {0, 1, 2} per input chosen by the
    highest mean τ over the other tasks (τ 0 where the combination cannot rank; grid order breaks ties)."""
    grid = np.asarray([w for w in itertools.product(WEIGHT_GRID, repeat=len(RANK_INPUTS_ENC)) if any(w)], np.float64)
    total = np.zeros(len(grid))
    others = [t for t in ctx.tasks if t != task]
    for t in others:
        inputs = _rank_inputs(ctx, t)
        ids = sorted(set.intersection(*(set(s) for s in inputs)))
        if len(ids) < 3:
            continue
        ranks = np.asarray([rankdata([s[m] for m in ids]) for s in inputs])  # (inputs, models)
        combos = grid @ ranks / grid.sum(1, keepdims=True)  # (weights, models)
        truth = np.broadcast_to(np.asarray([ctx.truth[t][m] for m in ids]), combos.shape)
        tau = _weighted_tau_batch(combos, truth, np.ones(combos.shape, bool))
        total += np.where(np.isfinite(tau), tau, 0.0)
    best = grid[int(np.argmax(total))] if others else np.ones(len(RANK_INPUTS_ENC))
    return mean_rank(_rank_inputs(ctx, task), best)


# ----------------------------------------------------------------------------- the plan's configs
def _dec(metric: str) -> Callable[[Context, str], Scores]:
    return lambda ctx, t: ctx.decoder(t)[metric]


def _enc(metric: str, pass_name: str) -> Callable[[Context, str], Scores]:
    return lambda ctx, t: ctx.pass_metric(t, pass_name, metric)


_BASE8 = [b for b in BASELINES if b != "leep"]  # LEEP = NLEEP for these encoders (no source head): one row

CONFIGS: tuple[Config, ...] = (
    Config("paper", 2, "GRTD contracted (§3) on decoder stages + LBTC, min-max, gate: the method as published", _dec("fused_contracted")),
    Config("product_v1", 2, "GRTD penalised (§3a) + LBTC, min-max, gate: today's /v1/rank default", _dec("fused_penalised")),
    Config("lbtc", 0, "LBTC alone (enc2 and enc3)", _dec("lbtc")),
    Config("lbtc_enc3", 0, "LBTC on enc3 only", lambda ctx, t: ctx.lbtc_stage(t, "enc3")),
    Config("lbtc_enc2", 0, "LBTC on enc2 only", lambda ctx, t: ctx.lbtc_stage(t, "enc2")),
    Config("lbtc_p2", 0, "LBTC, patch points 2 model voxels apart at every stage (pass P2)", _lbtc_pass("P2")),
    Config("lbtc_p4", 0, "LBTC, patch points 4 model voxels apart at every stage (pass P4)", _lbtc_pass("P4")),
    Config("grtd_pen", 0, "GRTD penalised alone, decoder kaiming 0", _dec("grtd_penalised")),
    Config("grtd_pen_avg5", 1, "GRTD penalised averaged over kaiming decoders 0-4", lambda ctx, t: _avg_kaiming(ctx, t, "grtd_penalised")),
    Config("grtd_pen_enc", 0, "GRTD penalised on (enc2, enc3) (pass E3)", _grtd_enc),
    Config("fused_avg5", 2, "product_v1 with GRTD averaged over kaiming 0-4",
           lambda ctx, t: gated(_avg_kaiming(ctx, t, "grtd_penalised"), ctx.decoder(t)["lbtc"], ctx.k(t))),
    Config("fused_enc", 2, "product_v1 with GRTD on encoder stages (pass E3)",
           lambda ctx, t: gated(_grtd_enc(ctx, t), ctx.decoder(t)["lbtc"], ctx.k(t))),
    Config("fused_z", 2, "product_v1 with z-scores instead of min-max",
           lambda ctx, t: gated(ctx.decoder(t)["grtd_penalised"], ctx.decoder(t)["lbtc"], ctx.k(t), "z")),
    Config("fused_rank", 2, "product_v1 with ranks instead of min-max",
           lambda ctx, t: gated(ctx.decoder(t)["grtd_penalised"], ctx.decoder(t)["lbtc"], ctx.k(t), "rank")),
    Config("fused_neg_grtd", 2, "product_v1 with GRTD's sign flipped",
           lambda ctx, t: gated({m: -v for m, v in ctx.decoder(t)["grtd_penalised"].items()}, ctx.decoder(t)["lbtc"], ctx.k(t))),
    *(Config(f"{b}_dec", 0, f"{b} on the finest decoder stage (kaiming 0)", _dec(b)) for b in _BASE8),
    *(Config(f"{b}_enc3", 0, f"{b} on enc3 (pass E3)", _enc(b, "E3")) for b in _BASE8),
    *(Config(f"{b}_enc2", 0, f"{b} on enc2 (pass E2)", _enc(b, "E2")) for b in _BASE8),
    Config("rank_topo", 2, "mean rank of LBTC and GRTD penalised averaged over kaiming 0-4",
           lambda ctx, t: mean_rank([ctx.decoder(t)["lbtc"], _avg_kaiming(ctx, t, "grtd_penalised")])),
    Config("rank_enc", 2, "mean rank of " + ", ".join(RANK_INPUTS_ENC), lambda ctx, t: mean_rank(_rank_inputs(ctx, t))),
    Config("gate_fitted", 3, "product_v1 with the gate fitted on the other tasks", _gate_fitted, fitted=True),
    Config("rank_fitted", 3, "weighted mean rank of the rank_enc inputs, weights in {0, 1, 2} fitted on the other tasks", _rank_fitted,
           fitted=True),
)


# ----------------------------------------------------------------------------- the study
def admitted_tuning_tasks(results: Mapping[str, Any]) -> list[str]:
    """The tasks the study may use: tuning, admitted and scored (never a held-out task)."""
    return [r["task"] for r in results["roster"] if r["group"] == "tuning" and (r.get("verdict") or {}).get("admitted")
            and DEFAULT_DECODER in results["scores"].get(r["task"], {})]


def evaluate(results: Mapping[str, Any], *, zoo: str = "realistic", n_boot: int | None = None) -> dict[str, Any]:
    """Every config's weighted τ per task, its mean with a bootstrap interval, and the bootstrap SE
    of its difference to every other config (same replicates), on the admitted tuning tasks and the
    `zoo` given (realistic: no ladder rungs)."""
    tasks = admitted_tuning_tasks(results)
    info = results["inputs"]["models"]
    models = [m for m in info if zoo == "full" or info[m].get("realistic", True)]
    n_boot = N_BOOT if n_boot is None else n_boot
    ctx = Context(results, models, tasks)
    table = {c.name: {t: ctx.scores(c, t) for t in tasks} for c in CONFIGS}
    truth = {t: ctx.truth[t] for t in tasks}
    rep = stats.bootstrap_tau_replicates(table, truth, tasks, models, n_boot=n_boot, seed=BOOT_SEED, constant_score_tau=0.0)
    reps = {n: np.asarray(v, np.float64) for n, v in rep["replicates"].items()}
    rows = {}
    for c in CONFIGS:
        r = reps[c.name][np.isfinite(reps[c.name])]
        lo, hi = (np.quantile(r, [0.025, 0.975]) if r.size else (math.nan, math.nan))
        diff_se = {}
        for o in CONFIGS:
            d = reps[c.name] - reps[o.name]
            d = d[np.isfinite(d)]
            diff_se[o.name] = float(d.std(ddof=1)) if d.size > 1 else math.nan
        rows[c.name] = {"level": c.level, "fitted": c.fitted, "description": c.description,
                        "tau": {t: _tau0(table[c.name][t], truth[t]) for t in tasks},
                        "mean": rep["observed"][c.name], "lo": float(lo), "hi": float(hi),
                        "se": float(r.std(ddof=1)) if r.size > 1 else math.nan, "diff_se": diff_se}
    best = max(rows, key=lambda n: rows[n]["mean"] if math.isfinite(rows[n]["mean"]) else -math.inf)
    return {"tasks": tasks, "zoo": zoo, "models": models, "best": best, "configs": rows, "n_configs": len(CONFIGS),
            "n_boot": n_boot, "seed": BOOT_SEED}


def select(study: Mapping[str, Any]) -> dict[str, Any]:
    """The one-standard-error rule: among the configs whose mean τ is below the best's by at most one
    bootstrap SE of their paired difference, the lowest level, then the first in the plan's order;
    the runner-up is what the same rule picks once the default is removed."""
    names = [c.name for c in CONFIGS]
    rows = study["configs"]

    def mean(n: str) -> float:
        v = rows[n]["mean"]
        return v if v is not None and math.isfinite(v) else -math.inf

    def pick(pool: Sequence[str]) -> tuple[str, str, list[str]]:
        best = max(pool, key=lambda n: (mean(n), -names.index(n)))
        near = [n for n in pool if n == best or mean(best) - mean(n) <= _finite(rows[n]["diff_se"].get(best))]
        return min(near, key=lambda n: (rows[n]["level"], names.index(n))), best, near

    default, best, near = pick(names)
    runner_up, _, _ = pick([n for n in names if n != default])
    return {"default": default, "best_mean": best, "within_one_se": near, "runner_up": runner_up,
            "rule": "one-standard-error rule over the mean weighted tau of the admitted tuning tasks, realistic zoo "
                    "(docs/method-study.md)"}


def _finite(x: float | None) -> float:
    return float(x) if x is not None and math.isfinite(x) else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.validation.study", description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path, help="a results.json of a v2 run (with its pass_scores)")
    p.add_argument("--out", type=Path, help="also write the study as JSON here")
    args = p.parse_args(list(argv) if argv is not None else None)
    results = json.loads(args.results.read_text())
    out = {"realistic": evaluate(results), "full": evaluate(results, zoo="full")}
    out["selection"] = select(out["realistic"])
    from bench.validation.run import json_safe

    text = json.dumps(json_safe(out), indent=1, sort_keys=True) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
