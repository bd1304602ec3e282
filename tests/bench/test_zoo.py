"""The benchmark zoo (bench/validation/zoo.py): the smoke profile builds every member as a loadable
nnssl checkpoint, deterministically, and the manifest cache rebuilds only what changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.validation import zoo
from models_registry.specs import ModelSpec
from worker.adapters import load_feature_model

PROBE = "encoder.stages.2.blocks.0.conv1.conv.weight"
THREADS = 1  # bitwise reproducible only single-threaded (MKL / oneDNN reductions vary run to run with more)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[zoo.ZooMember], list[str]]:
    out = tmp_path_factory.mktemp("zoo")
    said: list[str] = []
    members = zoo.build_zoo(out, "smoke", seed=0, progress=said.append, threads=THREADS)
    return out, members, said


def _weights(m: zoo.ZooMember) -> dict[str, torch.Tensor]:
    return torch.load(m.checkpoint, map_location="cpu", weights_only=True)["network_weights"]


def test_smoke_profile_builds_every_member(smoke):
    out, members, said = smoke
    assert [m.name for m in members] == list(zoo.MEMBER_NAMES)
    assert len(members) >= 11 and not any(m.cached for m in members)
    assert {m.method for m in members} >= {"MAE", "SimMIM", "ModelsGenesis", "S3D", "VoCo", "SimCLR", "SwinUNETR", "none"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["code_version"] == zoo.ZOO_CODE_VERSION and set(manifest["members"]) == set(zoo.MEMBER_NAMES)
    for m in members:
        assert m.checkpoint == out / m.name / "checkpoint_final.pth"
        plan = json.loads((m.checkpoint.parent / "adaptation_plan.json").read_text())
        assert plan["trainer_name"] == f"toporank.bench.zoo:{m.name}"
        assert manifest["members"][m.name]["sha256"] == m.sha256
        assert m.pretrain["steps"] == zoo.ZOO_PROFILES["smoke"].steps[m.name]
    steps = {m.name: m.pretrain["steps"] for m in members}
    assert steps["random"] == 0 and steps["mae-short"] < steps["mae-mid"] < steps["mae-long"]
    assert sum("run mae:" in s for s in said) == 1  # the three MAE members are snapshots of one run


def test_every_checkpoint_loads_as_a_feature_model(smoke):
    _, members, _ = smoke
    for m in members:
        fm = load_feature_model(ModelSpec(**m.spec), m.checkpoint)
        assert [s.name for s in fm.stages] == ["enc0", "enc1", "enc2", "enc3", "dec0", "dec1", "dec2"]
        assert [s.channels for s in fm.encoder_stages] == [8, 16, 32, 64]
        assert fm.preprocessing.spacing == (3.0, 3.0, 3.0) and fm.preprocessing.patch_size == (64, 64, 64)
        assert fm.load_report.sha256 == m.sha256
        keys = set(_weights(m))
        if m.name in ("voco", "simclr"):  # encoder-only layout + projection head
            assert not any(k.startswith("decoder.") for k in keys)
            assert any(k.startswith("voco_head." if m.name == "voco" else "projector.") for k in keys)
        else:
            assert any(k.startswith("decoder.") for k in keys)
    sw = set(_weights(next(m for m in members if m.name == "swinunetr")))
    assert any(k.startswith("rotation_head.") for k in sw) and any(k.startswith("contrastive_head.") for k in sw)
    ref = set(zoo.build_unet(0).state_dict())  # the learnable mask token / embeddings are not saved
    for name in ("simmim", "s3d", "mae-long", "genesis"):
        assert set(_weights(next(m for m in members if m.name == name))) == ref


def test_members_differ_and_mae_snapshots_differ(smoke):
    _, members, _ = smoke
    probes = {m.name: _weights(m)[PROBE] for m in members}
    names = list(probes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.equal(probes[a], probes[b]), (a, b)
    assert len({m.sha256 for m in members}) == len(members)
    mae = [_weights(next(m for m in members if m.name == n)) for n in ("mae-short", "mae-mid", "mae-long")]
    dist = [float((mae[i][PROBE] - mae[j][PROBE]).norm()) for i, j in ((0, 1), (1, 2), (0, 2))]
    assert all(d > 0 for d in dist)


def test_pretraining_losses_are_finite_and_reconstruction_learns(smoke):
    _, members, _ = smoke
    by = {m.name: m.pretrain for m in members}
    for name, p in by.items():
        if name == "random":
            assert p["first_loss"] is None and p["steps"] == 0
            continue
        assert np.isfinite(p["first_loss"]) and np.isfinite(p["last_loss"]) and all(np.isfinite(p["loss_curve"]))
    # measured at smoke scale (seed 0): these drop by >= 25 %; Models Genesis / SimCLR are too noisy at 8 steps
    for name in ("mae-long", "simmim", "s3d", "mae-ood"):
        assert by[name]["last_loss"] < 0.9 * by[name]["first_loss"], (name, by[name]["first_loss"], by[name]["last_loss"])


def test_second_build_is_cached_and_identical(smoke):
    out, members, _ = smoke
    mtimes = {m.name: m.checkpoint.stat().st_mtime_ns for m in members}
    said: list[str] = []
    again = zoo.build_zoo(out, "smoke", seed=0, progress=said.append, threads=THREADS)
    assert all(m.cached for m in again) and not any(s.startswith("run ") for s in said)
    assert [m.sha256 for m in again] == [m.sha256 for m in members]
    assert {m.name: m.checkpoint.stat().st_mtime_ns for m in again} == mtimes


def test_deleted_or_stale_member_is_rebuilt_alone_and_identically(smoke, tmp_path: Path):
    out, members, _ = smoke
    copy = tmp_path / "zoo"
    shutil.copytree(out, copy)
    sha = {m.name: m.sha256 for m in members}
    (copy / "mae-mid" / "checkpoint_final.pth").unlink()  # a snapshot of the MAE run
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["members"]["simmim"]["code_version"] = "older"  # a stale entry
    (copy / "manifest.json").write_text(json.dumps(manifest))
    said: list[str] = []
    rebuilt = zoo.build_zoo(copy, "smoke", seed=0, progress=said.append, threads=THREADS)
    assert sorted(m.name for m in rebuilt if not m.cached) == ["mae-mid", "simmim"]
    assert {m.name: m.sha256 for m in rebuilt} == sha  # deterministic: same bytes again
    assert sum(s.startswith("run ") for s in said) == 2
    only = zoo.build_zoo(copy, "smoke", seed=0, members=["genesis"])
    assert [m.name for m in only] == ["genesis"] and only[0].cached


def test_profiles_are_consistent():
    for prof in zoo.ZOO_PROFILES.values():
        names = prof.member_names()
        assert set(names) <= set(zoo.MEMBER_DEFS) and all(n in prof.steps for n in names)
        s = prof.steps
        assert s["mae-short"] < s["mae-mid"] < s["mae-long"]
    cpu = zoo.ZOO_PROFILES["cpu"]
    assert len(cpu.member_names()) >= 11
    assert cpu.steps["mae-long"] == 3 * cpu.steps["mae-mid"] == 9 * cpu.steps["mae-short"]
    assert zoo.ZOO_PROFILES["gpu"].steps["mae-long"] == 4 * cpu.steps["mae-long"]
    with pytest.raises(ValueError):
        zoo.build_zoo(Path("/nonexistent-unused"), "smoke", members=["no-such-member"])


@pytest.mark.parametrize(("bank_cls", "n_classes"), [(zoo.LabelledCropBank, 3), (zoo.LabelledPhantomCropBank, 4)])
def test_labelled_banks_keep_labels_aligned_with_their_images(bank_cls, n_classes):
    bank = bank_cls(np.random.default_rng(0), n=1)
    vol, lab = bank.vols[0], bank.labels[0]
    assert bank.n_classes == n_classes and vol.shape == lab.shape
    assert set(np.unique(lab)) == set(range(n_classes))  # every class present in the source volume
    # aligned: foreground classes are brighter than the background they are cut from (T1 GM/WM; CT organs vs air/fat)
    assert all(vol[lab == c].mean() > vol[lab == 0].mean() for c in range(1, n_classes))
    x, y = bank.labelled_batch(3)
    assert x.shape == (3, 1, zoo.CROP, zoo.CROP, zoo.CROP) and y.shape == (3, zoo.CROP, zoo.CROP, zoo.CROP)
    assert y.dtype == torch.int64 and int(y.max()) < n_classes
    fg = y > 0
    assert bool(fg.any()) and float(x[:, 0][fg].mean()) > float(x[:, 0][~fg].mean())


def test_supervised_members_learn_their_labels(smoke):
    _, members, _ = smoke
    by = {m.name: m for m in members}
    for name in ("sup-tissue", "sup-organs"):
        m = by[name]
        assert m.method == "Supervised" and m.pretrain["objective"] == "supervised"
        assert m.pretrain["last_loss"] < m.pretrain["first_loss"], (name, m.pretrain["first_loss"], m.pretrain["last_loss"])
    # the segmentation head is trained but not saved: the checkpoint has the U-Net's keys only
    assert set(_weights(by["sup-tissue"])) == set(_weights(by["mae-long"]))
    with pytest.raises(ValueError, match="labelled crop bank"):
        zoo.SupervisedObjective(zoo.build_unet(0), zoo.CropBank(np.random.default_rng(0), 1), np.random.default_rng(0), 2, "cpu")
