"""Shared plumbing for the baselines: edge validation, single-threaded BLAS, and the private cores
(LEEP, NCE, the NLEEP mixture) that the public functions and `score_all` both run.

The baselines run many small dense factorisations; on a shared CPU, multi-threaded BLAS on
such matrices is slower and its reductions may depend on the thread count. Every public
baseline therefore runs with BLAS/OpenMP pools limited to one thread, which makes results
bit-identical across machines with different core counts. Parallelism comes from running
independent pieces (whole metrics, mixture components) on Python threads instead, each of them
single-threaded (`score_all`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, ParamSpec, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from transferability._validation import as_labels, as_points
from transferability.baselines._gmm import fit_mixture

P = ParamSpec("P")
R = TypeVar("R")


class _OneThreadRegion:
    """BLAS and OpenMP limited to one thread while any caller is inside, from any thread.

    OpenBLAS's thread count is process-wide, so the BLAS limit is reference-counted: the first
    entrant sets it and the last one out restores it. OpenMP's is per thread, so each thread's
    outermost entry limits its own and restores it on the way out. Nested calls (the metrics
    `score_all` runs on its pool) therefore neither lift the limit early nor pay for it twice.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._blas: Any = None
        self._local = threading.local()

    def __enter__(self) -> None:
        self._enter_thread()
        with self._lock:
            if self._depth == 0:
                self._blas = threadpool_limits(limits=1, user_api="blas")
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                self._blas.restore_original_limits()
                self._blas = None
        self._local.depth -= 1
        if self._local.depth == 0:
            self._local.openmp.restore_original_limits()
            del self._local.openmp

    def _enter_thread(self) -> None:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._local.openmp = threadpool_limits(limits=1, user_api="openmp")
        self._local.depth = depth + 1

    def pin_thread(self) -> None:
        """Limit this thread's OpenMP to one thread for the rest of its life (a pool's initializer:
        its threads only ever run inside a region that holds the BLAS limit)."""
        self._enter_thread()


_ONE_THREAD = _OneThreadRegion()


def single_threaded(func: Callable[P, R]) -> Callable[P, R]:
    """Run `func` with BLAS and OpenMP thread pools limited to one thread (see module doc)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with _ONE_THREAD:
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


PCA_VARIANCE = 0.8
"""Fraction of variance kept before the NLEEP mixture (google-research's ``pca_reduction``)."""
COMPONENTS_PER_CLASS = 5
"""Gaussian components per target class (Li et al. 2021)."""


def leep_core(probs: NDArray[np.float64], codes: NDArray[np.int64], n_classes: int) -> float:
    """LEEP of validated probabilities and class codes (shared by `leep`, `nleep` and `score_all`)."""
    n = probs.shape[0]
    joint = one_hot(codes, n_classes).T @ probs / n  # (C, Z): P̂(y, z)
    marginal = joint.sum(axis=0)  # P̂(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P̂(y | z)
    # eep_i = Σ_z θ_iz P̂(y_i | z) >= θ_iz² / n > 0 for the largest θ_iz, so the log is finite.
    eep = np.einsum("nz,nz->n", probs, cond[codes])
    return float(np.mean(np.log(eep)))


def nce_core(z_codes: NDArray[np.int64], n_source: int, y_codes: NDArray[np.int64], n_classes: int) -> float:
    """-H(Y | Z) of validated source and target codes (shared by `nce` and `score_all`)."""
    n = z_codes.size
    counts = np.bincount(y_codes * n_source + z_codes, minlength=n_classes * n_source)
    joint = counts.reshape(n_classes, n_source) / n
    marginal = joint.sum(axis=0)
    nz = joint > 0
    cond = joint[nz] / np.broadcast_to(marginal, joint.shape)[nz]
    return float(np.sum(joint[nz] * np.log(cond)))


def pca_reduce(feats: NDArray[np.float64], variance: float) -> NDArray[np.float64]:
    """Centred `feats` (N, D) projected on the fewest principal axes that explain more than
    `variance` of the total: scikit-learn's ``PCA(n_components=variance, svd_solver="full")``,
    the same axes, count and signs (each axis's largest-magnitude entry is positive).

    The axes come from the eigendecomposition of the D x D scatter matrix when N >= D, about 4x
    faster than the SVD of the N x D data at N = 4096, D = 320 and equal to it to ~1e-12; the
    SVD when N < D.
    """
    centred = feats - feats.mean(axis=0)
    if centred.shape[0] >= centred.shape[1]:
        eigval, eigvec = np.linalg.eigh(centred.T @ centred)  # ascending
        spectrum, axes = np.clip(eigval[::-1], 0.0, None), eigvec[:, ::-1]
    else:
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        spectrum, axes = singular**2, vt.T
    explained = np.cumsum(spectrum) / spectrum.sum()
    keep = min(int(np.searchsorted(explained, variance, side="right")) + 1, spectrum.size)
    basis = axes[:, :keep]
    basis = basis * np.sign(basis[np.argmax(np.abs(basis), axis=0), np.arange(keep)])
    return centred @ basis


def fit_gmm(
    feats: NDArray[np.float64], n_classes: int, seed: int, pool: Executor | None = None
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """Posteriors of the NLEEP mixture and a summary (PCA dims, components, EM steps, convergence).

    `pool` runs the mixture's per-component work (`_gmm`); the posteriors do not depend on it.
    """
    n_components = COMPONENTS_PER_CLASS * n_classes
    if feats.shape[0] < n_components:
        raise ValueError(
            f"NLEEP needs at least {n_components} points for {n_components} mixture components, "
            f"got {feats.shape[0]}"
        )
    if not np.any(np.ptp(feats, axis=0) > 0):
        raise ValueError("features are constant: PCA/NLEEP undefined")
    reduced = pca_reduce(feats, PCA_VARIANCE)
    fit = fit_mixture(reduced, n_components, seed, pool=pool)
    info = {
        "pca_dims": int(reduced.shape[1]),
        "n_components": n_components,
        "em_iterations": fit.n_iter,
        "converged": fit.converged,
    }
    return fit.posteriors, info
