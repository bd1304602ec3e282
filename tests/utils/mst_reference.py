"""Brute-force minimum spanning trees for the tests: Kruskal with union-find over every pair,
in an order the caller fixes, so each test states how ties are broken."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial.distance import pdist, squareform


def kruskal_pairs(n: int, iu: np.ndarray, ju: np.ndarray, order: np.ndarray) -> list[tuple[int, int]]:
    """Tree edges (i, j) of `n` nodes, taking candidate pairs (iu[t], ju[t]) in `order`."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    edges = []
    for t in order:
        i, j = int(iu[t]), int(ju[t])
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[ri] = rj
            edges.append((i, j))
    return edges


def _pairs_by_distance(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = squareform(pdist(np.asarray(points, dtype=np.float64)))
    iu, ju = np.triu_indices(d.shape[0], 1)
    return d, iu, ju


def kruskal_reference(points: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """MST of a point cloud: float64 pdist, pairs (i < j) stably sorted by length. (edges, fsum weight)."""
    d, iu, ju = _pairs_by_distance(points)
    edges = kruskal_pairs(d.shape[0], iu, ju, np.argsort(d[iu, ju], kind="stable"))
    return edges, math.fsum(d[i, j] for i, j in edges)


def kruskal_on_matrix(w: np.ndarray) -> list[tuple[int, int]]:
    """MST of a symmetric weight matrix, pairs ordered by (weight, lower, higher); sorted edges."""
    iu, ju = np.triu_indices(w.shape[0], 1)
    return sorted(kruskal_pairs(w.shape[0], iu, ju, np.lexsort((ju, iu, w[iu, ju]))))


def dense_mst_weight(w: np.ndarray) -> float:
    """MST weight of a dense symmetric weight matrix (0 is a real edge), pairs stably sorted by weight."""
    iu, ju = np.triu_indices(w.shape[0], 1)
    edges = kruskal_pairs(w.shape[0], iu, ju, np.argsort(w[iu, ju], kind="stable"))
    return math.fsum(w[i, j] for i, j in edges)


def kruskal_leakage(x: np.ndarray, y: np.ndarray) -> float | None:
    """Share of MST edges joining different labels, ties -> lower pair first; None with one label."""
    if np.unique(y).size < 2:
        return None
    d, iu, ju = _pairs_by_distance(x)
    edges = kruskal_pairs(d.shape[0], iu, ju, np.argsort(d[iu, ju], kind="stable"))
    return sum(int(y[i] != y[j]) for i, j in edges) / (x.shape[0] - 1)


def kruskal_leakage_higher_index_first(x: np.ndarray, y: np.ndarray) -> float:
    """Like `kruskal_leakage`, but ties between equal distances go to the *higher* pair first."""
    d, iu, ju = _pairs_by_distance(x)
    edges = kruskal_pairs(d.shape[0], iu, ju, np.lexsort((-ju, -iu, d[iu, ju])))
    return sum(int(y[i] != y[j]) for i, j in edges) / (x.shape[0] - 1)
