"""The validation benchmark's analysis: truth reproducibility, agreement, chance level, permutation effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.validation.analysis import (
    agreement,
    chance_weighted_tau,
    permutation_effect,
    reproducibility,
    split_half_tau,
    spread_to_noise,
)


def _seeds(means: list[float], noise: float, n_seeds: int = 3, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {f"m{i}": list(mu + noise * rng.standard_normal(n_seeds)) for i, mu in enumerate(means)}


def test_split_half_tau_is_one_when_seeds_agree_and_low_when_they_are_noise() -> None:
    clean = _seeds([0.1 * i for i in range(8)], noise=1e-4)
    assert split_half_tau(clean)["tau"] == pytest.approx(1.0)
    assert split_half_tau(clean)["splits"] == 3  # 3 seeds: each seed against the other two
    noisy = _seeds([0.5] * 8, noise=0.1, seed=3)
    assert split_half_tau(noisy)["tau"] < 0.5
    assert reproducibility(clean)["informative"] and not reproducibility(noisy)["informative"]


def test_split_half_tau_takes_each_even_split_once() -> None:
    assert split_half_tau(_seeds([0.1 * i for i in range(5)], 1e-4, n_seeds=4))["splits"] == 3


def test_spread_to_noise_is_the_ratio_of_model_spread_to_seed_std() -> None:
    d = {"a": [0.1, 0.3], "b": [0.5, 0.7]}  # seed std 0.1414 each; model means 0.2, 0.6 -> std 0.2828
    assert spread_to_noise(d) == pytest.approx(2.0)


def test_agreement_is_perfect_for_the_truth_itself_and_reversed_for_its_negation() -> None:
    truth = {f"m{i}": float(i) for i in range(6)}
    assert agreement(truth, truth)["weighted_tau"] == pytest.approx(1.0)
    assert agreement({m: -v for m, v in truth.items()}, truth)["weighted_tau"] == pytest.approx(-1.0)
    a = agreement({**truth, "m0": float("nan")}, truth)
    assert a["n_models"] == 5
    assert math.isnan(agreement({m: 1.0 for m in truth}, truth)["weighted_tau"])  # a constant score ranks nothing


def test_chance_range_is_centred_near_zero_and_narrows_with_unrelated_tasks() -> None:
    rng = np.random.default_rng(5)
    tasks = [{f"m{i}": float(v) for i, v in enumerate(rng.permutation(11))} for _ in range(6)]
    one = chance_weighted_tau(tasks[:1], draws=500)
    six = chance_weighted_tau(tasks, draws=500)
    for c in (one, six):
        assert c["lo95"] < 0 < c["hi95"]
    assert six["hi95"] - six["lo95"] < 0.7 * (one["hi95"] - one["lo95"])  # about 1/sqrt(6) of it
    assert chance_weighted_tau(tasks, draws=500) == six  # seeded: the report is repeatable
    assert math.isnan(chance_weighted_tau([{"a": 1.0, "b": 2.0}])["hi95"])
    flat = {m: 0.0 for m in tasks[0]}  # a task nobody learnt: no tau, left out as the averages leave it out
    assert chance_weighted_tau([*tasks, flat], draws=500)["hi95"] == pytest.approx(chance_weighted_tau(tasks, draws=500)["hi95"], abs=0.05)
    assert math.isnan(chance_weighted_tau([flat], draws=50)["hi95"])


def test_chance_range_stays_wide_when_every_task_has_the_same_truth() -> None:
    """A task-blind random ordering is equally wrong on identical tasks: no 1/sqrt(n) narrowing."""
    truth = {f"m{i}": float(i) for i in range(11)}
    one = chance_weighted_tau([truth], draws=500)
    six = chance_weighted_tau([truth] * 6, draws=500)
    assert six["hi95"] - six["lo95"] > 0.8 * (one["hi95"] - one["lo95"])


def test_permutation_effect_is_the_mean_move_in_units_of_between_model_spread() -> None:
    true = {"a": 1.0, "b": 2.0, "c": 3.0}  # std 1
    e = permutation_effect(true, {"a": 0.5, "b": 1.5, "c": 3.5})
    assert e["effect"] == pytest.approx((0.5 + 0.5 - 0.5) / 3)
    assert e["frac_true_higher"] == pytest.approx(2 / 3)
    assert permutation_effect(true, true)["effect"] == 0.0
