"""The validation benchmark's statistics: truth reliability, bootstrap of mean tau, permutation, MDD, ladders."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from bench.validation.analysis import agreement
from bench.validation.stats import (
    _weighted_tau_batch,
    bootstrap_mean_tau,
    bootstrap_tau_replicates,
    chance_sd_single_task,
    ladder_check,
    minimum_detectable_difference,
    paired_differences,
    permutation_pvalue,
    tau_table,
    truth_reliability,
    variance_share,
)

N_BOOT = 300


def _bench(n_tasks: int = 5, n_models: int = 10, seed: int = 0) -> tuple[dict, dict, list[str]]:
    """Random strict truths and four metrics: exact, monotone transform, reversed, random."""
    rng = np.random.default_rng(seed)
    models = [f"m{i:02d}" for i in range(n_models)]
    tasks = [f"t{k}" for k in range(n_tasks)]
    truth = {t: {m: float(v) for m, v in zip(models, rng.random(n_models))} for t in tasks}
    scores = {
        "exact": {t: dict(truth[t]) for t in tasks},
        "monotone": {t: {m: 3.0 * math.exp(v) - 7.0 for m, v in truth[t].items()} for t in tasks},
        "reversed": {t: {m: -v for m, v in truth[t].items()} for t in tasks},
        "random": {t: {m: float(rng.standard_normal()) for m in models} for t in tasks},
    }
    return scores, truth, tasks


# --- the batched weighted tau is scipy's ----------------------------------------------------


def test_batched_weighted_tau_equals_scipy_with_ties_duplicates_and_missing() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 4, size=(200, 9)).astype(float)  # many ties
    y = rng.integers(0, 5, size=(200, 9)).astype(float)
    idx = rng.integers(0, 9, size=(200, 9))  # duplicated models, as in the bootstrap
    x, y = np.take_along_axis(x, idx, 1), np.take_along_axis(y, idx, 1)
    valid = rng.random((200, 9)) > 0.2
    got = _weighted_tau_batch(x, y, valid)
    ref = np.array([stats.weightedtau(x[b][valid[b]], y[b][valid[b]]).statistic for b in range(200)])
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[np.isfinite(got)], ref[np.isfinite(ref)], atol=1e-12)


def test_tau_table_and_observed_means_agree_with_analysis_agreement() -> None:
    scores, truth, tasks = _bench()
    scores["random"]["t1"]["m03"] = None  # a missing score is left out, as in agreement
    table = tau_table(scores, truth)
    for metric in scores:
        for t in tasks:
            assert table[metric][t] == agreement(scores[metric][t], truth[t])["weighted_tau"] or (
                math.isnan(table[metric][t])
            )
    rep = bootstrap_tau_replicates(scores, truth, tasks, n_boot=10)
    for metric in scores:
        assert rep["observed"][metric] == pytest.approx(np.mean(list(table[metric].values())), abs=1e-12)
    assert table["exact"]["t0"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="without a truth"):
        tau_table({"x": {"nope": {}}}, truth)


# --- bootstrap of the mean tau ----------------------------------------------------------------


def test_metric_ordered_as_the_truth_has_tau_exactly_one_in_every_replicate() -> None:
    # duplicates from model resampling are tied in score AND truth: weighted tau stays exactly 1
    scores, truth, tasks = _bench()
    res = bootstrap_mean_tau(scores, truth, tasks, n_boot=N_BOOT, seed=3)
    for metric in ("exact", "monotone"):
        r = res[metric]
        assert r["mean"] == 1.0 and r["lo"] == 1.0 and r["hi"] == 1.0 and r["se"] == 0.0
        assert r["n_tasks"] == len(tasks) and r["n_boot"] == N_BOOT
    assert res["reversed"]["lo"] == res["reversed"]["hi"] == -1.0


def test_random_metrics_intervals_mostly_cover_zero() -> None:
    rng = np.random.default_rng(11)
    models = [f"m{i}" for i in range(12)]
    tasks = [f"t{k}" for k in range(6)]
    truth = {t: {m: float(v) for m, v in zip(models, rng.random(12))} for t in tasks}
    scores = {f"r{i}": {t: {m: float(rng.random()) for m in models} for t in tasks} for i in range(20)}
    res = bootstrap_mean_tau(scores, truth, tasks, n_boot=N_BOOT, seed=0)
    covered = [r["lo"] < 0 < r["hi"] for r in res.values()]
    assert sum(covered) >= 17  # nominal 95 %
    widths = [r["hi"] - r["lo"] for r in res.values()]
    assert all(0.1 < w < 1.5 for w in widths)


def test_bootstrap_is_deterministic_for_a_seed_and_shares_replicates_across_metrics() -> None:
    scores, truth, tasks = _bench()
    a = bootstrap_mean_tau(scores, truth, tasks, n_boot=N_BOOT, seed=5)
    b = bootstrap_mean_tau(scores, truth, tasks, n_boot=N_BOOT, seed=5)
    c = bootstrap_mean_tau(scores, truth, tasks, n_boot=N_BOOT, seed=6)
    only = bootstrap_mean_tau({"random": scores["random"]}, truth, tasks, n_boot=N_BOOT, seed=5)
    np.testing.assert_array_equal(a["random"]["replicates"], b["random"]["replicates"])
    np.testing.assert_array_equal(a["random"]["replicates"], only["random"]["replicates"])
    assert not np.array_equal(a["random"]["replicates"], c["random"]["replicates"])
    assert a["random"]["lo"] < a["random"]["mean"] < a["random"]["hi"]


def test_undefined_taus_are_skipped_per_metric() -> None:
    scores, truth, tasks = _bench(n_tasks=4)
    scores["random"]["t2"] = {m: 1.0 for m in truth["t2"]}  # constant: no tau on t2
    del scores["random"]["t3"]  # not run on t3
    res = bootstrap_mean_tau(scores, truth, tasks, n_boot=50, seed=0)
    assert res["random"]["n_tasks"] == 2
    expected = np.mean([agreement(scores["random"][t], truth[t])["weighted_tau"] for t in ("t0", "t1")])
    assert res["random"]["mean"] == pytest.approx(expected)
    assert res["exact"]["n_tasks"] == 4


def test_paired_difference_of_a_metric_with_itself_is_exactly_zero() -> None:
    scores, truth, tasks = _bench()
    pd = paired_differences(scores, truth, tasks, [("random", "random"), ("exact", "random")], n_boot=N_BOOT, seed=2)
    same = pd[("random", "random")]
    assert same["diff"] == 0.0 and same["lo"] == 0.0 and same["hi"] == 0.0 and same["se"] == 0.0
    assert same["p_boot"] == 1.0
    better = pd[("exact", "random")]
    boot = bootstrap_mean_tau(scores, truth, tasks, n_boot=N_BOOT, seed=2)
    assert better["diff"] == pytest.approx(boot["exact"]["mean"] - boot["random"]["mean"])
    d = boot["exact"]["replicates"] - boot["random"]["replicates"]  # the same replicates
    assert better["lo"] == pytest.approx(np.quantile(d, 0.025))
    assert better["lo"] > 0 and better["p_boot"] == pytest.approx(2 / (N_BOOT + 1))
    with pytest.raises(ValueError, match="without scores"):
        paired_differences(scores, truth, tasks, [("exact", "nope")], n_boot=10)


# --- permutation --------------------------------------------------------------------------------


def test_permutation_pvalue_is_small_for_a_perfect_metric_and_near_one_for_a_reversed_one() -> None:
    scores, truth, tasks = _bench(n_tasks=5, n_models=10)
    res = permutation_pvalue(scores, truth, tasks, draws=500, seed=0)
    assert res["exact"]["observed"] == 1.0
    assert res["exact"]["p"] < 0.01
    assert res["exact"]["p"] == pytest.approx(1 / 501)
    assert res["reversed"]["p"] > 0.99
    assert res["exact"]["null_lo95"] < 0 < res["exact"]["null_hi95"]
    assert permutation_pvalue(scores, truth, tasks, draws=500, seed=0) == res


# --- truth reliability ----------------------------------------------------------------------


def test_reliability_matches_a_hand_computed_anova_and_spearman_brown() -> None:
    # means 2, 5, 3 (grand 10/3): MSB = 3 * (16 + 25 + 1) / 9 / 2 = 7; MSW = (2 + 2 + 6) / 6 = 5/3
    r = truth_reliability({"a": [1, 2, 3], "b": [4, 5, 6], "c": [2, 2, 5]})
    assert r["msb"] == pytest.approx(7.0) and r["msw"] == pytest.approx(5 / 3)
    assert r["icck"] == pytest.approx(16 / 21)  # (7 - 5/3) / 7
    assert r["icc1"] == pytest.approx(16 / 31)  # (7 - 5/3) / (7 + 2 * 5/3)
    assert r["var_between"] == pytest.approx((7 - 5 / 3) / 3) and r["n0"] == pytest.approx(3.0)
    assert r["seeds_needed"] == pytest.approx(3.75)  # 0.8 (15/31) / ((16/31) 0.2)
    assert r["seeds_needed_int"] == 4 and r["balanced"]


def test_reliability_of_noiseless_truth_is_one_and_of_pure_noise_near_zero() -> None:
    clean = truth_reliability({f"m{i}": [0.1 * i] * 3 for i in range(6)})
    assert clean["icck"] == 1.0 and clean["icc1"] == 1.0 and clean["seeds_needed_int"] == 1
    rng = np.random.default_rng(4)
    noise = truth_reliability({f"m{i}": list(rng.normal(0.7, 0.05, 4)) for i in range(400)})
    assert abs(noise["icck_raw"]) < 0.25 and noise["icck"] < 0.25  # sd of the estimate ~0.08 here
    assert noise["p_value"] > 0.01
    flat_means = truth_reliability({"a": [1.0, 3.0], "b": [3.0, 1.0], "c": [2.0, 2.0]})
    assert flat_means["icck_raw"] == -math.inf and flat_means["icck"] == 0.0
    assert flat_means["seeds_needed"] == math.inf and flat_means["seeds_needed_int"] is None
    assert math.isnan(truth_reliability({"a": [1.0, 1.0], "b": [1.0, 1.0]})["icck"])


def test_reliability_handles_unequal_seed_counts_and_rejects_what_it_cannot_estimate() -> None:
    r = truth_reliability({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0], "c": [2.0, float("nan")]})
    assert not r["balanced"] and r["n_obs"] == 6
    assert r["n0"] == pytest.approx((6 - (9 + 4 + 1) / 6) / 2)
    with pytest.raises(ValueError, match="two or more"):
        truth_reliability({"a": [1.0], "b": [2.0]})
    with pytest.raises(ValueError, match="at least two models"):
        truth_reliability({"a": [1.0, 2.0]})
    with pytest.raises(ValueError, match="target"):
        truth_reliability({"a": [1.0, 2.0], "b": [2.0, 3.0]}, target=1.5)


# --- variance share -----------------------------------------------------------------------------


def test_variance_share_is_one_without_decoder_effect_and_zero_without_model_effect() -> None:
    only_model = {f"m{i}": {d: float(i) for d in ("unet", "fpn", "linear")} for i in range(5)}
    r = variance_share(only_model)
    assert r["share"] == 1.0 and r["var_decoder"] == 0.0
    only_decoder = {f"m{i}": {"unet": 1.0, "fpn": 2.0, "linear": 4.0} for i in range(5)}
    r = variance_share(only_decoder)
    assert r["share"] == 0.0 and r["var_model"] == 0.0
    assert r["share_raw"] < 0 and r["var_model_raw"] < 0
    mixed = {"a": {"u": 1.0, "f": 1.2, "l": None}, "b": {"u": 2.0, "f": 2.1, "l": float("nan")}, "c": {"u": 3.0}}
    r = variance_share(mixed)
    assert r["n_obs"] == 5 and 0.9 < r["share"] <= 1.0


# --- reference levels --------------------------------------------------------------------------


def test_minimum_detectable_difference() -> None:
    assert minimum_detectable_difference(0.1) == pytest.approx(0.28016, abs=1e-4)
    assert minimum_detectable_difference(1.0, alpha=0.05, power=0.5) == pytest.approx(1.959964, abs=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        minimum_detectable_difference(0.1, alpha=0.0)
    with pytest.raises(ValueError, match="se_of_difference"):
        minimum_detectable_difference(-1.0)


def test_chance_sd_single_task_is_seeded_and_shrinks_with_the_zoo() -> None:
    sd14 = chance_sd_single_task(14, draws=4000)
    assert sd14 == chance_sd_single_task(14, draws=4000)
    rng = np.random.default_rng(9)
    ref = np.std([stats.weightedtau(rng.permutation(14), np.arange(14)).statistic for _ in range(600)], ddof=1)
    assert sd14 == pytest.approx(ref, rel=0.1)
    assert chance_sd_single_task(40, draws=2000) < sd14 < chance_sd_single_task(5, draws=2000)
    with pytest.raises(ValueError, match="n_models"):
        chance_sd_single_task(2)


# --- ladder --------------------------------------------------------------------------------------


def test_ladder_check_perfect_reversed_tied_and_missing() -> None:
    ladder = ["base", "r25", "r50", "r75"]
    good = ladder_check({"base": 0.9, "r25": 0.8, "r50": 0.5, "r75": 0.1, "other": 5.0}, ladder)
    assert good["frac_correct"] == 1.0 and good["kendall_tau"] == pytest.approx(1.0) and good["fully_correct"]
    assert good["n_pairs"] == 6
    bad = ladder_check({"base": 0.1, "r25": 0.5, "r50": 0.8, "r75": 0.9}, ladder)
    assert bad["frac_correct"] == 0.0 and bad["kendall_tau"] == pytest.approx(-1.0) and not bad["fully_correct"]
    tied = ladder_check({m: 0.5 for m in ladder}, ladder)
    assert tied["frac_correct"] == 0.5 and math.isnan(tied["kendall_tau"]) and not tied["fully_correct"]
    one_tie = ladder_check({"base": 0.9, "r25": 0.9, "r50": 0.5, "r75": 0.1}, ladder)
    assert one_tie["frac_correct"] == pytest.approx(5.5 / 6) and not one_tie["fully_correct"]
    gap = ladder_check({"base": 0.9, "r25": None, "r50": 0.5}, ladder)
    assert gap["missing"] == ["r25", "r75"] and gap["n_pairs"] == 1 and gap["fully_correct"]
    with pytest.raises(ValueError, match="repeat"):
        ladder_check({}, ["a", "a"])


# --- validation at the edge ----------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors() -> None:
    scores, truth, tasks = _bench()
    with pytest.raises(ValueError, match="without a truth"):
        bootstrap_mean_tau(scores, truth, ["t0", "nope"], n_boot=10)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_mean_tau(scores, truth, tasks, n_boot=0)
    with pytest.raises(ValueError, match="at least 3 models"):
        bootstrap_mean_tau(scores, truth, tasks, models=["m00", "m01"], n_boot=10)
    with pytest.raises(ValueError, match="no truth"):
        permutation_pvalue(scores, truth, tasks, models=["m00", "m01", "zz"], draws=10)
    with pytest.raises(TypeError, match="expected a number"):
        bootstrap_mean_tau({"x": {"t0": {"m00": "high"}}}, truth, tasks, n_boot=10)


def test_a_constant_score_counts_as_chosen_instead_of_being_skipped():
    """`constant_score_tau=0`: a metric that cannot rank a task scores 0 there (the method study's
    rule), observed and in every replicate; by default the task is skipped."""
    truth = {t: {f"m{i}": 0.1 * i + j for i in range(6)} for j, t in enumerate(("a", "b"))}
    scores = {"flat_on_a": {"a": {f"m{i}": 1.0 for i in range(6)}, "b": {f"m{i}": 0.1 * i for i in range(6)}}}
    skip = bootstrap_mean_tau(scores, truth, ["a", "b"], n_boot=50, seed=1)["flat_on_a"]
    zero = bootstrap_mean_tau(scores, truth, ["a", "b"], n_boot=50, seed=1, constant_score_tau=0.0)["flat_on_a"]
    assert skip["mean"] == 1.0 and skip["n_tasks"] == 1
    assert zero["mean"] == 0.5 and zero["n_tasks"] == 2 and zero["hi"] <= 1.0 and zero["lo"] >= 0.0
