"""The demo zoo and pilot set: built from nilearn's packaged MNI152 template, nnssl-format output."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from models_registry.specs import ModelSpec
from worker import demo_zoo
from worker.adapters import load_feature_model


def test_template_volumes_hold_grey_and_white_matter():
    rng = np.random.default_rng(0)
    img, lab = demo_zoo.make_volume(rng, (3.0, 3.0, 3.0))
    assert img.shape == lab.shape == (52, 64, 50)
    counts = np.bincount(lab.ravel(), minlength=3)
    assert counts.size == 3 and counts[1] > 5000 and counts[2] > 5000  # GM and WM present
    assert img[lab == 2].mean() > img[lab == 1].mean() > img[lab == 0].mean()  # T1 contrast: WM > GM > outside
    img2, lab2 = demo_zoo.make_volume(np.random.default_rng(1), (3.0, 3.0, 3.0))
    assert not np.array_equal(lab, lab2)  # augmented: different warps
    img3, _ = demo_zoo.make_volume(np.random.default_rng(0), (3.0, 3.0, 3.0))
    assert np.array_equal(img, img3)  # seeded


def test_pretext_pieces_behave():
    rng = np.random.default_rng(0)
    keep = demo_zoo.mask_blocks(rng, 8)
    assert keep.shape == (8, 1, 32, 32, 32) and 0.3 < 1 - keep.float().mean() < 0.9
    x = rng.normal(size=(32, 32, 32)).astype(np.float32)
    assert not np.array_equal(demo_zoo.genesis_corrupt(rng, x), x)
    z = torch.randn(4, 16)
    aligned = demo_zoo.nt_xent(torch.cat([z, z]))
    shuffled = demo_zoo.nt_xent(torch.cat([z, torch.randn(4, 16)]))
    assert aligned < shuffled


def test_demo_pilot_set_is_an_nnunet_folder(tmp_path: Path):
    root = demo_zoo.build_demo_pilot_set(tmp_path, n_cases=2, seed=3)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "T1"} and meta["labels"] == {"background": 0, "grey_matter": 1, "white_matter": 2}
    assert meta["file_ending"] == ".nii.gz" and meta["numTraining"] == 2
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["demo_000_0000.nii.gz", "demo_001_0000.nii.gz"]
    lab = nib.load(root / "labelsTr" / "demo_001.nii.gz")
    assert lab.header.get_zooms()[:3] == demo_zoo.PILOT_SPACINGS[1]
    cases = demo_zoo.load_pilot_cases(root)
    assert len(cases) == 2 and cases[1].spacing == demo_zoo.PILOT_SPACINGS[1]
    assert set(np.unique(cases[0].label)) == {0, 1, 2} and max(cases[1].shape) <= 80


@pytest.mark.slow
def test_build_demo_zoo_writes_loadable_nnssl_checkpoints(tmp_path: Path):
    out = demo_zoo.build_demo_zoo(tmp_path, seed=0, steps=3, batch=2, bank_size=2, budget_s=120)
    assert [n for n, _, _ in out] == [n for n, _ in demo_zoo.DEMO_MODELS]
    manifest = json.loads((tmp_path / "zoo.json").read_text())
    random_ref = demo_zoo.build_demo_unet(0 * 100 + 0)  # the MAE model's initialisation
    for (name, spec_dict, path), info in zip(out, manifest["models"]):
        assert path.name == "checkpoint_final.pth" and (path.parent / "adaptation_plan.json").is_file()
        raw = torch.load(path, map_location="cpu", weights_only=True)
        assert set(raw) == {"network_weights", "nnssl_adaptation_plan"}
        spec = ModelSpec.model_validate(spec_dict)
        fm = load_feature_model(spec, path)
        assert [s.channels for s in fm.encoder_stages] == [8, 16, 32, 64]
        ignored = fm.load_report.to_dict()["ignored_prefixes"]
        if name.endswith("contrastive"):
            assert set(ignored) == {"projector.0", "projector.2"}  # encoder-only layout + head
        else:
            assert "decoder.stages" in ignored  # full U-Net layout
        if name.endswith("random"):
            assert info["training"]["steps"] == 0
        else:
            assert info["training"]["steps"] == 3 and np.isfinite(info["training"]["last_loss"])
    mae = torch.load(out[0][2], map_location="cpu", weights_only=True)["network_weights"]
    key = "encoder.stages.1.blocks.0.conv1.conv.weight"
    assert not torch.equal(mae[key], random_ref.state_dict()[key])  # the pretraining changed the weights
