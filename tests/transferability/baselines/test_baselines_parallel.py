"""score_all on a thread pool: the NLEEP PCA and mixture agree with scikit-learn's, values bit-identical for any n_jobs."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_info

from baselines_data import class_gaussians
from transferability.baselines import score_all, score_all_with_diagnostics
from transferability.baselines._common import _ONE_THREAD, PCA_VARIANCE, pca_reduce, single_threaded
from transferability.baselines._gmm import fit_mixture


def _threads() -> dict[str, list[int]]:
    """This thread's view of the thread pools' sizes, by API (BLAS is process-wide, OpenMP per thread)."""
    out: dict[str, list[int]] = {"blas": [], "openmp": []}
    for lib in threadpool_info():
        out.setdefault(lib["user_api"], []).append(lib["num_threads"])
    return out


def _reduced(seed: int, n: int, d: int, n_classes: int) -> np.ndarray:
    feats, _ = class_gaussians(n, d, n_classes, seed, separation=1.0)
    return PCA(n_components=0.8, svd_solver="full").fit_transform(feats)


@pytest.mark.parametrize("seed,n,d,classes", [(0, 600, 24, 3), (3, 900, 40, 4)])
@pytest.mark.parametrize("workers", [None, 1, 3])
def test_mixture_agrees_with_scikit_learn(seed: int, n: int, d: int, classes: int, workers: int | None) -> None:
    """Same k-means start, same EM, same stopping rule: scikit-learn's posteriors to rounding (the
    covariances are a symmetric product, not the general one), whatever runs the components."""
    x = _reduced(seed, n, d, classes)
    k = 5 * classes
    reference = GaussianMixture(n_components=k, random_state=seed).fit(x)
    pool = ThreadPoolExecutor(workers) if workers else None
    try:
        with _ONE_THREAD:
            ours = fit_mixture(x, k, seed, pool=pool)
            expected = reference.predict_proba(x)
    finally:
        if pool is not None:
            pool.shutdown()
    assert ours.n_iter == reference.n_iter_ and ours.converged == reference.converged_
    assert ours.n_iter > 1  # EM really iterated: the comparison covers the M-step, not just the start
    np.testing.assert_allclose(ours.posteriors, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("n,d", [(700, 40), (30, 90), (64, 64)])
def test_pca_agrees_with_scikit_learn(n: int, d: int) -> None:
    """The scatter-matrix route (N >= D) and the SVD route (N < D) keep scikit-learn's number of
    axes, with its signs, and project to the same coordinates."""
    rng = np.random.default_rng(n + d)
    rotation, _ = np.linalg.qr(rng.normal(size=(d, d)))
    x = 3.0 + (rng.normal(size=(n, d)) * np.arange(1, d + 1) ** -0.5) @ rotation
    expected = PCA(n_components=PCA_VARIANCE, svd_solver="full").fit_transform(x)
    ours = pca_reduce(x, PCA_VARIANCE)
    assert ours.shape == expected.shape and 1 < ours.shape[1] < min(n, d)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def _samples(seed: int = 0, n: int = 1200, d: int = 24, n_cases: int = 5):
    feats, labels = class_gaussians(n, d, 4, seed, separation=1.5)
    return feats, labels, np.arange(n) % n_cases


def test_values_and_diagnostics_do_not_depend_on_the_thread_count() -> None:
    feats, labels, cases = _samples()
    serial = score_all_with_diagnostics(feats, labels, cases, seed=1, n_jobs=1)
    assert len(serial[0]) == 9 and serial[1]["omitted"] == {}
    for jobs in (2, 3, 8, None):
        parallel = score_all_with_diagnostics(feats, labels, cases, seed=1, n_jobs=jobs)
        assert parallel[0] == serial[0]  # float equality: bit-identical
        assert json.dumps(parallel[1]) == json.dumps(serial[1])  # the same keys in the same order too


def test_omissions_are_the_same_on_the_pool() -> None:
    """A metric undefined for its input is omitted with its reason, on the pool as in series."""
    feats, labels, _ = _samples(2, n=12, d=6)  # 12 points < 20 mixture components; one case only
    one_case = np.zeros(12, dtype=int)
    serial = score_all_with_diagnostics(feats, labels, one_case, n_jobs=1)
    parallel = score_all_with_diagnostics(feats, labels, one_case, n_jobs=4)
    assert set(serial[1]["omitted"]) == {"nleep", "leep", "nce", "ccfv"}
    assert parallel[0] == serial[0]
    assert parallel[1]["omitted"] == serial[1]["omitted"]


def test_bad_n_jobs_is_refused() -> None:
    feats, labels, cases = _samples(n=200)
    with pytest.raises(ValueError, match="n_jobs"):
        score_all(feats, labels, cases, n_jobs=0)


def test_one_thread_region_is_shared_and_restored() -> None:
    """BLAS stays at one thread while the outer caller is inside, even after a nested call from
    another thread has left, and comes back after the last; each thread's OpenMP is limited while
    it is inside and restored when it leaves."""
    before = _threads()
    seen: dict[str, dict[str, list[int]]] = {}

    @single_threaded
    def nested() -> None:
        seen["nested"] = _threads()

    def other_thread() -> None:
        seen["other_before"] = _threads()
        nested()
        seen["other_after"] = _threads()

    with _ONE_THREAD:
        seen["outer"] = _threads()
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join(10)
        seen["outer_after_nested"] = _threads()
    assert before["blas"], "no BLAS library loaded: nothing was tested"
    assert set(seen["outer"]["blas"] + seen["nested"]["blas"] + seen["outer_after_nested"]["blas"]) == {1}
    assert set(seen["outer"]["openmp"] + seen["nested"]["openmp"]) <= {1}
    assert seen["other_after"]["openmp"] == seen["other_before"]["openmp"]  # that thread's own limit was lifted
    assert set(seen["other_after"]["blas"]) == {1}  # the outer caller is still inside
    assert _threads() == before


def test_pool_threads_run_openmp_single_threaded() -> None:
    """The pool's threads are pinned to one OpenMP thread (its limit is per thread)."""
    feats, labels, cases = _samples(n=300)
    seen: list[dict[str, list[int]]] = []
    import transferability.baselines.score as score_module

    original = score_module.gbc

    def spying_gbc(*args, **kwargs):
        seen.append(_threads())
        return original(*args, **kwargs)

    score_module.gbc = spying_gbc
    try:
        score_all(feats, labels, cases, n_jobs=2)
    finally:
        score_module.gbc = original
    assert seen and threading.current_thread() is threading.main_thread()
    assert set(seen[0]["blas"]) == {1} and set(seen[0]["openmp"]) <= {1}
