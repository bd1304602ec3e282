"""The shared sample plan of metrics.md §2 and the LBTC boundary patches of §4.

Sampling depends only on the label maps and the seed, never on a model, so every model in a
ranking is scored on the same physical points. Coordinates are voxel indices (z, y, x order of the
arrays as given) in each case's original label grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class SamplePlan:
    """Sampled voxels: `case[i]`, integer `coords[i]` (3,) in that case's label grid, `labels[i]`.

    Ordered by class, then case, then flat voxel index, so the plan is a pure function of
    (label maps, n_samples, seed).
    """

    case: NDArray[np.int64]
    coords: NDArray[np.int64]
    labels: NDArray[np.int64]
    per_class_budget: dict[int, int]

    def __len__(self) -> int:
        return int(self.case.shape[0])

    def for_case(self, m: int) -> NDArray[np.int64]:
        """Indices into the plan of the points that lie in case `m`."""
        return np.flatnonzero(self.case == m)


@dataclass(frozen=True)
class AnchorSet:
    """Boundary anchors: `case[a]` and integer `coords[a]` (3,) in that case's label grid."""

    case: NDArray[np.int64]
    coords: NDArray[np.int64]
    n_boundary_voxels: int

    def __len__(self) -> int:
        return int(self.case.shape[0])


def _check_label_maps(label_maps: Sequence[ArrayLike]) -> list[NDArray[np.integer]]:
    if len(label_maps) == 0:
        raise ValueError("label_maps is empty: at least one case is needed")
    out = []
    for m, lab in enumerate(label_maps):
        arr = np.asarray(lab)
        if arr.ndim != 3:
            raise ValueError(f"label map of case {m} must be 3-D, got shape {arr.shape}")
        if np.issubdtype(arr.dtype, np.floating):
            if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
                raise ValueError(f"label map of case {m} must hold integer labels")
            arr = arr.astype(np.int64)
        elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise ValueError(f"label map of case {m} has non-integer dtype {arr.dtype}")
        if arr.size and arr.min() < 0:
            raise ValueError(f"label map of case {m} holds negative labels")
        out.append(arr)
    return out


def _split_budget(n_samples: int, classes: NDArray[np.int64]) -> dict[int, int]:
    """Equal split of the budget over the classes present; the remainder goes to the lowest ids."""
    base, extra = divmod(n_samples, classes.size)
    return {int(c): base + (1 if i < extra else 0) for i, c in enumerate(classes)}


def sample_points(label_maps: Sequence[ArrayLike], n_samples: int = 4096, seed: int = 0) -> SamplePlan:
    """Class-balanced voxel sample shared by every model (metrics.md §2).

    The budget is split equally over the classes present (background included); within a class
    the draw is uniform over all its voxels in all cases, without replacement, and takes every
    voxel when the class has fewer than its share.
    """
    if int(n_samples) != n_samples or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples}")
    maps = _check_label_maps(label_maps)
    rng = np.random.default_rng(seed)
    counts = [np.bincount(m.ravel().astype(np.int64)) for m in maps]
    n_cls = max(c.size for c in counts)
    per_case = np.zeros((len(maps), n_cls), dtype=np.int64)
    for m, c in enumerate(counts):
        per_case[m, : c.size] = c
    totals = per_case.sum(axis=0)
    classes = np.flatnonzero(totals > 0).astype(np.int64)
    if classes.size == 0:
        raise ValueError("label maps hold no voxels: nothing to sample")
    budget = _split_budget(int(n_samples), classes)

    cases: list[NDArray[np.int64]] = []
    coords: list[NDArray[np.int64]] = []
    labels: list[NDArray[np.int64]] = []
    for c in classes:
        total = int(totals[c])
        take = min(budget[int(c)], total)
        if take == total:
            picks = np.arange(total, dtype=np.int64)
        else:
            picks = np.sort(rng.choice(total, size=take, replace=False)).astype(np.int64)
        # Global rank among the class's voxels -> (case, rank within the case).
        bounds = np.concatenate([[0], np.cumsum(per_case[:, c])])
        case_of = np.searchsorted(bounds, picks, side="right") - 1
        for m in np.unique(case_of):
            local = picks[case_of == m] - bounds[m]
            flat = np.flatnonzero(maps[m].ravel() == c)[local]
            cases.append(np.full(flat.size, m, dtype=np.int64))
            coords.append(np.stack(np.unravel_index(flat, maps[m].shape), axis=1).astype(np.int64))
            labels.append(np.full(flat.size, c, dtype=np.int64))
    return SamplePlan(
        case=np.concatenate(cases),
        coords=np.concatenate(coords),
        labels=np.concatenate(labels),
        per_class_budget=budget,
    )


def _compact(lab: NDArray[np.integer]) -> NDArray[np.integer]:
    """The same labels in the narrowest unsigned dtype that holds them (fewer bytes per pass)."""
    top = int(lab.max()) if lab.size else 0
    for dt in (np.uint8, np.uint16, np.uint32):
        if top <= np.iinfo(dt).max:
            return lab.astype(dt, copy=False)
    return lab


def _box3(a: NDArray[np.integer], op: np.ufunc) -> NDArray[np.integer]:
    """Separable 3x3x3 max/min filter with edge replication (= ndimage's size=3, mode='nearest')."""
    out = a.copy()
    for axis in range(a.ndim):
        src = out.copy()
        lo = [slice(None)] * a.ndim
        hi = [slice(None)] * a.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        op(out[tuple(hi)], src[tuple(lo)], out=out[tuple(hi)])
        op(out[tuple(lo)], src[tuple(hi)], out=out[tuple(lo)])
    return out


def boundary_mask(label_map: ArrayLike) -> NDArray[np.bool_]:
    """Voxels whose 3x3x3 neighbourhood (clipped at the volume edge) holds more than one label.

    The morphological gradient max != min, computed with shifted numpy passes on the narrowest
    dtype (tens of times faster than ndimage's filters on int64 labels, same result).
    """
    lab = _compact(np.asarray(label_map))
    return _box3(lab, np.maximum) != _box3(lab, np.minimum)


def boundary_anchors(label_maps: Sequence[ArrayLike], n_anchors: int = 512, seed: int = 0) -> AnchorSet:
    """Uniform draw of `n_anchors` boundary voxels over all cases (all of them if fewer; §4.1)."""
    if int(n_anchors) != n_anchors or n_anchors < 1:
        raise ValueError(f"n_anchors must be a positive integer, got {n_anchors}")
    maps = _check_label_maps(label_maps)
    flats = [np.flatnonzero(boundary_mask(m).ravel()) for m in maps]
    sizes = np.array([f.size for f in flats], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return AnchorSet(np.zeros(0, np.int64), np.zeros((0, 3), np.int64), 0)
    rng = np.random.default_rng(seed)
    take = min(int(n_anchors), total)
    picks = np.arange(total) if take == total else np.sort(rng.choice(total, size=take, replace=False))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    case_of = np.searchsorted(bounds, picks, side="right") - 1
    coords = np.empty((take, 3), dtype=np.int64)
    for m in np.unique(case_of):
        sel = case_of == m
        flat = flats[m][picks[sel] - bounds[m]]
        coords[sel] = np.stack(np.unravel_index(flat, maps[m].shape), axis=1)
    return AnchorSet(case=case_of.astype(np.int64), coords=coords, n_boundary_voxels=total)


def _offsets(stride: float | Sequence[float], k: int) -> NDArray[np.float64]:
    if int(k) != k or k < 1 or k % 2 == 0:
        raise ValueError(f"k must be a positive odd integer, got {k}")
    step = np.broadcast_to(np.asarray(stride, dtype=np.float64), (3,))
    if np.any(step <= 0) or not np.all(np.isfinite(step)):
        raise ValueError(f"stride must be positive, got {stride}")
    r = np.arange(k, dtype=np.float64) - (k - 1) / 2
    grid = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    return grid * step


def patch_points(
    anchor: ArrayLike, stride: float | Sequence[float], k: int = 5, shape: Sequence[int] | None = None
) -> NDArray[np.float64]:
    """The k x k x k grid centred on `anchor` with step `stride` (image voxels, per axis or scalar).

    Points outside the volume `shape` are dropped (§4.2). Coordinates are float64 (strides in
    image voxels need not be integers once a model resamples), in lexicographic grid order.
    """
    if shape is None:
        raise ValueError("shape (the case's label-grid shape) is required")
    centre = np.asarray(anchor, dtype=np.float64).reshape(3)
    pts = centre + _offsets(stride, k)
    upper = np.asarray(shape, dtype=np.float64) - 1
    keep = np.all((pts >= 0) & (pts <= upper), axis=1)
    return pts[keep]


def patch_grid(
    anchors: ArrayLike, stride: float | Sequence[float], k: int, shapes: Sequence[Sequence[int]]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Batched `patch_points`: (A, k^3, 3) coordinates and an (A, k^3) mask of in-volume points.

    `shapes[a]` is the label-grid shape of anchor a's case. Masked-out points must be ignored by
    the caller (LBTC's batched MST treats them as absent).
    """
    anc = np.asarray(anchors, dtype=np.float64).reshape(-1, 3)
    pts = anc[:, None, :] + _offsets(stride, k)[None, :, :]
    upper = np.asarray(shapes, dtype=np.float64).reshape(-1, 3)[:, None, :] - 1
    mask = np.all((pts >= 0) & (pts <= upper), axis=2)
    return pts, mask


def nearest_labels(label_map: ArrayLike, points: ArrayLike) -> NDArray[np.int64]:
    """Labels at continuous voxel coordinates by nearest lookup (round half up, clipped)."""
    lab = np.asarray(label_map)
    idx = np.floor(np.asarray(points, dtype=np.float64) + 0.5).astype(np.int64)
    idx = np.clip(idx, 0, np.asarray(lab.shape) - 1)
    return lab[idx[..., 0], idx[..., 1], idx[..., 2]].astype(np.int64)
