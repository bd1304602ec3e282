"""Every layout nnssl leaves on disk loads, with the trainer and the plan's origin in the load report;
a trainer that contradicts the catalog entry is refused unless the spec overrides it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ckpt_factory import build_dna_network, nnssl_plan, serialised_kwargs
from models_registry import catalog
from models_registry.specs import ModelSpec
from tests.utils.nnssl_layouts import write_hub_release, write_spark_output, write_training_output, wrapped_weights
from worker.adapters import ModelLoadError, load_feature_model
from worker.adapters.base import safe_torch_load

SPEC = ModelSpec(name="t", format="nnssl")
KW = serialised_kwargs()


def _net(seed: int = 0) -> torch.nn.Module:
    return build_dna_network("ResidualEncoderUNet", KW, seed=seed)


def _same_features(fm, net) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn((1, 1, 16, 16, 16), generator=torch.Generator().manual_seed(5))
    out = fm(x)
    for i, ref in enumerate(net.encoder(x)):
        assert torch.equal(out[f"enc{i}"], ref)


@pytest.fixture
def tiny_mae_entry(monkeypatch):
    """The MAE and S3D entries with a tiny ResEnc plan and stages (the real ResEnc-L would be 400 MB)."""
    enc = [catalog.StageSpec(name=f"enc{i}", channels=c, stride=(2**i,) * 3, role="encoder") for i, c in enumerate(KW["features_per_stage"])]
    for name in ("openmind-resencl-mae", "openmind-resencl-s3d"):
        entry = catalog.get_entry(name)
        small = dataclasses.replace(
            entry, architecture={"arch_class_name": "ResidualEncoderUNet"}, adaptation_plan=nnssl_plan(kwargs=KW),
            stages=enc + catalog.decoder_stages_for(enc),
            preprocessing=entry.preprocessing.model_copy(update={"patch_size": (32, 32, 32)}),
        )
        monkeypatch.setitem(catalog._ENTRIES, name, small)


def test_a_raw_trainer_checkpoint_loads_under_weights_only(tmp_path: Path):
    """The trainer's own file: optimizer state, logs, EMA, epoch and init_args with a torch.device."""
    net = _net()
    path = write_training_output(tmp_path / "nnssl_results", net, nnssl_plan(kwargs=KW), "BaseMAETrainer")
    raw = safe_torch_load(path)
    assert isinstance(raw["init_args"]["device"], torch.device) and "optimizer_state" in raw
    fm = load_feature_model(SPEC, path)
    _same_features(fm, net)
    meta = fm.load_report.meta
    assert meta["trainer_name"] == "BaseMAETrainer" and meta["plan_source"] == "checkpoint"


def test_a_raw_checkpoint_without_an_embedded_plan_reads_the_plan_one_folder_up(tmp_path: Path):
    net = _net()
    path = write_training_output(tmp_path / "r", net, nnssl_plan(kwargs=KW), "BaseMAETrainer")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["nnssl_adaptation_plan"]
    torch.save(ckpt, path)
    fm = load_feature_model(SPEC, path)
    assert fm.load_report.meta["plan_source"] == "../adaptation_plan.json"
    _same_features(fm, net)


def test_the_hub_release_loads_and_its_trainer_is_read(tmp_path: Path, tiny_mae_entry):
    net = _net(seed=2)
    path = write_hub_release(tmp_path / "ResEncL-OpenMind-MAE", net, nnssl_plan(kwargs=KW), "BaseMAETrainer_BS8")
    fm = load_feature_model(ModelSpec(name="m", format="nnssl", catalog="openmind-resencl-mae"), path)
    _same_features(fm, net)
    assert fm.load_report.meta["trainer_name"] == "BaseMAETrainer_BS8"
    assert not (set(safe_torch_load(path)) & {"optimizer_state", "logging", "current_epoch"})


def test_spark_output_takes_the_plan_of_its_catalog_entry_and_says_so(tmp_path: Path, tiny_mae_entry):
    net = _net(seed=3)
    path = write_spark_output(tmp_path / "fold_all" / "checkpoint_final.pth", net)
    with pytest.raises(ModelLoadError) as err:  # no plan anywhere and no catalog entry: a clear error
        load_feature_model(SPEC, path)
    assert err.value.code == "wrong_format" and "plan" in err.value.message
    fm = load_feature_model(ModelSpec(name="s", format="nnssl", catalog="openmind-resencl-s3d"), path)
    _same_features(fm, net)
    rep = fm.load_report
    assert rep.meta["plan_source"] == "catalog entry openmind-resencl-s3d" and rep.meta["trainer_name"] == "SparkMAETrainer"
    assert any("spark_weights" in n for n in rep.notes) and any("no adaptation plan" in n for n in rep.notes)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_ddp_and_compile_prefixes_are_stripped_and_reported(tmp_path: Path, prefix: str):
    net = _net(seed=4)
    path = tmp_path / "c.pth"
    torch.save({"network_weights": wrapped_weights(net, prefix), "nnssl_adaptation_plan": nnssl_plan(kwargs=KW)}, path)
    fm = load_feature_model(SPEC, path)
    _same_features(fm, net)
    assert any("stripped wrapper prefixes" in n for n in fm.load_report.notes)


def test_a_trainer_that_contradicts_the_catalog_entry_is_refused(tmp_path: Path, tiny_mae_entry):
    net = _net()
    path = write_hub_release(tmp_path / "voco", net, nnssl_plan(kwargs=KW), "VoCoTrainer")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(ModelSpec(name="m", format="nnssl", catalog="openmind-resencl-mae"), path)
    assert err.value.code == "trainer_mismatch"
    assert "VoCoTrainer" in err.value.message and "openmind-resencl-voco" in err.value.message
    fm = load_feature_model(ModelSpec(name="m", format="nnssl", catalog="openmind-resencl-mae", allow_trainer_mismatch=True), path)
    assert fm.load_report.meta["trainer_mismatch_allowed"] is True
    assert any("allow_trainer_mismatch" in n for n in fm.load_report.notes)


def test_the_trainer_is_read_from_the_sidecar_when_the_checkpoint_lacks_it(tmp_path: Path, tiny_mae_entry):
    net = _net()
    path = write_hub_release(tmp_path / "x", net, nnssl_plan(kwargs=KW), "SimCLRTrainer")
    ckpt = torch.load(path, weights_only=True)
    del ckpt["trainer_name"]
    torch.save(ckpt, path)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(ModelSpec(name="m", format="nnssl", catalog="openmind-resencl-mae"), path)
    assert err.value.code == "trainer_mismatch" and "SimCLRTrainer" in err.value.message


def test_the_override_flag_needs_a_catalog_entry():
    with pytest.raises(ValueError, match="allow_trainer_mismatch"):
        ModelSpec(name="m", format="nnssl", allow_trainer_mismatch=True)
