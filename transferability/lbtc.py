"""LBTC, the local boundary-aware topological consistency of metrics.md §4.

Per boundary patch: a Euclidean MST over the patch's features; leakage ρ is the share of its edges
that join points of different labels. LBTC_e = 1 - mean ρ over the patches holding more than one
label; LBTC = mean over stages. Patches are processed as one batch (one vectorised Prim for all).
Ties between equal distances are broken by (lower index, higher index) of the edge, i.e. the tree
is what Kruskal returns over the pairs i < j stably sorted by distance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._base import blas_single_thread, run_tasks, worker_count
from transferability.mst import batched_prim_edges

_ANCHOR_CHUNK = 128  # patches per batch (one task): bounds the (chunk, P, P) float64 distances


@dataclass(frozen=True)
class LBTCResult:
    """LBTC over stages: `.value` = mean of `.per_stage`; per stage, how many patches counted.

    `patches_skipped[e]` counts patches with fewer than two labels among their in-volume points
    (no boundary to leak across); they do not enter the mean.
    """

    value: float
    per_stage: dict[str, float]
    patches_used: dict[str, int]
    patches_skipped: dict[str, int]
    mean_leakage: dict[str, float]
    leakages: dict[str, NDArray[np.float64]] = field(default_factory=dict, repr=False, compare=False)
    """Per stage, the (A,) leakage of every patch, NaN where skipped (for resampling; not serialised)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view."""
        return {
            "value": self.value,
            "per_stage": dict(self.per_stage),
            "patches_used": dict(self.patches_used),
            "patches_skipped": dict(self.patches_skipped),
            "mean_leakage": dict(self.mean_leakage),
        }


def _check_patches(
    features: ArrayLike, labels: ArrayLike, mask: ArrayLike | None, stage: str
) -> tuple[NDArray[Any], NDArray[np.int64], NDArray[np.bool_]]:
    """Validate one stage's (A, P, D) features, (A, P) labels and (A, P) mask (features not copied)."""
    f = np.asarray(features)
    if f.dtype == object or not (np.issubdtype(f.dtype, np.number) or f.dtype == bool):
        raise ValueError(f"{stage}: features must be numeric, got dtype {f.dtype}")
    if f.ndim != 3 or f.shape[0] < 1 or f.shape[1] < 1 or f.shape[2] < 1:
        raise ValueError(f"{stage}: features must be a non-empty (A, P, D) array, got shape {f.shape}")
    a_n, p_n = f.shape[:2]
    lab = np.asarray(labels)
    if lab.shape != (a_n, p_n):
        raise ValueError(f"{stage}: labels have shape {lab.shape}, features need ({a_n}, {p_n})")
    if np.issubdtype(lab.dtype, np.floating):
        if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
            raise ValueError(f"{stage}: labels must be integer class ids")
    elif not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
        raise ValueError(f"{stage}: labels must be integer class ids, got dtype {lab.dtype}")
    if mask is None:
        m = np.ones((a_n, p_n), dtype=bool)
    else:
        m = np.asarray(mask)
        if m.shape != (a_n, p_n):
            raise ValueError(f"{stage}: mask has shape {m.shape}, features need ({a_n}, {p_n})")
        if m.dtype != bool:
            raise ValueError(f"{stage}: mask must be boolean, got dtype {m.dtype}")
    if np.any(~np.isfinite(f).all(axis=2) & m):
        raise ValueError(f"{stage}: features of in-volume points contain NaN or inf")
    return f, lab.astype(np.int64), m.astype(bool)


def _row_hashes(x: NDArray[np.float64]) -> NDArray[np.uint64]:
    """(A, P) hash of each feature row: wrapping uint64 dot product of its bit pattern with fixed odd keys.

    Integer arithmetic is exact and order-free, so equal rows always hash equal (-0.0 must already be
    +0.0); distinct rows may collide, which `_duplicate_representatives` checks for.
    """
    keys = np.random.default_rng(0x1B7C).integers(0, 2**63, size=x.shape[2], dtype=np.uint64)
    keys = keys * np.uint64(2) + np.uint64(1)
    return np.einsum("apd,d->ap", x.view(np.uint64), keys)


def _duplicate_representatives(x: NDArray[np.float64], m: NDArray[np.bool_]) -> NDArray[np.int64]:
    """(A, P) index of each point's representative: the lowest-indexed in-volume point of its patch
    with an equal feature row (itself when it has none; masked points represent themselves).

    Rows are grouped by hash, then checked for exact equality; a patch where two different rows
    share a hash is grouped by `np.unique` instead.
    """
    a_n, p_n = m.shape
    pos = np.broadcast_to(np.arange(p_n), (a_n, p_n))
    h = _row_hashes(x)
    order = np.lexsort((pos, h, ~m), axis=1)  # in-volume first, then by hash, then by index
    hs = np.take_along_axis(h, order, axis=1)
    ms = np.take_along_axis(m, order, axis=1)
    new_group = np.ones((a_n, p_n), dtype=bool)
    same = (hs[:, 1:] == hs[:, :-1]) & ms[:, 1:]  # in-volume rows sort first: ms[:, 1:] implies ms[:, :-1]
    ai, ki = np.nonzero(same)
    equal = (x[ai, order[ai, ki]] == x[ai, order[ai, ki + 1]]).all(axis=1)
    new_group[ai, ki + 1] = ~equal
    first = np.maximum.accumulate(np.where(new_group, pos, 0), axis=1)
    rep = np.empty_like(order)
    np.put_along_axis(rep, order, np.take_along_axis(order, first, axis=1), axis=1)
    for a in np.unique(ai[~equal]):  # hash collisions between different rows: exact grouping
        valid = np.flatnonzero(m[a])
        _, first_idx, inverse = np.unique(x[a, valid], axis=0, return_index=True, return_inverse=True)
        rep[a] = np.arange(p_n)
        rep[a, valid] = valid[first_idx[inverse.reshape(-1)]]
    return rep


def _patch_sq_distances(f: NDArray[Any], m: NDArray[np.bool_]) -> NDArray[np.float64]:
    """(A, P, P) float64 squared distances per patch (masked points zeroed; norms from the Gram diagonal).

    Symmetric with a zero diagonal. Points with equal feature rows (flat regions, clamped reads)
    take their representative's row and column, so they are one point to the tree: zero apart and
    bitwise-equal distances to every other point (a Gram product at large D would otherwise leave
    rounding noise between them, and that noise, not the lower index, would break their ties).
    """
    x = f.astype(np.float64)
    x[~m] = 0.0
    x += 0.0  # -0.0 -> +0.0: numerically equal rows get equal bit patterns (hashing)
    gram = np.matmul(x, x.transpose(0, 2, 1))
    norms = np.diagonal(gram, axis1=1, axis2=2)
    sq = norms[:, :, None] + norms[:, None, :]
    gram *= 2.0
    sq -= gram
    np.maximum(sq, 0.0, out=sq)
    np.minimum(sq, sq.transpose(0, 2, 1), out=sq)
    p_n = m.shape[1]
    sq[:, np.arange(p_n), np.arange(p_n)] = 0.0
    rep = _duplicate_representatives(x, m)
    dup = np.flatnonzero((rep != np.arange(p_n)).any(axis=1))
    if dup.size:
        r = rep[dup]
        sq[dup] = sq[dup[:, None, None], r[:, :, None], r[:, None, :]]
    return sq


def patch_leakages(
    features: ArrayLike, labels: ArrayLike, mask: ArrayLike | None = None, stage: str = "patches"
) -> NDArray[np.float64]:
    """Leakage ρ of each of A patches, NaN where a patch holds fewer than two labels (skipped)."""
    f, lab, m = _check_patches(features, labels, mask, stage)
    a_n = f.shape[0]
    out = np.full(a_n, np.nan)
    big = np.iinfo(np.int64).max
    masked_hi = np.where(m, lab, np.iinfo(np.int64).min).max(axis=1)
    masked_lo = np.where(m, lab, big).min(axis=1)
    usable = (m.sum(axis=1) >= 2) & (masked_hi != masked_lo)
    idx = np.flatnonzero(usable)

    def run(c0: int) -> None:
        sel = idx[c0 : c0 + _ANCHOR_CHUNK]
        sq = _patch_sq_distances(f[sel], m[sel])
        edges = batched_prim_edges(sq, m[sel])
        present = edges[:, :, 0] >= 0
        rows = np.arange(sel.size)[:, None]
        e0 = np.where(present, edges[:, :, 0], 0)
        e1 = np.where(present, edges[:, :, 1], 0)
        cross = (lab[sel][rows, e0] != lab[sel][rows, e1]) & present
        out[sel] = cross.sum(axis=1) / present.sum(axis=1)

    # Chunks are independent (disjoint rows of `out`): our threads, single-threaded BLAS for the
    # many small per-patch products (a multi-threaded BLAS call per tiny product stalls under load).
    with blas_single_thread():
        run_tasks(run, list(range(0, idx.size, _ANCHOR_CHUNK)), worker_count())
    return out


def leakage(patch_features: ArrayLike, patch_labels: ArrayLike) -> float | None:
    """Share of a patch's MST edges joining different labels; None for a single-label patch.

    `patch_features` is (P, D) for the P in-volume points of one patch, `patch_labels` is (P,).
    """
    f = np.asarray(patch_features)
    if f.ndim != 2:
        raise ValueError(f"patch_features must be a (P, D) array, got shape {f.shape}")
    lab = np.asarray(patch_labels)
    if lab.ndim != 1:
        raise ValueError(f"patch_labels must be 1-D, got shape {lab.shape}")
    rho = patch_leakages(f[None], lab[None], stage="patch")[0]
    return None if math.isnan(rho) else float(rho)


def _per_stage(arg: Any, stage: str, what: str) -> Any:
    if isinstance(arg, Mapping):
        if stage not in arg:
            raise ValueError(f"{what} has no entry for stage {stage!r}")
        return arg[stage]
    return arg


def lbtc(
    patch_features: Mapping[str, ArrayLike],
    patch_labels: Mapping[str, ArrayLike] | ArrayLike,
    mask: Mapping[str, ArrayLike] | ArrayLike | None = None,
    stages: list[str] | None = None,
) -> LBTCResult:
    """LBTC over stages from batched patches (metrics.md §4).

    Parameters
    ----------
    patch_features : mapping of str to array-like of shape (A, P, D_stage)
        Features of the P points of each of the A anchor patches, per stage.
    patch_labels : mapping of str to array-like of shape (A, P), or one such array
        Class of each patch point, per stage or shared by every stage.
    mask : mapping or array-like of shape (A, P), optional
        True where a patch point lies in the volume (`sampling.patch_grid`); others are dropped.
    stages : list of str, optional
        Stages to average; default every stage given.

    Returns
    -------
    LBTCResult
        `.value` in [0, 1] (1 - mean leakage of the local MSTs across class boundaries; higher is
        better), `.per_stage`, and the patches used and skipped per stage.

    Raises
    ------
    ValueError
        When a stage has no patch with two labels (its LBTC is undefined).
    """
    if not isinstance(patch_features, Mapping) or len(patch_features) == 0:
        raise ValueError("patch_features must be a non-empty mapping of stage name -> (A, P, D) features")
    names = list(patch_features) if stages is None else list(stages)
    if not names:
        raise ValueError("stages is empty")
    per_stage: dict[str, float] = {}
    used: dict[str, int] = {}
    skipped: dict[str, int] = {}
    mean_rho: dict[str, float] = {}
    leak: dict[str, NDArray[np.float64]] = {}
    for s in names:
        if s not in patch_features:
            raise ValueError(f"stage {s!r} not in patch_features")
        rho = patch_leakages(
            patch_features[s], _per_stage(patch_labels, s, "patch_labels"), _per_stage(mask, s, "mask"), stage=s
        )
        leak[s] = rho
        ok = ~np.isnan(rho)
        used[s] = int(ok.sum())
        skipped[s] = int(rho.size - used[s])
        if used[s] == 0:
            raise ValueError(f"stage {s!r}: all {rho.size} patches hold a single label; LBTC is undefined")
        mean_rho[s] = math.fsum(rho[ok].tolist()) / used[s]
        per_stage[s] = 1.0 - mean_rho[s]
    return LBTCResult(
        value=math.fsum(per_stage.values()) / len(per_stage),
        per_stage=per_stage,
        patches_used=used,
        patches_skipped=skipped,
        mean_leakage=mean_rho,
        leakages=leak,
    )
