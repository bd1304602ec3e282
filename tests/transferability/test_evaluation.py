"""Ranking agreement metrics (metrics.md §7)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from transferability.evaluation import evaluate, kendall_tau, spearman, top1_regret, weighted_tau


def test_weighted_tau_is_scipy_defaults() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        s, t = rng.standard_normal(12), rng.standard_normal(12)
        assert weighted_tau(s, t) == stats.weightedtau(s, t).statistic
    assert weighted_tau([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert weighted_tau([1, 2, 3, 4], [40, 30, 20, 10]) == pytest.approx(-1.0)


def test_weighted_tau_weights_the_top() -> None:
    truth = np.arange(8.0)
    top_swapped = truth.copy()
    top_swapped[[7, 6]] = top_swapped[[6, 7]]
    bottom_swapped = truth.copy()
    bottom_swapped[[0, 1]] = bottom_swapped[[1, 0]]
    assert weighted_tau(top_swapped, truth) < weighted_tau(bottom_swapped, truth) < 1.0


def test_kendall_tau_b_with_ties_known_value() -> None:
    # x = [1,1,2,3], y = [1,2,2,3]: concordant 4, discordant 0, one tie in x (pair 0-1),
    # one tie in y (pair 1-2): tau_b = 4 / sqrt(5 * 5) = 0.8.
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)


def test_spearman_known_value() -> None:
    # ranks differ by d = [1, -1, 0, 0, 0]: rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert spearman([2, 1, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(0.9)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_top1_regret() -> None:
    truth = [0.70, 0.85, 0.80]
    assert top1_regret([0.1, 0.9, 0.5], truth) == 0.0
    assert top1_regret([0.9, 0.1, 0.5], truth) == pytest.approx(0.15)
    assert top1_regret([0.5, 0.1, 0.5], truth) == pytest.approx(0.15)  # tie at the top: first position


def test_evaluate_with_mappings_and_negated_lower_is_better() -> None:
    truth = {"m1": 0.80, "m2": 0.70, "m3": 0.90, "m4": 0.60}
    good = {"m1": 2.0, "m2": 1.0, "m3": 3.0, "m4": 0.0}
    distance_like = {k: -v for k, v in {"m1": 0.2, "m2": 0.3, "m3": 0.1, "m4": 0.4}.items()}  # negated
    table = evaluate({"good": good, "neg_distance": distance_like}, truth)
    for name in ("good", "neg_distance"):
        row = table.row(name)
        assert row.n_models == 4
        assert row.weighted_tau == pytest.approx(1.0)
        assert row.kendall_tau == pytest.approx(1.0)
        assert row.spearman == pytest.approx(1.0)
        assert row.top1_regret == 0.0
    assert [r.metric for r in table.rows] == ["good", "neg_distance"]


def test_evaluate_aligns_by_model_id_not_insertion_order() -> None:
    truth = {"b": 2.0, "a": 1.0, "c": 3.0}
    scores = {"c": 30.0, "a": 10.0, "b": 20.0}
    assert evaluate({"m": scores}, truth).row("m").kendall_tau == pytest.approx(1.0)


def test_evaluate_with_arrays_matches_functions() -> None:
    rng = np.random.default_rng(1)
    s, t = rng.standard_normal(9), rng.standard_normal(9)
    row = evaluate({"x": s}, t).row("x")
    assert row.weighted_tau == weighted_tau(s, t)
    assert row.kendall_tau == kendall_tau(s, t)
    assert row.spearman == spearman(s, t)
    assert row.top1_regret == top1_regret(s, t)


def test_to_dict_turns_nan_into_none() -> None:
    table = evaluate({"const": [1.0, 1.0, 1.0]}, [1.0, 2.0, 3.0])
    out = json.loads(json.dumps(table.to_dict()))
    assert out["rows"][0]["spearman"] is None
    assert out["rows"][0]["top1_regret"] == 2.0
    with pytest.raises(KeyError):
        table.row("missing")


@pytest.mark.parametrize(
    "scores, truth, msg",
    [
        ([1.0], [1.0], "at least two"),
        ([1.0, 2.0], [1.0, 2.0, 3.0], "same length"),
        ([1.0, np.nan], [1.0, 2.0], "finite"),
        ([[1.0, 2.0]], [[1.0, 2.0]], "1-D"),
    ],
)
def test_validation(scores: list, truth: list, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        weighted_tau(scores, truth)


def test_evaluate_validation() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        evaluate({}, [1.0, 2.0])
    with pytest.raises(ValueError, match="differ"):
        evaluate({"m": {"a": 1.0, "b": 2.0}}, {"a": 1.0, "c": 2.0})
    with pytest.raises(ValueError, match="both be mappings"):
        evaluate({"m": [1.0, 2.0]}, {"a": 1.0, "b": 2.0})
