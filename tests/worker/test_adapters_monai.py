"""MONAI state-dict and bundle adapters: declared key rewrites, loud partial loads, bundle safety."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from monai.networks.nets import BasicUNet, DynUNet, SegResNet, SwinUNETR, UNETR

from models_registry.specs import ModelSpec
from worker.adapters import ModelLoadError, load_feature_model

SWIN_KW = {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "out_channels": 2}
SSL_REWRITES = [
    {"old": "module.", "new": "swinViT.", "kind": "prefix"},
    {"old": "fc1", "new": "linear1", "kind": "segment"},
    {"old": "fc2", "new": "linear2", "kind": "segment"},
]


def _x(c: int = 1, n: int = 32) -> torch.Tensor:
    return torch.randn((1, c, n, n, n), generator=torch.Generator().manual_seed(0))


def _perturbed(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net.eval()


def _ssl_swin_checkpoint(path: Path) -> dict:
    """`model_swinvit.pt` layout of the Swin UNETR self-supervised release: {"state_dict": {"module.*"}}
    with `fc1`/`fc2` MLP names and extra pretext heads."""
    torch.manual_seed(0)
    src = _perturbed(SwinUNETR(in_channels=1, **SWIN_KW))
    sd = {}
    for k, v in src.swinViT.state_dict().items():
        sd["module." + k.replace("mlp.linear1", "mlp.fc1").replace("mlp.linear2", "mlp.fc2")] = v
    sd["module.rotation_head.weight"] = torch.randn(4, 192)
    sd["module.contrastive_head.weight"] = torch.randn(8, 192)
    ckpt = {"epoch": 100, "state_dict": sd}
    torch.save(ckpt, path)
    return ckpt


def _swin_spec(**over) -> ModelSpec:
    payload = {
        "name": "swin",
        "format": "monai",
        "architecture": {"class": "SwinUNETR", "kwargs": SWIN_KW},
        "preprocessing": {"spacing": [1.5, 1.5, 2.0], "patch_size": [64, 64, 64]},
        "checkpoint_key": "state_dict",
        "prefix_rewrites": SSL_REWRITES,
    }
    payload.update(over)
    return ModelSpec.model_validate(payload)


def test_swinunetr_ssl_layout_matches_monais_own_loader(tmp_path: Path):
    ckpt = _ssl_swin_checkpoint(tmp_path / "model_swinvit.pt")
    fm = load_feature_model(_swin_spec(), tmp_path / "model_swinvit.pt")
    ref = SwinUNETR(in_channels=1, **SWIN_KW).eval()
    ref.load_from(ckpt)  # MONAI's loader for exactly this layout, independent of our rewrites
    x = _x()
    out = fm(x)
    hidden = ref.swinViT(x, ref.normalize)
    assert [(s.channels, s.stride) for s in fm.encoder_stages] == [(12 * 2**i, (2 ** (i + 1),) * 3) for i in range(5)]
    for i, h in enumerate(hidden):
        torch.testing.assert_close(out[f"enc{i}"], h, rtol=0, atol=0)
    rep = fm.load_report.to_dict()
    assert rep["n_missing"] == 0 and rep["n_loaded"] == len(ref.swinViT.state_dict())
    assert rep["n_unexpected"] == 2  # the pretext heads land under swinViT. and have no slot: reported


def test_swinunetr_without_the_rewrites_fails_loudly(tmp_path: Path):
    _ssl_swin_checkpoint(tmp_path / "model_swinvit.pt")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_swin_spec(prefix_rewrites=[]), tmp_path / "model_swinvit.pt")
    assert err.value.code == "missing_keys" and "prefix_rewrites" in err.value.message
    # Only the module. prefix rewritten: every MLP weight is missing -> still an error, never a partial load.
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_swin_spec(prefix_rewrites=SSL_REWRITES[:1]), tmp_path / "model_swinvit.pt")
    assert err.value.code == "missing_keys" and "linear1" in err.value.message
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_swin_spec(checkpoint_key="net"), tmp_path / "model_swinvit.pt")
    assert err.value.code == "wrong_format"
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(_swin_spec(checkpoint_key=None), tmp_path / "model_swinvit.pt")
    assert err.value.code == "wrong_format" and "checkpoint_key" in err.value.message


def test_segresnet_under_net_with_module_backbone_prefix(tmp_path: Path):
    kw = {"init_filters": 8, "blocks_down": [1, 1, 2], "blocks_up": [1, 1], "out_channels": 2}
    torch.manual_seed(1)
    net = _perturbed(SegResNet(spatial_dims=3, in_channels=1, **kw))
    torch.save({"net": {"module.backbone." + k: v for k, v in net.state_dict().items()}, "optimizer": {}}, tmp_path / "c.pt")
    spec = ModelSpec.model_validate(
        {
            "name": "s",
            "format": "monai",
            "architecture": {"class": "SegResNet", "kwargs": kw},
            "preprocessing": {"spacing": [1, 1, 1], "patch_size": [32, 32, 32]},
            "checkpoint_key": "net",
            "prefix_rewrites": [{"old": "module.backbone.", "new": ""}],
        }
    )
    fm = load_feature_model(spec, tmp_path / "c.pt")
    x = _x()
    _, downs = net.encode(x)
    out = fm(x)
    assert len(fm.encoder_stages) == 3
    for i, d in enumerate(downs):
        assert torch.equal(out[f"enc{i}"], d)
    rep = fm.load_report.to_dict()
    assert {k.split(".")[0] for k in rep["ignored_prefixes"]} == {"conv_final", "up_layers", "up_samples"}
    n_enc = sum(1 for k in net.state_dict() if k.startswith(("convInit.", "down_layers.")))
    assert rep["n_loaded"] == n_enc and rep["n_ignored"] == len(net.state_dict()) - n_enc


def _plain_monai(tmp_path: Path, name: str, net: torch.nn.Module, cls: str, kw: dict, patch: int):
    torch.save(net.state_dict(), tmp_path / f"{name}.pt")
    spec = ModelSpec.model_validate(
        {"name": name, "format": "monai", "architecture": {"class": cls, "kwargs": kw}, "preprocessing": {"spacing": [1, 1, 1], "patch_size": [patch] * 3}}
    )
    return load_feature_model(spec, tmp_path / f"{name}.pt")


def test_basicunet_dynunet_unetr_stages_equal_their_own_forward(tmp_path: Path):
    x = _x()
    kw = {"features": [4, 4, 8, 8, 16, 4], "out_channels": 2}
    torch.manual_seed(2)
    b = _perturbed(BasicUNet(spatial_dims=3, in_channels=1, **kw))
    fm = _plain_monai(tmp_path, "b", b, "BasicUNet", kw, 32)
    x0 = b.conv_0(x)
    assert torch.equal(fm(x)["enc0"], x0) and torch.equal(fm(x)["enc4"], b.down_4(b.down_3(b.down_2(b.down_1(x0)))))
    assert [s.stride[0] for s in fm.encoder_stages] == [1, 2, 4, 8, 16]

    kw = {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "upsample_kernel_size": [2, 2, 2], "out_channels": 2, "filters": [4, 8, 8, 16]}
    torch.manual_seed(3)
    d = _perturbed(DynUNet(spatial_dims=3, in_channels=1, **kw))
    fm = _plain_monai(tmp_path, "d", d, "DynUNet", kw, 32)
    h = d.input_block(x)
    assert torch.equal(fm(x)["enc0"], h)
    assert torch.equal(fm(x)["enc3"], d.bottleneck(d.downsamples[1](d.downsamples[0](h))))
    assert [s.channels for s in fm.encoder_stages] == [4, 8, 8, 16]

    kw = {"img_size": [32, 32, 32], "feature_size": 8, "hidden_size": 48, "mlp_dim": 96, "num_heads": 4, "out_channels": 2}
    torch.manual_seed(4)
    u = _perturbed(UNETR(in_channels=1, **kw))
    fm = _plain_monai(tmp_path, "u", u, "UNETR", kw, 32)
    last, hidden = u.vit(x)
    assert torch.equal(fm(x)["enc1"], u.proj_feat(hidden[6])) and torch.equal(fm(x)["enc3"], u.proj_feat(last))
    assert all(s.stride == (16, 16, 16) for s in fm.encoder_stages)
    # a token encoder: the fresh decoder upsamples by 2 per stage to full resolution, no skips
    assert [(s.channels, s.stride[0]) for s in fm.decoder_stages] == [(48, 8), (48, 4), (48, 2), (32, 1)]
    assert fm(x)["dec3"].shape == (x.shape[0], 32, *x.shape[2:])
    with pytest.raises(ModelLoadError) as err:
        _plain_monai(tmp_path, "u2", u, "UNETR", kw, 64)
    assert err.value.code == "bad_spec"


def test_shape_mismatch_and_channel_repeat(tmp_path: Path):
    kw = {"features": [4, 4, 8, 8, 16, 4], "out_channels": 2}
    torch.manual_seed(5)
    b = _perturbed(BasicUNet(spatial_dims=3, in_channels=1, **kw))
    torch.save(b.state_dict(), tmp_path / "b.pt")
    spec = ModelSpec.model_validate(
        {"name": "b", "format": "monai", "architecture": {"class": "BasicUNet", "kwargs": {**kw, "features": [4, 8, 8, 8, 16, 4]}},
         "preprocessing": {"spacing": [1, 1, 1], "patch_size": [32, 32, 32]}}
    )
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(spec, tmp_path / "b.pt")
    assert err.value.code == "shape_mismatch"
    good = spec.model_copy(update={"architecture": {"class": "BasicUNet", "kwargs": kw}})
    fm = load_feature_model(good, tmp_path / "b.pt", in_channels=2)
    x = _x()
    torch.testing.assert_close(fm(x.repeat(1, 2, 1, 1, 1))["enc2"], b.down_2(b.down_1(b.conv_0(x))), rtol=1e-4, atol=1e-5)


def _bundle_files(root: Path, net: torch.nn.Module, channels: int = 1) -> None:
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    meta = {"name": "tiny_swin", "version": "0.1.0", "network_data_format": {"inputs": {"image": {"num_channels": channels}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(meta))
    # An inference.json that would be dangerous (and is not even JSON): it must never be read.
    (root / "configs" / "inference.json").write_text('{"network_def": {"_target_": "os.system", "command": "touch PWNED"}} <<garbage')
    torch.save(net.state_dict(), root / "models" / "model.pt")


def test_monai_bundle_folder_and_zip(tmp_path: Path):
    torch.manual_seed(6)
    net = _perturbed(SwinUNETR(in_channels=1, **SWIN_KW))
    folder = tmp_path / "tiny_swin"
    _bundle_files(folder, net)
    spec = ModelSpec.model_validate(
        {"name": "b", "format": "monai_bundle", "architecture": {"class": "SwinUNETR", "kwargs": SWIN_KW},
         "preprocessing": {"spacing": [1, 1, 1], "patch_size": [64, 64, 64]}}
    )
    x = _x()
    ref = net.swinViT(x, net.normalize)
    fm = load_feature_model(spec, folder)
    assert torch.equal(fm(x)["enc4"], ref[4])
    assert fm.load_report.meta["name"] == "tiny_swin"
    zpath = tmp_path / "tiny_swin.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for f in folder.rglob("*"):
            if f.is_file():
                zf.write(f, f"tiny_swin/{f.relative_to(folder)}")
    fmz = load_feature_model(spec, zpath)
    assert torch.equal(fmz(x)["enc2"], ref[2])
    assert fmz.load_report.sha256 == __import__("hashlib").sha256(zpath.read_bytes()).hexdigest()
    assert not (Path.cwd() / "PWNED").exists()


def test_monai_bundle_errors(tmp_path: Path):
    torch.manual_seed(7)
    net = _perturbed(SwinUNETR(in_channels=1, **SWIN_KW))
    folder = tmp_path / "b2"
    _bundle_files(folder, net, channels=2)
    spec = ModelSpec.model_validate(
        {"name": "b", "format": "monai_bundle", "architecture": {"class": "SwinUNETR", "kwargs": {**SWIN_KW, "in_channels": 1}},
         "preprocessing": {"spacing": [1, 1, 1], "patch_size": [64, 64, 64]}}
    )
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(spec, folder)
    assert err.value.code == "bad_spec" and "input channels" in err.value.message
    (folder / "models" / "model.pt").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(spec, folder)
    assert err.value.code == "wrong_format"
    notzip = tmp_path / "x.zip"
    with zipfile.ZipFile(notzip, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(spec, notzip)
    assert err.value.code == "wrong_format"
