"""GBC, H-score, regularised H-score and TransRate against their reference transcriptions."""

from __future__ import annotations

import numpy as np
import pytest

from baselines_data import class_gaussians
from baselines_reference import (
    gbc_google,
    hscore_google_elementwise,
    hscore_tllib,
    ledoit_wolf_paper,
    regularized_hscore_tllib,
    transrate_tllib,
)
from transferability.baselines import gbc, hscore, regularized_hscore, transrate

CASES = [(300, 20, 3, 0), (1000, 64, 4, 1), (120, 8, 2, 2)]


@pytest.mark.parametrize(("n", "d", "k", "seed"), CASES)
def test_gbc_matches_google_diagonal(n: int, d: int, k: int, seed: int) -> None:
    feats, labels = class_gaussians(n, d, k, seed, separation=0.8)
    ref = gbc_google(feats, labels)
    assert ref < -1e-3  # overlapping classes: a non-trivial value
    assert gbc(feats, labels) == pytest.approx(ref, rel=1e-10)


def test_gbc_identical_class_gaussians_is_minus_k_k_minus_1() -> None:
    rng = np.random.default_rng(0)
    block = rng.normal(size=(25, 6))
    for k in (2, 3, 5):
        feats = np.tile(block, (k, 1))  # every class holds the same samples
        labels = np.repeat(np.arange(k), 25)
        assert gbc(feats, labels) == pytest.approx(-k * (k - 1), rel=1e-12)


def test_gbc_separated_classes_near_zero_and_variance_floor() -> None:
    feats, labels = class_gaussians(300, 5, 3, 3, separation=100.0)
    assert -1e-12 < gbc(feats, labels) <= 0.0
    # Constant features within each class: the 1e-4 variance floor keeps it finite.
    const = np.repeat(np.array([[0.0], [0.01], [0.02]]), 10, axis=0)
    lab = np.repeat(np.arange(3), 10)
    assert gbc(const, lab) == pytest.approx(gbc_google(const, lab), rel=1e-12)


def test_gbc_invariant_to_translation_and_dimension_order() -> None:
    feats, labels = class_gaussians(200, 10, 3, 4, separation=0.7)
    base = gbc(feats, labels)
    assert gbc(feats + 50.0, labels) == pytest.approx(base, rel=1e-9)
    assert gbc(feats[:, ::-1], labels) == pytest.approx(base, rel=1e-12)


@pytest.mark.parametrize(("n", "d", "k", "seed"), CASES)
def test_hscore_matches_tllib(n: int, d: int, k: int, seed: int) -> None:
    feats, labels = class_gaussians(n, d, k, seed)
    assert hscore(feats, labels) == pytest.approx(hscore_tllib(feats, labels), rel=1e-9)


def test_google_elementwise_trace_is_not_the_hscore() -> None:
    feats, labels = class_gaussians(500, 16, 3, 12)
    ours = hscore(feats, labels)
    assert ours == pytest.approx(hscore_tllib(feats, labels), rel=1e-9)
    assert abs(hscore_google_elementwise(feats, labels) - ours) > 0.05 * abs(ours)


def test_hscore_invariant_to_invertible_linear_maps() -> None:
    feats, labels = class_gaussians(400, 12, 3, 5)
    mix = np.random.default_rng(1).normal(size=(12, 12)) + 3 * np.eye(12)
    assert hscore(feats @ mix, labels) == pytest.approx(hscore(feats, labels), rel=1e-8)


def test_hscore_one_dimension_is_between_over_total_variance() -> None:
    x = np.array([0.0, 1.0, 2.0, 4.0, 5.0, 9.0])
    y = np.array([0, 0, 0, 1, 1, 1])
    means = np.where(y == 0, 1.0, 6.0)
    expected = np.var(means, ddof=1) / np.var(x, ddof=1)
    assert hscore(x[:, None], y) == pytest.approx(expected, rel=1e-12)


def test_hscore_dead_channel_is_ignored() -> None:
    """A constant (dead) channel makes cov(f) singular: it must not change the score."""
    feats, labels = class_gaussians(300, 10, 3, 6)
    dead = np.column_stack([feats, np.full(300, 0.25)])
    assert hscore(dead, labels) == pytest.approx(hscore(feats, labels), rel=1e-9)


def test_hscore_collinear_channels_and_n_below_d() -> None:
    feats, labels = class_gaussians(1000, 64, 4, 1)
    mix = np.random.default_rng(3).normal(size=(64, 64))
    doubled = np.hstack([feats, feats @ mix])  # rank 64 in 128 dimensions
    assert hscore(doubled, labels) == pytest.approx(hscore(feats, labels), rel=1e-9)
    assert hscore(doubled, labels) == pytest.approx(hscore_tllib(doubled, labels), rel=1e-9)
    few, few_labels = class_gaussians(30, 60, 3, 0)
    # N <= D: the class means are exactly representable, H = C - 1.
    assert hscore(few, few_labels) == pytest.approx(2.0, rel=1e-9)
    assert hscore_tllib(few, few_labels) == pytest.approx(2.0, rel=1e-9)


@pytest.mark.parametrize(("n", "d", "k", "seed"), CASES)
def test_regularized_hscore_matches_tllib(n: int, d: int, k: int, seed: int) -> None:
    feats, labels = class_gaussians(n, d, k, seed)
    ours = regularized_hscore(feats, labels)
    assert ours == pytest.approx(regularized_hscore_tllib(feats, labels, use_sklearn=True), rel=1e-9)
    assert ours == pytest.approx(regularized_hscore_tllib(feats, labels, use_sklearn=False), rel=1e-9)
    assert 0 < ours < hscore(feats, labels)  # shrinkage only lowers it here


def test_ledoit_wolf_transcription_shrinks_when_n_is_small() -> None:
    feats, _ = class_gaussians(30, 25, 2, 7)
    shrink, _ = ledoit_wolf_paper(feats)
    assert 0.05 < shrink <= 1.0


@pytest.mark.parametrize(("n", "d", "k", "seed"), CASES + [(90, 40, 3, 8)])
def test_transrate_matches_tllib(n: int, d: int, k: int, seed: int) -> None:
    feats, labels = class_gaussians(n, d, k, seed)
    assert transrate(feats, labels) == pytest.approx(transrate_tllib(feats, labels), rel=1e-9)
    assert transrate(feats, labels, eps=1e-2) == pytest.approx(transrate_tllib(feats, labels, eps=1e-2), rel=1e-9)


def test_transrate_invariant_to_rotation_and_translation() -> None:
    feats, labels = class_gaussians(250, 9, 3, 9)
    rot, _ = np.linalg.qr(np.random.default_rng(2).normal(size=(9, 9)))
    base = transrate(feats, labels)
    assert transrate(feats @ rot + 3.0, labels) == pytest.approx(base, rel=1e-9)


def test_transrate_grows_with_class_separation() -> None:
    near, labels = class_gaussians(300, 8, 3, 10, separation=0.2)
    far, _ = class_gaussians(300, 8, 3, 10, separation=5.0)
    assert transrate(far, labels) > transrate(near, labels)
