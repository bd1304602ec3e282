"""The NLEEP Gaussian mixture: full-covariance EM whose per-component work runs on a thread pool.

The algorithm is scikit-learn's `GaussianMixture(covariance_type="full", n_init=1,
init_params="kmeans")`: k-means labels as the first responsibilities, EM until the mean
log-likelihood changes by less than `tol`, then one last E-step whose responsibilities are the
posteriors. What differs is the arithmetic and the schedule. The cost is 2K products per
iteration: the K covariances, each a symmetric product of (N, D) rows (half the flops of
scikit-learn's general product, and rounded differently: posteriors agree to ~1e-15), and the K
whitened distances, (N, D) by (D, D). Each component's products are independent of the others',
so they are handed to `pool` one component at a time; NumPy releases the GIL inside them. Every
component runs the same operations in the same order whatever the pool, with single-threaded
BLAS, so the posteriors are bit-identical for any number of workers.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from numpy.typing import NDArray
from scipy.special import logsumexp
from sklearn.cluster import KMeans

TOL = 1e-3
"""Convergence threshold on the change of the mean log-likelihood (scikit-learn's default)."""
MAX_ITER = 100
"""EM iterations at most (scikit-learn's default)."""
REG_COVAR = 1e-6
"""Added to every covariance's diagonal (scikit-learn's default)."""


@dataclass
class MixtureFit:
    """Posteriors (N, K) of the fitted mixture, its EM iterations and whether it converged."""

    posteriors: NDArray[np.float64]
    n_iter: int
    converged: bool


def _for_each(pool: Executor | None, fn: Callable[[int], None], n: int) -> None:
    """`fn(k)` for k in range(n), on `pool` when given; re-raises the first error."""
    if pool is None:
        for k in range(n):
            fn(k)
        return
    for _ in pool.map(fn, range(n)):
        pass


class _Mixture:
    """Parameters of a K-component full-covariance mixture and its E and M steps."""

    def __init__(self, x: NDArray[np.float64], n_components: int, pool: Executor | None) -> None:
        self.x, self.k, self.pool = x, n_components, pool
        n, d = x.shape
        self.weights = np.empty(n_components)
        self.means = np.empty((n_components, d))
        self.prec_chol = np.empty((n_components, d, d))
        self._local = threading.local()

    def _scratch(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """This thread's two (N, D) work arrays, kept for every component and step of the fit:
        a fresh array that size costs a page fault per 4 KiB on every use (expensive in VMs)."""
        scratch = getattr(self._local, "arrays", None)
        if scratch is None:
            scratch = self._local.arrays = (np.empty_like(self.x), np.empty_like(self.x))
        return scratch

    def m_step(self, resp: NDArray[np.float64], normalise_by: float | None) -> None:
        """Weights, means and precision Cholesky factors from responsibilities (N, K).

        `normalise_by` divides the weights (the sample count at initialisation); None divides by
        their sum (an EM iteration), as scikit-learn does.
        """
        x, d = self.x, self.x.shape[1]
        nk = resp.sum(axis=0) + 10 * np.finfo(resp.dtype).eps
        means = (resp.T @ x) / nk[:, np.newaxis]
        eye = np.eye(d, dtype=x.dtype)
        prec_chol = self.prec_chol

        def component(k: int) -> None:
            # Σ_k = Σ_n r_nk (x_n - μ_k)(x_n - μ_k)ᵀ / n_k as Wᵀ W of the rows scaled by √r_nk:
            # NumPy runs a product of a matrix with its own transpose as a symmetric rank-N update
            # (BLAS syrk, half the flops of the general product) and releases the GIL meanwhile.
            scaled, _ = self._scratch()
            np.subtract(x, means[k, :], out=scaled)
            scaled *= np.sqrt(resp[:, k])[:, np.newaxis]
            cov = (scaled.T @ scaled) / nk[k]
            cov.flat[:: d + 1] += REG_COVAR
            try:
                chol = scipy.linalg.cholesky(cov, lower=True)
            except np.linalg.LinAlgError:
                raise ValueError(
                    "NLEEP mixture: a component's covariance is singular (collapsed on too few distinct points)"
                ) from None
            prec_chol[k] = scipy.linalg.solve_triangular(chol, eye, lower=True).T

        _for_each(self.pool, component, self.k)
        self.means = means
        self.weights = nk / normalise_by if normalise_by is not None else nk / nk.sum()

    def e_step(self) -> tuple[float, NDArray[np.float64]]:
        """(mean log-likelihood, log responsibilities (N, K)) under the current parameters."""
        x, (n, d) = self.x, self.x.shape
        sq = np.empty((n, self.k))
        means, prec_chol = self.means, self.prec_chol

        def component(k: int) -> None:
            centred, y = self._scratch()
            np.subtract(x, means[k, :], out=centred)
            np.matmul(centred, prec_chol[k], out=y)
            sq[:, k] = np.einsum("nd,nd->n", y, y)

        _for_each(self.pool, component, self.k)
        log_det = np.sum(np.log(prec_chol.reshape(self.k, -1)[:, :: d + 1]), axis=1)
        weighted = -0.5 * (d * math.log(2 * math.pi) + sq) + log_det + np.log(self.weights)
        log_norm = logsumexp(weighted, axis=1)
        with np.errstate(under="ignore"):
            log_resp = weighted - log_norm[:, np.newaxis]
        return float(np.mean(log_norm)), log_resp


def fit_mixture(
    x: NDArray[np.float64], n_components: int, seed: int, *, pool: Executor | None = None
) -> MixtureFit:
    """Fit the mixture to `x` (N, D) from k-means labels seeded by `seed`; posteriors of its last E-step.

    Parameters
    ----------
    x : ndarray of shape (N, D), float64
        The points (validated by the caller).
    n_components : int
        K, at most N.
    seed : int
        Seeds the k-means initialisation (`numpy.random.RandomState(seed)`, as scikit-learn).
    pool : Executor, optional
        Runs the per-component work; the result does not depend on it.

    Returns
    -------
    MixtureFit
    """
    x = np.ascontiguousarray(x)  # row-major rows: the per-component copies and products stay contiguous
    n = x.shape[0]
    labels = KMeans(n_clusters=n_components, n_init=1, random_state=np.random.RandomState(seed)).fit(x).labels_
    resp = np.zeros((n, n_components), dtype=x.dtype)
    resp[np.arange(n), labels] = 1
    mix = _Mixture(x, n_components, pool)
    mix.m_step(resp, normalise_by=float(n))
    lower_bound, converged, n_iter = -np.inf, False, 0
    for n_iter in range(1, MAX_ITER + 1):
        previous = lower_bound
        lower_bound, log_resp = mix.e_step()
        mix.m_step(np.exp(log_resp), normalise_by=None)
        if abs(lower_bound - previous) < TOL:
            converged = True
            break
    _, log_resp = mix.e_step()
    return MixtureFit(np.exp(log_resp), n_iter, converged)
