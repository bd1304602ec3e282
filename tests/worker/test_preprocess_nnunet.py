"""nnU-Net / nnssl preprocessing: our `model_input` equals a transcription of nnU-Net's own steps
(crop_to_nonzero, ZScoreNormalization, resample_data_or_seg_to_shape, on skimage and scipy as
nnU-Net calls them) on anisotropic and zero-padded volumes, and feature points still land on the
right physical coordinates after crop and transpose."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes, map_coordinates
from skimage.transform import resize

from models_registry.specs import PreprocessingSpec
from test_extract import checkable, coord_model
from transferability.sampling import patch_grid, sample_points
from worker.extract import CaseVolume, extract_case
from worker.preprocess import layout_for, model_input, separate_z_axis


# ------------------------------------------------------------------ the oracle: nnU-Net's steps, transcribed
def _oracle_separate_z(spacing, target):
    """nnU-Net's `resample_data_or_seg_to_shape` with force_separate_z=None (ANISO_THRESHOLD 3)."""
    def lowres(sp):
        return np.where(max(sp) / np.array(sp) == 1)[0]

    if max(spacing) / min(spacing) > 3:
        axis = lowres(spacing)
    elif max(target) / min(target) > 3:
        axis = lowres(target)
    else:
        return None
    return int(axis[0]) if len(axis) == 1 else None


def _oracle_resample(data, new_shape, spacing, target):
    """`resample_data_or_seg` for images: order 3, order_z 0."""
    data = data.astype(float)
    shape = np.array(data[0].shape)
    if np.all(shape == np.array(new_shape)):
        return data
    axis = _oracle_separate_z(spacing, target)
    out = []
    for c in range(data.shape[0]):
        if axis is None:
            out.append(resize(data[c], new_shape, 3, mode="edge", anti_aliasing=False))
            continue
        plane = [n for a, n in enumerate(new_shape) if a != axis]
        slices = [resize(np.take(data[c], k, axis=axis), plane, 3, mode="edge", anti_aliasing=False) for k in range(shape[axis])]
        stacked = np.stack(slices, axis)
        if shape[axis] != new_shape[axis]:
            rows, cols, dim = new_shape
            orig = stacked.shape
            grid = np.mgrid[:rows, :cols, :dim].astype(float)
            for a, (o, n) in enumerate(zip(orig, new_shape)):
                grid[a] = o / n * (grid[a] + 0.5) - 0.5
            stacked = map_coordinates(stacked, grid, order=0, mode="nearest")
        out.append(stacked)
    return np.stack(out).astype(np.float32)


def oracle(image, spacing, target, transpose=(0, 1, 2), use_mask_for_norm=False):
    """transpose -> crop_to_nonzero -> ZScoreNormalization (float32, as nnU-Net) -> resample."""
    data = np.transpose(image, [0, *(a + 1 for a in transpose)]).astype(np.float32)
    sp = [spacing[a] for a in transpose]
    nonzero = binary_fill_holes(np.any(data != 0, axis=0))
    idx = np.where(nonzero)
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
    data = data[(slice(None), *box)]
    mask = nonzero[box]
    out = np.empty_like(data)
    for c in range(data.shape[0]):
        img = data[c].copy()
        if use_mask_for_norm:
            mean, std = img[mask].mean(), img[mask].std()
            img[mask] = (img[mask] - mean) / max(std, 1e-8)
            img[~mask] = 0  # nnU-Net leaves the outside as it was: zero, since it is the image's zero region
        else:
            img = (img - img.mean()) / max(img.std(), 1e-8)
        out[c] = img
    new_shape = np.round(np.array(sp) / np.array(target) * np.array(out.shape[1:])).astype(int)
    return _oracle_resample(out, list(new_shape), sp, target), [b.start for b in box]


def _head(shape, rng, channels=1):
    """A bright noisy ellipsoid with a dark hole, inside a zero background (zero-padded scan)."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt(((grid / np.array([0.7, 0.6, 0.5])[:, None, None, None]) ** 2).sum(0))
    img = np.where(r < 1, 100 + 20 * rng.standard_normal((channels, *shape)), 0.0)
    img[:, r < 0.2] = 0.0  # a hole: filled in the mask, so it counts in masked statistics
    return img.astype(np.float32)


CASES = [
    # shape, spacing, target, transpose, use_mask_for_norm
    ((30, 34, 26), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (0, 1, 2), False),  # crop only
    ((30, 34, 26), (1.2, 0.9, 1.1), (1.0, 1.0, 1.0), (0, 1, 2), False),  # spline resampling
    ((28, 30, 12), (0.8, 0.8, 4.0), (1.0, 1.0, 1.0), (0, 1, 2), False),  # anisotropic: separate z, order 0
    ((12, 28, 30), (4.0, 0.9, 0.9), (1.0, 1.0, 1.0), (2, 0, 1), True),  # transposed and masked statistics
    ((24, 24, 24), (1.0, 1.0, 1.0), (1.0, 1.0, 3.5), (0, 1, 2), False),  # anisotropic target
]


@pytest.mark.parametrize("shape, spacing, target, transpose, use_mask", CASES)
def test_model_input_equals_nnunets_preprocessing(shape, spacing, target, transpose, use_mask):
    rng = np.random.default_rng(len(shape) + int(spacing[0] * 10))
    image = _head(shape, rng, channels=2)
    prep = PreprocessingSpec(spacing=target, patch_size=(16, 16, 16), in_channels=2, resampling="nnunet", crop_to_nonzero=True,
                             use_mask_for_norm=use_mask, transpose_forward=transpose)
    layout = layout_for(image, spacing, prep, (4, 4, 4), 0.5)
    got = model_input(image, spacing, prep, layout).numpy()
    want, crop_lo = oracle(image, spacing, target, transpose, use_mask)
    assert list(layout.crop_lo) == crop_lo and layout.model_shape == want.shape[1:]
    b = layout.pad_before
    inside = got[:, b[0] : b[0] + want.shape[1], b[1] : b[1] + want.shape[2], b[2] : b[2] + want.shape[3]]
    np.testing.assert_allclose(inside, want, atol=2e-4, rtol=0)  # float32 (nnU-Net) vs float64 statistics
    outside = got.copy()
    outside[:, b[0] : b[0] + want.shape[1], b[1] : b[1] + want.shape[2], b[2] : b[2] + want.shape[3]] = 0
    assert not outside.any()  # everything around the crop is zero padding, as nnU-Net's sliding window pads


def test_separate_z_follows_nnunets_rule():
    assert separate_z_axis((1, 1, 5), (1, 1, 1)) == 2
    assert separate_z_axis((1, 1, 1), (1, 3.5, 1)) == 1
    assert separate_z_axis((1, 1, 3), (1, 1, 1)) is None  # 3:1 is not beyond the threshold
    assert separate_z_axis((4, 4, 1), (1, 1, 1)) is None  # two coarse axes tie: no separate z
    for sp, tg in [((1, 1, 5), (1, 1, 1)), ((1, 1, 1), (1, 3.5, 1)), ((4, 4, 1), (1, 1, 1)), ((0.7, 5.0, 0.7), (1, 1, 1))]:
        assert separate_z_axis(sp, tg) == _oracle_separate_z(sp, tg)


@pytest.mark.parametrize("resampling", ["linear", "nnunet"])
@pytest.mark.parametrize("transpose", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_points_land_on_their_physical_coordinates_after_crop_and_transpose(resampling, transpose):
    """The coordinate network of test_extract on a zero-padded coordinate volume: every stage must
    read, at each point inside the crop, that point's physical coordinate (in the original axis order)."""
    shape, spacing, target = (44, 38, 40), (1.2, 1.0, 0.9), (1.0, 1.1, 1.0)
    strides = [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    lo, hi = np.array([5, 3, 7]), np.array([38, 33, 34])  # the non-zero box
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")).astype(np.float32)
    box = np.zeros(shape, bool)
    box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    image = np.where(box, grid, 0).astype(np.float32)
    label = np.zeros(shape, np.int64)
    label[10:30, 8:25, 12:30] = 1
    case = CaseVolume(image, label, spacing)
    prep = PreprocessingSpec(spacing=target, normalization="none", patch_size=(16, 16, 16), in_channels=3, resampling=resampling,
                             crop_to_nonzero=True, transpose_forward=transpose)
    fm = coord_model(strides, prep)
    plan = sample_points([label], n_samples=800, seed=2)
    floats = np.random.default_rng(1).uniform(0, np.asarray(shape) - 1, size=(1500, 3))
    anchors = plan.coords[:30]
    patch_pts, mask = patch_grid(anchors, np.full(3, 2.0), 5, [shape] * len(anchors))
    points = np.concatenate([plan.coords.astype(float), floats, patch_pts[mask]])
    out = extract_case(fm, case, {s.name: points for s in fm.stages}, overlap=0.5)
    layout = out.layout
    assert list(layout.crop_lo) == [int(lo[a]) for a in transpose]
    truth = points * np.asarray(spacing)
    margin = 3 if resampling == "nnunet" else 0  # spline edge effects reach a few voxels into the crop
    for st in fm.stages:
        ok = checkable(points, layout, st.stride, margin)
        assert ok.sum() >= 100, f"{st.name}: only {ok.sum()} checkable points"
        err = np.abs(out.features[st.name][ok] - truth[ok]).max()
        assert err < (2e-3 if resampling == "linear" else 2e-2), f"{st.name}: max error {err:.4f} mm"
    assert np.isfinite(np.concatenate(list(out.features.values()))).all()  # points outside the crop get features too
