"""Feature extraction: a coordinate-encoding network proves every stage's features are read at the
right physical point, for many window layouts; plus preprocessing and layout invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models_registry.specs import PreprocessingSpec
from transferability.sampling import patch_grid, sample_points
from worker.adapters.base import FeatureModel, LoadReport, StageInfo
from worker.extract import CaseVolume, extract_case, trilinear
from worker.preprocess import normalize, plan_windows, resample_label, resampled_shape


class CoordEncoder(nn.Module):
    """Stage s = average of the input over each stride cell: for an input holding each voxel's
    physical coordinate, every stage map holds the coordinate of its cells' centres."""

    def __init__(self, strides):
        super().__init__()
        self.strides = strides
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        self.calls.append(tuple(x.shape))
        return [x if s == (1, 1, 1) else F.avg_pool3d(x, s, s) for s in self.strides]


class SkipDecoder(nn.Module):
    """Stands in for the random decoder: decoder stage t returns the skip at its resolution, so the
    decoder stages' bookkeeping (names, strides, coarse-to-fine order) is checked the same way."""

    def forward(self, skips):
        return [skips[-(t + 2)] for t in range(len(skips) - 1)]


def coord_model(strides, prep: PreprocessingSpec) -> FeatureModel:
    stages = [StageInfo(f"enc{i}", 3, tuple(s), "encoder") for i, s in enumerate(strides)]
    fm = FeatureModel(CoordEncoder(strides), stages, load_report=LoadReport("test", "0"), preprocessing=prep, in_channels=3)
    fm.decoder = SkipDecoder()
    return fm


def coord_case(shape, spacing) -> CaseVolume:
    axes = [np.arange(n, dtype=np.float64) * s for n, s in zip(shape, spacing)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij")).astype(np.float32)
    label = np.zeros(shape, dtype=np.int64)
    label[shape[0] // 3 : 2 * shape[0] // 3, shape[1] // 4 :, : shape[2] // 2] = 1
    return CaseVolume(grid, label, spacing)


def checkable(points, layout, stride, margin=0):
    """Points whose 2x2x2 interpolation cells hold only voxels that are neither padding nor
    clamped by the resampling at the border of the resampled region (nor within `margin` model
    voxels of it): there the true answer is known exactly."""
    q = layout.to_padded(points)
    u = (q + 0.5) / np.asarray(stride, float) - 0.5
    ok = np.ones(len(points), dtype=bool)
    for a in range(3):
        v = np.arange(layout.padded_shape[a]) - layout.pad_before[a]
        src = (v + 0.5) / layout.scale[a] - 0.5
        exact = (v >= margin) & (v < layout.model_shape[a] - margin) & (src >= 0) & (src <= layout.cropped_shape[a] - 1)
        n_cells = layout.padded_shape[a] // stride[a]
        cell_ok = exact[: n_cells * stride[a]].reshape(n_cells, stride[a]).all(axis=1)
        i0 = np.floor(u[:, a]).astype(int)
        inside = (i0 >= 0) & (i0 + 1 <= n_cells - 1)
        i0 = np.clip(i0, 0, n_cells - 2)
        ok &= inside & cell_ok[i0] & cell_ok[i0 + 1]
    return ok


LAYOUTS = [
    # shape, case spacing, model spacing, patch, strides, overlap, batch
    ((40, 40, 40), (1.0, 1.0, 1.0), (1.0, 1.0, 1.0), (16, 16, 16), [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)], 0.5, 1),
    ((37, 41, 29), (1.3, 0.9, 2.0), (1.0, 1.0, 1.5), (16, 24, 16), [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)], 0.5, 3),
    ((50, 30, 45), (1.0, 1.0, 1.0), (0.7, 1.2, 1.0), (32, 16, 32), [(1, 1, 1), (1, 2, 2), (2, 4, 4), (4, 8, 8)], 0.25, 2),
    ((80, 70, 72), (0.8, 0.8, 0.8), (1.0, 1.0, 1.0), (32, 32, 32), [(2, 2, 2), (4, 4, 4), (8, 8, 8), (16, 16, 16)], 0.6, 4),
    ((21, 19, 23), (2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (24, 24, 24), [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)], 0.0, 1),
]


@pytest.mark.parametrize("shape, spacing, model_spacing, patch, strides, overlap, batch", LAYOUTS)
def test_every_stage_reads_features_at_the_right_physical_point(shape, spacing, model_spacing, patch, strides, overlap, batch):
    prep = PreprocessingSpec(spacing=model_spacing, normalization="none", patch_size=patch, in_channels=3)
    fm = coord_model(strides, prep)
    case = coord_case(shape, spacing)
    rng = np.random.default_rng(0)
    plan = sample_points([case.label], n_samples=600, seed=1)  # integer voxels, as GRTD uses
    floats = rng.uniform(0, np.asarray(shape) - 1, size=(1500, 3))  # arbitrary continuous points
    anchors = plan.coords[:40]
    patch_pts, mask = patch_grid(anchors, np.asarray(strides[-1], float) * 0.5, 5, [shape] * len(anchors))
    points = np.concatenate([plan.coords.astype(float), floats, patch_pts[mask]])
    out = extract_case(fm, case, {s.name: points for s in fm.stages}, overlap=overlap, batch_size=batch)
    truth = points * np.asarray(spacing)
    layout = out.layout
    assert all(c[0] <= batch for c in fm.encoder.calls)
    assert all(c[2:] == tuple(patch) for c in fm.encoder.calls)  # one window batch at a time
    for st in fm.stages:
        ok = checkable(points, layout, st.stride)
        assert ok.sum() >= 100, f"{st.name}: only {ok.sum()} checkable points - the test would be vacuous"
        err = np.abs(out.features[st.name][ok] - truth[ok]).max()
        assert err < 2e-3, f"{st.name} stride {st.stride}: max error {err:.4f} mm"


def test_window_steps_and_last_start_are_multiples_of_the_coarsest_stride():
    for n, p, s, ov in [(100, 32, 8, 0.5), (161, 160, 32, 0.5), (300, 160, 32, 0.3), (17, 16, 16, 0.5), (64, 64, 8, 0.9)]:
        lay = plan_windows((n, n, n), (n, n, n), (p, p, p), (s, s, s), ov)
        size = lay.padded_shape[0]
        starts = lay.starts[0]
        assert size % s == 0 and size >= max(n, p)
        assert all(st % s == 0 for st in starts)
        assert starts[0] == 0 and starts[-1] + p == size
        steps = np.diff(starts)
        if len(starts) > 1:
            assert np.all(steps % s == 0) and np.all(steps <= p - s if p > s else steps <= p)
    with pytest.raises(ValueError, match="multiple of the coarsest"):
        plan_windows((40, 40, 40), (40, 40, 40), (20, 20, 20), (8, 8, 8), 0.5)


def test_monai_sliding_window_misplaces_low_resolution_outputs_ours_does_not():
    """Why we do not use MONAI's `sliding_window_inference`: with window starts that are not
    multiples of a stage's stride, its stride-4 output is not an affine function of position."""
    from monai.inferers import sliding_window_inference

    n = 30
    grid = torch.from_numpy(np.stack(np.meshgrid(*[np.arange(n, dtype=np.float32)] * 3, indexing="ij")))[None]
    out = sliding_window_inference(grid, (16, 16, 16), 1, lambda x: (x, F.avg_pool3d(x, 4, 4)), overlap=0.5, mode="constant")
    lo = out[1][0, 0, :, 0, 0].numpy()  # x-coordinate along the first axis of the low-res map
    fit = np.polyfit(np.arange(lo.size), lo, 1)
    monai_residual = np.abs(np.polyval(fit, np.arange(lo.size)) - lo).max()
    assert monai_residual > 0.1  # misplaced: no consistent cell positions

    prep = PreprocessingSpec(spacing=(1, 1, 1), normalization="none", patch_size=(16, 16, 16), in_channels=3)
    fm = coord_model([(1, 1, 1), (4, 4, 4)], prep)
    case = coord_case((n, n, n), (1.0, 1.0, 1.0))
    pts = np.stack([np.arange(6.0, 24.0, 0.5), np.full(36, 12.0), np.full(36, 12.0)], axis=1)  # away from the padding
    ours = extract_case(fm, case, {"enc1": pts}).features["enc1"][:, 0]
    np.testing.assert_allclose(ours, pts[:, 0], atol=1e-4)


def test_extraction_is_deterministic_and_validates_queries():
    prep = PreprocessingSpec(spacing=(1, 1, 1), normalization="zscore", patch_size=(16, 16, 16), in_channels=3)
    fm = coord_model([(1, 1, 1), (2, 2, 2)], prep)
    case = coord_case((20, 18, 22), (1.0, 1.0, 1.0))
    pts = np.random.default_rng(0).uniform(0, 17, size=(300, 3))
    a = extract_case(fm, case, {"enc1": pts, "dec0": pts})
    b = extract_case(fm, case, {"enc1": pts, "dec0": pts})
    assert all(np.array_equal(a.features[k], b.features[k]) for k in a.features)
    assert a.features["enc1"].dtype == np.float32 and a.features["enc1"].shape == (300, 3)
    with pytest.raises(ValueError, match="unknown stage"):
        extract_case(fm, case, {"enc9": pts})
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        extract_case(fm, case, {"enc1": pts[:, :2]})
    two = CaseVolume(np.zeros((2, 8, 8, 8), np.float32), np.zeros((8, 8, 8), int), (1, 1, 1))
    with pytest.raises(ValueError, match="channels"):
        extract_case(fm, two, {"enc1": pts})


def test_extract_matches_a_direct_forward_of_a_real_encoder(nnssl_full):
    """One window covering the whole volume, no resampling: gathered features at voxel centres are
    the network's own map values (through the adapter, z-scoring included)."""
    from models_registry.specs import ModelSpec
    from worker.adapters import load_feature_model

    path, net = nnssl_full
    prep = PreprocessingSpec(spacing=(1, 1, 1), normalization="zscore", patch_size=(16, 16, 16))
    fm = load_feature_model(ModelSpec(name="t", format="nnssl", preprocessing=prep), path)
    img = np.random.default_rng(0).normal(3.0, 2.0, size=(1, 16, 16, 16)).astype(np.float32)
    case = CaseVolume(img, np.zeros((16, 16, 16), int), (1.0, 1.0, 1.0))
    z = torch.from_numpy(normalize(img, prep))[None]
    with torch.no_grad():
        direct = fm(z)
    vox = np.stack(np.meshgrid(*[np.arange(0, 16, 3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    cells = np.stack(np.meshgrid(*[np.arange(1, 4)] * 3, indexing="ij"), -1).reshape(-1, 3)  # enc2 cells
    got = extract_case(fm, case, {"enc0": vox, "dec1": vox, "enc2": cells * 4 + 1.5}).features
    ref0 = direct["enc0"][0][:, vox[:, 0], vox[:, 1], vox[:, 2]].T.numpy()
    ref_d = direct["dec1"][0][:, vox[:, 0], vox[:, 1], vox[:, 2]].T.numpy()
    ref2 = direct["enc2"][0][:, cells[:, 0], cells[:, 1], cells[:, 2]].T.numpy()
    np.testing.assert_allclose(got["enc0"], ref0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["dec1"], ref_d, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["enc2"], ref2, rtol=1e-5, atol=1e-5)


def test_trilinear_is_exact_on_linear_maps_and_clamps_outside():
    n = (3, 4, 5)
    idx = np.stack(np.meshgrid(*[np.arange(k, dtype=np.float32) for k in n], indexing="ij"))
    fmap = torch.from_numpy(2 * idx[0] - idx[1] + 0.5 * idx[2])[None]
    u = torch.tensor([[0.0, 0.0, 0.0], [1.25, 2.5, 3.75], [2.0, 3.0, 4.0], [-1.0, 7.0, 2.0]], dtype=torch.float64)
    out = trilinear(fmap, u)[:, 0].numpy()
    uc = np.clip(u.numpy(), 0, np.asarray(n) - 1)
    np.testing.assert_allclose(out, 2 * uc[:, 0] - uc[:, 1] + 0.5 * uc[:, 2], atol=1e-6)


def test_preprocessing_normalisation_and_label_resampling():
    img = np.random.default_rng(0).normal(100, 20, size=(2, 10, 12, 8)).astype(np.float32)
    z = normalize(img, PreprocessingSpec(spacing=(1, 1, 1), patch_size=(8, 8, 8)))
    np.testing.assert_allclose(z.reshape(2, -1).mean(1), 0, atol=1e-5)
    np.testing.assert_allclose(z.reshape(2, -1).std(1), 1, atol=1e-4)
    ct = normalize(img, PreprocessingSpec(spacing=(1, 1, 1), patch_size=(8, 8, 8), normalization="ct", ct_clip=(90, 110)))
    assert ct.min() >= -1 and ct.max() <= 1 and np.isclose(ct.max(), 1)
    assert resampled_shape((100, 50, 30), (1.0, 2.0, 3.0), (2.0, 2.0, 1.5)) == (50, 50, 60)
    lab = np.arange(4 * 6 * 2).reshape(4, 6, 2)
    up = resample_label(lab, (8, 12, 4))  # 2x upsampling: every voxel becomes a 2x2x2 block
    assert np.array_equal(up, lab.repeat(2, 0).repeat(2, 1).repeat(2, 2))
    down = resample_label(up, (4, 6, 2))
    assert np.array_equal(down, lab)
    assert set(np.unique(resample_label(lab, (3, 5, 7)))) <= set(np.unique(lab))


@pytest.mark.parametrize(
    "image, label, spacing, message",
    [
        (np.zeros((2, 3, 3)), np.zeros((2, 3, 3)), (1, 1, 1), None),
        (np.zeros((1, 2, 3, 3)), np.zeros((2, 3, 4)), (1, 1, 1), "does not match"),
        (np.full((1, 2, 2, 2), np.nan), np.zeros((2, 2, 2)), (1, 1, 1), "NaN"),
        (np.zeros((1, 2, 2, 2)), np.full((2, 2, 2), 0.5), (1, 1, 1), "integer"),
        (np.zeros((1, 2, 2, 2)), -np.ones((2, 2, 2), int), (1, 1, 1), "negative"),
        (np.zeros((1, 2, 2, 2)), np.zeros((2, 2, 2), int), (1, 0, 1), "spacing"),
    ],
)
def test_case_volume_validation(image, label, spacing, message):
    if message is None:
        assert CaseVolume(image, label, spacing).n_channels == 1  # a 3-D image is one channel
    else:
        with pytest.raises(ValueError, match=message):
            CaseVolume(image, label, spacing)


def test_trilinear_gather_paths_agree():
    """Few points on a big map gather columns; many points gather rows of a channels-last copy."""
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn((5, 9, 8, 7), generator=g)
    u = torch.rand((20, 3), generator=g, dtype=torch.float64) * torch.tensor([8.0, 7.0, 6.0], dtype=torch.float64)
    few = trilinear(fmap, u)  # 20 * 8 < 504 voxels: column path
    many = trilinear(fmap, u.repeat(30, 1))[:20]  # 600 points: row path
    torch.testing.assert_close(few, many, rtol=0, atol=1e-6)
