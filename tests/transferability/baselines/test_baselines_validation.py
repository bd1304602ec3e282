"""Clear ValueErrors for bad input to every public baseline, and shape/finiteness properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from transferability.baselines import (
    ccfv_variety,
    gaussian_w2,
    gbc,
    hscore,
    leep,
    logme,
    nce,
    nleep,
    regularized_hscore,
    transrate,
)

FEATURE_METRICS = [logme, gbc, hscore, regularized_hscore, transrate, nleep]


def _good(n: int = 40, d: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, d)), np.arange(n) % 2


@pytest.mark.parametrize("metric", FEATURE_METRICS, ids=lambda f: f.__name__)
def test_feature_metrics_reject_bad_input(metric) -> None:
    feats, labels = _good()
    bad = feats.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        metric(bad, labels)
    bad[0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        metric(bad, labels)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        metric(feats, np.zeros(40, int))
    with pytest.raises(ValueError, match="40 points"):
        metric(feats, labels[:-1])
    with pytest.raises(ValueError, match="at least 2 points"):
        metric(feats[:1], labels[:1])
    with pytest.raises(ValueError, match="2-D"):
        metric(feats[:, 0], labels)
    with pytest.raises(ValueError, match="integer class ids"):
        metric(feats, labels + 0.5)


def test_leep_nce_reject_bad_input() -> None:
    probs = np.full((6, 3), 1 / 3)
    labels = np.array([0, 1, 0, 1, 0, 1])
    with pytest.raises(ValueError, match="sum to 1"):
        leep(probs * 2, labels)
    with pytest.raises(ValueError, match="non-negative"):
        leep(np.array([[1.5, -0.5]] * 6), labels)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        leep(probs, np.zeros(6, int))
    with pytest.raises(ValueError, match="6 points"):
        leep(probs, labels[:5])
    with pytest.raises(ValueError, match="at least 2 points"):
        leep(probs[:1], labels[:1])
    with pytest.raises(ValueError, match="1-D"):
        nce(np.zeros((6, 1), int), labels)
    with pytest.raises(ValueError, match="6 points"):
        nce(np.zeros(6, int), labels[:5])
    with pytest.raises(ValueError, match="at least 2 points"):
        nce(np.zeros(1, int), labels[:1])
    with pytest.raises(ValueError, match="integer class ids"):
        nce(np.full(6, 0.5), labels)


def test_w2_and_variety_reject_bad_input() -> None:
    x = np.random.default_rng(1).normal(size=(10, 3))
    with pytest.raises(ValueError, match="different feature dimensions"):
        gaussian_w2(x, x[:, :2])
    with pytest.raises(ValueError, match="at least 2 points"):
        gaussian_w2(x[:1], x)
    with pytest.raises(ValueError, match="NaN or inf"):
        gaussian_w2(x, np.where(x > 1, np.nan, x))
    with pytest.raises(ValueError, match="at least 2 points"):
        ccfv_variety(x[:1])
    with pytest.raises(ValueError, match="eps"):
        transrate(x, np.arange(10) % 2, eps=0.0)


@st.composite
def labelled_features(draw):
    n_classes = draw(st.integers(2, 4))
    per_class = draw(st.integers(2, 12))
    n = n_classes * per_class + draw(st.integers(0, 5))
    d = draw(st.integers(1, 10))
    labels = np.arange(n) % n_classes
    feats = draw(
        arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3, allow_nan=False, allow_subnormal=False))
    )
    return feats, labels


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(labelled_features())
def test_feature_metrics_finite_for_any_finite_input(data) -> None:
    feats, labels = data
    for metric in (logme, gbc, hscore, regularized_hscore, transrate):
        value = metric(feats, labels)
        assert isinstance(value, float) and np.isfinite(value), metric.__name__
    k = int(labels.max()) + 1
    assert -k * (k - 1) - 1e-9 <= gbc(feats, labels) <= 0.0
    assert hscore(feats, labels) >= -1e-9


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 30).flatmap(
        lambda n: st.tuples(
            arrays(np.float64, (n, 4), elements=st.floats(0, 1, allow_nan=False)),
            arrays(np.int64, n, elements=st.integers(0, 3)),
        )
    )
)
def test_leep_nce_finite_and_nonpositive(data) -> None:
    raw, labels = data
    raw = raw + 1e-3
    probs = raw / raw.sum(axis=1, keepdims=True)
    if np.unique(labels).size < 2:
        labels = labels.copy()
        labels[0] = (labels[1] + 1) % 4
    value = leep(probs, labels)
    assert np.isfinite(value) and value <= 1e-12
    ent = nce(np.argmax(probs, axis=1), labels)
    assert np.isfinite(ent) and ent <= 1e-12


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 15),
    st.integers(2, 15),
    st.integers(1, 8),
    st.integers(0, 2**31 - 1),
)
def test_w2_nonnegative_symmetric(n1: int, n2: int, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n1, d)) * rng.uniform(0.1, 10)
    b = rng.normal(size=(n2, d)) + rng.normal()
    w_ab = gaussian_w2(a, b)
    assert np.isfinite(w_ab) and w_ab >= 0
    assert w_ab == pytest.approx(gaussian_w2(b, a), rel=1e-7, abs=1e-9)
