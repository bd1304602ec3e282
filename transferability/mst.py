"""Exact Euclidean minimum spanning trees: dense Prim (numpy, CPU) and dense Boruvka (torch, GPU).

The tree is searched on squared distances from one blocked Gram product (float32 by default); the
lengths of the N-1 edges found are then recomputed in float64 straight from the points and summed
exactly (`math.fsum`), so the reported weight is exact for the tree found. Zero distances
(duplicate points) are real edges: every routine here works on dense matrices, never on a sparse
graph that would read 0 as "no edge".
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._base import blas_single_thread, resolve_device, run_tasks, worker_count
from transferability._validation import as_points

Precision = Literal["float32", "float64"]

_BLOCK = 256  # rows per strip / tile when building the squared-distance buffer
_EDGE_CHUNK = 8192  # edges per chunk in the float64 re-measurement (bounds a (chunk, D) temporary)
# float32 Gram entries carry an absolute error up to ~1e-6 (n_i + n_j) (measured, D = 320), i.e. a
# relative error ~1e-6 (n_i + n_j) / (2 d^2) on a distance: a strip whose smallest distance^2 is
# below (n_i + n_max) / _RATIO is recomputed in float64, keeping edge errors under ~4e-6.
_RATIO = 8.0
_TORCH_ROWS = 4096  # rows per chunk in the torch Boruvka sweep (bounds an (rows, N) temporary)
_TORCH_TILE = 4096  # tile side in the torch distance build (bounds a float64 (tile, tile) temporary)
_TOPK = 16  # candidates kept per row by the torch Boruvka (0: only the exact cheapest edge)


def _dtype(precision: str) -> np.dtype:
    if precision == "float32":
        return np.dtype(np.float32)
    if precision == "float64":
        return np.dtype(np.float64)
    raise ValueError(f"precision must be 'float32' or 'float64', got {precision!r}")


def _scaled_centred(points: NDArray[np.float64], dtype: np.dtype) -> tuple[NDArray[Any], float]:
    """Centre (limits cancellation in n_i + n_j - 2 g_ij) and scale by a power of two (no overflow).

    Returns the (N, D) working array in `dtype` and the scale s with original = s * working.
    """
    xc = points - points.mean(axis=0)
    peak = float(np.max(np.abs(xc))) if xc.size else 0.0
    scale = 1.0 if peak == 0.0 else math.ldexp(1.0, math.frexp(peak)[1])
    return np.ascontiguousarray(xc / scale, dtype=dtype), scale


def _mirror_rows(t: NDArray[Any], r0: int, upper: NDArray[np.bool_]) -> None:
    """Copy the lower triangle onto the upper one for rows r0:r0+_BLOCK (one task of the mirror)."""
    n = t.shape[0]
    r1 = min(n, r0 + _BLOCK)
    diag_blk = t[r0:r1, r0:r1]
    np.copyto(diag_blk, diag_blk.T.copy(), where=upper[: r1 - r0, : r1 - r0])
    for c0 in range(r1, n, _BLOCK):
        c1 = min(n, c0 + _BLOCK)
        t[r0:r1, c0:c1] = t[c0:c1, r0:r1].T


def _strip_to_sq(
    t: NDArray[Any],
    r0: int,
    r1: int,
    norms: NDArray[Any],
    top: float,
    work64: NDArray[np.float64] | None,
    norms64: NDArray[np.float64] | None,
) -> None:
    """Rows r0:r1, columns :r1 of `t`: -2 g_ij -> max(n_i + n_j - 2 g_ij, 0), in place (top = max n_j).

    With `work64` (float32 buffers), a strip whose smallest off-diagonal squared distance is
    below (n_i + n_max) / _RATIO (float32 cancellation would dominate it) is recomputed from a
    float64 product and rounded to float32 once.
    """
    blk = t[r0:r1, :r1]
    blk += norms[r0:r1, None]
    blk += norms[None, :r1]
    diag = (np.arange(r1 - r0), np.arange(r0, r1))
    blk[diag] = np.inf
    nearest = blk.min(axis=1)
    if r0 == 0:
        nearest[0] = np.inf  # row 0 has no entry left of the diagonal
    if work64 is not None and norms64 is not None and np.any(nearest * _RATIO < norms[r0:r1] + top):
        g64 = work64[r0:r1] @ work64[:r1].T
        g64 *= -2.0
        g64 += norms64[r0:r1, None]
        g64 += norms64[None, :r1]
        blk[...] = g64
        blk[diag] = np.inf
        nearest = blk.min(axis=1)
        if r0 == 0:
            nearest[0] = np.inf
    if np.any(nearest < 0):
        np.maximum(blk, 0.0, out=blk)
    blk[diag] = 0.0


def squared_distance_buffer(points: NDArray[np.float64], precision: Precision = "float32") -> tuple[NDArray[Any], float]:
    """Dense (N, N) squared distances in `precision`, in one buffer, and the scale factor.

    The true squared distance is `scale**2 * buffer[i, j]` (up to rounding). Row-strip GEMMs
    write -2 x_i.x_j for j <= i straight into the buffer (half the flops of a full product); each
    strip then becomes n_i + n_j - 2 g_ij (norms from the same product's diagonal, so exact
    duplicates get exactly 0) and the lower triangle is mirrored: the buffer is bitwise symmetric
    with a zero diagonal. float32 strips at risk of cancellation are redone in float64
    (`_strip_to_sq`). Every strip is computed the same way whichever thread runs it, so the
    result does not depend on the number of threads.
    """
    dtype = _dtype(precision)
    work64, scale = _scaled_centred(points, np.dtype(np.float64))
    work = work64.astype(dtype, copy=False)
    n = work.shape[0]
    neg2 = work * dtype.type(-2.0)  # exact: scaling by a power of two
    norms64 = np.einsum("ij,ij->i", work64, work64) if dtype == np.float32 else None
    if dtype != np.float32:
        work64 = None  # float64 buffers need no fallback
    t = np.empty((n, n), dtype=dtype)
    starts = list(range(0, n, _BLOCK))
    big_first = starts[::-1]  # strips grow with the row index: hand out the largest first

    def gemm(r0: int) -> None:
        r1 = min(n, r0 + _BLOCK)
        np.matmul(work[r0:r1], neg2[:r1].T, out=t[r0:r1, :r1])

    workers = worker_count()
    # Many small single-threaded BLAS calls on our own threads instead of one multi-threaded BLAS:
    # no barrier per call, so a core taken by another process stalls one strip, not every call.
    with blas_single_thread():
        run_tasks(gemm, big_first, workers)
        norms = np.diagonal(t).copy() * dtype.type(-0.5)  # the product's own diagonal
        top = float(norms.max())
        run_tasks(
            lambda r0: _strip_to_sq(t, r0, min(n, r0 + _BLOCK), norms, top, work64, norms64), big_first, workers
        )
    upper = np.triu(np.ones((_BLOCK, _BLOCK), dtype=bool), 1)
    run_tasks(lambda r0: _mirror_rows(t, r0, upper), starts, workers)
    return t, scale


def prim_edges(sq: NDArray[Any]) -> NDArray[np.int64]:
    """Dense Prim from vertex 0 over a symmetric (N, N) weight matrix -> (N-1, 2) (parent, child).

    Ties: the next vertex is the lowest-indexed one of minimal key; a key only changes on a strict
    decrease, so a vertex keeps the earliest tree vertex that reached it. O(N^2) time, O(N) extra.
    """
    n = sq.shape[0]
    dt = sq.dtype
    key = np.full(n, np.inf, dtype=dt)
    pen = np.zeros(n, dtype=dt)  # +inf once a vertex is in the tree
    parent = np.zeros(n, dtype=np.intp)
    tmp = np.empty(n, dtype=dt)
    better = np.empty(n, dtype=bool)
    edges = np.empty((n - 1, 2), dtype=np.int64)
    v = 0
    pen[0] = np.inf
    for step in range(n - 1):
        np.add(sq[v], pen, out=tmp)
        np.less(tmp, key, out=better)
        np.copyto(parent, v, where=better)
        np.copyto(key, tmp, where=better)
        u = int(key.argmin())
        edges[step, 0] = parent[u]
        edges[step, 1] = u
        key[u] = np.inf
        pen[u] = np.inf
        v = u
    return edges


def edge_lengths(points: NDArray[np.float64], edges: NDArray[np.int64]) -> NDArray[np.float64]:
    """Euclidean lengths of `edges` computed directly in float64 from the points."""
    out = np.empty(edges.shape[0], dtype=np.float64)
    for e0 in range(0, edges.shape[0], _EDGE_CHUNK):
        e1 = min(edges.shape[0], e0 + _EDGE_CHUNK)
        diff = points[edges[e0:e1, 0]] - points[edges[e0:e1, 1]]
        out[e0:e1] = np.sqrt(np.square(diff).sum(axis=1))
    return out


def _canonical(edges: NDArray[np.int64], weights: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Rows as (lower, higher) vertex, sorted by (weight, lower, higher): one layout for every path."""
    lo = np.minimum(edges[:, 0], edges[:, 1])
    hi = np.maximum(edges[:, 0], edges[:, 1])
    order = np.lexsort((hi, lo, weights))
    return np.stack([lo[order], hi[order]], axis=1), weights[order]


def mst_edges(
    points: ArrayLike, device: Any = None, precision: Precision = "float32"
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Edges (N-1, 2) of a Euclidean minimum spanning tree and their exact float64 lengths.

    `device`: None (numpy dense Prim), 'auto' (CUDA when present), or a torch device (dense
    Boruvka in torch). Rows are (lower, higher) vertex index sorted by (length, lower, higher).
    """
    x = as_points(points)
    _dtype(precision)
    dev = resolve_device(device)
    if dev is None:
        sq, _ = squared_distance_buffer(x, precision)
        edges = prim_edges(sq)
        del sq
    else:
        edges = boruvka_edges_torch(x, dev, precision)
        return _canonical(edges, torch_edge_lengths(x, edges, dev))
    return _canonical(edges, edge_lengths(x, edges))


def mst_weight(points: ArrayLike, device: Any = None, precision: Precision = "float32") -> float:
    """Total Euclidean MST weight of a point cloud, exact (float64, fsum) for the tree found.

    Parameters
    ----------
    points : array-like of shape (N, D)
        The points; duplicates are real zero-length edges.
    device : None, "auto" or a torch device, optional
        None: dense Prim in numpy; "auto": CUDA when present; a device: Boruvka in torch there.
    precision : {"float32", "float64"}, default="float32"
        Storage of the squared distances used to find the tree.

    Returns
    -------
    float
        The sum of the N - 1 edge lengths, each re-measured in float64.
    """
    _, weights = mst_edges(points, device=device, precision=precision)
    return math.fsum(weights.tolist())


def _sync(dev: Any) -> None:
    """Wait for the device (CUDA) so that a host timer brackets its work; no-op elsewhere."""
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _torch_scaled_centred(points: Any, dev: Any) -> tuple[Any, float]:
    """`_scaled_centred` on the device: one upload of the float64 points, centring and the exact
    power-of-two scaling there (host numpy passes over N x D cost more than the whole GPU MST)."""
    import torch

    x = torch.as_tensor(points, dtype=torch.float64).to(dev)
    x = x - x.mean(dim=0)
    peak = float(x.abs().max()) if x.numel() else 0.0
    scale = 1.0 if peak == 0.0 else math.ldexp(1.0, math.frexp(peak)[1])
    return x.div_(scale), scale


def torch_edge_lengths(points: Any, edges: NDArray[np.int64], dev: Any) -> NDArray[np.float64]:
    """`edge_lengths` on the device: float64 differences of the original points, gathered there."""
    import torch

    x = torch.as_tensor(points, dtype=torch.float64).to(dev)
    e = torch.from_numpy(np.ascontiguousarray(edges)).to(dev)
    diff = x[e[:, 0]] - x[e[:, 1]]
    return diff.square_().sum(dim=1).sqrt_().cpu().numpy()


def torch_squared_distances(
    points: NDArray[np.float64], device: Any, precision: Precision = "float32", stats: dict[str, Any] | None = None
) -> tuple[Any, float]:
    """Dense (N, N) squared distances as a torch tensor on `device`, and the scale factor.

    Products in float64 (no TF32, no float32 cancellation) on the centred, power-of-two-scaled
    points, stored in `precision`; true squared distance = scale**2 * sq[i, j]. Only the tiles on
    and above the diagonal are computed (one fused `addmm` + one add per tile); each off-diagonal
    tile is written once and copied to its mirror, and diagonal tiles take min(t, t.T): the matrix
    is bitwise symmetric and its diagonal is +inf (no self edges). `stats`, when given, receives
    synchronised stage times (host prep + upload, tiles).
    """
    import torch

    dtype = _dtype(precision)
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    t0 = time.perf_counter()
    x, scale = _torch_scaled_centred(points, torch.device(device))
    n = x.shape[0]
    dev = x.device
    norms = (x * x).sum(dim=1)
    sq = torch.empty((n, n), dtype=tdtype, device=dev)
    if stats is not None:
        _sync(dev)
        stats["prep_upload_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
    tile = _TORCH_TILE
    for i0 in range(0, n, tile):
        i1 = min(n, i0 + tile)
        n_i = norms[i0:i1, None]
        for j0 in range(i0, n, tile):
            j1 = min(n, j0 + tile)
            t = torch.addmm(n_i, x[i0:i1], x[j0:j1].T, beta=1.0, alpha=-2.0)  # n_i - 2 g_ij (2 g exact)
            t.add_(norms[None, j0:j1])
            dst = sq[i0:i1, j0:j1]
            if j0 == i0:
                t = t.to(tdtype)
                torch.minimum(t, t.T, out=dst)  # the diagonal tile: symmetric on its own
            else:
                dst.copy_(t)  # rounding to float32 commutes with the clamp below (monotone, keeps 0)
            del t
            dst.clamp_(min=0.0)
            if j0 != i0:
                sq[j0:j1, i0:i1].copy_(dst.T)
    sq.fill_diagonal_(float("inf"))
    if stats is not None:
        _sync(dev)
        stats["tiles_s"] = time.perf_counter() - t0
    return sq, scale


def boruvka_edges_torch(points: NDArray[np.float64], device: Any, precision: Precision = "float32") -> NDArray[np.int64]:
    """Boruvka in torch over the squared-distance matrix -> (N-1, 2) tree edges (numpy): tiled
    distance build, then candidate-list Boruvka (`boruvka_edges_from_sq`)."""
    sq, _ = torch_squared_distances(points, device, precision)
    return boruvka_edges_from_sq(sq)


def _sorted_candidates(vals: Any, k: int) -> tuple[Any, Any, Any]:
    """The k smallest entries of each row ordered by (value, column), and each row's k-th value.

    topk leaves the order of tied values (and which of the values equal to the k-th one it keeps)
    unspecified; a stable sort on value after a sort on column fixes the order, and only entries
    strictly below the k-th value (a complete set) are ever trusted by the caller.
    """
    import torch

    w, j = torch.topk(vals, k, dim=1, largest=False, sorted=True)
    thresh = w[:, -1].clone()
    j, order = torch.sort(j, dim=1)
    w = w.gather(1, order)
    w, order = torch.sort(w, dim=1, stable=True)
    return w, j.gather(1, order), thresh


def boruvka_edges_from_sq(sq: Any, k: int | None = None, stats: dict[str, Any] | None = None) -> NDArray[np.int64]:
    """Boruvka over a symmetric (N, N) torch weight matrix with +inf diagonal -> (N-1, 2) edges.

    Same tree as the dense sweep kept in `bench/mst_dense.py` (edges ordered by (length, lower, higher), a strict
    total order: the MST is unique), with far fewer reads of `sq`. One pass over `sq` gives each
    row its exact cheapest edge (ex_w, ex_j) and its k cheapest entries sorted by (value, column)
    with the k-th value `thresh`. Invariants, since a row's outside set (columns in other
    components) only shrinks as components merge:
      (a) if ex_j is still outside, it is still the row's cheapest outside entry, lowest column
          among ties (it was over a superset);
      (b) every outside entry of value < thresh is in the list, so the first listed entry that is
          outside and < thresh is the row's cheapest outside entry, lowest column among ties;
      (c) otherwise the row's cheapest outside value is >= bound = thresh (k > 0) or ex_w (k = 0).
    Each round a component's best is the minimum over its resolved rows; an unresolved row can
    only beat or tie it when bound <= that minimum, and exactly those rows get a dense masked
    sweep (which also refreshes their ex/list/thresh for later rounds). Unresolved rows with
    bound > the minimum are strictly worse and are skipped, so every component still takes its
    exact cheapest edge under the strict order. `stats`, when given, receives rounds, refreshed
    rows per round and synchronised stage times. `sq` is only read.
    """
    import torch

    n = sq.shape[0]
    dev = sq.device
    tdtype = sq.dtype
    kk = _TOPK if k is None else k
    kk = max(0, min(kk, n))
    big = torch.iinfo(torch.int64).max
    inf = torch.tensor(float("inf"), dtype=tdtype, device=dev)
    idx = torch.arange(n, device=dev)
    t0 = time.perf_counter()
    ex_w = torch.empty(n, dtype=tdtype, device=dev)
    ex_j = torch.empty(n, dtype=torch.int64, device=dev)
    cand_w = torch.empty((n, kk), dtype=tdtype, device=dev)
    cand_j = torch.empty((n, kk), dtype=torch.int64, device=dev)
    thresh = torch.empty(n, dtype=tdtype, device=dev)
    for r0 in range(0, n, _TORCH_ROWS):  # round 1 needs no mask: comp == idx and the diagonal is +inf
        r1 = min(n, r0 + _TORCH_ROWS)
        rows = sq[r0:r1]
        ex_w[r0:r1], ex_j[r0:r1] = rows.min(dim=1)  # documented: the first (lowest) column among tied minima
        if kk:
            cand_w[r0:r1], cand_j[r0:r1], thresh[r0:r1] = _sorted_candidates(rows, kk)
    if stats is not None:
        _sync(dev)
        stats["first_pass_s"] = time.perf_counter() - t0
        stats["refreshed_rows"] = []
        t0 = time.perf_counter()
    ar_k = torch.arange(kk, device=dev)
    comp = idx.clone()
    chosen: list[Any] = []
    n_comp = n
    rounds = 0
    while n_comp > 1:
        rounds += 1
        if rounds > 2 * max(1, n).bit_length() + 2:  # pragma: no cover - each round at least halves them
            raise RuntimeError("Boruvka did not converge")
        best_w = torch.where(comp[ex_j] != comp, ex_w, inf)
        best_j = ex_j.clone()
        resolved = best_w < inf
        if kk:
            outside = (comp[cand_j] != comp[:, None]) & (cand_w < thresh[:, None])
            pos = torch.where(outside, ar_k, kk).amin(dim=1)
            use = ~resolved & (pos < kk)
            pos = pos.clamp(max=kk - 1)[:, None]
            best_w = torch.where(use, cand_w.gather(1, pos).squeeze(1), best_w)
            best_j = torch.where(use, cand_j.gather(1, pos).squeeze(1), best_j)
            resolved |= use
            bound = thresh
        else:
            bound = ex_w
        comp_w = torch.full((n,), float("inf"), dtype=tdtype, device=dev)
        comp_w.scatter_reduce_(0, comp, best_w, reduce="amin")
        need = torch.nonzero(~resolved & (bound <= comp_w[comp])).squeeze(1)
        n_need = int(need.numel())
        if stats is not None:
            stats["refreshed_rows"].append(n_need)
        for f0 in range(0, n_need, _TORCH_ROWS):
            rows = need[f0 : f0 + _TORCH_ROWS]
            vals = torch.where(comp[rows, None] == comp[None, :], inf, sq.index_select(0, rows))
            w, j = vals.min(dim=1)  # first (lowest) column among tied minima
            ex_w[rows], ex_j[rows] = w, j
            best_w[rows], best_j[rows] = w, j
            if kk:
                cand_w[rows], cand_j[rows], thresh[rows] = _sorted_candidates(vals, kk)
            del vals
        if n_need:
            comp_w.fill_(float("inf"))
            comp_w.scatter_reduce_(0, comp, best_w, reduce="amin")
        eid = torch.minimum(idx, best_j) * n + torch.maximum(idx, best_j)
        eid = torch.where(best_w == comp_w[comp], eid, big)
        comp_e = torch.full((n,), big, dtype=torch.int64, device=dev)
        comp_e.scatter_reduce_(0, comp, eid, reduce="amin")
        is_root = comp == idx
        pick = comp_e.clamp(max=n * n - 1)
        a, b = pick // n, pick % n
        other = torch.where(comp[a] == idx, comp[b], comp[a])
        hook = torch.where(is_root, other, idx)
        mutual = is_root & (hook[hook] == idx) & (idx < hook)  # two components chose the same edge
        hook = torch.where(mutual, idx, hook)
        chosen.append(torch.where(is_root, comp_e, big))
        while True:  # pointer jumping, one host sync per four jumps
            for _ in range(4):
                hook = hook[hook]
            if torch.equal(hook[hook], hook):
                break
        comp = hook[comp]
        n_comp = int((comp == idx).sum())
    if stats is not None:
        _sync(dev)
        stats["rounds_s"] = time.perf_counter() - t0
        stats["rounds"] = rounds
        stats["k"] = kk
    eids = torch.unique(torch.cat(chosen)) if chosen else torch.zeros(0, dtype=torch.int64, device=dev)
    eids = eids[eids != big].cpu().numpy()
    if eids.size != n - 1:  # pragma: no cover - would mean a bug in the rounds above
        raise RuntimeError(f"Boruvka produced {eids.size} edges for {n} points")
    return np.stack([eids // n, eids % n], axis=1).astype(np.int64)


def batched_prim_edges(sq: NDArray[Any], valid: NDArray[np.bool_]) -> NDArray[np.int64]:
    """Prim on many small graphs at once: (A, P, P) weights, (A, P) mask -> (A, P-1, 2) edges.

    Edges are compared by (weight, lower index, higher index), a strict total order, so each tree
    is the unique MST under it, the same tree as Kruskal over the pairs (i < j) stably sorted by
    weight ("ties -> lower index"). Masked-out points are absent; rows past a patch's
    (valid - 1) edges are -1. One vectorised Prim step per iteration over all A patches.
    """
    a_n, p_n = valid.shape
    rows = np.arange(a_n)
    cols = np.arange(p_n)
    big = np.iinfo(np.int64).max
    done = ~valid  # in the tree already, or absent
    key = np.full((a_n, p_n), np.inf)
    kid = np.full((a_n, p_n), big, dtype=np.int64)
    parent = np.full((a_n, p_n), -1, dtype=np.int64)
    edges = np.full((a_n, max(p_n - 1, 0), 2), -1, dtype=np.int64)
    v = valid.argmax(axis=1)
    done[rows, v] = True
    for step in range(p_n - 1):
        row = sq[rows, v]
        eid = np.minimum(v[:, None], cols) * p_n + np.maximum(v[:, None], cols)
        better = (row < key) | ((row == key) & (eid < kid))
        better &= ~done
        key = np.where(better, row, key)
        kid = np.where(better, eid, kid)
        parent = np.where(better, v[:, None], parent)
        open_key = np.where(done, np.inf, key)
        low = open_key.min(axis=1)
        cand = (open_key == low[:, None]) & ~done
        u = np.where(cand, kid, big).argmin(axis=1)
        active = cand.any(axis=1)
        act = rows[active]
        edges[act, step, 0] = parent[act, u[active]]
        edges[act, step, 1] = u[active]
        done[act, u[active]] = True
        v = np.where(active, u, v)
    return edges
