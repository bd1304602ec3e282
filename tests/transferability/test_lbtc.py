"""LBTC (metrics.md §4): leakage on hand-built patches, batching, masking, skipping, validation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transferability import lbtc as lbtc_mod
from transferability.lbtc import lbtc, leakage, patch_leakages
from tests.utils.mst_reference import kruskal_leakage, kruskal_leakage_higher_index_first


# ---- hand-built patches ----


def test_points_on_a_line() -> None:
    x = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert leakage(x, [0, 1, 0, 1]) == 1.0  # every MST edge crosses
    assert leakage(x, [0, 0, 1, 1]) == pytest.approx(1 / 3)
    assert leakage(x, [0, 0, 0, 1]) == pytest.approx(1 / 3)


def test_ties_break_by_lower_index() -> None:
    # Unit square p0=(0,0) p1=(0,1) p2=(1,0) p3=(1,1): the four sides tie at length 1. Kruskal in
    # (i, j) order takes (0,1), (0,2), (1,3) and rejects (2,3).
    x = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    # {p0,p1} vs {p2,p3}: (0,2) and (1,3) cross -> 2/3; a tree holding (2,3) instead of (1,3) gives 1/3.
    assert leakage(x, [0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert leakage(x, [0, 1, 0, 1]) == pytest.approx(1 / 3)  # only (0,1) crosses
    assert leakage(x, [0, 1, 1, 0]) == 1.0


def test_duplicate_features_are_zero_ties() -> None:
    rng = np.random.default_rng(0)
    v = rng.standard_normal(64)
    x = np.repeat(v[None, :], 5, axis=0)  # one point, five times: every distance is exactly 0
    # Ties -> lower index: the tree is the star (0,1), (0,2), (0,3), (0,4).
    assert leakage(x, [0, 1, 0, 1, 1]) == pytest.approx(3 / 4)
    assert leakage(x, [1, 1, 1, 1, 0]) == pytest.approx(1 / 4)


def test_minimum_leakage_when_classes_are_separated() -> None:
    # Every intra-class distance below every inter-class one: the MST bridges the L labels with
    # exactly L - 1 edges, the least any spanning tree can do, so rho = (L - 1) / (P - 1).
    # (A spanning tree over two labels always has a crossing edge: rho = 0 cannot happen.)
    rng = np.random.default_rng(1)
    for n_labels in (2, 3, 4):
        y = rng.permutation(np.arange(30) % n_labels)
        centres = rng.standard_normal((n_labels, 8)) * 100.0
        x = centres[y] + rng.standard_normal((30, 8)) * 0.1
        assert leakage(x, y) == pytest.approx((n_labels - 1) / 29)


def test_single_label_patch_is_none() -> None:
    x = np.random.default_rng(2).standard_normal((10, 3))
    assert leakage(x, np.full(10, 3)) is None
    assert leakage(x[:1], [1]) is None


@settings(max_examples=60, deadline=None)
@given(
    st.integers(2, 25).flatmap(
        lambda p: st.tuples(
            st.lists(st.lists(st.integers(-2, 2), min_size=2, max_size=2), min_size=p, max_size=p),
            st.lists(st.integers(0, 2), min_size=p, max_size=p),
        )
    )
)
def test_leakage_matches_kruskal_reference_with_ties(data: tuple[list, list]) -> None:
    x = np.array(data[0], dtype=np.float64)
    y = np.array(data[1])
    ref = kruskal_leakage(x, y)
    got = leakage(x, y)
    if ref is None:
        assert got is None
    else:
        assert got == pytest.approx(ref, abs=1e-15)


# ---- batched patches ----


def test_batched_equals_per_patch_reference_with_masks() -> None:
    rng = np.random.default_rng(3)
    a_n, p_n, d = 70, 27, 10
    feats = rng.standard_normal((a_n, p_n, d)).astype(np.float32)
    labs = rng.integers(0, 3, (a_n, p_n))
    mask = rng.random((a_n, p_n)) > 0.3
    labs[:5] = 1  # single-label patches
    mask[5, :] = False
    mask[6, :] = False
    mask[6, 4] = True  # one point left
    feats[~mask] = np.nan  # dropped points may hold anything
    rho = patch_leakages(feats, labs, mask)
    for a in range(a_n):
        idx = np.flatnonzero(mask[a])
        ref = kruskal_leakage(feats[a, idx], labs[a, idx]) if idx.size else None
        if ref is None:
            assert math.isnan(rho[a])
        else:
            assert rho[a] == pytest.approx(ref, abs=1e-15)


def test_chunking_and_threads_do_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    feats = rng.standard_normal((50, 20, 6))
    labs = rng.integers(0, 2, (50, 20))
    whole = patch_leakages(feats, labs)
    monkeypatch.setattr(lbtc_mod, "_ANCHOR_CHUNK", 7)
    np.testing.assert_array_equal(patch_leakages(feats, labs), whole)
    monkeypatch.setattr(lbtc_mod, "worker_count", lambda: 1)
    np.testing.assert_array_equal(patch_leakages(feats, labs), whole)


def duplicate_cluster_patches(seed: int, a_n: int = 24, p_n: int = 125, d: int = 320) -> tuple[np.ndarray, ...]:
    """Patches whose points are copies of 8 random rows (flat regions at D = 320), random labels."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal((a_n, 8, d)) * 7.3 + 41.7).astype(np.float32)
    cluster = rng.integers(0, 8, (a_n, p_n))
    feats = np.take_along_axis(base, cluster[..., None], axis=1)
    return feats, rng.integers(0, 2, (a_n, p_n)), rng.random((a_n, p_n)) > 0.1


def test_duplicate_rows_at_high_dimension_tie_by_lower_index() -> None:
    # Every pair between two clusters ties exactly (pdist of identical differences); which pair the
    # tree takes, and so the leakage, is decided by the lower-index rule alone. A Gram product at
    # D = 320 leaves rounding noise between the tied distances (9 of these 24 patches came out wrong).
    feats, labs, mask = duplicate_cluster_patches(11)
    rho = patch_leakages(feats, labs, mask)
    decided_by_ties = 0
    for a in range(feats.shape[0]):
        idx = np.flatnonzero(mask[a])
        ref = kruskal_leakage(feats[a, idx], labs[a, idx])
        assert rho[a] == pytest.approx(ref, abs=1e-15), f"patch {a}"
        decided_by_ties += ref != kruskal_leakage_higher_index_first(feats[a, idx], labs[a, idx])
    assert decided_by_ties >= 12  # the patches do exercise the tie rule


def test_duplicate_rows_are_one_point_in_the_distance_matrix() -> None:
    feats, _, mask = duplicate_cluster_patches(12, a_n=4, p_n=60)
    feats[0, 1] = 0.0
    feats[0, 2] = -0.0  # numerically equal to row 1
    mask[0, :3] = True
    sq = lbtc_mod._patch_sq_distances(feats, mask)
    np.testing.assert_array_equal(sq, sq.transpose(0, 2, 1))
    for a in range(feats.shape[0]):
        valid = np.flatnonzero(mask[a])
        same = (feats[a][valid][:, None, :] == feats[a][valid][None, :, :]).all(axis=2)
        for i, j in zip(*np.nonzero(same)):
            vi, vj = valid[i], valid[j]
            assert sq[a, vi, vj] == 0.0
            np.testing.assert_array_equal(sq[a, vi, valid], sq[a, vj, valid])  # bitwise
    assert sq[0, 1, 2] == 0.0


def test_duplicate_grouping_survives_hash_collisions(monkeypatch: pytest.MonkeyPatch) -> None:
    feats, labs, mask = duplicate_cluster_patches(13, a_n=10)
    feats[3, 5:9] = feats[3, 4] + np.float32(1e-3)  # a near-duplicate group: distinct rows
    mask[3, 4:9] = True
    want = patch_leakages(feats, labs, mask)
    reps = lbtc_mod._duplicate_representatives(feats.astype(np.float64), mask)
    # Every row hashing alike: grouping falls back to exact per-patch comparison, same result.
    monkeypatch.setattr(lbtc_mod, "_row_hashes", lambda x: np.zeros(x.shape[:2], dtype=np.uint64))
    np.testing.assert_array_equal(lbtc_mod._duplicate_representatives(feats.astype(np.float64), mask), reps)
    np.testing.assert_array_equal(patch_leakages(feats, labs, mask), want)
    assert reps[3, 5] != reps[3, 4] and reps[3, 6] == reps[3, 5]


def test_lbtc_value_per_stage_and_diagnostics() -> None:
    rng = np.random.default_rng(5)
    feats = {"e4": rng.standard_normal((40, 27, 8)), "e5": rng.standard_normal((40, 27, 16))}
    labs = {"e4": rng.integers(0, 2, (40, 27)), "e5": rng.integers(0, 2, (40, 27))}
    labs["e5"][:6] = 0  # six single-label patches at the deeper stage
    masks = {"e4": np.ones((40, 27), bool), "e5": rng.random((40, 27)) > 0.2}
    res = lbtc(feats, labs, masks)
    for s in ("e4", "e5"):
        rho = patch_leakages(feats[s], labs[s], masks[s])
        used = rho[~np.isnan(rho)]
        assert res.per_stage[s] == pytest.approx(1.0 - used.mean(), rel=1e-14)
        assert res.patches_used[s] == used.size
        assert res.patches_used[s] + res.patches_skipped[s] == 40
    assert res.patches_skipped["e5"] >= 6
    assert res.value == pytest.approx((res.per_stage["e4"] + res.per_stage["e5"]) / 2, rel=1e-15)
    assert lbtc(feats, labs, masks, stages=["e5"]).value == res.per_stage["e5"]
    assert json.loads(json.dumps(res.to_dict()))["patches_skipped"]["e5"] == res.patches_skipped["e5"]


def test_lbtc_shared_labels_and_no_mask() -> None:
    rng = np.random.default_rng(6)
    feats = {"a": rng.standard_normal((12, 8, 3))}
    labs = rng.integers(0, 2, (12, 8))
    labs[:, 0], labs[:, 1] = 0, 1
    res = lbtc(feats, labs)
    assert res.patches_used == {"a": 12} and res.patches_skipped == {"a": 0}


def test_lbtc_better_for_label_aligned_features() -> None:
    rng = np.random.default_rng(7)
    labs = rng.integers(0, 2, (64, 27))
    aligned = labs[:, :, None] * 3.0 + rng.standard_normal((64, 27, 8))
    noise = rng.standard_normal((64, 27, 8))
    assert lbtc({"s": aligned}, labs).value > lbtc({"s": noise}, labs).value


def test_all_single_label_stage_raises() -> None:
    feats = {"a": np.random.default_rng(8).standard_normal((4, 8, 3))}
    with pytest.raises(ValueError, match="single label"):
        lbtc(feats, np.zeros((4, 8), int))


def test_deterministic_bit_identical() -> None:
    rng = np.random.default_rng(9)
    feats = {"s": rng.standard_normal((64, 125, 32)).astype(np.float32)}
    labs = rng.integers(0, 3, (64, 125))
    a, b = lbtc(feats, labs), lbtc({"s": feats["s"].copy()}, labs.copy())
    assert a.value.hex() == b.value.hex()


@pytest.mark.parametrize(
    "feats, labs, mask, msg",
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), None, r"\(A, P, D\)"),
        (np.zeros((2, 3, 4)), np.zeros((2, 4)), None, "labels have shape"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3)), np.ones((2, 4), bool), "mask has shape"),
        (np.zeros((2, 3, 4)), np.zeros((2, 3)), np.ones((2, 3), int), "boolean"),
        (np.full((2, 3, 4), np.nan), np.zeros((2, 3)), None, "NaN or inf"),
        (np.zeros((2, 3, 4)), np.full((2, 3), 0.5), None, "integer"),
    ],
)
def test_validation(feats: np.ndarray, labs: np.ndarray, mask: np.ndarray | None, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        patch_leakages(feats, labs, mask)


def test_mapping_validation() -> None:
    with pytest.raises(ValueError, match="non-empty mapping"):
        lbtc({}, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="no entry for stage"):
        lbtc({"a": np.zeros((1, 2, 3))}, {"b": np.zeros((1, 2))})
    with pytest.raises(ValueError, match=r"\(P, D\)"):
        leakage(np.zeros(3), [0, 1, 0])
