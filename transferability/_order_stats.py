"""Exact order statistics of a squared-distance buffer, without a condensed copy: the numpy path
(strict upper triangle) and its torch twin (a symmetric buffer on the device). GRTD's distance
quantile q (metrics.md §3) comes from here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

_ROWS = 256  # rows per chunk when scanning the distance buffer
_BUCKET_BITS = 20  # histogram resolution of the order-statistic search
_TORCH_SCAN = 1 << 24  # matrix entries per chunk in the torch order-statistic scans


def _upper_bits(block: NDArray[Any]) -> NDArray[np.uint64]:
    """Order-preserving integer keys of non-negative floats (sign bit cleared so -0.0 == +0.0)."""
    if block.dtype == np.float32:
        return (block.view(np.uint32) & np.uint32(0x7FFFFFFF)).astype(np.uint64)
    return block.view(np.uint64) & np.uint64(0x7FFFFFFFFFFFFFFF)


def _upper_chunks(sq: NDArray[Any]) -> Iterator[NDArray[Any]]:
    """Yield the strict upper triangle of a square matrix as 1-D chunks (row blocks)."""
    n = sq.shape[0]
    for r0 in range(0, n, _ROWS):
        r1 = min(n, r0 + _ROWS)
        tri = sq[r0:r1, r0:r1][np.triu_indices(r1 - r0, 1)]
        rect = sq[r0:r1, r1:].ravel()
        yield np.concatenate([tri, rect])


def upper_order_statistics(sq: NDArray[Any], ranks: Sequence[int]) -> NDArray[np.float64]:
    """Values at 0-based `ranks` of the sorted strict upper triangle of non-negative `sq`.

    Two passes over the matrix and no condensed copy: a histogram of the top bits of each value's
    order-preserving integer key, then an exact selection inside the buckets holding the ranks.
    """
    nbits = 32 if sq.dtype == np.float32 else 64
    shift = np.uint64(nbits - 1 - _BUCKET_BITS)
    hist = np.zeros(1 << _BUCKET_BITS, dtype=np.int64)
    for chunk in _upper_chunks(sq):
        hist += np.bincount((_upper_bits(chunk) >> shift).astype(np.intp), minlength=hist.size)
    cum = np.cumsum(hist)
    m = int(cum[-1])
    if any(not 0 <= r < m for r in ranks):
        raise ValueError(f"ranks must lie in [0, {m})")
    bucket = {r: int(np.searchsorted(cum, r, side="right")) for r in ranks}
    local = {r: r - (int(cum[bucket[r] - 1]) if bucket[r] > 0 else 0) for r in ranks}
    wanted = np.array(sorted(set(bucket.values())), dtype=np.uint64)
    pools: dict[int, list[NDArray[Any]]] = {int(b): [] for b in wanted}
    for chunk in _upper_chunks(sq):
        keys = _upper_bits(chunk) >> shift
        for b in wanted:
            hit = keys == b
            if hit.any():
                pools[int(b)].append(chunk[hit])
    merged = {b: np.concatenate(p).astype(np.float64) for b, p in pools.items()}
    for b, pool in merged.items():
        pool.partition(sorted({local[r] for r in ranks if bucket[r] == b}))
    return np.array([merged[bucket[r]][local[r]] for r in ranks], dtype=np.float64)


def _lerp(lo: float, hi: float, t: float) -> float:
    """numpy.quantile's linear interpolation, evaluated the same way numpy evaluates it."""
    diff = hi - lo
    return hi - diff * (1.0 - t) if t >= 0.5 else lo + diff * t


def distance_quantile(sq: NDArray[Any], scale: float, quantile: float) -> float:
    """`numpy.quantile(condensed distances, quantile)` (linear) from a squared-distance buffer."""
    n = sq.shape[0]
    m = n * (n - 1) // 2
    h = (m - 1) * quantile
    lo = int(math.floor(h))
    hi = min(lo + 1, m - 1)
    v_lo, v_hi = np.sqrt(upper_order_statistics(sq, [lo, hi])) * scale
    return _lerp(float(v_lo), float(v_hi), h - lo)


def torch_order_statistics(sq: Any, ranks: Sequence[int]) -> NDArray[np.float64]:
    """Values at 0-based `ranks` of the sorted entries of a non-negative torch matrix (on its device).

    The torch twin of `upper_order_statistics` (histogram of the top key bits, then an exact sort
    inside the buckets holding the ranks), over every entry: multi-block on a GPU, where
    `torch.kthvalue` on one huge row runs in a single block.
    """
    import torch

    if sq.dtype == torch.float32:
        itype, nbits, mask = torch.int32, 32, 0x7FFFFFFF
    else:
        itype, nbits, mask = torch.int64, 64, 0x7FFFFFFFFFFFFFFF
    shift = nbits - 1 - _BUCKET_BITS
    flat = sq.reshape(-1)
    chunks = [flat[c0 : c0 + _TORCH_SCAN] for c0 in range(0, flat.numel(), _TORCH_SCAN)]

    def bucket_of(chunk: Any) -> Any:
        return ((chunk.view(itype) & mask) >> shift).long()  # sign bit cleared: -0.0 sorts as +0.0

    hist = torch.zeros(1 << _BUCKET_BITS, dtype=torch.int64, device=sq.device)
    for chunk in chunks:
        hist += torch.bincount(bucket_of(chunk), minlength=hist.numel())
    cum = torch.cumsum(hist, 0).cpu().numpy()
    m = int(cum[-1])
    if any(not 0 <= r < m for r in ranks):
        raise ValueError(f"ranks must lie in [0, {m})")
    bucket = {r: int(np.searchsorted(cum, r, side="right")) for r in ranks}
    local = {r: r - (int(cum[bucket[r] - 1]) if bucket[r] > 0 else 0) for r in ranks}
    pools: dict[int, list[Any]] = {b: [] for b in set(bucket.values())}
    for chunk in chunks:
        keys = bucket_of(chunk)
        for b, pool in pools.items():
            pool.append(chunk[keys == b])
    merged = {b: torch.sort(torch.cat(p).double()).values.cpu().numpy() for b, p in pools.items()}
    return np.array([merged[bucket[r]][local[r]] for r in ranks], dtype=np.float64)


def torch_distance_quantile(sq: Any, scale: float, quantile: float) -> float:
    """`numpy.quantile(condensed distances, quantile)` (linear) from a symmetric torch buffer.

    `sq` is bitwise symmetric with a +inf diagonal, so its sorted entries are the condensed
    distances each repeated twice, then the N infinities: condensed rank r is entry rank 2 r.
    """
    n = sq.shape[0]
    m = n * (n - 1) // 2
    h = (m - 1) * quantile
    lo = int(math.floor(h))
    hi = min(lo + 1, m - 1)
    v_lo, v_hi = np.sqrt(torch_order_statistics(sq, [2 * lo, 2 * hi])) * scale
    return _lerp(float(v_lo), float(v_hi), h - lo)
