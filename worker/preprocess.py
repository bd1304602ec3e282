"""Per-model preprocessing (metrics.md §1): intensity normalisation, resampling to the model's
spacing (image linear, label nearest; or nnU-Net's way, below), and the padded sliding-window
layout whose steps and last start are multiples of the coarsest stride.

Geometry convention (voxel centres, as `torch.nn.functional.interpolate(align_corners=False)` and
skimage's `resize`): an original voxel index p is first moved into the model's axis order
(`transpose_forward`) and the crop (`crop_to_nonzero`: c = p - crop_lo), then maps to the
resampled grid at q = (c + 0.5) * n_new / n_crop - 0.5, then to the padded grid at q + pad_before.
Points outside the crop land in the zero padding around it, which the layout makes wide enough.

nnU-Net's way (`PreprocessingSpec.resampling = "nnunet"`, as nnssl's default preprocessor does it):
transpose, crop to the non-zero box, z-score (optionally inside the non-zero mask), then resample
each channel with third-order splines (edge mode, clipped to the input's range); when the spacing
is anisotropic beyond 3:1 along one axis, in-plane first and order 0 across slices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from scipy import ndimage

from models_registry.specs import PreprocessingSpec

ZSCORE_EPS = 1e-8
ANISO_THRESHOLD = 3.0
"""nnU-Net resamples across slices separately (order 0) when max/min spacing exceeds this."""


def nonzero_box(image: NDArray[np.floating]) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(lo, hi) of the bounding box of voxels non-zero in any channel of a (C, X, Y, Z) image,
    hi exclusive; the whole volume when every voxel is zero."""
    nz = np.any(np.asarray(image) != 0, axis=0)
    if not nz.any():
        return (0, 0, 0), tuple(int(n) for n in nz.shape)  # type: ignore[return-value]
    lo, hi = [], []
    for axis in range(3):
        hit = np.flatnonzero(np.any(nz, axis=tuple(a for a in range(3) if a != axis)))
        lo.append(int(hit[0]))
        hi.append(int(hit[-1]) + 1)
    return tuple(lo), tuple(hi)  # type: ignore[return-value]


def nonzero_mask(image: NDArray[np.floating]) -> NDArray[np.bool_]:
    """Voxels non-zero in any channel, holes filled (nnU-Net's mask for `use_mask_for_norm`)."""
    return ndimage.binary_fill_holes(np.any(np.asarray(image) != 0, axis=0))  # type: ignore[no-any-return]


def normalize(image: NDArray[np.floating], prep: PreprocessingSpec, mask: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """Normalise a (C, X, Y, Z) image per channel: z-score per volume (inside `mask`, zero
    outside, when given), CT clip + scale, or none."""
    img = np.asarray(image, dtype=np.float32)
    if prep.normalization == "none":
        return img.copy()
    if prep.normalization == "zscore":
        out = np.zeros_like(img) if mask is not None else np.empty_like(img)
        for c in range(img.shape[0]):
            ch = img[c].astype(np.float64)
            if mask is not None:
                vals = ch[mask]
                mean, std = (vals.mean(), vals.std()) if vals.size else (0.0, 1.0)
                out[c][mask] = ((vals - mean) / max(std, ZSCORE_EPS)).astype(np.float32)
            else:
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


def separate_z_axis(spacing: Sequence[float], target: Sequence[float]) -> int | None:
    """The axis nnU-Net resamples on its own (order 0), or None: the single coarsest axis of the
    current spacing if it is anisotropic beyond `ANISO_THRESHOLD`, else of the target spacing;
    None when no spacing is that anisotropic or two or three axes tie for coarsest."""
    for sp in (np.asarray(spacing, np.float64), np.asarray(target, np.float64)):
        if sp.max() / sp.min() > ANISO_THRESHOLD:
            coarse = np.flatnonzero(sp == sp.max())
            return int(coarse[0]) if coarse.size == 1 else None
    return None


def _spline_resize(x: NDArray[np.float64], shape: Sequence[int], order: int) -> NDArray[np.float64]:
    """skimage's `resize(mode="edge", anti_aliasing=False)` of one array: voxel-centre zoom, clipped to the input's range."""
    if tuple(x.shape) == tuple(shape):
        return x
    out = ndimage.zoom(x, [n / o for n, o in zip(shape, x.shape)], order=order, mode="nearest", grid_mode=True)
    return np.clip(out, x.min(), x.max())


def resample_image_nnunet(
    image: NDArray[np.float32], shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> torch.Tensor:
    """Resample a (C, X, Y, Z) image to `shape` as nnU-Net's `resample_data_or_seg_to_shape` does
    for images (order 3, order 0 across slices on a separate-z axis); float32 tensor."""
    shape = tuple(int(n) for n in shape)
    img = np.asarray(image, dtype=np.float64)
    if tuple(img.shape[1:]) == shape:
        return torch.from_numpy(img.astype(np.float32))
    axis = separate_z_axis(spacing, target)
    out = np.empty((img.shape[0], *shape), dtype=np.float32)
    for c in range(img.shape[0]):
        if axis is None:
            out[c] = _spline_resize(img[c], shape, 3)
            continue
        plane = [n for a, n in enumerate(shape) if a != axis]
        slices = [_spline_resize(np.take(img[c], k, axis=axis), plane, 3) for k in range(img.shape[axis + 1])]
        stacked = np.stack(slices, axis=axis)
        n_old, n_new = stacked.shape[axis], shape[axis]
        if n_old != n_new:  # order 0 across slices, voxel centres: nearest of (i + 0.5) * n_old / n_new - 0.5
            src = np.floor((np.arange(n_new) + 0.5) * n_old / n_new - 0.5 + 0.5).astype(np.int64)
            stacked = np.take(stacked, np.clip(src, 0, n_old - 1), axis=axis)
        out[c] = stacked
    return torch.from_numpy(out)


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
    """Where a case sits in the padded model grid and which windows cover it.

    `original_shape` is the case's grid; `transpose` is the model's axis order; `crop_lo` and
    `crop_shape` (model axis order) the part of the case that is resampled to `model_shape`
    (the whole case unless the model crops to the non-zero box); every other shape is in the
    model's axis order."""

    original_shape: tuple[int, int, int]
    model_shape: tuple[int, int, int]
    padded_shape: tuple[int, int, int]
    pad_before: tuple[int, int, int]
    patch: tuple[int, int, int]
    starts: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    crop_lo: tuple[int, int, int] = (0, 0, 0)
    crop_shape: tuple[int, int, int] | None = None
    transpose: tuple[int, int, int] = (0, 1, 2)

    @property
    def cropped_shape(self) -> tuple[int, int, int]:
        """The resampled region's shape in the original grid's voxels, model axis order."""
        if self.crop_shape is not None:
            return self.crop_shape
        return tuple(self.original_shape[a] for a in self.transpose)  # type: ignore[return-value]

    @property
    def scale(self) -> NDArray[np.float64]:
        """Model-grid voxels per original voxel, per model axis."""
        return np.asarray(self.model_shape, np.float64) / np.asarray(self.cropped_shape, np.float64)

    def to_padded(self, points: NDArray[np.floating]) -> NDArray[np.float64]:
        """Original-grid voxel coordinates (original axis order) -> padded model-grid voxel coordinates."""
        p = np.asarray(points, dtype=np.float64)[:, list(self.transpose)] - np.asarray(self.crop_lo, np.float64)
        return (p + 0.5) * self.scale - 0.5 + np.asarray(self.pad_before, np.float64)

    def stride_in_original(self, stride: Sequence[int]) -> NDArray[np.float64]:
        """A stage stride (model voxels, model axis order) in original-grid voxels, original axis order."""
        per_model_axis = np.asarray(stride, np.float64) / self.scale
        out = np.empty(3, np.float64)
        out[list(self.transpose)] = per_model_axis
        return out

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
    *,
    crop_lo: Sequence[int] = (0, 0, 0),
    crop_shape: Sequence[int] | None = None,
    transpose: Sequence[int] = (0, 1, 2),
) -> WindowLayout:
    """Pad to at least the patch and to a multiple of the coarsest stride (centred), and lay out
    windows with steps that are multiples of the coarsest stride, overlapping by >= one coarsest
    cell whenever there is more than one window (so every interior point has a window in which
    each stage can interpolate it). With a crop, the padding also reaches every voxel of the case
    outside it (model axis order for `crop_lo`, `crop_shape`)."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    full = [int(original_shape[a]) for a in transpose]
    crop = [int(v) for v in (crop_shape if crop_shape is not None else full)]
    padded, before, starts = [], [], []
    for n, p, s, lo, nc, nf in zip(model_shape, patch, coarsest, crop_lo, crop, full):
        if p % s:
            raise ValueError(f"patch size {tuple(patch)} must be a multiple of the coarsest stride {tuple(coarsest)}")
        scale = n / nc
        need_before = int(math.ceil(lo * scale - 1e-9))  # model voxels between the case's first voxel and the crop
        need_after = int(math.ceil((nf - lo - nc) * scale - 1e-9))
        span = need_before + n + need_after
        size = max(p, int(math.ceil(span / s)) * s)
        step = max(s, int(p * (1.0 - overlap)) // s * s)
        if p > s:
            step = min(step, p - s)
        padded.append(size)
        before.append(need_before + (size - span) // 2)
        starts.append(tuple(window_starts(size, p, step)))
    return WindowLayout(
        original_shape=tuple(int(v) for v in original_shape),  # type: ignore[arg-type]
        model_shape=tuple(int(v) for v in model_shape),  # type: ignore[arg-type]
        padded_shape=tuple(padded),  # type: ignore[arg-type]
        pad_before=tuple(before),  # type: ignore[arg-type]
        patch=tuple(int(v) for v in patch),  # type: ignore[arg-type]
        starts=tuple(starts),  # type: ignore[arg-type]
        crop_lo=tuple(int(v) for v in crop_lo),  # type: ignore[arg-type]
        crop_shape=tuple(crop) if crop_shape is not None else None,  # type: ignore[arg-type]
        transpose=tuple(int(v) for v in transpose),  # type: ignore[arg-type]
    )


def layout_for(
    image: NDArray[np.floating], spacing: Sequence[float], prep: PreprocessingSpec, coarsest: Sequence[int], overlap: float
) -> WindowLayout:
    """The padded window layout of a (C, X, Y, Z) image at `spacing` in the model grid of `prep`
    (transpose, non-zero crop and target spacing as the spec says)."""
    perm = list(prep.transpose_forward)
    shape = tuple(int(image.shape[1 + a]) for a in range(3))
    shape_t = [shape[a] for a in perm]
    spacing_t = [float(spacing[a]) for a in perm]
    if prep.crop_to_nonzero:
        lo, hi = nonzero_box(np.transpose(image, [0, *(a + 1 for a in perm)]))
        crop_shape: tuple[int, ...] | None = tuple(h - low for low, h in zip(lo, hi))
    else:
        lo, crop_shape = (0, 0, 0), None
    model_shape = resampled_shape(crop_shape or shape_t, spacing_t, prep.spacing)
    return plan_windows(shape, model_shape, prep.patch_size, coarsest, overlap, crop_lo=lo, crop_shape=crop_shape, transpose=perm)


def model_input(image: NDArray[np.floating], spacing: Sequence[float], prep: PreprocessingSpec, layout: WindowLayout) -> torch.Tensor:
    """The padded model-grid volume (C, *padded_shape) the windows are cut from: transpose, crop,
    normalise, resample and zero-pad as `prep` says (module docstring)."""
    perm = list(layout.transpose)
    img = np.transpose(np.asarray(image), [0, *(a + 1 for a in perm)])
    lo, shape = layout.crop_lo, layout.cropped_shape
    img = img[:, lo[0] : lo[0] + shape[0], lo[1] : lo[1] + shape[1], lo[2] : lo[2] + shape[2]]
    mask = nonzero_mask(img) if prep.use_mask_for_norm else None
    norm = normalize(img, prep, mask)
    if prep.resampling == "nnunet":
        resampled = resample_image_nnunet(norm, layout.model_shape, [float(spacing[a]) for a in perm], prep.spacing)
    else:
        resampled = resample_image(norm, layout.model_shape)
    return pad_to_layout(resampled, layout)


def pad_to_layout(image: torch.Tensor, layout: WindowLayout, value: float = 0.0) -> torch.Tensor:
    """Constant-pad a (C, X, Y, Z) model-grid image into the layout's padded grid."""
    pads = []
    for n, size, b in reversed(list(zip(layout.model_shape, layout.padded_shape, layout.pad_before))):
        pads += [b, size - n - b]
    if not any(pads):
        return image
    return F.pad(image, pads, mode="constant", value=value)
