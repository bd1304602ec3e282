"""CCFV: Gaussian W2 and variety against the released code, the paper's mean, analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from baselines_data import class_gaussians, diagonal_sample
from baselines_reference import ccfv_paper, variety_ccfv, w_distance_ccfv
from transferability.baselines import ccfv, ccfv_variety, gaussian_w2
from transferability.baselines.ccfv import ccfv_per_stage


@pytest.mark.parametrize(("n1", "n2", "d", "seed"), [(200, 150, 10, 0), (40, 60, 32, 1), (500, 30, 16, 2), (20, 25, 20, 3)])
def test_w2_matches_cal_w_distance(n1: int, n2: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d))
    b = 0.5 + rng.normal(size=(n2, d)) * np.linspace(0.2, 2.0, d)
    assert gaussian_w2(a, b) == pytest.approx(w_distance_ccfv(a, b), rel=1e-8)
    assert gaussian_w2(a, b) == pytest.approx(gaussian_w2(b, a), rel=1e-10)


def test_w2_of_a_gaussian_with_itself_is_zero() -> None:
    x = np.random.default_rng(4).normal(size=(300, 12)) * 3.0
    assert gaussian_w2(x, x) == 0.0
    assert gaussian_w2(x, x[::-1]) == 0.0  # sample order does not matter
    assert w_distance_ccfv(x, x) < 1e-5  # the released code: sqrt of its rounding (tr Σ ~ 108)
    assert gaussian_w2(x, x + 1e-3) == pytest.approx(np.sqrt(12) * 1e-3, rel=1e-6)


def test_w2_closed_form_for_diagonal_covariances() -> None:
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, 0.0])
    v1, v2 = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a = diagonal_sample(50, mu1, v1, seed=0)
    b = diagonal_sample(80, mu2, v2, seed=1)
    np.testing.assert_allclose(np.cov(a.T), np.diag(v1), atol=1e-12)
    expected = np.sqrt(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2))
    assert gaussian_w2(a, b) == pytest.approx(expected, rel=1e-12)


def test_w2_translation_is_the_mean_shift() -> None:
    x = np.random.default_rng(5).normal(size=(100, 6))
    shift = np.array([3.0, 0.0, -4.0, 0.0, 0.0, 0.0])
    assert gaussian_w2(x, x + shift) == pytest.approx(5.0, rel=1e-7)


def test_variety_matches_cal_variety_and_two_point_closed_form() -> None:
    g = np.random.default_rng(6).normal(size=(7, 30))
    assert ccfv_variety(g) == pytest.approx(variety_ccfv(g), rel=1e-10)
    pair = np.array([[0.0, 0.0], [3.0, 4.0]])
    assert ccfv_variety(pair) == pytest.approx(1 / np.sqrt(25 + 1e-3), rel=1e-14)


def _cases(n_cases: int, stages: dict[str, int], seed: int, per_case: int = 90) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    for m in range(n_cases):
        labels = np.arange(per_case) % 3  # 0 = background, 1 and 2 foreground
        case = {}
        for s, (name, d) in enumerate(stages.items()):
            feats, _ = class_gaussians(per_case, d, 3, seed * 100 + m * 10 + s, separation=2.0)
            feats = feats + rng.normal(size=d) * 0.3  # case-specific shift -> variety
            case[name] = (feats, labels)
        cases.append(case)
    return cases


def test_ccfv_matches_paper_mean_of_released_distances() -> None:
    cases = _cases(5, {"enc3": 16, "dec1": 8}, seed=1)
    ours = ccfv(cases)
    assert ours == pytest.approx(ccfv_paper(cases), rel=1e-8)
    per_stage = ccfv_per_stage(cases)
    assert set(per_stage) == {"enc3", "dec1"}
    assert sum(per_stage.values()) == pytest.approx(ours, rel=1e-14)
    # The released main.py compounds W: a different number (why we follow the paper).
    assert abs(ccfv_paper(cases, compounded=True) - ours) > 0.1


def test_ccfv_skips_cases_missing_a_class() -> None:
    cases = _cases(4, {"s": 6}, seed=2)
    feats, labels = cases[1]["s"]
    cases[1]["s"] = (feats, np.where(labels == 2, 0, labels))  # case 1 has no class 2
    assert ccfv(cases) == pytest.approx(ccfv_paper(cases), rel=1e-8)


def test_ccfv_consistent_classes_score_higher() -> None:
    base = _cases(4, {"s": 8}, seed=3)
    noisy = []
    rng = np.random.default_rng(9)
    for case in base:
        f, y = case["s"]
        g = f.copy()
        g[y > 0] += rng.normal(size=(int(np.sum(y > 0)), 8)) * 3.0  # inconsistent foreground
        noisy.append({"s": (g, y)})
    assert ccfv(base) > ccfv(noisy)


def test_ccfv_errors() -> None:
    cases = _cases(3, {"s": 4}, seed=4)
    with pytest.raises(ValueError, match="at least 2 cases"):
        ccfv(cases[:1])
    with pytest.raises(ValueError, match="stages"):
        ccfv([cases[0], {"other": cases[1]["s"]}])
    only_background = [{"s": (c["s"][0], np.zeros(90, int))} for c in cases]
    with pytest.raises(ValueError, match="no foreground class"):
        ccfv(only_background)
    same = [{"s": cases[0]["s"]}, {"s": cases[0]["s"]}]
    with pytest.raises(ValueError, match="zero class Wasserstein"):
        ccfv(same)


def test_w2_exact_where_scipy_sqrtm_is_not() -> None:
    """n < D: Σ1 Σ2 is singular and sqrtm loses ~1e-8; we match 40-digit arithmetic to 1e-12."""
    import mpmath  # installed with torch (via sympy)

    rng = np.random.default_rng(7)
    a = rng.normal(size=(12, 40)) @ rng.normal(size=(40, 40)) / 6
    b = 0.3 + rng.normal(size=(14, 40)) * np.linspace(0.2, 2.0, 40)
    mpmath.mp.dps = 40

    def mean_and_centred(x: np.ndarray):
        m = mpmath.matrix(x.tolist())
        means = [mpmath.fsum(m[i, j] for i in range(x.shape[0])) / x.shape[0] for j in range(x.shape[1])]
        for j in range(x.shape[1]):
            for i in range(x.shape[0]):
                m[i, j] -= means[j]
        return means, m / mpmath.sqrt(x.shape[0] - 1)

    mu_a, ca = mean_and_centred(a)
    mu_b, cb = mean_and_centred(b)
    tr_sqrt = mpmath.fsum(mpmath.svd_r(ca * cb.T, compute_uv=False))  # tr sqrtm(Σa Σb)
    gap = mpmath.fsum((p - q) ** 2 for p, q in zip(mu_a, mu_b))
    tr_a = mpmath.fsum(v**2 for v in ca)
    tr_b = mpmath.fsum(v**2 for v in cb)
    truth = float(mpmath.sqrt(abs(gap + tr_a + tr_b - 2 * tr_sqrt)))
    assert gaussian_w2(a, b) == pytest.approx(truth, rel=1e-12)
    assert w_distance_ccfv(a, b) == pytest.approx(truth, rel=1e-6)  # the released code, less exact
