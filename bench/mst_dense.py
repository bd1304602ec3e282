"""The superseded torch MST path, kept outside the product for comparison: the row-strip distance
build and the dense-sweep Boruvka that `transferability.mst` replaced with a tiled build and a
candidate-list Boruvka. `bench/mst.py` times both in one process; the tests check both give the same tree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from transferability.mst import _TORCH_ROWS, Precision, _dtype, _scaled_centred


def torch_squared_distances_strips(points: NDArray[np.float64], device: Any, precision: Precision = "float32") -> tuple[Any, float]:
    """Previous distance build (row strips + full transposed minimum).

    Dense (N, N) squared distances as a torch tensor on `device`, and the scale factor.

    Products in float64 (no TF32, no float32 cancellation) on the centred, power-of-two-scaled
    points, stored in `precision`; true squared distance = scale**2 * sq[i, j]. The matrix is
    bitwise symmetric and its diagonal is +inf (no self edges).
    """
    import torch

    dtype = _dtype(precision)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    work, scale = _scaled_centred(points, np.dtype(np.float64))
    n = work.shape[0]
    dev = torch.device(device)
    x = torch.from_numpy(work).to(dev)
    norms = (x * x).sum(dim=1)
    sq = torch.empty((n, n), dtype=tdtype, device=dev)
    for r0 in range(0, n, _TORCH_ROWS):
        r1 = min(n, r0 + _TORCH_ROWS)
        g = x[r0:r1] @ x.T
        g.mul_(-2.0).add_(norms[r0:r1, None]).add_(norms[None, :]).clamp_(min=0.0)
        sq[r0:r1] = g
        del g
    sq = torch.minimum(sq, sq.T)  # bitwise symmetric: both triangles must agree on every tie
    sq.fill_diagonal_(float("inf"))
    return sq, scale


def boruvka_edges_from_sq_dense(sq: Any) -> NDArray[np.int64]:
    """Previous Boruvka (a dense masked sweep of every row each round).

    Dense Boruvka over a symmetric (N, N) torch weight matrix with +inf diagonal -> (N-1, 2) edges.

    Edges are compared by (length, lower index, higher index), a strict total order, so the tree is
    the unique minimum spanning tree under that order and no tie can close a cycle. Each round
    every component takes its cheapest outgoing edge; about log2(N) rounds of dense sweeps.
    `sq` is only read.
    """
    import torch

    n = sq.shape[0]
    dev = sq.device
    tdtype = sq.dtype
    big = torch.iinfo(torch.int64).max
    inf = torch.tensor(float("inf"), dtype=tdtype, device=dev)
    idx = torch.arange(n, device=dev)
    comp = idx.clone()
    chosen: list[torch.Tensor] = []
    n_edges = 0
    for _round in range(2 * max(1, n).bit_length() + 2):  # each round at least halves the components
        if n_edges >= n - 1:
            break
        best_w = torch.empty(n, dtype=tdtype, device=dev)
        best_j = torch.empty(n, dtype=torch.int64, device=dev)
        for r0 in range(0, n, _TORCH_ROWS):
            r1 = min(n, r0 + _TORCH_ROWS)
            vals = torch.where(comp[r0:r1, None] == comp[None, :], inf, sq[r0:r1])
            w, j = vals.min(dim=1)  # documented: the first (lowest) column among tied minima
            del vals
            best_w[r0:r1] = w
            best_j[r0:r1] = j
        lo = torch.minimum(idx, best_j)
        hi = torch.maximum(idx, best_j)
        eid = lo * n + hi
        comp_w = torch.full((n,), float("inf"), dtype=tdtype, device=dev)
        comp_w.scatter_reduce_(0, comp, best_w, reduce="amin")
        eid = torch.where(best_w == comp_w[comp], eid, big)
        comp_e = torch.full((n,), big, dtype=torch.int64, device=dev)
        comp_e.scatter_reduce_(0, comp, eid, reduce="amin")
        roots = torch.nonzero(comp == idx).squeeze(1)
        picks = comp_e[roots]
        a, b = picks // n, picks % n
        other = torch.where(comp[a] == roots, comp[b], comp[a])
        new = torch.unique(picks)  # a pair of components choosing the same edge adds it once
        chosen.append(new)
        n_edges += int(new.numel())
        hook = idx.clone()
        hook[roots] = other
        mutual = (hook[other] == roots) & (roots < other)
        hook[roots[mutual]] = roots[mutual]
        while True:
            nxt = hook[hook]
            if torch.equal(nxt, hook):
                break
            hook = nxt
        comp = hook[comp]
    if n_edges != n - 1:  # pragma: no cover - would mean a bug in the rounds above
        raise RuntimeError(f"Boruvka produced {n_edges} edges for {n} points")
    eids = torch.cat(chosen).cpu().numpy() if chosen else np.zeros(0, dtype=np.int64)
    return np.stack([eids // n, eids % n], axis=1).astype(np.int64)


def boruvka_edges_dense(points: NDArray[np.float64], device: Any, precision: Precision = "float32") -> NDArray[np.int64]:
    """The previous `boruvka_edges_torch`: strip build, then dense sweeps."""
    return boruvka_edges_from_sq_dense(torch_squared_distances_strips(points, device, precision)[0])
