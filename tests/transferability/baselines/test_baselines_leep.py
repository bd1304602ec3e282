"""LEEP, NCE, NLEEP against thuml / tllib / google-research transcriptions and analytic cases."""

from __future__ import annotations

import numpy as np
import pytest

from baselines_data import class_gaussians
from baselines_reference import leep_google, leep_thuml, nce_tllib, nleep_google
from transferability.baselines import gmm_posteriors, leep, nce, nleep


def _probs(n: int, z: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    rng.shuffle(labels)
    logits = rng.normal(size=(n, z)) + 2.0 * np.eye(3, z)[labels]
    probs = np.exp(logits)
    return probs / probs.sum(axis=1, keepdims=True), labels


@pytest.mark.parametrize(("n", "z", "seed"), [(200, 10, 0), (1000, 3, 1), (57, 40, 2)])
def test_leep_matches_thuml_and_google(n: int, z: int, seed: int) -> None:
    probs, labels = _probs(n, z, seed)
    ours = leep(probs, labels)
    assert ours == pytest.approx(leep_thuml(probs, labels), rel=1e-10)
    assert ours == pytest.approx(leep_google(probs, labels), rel=1e-10)


def test_leep_zero_source_column_is_finite_where_thuml_is_nan() -> None:
    probs, labels = _probs(120, 6, 3)
    padded = np.insert(probs, 2, 0.0, axis=1)  # a source class no sample predicts
    assert np.isnan(leep_thuml(padded, labels))
    ours = leep(padded, labels)
    assert ours == pytest.approx(leep_thuml(probs, labels), rel=1e-12)
    assert ours == pytest.approx(leep_google(padded, labels), rel=1e-12)


def test_leep_perfectly_separable_is_zero_and_approaches_zero() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 1, 0, 2])
    source = 2 * labels + np.array([0, 1, 0, 1, 0, 1, 0, 0, 1, 1])  # 6 source classes, each inside one target class
    onehot = np.eye(6)[source]
    assert leep(onehot, labels) == 0.0
    values = []
    for delta in (1e-1, 1e-2, 1e-3, 1e-4):
        soft = (1 - delta) * onehot + delta / 6
        values.append(leep(soft, labels))
    assert all(v < 0 for v in values)
    assert values == sorted(values)  # monotone towards 0
    assert abs(values[-1]) < 1e-3


def test_leep_invariant_to_permuting_source_columns_and_renaming_classes() -> None:
    probs, labels = _probs(150, 8, 4)
    perm = np.random.default_rng(0).permutation(8)
    base = leep(probs, labels)
    assert leep(probs[:, perm], labels) == pytest.approx(base, rel=1e-12)
    assert leep(probs, 10 + 5 * labels) == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nce_matches_tllib(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 300)
    source = (labels * 3 + rng.integers(0, 5, 300)) % 11
    assert nce(source, labels) == pytest.approx(nce_tllib(source, labels), rel=1e-10)


def test_nce_analytic_cases() -> None:
    labels = np.repeat(np.arange(3), 8)
    # Separable: every source class lies inside one target class.
    assert nce(labels * 2 + np.tile([0, 1], 12), labels) == 0.0
    # Independent, balanced design: H(Y | Z) = H(Y) = log 3.
    source = np.tile(np.arange(4), 6)
    assert nce(source, labels) == pytest.approx(-np.log(3), rel=1e-12)
    # A source label id that never occurs does not matter.
    assert nce(source + 100 * (source == 3), labels) == pytest.approx(-np.log(3), rel=1e-12)


def test_nleep_matches_google_pipeline() -> None:
    feats, labels = class_gaussians(600, 24, 3, 11, separation=2.0)
    for seed in (0, 123):
        assert nleep(feats, labels, seed=seed) == pytest.approx(nleep_google(feats, labels, seed), rel=1e-6)


def test_nleep_deterministic_and_bounded() -> None:
    feats, labels = class_gaussians(400, 16, 4, 12)
    first = nleep(feats, labels, seed=3)
    assert first == nleep(feats.copy(), labels.copy(), seed=3)
    assert first <= 0.0  # the mean log of probabilities
    post = gmm_posteriors(feats, 4, seed=3)
    assert post.shape == (400, 20)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, rtol=1e-12)


def test_nleep_separable_classes_beat_noise() -> None:
    good, labels = class_gaussians(500, 12, 3, 13, separation=8.0)
    bad, _ = class_gaussians(500, 12, 3, 13, separation=0.0)
    assert nleep(good, labels) > nleep(bad, labels) + 0.5
    assert nleep(good, labels) > -0.05
