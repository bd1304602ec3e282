"""Multi-scale feature extraction at given physical points (metrics.md §2 and §4.2).

For one case: normalise, resample to the model's spacing, pad, run sliding windows (one window
batch in memory at a time), and for each requested stage read the features at the requested
original-grid points by trilinear interpolation with voxel centres aligned
(u = (q + 0.5) / stride - 0.5 in the window's stage grid). Overlapping windows are blended with
nnU-Net's Gaussian importance weights. A point is read only from windows whose stage grid holds
its whole interpolation cell; points that no window holds that way (within half a stage cell of
the padded volume's border) are read with clamped (edge) interpolation.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from models_registry.specs import PreprocessingSpec
from worker.adapters.base import FeatureModel
from worker.preprocess import WindowLayout, layout_for, model_input

GAUSSIAN_SIGMA_SCALE = 1.0 / 8.0  # nnU-Net's sliding-window importance map


@dataclass
class CaseVolume:
    """One pilot case: `image` (C, X, Y, Z) float32, `label` (X, Y, Z) int, `spacing` in mm."""

    image: NDArray[np.float32]
    label: NDArray[np.integer]
    spacing: tuple[float, float, float]

    def __post_init__(self) -> None:
        img = np.asarray(self.image)
        if img.ndim == 3:
            img = img[None]
        if img.ndim != 4:
            raise ValueError(f"image must be (C, X, Y, Z), got shape {img.shape}")
        if not np.issubdtype(img.dtype, np.number):
            raise ValueError(f"image must be numeric, got {img.dtype}")
        img = img.astype(np.float32, copy=False)
        if not np.all(np.isfinite(img)):
            raise ValueError("image contains NaN or inf")
        lab = np.asarray(self.label)
        if lab.shape != img.shape[1:]:
            raise ValueError(f"label shape {lab.shape} does not match image spatial shape {img.shape[1:]}")
        if np.issubdtype(lab.dtype, np.floating):
            if not np.all(np.isfinite(lab)) or not np.all(lab == np.round(lab)):
                raise ValueError("label must hold integer class ids")
        elif not (np.issubdtype(lab.dtype, np.integer) or lab.dtype == bool):
            raise ValueError(f"label must be integer, got {lab.dtype}")
        if lab.size and lab.min() < 0:
            raise ValueError("label holds negative values")
        sp = tuple(float(s) for s in self.spacing)
        if len(sp) != 3 or not all(np.isfinite(sp)) or min(sp) <= 0:
            raise ValueError(f"spacing must be 3 positive finite numbers, got {self.spacing}")
        self.image = img
        self.label = lab.astype(np.int64, copy=False)
        self.spacing = sp  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.label.shape)  # type: ignore[return-value]

    @property
    def n_channels(self) -> int:
        return int(self.image.shape[0])


@dataclass
class CaseExtraction:
    """Features per requested stage, (N_stage, C_stage) float32 in the order of the request."""

    features: dict[str, NDArray[np.float32]]
    layout: WindowLayout
    diagnostics: dict[str, Any] = field(default_factory=dict)


def case_layout(case: CaseVolume, prep: PreprocessingSpec, coarsest: Sequence[int], overlap: float) -> WindowLayout:
    """The padded window layout of `case` in the model grid of `prep`."""
    return layout_for(case.image, case.spacing, prep, coarsest, overlap)


def trilinear(fmap: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Features of a (C, n0, n1, n2) map at continuous cell coordinates u (M, 3) -> (M, C).

    Coordinates outside [0, n-1] are clamped (edge values). Exact for maps linear in position.
    """
    sizes = [int(s) for s in fmap.shape[1:]]
    n = torch.tensor(sizes, device=u.device, dtype=u.dtype)
    u = torch.minimum(torch.clamp(u, min=0.0), n - 1)
    i0 = torch.floor(u).long()
    t = (u - i0.to(u.dtype)).to(fmap.dtype)
    i1 = torch.minimum(i0 + 1, (n - 1).long())
    flat = fmap.reshape(fmap.shape[0], -1)
    if u.shape[0] * 8 < flat.shape[1]:  # few points on a big map: gather columns, no copy of the map

        def gather(idx: torch.Tensor) -> torch.Tensor:
            return flat[:, idx].T

    else:  # many points: one channels-last copy, then contiguous row gathers
        rows = flat.T.contiguous()

        def gather(idx: torch.Tensor) -> torch.Tensor:
            return rows[idx]

    out = torch.zeros((u.shape[0], fmap.shape[0]), dtype=fmap.dtype, device=fmap.device)
    for cx in (0, 1):
        ix = i1[:, 0] if cx else i0[:, 0]
        wx = t[:, 0] if cx else 1 - t[:, 0]
        for cy in (0, 1):
            iy = i1[:, 1] if cy else i0[:, 1]
            wxy = wx * (t[:, 1] if cy else 1 - t[:, 1])
            base = (ix * sizes[1] + iy) * sizes[2]
            for cz in (0, 1):
                iz = i1[:, 2] if cz else i0[:, 2]
                w = wxy * (t[:, 2] if cz else 1 - t[:, 2])
                out.addcmul_(gather(base + iz), w[:, None])
    return out


def gaussian_weight(local: NDArray[np.float64], patch: Sequence[int]) -> NDArray[np.float64]:
    """nnU-Net's Gaussian importance (sigma = patch / 8) at window-local voxel coordinates."""
    p = np.asarray(patch, np.float64)
    z = (local - (p - 1) / 2) / (p * GAUSSIAN_SIGMA_SCALE)
    return np.exp(-0.5 * np.sum(z * z, axis=-1))


def _has_valid_window(u_global: NDArray[np.float64], starts_cells: Sequence[NDArray[np.int64]], n_cells: Sequence[int]) -> NDArray[np.bool_]:
    ok = np.ones(u_global.shape[0], dtype=bool)
    for a in range(3):
        s = starts_cells[a][None, :]
        ua = u_global[:, a : a + 1]
        ok &= np.any((ua >= s) & (ua <= s + n_cells[a] - 1), axis=1)
    return ok


class PointMerger:
    """Blends one stage's window maps into features at fixed query points (MONAI's Merger, for points).

    `aggregate` adds a window's stage map: every point whose whole interpolation cell lies in that
    window gets the trilinear value times the window's Gaussian weight at the point. Points that no
    window holds that way (`border`, within half a stage cell of the padded border) are read with
    clamped interpolation from every window that covers them and kept apart. `finalize` divides by
    the summed weights and returns (N, C) float32 in the order of the queries.
    """

    def __init__(
        self,
        q_padded: NDArray[np.float64],
        stride: Sequence[int],
        channels: int,
        layout: WindowLayout,
        device: torch.device,
        name: str = "",
    ) -> None:
        self.name = name
        self.q = q_padded
        self.stride = np.asarray(stride, np.float64)
        self.patch = np.asarray(layout.patch)
        self.device = device
        n_cells = [int(p // s) for p, s in zip(layout.patch, stride)]
        starts_cells = [np.asarray(s0, np.int64) // int(stg) for s0, stg in zip(layout.starts, stride)]
        valid_somewhere = _has_valid_window((self.q + 0.5) / self.stride - 0.5, starts_cells, n_cells)
        self.border = np.flatnonzero(~valid_somewhere)
        n, nb = self.q.shape[0], int(self.border.size)
        self.acc = torch.zeros((n, channels), dtype=torch.float32, device=device)
        self.wsum = torch.zeros(n, dtype=torch.float64, device=device)
        self.border_acc = torch.zeros((nb, channels), dtype=torch.float32, device=device)
        self.border_wsum = torch.zeros(nb, dtype=torch.float64, device=device)

    def aggregate(self, fmap: torch.Tensor, start: NDArray[np.float64]) -> None:
        """Add the stage map `fmap` (C, n0, n1, n2) of the window starting at padded voxel `start`."""
        local = self.q - start
        u = (local + 0.5) / self.stride - 0.5
        n_cells = np.asarray(fmap.shape[1:], np.float64)
        valid = np.all((u >= 0) & (u <= n_cells - 1), axis=1)
        border = self.border
        if border.size:
            valid[border] = False
        idx = np.flatnonzero(valid)
        if idx.size:
            self._add(self.acc, self.wsum, idx, fmap, u[idx], local[idx])
        if border.size:
            lb = local[border]
            inside = np.all((lb >= -0.5) & (lb < self.patch - 0.5), axis=1)
            bidx = np.flatnonzero(inside)
            if bidx.size:
                self._add(self.border_acc, self.border_wsum, bidx, fmap, u[border[bidx]], lb[bidx])

    def _add(
        self, acc: torch.Tensor, wsum: torch.Tensor, rows: NDArray[np.int64], fmap: torch.Tensor,
        u: NDArray[np.float64], local: NDArray[np.float64],
    ) -> None:
        w = gaussian_weight(local, self.patch)
        vals = trilinear(fmap, torch.as_tensor(u, device=self.device))
        wt = torch.as_tensor(w, device=self.device)
        at = torch.as_tensor(rows, device=self.device)
        acc[at] += vals * wt[:, None].to(vals.dtype)
        wsum[at] += wt

    def finalize(self) -> NDArray[np.float32]:
        """The blended features (N, C); RuntimeError if a point got no window (a layout bug)."""
        acc, w = self.acc, self.wsum
        border, device = self.border, self.device
        if border.size:
            bw = self.border_wsum
            if torch.any(bw <= 0):
                raise RuntimeError(f"stage {self.name}: {int((bw <= 0).sum())} points lie in no window (layout bug)")
            acc[torch.as_tensor(border, device=device)] = (self.border_acc / bw[:, None].to(torch.float32)).to(acc.dtype)
            w = w.clone()
            w[torch.as_tensor(border, device=device)] = 1.0
        if torch.any(w <= 0):
            raise RuntimeError(f"stage {self.name}: {int((w <= 0).sum())} points got no window (layout bug)")
        interior = torch.ones(acc.shape[0], dtype=torch.bool, device=device)
        if border.size:
            interior[torch.as_tensor(border, device=device)] = False
        acc[interior] = acc[interior] / w[interior, None].to(torch.float32)
        return acc.cpu().numpy()


def _check_request(model: FeatureModel, case: CaseVolume, queries: Mapping[str, NDArray[np.floating]], batch_size: int) -> PreprocessingSpec:
    prep = model.preprocessing
    if prep is None:
        raise ValueError("the model has no preprocessing spec (spacing, patch size); set it in the registry spec")
    if case.n_channels != model.in_channels:
        raise ValueError(f"case has {case.n_channels} channels, the model was built for {model.in_channels}")
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    names = {s.name for s in model.stages}
    for name, pts in queries.items():
        if name not in names:
            raise ValueError(f"unknown stage {name!r}; stages: {sorted(names)}")
        arr = np.asarray(pts)
        if arr.ndim != 2 or arr.shape[1] != 3:
            raise ValueError(f"points for stage {name!r} must be (N, 3), got {arr.shape}")
    return prep


def extract_case(
    model: FeatureModel,
    case: CaseVolume,
    queries: Mapping[str, NDArray[np.floating]],
    *,
    overlap: float = 0.5,
    batch_size: int = 1,
    progress: Callable[[float], None] | None = None,
    autocast_bf16: bool = True,
) -> CaseExtraction:
    """Features of `case` at `queries[stage]` ((N, 3) original-grid voxel coordinates) per stage.

    Split the padded model-grid volume into windows, run them in batches, let each stage's
    `PointMerger` aggregate the window maps, and finalize.
    """
    prep = _check_request(model, case, queries, batch_size)
    t0 = time.perf_counter()
    layout = case_layout(case, prep, model.coarsest_stride, overlap)
    img_t = model_input(case.image, case.spacing, prep, layout)
    device = model.device
    patch = np.asarray(layout.patch)
    stages = {s.name: s for s in model.stages}
    mergers = {
        name: PointMerger(layout.to_padded(np.asarray(pts, np.float64)), stages[name].stride, stages[name].channels, layout, device, name)
        for name, pts in queries.items()
    }
    windows = layout.windows()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and autocast_bf16 else contextlib.nullcontext()
    n_forward = 0
    for b0 in range(0, len(windows), batch_size):
        batch = windows[b0 : b0 + batch_size]
        x = torch.stack(
            [img_t[:, s0 : s0 + patch[0], s1 : s1 + patch[1], s2 : s2 + patch[2]] for s0, s1, s2 in batch]
        ).to(device, non_blocking=True)
        with torch.no_grad(), amp:
            maps = model.forward(x)
        n_forward += 1
        for name, merger in mergers.items():
            for j, start in enumerate(batch):
                merger.aggregate(maps[name][j].float(), np.asarray(start, np.float64))
        del maps, x
        if progress is not None:
            progress(min(1.0, (b0 + len(batch)) / len(windows)))
    features = {name: merger.finalize() for name, merger in mergers.items()}
    diag = {
        "model_shape": list(layout.model_shape),
        "padded_shape": list(layout.padded_shape),
        "n_windows": layout.n_windows,
        "n_forward_batches": n_forward,
        "border_points": {name: int(merger.border.size) for name, merger in mergers.items()},
        "window_starts": [list(a) for a in layout.starts],
        "blend": f"gaussian, sigma = patch * {GAUSSIAN_SIGMA_SCALE}",
        "seconds": time.perf_counter() - t0,
    }
    return CaseExtraction(features=features, layout=layout, diagnostics=diag)
