"""nnssl / OpenMind adapter: strict stem+encoder load, ignored decoder/heads, stem repeat, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ckpt_factory import build_dna_network, nnssl_plan, serialised_kwargs
from models_registry.catalog import RESENC_L_BLOCKS, RESENC_L_FEATURES, get_entry
from models_registry.specs import ModelSpec, PreprocessingSpec
from worker.adapters import ModelLoadError, load_feature_model
from worker.adapters import nnssl as nnssl_mod

SPEC = ModelSpec(name="t", format="nnssl")


def _x(c: int = 1, n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn((2, c, n, n, n), generator=torch.Generator().manual_seed(seed))


def test_full_unet_checkpoint_features_equal_a_direct_forward(nnssl_full):
    path, net = nnssl_full
    fm = load_feature_model(SPEC, path)
    x = _x()
    out = fm(x)
    direct = net.encoder(x)
    assert [s.name for s in fm.encoder_stages] == ["enc0", "enc1", "enc2"]
    for i, ref in enumerate(direct):
        assert torch.equal(out[f"enc{i}"], ref)
    assert [(s.name, s.channels, s.stride) for s in fm.decoder_stages] == [("dec0", 8, (2, 2, 2)), ("dec1", 4, (1, 1, 1))]
    assert out["dec1"].shape == (2, 4, 16, 16, 16)
    rep = fm.load_report.to_dict()
    assert rep["sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert rep["n_missing"] == rep["n_unexpected"] == 0
    assert rep["n_loaded"] == len(net.encoder.state_dict())
    # decoder weights and the decoder's alias of the encoder are ignored, and reported
    assert set(rep["ignored_prefixes"]) == {"decoder.encoder", "decoder.stages", "decoder.transpconvs", "decoder.seg_layers"}
    assert rep["n_ignored"] == len(net.state_dict()) - len(net.encoder.state_dict())


def test_encoder_only_checkpoint_loads_and_ignores_the_projection_head(nnssl_encoder_only):
    path, net = nnssl_encoder_only
    fm = load_feature_model(SPEC, path)
    x = _x(seed=3)
    out = fm(x)
    for i, ref in enumerate(net.encoder(x)):
        assert torch.equal(out[f"enc{i}"], ref)
    assert fm.load_report.to_dict()["ignored_prefixes"] == {"projector.0": 2}


def test_plain_conv_unet_with_stem_inside_the_stages(tmp_path: Path):
    kw = serialised_kwargs(plain=True)
    net = build_dna_network("PlainConvUNet", kw)
    plan = nnssl_plan("PlainConvUNet", kw, key_to_stem="encoder.stages.0", keys_to_in_proj=["encoder.stages.0.0.convs.0.conv"])
    path = tmp_path / "plain.pth"
    torch.save({"network_weights": net.state_dict(), "nnssl_adaptation_plan": plan}, path)
    fm = load_feature_model(SPEC, path)
    x = _x()
    for i, ref in enumerate(net.encoder(x)):
        assert torch.equal(fm(x)[f"enc{i}"], ref)


def test_resencl_preset_matches_the_paper_and_the_catalog():
    kw = nnssl_mod.RESENC_L_KWARGS
    assert kw["features_per_stage"] == list(RESENC_L_FEATURES) == [32, 64, 128, 256, 320, 320]
    assert kw["n_blocks_per_stage"] == list(RESENC_L_BLOCKS) == [1, 3, 4, 6, 6, 6]
    assert [s[0] for s in kw["strides"]] == [1, 2, 2, 2, 2, 2]
    assert kw["norm_op"].endswith("InstanceNorm3d") and kw["nonlin"].endswith("LeakyReLU")
    cum, stages = 1, get_entry("openmind-resencl-mae").stages
    for s, stage in zip(kw["strides"], stages):
        cum *= s[0]
        assert stage.stride == (cum, cum, cum)


def test_resencl_preset_path_builds_from_the_plan_name_alone(tmp_path: Path, monkeypatch):
    """The `ResEncL` preset (no arch_kwargs in the plan), shrunk so the test stays small."""
    small = dict(nnssl_mod.RESENC_L_KWARGS, n_stages=3, features_per_stage=[4, 8, 16], kernel_sizes=[[3, 3, 3]] * 3,
                 strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 2, 1], n_conv_per_stage_decoder=[1, 1])
    monkeypatch.setattr(nnssl_mod, "RESENC_L_KWARGS", small)
    net = build_dna_network("ResidualEncoderUNet", serialised_kwargs(blocks=[1, 2, 1]))
    path = tmp_path / "ckpt.pth"
    torch.save({"network_weights": net.state_dict(), "nnssl_adaptation_plan": nnssl_plan("ResEncL", None)}, path)
    fm = load_feature_model(ModelSpec(name="t", format="nnssl", architecture={"arch_class_name": "ResEncL"}), path)
    x = _x()
    for i, ref in enumerate(net.encoder(x)):
        assert torch.equal(fm(x)[f"enc{i}"], ref)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(ModelSpec(name="t", format="nnssl", architecture={"arch_class_name": "PlainConvUNet"}), path)
    assert err.value.code == "bad_spec"


def test_stem_is_repeated_for_more_input_channels(nnssl_full):
    path, net = nnssl_full
    fm = load_feature_model(SPEC, path, in_channels=3)
    x1 = _x(c=1)
    # The same image in all 3 channels must give the 1-channel features (weights divided by 3).
    out = fm(x1.repeat(1, 3, 1, 1, 1))
    for i, ref in enumerate(net.encoder(x1)):
        torch.testing.assert_close(out[f"enc{i}"], ref, rtol=1e-4, atol=1e-5)
    assert any("repeated" in n for n in fm.load_report.notes)
    assert fm.in_channels == 3


def test_plan_from_a_sidecar_json_and_preprocessing_from_the_plan(tmp_path: Path):
    kw = serialised_kwargs()
    net = build_dna_network("ResidualEncoderUNet", kw)
    d = tmp_path / "m"
    d.mkdir()
    torch.save({"network_weights": net.state_dict()}, d / "checkpoint_final.pth")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, d / "checkpoint_final.pth")
    assert err.value.code == "wrong_format" and "adaptation_plan" in err.value.message
    (d / "adaptation_plan.json").write_text(json.dumps(nnssl_plan(kwargs=kw)))
    fm = load_feature_model(SPEC, d / "checkpoint_final.pth")
    assert fm.load_report.meta["plan_source"] == "adaptation_plan.json"
    assert fm.preprocessing == PreprocessingSpec(  # as nnssl's default preprocessor applies the plan
        spacing=(1, 1, 1), normalization="zscore", patch_size=(32, 32, 32), in_channels=1,
        resampling="nnunet", crop_to_nonzero=True, use_mask_for_norm=False, transpose_forward=(0, 1, 2),
    )
    plan = nnssl_plan(kwargs=kw)
    plan["pretrain_plan"]["transpose_forward"] = [2, 0, 1]
    plan["pretrain_plan"]["configurations"]["onemmiso"]["use_mask_for_norm"] = [True]
    (d / "adaptation_plan.json").write_text(json.dumps(plan))
    prep = load_feature_model(SPEC, d / "checkpoint_final.pth").preprocessing
    assert prep.transpose_forward == (2, 0, 1) and prep.use_mask_for_norm is True


def test_declared_stages_must_match_the_network(nnssl_full):
    path, _ = nnssl_full
    wrong = ModelSpec.model_validate(
        {"name": "t", "format": "nnssl", "stages": [{"name": f"e{i}", "channels": 4, "stride": [1, 1, 1], "role": "encoder"} for i in range(3)]}
    )
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(wrong, path)
    assert err.value.code == "stage_mismatch"


def _save(tmp_path: Path, weights, plan, name="c.pth") -> Path:
    path = tmp_path / name
    torch.save({"network_weights": weights, "nnssl_adaptation_plan": plan}, path)
    return path


def test_missing_encoder_key_is_a_clear_error(tmp_path: Path, nnssl_full):
    _, net = nnssl_full
    weights = dict(net.state_dict())
    del weights["encoder.stages.1.blocks.0.conv1.norm.weight"]
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, _save(tmp_path, weights, nnssl_plan(kwargs=serialised_kwargs())))
    assert err.value.code == "missing_keys"
    assert "encoder.stages.1.blocks.0.conv1.norm.weight" in err.value.message


def test_wrong_key_to_encoder_is_a_missing_keys_error_not_a_silent_partial_load(tmp_path: Path, nnssl_full):
    _, net = nnssl_full
    plan = nnssl_plan(kwargs=serialised_kwargs(), key_to_encoder="online_encoder.stages")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, _save(tmp_path, net.state_dict(), plan))
    assert err.value.code == "missing_keys"


def test_architecture_mismatch_errors(tmp_path: Path, nnssl_full):
    _, net = nnssl_full
    bigger = serialised_kwargs(features=[4, 8, 32])
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, _save(tmp_path, net.state_dict(), nnssl_plan(kwargs=bigger)))
    assert err.value.code == "shape_mismatch"
    deeper = serialised_kwargs(blocks=[1, 1, 2])
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, _save(tmp_path, net.state_dict(), nnssl_plan(kwargs=deeper), "d.pth"))
    assert err.value.code == "missing_keys"
    extra = dict(net.state_dict())
    extra["encoder.stages.2.5.conv1.conv.weight"] = torch.zeros(1)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, _save(tmp_path, extra, nnssl_plan(kwargs=serialised_kwargs()), "e.pth"))
    assert err.value.code == "unexpected_keys"


def test_multichannel_pretraining_cannot_be_adapted(tmp_path: Path):
    kw = serialised_kwargs()
    net = build_dna_network("ResidualEncoderUNet", kw, in_channels=2)
    path = _save(tmp_path, net.state_dict(), nnssl_plan(kwargs=kw, pretrain_num_input_channels=2))
    assert load_feature_model(SPEC, path, in_channels=2).in_channels == 2
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, path, in_channels=3)
    assert err.value.code == "channel_mismatch"


@pytest.mark.parametrize(
    "payload, code",
    [
        ({"state_dict": {"a": torch.zeros(1)}}, "wrong_format"),
        ({"network_weights": {"a": 1}}, "wrong_format"),
        ({"network_weights": {"a": torch.zeros(1)}, "nnssl_adaptation_plan": {"architecture_plans": {"arch_class_name": "SwinTransformer3D"}}}, "unsupported_architecture"),
        ({"network_weights": {"a": torch.zeros(1)}, "nnssl_adaptation_plan": {"architecture_plans": {}}}, "wrong_format"),
    ],
)
def test_wrong_formats_are_named(tmp_path: Path, payload, code):
    path = tmp_path / "x.pth"
    torch.save(payload, path)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, path)
    assert err.value.code == code


def test_unsafe_or_garbage_files_are_refused(tmp_path: Path):
    garbage = tmp_path / "g.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, garbage)
    assert err.value.code == "unreadable_checkpoint"
    pickled = tmp_path / "p.pth"
    torch.save({"network_weights": {}, "obj": Path("/etc")}, pickled)  # a Python object: refused by weights_only
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, pickled)
    assert err.value.code == "unreadable_checkpoint"
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, tmp_path / "absent.pth")
    assert err.value.code == "file_not_found"


def test_arch_kwargs_may_not_import_arbitrary_modules(tmp_path: Path, nnssl_full):
    _, net = nnssl_full
    kw = serialised_kwargs()
    kw["nonlin"] = "os.system"
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, _save(tmp_path, net.state_dict(), nnssl_plan(kwargs=kw)))
    assert err.value.code == "unsupported_architecture" and "refusing" in err.value.message


def test_catalog_name_alone_resolves_and_unknown_entries_are_bad_specs(tmp_path: Path):
    from worker.demo_zoo import adaptation_plan, build_demo_unet, write_nnssl_checkpoint

    net = build_demo_unet(0).eval()
    path = tmp_path / "demo" / "checkpoint_final.pth"
    write_nnssl_checkpoint(path, net.state_dict(), adaptation_plan("t"))
    fm = load_feature_model(ModelSpec(name="d", format="nnssl", catalog="demo-resenc-mae"), path)
    assert fm.preprocessing.spacing == (3.0, 3.0, 3.0) and fm.preprocessing.patch_size == (64, 64, 64)
    assert [s.name for s in fm.stages] == ["enc0", "enc1", "enc2", "enc3", "dec0", "dec1", "dec2"]
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(ModelSpec(name="d", format="nnssl", catalog="no-such-entry"), path)
    assert err.value.code == "bad_spec"
    with pytest.raises(ModelLoadError) as err:  # a catalog entry of another trainer...
        load_feature_model(ModelSpec(name="d", format="nnssl", catalog="openmind-resencl-mae"), path)
    assert err.value.code == "trainer_mismatch"
    with pytest.raises(ModelLoadError) as err:  # ...and, overridden, of another architecture
        load_feature_model(ModelSpec(name="d", format="nnssl", catalog="openmind-resencl-mae", allow_trainer_mismatch=True), path)
    assert err.value.code == "bad_spec" and "ResEncL" in err.value.message
