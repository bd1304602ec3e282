"""Input checks shared by every scoring function: clear errors at the edge, float64 inside."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def as_points(points: ArrayLike, name: str = "points", min_points: int = 2) -> NDArray[np.float64]:
    """Return `points` as a finite (N, D) float64 array with N >= min_points, or raise ValueError."""
    arr = np.asarray(points)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) array, got shape {arr.shape}")
    if arr.shape[0] < min_points:
        raise ValueError(f"{name} needs at least {min_points} points, got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} needs at least one feature dimension, got shape {arr.shape}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def as_labels(labels: ArrayLike, n: int, name: str = "labels", min_classes: int = 1) -> NDArray[np.int64]:
    """Return integer class labels of length `n` as int64, or raise ValueError."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n} points")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer class ids")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{name} must be integer class ids, got dtype {arr.dtype}")
    out = arr.astype(np.int64)
    n_classes = np.unique(out).size
    if n_classes < min_classes:
        raise ValueError(f"{name} holds {n_classes} class(es); at least {min_classes} are needed")
    return out


def check_probabilities(probs: ArrayLike, name: str = "probabilities") -> NDArray[np.float64]:
    """Return an (N, C) row-stochastic float64 array (rows summing to 1 within 1e-6), or raise."""
    arr = as_points(probs, name=name, min_points=1)
    if np.any(arr < 0):
        raise ValueError(f"{name} must be non-negative")
    if not np.allclose(arr.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError(f"{name} rows must sum to 1")
    return arr
