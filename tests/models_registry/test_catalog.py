"""The zoo catalog: the OpenMind releases as nnssl trains them, and the demo encoders."""

from __future__ import annotations

import json

import pytest

from models_registry.catalog import get_entry, list_entries, resolve_spec
from models_registry.specs import ModelSpec


def test_catalog_lists_the_openmind_releases_nnssl_can_train():
    entries = {e["name"]: e for e in list_entries() if "openmind" in e["tags"]}
    resencl = {n: e for n, e in entries.items() if e["architecture"] == {"arch_class_name": "ResEncL"}}
    assert sorted(e["ssl_method"] for e in resencl.values()) == sorted(
        ["MAE", "ModelsGenesis", "S3D", "VoCo", "SimCLR", "SwinUNETR", "VolumeFusion"]
    )  # nnssl has no ResEnc-L SimMIM: its SimMIM trainer builds PrimusM
    primus = entries["openmind-primusm-simmim"]
    assert primus["ssl_method"] == "SimMIM" and primus["architecture"] == {"arch_class_name": "PrimusM"}
    assert primus["trainer_names"] == ["SimMIMEvaTrainer"]
    paper = sorted(e["ssl_method"] for e in entries.values() if "paper-zoo" in e["tags"])
    assert paper == sorted(["MAE", "SimMIM", "ModelsGenesis", "S3D", "VoCo", "SimCLR", "SwinUNETR"])
    assert "encoder only" in entries["openmind-resencl-swinunetr"]["checkpoint_layout"]
    assert "rotation_proj_head" in entries["openmind-resencl-swinunetr"]["checkpoint_layout"]
    for e in resencl.values():
        assert e["trainer_names"]
        assert e["format"] == "nnssl"
        assert e["architecture"] == {"arch_class_name": "ResEncL"}
        assert e["preprocessing"]["spacing"] == [1.0, 1.0, 1.0]
        assert e["preprocessing"]["normalization"] == "zscore"
        assert e["preprocessing"]["patch_size"] == [160, 160, 160]
        assert e["preprocessing"]["in_channels"] == 1
        enc = [s for s in e["stages"] if s["role"] == "encoder"]
        assert [s["channels"] for s in enc] == [32, 64, 128, 256, 320, 320]
        assert [s["stride"][0] for s in enc] == [1, 2, 4, 8, 16, 32]
        dec = [s for s in e["stages"] if s["role"] == "decoder"]
        assert [s["stride"][0] for s in dec] == [16, 8, 4, 2, 1]
    json.dumps(list_entries())  # JSON-ready for the API listing


def test_registering_needs_only_the_entry_name():
    spec = resolve_spec(ModelSpec.model_validate({"name": "my-mae", "format": "nnssl", "catalog": "openmind-resencl-mae"}))
    assert spec.name == "my-mae"
    assert spec.ssl_method == "MAE"
    assert spec.preprocessing.patch_size == (160, 160, 160)
    assert len(spec.encoder_stages()) == 6 and len(spec.decoder_stages()) == 5


def test_explicit_fields_override_the_entry():
    spec = resolve_spec(
        ModelSpec.model_validate(
            {
                "name": "m",
                "format": "nnssl",
                "catalog": "openmind-resencl-voco",
                "preprocessing": {"spacing": [1.5, 1.5, 1.5], "patch_size": [128, 128, 128], "in_channels": 2},
            }
        )
    )
    assert spec.preprocessing.spacing == (1.5, 1.5, 1.5)
    assert spec.preprocessing.in_channels == 2
    assert spec.ssl_method == "VoCo"


def test_unknown_entry_and_format_mismatch_are_errors():
    with pytest.raises(ValueError, match="unknown catalog entry"):
        resolve_spec(ModelSpec(name="m", format="nnssl", catalog="nope"))
    with pytest.raises(ValueError, match="format"):
        resolve_spec(ModelSpec(name="m", format="torchscript", catalog="openmind-resencl-mae", stages=get_entry("openmind-resencl-mae").stages))


def test_demo_entries_describe_a_small_resenc():
    demo = [e for e in list_entries() if "demo" in e["tags"]]
    assert len(demo) >= 4
    assert len({e["ssl_method"] for e in demo}) >= 4
    for e in demo:
        enc = [s for s in e["stages"] if s["role"] == "encoder"]
        assert [s["channels"] for s in enc] == [8, 16, 32, 64]


def test_trainer_names_map_to_one_entry_each():
    from models_registry.catalog import entry_for_trainer

    assert entry_for_trainer("BaseMAETrainer").name == "openmind-resencl-mae"
    assert entry_for_trainer("BaseMAETrainer_BS8").name == "openmind-resencl-mae"  # a batch-size variant
    assert entry_for_trainer("VoCoTrainer").name == "openmind-resencl-voco"
    assert entry_for_trainer("VolumeFusionTrainer").name == "openmind-resencl-vf"
    assert entry_for_trainer("SparkMAETrainer").name == "openmind-resencl-s3d"
    assert entry_for_trainer("SimMIMEvaTrainer").name == "openmind-primusm-simmim"
    assert entry_for_trainer("VoCoEvaTrainer") is None  # the Primus VoCo: no entry, not the ResEnc-L one
    assert entry_for_trainer("BaseMAETrainerX") is None
    assert not get_entry("openmind-resencl-mae").accepts_trainer("VoCoTrainer")
