"""Exact Euclidean MST: numpy dense Prim and torch dense Boruvka against a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.spatial.distance import pdist, squareform

from bench import mst_dense
from transferability import mst
from transferability.mst import batched_prim_edges, mst_edges, mst_weight
from tests.utils.mst_reference import kruskal_on_matrix, kruskal_reference


def is_spanning_tree(edges: np.ndarray, n: int) -> bool:
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    if edges.shape != (n - 1, 2):
        return False
    for a, b in edges:
        ra, rb = find(int(a)), find(int(b))
        if ra == rb:
            return False
        parent[ra] = rb
    return True


def random_points(n: int = 400, d: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d))


def clustered_points(n: int = 400, d: int = 16, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, d)) * 50.0
    return centres[rng.integers(0, 6, n)] + rng.standard_normal((n, d)) * 0.01


def duplicate_heavy_points(n: int = 400, d: int = 16, seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((12, d))
    return base[rng.integers(0, 12, n)]


CASES = {
    "random": random_points,
    "clustered": clustered_points,
    "duplicates": duplicate_heavy_points,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float64_path_matches_bruteforce(case: str) -> None:
    x = CASES[case]()
    _, ref = kruskal_reference(x)
    got = mst_weight(x, precision="float64")
    assert got == pytest.approx(ref, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_path_within_1e5_of_float64(case: str) -> None:
    x = CASES[case]()
    w64 = mst_weight(x, precision="float64")
    w32 = mst_weight(x, precision="float32")
    assert w32 == pytest.approx(w64, rel=1e-5, abs=1e-9)
    # The float32 search only picks the tree; its weight is exact for that tree, so never below the optimum.
    assert w32 >= w64 * (1 - 1e-12)


def test_duplicate_points_are_real_zero_edges() -> None:
    x = np.repeat(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), 5, axis=0)
    edges, weights = mst_edges(x)
    assert is_spanning_tree(edges, 10)
    # 8 zero edges inside the two groups of duplicates, one edge of length sqrt(27) between them.
    assert np.count_nonzero(weights == 0.0) == 8
    assert mst_weight(x) == pytest.approx(math.sqrt(27.0), rel=1e-15)
    same = np.zeros((7, 4))
    assert mst_weight(same) == 0.0
    assert is_spanning_tree(mst_edges(same)[0], 7)


def test_mst_edges_layout_and_lengths() -> None:
    x = random_points(120, 5, seed=3)
    edges, weights = mst_edges(x)
    assert edges.dtype == np.int64 and weights.dtype == np.float64
    assert is_spanning_tree(edges, 120)
    assert np.all(edges[:, 0] < edges[:, 1])
    assert np.all(np.diff(weights) >= 0)
    np.testing.assert_array_equal(weights, np.linalg.norm(x[edges[:, 0]] - x[edges[:, 1]], axis=1))
    assert math.fsum(weights) == mst_weight(x)


def test_two_points() -> None:
    assert mst_weight([[0.0, 0.0], [3.0, 4.0]]) == 5.0


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.int64,
        st.tuples(st.integers(2, 30), st.integers(1, 4)),
        elements=st.integers(-3, 3),
    )
)
def test_tie_heavy_integer_inputs_match_bruteforce(x: np.ndarray) -> None:
    _, ref = kruskal_reference(x)
    edges, _ = mst_edges(x, precision="float64")
    assert is_spanning_tree(edges, x.shape[0])
    assert mst_weight(x, precision="float64") == pytest.approx(ref, rel=1e-12, abs=1e-12)
    assert mst_weight(x, precision="float32") == pytest.approx(ref, rel=1e-5, abs=1e-9)


def test_large_magnitudes_do_not_overflow_float32() -> None:
    x = random_points(200, 8, seed=4) * 1e30 + 1e31
    ref = mst_weight(x, precision="float64")
    assert math.isfinite(ref)
    assert mst_weight(x, precision="float32") == pytest.approx(ref, rel=1e-5)


def test_offset_data_keeps_float32_accuracy() -> None:
    # Centring first: a large common offset must not cost float32 precision.
    x = random_points(300, 10, seed=5)
    assert mst_weight(x + 1e4, precision="float32") == pytest.approx(mst_weight(x, precision="float64"), rel=1e-5)


def test_deterministic_bit_identical() -> None:
    x = clustered_points(300, 12, seed=6).astype(np.float32)
    e1, w1 = mst_edges(x)
    e2, w2 = mst_edges(x.copy())
    np.testing.assert_array_equal(e1, e2)
    assert w1.tobytes() == w2.tobytes()
    assert mst_weight(x) == mst_weight(x)


def test_result_does_not_depend_on_thread_count(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered_points(700, 20, seed=8).astype(np.float32)  # > 2 strips, float64 fallback strips too
    many = mst.squared_distance_buffer(x.astype(np.float64), "float32")[0]
    monkeypatch.setattr(mst, "worker_count", lambda: 1)
    one = mst.squared_distance_buffer(x.astype(np.float64), "float32")[0]
    assert one.tobytes() == many.tobytes()
    assert mst_weight(x) == mst_weight(x.copy())


def test_squared_distance_buffer_is_symmetric_with_zero_diagonal() -> None:
    x = duplicate_heavy_points(150, 7, seed=7)
    for precision in ("float32", "float64"):
        sq, scale = mst.squared_distance_buffer(x, precision)
        assert sq.dtype == np.dtype(precision)
        np.testing.assert_array_equal(sq, sq.T)
        np.testing.assert_array_equal(np.diagonal(sq), 0)
        ref = squareform(pdist(x, "sqeuclidean"))
        tol = 1e-5 if precision == "float32" else 1e-12
        np.testing.assert_allclose(sq.astype(np.float64) * scale**2, ref, rtol=0, atol=tol * ref.max())


def test_prim_edges_tie_rule_lower_index() -> None:
    # Four points, all at distance 1 from vertex 0 and sqrt(2) from each other.
    x = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    sq, _ = mst.squared_distance_buffer(x, "float64")
    np.testing.assert_array_equal(mst.prim_edges(sq), [[0, 1], [0, 2], [0, 3]])


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros((1, 3)), "at least 2"),
        (np.zeros(5), "2-D"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN or inf"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "NaN or inf"),
        (np.array([["a", "b"], ["c", "d"]]), "numeric"),
        (np.zeros((4, 0)), "dimension"),
    ],
)
def test_input_validation(bad: np.ndarray, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        mst_weight(bad)


def test_bad_precision_and_device() -> None:
    x = random_points(10, 2)
    with pytest.raises(ValueError, match="precision"):
        mst_weight(x, precision="float16")  # type: ignore[arg-type]
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            mst_weight(x, device="cuda")


# ---- torch path (dense Boruvka), exercised on CPU torch here; CUDA uses the same code ----


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_torch_boruvka_matches_numpy_prim(case: str, precision: str) -> None:
    pytest.importorskip("torch")
    x = CASES[case](300, 9)
    edges, weights = mst_edges(x, device="cpu", precision=precision)
    assert is_spanning_tree(edges, 300)
    ref = mst_weight(x, precision="float64")
    assert math.fsum(weights) == pytest.approx(ref, rel=1e-5 if precision == "float32" else 1e-12, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.int64,
        st.tuples(st.integers(2, 25), st.integers(1, 3)),
        elements=st.integers(-2, 2),
    )
)
def test_torch_boruvka_tie_heavy(x: np.ndarray) -> None:
    pytest.importorskip("torch")
    _, ref = kruskal_reference(x)
    edges, weights = mst_edges(x, device="cpu", precision="float64")
    assert is_spanning_tree(edges, x.shape[0])
    assert math.fsum(weights) == pytest.approx(ref, rel=1e-12, abs=1e-12)


def test_torch_path_more_rows_than_one_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(mst, "_TORCH_ROWS", 37)  # force several row chunks per sweep
    x = clustered_points(250, 6, seed=9)
    edges, weights = mst_edges(x, device="cpu", precision="float64")
    assert is_spanning_tree(edges, 250)
    assert math.fsum(weights) == pytest.approx(mst_weight(x, precision="float64"), rel=1e-12)


def test_auto_device_without_cuda_uses_numpy() -> None:
    torch = pytest.importorskip("torch")
    x = random_points(50, 4)
    if not torch.cuda.is_available():
        assert mst_weight(x, device="auto") == mst_weight(x)


# ---- batched Prim used by LBTC ----


def test_batched_prim_is_kruskal_with_lower_index_ties() -> None:
    rng = np.random.default_rng(10)
    a_n, p_n = 30, 20
    pts = rng.integers(-2, 3, size=(a_n, p_n, 2)).astype(np.float64)  # many exact ties
    valid = rng.random((a_n, p_n)) > 0.2
    sq = ((pts[:, :, None, :] - pts[:, None, :, :]) ** 2).sum(axis=3)
    edges = batched_prim_edges(sq, valid)
    for a in range(a_n):
        idx = np.flatnonzero(valid[a])
        ref, _ = kruskal_reference(pts[a, idx])
        got = {tuple(sorted((int(u), int(v)))) for u, v in edges[a] if u >= 0}
        assert got == {(int(idx[i]), int(idx[j])) for i, j in ref}
        assert np.all(edges[a, idx.size - 1 :] == -1) if idx.size >= 1 else True


def test_torch_squared_distances_layout() -> None:
    torch = pytest.importorskip("torch")
    x = clustered_points(90, 7, seed=11)
    for precision in ("float32", "float64"):
        sq, scale = mst.torch_squared_distances(x, torch.device("cpu"), precision)
        assert torch.equal(sq, sq.T)  # bitwise symmetric
        assert torch.isinf(torch.diagonal(sq)).all()
        ref, ref_scale = mst.squared_distance_buffer(x, "float64")
        got = sq.double().numpy() * scale**2
        np.fill_diagonal(got, 0.0)
        np.testing.assert_allclose(got, ref * ref_scale**2, rtol=1e-5 if precision == "float32" else 1e-10, atol=1e-9)
        edges = mst.boruvka_edges_from_sq(sq)
        assert is_spanning_tree(edges, 90)


# ---- candidate-list Boruvka (default torch path) against the previous dense sweep ----


def _edge_set(edges: np.ndarray) -> list[tuple[int, int]]:
    return sorted((int(min(a, b)), int(max(a, b))) for a, b in edges)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(2, 40).flatmap(
        lambda n: st.tuples(
            arrays(np.int64, (n, n), elements=st.integers(0, 3)),
            st.integers(0, 5),
        )
    )
)
def test_candidate_boruvka_on_tie_heavy_matrices(data: tuple[np.ndarray, int]) -> None:
    # Weights in {0..3}: almost every comparison is a tie, so only the (weight, lower, higher) order decides.
    torch = pytest.importorskip("torch")
    raw, k = data
    w = np.minimum(raw, raw.T).astype(np.float64)
    full = w.copy()
    np.fill_diagonal(full, np.inf)
    for dtype in (torch.float32, torch.float64):
        sq = torch.from_numpy(full).to(dtype)
        want = kruskal_on_matrix(w)
        assert _edge_set(mst_dense.boruvka_edges_from_sq_dense(sq)) == want
        assert _edge_set(mst.boruvka_edges_from_sq(sq, k=k)) == want


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("k", [0, 1, 2, 16, 1000])
def test_candidate_boruvka_equals_dense_on_the_same_matrix(case: str, k: int) -> None:
    torch = pytest.importorskip("torch")
    x = CASES[case](400, 9)
    sq, _ = mst.torch_squared_distances(x, torch.device("cpu"), "float32")
    stats: dict = {}
    got = mst.boruvka_edges_from_sq(sq, k=k, stats=stats)
    assert _edge_set(got) == _edge_set(mst_dense.boruvka_edges_from_sq_dense(sq))
    assert stats["rounds"] == len(stats["refreshed_rows"]) >= 1
    assert stats["rounds"] > 1 and stats["refreshed_rows"][0] == 0  # round 1 is a plain row minimum
    if k <= 1:  # no list entry is trusted and every row's first edge is now inside: all rows fall back
        assert stats["refreshed_rows"][1] == 400


def test_candidate_boruvka_fallback_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(mst, "_TORCH_ROWS", 23)  # refreshed rows span several chunks
    x = clustered_points(300, 6, seed=13)
    sq, _ = mst.torch_squared_distances(x, torch.device("cpu"), "float64")
    stats: dict = {}
    got = mst.boruvka_edges_from_sq(sq, k=2, stats=stats)
    assert sum(stats["refreshed_rows"]) > 23
    assert _edge_set(got) == _edge_set(mst_dense.boruvka_edges_from_sq_dense(sq))


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_torch_pipeline_agrees_with_previous_and_numpy(case: str) -> None:
    pytest.importorskip("torch")
    x = CASES[case](500, 9)
    for precision in ("float32", "float64"):
        new = mst.boruvka_edges_torch(x, "cpu", precision)
        old = mst_dense.boruvka_edges_dense(x, "cpu", precision)
        ref_edges, ref_w = mst_edges(x, precision=precision)
        w_new = math.fsum(mst.edge_lengths(x, new).tolist())
        assert w_new == math.fsum(mst.edge_lengths(x, old).tolist()) == pytest.approx(math.fsum(ref_w), rel=1e-12)
        if case != "duplicates":  # duplicates: equal-length alternatives (1e-16 noise on a 0 distance)
            assert _edge_set(new) == _edge_set(old) == _edge_set(ref_edges)


def test_tiled_distance_build_matches_strips_and_is_symmetric(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(mst, "_TORCH_TILE", 64)  # several diagonal and off-diagonal tiles, a ragged last one
    x = clustered_points(230, 7, seed=14)
    for precision in ("float32", "float64"):
        sq, scale = mst.torch_squared_distances(x, torch.device("cpu"), precision)
        old, old_scale = mst_dense.torch_squared_distances_strips(x, torch.device("cpu"), precision)
        assert scale == old_scale and sq.dtype == old.dtype
        assert torch.equal(sq, sq.T) and torch.isinf(torch.diagonal(sq)).all()
        off = ~torch.eye(230, dtype=torch.bool)
        np.testing.assert_allclose(sq[off].double().numpy(), old[off].double().numpy(), rtol=1e-6 if precision == "float32" else 1e-12, atol=1e-14)
        assert (sq[off] >= 0).all()
        assert _edge_set(mst.boruvka_edges_from_sq(sq)) == _edge_set(mst_dense.boruvka_edges_from_sq_dense(old))


def test_device_prep_and_edge_lengths_match_the_host_versions():
    """The torch path centres/scales and re-measures edges on the device; same numbers as on the host."""
    import torch

    x = mst.as_points(random_points(300, 17) * 1000.0 + 5.0)
    work_host, scale_host = mst._scaled_centred(x, np.dtype(np.float64))
    work_dev, scale_dev = mst._torch_scaled_centred(x, torch.device("cpu"))
    assert scale_dev == scale_host
    np.testing.assert_allclose(work_dev.numpy(), work_host, rtol=0, atol=1e-15)
    edges, _ = mst.mst_edges(x)
    np.testing.assert_allclose(mst.torch_edge_lengths(x, edges, "cpu"), mst.edge_lengths(x, edges), rtol=1e-14, atol=0)
