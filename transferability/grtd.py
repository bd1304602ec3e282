"""GRTD, the global representation topology divergence of metrics.md §3 and §3a.

Per stage: distances over the N sampled points normalised by their 0.9-quantile (d̂ = d / q), and
G_X weighted by d̂. Two variants, both higher (closer to 0) is better:

- "contracted" (§3): GRTD_t = -(W(MST(G_X)) - W(MST(G_Y))) / (N - 1), G_Y = min(G_X, label metric)
  (0 within a class, min(d̂, λ) across). W(MST(G_Y)) is only the K class bridges, so this variant
  barely depends on which point has which label (§3a).
- "penalised" (§3a): GRTD⁺_t = -(W(MST(G_Y⁺)) - W(MST(G_X))) / (N - 1), G_Y⁺ = d̂ within a class and
  max(d̂, λ) across: crossing a class boundary costs at least λ. The value is 0 exactly when some
  MST of G_X crosses classes only on edges with d̂ >= λ, and never below -Σ max(0, λ - d̂_e) / (N - 1)
  over the inter-class edges e of the native tree (that tree, re-weighted, spans G_Y⁺).

Both come from one distance buffer per stage; the penalised tree reuses it with its inter-class
blocks raised in place.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from transferability._base import resolve_device
from transferability._order_stats import distance_quantile, torch_distance_quantile
from transferability._validation import as_labels, as_points
from transferability.mst import (
    Precision,
    boruvka_edges_from_sq,
    edge_lengths,
    prim_edges,
    squared_distance_buffer,
    torch_squared_distances,
)

_ROWS = 256  # rows per chunk when scanning the distance buffer

VARIANTS = ("contracted", "penalised")
"""GRTD variants: "contracted" (metrics.md §3, the default) and "penalised" (§3a)."""


@dataclass(frozen=True)
class GRTDStage:
    """One stage's GRTD and the quantities behind it (weights are in units of d̂ = d / q).

    `value` is the chosen `variant`; `values` holds every variant computed for the stage. `w_y` is
    W(MST(G_Y)) of §3 (always measured: it is K class bridges); `w_y_plus` is W(MST(G_Y⁺)) of §3a,
    None when the penalised variant was not asked for.
    """

    value: float
    q: float
    w_x: float
    w_y: float
    n_points: int
    n_classes: int
    variant: str = "contracted"
    values: dict[str, float] = field(default_factory=dict)
    w_y_plus: float | None = None


@dataclass(frozen=True)
class GRTDResult:
    """GRTD over stages: `.value` is the mean of `.per_stage` (metrics.md §3.4), both of `variant`.

    `variants` maps every variant computed (the chosen one and the extras) to its stage mean.
    """

    value: float
    per_stage: dict[str, float]
    details: dict[str, GRTDStage] = field(default_factory=dict)
    lam: float = 1.0
    quantile: float = 0.9
    precision: str = "float32"
    device: str = "cpu"
    variant: str = "contracted"
    variants: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly view (plain floats, ints, strings and None)."""
        return {
            "value": self.value,
            "variant": self.variant,
            "variants": dict(self.variants),
            "per_stage": dict(self.per_stage),
            "details": {stage: asdict(v) for stage, v in self.details.items()},
            "lam": self.lam,
            "quantile": self.quantile,
            "precision": self.precision,
            "device": self.device,
        }


def _block_argmin(sq: NDArray[Any], r0: int, r1: int, c0: int, c1: int) -> tuple[int, int]:
    """(row, col) of the smallest entry of sq[r0:r1, c0:c1]; ties -> lowest row, then column."""
    best_val, best = np.inf, (r0, c0)
    for s0 in range(r0, r1, _ROWS):
        s1 = min(r1, s0 + _ROWS)
        blk = sq[s0:s1, c0:c1]
        mins = blk.min(axis=1)
        i = int(mins.argmin())
        if mins[i] < best_val:
            best_val = float(mins[i])
            best = (s0 + i, c0 + int(blk[i].argmin()))
    return best


def _dense_prim_weight(w: NDArray[np.float64]) -> float:
    """MST weight of a small dense symmetric graph (zero weights are real edges)."""
    n_nodes = w.shape[0]
    if n_nodes < 2:
        return 0.0
    in_tree = np.zeros(n_nodes, dtype=bool)
    in_tree[0] = True
    key = w[0].copy()
    chosen = []
    for _ in range(n_nodes - 1):
        open_key = np.where(in_tree, np.inf, key)
        u = int(open_key.argmin())
        chosen.append(float(open_key[u]))
        in_tree[u] = True
        key = np.minimum(key, w[u])
    return math.fsum(chosen)


def _torch_class_bridges(sq: Any, starts: NDArray[np.int64], ends: NDArray[np.int64]) -> NDArray[np.int64]:
    """(K(K-1)/2, 2) closest pair (i, j) between classes a < b (contiguous blocks of `sq`), in (a, b)
    order; ties -> lowest row, then lowest column, as `_block_argmin`."""
    import torch

    n_classes = starts.size
    picks = []
    for b in range(1, n_classes):
        s_b, e_b = int(starts[b]), int(ends[b])
        vals, cols = sq[:s_b, s_b:e_b].min(dim=1)  # first (lowest) column among tied minima
        for a in range(b):
            s_a, e_a = int(starts[a]), int(ends[a])
            i = torch.argmin(vals[s_a:e_a])  # first (lowest) row among tied minima
            picks.append(torch.stack([i + s_a, cols[s_a:e_a][i] + s_b]))
    by_b = torch.stack(picks).cpu().numpy().astype(np.int64)
    order = [n for a in range(n_classes) for b in range(a + 1, n_classes) for n in [b * (b - 1) // 2 + a]]
    return by_b[order]


def _torch_stage(
    x: NDArray[np.float64],
    starts: NDArray[np.int64],
    ends: NDArray[np.int64],
    precision: Precision,
    quantile: float,
    device: Any,
    lam: float | None = None,
) -> tuple[float, float, NDArray[np.int64], NDArray[np.int64] | None]:
    """(q, W(MST(G_X)) in units of d, class-bridge pairs, G_Y⁺ tree edges) on a torch device.

    With `lam` (the penalised variant asked for), the buffer's inter-class blocks are then raised
    in place to (λ q / scale)² and Boruvka runs again on it; otherwise the last item is None.
    """
    sq, scale = torch_squared_distances(x, device, precision)
    q = torch_distance_quantile(sq, scale, quantile)
    if not q > 0.0:
        raise ValueError("the distance quantile is 0: the features do not vary across the sampled points")
    bridges = _torch_class_bridges(sq, starts, ends)
    edges = boruvka_edges_from_sq(sq)
    plus_edges = None
    if lam is not None:
        floor = (lam * q / scale) ** 2
        for s, e in zip(starts.tolist(), ends.tolist()):
            sq[s:e, :s].clamp_(min=floor)  # views: in place, no (N, N) temporary
            sq[s:e, e:].clamp_(min=floor)
        plus_edges = boruvka_edges_from_sq(sq)
    del sq
    return q, math.fsum(edge_lengths(x, edges).tolist()), bridges, plus_edges


def _stage_device(device: Any, backend: str | None) -> Any:
    """None -> the numpy path; else the torch device that runs the torch path.

    device None / 'cpu' -> numpy; 'auto' -> CUDA when torch sees one, else numpy; 'cuda[:k]' ->
    torch on it (ValueError without CUDA). backend='torch' forces torch (on the CPU when the device
    would be numpy's), backend='numpy' forces numpy.
    """
    if backend not in (None, "numpy", "torch"):
        raise ValueError(f"backend must be None, 'numpy' or 'torch', got {backend!r}")
    if backend == "numpy":
        return None
    is_cpu = device is None or str(device) == "cpu"
    dev = None if is_cpu else resolve_device(device)
    if dev is not None and dev.type == "cpu":
        dev = None
    if dev is None and backend == "torch":
        import torch

        return torch.device("cpu")
    return dev


def _check_params(lam: float, quantile: float) -> None:
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number, got {lam}")
    if not (0.0 < quantile <= 1.0):
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}")


def _check_variants(variant: str, extra_variants: str | Sequence[str]) -> tuple[str, ...]:
    """The variants to compute: `variant` first, then the extras, without repeats (ValueError if unknown)."""
    extras = (extra_variants,) if isinstance(extra_variants, str) else tuple(extra_variants)
    for v in (variant, *extras):
        if v not in VARIANTS:
            raise ValueError(f"GRTD variant must be one of {', '.join(VARIANTS)}; got {v!r}")
    return tuple(dict.fromkeys((variant, *extras)))


def _raise_cross_blocks(sq: NDArray[Any], starts: NDArray[np.int64], ends: NDArray[np.int64], floor: float) -> None:
    """Raise every entry of `sq` that joins two classes (contiguous blocks) to at least `floor`, in place."""
    f = sq.dtype.type(floor)
    for s, e in zip(starts.tolist(), ends.tolist()):
        for blk in (sq[s:e, :s], sq[s:e, e:]):  # views: np.maximum writes in place, no temporary
            np.maximum(blk, f, out=blk)


def _penalised_weight(
    x: NDArray[np.float64], y: NDArray[np.int64], edges: NDArray[np.int64], q: float, lam: float
) -> float:
    """W(T) under G_Y⁺ in units of d̂: float64 edge lengths, max(d, λ q) on inter-class edges.

    Summed in units of d and divided by q once, as W(MST(G_X)) is, so that the same tree with no
    short crossing gives bit-identical weights (GRTD⁺ exactly 0).
    """
    d = edge_lengths(x, edges)
    cross = y[edges[:, 0]] != y[edges[:, 1]]
    return math.fsum(np.where(cross, np.maximum(d, lam * q), d).tolist()) / q


def grtd_stage_details(
    features: ArrayLike,
    labels: ArrayLike,
    lam: float = 1.0,
    quantile: float = 0.9,
    precision: Precision = "float32",
    device: Any = None,
    backend: str | None = None,
    variant: str = "contracted",
    extra_variants: str | Sequence[str] = (),
) -> GRTDStage:
    """GRTD of one stage's (N, D) sampled features with their N labels, with its ingredients.

    Parameters
    ----------
    features, labels
        (N, D) features and N integer labels (at least 2 classes).
    lam, quantile
        λ and the normalising distance quantile (metrics.md §3).
    precision
        Dtype of the distance buffer the trees are searched on; edges are re-measured in float64.
    device, backend
        None / 'cpu': numpy dense Prim; 'auto': CUDA when present; 'cuda': distance matrix,
        quantile, class bridges and Boruvka in torch on the GPU. `backend='torch'` runs the torch
        path on the CPU (tests), `backend='numpy'` forces numpy.
    variant, extra_variants
        "contracted" (§3) or "penalised" (§3a): `value` is `variant`, `values` holds it and every
        extra. The penalised tree costs one more N-node MST on the same buffer.

    Returns
    -------
    GRTDStage
    """
    _check_params(lam, quantile)
    wanted = _check_variants(variant, extra_variants)
    penalised = "penalised" in wanted
    dev = _stage_device(device, backend)
    x = as_points(features, name="features")
    y = as_labels(labels, x.shape[0], min_classes=2)
    # Sort by label so each class is a contiguous block of the distance buffer.
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    classes, starts = np.unique(y, return_index=True)
    ends = np.append(starts[1:], y.size)
    n_classes = classes.size
    if dev is None:
        sq, scale = squared_distance_buffer(x, precision)
        q = distance_quantile(sq, scale, quantile)
        if not q > 0.0:
            raise ValueError("the distance quantile is 0: the features do not vary across the sampled points")
        w_x = math.fsum(edge_lengths(x, prim_edges(sq)).tolist()) / q
        bridges = np.array(
            [
                _block_argmin(sq, int(starts[a]), int(ends[a]), int(starts[b]), int(ends[b]))
                for a in range(n_classes)
                for b in range(a + 1, n_classes)
            ],
            dtype=np.int64,
        )
        plus_edges = None
        if penalised:  # d̂ >= λ  <=>  buffer >= (λ q / scale)²: G_Y⁺'s order on the same buffer
            _raise_cross_blocks(sq, starts, ends, (lam * q / scale) ** 2)
            plus_edges = prim_edges(sq)
        del sq
    else:
        q, w_x_d, bridges, plus_edges = _torch_stage(
            x, starts, ends, precision, quantile, dev, lam=lam if penalised else None
        )
        w_x = w_x_d / q
    d_bridge = edge_lengths(x, bridges.reshape(-1, 2))
    contracted = np.zeros((n_classes, n_classes), dtype=np.float64)
    n_pair = 0
    for a in range(n_classes):
        for b in range(a + 1, n_classes):
            contracted[a, b] = contracted[b, a] = min(float(d_bridge[n_pair]) / q, lam)
            n_pair += 1
    w_y = _dense_prim_weight(contracted)
    n = x.shape[0]
    all_values = {"contracted": -(w_x - w_y) / (n - 1)}
    w_y_plus = None
    if plus_edges is not None:
        w_y_plus = _penalised_weight(x, y, plus_edges, q, lam)
        # G_Y⁺ >= G_X entrywise, so W(MST(G_Y⁺)) >= W(MST(G_X)); a negative difference can only be
        # the rounding of the two tree searches (float32 buffer: ~1e-6 relative) and is clipped.
        all_values["penalised"] = -max(w_y_plus - w_x, 0.0) / (n - 1)
    values = {v: all_values[v] for v in wanted}
    return GRTDStage(
        value=values[variant],
        q=q,
        w_x=w_x,
        w_y=w_y,
        n_points=n,
        n_classes=n_classes,
        variant=variant,
        values=values,
        w_y_plus=w_y_plus,
    )


def grtd_stage(
    features: ArrayLike,
    labels: ArrayLike,
    lam: float = 1.0,
    quantile: float = 0.9,
    precision: Precision = "float32",
    device: Any = None,
    backend: str | None = None,
    variant: str = "contracted",
) -> float:
    """GRTD_t of one stage in `variant` (see `grtd_stage_details`).

    "contracted": -(W(MST(G_X)) - W(MST(G_Y))) / (N - 1) (metrics.md §3); "penalised":
    -(W(MST(G_Y⁺)) - W(MST(G_X))) / (N - 1) (§3a). Both on d̂ = d / q.
    """
    return grtd_stage_details(
        features,
        labels,
        lam=lam,
        quantile=quantile,
        precision=precision,
        device=device,
        backend=backend,
        variant=variant,
    ).value


def grtd(
    stage_features: Mapping[str, ArrayLike],
    labels: ArrayLike,
    lam: float = 1.0,
    quantile: float = 0.9,
    stages: Sequence[str] | None = None,
    precision: Precision = "float32",
    device: Any = None,
    backend: str | None = None,
    variant: str = "contracted",
    extra_variants: str | Sequence[str] = (),
) -> GRTDResult:
    """Mean GRTD over `stages` of features sampled at the same points (metrics.md §3, §3a).

    Parameters
    ----------
    stage_features : mapping of str to array-like of shape (N, D_stage)
        Features per stage at the same N points, in the same order as `labels`.
    labels : array-like of shape (N,)
        Integer class of each point; at least two classes.
    lam : float, default=1.0
        λ, the cost floor of an inter-class step in the label graph.
    quantile : float, default=0.9
        Quantile q of the pairwise distances that normalises them (d̂ = d / q).
    stages : sequence of str, optional
        Stages to average; default every stage given.
    precision : {"float32", "float64"}, default="float32"
        Storage of the squared-distance buffer (edge lengths are re-measured in float64).
    device, backend : optional
        The MST path, as in `grtd_stage_details`; None runs numpy on the CPU.
    variant : {"contracted", "penalised"}, default="contracted"
        The variant in `.value` and `.per_stage`: §3 as written, or §3a.
    extra_variants : str or sequence of str, default=()
        Further variants computed from the same distance buffers, reported in `.variants`.

    Returns
    -------
    GRTDResult
        `.value` (stage mean, <= 0, higher is better), `.per_stage`, `.variants` and per-stage details.
    """
    wanted = _check_variants(variant, extra_variants)
    if not isinstance(stage_features, Mapping) or len(stage_features) == 0:
        raise ValueError("stage_features must be a non-empty mapping of stage name -> (N, D) features")
    names = list(stage_features) if stages is None else list(stages)
    if not names:
        raise ValueError("stages is empty")
    missing = [s for s in names if s not in stage_features]
    if missing:
        raise ValueError(f"stages not in stage_features: {missing}")
    dev = _stage_device(device, backend)
    details = {
        s: grtd_stage_details(
            stage_features[s],
            labels,
            lam=lam,
            quantile=quantile,
            precision=precision,
            device=device,
            backend=backend,
            variant=variant,
            extra_variants=wanted[1:],
        )
        for s in names
    }
    per_stage = {s: d.value for s, d in details.items()}
    means = {v: math.fsum(d.values[v] for d in details.values()) / len(details) for v in wanted}
    return GRTDResult(
        value=means[variant],
        per_stage=per_stage,
        details=details,
        lam=float(lam),
        quantile=float(quantile),
        precision=precision,
        device="cpu" if dev is None else f"torch:{dev}",
        variant=variant,
        variants=means,
    )
