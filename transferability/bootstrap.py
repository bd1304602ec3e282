"""Uncertainty over pilot cases: half-sampling replicates of GRTD and LBTC (docs/decisions.md).

A replicate keeps a random half of the pilot cases (m = floor(M / 2) of M, without replacement,
the same draws for every model: they depend only on M, the seed and B) and recomputes the score
from the sampled points and anchor patches of those cases: exact MSTs, the replicate's own
distance quantile q. Resampling with replacement would duplicate a case's points and put
zero-length edges into the trees (biasing GRTD up); a half-sample has no duplicates.

A half-sample holds about N / 2 points, which moves GRTD's level, so replicates are used through
their spread: the pseudo-value of replicate r is `full + c k (value_r - mean(value))`, where
c = sqrt(m / (M - m)) turns the variance of a mean over m of M cases (without replacement) into
the unbiased variance estimate s^2 / M of the mean over all M, and k = t(0.975, M - 1) / z(0.975)
widens the spread as a t interval does: with few cases the spread itself is uncertain. Its
degrees of freedom are n_eff - 1, n_eff = (sum n_a)^2 / sum n_a^2 the effective number of cases
(Kish) from the points (GRTD) or patches (LBTC) each case holds. Without k the coverage simulation
(bench/bootstrap_coverage.py) undercovers: 91.5% for GRTD and 87% for LBTC at M = 10. Intervals and rank probabilities come from the
pseudo-values.

GRTD replicates stay exact and cheap because a replicate's trees are found among few candidate
edges: for cases S, MST(S) uses only edges of MST(case a) for a in S and cross-case edges of
MST(case a + case b) for a < b in S (cycle property), and the penalised tree of G_Y+ uses only the
per-class versions of those plus the cross-class edges of MST(S). Those small trees are built once
per stage; each replicate is then two sparse Kruskal runs and an order-statistic lookup.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._order_stats import _lerp, upper_order_statistics
from transferability._validation import as_labels, as_points
from transferability.grtd import _dense_prim_weight
from transferability.mst import Precision, edge_lengths, prim_edges, squared_distance_buffer

SCHEME = "half-sampling"
DEFAULT_REPLICATES = 200
_BAND = (0.5, 0.995)  # quantiles of all distances bounding the band kept for replicate quantiles
_BAND_SAMPLE = 200_000  # random pairs the band's ends are estimated from
_BINS = 1024  # bins over the band (a replicate's order statistic is selected inside one bin)


class BootstrapError(ValueError):
    """The pilot set cannot be resampled (a single case)."""


def subset_size(n_cases: int) -> int:
    """Cases per half-sample: floor(M / 2); BootstrapError below two cases."""
    if n_cases < 2:
        raise BootstrapError("a pilot set of one case cannot be resampled: no interval is reported")
    return n_cases // 2


def variance_factor(n_cases: int) -> float:
    """c = sqrt(m / (M - m)): half-sample spread -> full-sample spread (exact, in variance, for a mean).

    Over all m-subsets, the subset mean varies as (s^2 / m)(1 - m / M); times c^2 that is s^2 / M.
    """
    m = subset_size(n_cases)
    return math.sqrt(m / (n_cases - m))


def effective_cases(per_case_counts: ArrayLike) -> float:
    """Kish's effective number of cases, (sum n_a)^2 / sum n_a^2 over the cases holding any points.

    A score is a weighted mean over cases (weights: each case's points or patches); unequal weights
    leave fewer cases' worth of information than M, so the spread is less certain."""
    n = np.asarray(per_case_counts, dtype=np.float64)
    n = n[n > 0]
    if n.size == 0:
        return 0.0
    return float(n.sum() ** 2 / np.square(n).sum())


def _t_quantile(n_effective: float, level: float) -> float:
    """t((1 + level) / 2) with n_eff - 1 degrees of freedom (at least 1)."""
    from scipy.stats import t

    return float(t.ppf((1.0 + level) / 2.0, max(float(n_effective) - 1.0, 1.0)))


def small_sample_factor(n_effective: float, level: float = 0.95) -> float:
    """k = t((1 + level) / 2, n_eff - 1) / z((1 + level) / 2): a t interval's width over a normal one's,
    with the degrees of freedom of `n_effective` cases (at least 1)."""
    from scipy.stats import norm

    return _t_quantile(n_effective, level) / float(norm.ppf((1.0 + level) / 2.0))


def spread_factor(n_cases: int, n_effective: float | None = None, level: float = 0.95) -> float:
    """c k: what a replicate's deviation from the replicate mean is multiplied by (module docstring);
    k uses `n_effective` cases (default: all M count equally)."""
    return variance_factor(n_cases) * small_sample_factor(n_cases if n_effective is None else n_effective, level)


def case_subsets(n_cases: int, n_replicates: int = DEFAULT_REPLICATES, seed: int = 0) -> NDArray[np.bool_]:
    """(B, M) masks: replicate r keeps the cases where row r is True (m of M, uniformly, seeded).

    Depends only on (M, B, seed), so every model of a ranking is resampled with the same draws.
    """
    if n_replicates < 1:
        raise ValueError("n_replicates must be >= 1")
    m = subset_size(n_cases)
    rng = np.random.default_rng([seed, n_cases, 0xB007])
    masks = np.zeros((n_replicates, n_cases), dtype=bool)
    for r in range(n_replicates):
        masks[r, rng.choice(n_cases, size=m, replace=False)] = True
    return masks


def draws_fingerprint(masks: NDArray[np.bool_]) -> str:
    """Short sha256 of the draws: replicates of two models fuse only when their fingerprints agree."""
    return hashlib.sha256(np.packbits(masks, axis=1).tobytes() + str(masks.shape).encode()).hexdigest()[:16]


def pseudo_values(full: float, replicates: ArrayLike, n_cases: int, n_effective: float | None = None) -> NDArray[np.float64]:
    """`full + c k (value_r - mean)`: replicate values recentred on the full-set score, spread rescaled.

    NaN replicates (undefined on their half) stay NaN and are left out of the mean.
    """
    v = np.asarray(replicates, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return np.full(v.shape, np.nan)
    centre = math.fsum(v[ok].tolist()) / int(ok.sum())
    return np.where(ok, full + spread_factor(n_cases, n_effective) * (v - centre), np.nan)


def score_interval(
    full: float, replicates: ArrayLike, n_cases: int, n_effective: float | None = None, level: float = 0.95
) -> list[float] | None:
    """t interval of one model's score: `full ± t((1 + level) / 2, n_eff - 1) · c · sd(value_r)`.

    c · sd(value_r) is the half-sampling standard error (exact in variance for a mean over cases).
    Preferred to percentiles of the pseudo-values for a single score: with few cases there are few
    distinct halves (10 for M = 5), and their extreme values are a poor 95% bound (the coverage
    simulation: 91.5% with percentiles against 95.5% with this interval, GRTD at M = 5). None when
    no replicate is defined.
    """
    v = np.asarray(replicates, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    se = variance_factor(n_cases) * float(np.std(v))
    half = _t_quantile(n_cases if n_effective is None else n_effective, level) * se
    return [full - half, full + half]


# ---------------------------------------------------------------------------------------------
# LBTC: per-anchor leakages are local to one case, so a replicate is a mean over its anchors.


def lbtc_replicates(
    leakages: Mapping[str, ArrayLike], anchor_cases: ArrayLike, masks: NDArray[np.bool_], stages: Sequence[str] | None = None
) -> NDArray[np.float64]:
    """(B,) LBTC of each replicate: per stage 1 - mean leakage over the used patches of its cases.

    `leakages[stage]` is (A,) with NaN for skipped patches (`lbtc.patch_leakages`); a replicate
    with no used patch in a stage is NaN.
    """
    cases = np.asarray(anchor_cases, dtype=np.int64)
    names = list(leakages) if stages is None else list(stages)
    per_stage = []
    for s in names:
        rho = np.asarray(leakages[s], dtype=np.float64)
        if rho.shape != cases.shape:
            raise ValueError(f"{s}: {rho.size} leakages for {cases.size} anchors")
        used = np.isfinite(rho)
        member = masks[:, cases] & used[None, :]  # (B, A)
        count = member.sum(axis=1)
        total = member.astype(np.float64) @ np.where(used, rho, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_stage.append(np.where(count > 0, 1.0 - total / np.maximum(count, 1), np.nan))
    return np.mean(np.stack(per_stage), axis=0)


# ---------------------------------------------------------------------------------------------
# GRTD


def _kruskal_weight(
    n_nodes: int, i: NDArray[np.int64], j: NDArray[np.int64], w: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.int64], int]:
    """Minimum spanning forest of a sparse graph (edges i < j, no repeats): tree endpoints and size.

    scipy reads a stored 0 as "no edge", so the weights (non-negative) are shifted by +1: the order
    of edges, hence the tree, does not change.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree

    g = coo_matrix((w + 1.0, (i, j)), shape=(n_nodes, n_nodes)).tocsr()
    t = minimum_spanning_tree(g).tocoo()
    return t.row.astype(np.int64), t.col.astype(np.int64), int(t.nnz)


@dataclass
class _Block:
    """Distances between cases a <= b (a == b: the strict upper triangle), near the quantile band."""

    size: int
    below: int
    band: NDArray[Any]  # squared distances in the band, grouped by bin (unsorted inside a bin)
    offsets: NDArray[np.int64]  # (bins + 1,) bin starts in `band`


class GRTDStageReplicates:
    """One stage's sampled features prepared for fast exact GRTD on any subset of cases.

    Parameters mirror `grtd.grtd_stage_details`; `cases` gives each point's case (0..M-1).
    """

    def __init__(
        self,
        features: ArrayLike,
        labels: ArrayLike,
        cases: ArrayLike,
        lam: float = 1.0,
        quantile: float = 0.9,
        variant: str = "penalised",
        precision: Precision = "float32",
    ) -> None:
        if variant not in ("contracted", "penalised"):
            raise ValueError(f"GRTD variant must be contracted or penalised, got {variant!r}")
        x = as_points(features, name="features")
        y = as_labels(labels, x.shape[0], min_classes=1)
        c = np.asarray(cases, dtype=np.int64)
        if c.shape != y.shape:
            raise ValueError("cases must give one case index per point")
        order = np.lexsort((y, c))
        self.x, self.y, self.case = x[order], y[order], c[order]
        self.lam, self.quantile, self.variant, self.precision = float(lam), float(quantile), variant, precision
        self.band_misses = 0  # replicates whose quantile fell outside the pre-sorted band
        self.n_cases = int(c.max()) + 1 if c.size else 0
        self.classes = np.unique(self.y)
        bounds = np.searchsorted(self.case, np.arange(self.n_cases + 1))
        self.ranges = [(int(bounds[a]), int(bounds[a + 1])) for a in range(self.n_cases)]
        sq, self.scale = squared_distance_buffer(self.x, precision)
        self._build_trees(sq)
        self._build_quantile_blocks(sq)
        if variant == "contracted":
            self._build_bridges(sq)
        del sq

    # -- precomputation ------------------------------------------------------------------------
    def _tree(self, sq: NDArray[Any], *spans: tuple[int, int]) -> NDArray[np.int64]:
        """MST edges (global indices, i < j) over the points of one or two index ranges (dense Prim
        on their sub-buffer, assembled from slices: every tree here spans at most two ranges)."""
        idx = np.concatenate([np.arange(s, e) for s, e in spans])
        if idx.size < 2:
            return np.zeros((0, 2), dtype=np.int64)
        if len(spans) == 1:
            sub = sq[spans[0][0] : spans[0][1], spans[0][0] : spans[0][1]]
        else:
            (s0, e0), (s1, e1) = spans
            sub = np.block([[sq[s0:e0, s0:e0], sq[s0:e0, s1:e1]], [sq[s1:e1, s0:e0], sq[s1:e1, s1:e1]]])
        e = idx[prim_edges(sub)]
        return np.sort(e, axis=1)

    def _class_spans(self, a: int) -> list[tuple[int, int]]:
        """Index range of each class (in `self.classes` order) inside case a (points sort by case, label)."""
        s, e = self.ranges[a]
        cuts = s + np.searchsorted(self.y[s:e], self.classes)
        ends = np.append(cuts[1:], e)
        return [(int(c0), int(c1)) for c0, c1 in zip(cuts, ends)]

    def _with_lengths(self, e: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        return e, edge_lengths(self.x, e)

    def _build_trees(self, sq: NDArray[Any]) -> None:
        """Candidate edges and their float64 lengths: whole-case and per-class trees of each case and
        of each pair of cases (only the edges crossing the pair's cases are kept from the latter)."""
        m = self.n_cases
        spans = [self._class_spans(a) for a in range(m)]
        pairs = [(a, b) for a in range(m) for b in range(a + 1, m)]
        requests: list[tuple[tuple[int, int], ...]] = [(self.ranges[a],) for a in range(m)]
        requests += [(self.ranges[a], self.ranges[b]) for a, b in pairs]
        if self.variant == "penalised":  # the per-class trees serve only G_Y+
            requests += [(sp,) for a in range(m) for sp in spans[a]]
            requests += [(spans[a][k], spans[b][k]) for a, b in pairs for k in range(self.classes.size)]
        trees = (self._tree(sq, *spans) for spans in requests)
        self.x_single = [self._with_lengths(next(trees)) for _ in range(m)]
        self.x_cross: dict[tuple[int, int], tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
        for p in pairs:
            self.x_cross[p] = self._with_lengths(self._crossing(next(trees)))
        self.y_single = []
        self.y_cross: dict[tuple[int, int], tuple[NDArray[np.int64], NDArray[np.float64]]] = {}
        if self.variant == "penalised":
            self.y_single = [self._with_lengths(np.concatenate([next(trees) for _ in spans[a]])) for a in range(m)]
            for p in pairs:
                self.y_cross[p] = self._with_lengths(self._crossing(np.concatenate([next(trees) for _ in self.classes])))

    def _crossing(self, t: NDArray[np.int64]) -> NDArray[np.int64]:
        """The edges of `t` that join two different cases."""
        return t[self.case[t[:, 0]] != self.case[t[:, 1]]]

    def _block_values(self, sq: NDArray[Any], a: int, b: int) -> NDArray[Any]:
        sa, ea = self.ranges[a]
        sb, eb = self.ranges[b]
        blk = sq[sa:ea, sb:eb]
        return blk[np.triu_indices(ea - sa, 1)] if a == b else blk.ravel()

    def _build_quantile_blocks(self, sq: NDArray[Any]) -> None:
        """Per block of cases: how many distances lie below the band, and the band's values by bin.

        The band only has to hold the replicates' quantiles; its ends come from a sample of the
        pairs (a replicate whose quantile falls outside it is recomputed from its own buffer).
        """
        n = self.x.shape[0]
        rng = np.random.default_rng(0)
        i = rng.integers(0, n, _BAND_SAMPLE)
        j = rng.integers(0, n, _BAND_SAMPLE)
        keep = i != j
        lo, hi = (sq.dtype.type(v) for v in np.quantile(sq[i[keep], j[keep]], _BAND))
        width = float(hi) - float(lo)
        self.band_lo, self.bin_scale = float(lo), (_BINS / width if width > 0 else 0.0)
        self.blocks: dict[tuple[int, int], _Block] = {}
        for a in range(self.n_cases):
            for b in range(a, self.n_cases):
                v = self._block_values(sq, a, b)
                inside = v[(v >= lo) & (v <= hi)]
                bins = np.minimum(((inside - self.band_lo) * self.bin_scale).astype(np.int64), _BINS - 1)
                order = np.argsort(bins.astype(np.int16), kind="stable")  # a radix sort: O(n)
                offsets = np.zeros(_BINS + 1, dtype=np.int64)
                offsets[1:] = np.cumsum(np.bincount(bins, minlength=_BINS))
                self.blocks[(a, b)] = _Block(int(v.size), int(np.count_nonzero(v < lo)), inside[order], offsets)

    def _build_bridges(self, sq: NDArray[Any]) -> None:
        """Per block of cases and pair of classes, the smallest squared distance and its endpoints."""
        self.bridges: dict[tuple[int, int], dict[tuple[int, int], tuple[float, int, int]]] = {}
        members = [[np.arange(*sp) for sp in self._class_spans(a)] for a in range(self.n_cases)]
        k_n = self.classes.size
        for a in range(self.n_cases):
            for b in range(a, self.n_cases):
                found: dict[tuple[int, int], tuple[float, int, int]] = {}
                for k1 in range(k_n):
                    for k2 in range(k1 + 1, k_n):
                        for p, q in ((members[a][k1], members[b][k2]), (members[a][k2], members[b][k1])):
                            if p.size == 0 or q.size == 0:
                                continue
                            sub = sq[np.ix_(p, q)]
                            r, cc = np.unravel_index(int(sub.argmin()), sub.shape)
                            cand = (float(sub[r, cc]), int(p[r]), int(q[cc]))
                            if (k1, k2) not in found or cand[0] < found[(k1, k2)][0]:
                                found[(k1, k2)] = cand
                self.bridges[(a, b)] = found

    # -- one replicate -------------------------------------------------------------------------
    def _order_stats(self, chosen: list[int], ranks: Sequence[int]) -> list[float] | None:
        """Squared distances at `ranks` among the chosen cases' pairs; None when outside the band."""
        keys = [(a, b) for i, a in enumerate(chosen) for b in chosen[i:]]
        blocks = [self.blocks[k] for k in keys]
        below = sum(b.below for b in blocks)
        counts = np.sum([np.diff(b.offsets) for b in blocks], axis=0)
        cum = np.cumsum(counts)
        out = []
        for r in ranks:
            local = r - below
            if local < 0 or local >= int(cum[-1]):
                return None
            g = int(np.searchsorted(cum, local, side="right"))
            start = int(cum[g - 1]) if g > 0 else 0
            pool = np.concatenate([b.band[b.offsets[g] : b.offsets[g + 1]] for b in blocks])
            out.append(float(np.partition(pool, local - start)[local - start]))
        return out

    def _quantile(self, chosen: list[int], idx: NDArray[np.int64]) -> float:
        n = idx.size
        total = n * (n - 1) // 2
        h = (total - 1) * self.quantile
        lo = int(math.floor(h))
        hi = min(lo + 1, total - 1)
        vals = self._order_stats(chosen, [lo, hi])
        if vals is None:  # rare: the half's quantile left the band; recompute from its own buffer
            sq, scale = squared_distance_buffer(self.x[idx], self.precision)
            v = upper_order_statistics(sq, [lo, hi])
            v_lo, v_hi = np.sqrt(v) * scale
            self.band_misses += 1
            return _lerp(float(v_lo), float(v_hi), h - lo)
        v_lo, v_hi = np.sqrt(np.asarray(vals, dtype=np.float64)) * self.scale
        return _lerp(float(v_lo), float(v_hi), h - lo)

    def value(self, case_mask: ArrayLike) -> float:
        """GRTD of this stage over the points of the cases where `case_mask` is True (NaN if one class)."""
        mask = np.asarray(case_mask, dtype=bool)
        chosen = [int(a) for a in np.flatnonzero(mask)]
        idx = np.concatenate([np.arange(*self.ranges[a]) for a in chosen]) if chosen else np.zeros(0, np.int64)
        if idx.size < 2 or np.unique(self.y[idx]).size < 2:
            return float("nan")
        q = self._quantile(chosen, idx)
        if not q > 0.0:
            return float("nan")
        n = self.x.shape[0]
        pairs = [(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1 :]]
        xe, d = _joined([self.x_single[a] for a in chosen] + [self.x_cross[p] for p in pairs])
        ti, tj, nnz = _kruskal_weight(n, xe[:, 0], xe[:, 1], d / q)
        if nnz != idx.size - 1:
            raise RuntimeError(f"candidate graph of {idx.size} points gave {nnz} tree edges")
        tree = np.stack([np.minimum(ti, tj), np.maximum(ti, tj)], axis=1)
        d_tree = edge_lengths(self.x, tree)
        w_x = math.fsum(d_tree.tolist()) / q
        if self.variant == "contracted":
            return -(w_x - self._class_bridge_weight(chosen, q)) / (idx.size - 1)
        crossing = self.y[tree[:, 0]] != self.y[tree[:, 1]]
        ye, dy = _joined(
            [self.y_single[a] for a in chosen] + [self.y_cross[p] for p in pairs] + [(tree[crossing], d_tree[crossing])]
        )
        floor = self.lam * q
        is_cross = self.y[ye[:, 0]] != self.y[ye[:, 1]]
        pi, pj, nnz = _kruskal_weight(n, ye[:, 0], ye[:, 1], np.where(is_cross, np.maximum(dy, floor), dy) / q)
        if nnz != idx.size - 1:
            raise RuntimeError(f"penalised candidate graph of {idx.size} points gave {nnz} tree edges")
        pt = np.stack([np.minimum(pi, pj), np.maximum(pi, pj)], axis=1)
        dp = edge_lengths(self.x, pt)
        cp = self.y[pt[:, 0]] != self.y[pt[:, 1]]
        w_plus = math.fsum(np.where(cp, np.maximum(dp, floor), dp).tolist()) / q
        return -max(w_plus - w_x, 0.0) / (idx.size - 1)

    def _class_bridge_weight(self, chosen: list[int], q: float) -> float:
        """W(MST(G_Y)) of §3 over the chosen cases: an MST over the classes present, capped at λ."""
        present = np.unique(np.concatenate([self.y[slice(*self.ranges[a])] for a in chosen]))
        pos = {int(k): i for i, k in enumerate(self.classes)}
        best: dict[tuple[int, int], tuple[float, int, int]] = {}
        for i, a in enumerate(chosen):
            for b in chosen[i:]:
                for key, cand in self.bridges[(a, b)].items():
                    if key not in best or cand[0] < best[key][0]:
                        best[key] = cand
        k = present.size
        w = np.zeros((k, k))
        for i1 in range(k):
            for i2 in range(i1 + 1, k):
                key = (pos[int(present[i1])], pos[int(present[i2])])
                _, p, r = best[key]
                d = float(edge_lengths(self.x, np.array([[p, r]], dtype=np.int64))[0])
                w[i1, i2] = w[i2, i1] = min(d / q, self.lam)
        return _dense_prim_weight(w)


def _joined(parts: list[tuple[NDArray[np.int64], NDArray[np.float64]]]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Concatenate candidate (edges, lengths) sets."""
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def grtd_replicates(
    stage_features: Mapping[str, ArrayLike],
    labels: ArrayLike,
    cases: ArrayLike,
    masks: NDArray[np.bool_],
    *,
    lam: float = 1.0,
    quantile: float = 0.9,
    variant: str = "penalised",
    stages: Sequence[str] | None = None,
    progress: Callable[[float], None] | None = None,
) -> tuple[NDArray[np.float64], dict[str, Any]]:
    """(B,) GRTD of each replicate: the mean over `stages` of `GRTDStageReplicates.value`.

    Parameters
    ----------
    stage_features, labels, lam, quantile, variant, stages
        As in `grtd.grtd`.
    cases : array-like of shape (N,)
        Case index (0..M-1) of each point.
    masks : ndarray of shape (B, M)
        The draws (`case_subsets`).
    progress : callable, optional
        Called with the fraction done.

    Returns
    -------
    values : ndarray of shape (B,)
        NaN where a half holds a single class.
    diagnostics : dict
        `quantile_band_misses`: replicates whose quantile was recomputed from their own buffer.
    """
    names = list(stage_features) if stages is None else list(stages)
    per_stage = []
    misses = 0
    total = len(names) * (masks.shape[0] + 1)
    done = 0
    for s in names:
        rep = GRTDStageReplicates(stage_features[s], labels, cases, lam=lam, quantile=quantile, variant=variant)
        done += 1
        values = np.empty(masks.shape[0])
        for r, row in enumerate(masks):
            values[r] = rep.value(row)
            done += 1
            if progress is not None and r % 20 == 19:
                progress(done / total)
        per_stage.append(values)
        misses += rep.band_misses
    return np.mean(np.stack(per_stage), axis=0), {"quantile_band_misses": misses}


# ---------------------------------------------------------------------------------------------
# Read time: fuse every replicate over the models compared.


def _interval(v: NDArray[np.float64], level: float) -> list[float] | None:
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return None
    lo, hi = np.quantile(ok, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def rank_uncertainty(
    full: Mapping[str, tuple[float, float]],
    replicates: Mapping[str, tuple[ArrayLike, ArrayLike]],
    num_foreground_classes: int,
    n_cases: int,
    *,
    a: float,
    b: float,
    alpha: float | None = None,
    level: float = 0.95,
    stable_threshold: float = 0.9,
    keep_replicates: bool = False,
    effective_cases: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Intervals, rank spread, P(rank 1) and P(i above j) from replicate raw scores, fused per replicate.

    `full[model]` = (GRTD, LBTC) on the whole pilot set; `replicates[model]` = their (B,) replicate
    values on the same draws. A replicate where any model's score is undefined is left out for all.
    GRTD and LBTC get t intervals (`score_interval`); for the fused score and the ranks, replicates
    become pseudo-values (`pseudo_values`), fused per replicate (min-max over the models compared,
    as the point ranking), and are summarised by their percentiles and shares. `stable` says the top model of the point ranking is
    first in at least `stable_threshold` of the replicates. `keep_replicates` adds
    `fused_replicates` (model -> the fused score of every replicate used), for plots.
    `effective_cases` ({"grtd": ..., "lbtc": ...}, from the points and patches per case; the same
    for every model) sets the degrees of freedom of the small-sample factor; default M.
    """
    from transferability.fusion import fuse

    models = sorted(full, key=str)
    if set(replicates) != set(models):
        raise ValueError("replicates must cover exactly the models of `full`")
    eff = dict(effective_cases or {})
    g = {m: pseudo_values(full[m][0], replicates[m][0], n_cases, eff.get("grtd")) for m in models}
    lb = {m: pseudo_values(full[m][1], replicates[m][1], n_cases, eff.get("lbtc")) for m in models}
    n_rep = {g[m].size for m in models} | {lb[m].size for m in models}
    if len(n_rep) != 1:
        raise ValueError("every model needs the same number of replicates")
    ok = np.all([np.isfinite(g[m]) & np.isfinite(lb[m]) for m in models], axis=0)
    used = np.flatnonzero(ok)
    fused = {m: np.full(ok.size, np.nan) for m in models}
    ranks = {m: np.full(ok.size, np.nan) for m in models}
    for r in used:
        res = fuse({m: (float(g[m][r]), float(lb[m][r])) for m in models}, num_foreground_classes, a=a, b=b, alpha=alpha)
        for fm in res.models:
            fused[fm.model_id][r] = fm.score
            ranks[fm.model_id][r] = fm.rank
    n_used = used.size
    per_model = {}
    for m in models:
        rk = ranks[m][used]
        per_model[m] = {
            "grtd_interval": score_interval(full[m][0], np.asarray(replicates[m][0], dtype=np.float64)[used], n_cases,
                                            eff.get("grtd"), level),
            "lbtc_interval": score_interval(full[m][1], np.asarray(replicates[m][1], dtype=np.float64)[used], n_cases,
                                            eff.get("lbtc"), level),
            "fused_interval": _interval(fused[m][used], level),
            "rank_interval": None if n_used == 0 else [int(np.floor(np.quantile(rk, (1 - level) / 2))), int(np.ceil(np.quantile(rk, (1 + level) / 2)))],
            "p_rank1": None if n_used == 0 else float(np.mean(rk == 1)),
        }
    p_above = {
        m: {o: (None if n_used == 0 else float(np.mean(ranks[m][used] < ranks[o][used]))) for o in models if o != m} for m in models
    }
    full_top = fuse(dict(full), num_foreground_classes, a=a, b=b, alpha=alpha).models[0].model_id
    p_top = per_model[full_top]["p_rank1"]
    out: dict[str, Any] = {
        "method": SCHEME,
        "level": level,
        "n_cases": n_cases,
        "effective_cases": {"grtd": eff.get("grtd", float(n_cases)), "lbtc": eff.get("lbtc", float(n_cases))},
        "subset_size": subset_size(n_cases),
        "n_replicates": int(ok.size),
        "n_replicates_used": int(n_used),
        "models": per_model,
        "p_above": p_above,
        "top_model": full_top,
        "stable": bool(p_top is not None and p_top >= stable_threshold),
        "stable_threshold": stable_threshold,
    }
    if keep_replicates:
        out["fused_replicates"] = {m: fused[m][used].tolist() for m in models}
    return out
