"""Half-sampling replicates: exact scores on each half, seeded draws, the spread factor, fusion per
replicate, and a small coverage simulation (the full one is bench/bootstrap_coverage.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bench.bootstrap_coverage import Population, run
from transferability import bootstrap as bs
from transferability.grtd import grtd_stage_details
from transferability.lbtc import lbtc


def _pilot(seed: int = 1, n_cases: int = 6, n: int = 420, dim: int = 8, k: int = 3):
    rng = np.random.default_rng(seed)
    case = rng.integers(0, n_cases, n)
    y = rng.integers(0, k, n)
    x = rng.normal(size=(n, dim)) + 2.0 * np.eye(k, dim)[y] + 0.7 * rng.normal(size=(n_cases, dim))[case]
    return x, y, case


def test_draws_are_seeded_half_samples_that_depend_only_on_cases_seed_and_count():
    a = bs.case_subsets(7, 50, seed=3)
    assert a.shape == (50, 7) and a.dtype == bool and (a.sum(axis=1) == 3).all()
    assert np.array_equal(a, bs.case_subsets(7, 50, seed=3))
    assert not np.array_equal(a, bs.case_subsets(7, 50, seed=4))
    assert bs.draws_fingerprint(a) == bs.draws_fingerprint(bs.case_subsets(7, 50, seed=3))
    assert bs.draws_fingerprint(a) != bs.draws_fingerprint(bs.case_subsets(7, 50, seed=4))
    assert len({tuple(r) for r in a}) > 20  # C(7, 3) = 35 distinct halves, most of them drawn


def test_a_single_case_cannot_be_resampled():
    with pytest.raises(bs.BootstrapError, match="one case"):
        bs.case_subsets(1, 10)
    with pytest.raises(bs.BootstrapError):
        bs.spread_factor(1)


def test_few_cases_widen_the_interval_as_a_t_interval_does():
    assert bs.small_sample_factor(2) == pytest.approx(12.7062 / 1.95996, rel=1e-4)
    assert bs.small_sample_factor(10) == pytest.approx(2.26216 / 1.95996, rel=1e-4)
    assert bs.small_sample_factor(1000) == pytest.approx(1.0, abs=2e-3)
    assert bs.spread_factor(10) == pytest.approx(bs.variance_factor(10) * bs.small_sample_factor(10))
    assert bs.spread_factor(10, 5.5) == pytest.approx(bs.variance_factor(10) * bs.small_sample_factor(5.5))


def test_effective_cases_count_unequal_cases_as_fewer():
    assert bs.effective_cases([5, 5, 5, 5]) == pytest.approx(4.0)
    assert bs.effective_cases([10, 0, 10]) == pytest.approx(2.0)  # a case without points does not count
    assert bs.effective_cases([100, 1, 1, 1]) < 1.1


@pytest.mark.parametrize("variant", ["penalised", "contracted"])
def test_each_replicate_is_exactly_grtd_on_the_points_of_its_cases(variant):
    x, y, case = _pilot()
    x[:15] = x[15:30]  # duplicated features, across cases: zero-length edges and ties
    rep = bs.GRTDStageReplicates(x, y, case, variant=variant)
    masks = bs.case_subsets(6, 12, seed=0)
    for row in [*masks, np.ones(6, bool)]:
        keep = row[case]
        want = grtd_stage_details(x[keep], y[keep], variant=variant).value
        assert rep.value(row) == pytest.approx(want, rel=1e-9, abs=1e-12)
    assert rep.band_misses == 0


def test_a_half_with_a_single_class_is_undefined_not_faked():
    x, y, case = _pilot()
    y = np.where(case == 0, 0, y)  # case 0 holds background only
    rep = bs.GRTDStageReplicates(x, y, case)
    only0 = np.zeros(6, bool)
    only0[0] = True
    assert math.isnan(rep.value(only0))


def test_quantile_outside_the_band_is_recomputed_exactly(monkeypatch):
    monkeypatch.setattr(bs, "_BAND", (0.05, 0.06))  # a band no replicate quantile falls in
    x, y, case = _pilot(seed=2)
    rep = bs.GRTDStageReplicates(x, y, case)
    row = bs.case_subsets(6, 1, seed=1)[0]
    keep = row[case]
    assert rep.value(row) == pytest.approx(grtd_stage_details(x[keep], y[keep], variant="penalised").value, rel=1e-9)
    assert rep.band_misses == 1


def test_lbtc_replicates_equal_lbtc_on_the_patches_of_their_cases():
    rng = np.random.default_rng(5)
    a_n, p_n = 60, 27
    feats = {s: rng.normal(size=(a_n, p_n, 4)) for s in ("e1", "e2")}
    labels = rng.integers(0, 2, (a_n, p_n))
    labels[:5] = 1  # single-label patches: skipped
    anchor_case = rng.integers(0, 5, a_n)
    full = lbtc(feats, labels)
    masks = bs.case_subsets(5, 8, seed=0)
    got = bs.lbtc_replicates(full.leakages, anchor_case, masks)
    for r, row in enumerate(masks):
        keep = row[anchor_case]
        want = lbtc({s: f[keep] for s, f in feats.items()}, labels[keep]).value
        assert got[r] == pytest.approx(want, rel=1e-12)


def test_spread_factor_makes_the_half_sample_variance_of_a_mean_unbiased():
    rng = np.random.default_rng(0)
    for m_cases in (4, 5, 9):
        v = rng.normal(size=m_cases)
        m = bs.subset_size(m_cases)
        means = [v[list(s)].mean() for s in itertools.combinations(range(m_cases), m)]
        scaled = bs.variance_factor(m_cases) ** 2 * np.var(means)
        assert scaled == pytest.approx(np.var(v, ddof=1) / m_cases, rel=1e-12)


def test_pseudo_values_recentre_on_the_full_score_and_keep_undefined_replicates_out():
    p = bs.pseudo_values(-0.2, [-0.3, -0.1, float("nan"), -0.2], n_cases=4)  # c = 1, k = t(0.975, 3) / z(0.975)
    k = bs.small_sample_factor(4)
    assert math.isnan(p[2])
    assert np.nanmean(p) == pytest.approx(-0.2)
    assert p[0] == pytest.approx(-0.2 - 0.1 * k) and p[1] == pytest.approx(-0.2 + 0.1 * k)


def test_fused_replicates_give_rank_probabilities_that_add_up():
    rng = np.random.default_rng(3)
    b = 300
    full = {"a": (-0.10, 0.80), "b": (-0.12, 0.78), "c": (-0.30, 0.50)}
    reps = {m: (g + rng.normal(0, 0.02, b), lb + rng.normal(0, 0.02, b)) for m, (g, lb) in full.items()}
    reps["b"][0][7] = float("nan")  # undefined in one replicate: left out for every model
    u = bs.rank_uncertainty(full, reps, num_foreground_classes=2, n_cases=10, a=6.0, b=math.log(2.5))
    assert u["n_replicates"] == b and u["n_replicates_used"] == b - 1
    assert sum(u["models"][m]["p_rank1"] for m in full) == pytest.approx(1.0)
    for i, j in itertools.permutations(full, 2):
        assert u["p_above"][i][j] + u["p_above"][j][i] == pytest.approx(1.0)
    assert u["p_above"]["a"]["c"] == 1.0 and u["models"]["c"]["rank_interval"] == [3, 3]
    lo, hi = u["models"]["a"]["grtd_interval"]
    assert lo < -0.10 < hi
    assert u["top_model"] == "a" and u["stable"] == (u["models"]["a"]["p_rank1"] >= 0.9)
    close = bs.rank_uncertainty(
        {"a": (-0.1, 0.8), "b": (-0.1, 0.8)}, {"a": reps["a"], "b": reps["c"]}, 2, 10, a=6.0, b=math.log(2.5)
    )
    assert close["models"]["a"]["p_rank1"] < 0.9 or close["models"]["b"]["p_rank1"] < 0.9


def test_replicates_must_cover_the_same_models():
    with pytest.raises(ValueError, match="exactly the models"):
        bs.rank_uncertainty({"a": (0, 0), "b": (0, 0)}, {"a": ([0.0], [0.0])}, 2, 4, a=6.0, b=1.0)


def test_small_coverage_simulation():
    """40 simulated pilot sets of 10 cases: the 95% intervals cover E[score] (binomial range of 40)
    and are as wide as the spread of the score across pilot sets says they should be."""
    res = run(sims=40, n_cases=10, n_points=300, n_anchors=200, replicates=100, truth_sets=200, variant="penalised", seed=0,
              pop=Population())
    lo_ok, hi_ok = res["acceptable_hits"]
    assert lo_ok <= res["grtd"]["hits"] <= hi_ok, res["grtd"]
    assert lo_ok <= res["lbtc"]["hits"] <= hi_ok, res["lbtc"]
    assert 0.6 < res["grtd"]["median_width"] / res["grtd"]["width_if_normal"] < 1.6


def test_score_interval_is_a_t_interval_on_the_half_sampling_standard_error():
    reps = np.array([-0.30, -0.10, np.nan, -0.20, -0.25])
    lo, hi = bs.score_interval(-0.2, reps, n_cases=9, n_effective=7.5)
    se = bs.variance_factor(9) * np.std(reps[np.isfinite(reps)])
    from scipy.stats import t

    assert hi - (-0.2) == pytest.approx(-0.2 - lo) == pytest.approx(t.ppf(0.975, 6.5) * se)
    assert bs.score_interval(0.5, [np.nan, np.nan], n_cases=4) is None
