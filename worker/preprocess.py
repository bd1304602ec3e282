"""Per-model preprocessing (metrics.md §1): intensity normalisation, resampling to the model's
spacing (image linear, label nearest), and the padded sliding-window layout whose steps and last
start are multiples of the coarsest stride.

Geometry convention (voxel centres, as `torch.nn.functional.interpolate(align_corners=False)`):
an original voxel index p maps to the resampled grid at q = (p + 0.5) * n_new / n_old - 0.5, then
to the padded grid at q + pad_before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from models_registry.specs import PreprocessingSpec

ZSCORE_EPS = 1e-8


def normalize(image: NDArray[np.floating], prep: PreprocessingSpec) -> NDArray[np.float32]:
    """Normalise a (C, X, Y, Z) image per channel: z-score per volume, CT clip + scale, or none."""
    img = np.asarray(image, dtype=np.float32)
    if prep.normalization == "none":
        return img.copy()
    if prep.normalization == "zscore":
        out = np.empty_like(img)
        for c in range(img.shape[0]):
            ch = img[c].astype(np.float64)
            mean, std = ch.mean(), ch.std()
            out[c] = ((ch - mean) / max(std, ZSCORE_EPS)).astype(np.float32)
        return out
    lo, hi = prep.ct_clip  # type: ignore[misc]
    mean = prep.ct_mean if prep.ct_mean is not None else (lo + hi) / 2.0
    std = prep.ct_std if prep.ct_std is not None else (hi - lo) / 2.0
    return ((np.clip(img, lo, hi) - mean) / std).astype(np.float32)


def resampled_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """Grid size at `target` spacing covering the same extent: round(n * spacing / target), >= 1."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))  # type: ignore[return-value]


def resample_image(image: NDArray[np.float32], shape: Sequence[int]) -> torch.Tensor:
    """Trilinear resampling of a (C, X, Y, Z) image to `shape` (voxel-centre aligned); float32 tensor."""
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if tuple(t.shape[1:]) == tuple(shape):
        return t.clone()
    return F.interpolate(t[None], size=tuple(int(s) for s in shape), mode="trilinear", align_corners=False)[0]


def resample_label(label: NDArray[np.integer], shape: Sequence[int]) -> NDArray[np.int64]:
    """Nearest-neighbour resampling of a label map with the same voxel-centre convention."""
    lab = np.asarray(label)
    idx = []
    for n_old, n_new in zip(lab.shape, shape):
        src = np.floor((np.arange(n_new) + 0.5) * n_old / n_new).astype(np.int64)
        idx.append(np.clip(src, 0, n_old - 1))
    return lab[np.ix_(*idx)].astype(np.int64)


def window_starts(size: int, patch: int, step: int) -> list[int]:
    """Starts 0, step, 2*step, ... and a last start at size - patch (the volume is padded so that
    `size` and `patch` are multiples of the coarsest stride, which makes every start one too)."""
    if patch > size:
        raise ValueError(f"patch {patch} larger than the padded size {size}")
    starts = list(range(0, size - patch, step)) + [size - patch]
    return sorted(set(starts))


@dataclass(frozen=True)
class WindowLayout:
    """Where a case sits in the padded model grid and which windows cover it."""

    original_shape: tuple[int, int, int]
    model_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    patch: tuple[int, int, int]
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @property
    def scale(self) -> NDArray[np.float64]:
        """Model-grid voxels per original voxel, per axis."""
        return np.asarray(self.model_shape, np.float64) / np.asarray(self.original_shape, np.float64)

    def to_padded(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Original-grid voxel coordinates -> padded model-grid voxel coordinates."""
        p = np.asarray(points, dtype=np.float64)
        return (p + 0.5) * self.scale - 0.5 + np.asarray(self.pad_before, np.float64)

    def stride_in_original(self, stride: Sequence[int]) -> NDArray[np.float64]:
        """A stage stride (model voxels) expressed in original-grid voxels, per axis."""
        return np.asarray(stride, np.float64) / self.scale

    def windows(self) -> list[tuple[int, int, int]]:
        return [(a, b, c) for a in self.starts[0] for b in self.starts[1] for c in self.starts[2]]

    @property
    def n_windows(self) -> int:
        return len(self.starts[0]) * len(self.starts[1]) * len(self.starts[2])


def plan_windows(
    original_shape: Sequence[int],
    model_shape: Sequence[int],
    patch: Sequence[int],
    coarsest: Sequence[int],
    overlap: float = 0.5,
) -> WindowLayout:
    """Pad to at least the patch and to a multiple of the coarsest stride (centred), and lay out
    windows with steps that are multiples of the coarsest stride, overlapping by >= one coarsest
    cell whenever there is more than one window (so every interior point has a window in which
    each stage can interpolate it)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    padded, before, starts = [], [], []
    for n, p, s in zip(model_shape, patch, coarsest):
        if p % s:
            raise ValueError(f"patch size {tuple(patch)} must be a multiple of the coarsest stride {tuple(coarsest)}")
        size = max(p, int(math.ceil(n / s)) * s)
        step = max(s, int(p * (1.0 - overlap)) // s * s)
        if p > s:
            step = min(step, p - s)
        padded.append(size)
        before.append((size - n) // 2)
        starts.append(tuple(window_starts(size, p, step)))
    return WindowLayout(
        original_shape=tuple(int(v) for v in original_shape),  # type: ignore[arg-type]
        model_shape=tuple(int(v) for v in model_shape),  # type: ignore[arg-type]
        padded_shape=tuple(padded),  # type: ignore[arg-type]
        pad_before=tuple(before),  # type: ignore[arg-type]
        patch=tuple(int(v) for v in patch),  # type: ignore[arg-type]
        starts=tuple(starts),  # type: ignore[arg-type]
    )


def pad_to_layout(image: torch.Tensor, layout: WindowLayout, value: float = 0.0) -> torch.Tensor:
    """Constant-pad a (C, X, Y, Z) model-grid image into the layout's padded grid."""
    pads = []
    for n, size, b in reversed(list(zip(layout.model_shape, layout.padded_shape, layout.pad_before))):
        pads += [b, size - n - b]
    if not any(pads):
        return image
    return F.pad(image, pads, mode="constant", value=value)
