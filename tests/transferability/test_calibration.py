"""Fitting the fusion gate to a tenant's evaluations: grid search, tie-breaking, leave-one-out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from transferability.calibration import (
    Calibration,
    CalibrationExample,
    calibration_report,
    example_tau,
    fit_calibration,
)
from transferability.evaluation import weighted_tau
from transferability.fusion import DEFAULT_A, DEFAULT_B, fuse, task_alpha


def _ex(g, l, truth, k: int) -> CalibrationExample:
    ids = [f"m{i}" for i in range(len(g))]
    return CalibrationExample(scores={m: (float(a), float(b)) for m, a, b in zip(ids, g, l)},
                              truth={m: float(t) for m, t in zip(ids, truth)}, num_foreground_classes=k)


# GRTD and LBTC disagree on two pairs. Pair (m2, m3): almost equal GRTD, opposite LBTC, so the
# GRTD order of that pair only wins for alpha above ~0.98. Pair (m0, m1): almost equal LBTC,
# opposite GRTD, so the LBTC order only wins for alpha below ~0.02.
G = [0.0, 1.0, 0.50, 0.51, 0.2, 0.8]
L = [0.40, 0.39, 1.0, 0.0, 0.9, 0.1]


def _follows_lbtc(k: int, shift: float = 0.0) -> CalibrationExample:
    return _ex(G, L, [v + shift for v in L], k)


def _follows_grtd(k: int, shift: float = 0.0) -> CalibrationExample:
    return _ex(G, L, [v + shift for v in G], k)


def _no_signal(k: int, seed: int) -> CalibrationExample:
    rng = np.random.default_rng(seed)
    g = rng.normal(size=7)
    return _ex(g, 2.0 * g + 1.0, rng.normal(size=7), k)  # LBTC ranks as GRTD: every alpha ranks alike


def test_example_tau_is_weighted_tau_of_fuse() -> None:
    ex = _ex([0.3, -1.0, 2.0, 0.5, 0.1], [5.0, 4.0, 1.0, 2.0, 2.5], [0.7, 0.2, 0.9, 0.4, 0.5], k=2)
    for alpha in (0.0, 0.13, 0.5, 0.87, 1.0):
        res = fuse(ex.scores, 2, alpha=alpha)
        s = {m.model_id: m.score for m in res.models}
        ids = sorted(s)
        assert example_tau(ex, alpha) == weighted_tau([s[m] for m in ids], [ex.truth[m] for m in ids])


def test_example_tau_normalises_over_the_zoo_and_is_nan_where_undefined() -> None:
    scores = {"a": (0.0, 0.0), "b": (1.0, 1.0), "c": (10.0, 10.0)}
    ex = CalibrationExample(scores=scores, truth={"a": 1.0, "b": 2.0, "x": 5.0}, num_foreground_classes=1)
    assert example_tau(ex, 0.3) == pytest.approx(1.0)
    flat = CalibrationExample(scores=scores, truth={"a": 1.0, "b": 1.0}, num_foreground_classes=1)
    assert math.isnan(example_tau(flat, 0.3))
    one = CalibrationExample(scores=scores, truth={"a": 1.0}, num_foreground_classes=1)
    assert math.isnan(example_tau(one, 0.3))
    with pytest.raises(ValueError, match="alpha"):
        example_tau(ex, 1.5)


@pytest.mark.parametrize("kind", ["auto", "gate", "per_k"])
def test_no_signal_returns_the_default_exactly(kind: str) -> None:
    examples = [_no_signal(k, seed) for seed, k in enumerate([1, 1, 2, 3, 3, 5])]
    cal = fit_calibration(examples, kind=kind)
    for k in (1, 2, 3, 5, 7):
        assert cal.alpha_for(k) == task_alpha(k)
    if cal.kind == "gate":
        assert (cal.a, cal.b, cal.alpha_by_k) == (DEFAULT_A, DEFAULT_B, {})
    rep = calibration_report(examples, kind=kind)
    assert rep.mean_tau_fitted == rep.mean_tau_default
    assert rep.loo_tau_fitted == rep.loo_tau_default


def test_per_k_learns_lbtc_for_k1_and_grtd_for_k3() -> None:
    examples = [_follows_lbtc(1, s) for s in (0.0, 0.1, 0.2)] + [_follows_grtd(3, s) for s in (0.0, 0.1, 0.2)]
    cal = fit_calibration(examples)  # 2 distinct K: auto -> per_k
    assert cal.kind == "per_k" and set(cal.alpha_by_k) == {1, 3}
    assert cal.alpha_for(1) < 0.02
    assert cal.alpha_for(3) > 0.98
    assert cal.alpha_for(2) == task_alpha(2)  # an unseen K keeps the default gate
    rep = calibration_report(examples)
    assert rep.mean_tau_fitted == pytest.approx(1.0)
    assert rep.mean_tau_fitted > rep.mean_tau_default
    assert rep.loo_tau_fitted > rep.loo_tau_default
    assert rep.distinct_k == [1, 3] and rep.n_evaluations == 6 and rep.n_skipped == 0


def test_gate_learns_a_steep_gate_on_three_distinct_k() -> None:
    examples = [_follows_lbtc(1), _follows_lbtc(1, 0.1), _follows_lbtc(2), _follows_lbtc(2, 0.1),
                _follows_grtd(4), _follows_grtd(4, 0.1)]
    cal = fit_calibration(examples)  # 3 distinct K: auto -> gate
    assert cal.kind == "gate" and cal.alpha_by_k == {}
    assert cal.alpha_for(1) < 0.02 and cal.alpha_for(2) < 0.02 and cal.alpha_for(4) > 0.98
    assert cal.a > DEFAULT_A  # steeper than the default, which gives K = 2 0.21 and K = 4 0.94
    rep = calibration_report(examples)
    assert rep.mean_tau_fitted == pytest.approx(1.0)
    assert rep.mean_tau_fitted > rep.mean_tau_default
    # explicit per_k on the same data fits too
    per_k = fit_calibration(examples, kind="per_k")
    assert per_k.kind == "per_k" and set(per_k.alpha_by_k) == {1, 2, 4}


def test_leave_one_out_by_hand() -> None:
    # Two models, K = 1: S(m1) - S(m0) = 2 alpha - 1, so tau = +1 (truth m0 best) for alpha < 0.5,
    # -1 for alpha > 0.5, undefined (counted 0) at 0.5. A follows LBTC, B and C follow GRTD.
    scores = {"m0": (0.0, 1.0), "m1": (1.0, 0.0)}
    a = CalibrationExample(scores=scores, truth={"m0": 1.0, "m1": 0.0}, num_foreground_classes=1)
    b = CalibrationExample(scores=scores, truth={"m0": 0.0, "m1": 1.0}, num_foreground_classes=1)
    c = CalibrationExample(scores=scores, truth={"m0": 0.2, "m1": 0.3}, num_foreground_classes=1)
    d0 = task_alpha(1)  # 0.004
    rep = calibration_report([a, b, c], kind="per_k")
    # in sample: default -> (+1, -1, -1); best is alpha > 0.5, nearest the default on the grid: 0.51
    assert rep.calibration.alpha_by_k == {1: pytest.approx(0.51)}
    assert rep.mean_tau_default == pytest.approx(-1 / 3)
    assert rep.mean_tau_fitted == pytest.approx(1 / 3)
    # without A: B and C want alpha > 0.5 -> 0.51 -> A scores -1. Without B (or C): A and C (or B)
    # cancel, every alpha ties at 0 -> the default -> B (or C) scores -1.
    assert [e["index"] for e in rep.loo] == [0, 1, 2]
    assert [e["tau_default"] for e in rep.loo] == [1.0, -1.0, -1.0]
    assert [e["tau_fitted"] for e in rep.loo] == [-1.0, -1.0, -1.0]
    assert [e["alpha_fitted"] for e in rep.loo] == [pytest.approx(0.51), d0, d0]
    assert all(e["alpha_default"] == d0 and e["k"] == 1 for e in rep.loo)
    assert rep.loo_tau_default == pytest.approx(-1 / 3)
    assert rep.loo_tau_fitted == pytest.approx(-1.0)
    assert any("only 3 evaluations: below 5" in w for w in rep.warnings)
    assert any("does not beat the default" in w for w in rep.warnings)


def test_skipping_counts_and_indexes_refer_to_the_input() -> None:
    good = [_follows_lbtc(1), _follows_grtd(3)]
    flat_truth = _ex(G, L, [0.5] * len(G), 1)
    one_common = CalibrationExample(scores={"a": (0.0, 1.0), "b": (1.0, 0.0)}, truth={"a": 1.0, "z": 2.0},
                                    num_foreground_classes=2)
    flat_scores = _ex([1.0] * 4, [2.0] * 4, [0.1, 0.2, 0.3, 0.4], 3)
    rep = calibration_report([flat_truth, good[0], one_common, flat_scores, good[1]])
    assert rep.n_evaluations == 2 and rep.n_skipped == 3
    assert [e["index"] for e in rep.loo] == [1, 4]
    assert any("3 evaluations skipped" in w for w in rep.warnings)
    single = calibration_report([good[0], flat_truth])
    assert single.loo == [] and single.loo_tau_default is None and single.loo_tau_fitted is None
    assert single.n_evaluations == 1 and single.n_skipped == 1


def test_errors() -> None:
    with pytest.raises(ValueError, match="no usable evaluation"):
        fit_calibration([])
    with pytest.raises(ValueError, match="no usable evaluation"):
        calibration_report([_ex(G, L, [0.5] * len(G), 1)])
    with pytest.raises(ValueError, match="unknown calibration kind"):
        fit_calibration([_follows_lbtc(1)], kind="spline")
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_calibration([_ex([0.0, math.nan], [0.0, 1.0], [0.0, 1.0], 1)])
    with pytest.raises(ValueError, match="NaN or inf"):
        fit_calibration([_ex([0.0, 1.0], [0.0, 1.0], [0.0, math.inf], 1)])
    with pytest.raises(ValueError, match="K"):
        fit_calibration([_ex([0.0, 1.0], [0.0, 1.0], [0.0, 1.0], 0)])
    with pytest.raises(ValueError, match="K"):
        Calibration.default().alpha_for(0)
    with pytest.raises(ValueError, match="kind"):
        Calibration(kind="spline", a=1.0, b=0.0, alpha_by_k={})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Calibration(kind="per_k", a=DEFAULT_A, b=DEFAULT_B, alpha_by_k={2: 1.5})


def test_round_trip_through_json() -> None:
    per_k = Calibration(kind="per_k", a=DEFAULT_A, b=DEFAULT_B, alpha_by_k={1: 0.0, 3: 0.91})
    gate = Calibration(kind="gate", a=11.5, b=0.83, alpha_by_k={})
    for cal in (per_k, gate, Calibration.default()):
        back = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
        assert back == cal
        assert [back.alpha_for(k) for k in (1, 2, 3, 9)] == [cal.alpha_for(k) for k in (1, 2, 3, 9)]
    assert per_k.to_dict()["alpha_by_k"] == {"1": 0.0, "3": 0.91}
    assert Calibration.from_dict({"kind": "per_k", "a": 6, "b": 0.9, "alpha_by_k": {3: 0.5}}).alpha_for(3) == 0.5
    with pytest.raises(ValueError, match="integer K"):
        Calibration.from_dict({"kind": "per_k", "a": 6.0, "b": 0.9, "alpha_by_k": {"three": 0.5}})
    with pytest.raises(ValueError, match="missing"):
        Calibration.from_dict({"kind": "gate"})
    rep = calibration_report([_follows_lbtc(1), _follows_grtd(3), _follows_lbtc(1, 0.1)])
    d = json.loads(json.dumps(rep.to_dict()))
    assert Calibration.from_dict(d["calibration"]) == rep.calibration
    assert d["n_evaluations"] == 3 and len(d["loo"]) == 3
    assert set(d["loo"][0]) == {"index", "k", "tau_default", "tau_fitted", "alpha_default", "alpha_fitted"}


def test_shuffled_truth_does_not_let_leave_one_out_beat_the_default_systematically() -> None:
    rng = np.random.default_rng(7)
    gains = []
    for _ in range(4):
        examples = []
        for k in (1, 1, 2, 3, 4, 4):
            g, l = rng.normal(size=6), rng.normal(size=6)
            examples.append(_ex(g, l, rng.permutation(6).astype(float), k))
        rep = calibration_report(examples)
        gains.append(rep.loo_tau_fitted - rep.loo_tau_default)
        assert rep.mean_tau_fitted >= rep.mean_tau_default  # in sample, it can only overfit upwards
    assert np.mean(gains) < 0.15
