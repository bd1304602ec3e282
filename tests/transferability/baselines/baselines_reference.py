"""Independent loop-style transcriptions of the published baseline algorithms (test oracle).

REFERENCE TRANSCRIPTIONS, written for the tests from reading the authors' public code; they are
deliberately literal (per-class loops, the same solvers and constants) and share no code with
`transferability.baselines`. Sources:
- thuml/LogME: ``LogME._fit_fixed_point`` (default solver), ``each_evidence`` (ICML solver),
  ``LEEP.py``, ``NCE.py``;
- thuml/Transfer-Learning-Library ``tllib/ranking``: ``h_score``, ``regularized_h_score``,
  ``transrate``, ``negative_conditional_entropy``;
- google-research ``stable_transfer/transferability``: ``gbc.py`` (diagonal), ``leep.py``,
  ``nleep.py`` with ``features_targets_utils.pca_reduction(0.8)``;
- EndoluminalSurgicalVision-IMR/CCFV: ``utils/ccfv.py`` (``cal_w_distance``, ``cal_variety``) and
  the paper's mean over classes and case pairs (``main.py`` compounds instead; also transcribed).
All in float64 (the TensorFlow references run in float32).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.optimize

# --------------------------------------------------------------------------- LogME


def logme_fixed_point(f: np.ndarray, labels: np.ndarray, pad_zero_eigenvalues: bool = True):
    """thuml LogME ``_fit_fixed_point``: mean over classes 0..max(label) of the evidence / N.

    pad_zero_eigenvalues=True applies thuml/LogME PR 24 (issue 23): the log-determinant sums
    over all D eigenvalues, the D - k zero ones included. Returns (score, iterations per class).
    """
    f = f.astype(np.float64)
    n, d = f.shape
    if n > d:
        # truncated_svd: SVD of fᵀf, singular values of f above 1e-10 kept.
        _, s_gram, vh = np.linalg.svd(f.T @ f)
        s = np.sqrt(s_gram)
        u_times_sigma = f @ vh.T
        k = int(np.sum(s > 1e-10))
        s = s[:k]
        vh = vh[:k]
        u = u_times_sigma[:, :k] / s.reshape(1, -1)
    else:
        u, s, vh = np.linalg.svd(f, full_matrices=False)
    s = s.reshape(-1, 1)
    sigma = s**2
    k = sigma.shape[0]
    evidences, iterations = [], []
    for i in range(int(labels.max()) + 1):
        y = (labels == i).astype(np.float64).reshape(-1, 1)
        x = u.T @ y
        x2 = x**2
        res_x2 = (y**2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        used = 0
        for _ in range(11):
            used += 1
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            t_ = alpha / beta
            if abs(t_ - t) / t <= 1e-3:
                break
        logdet = np.sum(np.log(alpha + beta * sigma))
        if pad_zero_eigenvalues:
            logdet += (d - k) * np.log(alpha)
        evidence = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * logdet
            - beta / 2.0 * res2
            - alpha / 2.0 * m2
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
        iterations.append(used)
    return float(np.mean(evidences)), iterations


def logme_icml_each_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """thuml ``each_evidence`` (ICML 2021 solver, full D x D eigen-decomposition), one target."""
    fh = f
    ft = f.T
    d, n = ft.shape
    v, s, vh = np.linalg.svd(ft @ fh, full_matrices=True)
    eps = 1e-5
    alpha, beta = 1.0, 1.0
    lam = alpha / beta
    tmp = vh @ (ft @ y)
    for _ in range(11):
        gamma = (s / (s + lam)).sum()
        m = v @ (tmp * beta / (alpha + beta * s))
        alpha_de = (m * m).sum()
        alpha = gamma / (alpha_de + eps)
        beta_de = ((y - fh @ m) ** 2).sum()
        beta = (n - gamma) / (beta_de + eps)
        new_lam = alpha / beta
        if np.abs(new_lam - lam) / lam < 0.01:
            break
        lam = new_lam
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * s))
        - beta / 2.0 * (beta_de + eps)
        - alpha / 2.0 * (alpha_de + eps)
        - n / 2.0 * np.log(2 * np.pi)
    )
    return float(evidence / n)


def log_evidence_weight_space(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The ICML closed form at given (alpha, beta): D x D determinant and solve, divided by N."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    _, logdet = np.linalg.slogdet(a)
    value = (
        d / 2 * math.log(alpha)
        + n / 2 * math.log(beta)
        - 0.5 * logdet
        - beta / 2 * float(np.sum((y - f @ m) ** 2))
        - alpha / 2 * float(m @ m)
        - n / 2 * math.log(2 * math.pi)
    )
    return value / n


def log_evidence_data_space(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """Marginal likelihood log N(y; 0, I/beta + F Fᵀ/alpha) / N, by direct N x N Cholesky."""
    n = f.shape[0]
    c = np.eye(n) / beta + f @ f.T / alpha
    chol = np.linalg.cholesky(c)
    z = np.linalg.solve(chol, y)
    return -0.5 * (n * math.log(2 * math.pi) + 2 * float(np.sum(np.log(np.diag(chol)))) + float(z @ z)) / n


def exact_max_evidence(f: np.ndarray, y: np.ndarray) -> float:
    """max over (alpha, beta) of `log_evidence_data_space`: multi-start Nelder-Mead in log space."""
    def negative(p: np.ndarray) -> float:
        with np.errstate(over="ignore"):
            alpha, beta = np.exp(p)
        if not (np.isfinite(alpha) and np.isfinite(beta)) or alpha <= 0 or beta <= 0:
            return np.inf
        try:
            return -log_evidence_data_space(f, y, float(alpha), float(beta))
        except np.linalg.LinAlgError:
            return np.inf

    best = None
    for a0 in (-6.0, 0.0, 6.0):
        for b0 in (-3.0, 0.0, 3.0):
            res = scipy.optimize.minimize(
                negative, [a0, b0], method="Nelder-Mead",
                options={"xatol": 1e-12, "fatol": 1e-15, "maxiter": 20000, "maxfev": 40000},
            )
            if best is None or res.fun < best.fun:
                best = res
    return float(-best.fun)


# --------------------------------------------------------------------------- LEEP / NCE / NLEEP


def leep_thuml(probs: np.ndarray, labels: np.ndarray) -> float:
    """thuml ``LEEP``: target classes 0..max(label); NaN when a source column sums to zero."""
    n, c_s = probs.shape
    c_t = int(np.max(labels) + 1)
    normalized = probs / float(n)
    joint = np.zeros((c_t, c_s))
    for i in range(c_t):
        joint[i] = np.sum(normalized[labels == i], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        p_target_given_source = (joint / joint.sum(axis=0, keepdims=True)).T
        prediction = probs @ p_target_given_source
        emp = np.array([row[lab] for row, lab in zip(prediction, labels)])
        return float(np.mean(np.log(emp)))


def leep_google(probs: np.ndarray, labels: np.ndarray) -> float:
    """google-research ``get_leep_score``: divide_no_nan, and -log(C_t) where eep is 0."""
    c_t = int(np.max(labels)) + 1
    onehot = np.eye(c_t)[labels]
    occ = np.einsum("bt,bs->st", onehot, probs)
    occ_s = occ.sum(axis=-1, keepdims=True)
    cond = np.divide(occ, occ_s, out=np.zeros_like(occ), where=occ_s != 0)
    eep = np.sum((probs @ cond) * onehot, axis=-1)
    with np.errstate(divide="ignore"):
        return float(np.mean(np.where(eep > 0, np.log(eep), -np.log(float(c_t)))))


def nce_tllib(source_labels: np.ndarray, target_labels: np.ndarray) -> float:
    """tllib ``negative_conditional_entropy`` (joint by counting, 1e-20 inside the log)."""
    c_t = int(np.max(target_labels) + 1)
    c_s = int(np.max(source_labels) + 1)
    n = len(source_labels)
    joint = np.zeros((c_t, c_s))
    for s, t in zip(source_labels, target_labels):
        joint[int(t), int(s)] += 1.0 / n
    p_z = joint.sum(axis=0, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cond = (joint / p_z).T
    mask = p_z.reshape(-1) != 0
    cond = cond[mask] + 1e-20
    entropy = np.sum(-cond * np.log(cond), axis=1, keepdims=True)
    return float(-np.sum(entropy * p_z.reshape((-1, 1))[mask]))


def nleep_google(features: np.ndarray, labels: np.ndarray, random_state: int) -> float:
    """google-research NLEEP pipeline: PCA(0.8, full) -> GaussianMixture(5 C) -> LEEP (float64)."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    reduced = PCA(n_components=0.8, svd_solver="full").fit_transform(features)
    n_components = int((np.max(labels) + 1) * 5)
    gmm = GaussianMixture(n_components=n_components, random_state=random_state).fit(reduced)
    return leep_google(gmm.predict_proba(reduced), labels)


# --------------------------------------------------------------------------- GBC


def gbc_google(features: np.ndarray, labels: np.ndarray) -> float:
    """google-research ``get_gbc_score`` with gaussian_type='diagonal' (population variance)."""
    stats = {}
    for lab in np.unique(labels):
        cls = features[labels == lab]
        stats[int(lab)] = (cls.mean(axis=0), np.maximum(cls.var(axis=0), 1e-4))
    total = 0.0
    for c1 in stats:
        row = []
        for c2 in stats:
            if c1 == c2:
                continue
            mu1, s1 = stats[c1]
            mu2, s2 = stats[c2]
            avg = (s1 + s2) / 2
            first = np.sum((mu1 - mu2) ** 2 / avg) / 8
            second = np.sum(np.log(avg)) - 0.5 * np.sum(np.log(s1)) - 0.5 * np.sum(np.log(s2))
            row.append(np.exp(-(first + 0.5 * second)))
        total += np.sum(row)
    return float(-total)


# --------------------------------------------------------------------------- H-score family


def _class_mean_matrix(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = np.zeros_like(f)
    for i in range(int(y.max() + 1)):
        if np.any(y == i):
            g[y == i] = np.mean(f[y == i, :], axis=0)
    return g


def hscore_tllib(features: np.ndarray, labels: np.ndarray) -> float:
    """tllib ``h_score``: tr(pinv(cov f, rcond=1e-15) @ cov g)."""
    covf = np.cov(features, rowvar=False)
    covg = np.cov(_class_mean_matrix(features, labels), rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(covf, rcond=1e-15), covg)))


def hscore_google_elementwise(features: np.ndarray, labels: np.ndarray) -> float:
    """google-research ``get_hscore``: trace of the ELEMENTWISE product (not followed; see tests)."""
    def cov(m: np.ndarray) -> np.ndarray:
        z = m - m.mean(axis=0, keepdims=True)
        return z.T @ z / (m.shape[0] - 1)

    return float(np.trace(np.linalg.pinv(cov(features), rcond=1e-5) * cov(_class_mean_matrix(features, labels))))


def ledoit_wolf_paper(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Ledoit & Wolf (2004) shrinkage of the biased covariance, loop over samples.

    m = tr(S)/p, d² = ||S - m I||², b̄² = (1/n²) Σ_k ||x_k x_kᵀ - S||², b² = min(b̄², d²),
    shrinkage = b²/d², with ||A||² = tr(A Aᵀ)/p. Returns (shrinkage, shrunk covariance).
    """
    n, p = x.shape
    x = x - x.mean(axis=0)
    s = x.T @ x / n
    m = np.trace(s) / p
    d2 = np.sum((s - m * np.eye(p)) ** 2) / p
    b2_bar = 0.0
    for k in range(n):
        b2_bar += np.sum((np.outer(x[k], x[k]) - s) ** 2) / p
    b2_bar /= n * n
    shrink = min(b2_bar, d2) / d2
    return float(shrink), (1 - shrink) * s + shrink * m * np.eye(p)


def regularized_hscore_tllib(features: np.ndarray, labels: np.ndarray, use_sklearn: bool) -> float:
    """tllib ``regularized_h_score`` (Ledoit-Wolf from sklearn, or from `ledoit_wolf_paper`)."""
    f = features - np.mean(features, axis=0, keepdims=True)
    if use_sklearn:
        from sklearn.covariance import LedoitWolf

        est = LedoitWolf(assume_centered=False).fit(f)
        alpha, covf_alpha = est.shrinkage_, est.covariance_
    else:
        alpha, covf_alpha = ledoit_wolf_paper(f)
    covg = np.cov(_class_mean_matrix(f, labels), rowvar=False)
    return float(np.trace(np.dot(np.linalg.pinv(covf_alpha, rcond=1e-15), (1 - alpha) * covg)))


def transrate_tllib(features: np.ndarray, labels: np.ndarray, eps: float = 1e-4) -> float:
    """tllib ``transrate``: slogdet of the D x D coding-rate matrices."""
    def coding_rate(z: np.ndarray) -> float:
        n, d = z.shape
        _, rate = np.linalg.slogdet(np.eye(d) + 1 / (n * eps) * z.T @ z)
        return 0.5 * rate

    f = features - np.mean(features, axis=0, keepdims=True)
    c = int(labels.max() + 1)
    return float(coding_rate(f) - sum(coding_rate(f[labels == i]) for i in range(c)) / c)


# --------------------------------------------------------------------------- CCFV


def w_distance_ccfv(f1: np.ndarray, f2: np.ndarray) -> float:
    """CCFV ``cal_w_distance``: np.cov (unbiased) and scipy.linalg.sqrtm of Σ1 Σ2."""
    delta = f1.mean(axis=0) - f2.mean(axis=0)
    cov1 = np.atleast_2d(np.cov(f1.T))
    cov2 = np.atleast_2d(np.cov(f2.T))
    root = scipy.linalg.sqrtm(cov1 @ cov2)
    value = np.sum(delta**2) + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(root)
    return float(np.sqrt(abs(value)))


def trace_sqrtm_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """tr sqrtm(Σ1 Σ2) the way CCFV takes it (scipy.linalg.sqrtm, real part of the trace)."""
    return float(np.real(np.trace(scipy.linalg.sqrtm(cov1 @ cov2))))


def variety_ccfv(matrix: np.ndarray) -> float:
    """CCFV ``cal_variety``: norms expansion, upper triangle, eps 1e-3."""
    eps = 1e-3
    row = np.sum(matrix * matrix, axis=1)
    d2 = row[:, None] + row[None, :] - 2 * matrix @ matrix.T
    inv = 1 / np.sqrt(d2 + eps)
    m = len(inv)
    return float(np.sum(np.triu(inv, k=1)) / m / (m - 1) * 2)


def ccfv_paper(cases: list[dict[str, tuple[np.ndarray, np.ndarray]]], compounded: bool = False) -> float:
    """CCFV = Σ_stages log(V / W); W the mean over foreground classes and case pairs.

    compounded=True reproduces the released ``main.py`` accumulation
    ``w += w / (M²/2) / K`` (for comparison only).
    """
    total = 0.0
    for stage in cases[0]:
        means = np.array([np.mean(case[stage][0], axis=0) for case in cases])
        variety = variety_ccfv(means)
        classes = sorted({int(c) for case in cases for c in np.unique(case[stage][1])} - {0})
        m = len(cases)
        if compounded:
            w = 0.0
            for c in classes:
                for i in range(m):
                    for j in range(i + 1, m):
                        fi, yi = cases[i][stage]
                        fj, yj = cases[j][stage]
                        w += w_distance_ccfv(fi[yi == c], fj[yj == c])
                w += w / (m * m / 2) / len(classes)
        else:
            per_class = []
            for c in classes:
                dists = []
                for i in range(m):
                    for j in range(i + 1, m):
                        fi, yi = cases[i][stage]
                        fj, yj = cases[j][stage]
                        if np.sum(yi == c) >= 2 and np.sum(yj == c) >= 2:
                            dists.append(w_distance_ccfv(fi[yi == c], fj[yj == c]))
                if dists:
                    per_class.append(np.mean(dists))
            w = float(np.mean(per_class))
        total += math.log(variety / w)
    return float(total)
