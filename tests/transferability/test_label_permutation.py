"""Label-permutation control (metrics.md §3a) for every metric other than GRTD.

A transferability score must see which point has which label: on features whose classes have
different means, the score with the true labels has to beat the score with the labels shuffled
(within each case, or within each patch for LBTC). All metrics are higher-is-better. The GRTD
variants have their own control in test_grtd.py (the contracted one barely moves; that is §3a).

Data: N = 800 points, D = 16, K = 3 classes (0 = background), 4 cases, class means
N(0, 0.7² I) plus unit noise: separable, but no metric is near its ceiling. Margins are about
a third of the measured gaps (noted beside each), and the true value must also beat every shuffle.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from transferability.baselines import (
    BASELINE_NAMES,
    ccfv,
    gbc,
    hscore,
    leep,
    logme,
    nce,
    nleep,
    regularized_hscore,
    score_all,
    transrate,
)
from transferability.lbtc import lbtc, leakage

N, D, K, M = 800, 16, 3, 4
N_SHUFFLES = 4

Data = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _aligned_data(seed: int = 0) -> Data:
    """(features, labels, case ids, source-head probabilities); the head is fixed, label-free."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, N)
    cases = rng.integers(0, M, N)
    x = (rng.standard_normal((K, D)) * 0.7)[y] + rng.standard_normal((N, D))
    logits = x @ rng.standard_normal((D, 10))  # a "source classifier" with 10 source classes
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return x, y, cases, probs / probs.sum(axis=1, keepdims=True)


def _shuffled(y: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """`y` permuted within each group (case): class counts per case are kept."""
    rng = np.random.default_rng(seed)
    out = y.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = rng.permutation(y[idx])
    return out


def _by_case(x: np.ndarray, y: np.ndarray, cases: np.ndarray) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    return [{"stage": (x[cases == m], y[cases == m])} for m in np.unique(cases)]


METRICS: dict[str, Callable[[Data, np.ndarray], float]] = {
    "logme": lambda d, y: logme(d[0], y),
    "leep": lambda d, y: leep(d[3], y),
    "nleep": lambda d, y: nleep(d[0], y, seed=0),
    "nce": lambda d, y: nce(np.argmax(d[3], axis=1), y),
    "gbc": lambda d, y: gbc(d[0], y),
    "hscore": lambda d, y: hscore(d[0], y),
    "regularized_hscore": lambda d, y: regularized_hscore(d[0], y),
    "transrate": lambda d, y: transrate(d[0], y),
    "ccfv": lambda d, y: ccfv(_by_case(d[0], y, d[2])),
}

# Measured on this data (true labels; mean of the 4 shuffles): logme -0.503 / -0.776, leep -0.846 /
# -1.089, nleep -0.578 / -1.081, nce -0.877 / -1.085, gbc -2.196 / -5.814, hscore 1.039 / 0.045,
# regularized_hscore 1.009 / 0.042, transrate 0.342 / 0.171, ccfv 0.691 / 0.665 (shuffles 0.660..0.674).
MARGIN = {
    "logme": 0.1,
    "leep": 0.1,
    "nleep": 0.15,
    "nce": 0.1,
    "gbc": 1.0,
    "hscore": 0.3,
    "regularized_hscore": 0.3,
    "transrate": 0.05,
    "ccfv": 0.01,  # weak: see test_ccfv_moves_only_through_the_class_spread
}


@pytest.fixture(scope="module")
def data() -> Data:
    return _aligned_data()


@pytest.fixture(scope="module")
def shuffles(data: Data) -> list[np.ndarray]:
    return [_shuffled(data[1], data[2], seed=100 + s) for s in range(N_SHUFFLES)]


@pytest.mark.parametrize("name", sorted(METRICS))
def test_true_labels_beat_shuffled_labels(name: str, data: Data, shuffles: list[np.ndarray]) -> None:
    fn = METRICS[name]
    true = fn(data, data[1])
    shuffled = [fn(data, ys) for ys in shuffles]
    assert true > max(shuffled), (name, true, shuffled)
    assert true - float(np.mean(shuffled)) > MARGIN[name], (name, true, shuffled)


def test_score_all_moves_every_baseline(data: Data, shuffles: list[np.ndarray]) -> None:
    """The same control through `score_all` (no source head: leep is NLEEP, nce uses the mixture)."""
    x, y, cases, _ = data
    true = score_all(x, y, cases, seed=0)
    assert set(true) == set(BASELINE_NAMES)
    shuffled = [score_all(x, ys, cases, seed=0) for ys in shuffles[:2]]
    for name in BASELINE_NAMES:
        assert true[name] > max(s[name] for s in shuffled), name


def test_ccfv_moves_only_through_the_class_spread() -> None:
    """CCFV's variety term ignores the labels; its consistency W compares one class across cases.

    Shuffled, every "class" of a case is a sample of the case's whole mixture, and the cases are
    alike, so W is estimation noise in both labelings: only its size (it grows with the class
    spread) tells them apart. The gap is therefore small (measured 0.070 at N = 400, 0.067 at
    N = 3200, in log units) and does not shrink with N, while CCFV itself grows with the sample
    size (-0.38 -> 1.89 here: W is mostly estimation noise).
    """
    for n_pts, low in ((400, -1.0), (3200, 1.0)):
        rng = np.random.default_rng(1)
        y = rng.integers(0, K, n_pts)
        cases = rng.integers(0, M, n_pts)
        x = (rng.standard_normal((K, D)) * 0.7)[y] + rng.standard_normal((n_pts, D))
        true = ccfv(_by_case(x, y, cases))
        shuffled = [ccfv(_by_case(x, _shuffled(y, cases, 100 + s), cases)) for s in range(3)]
        assert true > max(shuffled)
        assert 0.01 < true - float(np.mean(shuffled)) < 0.3
        assert true > low  # the size effect: +~2 from N = 400 to 3200, far above the label effect


# ---- LBTC: labels shuffled within each patch ----


def _boundary_patches(a_n: int = 200, d: int = 8, sep: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(A, 27, d) features and (A, 27) labels of 3x3x3 patches cut by a random plane into two of 4
    classes; features are the class mean (N(0, sep² I)) plus unit noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(3) - 1.0] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    side = (grid @ rng.standard_normal((3, a_n))).T > rng.uniform(-0.5, 0.5, (a_n, 1))
    pair = np.stack([rng.choice(4, 2, replace=False) for _ in range(a_n)])
    labels = np.where(side, pair[:, :1], pair[:, 1:])
    feats = (rng.standard_normal((4, d)) * sep)[labels] + rng.standard_normal((a_n, 27, d))
    return feats, labels


def test_lbtc_true_labels_beat_shuffled_labels() -> None:
    feats, labels = _boundary_patches()
    true = lbtc({"enc": feats}, labels).value
    shuffled = [
        lbtc({"enc": feats}, np.random.default_rng(200 + s).permuted(labels, axis=1)).value for s in range(N_SHUFFLES)
    ]
    # measured: 0.843 (true) vs 0.503 to 0.512 (shuffled); a shuffled patch leaks about half its edges
    assert true > max(shuffled)
    assert true - float(np.mean(shuffled)) > 0.2


def test_leakage_of_one_patch_rises_when_its_labels_are_shuffled() -> None:
    feats, labels = _boundary_patches(a_n=40, sep=2.0, seed=1)
    rng = np.random.default_rng(3)
    gaps = []
    for f, lab in zip(feats, labels):
        true = leakage(f, lab)
        shuffled = [leakage(f, rng.permutation(lab)) for _ in range(3)]
        assert true is not None and all(s is not None for s in shuffled)
        gaps.append(float(np.mean(shuffled)) - true)
    assert float(np.mean(gaps)) > 0.2
    assert np.mean(np.array(gaps) > 0) > 0.9
