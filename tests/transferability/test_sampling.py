"""Shared sample plan (metrics.md §2) and LBTC boundary anchors / patches (§4)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from transferability.sampling import (
    boundary_anchors,
    boundary_mask,
    nearest_labels,
    patch_grid,
    patch_points,
    sample_points,
)


def toy_cases() -> list[np.ndarray]:
    """Two cases of different shapes: background, a big class 1, and a tiny class 2 (5 voxels)."""
    a = np.zeros((12, 10, 8), dtype=np.int16)
    a[2:9, 2:8, 1:6] = 1
    a[10, 0, 0:3] = 2
    b = np.zeros((9, 11, 7), dtype=np.uint8)
    b[1:5, 3:9, 2:6] = 1
    b[8, 10, 5:7] = 2
    return [a, b]


def plan_key(plan) -> tuple[tuple[int, int, int, int], ...]:
    return tuple((int(m), *map(int, c)) for m, c in zip(plan.case, plan.coords))


# ---- sample_points ----


def test_plan_depends_only_on_labels_and_seed() -> None:
    cases = toy_cases()
    p1 = sample_points(cases, n_samples=300, seed=7)
    p2 = sample_points([c.copy() for c in cases], n_samples=300, seed=7)
    np.testing.assert_array_equal(p1.case, p2.case)
    np.testing.assert_array_equal(p1.coords, p2.coords)
    np.testing.assert_array_equal(p1.labels, p2.labels)
    # Same labels in another dtype (as a model's preprocessing might hand them over): same plan.
    p3 = sample_points([c.astype(np.float32) for c in cases], n_samples=300, seed=7)
    np.testing.assert_array_equal(p1.coords, p3.coords)
    # Another seed moves the points.
    assert plan_key(sample_points(cases, n_samples=300, seed=8)) != plan_key(p1)


def test_points_carry_their_true_labels() -> None:
    cases = toy_cases()
    plan = sample_points(cases, n_samples=300, seed=0)
    for m, c, lab in zip(plan.case, plan.coords, plan.labels):
        assert cases[m][tuple(c)] == lab
    assert np.all(plan.coords >= 0)
    for m in range(2):
        assert np.all(plan.coords[plan.for_case(m)] < np.array(cases[m].shape))


def test_budget_is_balanced_per_class_and_small_classes_give_all_voxels() -> None:
    cases = toy_cases()
    plan = sample_points(cases, n_samples=301, seed=1)
    counts = {int(c): int(n) for c, n in zip(*np.unique(plan.labels, return_counts=True))}
    assert plan.per_class_budget == {0: 101, 1: 100, 2: 100}  # remainder to the lowest id
    assert counts[0] == 101 and counts[1] == 100
    assert counts[2] == 5  # class 2 has only 5 voxels in all: every one of them
    tiny = {(int(m), *map(int, c)) for m, c, lab in zip(plan.case, plan.coords, plan.labels) if lab == 2}
    assert len(tiny) == 5


def test_without_replacement() -> None:
    plan = sample_points(toy_cases(), n_samples=2000, seed=2)
    assert len(set(plan_key(plan))) == len(plan)


def test_class_draw_spans_all_cases_uniformly() -> None:
    # Two identical cases: over many seeds each should get about half of class 1's draws.
    a = np.zeros((10, 10, 10), dtype=np.int32)
    a[:5] = 1
    shares = []
    for seed in range(40):
        plan = sample_points([a, a], n_samples=100, seed=seed)
        in_one = plan.labels == 1
        shares.append(np.mean(plan.case[in_one] == 0))
    assert 0.45 < float(np.mean(shares)) < 0.55
    assert 0 < min(shares) and max(shares) < 1


def test_plan_order_is_class_case_flat_index() -> None:
    cases = toy_cases()
    plan = sample_points(cases, n_samples=120, seed=3)
    flat = np.array(
        [np.ravel_multi_index(tuple(c), cases[m].shape) for m, c in zip(plan.case, plan.coords)], dtype=np.int64
    )
    order = np.lexsort((flat, plan.case, plan.labels))
    np.testing.assert_array_equal(order, np.arange(len(plan)))


@settings(max_examples=30, deadline=None)
@given(
    arrays(np.int8, st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)), elements=st.integers(0, 3)),
    st.integers(2, 200),
    st.integers(0, 2**32 - 1),
)
def test_sampling_properties(lab: np.ndarray, n_samples: int, seed: int) -> None:
    plan = sample_points([lab], n_samples=n_samples, seed=seed)
    classes, sizes = np.unique(lab, return_counts=True)
    assert set(plan.per_class_budget) == {int(c) for c in classes}
    assert sum(plan.per_class_budget.values()) == n_samples
    for c, size in zip(classes, sizes):
        assert np.count_nonzero(plan.labels == c) == min(plan.per_class_budget[int(c)], size)
    assert len(set(plan_key(plan))) == len(plan)
    np.testing.assert_array_equal(lab[tuple(plan.coords.T)], plan.labels)


@pytest.mark.parametrize(
    "maps, kwargs, msg",
    [
        ([], {}, "empty"),
        ([np.zeros((3, 3))], {}, "3-D"),
        ([np.full((2, 2, 2), 0.5)], {}, "integer labels"),
        ([np.full((2, 2, 2), -1)], {}, "negative"),
        ([np.zeros((2, 2, 2), int)], {"n_samples": 1}, "n_samples"),
        ([np.zeros((0, 2, 2), int)], {}, "no voxels"),
    ],
)
def test_sample_points_validation(maps: list, kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        sample_points(maps, **kwargs)


# ---- boundary anchors ----


def brute_boundary(lab: np.ndarray) -> np.ndarray:
    out = np.zeros(lab.shape, dtype=bool)
    for z, y, x in np.ndindex(lab.shape):
        nb = lab[max(z - 1, 0) : z + 2, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        out[z, y, x] = np.unique(nb).size > 1
    return out


def test_boundary_mask_matches_bruteforce_neighbourhood() -> None:
    for lab in toy_cases():
        np.testing.assert_array_equal(boundary_mask(lab), brute_boundary(lab))


def test_anchors_are_real_boundary_voxels() -> None:
    cases = toy_cases()
    anchors = boundary_anchors(cases, n_anchors=64, seed=0)
    assert len(anchors) == 64
    masks = [brute_boundary(c) for c in cases]
    assert anchors.n_boundary_voxels == sum(int(m.sum()) for m in masks)
    for m, c in zip(anchors.case, anchors.coords):
        assert masks[m][tuple(c)]
    keys = {(int(m), *map(int, c)) for m, c in zip(anchors.case, anchors.coords)}
    assert len(keys) == 64  # without replacement


def test_anchors_deterministic_and_all_when_fewer() -> None:
    cases = toy_cases()
    a1 = boundary_anchors(cases, n_anchors=50, seed=4)
    a2 = boundary_anchors(cases, n_anchors=50, seed=4)
    np.testing.assert_array_equal(a1.coords, a2.coords)
    np.testing.assert_array_equal(a1.case, a2.case)
    everything = boundary_anchors(cases, n_anchors=10**6, seed=0)
    assert len(everything) == everything.n_boundary_voxels
    uniform = boundary_anchors([np.ones((4, 4, 4), int)], n_anchors=5)
    assert len(uniform) == 0 and uniform.n_boundary_voxels == 0
    with pytest.raises(ValueError, match="n_anchors"):
        boundary_anchors(cases, n_anchors=0)


# ---- patches ----


def test_patch_points_full_grid_inside_volume() -> None:
    pts = patch_points([10, 10, 10], stride=2, k=5, shape=(30, 30, 30))
    assert pts.shape == (125, 3)
    np.testing.assert_array_equal(pts[0], [6, 6, 6])
    np.testing.assert_array_equal(pts[62], [10, 10, 10])  # centre
    np.testing.assert_array_equal(pts[-1], [14, 14, 14])
    assert len({tuple(p) for p in pts}) == 125


def test_patch_points_outside_volume_are_dropped() -> None:
    shape = (12, 20, 9)
    pts = patch_points([1, 18, 4], stride=(2, 1.5, 4), k=5, shape=shape)
    full = np.array([[1 + 2 * i, 18 + 1.5 * j, 4 + 4 * l] for i in range(-2, 3) for j in range(-2, 3) for l in range(-2, 3)])
    inside = full[np.all((full >= 0) & (full <= np.array(shape) - 1), axis=1)]
    np.testing.assert_array_equal(pts, inside)
    assert 0 < len(pts) < 125


def test_patch_grid_matches_patch_points() -> None:
    anchors = np.array([[0, 0, 0], [5, 5, 5], [9, 2, 7]])
    shapes = [(10, 10, 10), (11, 11, 11), (10, 3, 8)]
    pts, mask = patch_grid(anchors, stride=3, k=3, shapes=shapes)
    assert pts.shape == (3, 27, 3) and mask.shape == (3, 27)
    for a in range(3):
        np.testing.assert_array_equal(pts[a][mask[a]], patch_points(anchors[a], 3, 3, shapes[a]))


def test_patch_validation() -> None:
    with pytest.raises(ValueError, match="odd"):
        patch_points([0, 0, 0], 1, k=4, shape=(5, 5, 5))
    with pytest.raises(ValueError, match="stride"):
        patch_points([0, 0, 0], 0, k=3, shape=(5, 5, 5))
    with pytest.raises(ValueError, match="shape"):
        patch_points([0, 0, 0], 1, k=3)


def test_nearest_labels_round_half_up_and_clip() -> None:
    lab = np.arange(27).reshape(3, 3, 3)
    pts = np.array([[0.49, 0.0, 0.0], [0.5, 0.0, 0.0], [2.6, 2.0, 2.0], [-0.7, 1.0, 1.0]])
    np.testing.assert_array_equal(nearest_labels(lab, pts), [0, 9, 26, 4])


@settings(max_examples=40, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7)),
    n_labels=st.sampled_from([2, 3, 300, 70000]),
    seed=st.integers(0, 10_000),
)
def test_boundary_mask_equals_the_morphological_gradient(shape, n_labels, seed):
    """The fast shifted-pass filter is exactly ndimage's max != min with size 3, mode 'nearest'."""
    from scipy import ndimage

    from transferability.sampling import boundary_mask

    lab = np.random.default_rng(seed).integers(0, n_labels, size=shape)
    want = ndimage.maximum_filter(lab, size=3, mode="nearest") != ndimage.minimum_filter(lab, size=3, mode="nearest")
    np.testing.assert_array_equal(boundary_mask(lab), want)
