"""LogME: agreement with thuml/LogME where it converges, exact evidence where it does not."""

from __future__ import annotations

import numpy as np
import pytest

from baselines_data import class_gaussians
from baselines_reference import (
    exact_max_evidence,
    log_evidence_data_space,
    log_evidence_weight_space,
    logme_fixed_point,
    logme_icml_each_evidence,
)
from transferability.baselines import logme
from transferability.baselines.logme import max_evidence


@pytest.mark.parametrize(("n", "d", "k", "seed"), [(500, 100, 4, 0), (2000, 32, 3, 1), (4096, 64, 4, 2), (300, 20, 2, 3)])
def test_matches_thuml_fixed_point_where_it_converges(n: int, d: int, k: int, seed: int) -> None:
    feats, labels = class_gaussians(n, d, k, seed)
    ref, iterations = logme_fixed_point(feats, labels)
    assert max(iterations) < 11, "the reference must have met its own stopping rule here"
    assert logme(feats, labels) == pytest.approx(ref, rel=1e-6)


@pytest.mark.parametrize(("n", "d", "seed"), [(30, 80, 0), (20, 200, 1), (40, 41, 2)])
def test_n_below_d_is_the_exact_maximum_evidence(n: int, d: int, seed: int) -> None:
    feats, labels = class_gaussians(n, d, 3, seed)
    targets = np.eye(3)[labels]
    ours, alpha, beta = max_evidence(feats, targets)
    interior = 0
    for c in range(3):
        exact = exact_max_evidence(feats, targets[:, c])
        assert ours[c] == pytest.approx(exact, rel=1e-8, abs=1e-10)
        # The value is the data-space marginal likelihood at our (alpha, beta) ...
        assert ours[c] == pytest.approx(log_evidence_data_space(feats, targets[:, c], alpha[c], beta[c]), rel=1e-9)
        if beta[c] < 1e6:
            # ... and the ICML closed form (D x D determinant), which is only numerically usable
            # when the optimum is interior. With N < D, y can be interpolated and the supremum may
            # lie at beta -> inf (noise-free limit, a finite evidence): then beta is ~1e18 here.
            interior += 1
            assert ours[c] == pytest.approx(log_evidence_weight_space(feats, targets[:, c], alpha[c], beta[c]), rel=1e-9)
    assert interior >= 1
    assert logme(feats, labels) == pytest.approx(np.mean(ours), rel=1e-12)


def test_the_published_solvers_are_wrong_below_d() -> None:
    """Why we differ (thuml/LogME issue 23): documented failure of the released solvers."""
    feats, labels = class_gaussians(20, 200, 3, 1)
    targets = np.eye(3)[labels]
    exact = np.mean([exact_max_evidence(feats, targets[:, c]) for c in range(3)])
    unpadded, _ = logme_fixed_point(feats, labels, pad_zero_eigenvalues=False)
    padded, iterations = logme_fixed_point(feats, labels, pad_zero_eigenvalues=True)
    icml = np.mean([logme_icml_each_evidence(feats, targets[:, c]) for c in range(3)])
    assert unpadded - exact > 1.0  # the missing D - k log(alpha) terms: evidence far too high
    assert max(iterations) == 11 and exact - padded > 1e-3  # 11 steps stop short of the maximum
    assert exact - icml > 1e-3  # the ICML loop (11 steps, 1e-2 rule) too
    assert logme(feats, labels) == pytest.approx(exact, rel=1e-8)


def test_invariant_to_feature_scale_rotation_and_label_names() -> None:
    feats, labels = class_gaussians(400, 30, 3, 4)
    base = logme(feats, labels)
    rot, _ = np.linalg.qr(np.random.default_rng(5).normal(size=(30, 30)))
    assert logme(1e-3 * feats, labels) == pytest.approx(base, rel=1e-9)
    assert logme(1e3 * feats, labels) == pytest.approx(base, rel=1e-9)
    assert logme(feats @ rot, labels) == pytest.approx(base, rel=1e-9)
    assert logme(feats, 7 + 3 * labels) == pytest.approx(base, rel=1e-12)


def test_reference_epsilon_breaks_scale_invariance_we_do_not() -> None:
    """thuml adds 1e-5 to ||m||² in the alpha update: large-scale features drift by > 1e-6."""
    feats, labels = class_gaussians(2000, 64, 4, 6, scale=30.0)
    ref, iterations = logme_fixed_point(feats, labels)
    unit_ref, _ = logme_fixed_point(feats / 30.0, labels)
    assert max(iterations) < 11
    assert abs(ref - unit_ref) / abs(unit_ref) > 1e-5
    assert logme(feats, labels) == pytest.approx(logme(feats / 30.0, labels), rel=1e-10)
    assert logme(feats / 30.0, labels) == pytest.approx(unit_ref, rel=1e-6)


def test_more_informative_features_score_higher() -> None:
    weak, labels = class_gaussians(600, 16, 3, 7, separation=0.3)
    strong, labels2 = class_gaussians(600, 16, 3, 7, separation=3.0)
    assert np.array_equal(labels, labels2)
    assert logme(strong, labels) > logme(weak, labels)


def test_zero_features_give_the_no_signal_evidence() -> None:
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 0])
    n = labels.size
    value = logme(np.zeros((n, 3)), labels)
    # w = 0: y ~ N(0, ||y||²/N) per class, the evidence limit alpha -> inf.
    expected = np.mean([-0.5 * np.log(c / n) - 0.5 * (1 + np.log(2 * np.pi)) for c in (5, 3)])
    assert value == pytest.approx(expected, rel=1e-12)


def test_deterministic() -> None:
    feats, labels = class_gaussians(700, 40, 4, 8)
    assert logme(feats, labels) == logme(feats.copy(), labels.copy())
