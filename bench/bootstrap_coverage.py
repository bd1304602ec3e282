"""Coverage of the half-sampling intervals (transferability.bootstrap) on pilot sets with a known truth.

    python -m bench.bootstrap_coverage [--sims 200] [--cases 10] [--points 1024] [--replicates 200]

Cases come from a known distribution: each case shifts all its features (a scanner / patient
effect), shifts each class differently again (its anatomy), and has its own class volumes, so the
points of one case are correlated, as in a real pilot set. GRTD is computed on N points sampled as
the pipeline samples them (the budget split equally over the classes, within a class spread over
the cases by their voxel counts); LBTC on per-anchor leakages whose level varies by case.

What an interval should cover: the population value of the score *for pilot sets of this size*,
E[score(M cases)], estimated by Monte Carlo over `--truth-sets` independent pilot sets (GRTD of a
finite point sample depends on N and on how many cases share the points, so there is no
size-free "true GRTD" a pilot set could estimate). Each of `--sims` pilot sets gets its 95%
interval from `--replicates` replicates; the coverage must lie in the central 95% binomial range
of Binomial(sims, 0.95). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.stats import binom

from transferability import bootstrap as bs
from transferability.grtd import grtd_stage_details


@dataclass(frozen=True)
class Population:
    """The known distribution the simulated cases are drawn from."""

    dim: int = 8
    n_classes: int = 3  # background included
    separation: float = 2.5  # distance between class means, in units of the point noise
    case_shift: float = 0.6  # sd of a case's shift of all its features
    case_class_shift: float = 0.5  # sd of a case's extra shift of each class
    volume_spread: float = 0.5  # sd of the log voxel count of a class in a case
    leak_mean: float = 0.25  # mean patch leakage
    leak_case_sd: float = 0.08  # sd of a case's mean leakage
    leak_concentration: float = 20.0  # Beta concentration of one patch's leakage around its case mean


def simulate_points(pop: Population, rng: np.random.Generator, n_cases: int, n_points: int) -> tuple[NDArray[Any], ...]:
    """(features (N, D), labels (N,), cases (N,)) of one simulated pilot set."""
    k = pop.n_classes
    means = pop.separation * np.eye(k, pop.dim)
    shift = rng.normal(0.0, pop.case_shift, (n_cases, 1, pop.dim)) + rng.normal(0.0, pop.case_class_shift, (n_cases, k, pop.dim))
    volume = np.exp(rng.normal(0.0, pop.volume_spread, (n_cases, k)))
    per_class = n_points // k
    feats, labels, cases = [], [], []
    for c in range(k):
        counts = rng.multinomial(per_class, volume[:, c] / volume[:, c].sum())
        for m, n in enumerate(counts):
            if n == 0:
                continue
            feats.append(means[c] + shift[m, c] + rng.normal(0.0, 1.0, (n, pop.dim)))
            labels.append(np.full(n, c))
            cases.append(np.full(n, m))
    return np.concatenate(feats), np.concatenate(labels), np.concatenate(cases)


def simulate_leakages(pop: Population, rng: np.random.Generator, n_cases: int, n_anchors: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """(leakages (A,), anchor cases (A,)): anchors spread over cases by boundary size, leakage by case."""
    boundary = np.exp(rng.normal(0.0, pop.volume_spread, n_cases))
    counts = rng.multinomial(n_anchors, boundary / boundary.sum())
    case_mean = np.clip(rng.normal(pop.leak_mean, pop.leak_case_sd, n_cases), 0.02, 0.98)
    cases = np.repeat(np.arange(n_cases), counts)
    mu = case_mean[cases]
    rho = rng.beta(mu * pop.leak_concentration, (1.0 - mu) * pop.leak_concentration)
    return rho, cases


def grtd_full(x: NDArray[Any], y: NDArray[Any], variant: str) -> float:
    return grtd_stage_details(x, y, variant=variant).value


def lbtc_full(rho: NDArray[Any]) -> float:
    return 1.0 - float(np.mean(rho))


def interval(full: float, replicates: NDArray[Any], n_cases: int, n_effective: float, level: float = 0.95) -> tuple[float, float]:
    """The interval the service reports for GRTD and LBTC (`bootstrap.score_interval`)."""
    iv = bs.score_interval(full, replicates, n_cases, n_effective, level)
    assert iv is not None
    return iv[0], iv[1]


def run(
    sims: int, n_cases: int, n_points: int, n_anchors: int, replicates: int, truth_sets: int, variant: str, seed: int,
    pop: Population | None = None,
) -> dict[str, Any]:
    """Coverage of GRTD and LBTC intervals over `sims` simulated pilot sets (see the module docstring)."""
    pop = pop or Population()
    t0 = time.perf_counter()
    truth_rng = np.random.default_rng([seed, 1])
    g_truth_draws = []
    l_truth_draws = []
    for _ in range(truth_sets):
        x, y, c = simulate_points(pop, truth_rng, n_cases, n_points)
        g_truth_draws.append(grtd_full(x, y, variant))
        l_truth_draws.append(lbtc_full(simulate_leakages(pop, truth_rng, n_cases, n_anchors)[0]))
    g_truth = float(np.mean(g_truth_draws))
    l_truth = float(np.mean(l_truth_draws))
    t_truth = time.perf_counter() - t0
    rng = np.random.default_rng([seed, 2])
    g_hits = l_hits = 0
    g_widths, l_widths = [], []
    g_values = []
    t1 = time.perf_counter()
    for s in range(sims):
        x, y, c = simulate_points(pop, rng, n_cases, n_points)
        rho, ac = simulate_leakages(pop, rng, n_cases, n_anchors)
        masks = bs.case_subsets(n_cases, replicates, seed=s)
        g = grtd_full(x, y, variant)
        g_rep, _ = bs.grtd_replicates({"s": x}, y, c, masks, variant=variant)
        lo, hi = interval(g, g_rep, n_cases, bs.effective_cases(np.bincount(c, minlength=n_cases)))
        g_hits += lo <= g_truth <= hi
        g_widths.append(hi - lo)
        g_values.append(g)
        l_rep = bs.lbtc_replicates({"s": rho}, ac, masks)
        l_full = lbtc_full(rho)
        lo, hi = interval(l_full, l_rep, n_cases, bs.effective_cases(np.bincount(ac, minlength=n_cases)))
        l_hits += lo <= l_truth <= hi
        l_widths.append(hi - lo)
    lo_ok, hi_ok = (int(v) for v in binom.interval(0.95, sims, 0.95))
    sd = float(np.std(g_values, ddof=1))
    return {
        "bench": "bootstrap_coverage",
        "method": bs.SCHEME,
        "variant": variant,
        "sims": sims,
        "n_cases": n_cases,
        "n_points": n_points,
        "n_anchors": n_anchors,
        "replicates": replicates,
        "truth_sets": truth_sets,
        "population": pop.__dict__,
        "acceptable_hits": [lo_ok, hi_ok],
        "grtd": {
            "truth": g_truth,
            "truth_mc_se": float(np.std(g_truth_draws, ddof=1) / math.sqrt(truth_sets)),
            "hits": g_hits,
            "coverage": g_hits / sims,
            "within_binomial_range": lo_ok <= g_hits <= hi_ok,
            "median_width": float(np.median(g_widths)),
            "width_if_normal": 2 * 1.959964 * sd,  # from the spread of the score across the simulated pilot sets
        },
        "lbtc": {
            "truth": l_truth,
            "hits": l_hits,
            "coverage": l_hits / sims,
            "within_binomial_range": lo_ok <= l_hits <= hi_ok,
            "median_width": float(np.median(l_widths)),
        },
        "seconds": {"truth": t_truth, "simulations": time.perf_counter() - t1},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sims", type=int, default=200)
    p.add_argument("--cases", type=int, default=10)
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--anchors", type=int, default=512)
    p.add_argument("--replicates", type=int, default=200)
    p.add_argument("--truth-sets", type=int, default=2000)
    p.add_argument("--variant", default="penalised", choices=["penalised", "contracted"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args(argv)
    res = run(a.sims, a.cases, a.points, a.anchors, a.replicates, a.truth_sets, a.variant, a.seed)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
