"""Shared plumbing for the baselines: edge validation and single-threaded BLAS.

The baselines run many small dense factorisations; on a shared CPU, multi-threaded BLAS on
such matrices is slower and its reductions may depend on the thread count. Every public
baseline therefore runs with BLAS/OpenMP pools limited to one thread, which makes results
bit-identical across machines with different core counts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from transferability._validation import as_labels, as_points

P = ParamSpec("P")
R = TypeVar("R")


def single_threaded(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` with BLAS and OpenMP thread pools limited to one thread (see module doc)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with threadpool_limits(limits=1):
            return func(*args, **kwargs)

    return wrapper


def features_and_classes(
    features: ArrayLike, labels: ArrayLike, min_classes: int = 2
) -> tuple[NDArray[np.float64], NDArray[np.int64], int]:
    """Validate (N, D) features and N labels; return float64 features, class codes 0..C-1, C.

    Labels are categorical: any integer ids, mapped to 0..C-1 in sorted order. Classes absent
    from `labels` do not exist for the metric (the reference codes assume ids 0..max and some of
    them break on gaps).
    """
    feats = as_points(features, name="features")
    codes, n_classes = class_codes(labels, feats.shape[0], min_classes=min_classes)
    return feats, codes, n_classes


def class_codes(
    labels: ArrayLike, n: int, name: str = "labels", min_classes: int = 2
) -> tuple[NDArray[np.int64], int]:
    """Map validated integer labels of length `n` to codes 0..C-1; return (codes, C)."""
    lab = as_labels(labels, n, name=name, min_classes=min_classes)
    uniq, codes = np.unique(lab, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), int(uniq.size)


def one_hot(codes: NDArray[np.int64], n_classes: int) -> NDArray[np.float64]:
    """(N, C) float64 indicator matrix of class codes."""
    out = np.zeros((codes.size, n_classes), dtype=np.float64)
    out[np.arange(codes.size), codes] = 1.0
    return out


def class_means(
    feats: NDArray[np.float64], codes: NDArray[np.int64], n_classes: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-class feature means (C, D) and class counts (C,)."""
    counts = np.bincount(codes, minlength=n_classes).astype(np.float64)
    sums = one_hot(codes, n_classes).T @ feats
    return sums / counts[:, None], counts
