"""nnssl Primus checkpoints (PrimusM SimMIM layout, at toy size): the encoder's stages are the
token maps a direct forward of the same network produces; the fresh decoder upsamples them to
full resolution; the learned positions follow another patch size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models_registry.catalog import get_entry, resolve_spec
from models_registry.specs import ModelSpec, PreprocessingSpec
from tests.utils.nnssl_layouts import write_hub_release
from worker.adapters import ModelLoadError, load_feature_model
from worker.adapters import primus as primus_mod

TINY = {"embed_dim": 48, "eva_depth": 4, "eva_numheads": 2}


@pytest.fixture
def tiny_primus(monkeypatch):
    monkeypatch.setattr(primus_mod, "preset", lambda arch: dict(TINY))


def _plan(patch=(32, 32, 32)):
    return {
        "architecture_plans": {"arch_class_name": "PrimusM", "arch_kwargs": None, "arch_kwargs_requiring_import": None},
        "pretrain_plan": {"dataset_name": "Dataset745_OpenMind", "configurations": {
            "onemmiso": {"spacing": [1.0, 1.0, 1.0], "patch_size": list(patch), "normalization_schemes": ["ZScoreNormalization"]}}},
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": list(patch),
        "key_to_encoder": "eva",
        "key_to_stem": "down_projection",
        "keys_to_in_proj": ["down_projection.proj"],
        "key_to_lpe": "eva.pos_embed",
    }


def _net(seed=0):
    torch.manual_seed(seed)
    net = primus_mod.import_primus().Primus(1, TINY["embed_dim"], (8, 8, 8), 1, eva_depth=TINY["eva_depth"],
                                            eva_numheads=TINY["eva_numheads"], input_shape=(32, 32, 32), init_values=0.1,
                                            scale_attn_inner=True)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net.eval()


def _reference_stages(net, x, taps):
    """Token maps taken with forward hooks on the network's own forward (nothing of our encoder)."""
    grabbed = {}
    hooks = [net.eva.blocks[i].register_forward_hook(lambda m, a, out, i=i: grabbed.__setitem__(i, out)) for i in taps[:-1]]
    hooks.append(net.eva.register_forward_hook(lambda m, a, out: grabbed.__setitem__("norm", out[0])))
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    b, g = x.shape[0], [n // 8 for n in x.shape[2:]]
    seqs = [grabbed[i] for i in taps[:-1]] + [grabbed["norm"]]
    return [s.transpose(1, 2).reshape(b, -1, *g) for s in seqs]


def test_a_primus_checkpoint_gives_the_networks_own_token_maps(tmp_path: Path, tiny_primus):
    net = _net()
    path = write_hub_release(tmp_path / "PrimusM-OpenMind-SimMIM", net, _plan(), "SimMIMEvaTrainer")
    fm = load_feature_model(ModelSpec(name="p", format="nnssl"), path)
    x = torch.randn((2, 1, 32, 32, 32), generator=torch.Generator().manual_seed(1))
    out = fm(x)
    taps = primus_mod.stage_taps(TINY["eva_depth"])
    assert taps == [0, 1, 2, 3]
    for i, ref in enumerate(_reference_stages(net, x, taps)):
        torch.testing.assert_close(out[f"enc{i}"], ref, rtol=1e-5, atol=1e-5)
    assert [(s.channels, s.stride) for s in fm.encoder_stages] == [(48, (8, 8, 8))] * 4
    assert [(s.channels, s.stride[0]) for s in fm.decoder_stages] == [(48, 4), (48, 2), (32, 1)]
    assert out["dec2"].shape == (2, 32, 32, 32, 32)
    rep = fm.load_report.to_dict()
    assert rep["n_missing"] == rep["n_unexpected"] == 0 and fm.load_report.meta["trainer_name"] == "SimMIMEvaTrainer"
    assert set(rep["ignored_prefixes"]) >= {"mask_token"} and any(p.startswith("up_projection") for p in rep["ignored_prefixes"])
    assert fm.preprocessing.resampling == "nnunet" and fm.preprocessing.patch_size == (32, 32, 32)


def test_another_patch_resamples_the_learned_positions(tmp_path: Path, tiny_primus):
    net = _net(seed=1)
    path = write_hub_release(tmp_path / "p", net, _plan(), "SimMIMEvaTrainer")
    prep = PreprocessingSpec(spacing=(1, 1, 1), patch_size=(48, 32, 40), resampling="nnunet", crop_to_nonzero=True)
    fm = load_feature_model(ModelSpec(name="p", format="nnssl", preprocessing=prep), path)
    out = fm(torch.randn(1, 1, 48, 32, 40))
    assert out["enc3"].shape == (1, 48, 6, 4, 5) and out["dec2"].shape == (1, 32, 48, 32, 40)
    assert any("learned positions resampled from a (4, 4, 4) token grid to (6, 4, 5)" in n for n in fm.load_report.notes)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(ModelSpec(name="p", format="nnssl", preprocessing=prep.model_copy(update={"patch_size": (30, 32, 32)})), path)
    assert err.value.code == "bad_spec" and "multiple of 8" in err.value.message


def test_a_primus_file_missing_encoder_weights_is_refused(tmp_path: Path, tiny_primus):
    net = _net()
    weights = {k: v for k, v in net.state_dict().items() if not k.startswith("eva.blocks.3.")}
    path = tmp_path / "c.pth"
    torch.save({"network_weights": weights, "nnssl_adaptation_plan": _plan()}, path)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(ModelSpec(name="p", format="nnssl"), path)
    assert err.value.code == "missing_keys"


def test_the_catalog_entry_declares_primus_m_stages():
    spec = resolve_spec(ModelSpec(name="s", format="nnssl", catalog="openmind-primusm-simmim"))
    assert [(s.channels, s.stride[0]) for s in spec.encoder_stages()] == [(864, 8)] * 4
    assert [(s.channels, s.stride[0]) for s in spec.decoder_stages()] == [(128, 4), (64, 2), (32, 1)]
    assert get_entry("openmind-primusm-simmim").adaptation_plan["key_to_lpe"] == "eva.pos_embed"
    assert primus_mod.preset("PrimusM") == {"embed_dim": 864, "eva_depth": 16, "eva_numheads": 12}
