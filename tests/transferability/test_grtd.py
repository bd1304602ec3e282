"""GRTD (metrics.md §3) against a brute-force reference built from pdist and dense Kruskal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import pdist, squareform
from scipy.stats import special_ortho_group

from transferability import grtd as grtd_mod
from transferability.grtd import (
    _block_argmin,
    _torch_class_bridges,
    _torch_distance_quantile,
    _torch_order_statistics,
    distance_quantile,
    grtd,
    grtd_stage,
    grtd_stage_details,
    upper_order_statistics,
)
from transferability.mst import squared_distance_buffer, torch_squared_distances


def dense_mst_weight(w: np.ndarray) -> float:
    """Kruskal over a dense symmetric weight matrix (0 is a real edge)."""
    n = w.shape[0]
    iu, ju = np.triu_indices(n, 1)
    order = np.argsort(w[iu, ju], kind="stable")
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    total = []
    for k in order:
        ri, rj = find(int(iu[k])), find(int(ju[k]))
        if ri != rj:
            parent[ri] = rj
            total.append(w[iu[k], ju[k]])
    return math.fsum(total)


def reference_grtd(x: np.ndarray, y: np.ndarray, lam: float = 1.0, quantile: float = 0.9) -> tuple[float, float, float]:
    """GRTD straight from the definition: full G_X and G_Y on N nodes. Returns (value, w_x, w_y)."""
    cond = pdist(np.asarray(x, dtype=np.float64))
    q = np.quantile(cond, quantile)
    dhat = squareform(cond) / q
    gy = np.where(y[:, None] == y[None, :], 0.0, np.minimum(dhat, lam))
    wx, wy = dense_mst_weight(dhat), dense_mst_weight(gy)
    return -(wx - wy) / (x.shape[0] - 1), wx, wy


def make_data(n: int = 240, d: int = 12, k: int = 3, spread: float = 1.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    centres = rng.standard_normal((k, d)) * 3.0
    return centres[y] + spread * rng.standard_normal((n, d)), y


# ---- order statistics / quantile ----


@settings(max_examples=50, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 3)), elements=st.integers(-3, 3).map(float)),
    st.sampled_from(["float32", "float64"]),
)
def test_upper_order_statistics_are_exact(x: np.ndarray, precision: str) -> None:
    sq, _ = squared_distance_buffer(x, precision)
    cond = np.sort(sq[np.triu_indices(x.shape[0], 1)].astype(np.float64))
    ranks = sorted({0, cond.size - 1, cond.size // 2, (cond.size * 9) // 10})
    np.testing.assert_array_equal(upper_order_statistics(sq, ranks), cond[ranks])


def test_order_statistics_reject_bad_ranks() -> None:
    sq, _ = squared_distance_buffer(np.eye(4), "float64")
    with pytest.raises(ValueError, match="ranks"):
        upper_order_statistics(sq, [6])


@pytest.mark.parametrize("quantile", [0.9, 0.5, 0.123, 1.0])
def test_distance_quantile_matches_numpy(quantile: float) -> None:
    x, _ = make_data(300, 10, seed=1)
    ref = np.quantile(pdist(x), quantile)
    sq64, s64 = squared_distance_buffer(x, "float64")
    assert distance_quantile(sq64, s64, quantile) == pytest.approx(ref, rel=1e-12)
    sq32, s32 = squared_distance_buffer(x, "float32")
    assert distance_quantile(sq32, s32, quantile) == pytest.approx(ref, rel=1e-6)


# ---- GRTD values ----


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grtd_matches_bruteforce_definition(seed: int) -> None:
    x, y = make_data(seed=seed, k=2 + seed)
    ref, wx, wy = reference_grtd(x, y)
    det = grtd_stage_details(x, y, precision="float64")
    assert det.value == pytest.approx(ref, rel=1e-10)
    assert det.w_x == pytest.approx(wx, rel=1e-10)
    assert det.w_y == pytest.approx(wy, rel=1e-10, abs=1e-12)
    assert grtd_stage(x, y) == pytest.approx(ref, rel=1e-5)  # float32 search, exact re-measurement


def test_label_graph_by_class_contraction_equals_bruteforce_mst_of_gy() -> None:
    # Many classes and a small lambda so both the cap and the contraction matter.
    for lam in (1.0, 0.3, 0.05):
        x, y = make_data(200, 6, k=7, spread=2.0, seed=3)
        _, _, wy = reference_grtd(x, y, lam=lam)
        assert grtd_stage_details(x, y, lam=lam, precision="float64").w_y == pytest.approx(wy, rel=1e-12)
        assert grtd_stage_details(x, y, lam=lam).w_y == pytest.approx(wy, rel=1e-6)


def test_lambda_caps_every_class_bridge() -> None:
    x, y = make_data(150, 5, k=4, spread=0.1, seed=4)
    det = grtd_stage_details(x, y, lam=1e-3, precision="float64")
    assert det.w_y == pytest.approx(3 * 1e-3, rel=1e-12)  # K' - 1 bridges, each capped at lambda


@settings(max_examples=25, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(3, 30), st.integers(1, 3)), elements=st.integers(-4, 4).map(float)),
    st.integers(0, 2**31 - 1),
)
def test_grtd_matches_reference_on_tie_heavy_inputs(x: np.ndarray, seed: int) -> None:
    y = np.random.default_rng(seed).integers(0, 3, x.shape[0])
    if np.unique(y).size < 2 or np.quantile(pdist(x), 0.9) == 0:
        return
    ref, _, _ = reference_grtd(x, y)
    assert grtd_stage(x, y, precision="float64") == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert grtd_stage(x, y) == pytest.approx(ref, rel=1e-5, abs=1e-9)


def test_difference_is_never_negative() -> None:
    for seed in range(4):
        x, y = make_data(120, 4, k=3, spread=0.5 + seed, seed=seed)
        det = grtd_stage_details(x, y)
        assert det.w_x >= det.w_y
        assert det.value <= 0.0


# ---- invariances ----


def test_invariant_to_scale_rotation_translation_and_label_permutation() -> None:
    x, y = make_data(260, 8, k=3, seed=5)
    base = grtd_stage(x, y)
    rot = special_ortho_group.rvs(8, random_state=0)
    perm = np.array([2, 0, 1])
    variants = {
        "scale_up": (x * 1e3, y),
        "scale_down": (x * 1e-3, y),
        "rotation": (x @ rot, y),
        "translation": (x + 250.0, y),
        "label_permutation": (x, perm[y]),
        "point_order": (x[::-1], y[::-1]),
    }
    for name, (xv, yv) in variants.items():
        assert grtd_stage(xv, yv) == pytest.approx(base, rel=1e-5), name


def test_tends_to_zero_for_tight_separated_classes() -> None:
    values = []
    for spread in (1.0, 1e-2, 1e-4):
        x, y = make_data(240, 8, k=3, spread=spread, seed=6)
        values.append(grtd_stage(x, y))
    assert values[0] < values[1] < values[2] <= 0.0
    assert values[2] > -1e-3


def test_grtd_prefers_label_aligned_features() -> None:
    x, y = make_data(240, 8, k=3, spread=0.3, seed=7)
    shuffled = np.random.default_rng(0).permutation(y)
    assert grtd_stage(x, y) > grtd_stage(x, shuffled)


# ---- multi-stage API, validation, determinism ----


def test_grtd_means_over_stages_and_respects_stage_choice() -> None:
    x1, y = make_data(150, 6, seed=8)
    x2 = x1 @ np.random.default_rng(1).standard_normal((6, 9)) + np.random.default_rng(2).standard_normal((150, 9))
    res = grtd({"d3": x1, "d4": x2}, y)
    assert set(res.per_stage) == {"d3", "d4"}
    assert res.value == pytest.approx((grtd_stage(x1, y) + grtd_stage(x2, y)) / 2, rel=1e-15)
    only = grtd({"d3": x1, "d4": x2}, y, stages=["d4"])
    assert only.per_stage == {"d4": grtd_stage(x2, y)}
    out = json.loads(json.dumps(res.to_dict()))
    assert out["per_stage"]["d3"] == res.per_stage["d3"]
    assert out["details"]["d4"]["n_classes"] == 3


def test_deterministic_bit_identical() -> None:
    x, y = make_data(300, 16, seed=9)
    a = grtd({"s": x.astype(np.float32)}, y)
    b = grtd({"s": x.astype(np.float32).copy()}, y.copy())
    assert a.value.hex() == b.value.hex()
    assert a.to_dict() == b.to_dict()


@pytest.mark.parametrize(
    "features, labels, kwargs, msg",
    [
        (np.zeros((5, 2)), np.array([0, 1, 0, 1, 0]), {}, "quantile of the distances is 0|quantile is 0"),
        (np.random.default_rng(0).random((5, 2)), np.zeros(5, int), {}, "at least 2 are needed"),
        (np.random.default_rng(0).random((5, 2)), np.array([0, 1, 0]), {}, "3 entries but there are 5"),
        (np.array([[0.0, np.nan], [1.0, 1.0], [2.0, 0.0]]), np.array([0, 1, 0]), {}, "NaN or inf"),
        (np.random.default_rng(0).random((1, 2)), np.array([0]), {}, "at least 2 points"),
        (np.random.default_rng(0).random((5, 2)), np.array([0, 1, 0, 1, 0]), {"lam": 0.0}, "lam"),
        (np.random.default_rng(0).random((5, 2)), np.array([0, 1, 0, 1, 0]), {"quantile": 0.0}, "quantile"),
        (np.random.default_rng(0).random((5, 2)), np.array([0.5, 1, 0, 1, 0]), {}, "integer"),
    ],
)
def test_validation(features: np.ndarray, labels: np.ndarray, kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        grtd_stage(features, labels, **kwargs)


def test_grtd_mapping_validation() -> None:
    x, y = make_data(30, 3)
    with pytest.raises(ValueError, match="non-empty mapping"):
        grtd({}, y)
    with pytest.raises(ValueError, match="not in stage_features"):
        grtd({"a": x}, y, stages=["b"])
    with pytest.raises(ValueError, match="entries but there are"):
        grtd({"a": x, "b": x[:-1]}, y)


# ---- torch path (device='cuda' / 'auto' on a GPU), exercised on CPU torch through backend='torch' ----


def duplicate_data(n: int = 260, d: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """float32 points that are copies of 9 rows (tied distances), 4 classes mixed across copies."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal((9, d)) * 7.3 + 41.7).astype(np.float32)
    return base[rng.integers(0, 9, n)], rng.integers(0, 4, n)


TORCH_DATA = {
    "random": lambda seed: (np.random.default_rng(seed).standard_normal((300, 24)), np.arange(300) % 3),
    "clustered": lambda seed: make_data(280, 32, k=5, spread=0.4, seed=seed),
    "duplicates": lambda seed: duplicate_data(seed=seed),
    "integer_ties": lambda seed: (
        np.random.default_rng(seed).integers(-2, 3, (150, 3)).astype(float),
        np.random.default_rng(seed + 1).integers(0, 3, 150),
    ),
}


@pytest.mark.parametrize("data", sorted(TORCH_DATA))
@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_path_matches_numpy_path(data: str, precision: str, seed: int) -> None:
    pytest.importorskip("torch")
    x, y = TORCH_DATA[data](seed)
    ref = grtd_stage_details(x, y, precision=precision)
    got = grtd_stage_details(x, y, precision=precision, backend="torch")
    for name in ("value", "q", "w_x", "w_y"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-5, abs=1e-12), name
    assert (got.n_points, got.n_classes) == (ref.n_points, ref.n_classes)
    if precision == "float64":  # both exact up to rounding: far tighter than the contract
        assert got.value == pytest.approx(ref.value, rel=1e-9, abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(3, 30), st.integers(1, 3)), elements=st.integers(-4, 4).map(float)),
    st.integers(0, 2**31 - 1),
)
def test_torch_path_matches_reference_on_tie_heavy_inputs(x: np.ndarray, seed: int) -> None:
    pytest.importorskip("torch")
    y = np.random.default_rng(seed).integers(0, 3, x.shape[0])
    if np.unique(y).size < 2 or np.quantile(pdist(x), 0.9) == 0:
        return
    ref, _, _ = reference_grtd(x, y)
    assert grtd_stage(x, y, precision="float64", backend="torch") == pytest.approx(ref, rel=1e-9, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    arrays(np.float64, st.tuples(st.integers(2, 40), st.integers(1, 3)), elements=st.integers(-3, 3).map(float)),
    st.sampled_from(["float32", "float64"]),
)
def test_torch_order_statistics_equal_numpy_on_the_same_buffer(x: np.ndarray, precision: str) -> None:
    torch = pytest.importorskip("torch")
    sq, scale = squared_distance_buffer(x, precision)
    full = sq.copy()
    np.fill_diagonal(full, np.inf)  # the torch buffer's layout: symmetric, +inf diagonal
    t = torch.from_numpy(full)
    m = x.shape[0] * (x.shape[0] - 1) // 2
    ranks = sorted({0, m - 1, m // 2, (m * 9) // 10})
    np.testing.assert_array_equal(_torch_order_statistics(t, [2 * r for r in ranks]), upper_order_statistics(sq, ranks))
    for q in (0.9, 0.5, 1.0):
        assert _torch_distance_quantile(t, scale, q) == distance_quantile(sq, scale, q)


def test_torch_scans_in_small_chunks_give_the_same_quantile(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    x, _ = make_data(200, 8, seed=11)
    sq, scale = torch_squared_distances(x, torch.device("cpu"), "float32")
    whole = _torch_distance_quantile(sq, scale, 0.9)
    monkeypatch.setattr(grtd_mod, "_TORCH_SCAN", 1000)
    assert _torch_distance_quantile(sq, scale, 0.9) == whole
    with pytest.raises(ValueError, match="ranks"):
        _torch_order_statistics(sq, [sq.numel()])


def test_torch_class_bridges_pick_the_same_pairs_as_numpy() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    x = rng.integers(-2, 3, (120, 2)).astype(float)  # many tied bridges: ties -> lowest row, then column
    y = np.sort(rng.integers(0, 6, 120))
    classes, starts = np.unique(y, return_index=True)
    ends = np.append(starts[1:], y.size)
    sq, _ = squared_distance_buffer(x, "float64")
    full = sq.copy()
    np.fill_diagonal(full, np.inf)
    got = _torch_class_bridges(torch.from_numpy(full), starts, ends)
    k = classes.size
    want = [_block_argmin(sq, starts[a], ends[a], starts[b], ends[b]) for a in range(k) for b in range(a + 1, k)]
    np.testing.assert_array_equal(got, np.array(want))


def test_device_selects_the_path() -> None:
    torch = pytest.importorskip("torch")
    x, y = make_data(120, 6, seed=13)
    numpy_res = grtd({"s": x}, y)
    assert numpy_res.device == "cpu"
    assert grtd({"s": x}, y, device="cpu").to_dict() == numpy_res.to_dict()  # 'cpu': the numpy path, unchanged
    torch_res = grtd({"s": x}, y, backend="torch")
    assert torch_res.device == "torch:cpu"
    assert torch_res.value == pytest.approx(numpy_res.value, rel=1e-5)
    assert grtd({"s": x}, y, device="cuda", backend="numpy").device == "cpu"
    if torch.cuda.is_available():
        assert grtd({"s": x}, y, device="auto").device.startswith("torch:cuda")
    else:
        assert grtd({"s": x}, y, device="auto").to_dict() == numpy_res.to_dict()
        with pytest.raises(ValueError, match="CUDA"):
            grtd_stage(x, y, device="cuda")
    with pytest.raises(ValueError, match="backend"):
        grtd_stage(x, y, backend="jax")


def test_torch_path_rejects_zero_quantile() -> None:
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="quantile is 0"):
        grtd_stage(np.zeros((5, 2)), np.array([0, 1, 0, 1, 0]), backend="torch")


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(not _cuda_available(), reason="needs a CUDA device (runs on the GPU machine)")
@pytest.mark.parametrize("data", sorted(TORCH_DATA))
def test_cuda_path_matches_numpy_path(data: str) -> None:
    x, y = TORCH_DATA[data](0)
    ref = grtd_stage_details(x, y)
    got = grtd_stage_details(x, y, device="cuda")
    for name in ("value", "q", "w_x", "w_y"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-5, abs=1e-12), name
