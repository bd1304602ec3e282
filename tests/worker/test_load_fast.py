"""The meta-device load path equals the eager one bitwise: encoder weights, decoder, stages, scores.

The reference here is the previous loader, written out: the network built on the CPU with its
random init, stem + encoder copied in by `load_state_dict`, stages measured by a CPU forward, and
the decoder built on the CPU before its seeded init.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import worker.pipeline as pipeline
from ckpt_factory import build_dna_network, nnssl_plan, serialised_kwargs
from models_registry.specs import ModelSpec, PreprocessingSpec
from transferability.config import ScoringConfig
from worker.adapters import ModelLoadError, load_feature_model
from worker.adapters import nnssl as nnssl_mod
from worker.adapters.base import FeatureModel, LoadReport, measure_stages
from worker.decoder import RandomDecoder, init_decoder
from worker.extract import CaseVolume

SPEC = ModelSpec(name="t", format="nnssl", preprocessing=PreprocessingSpec(spacing=(1.0, 1.0, 1.0), patch_size=(16, 16, 16)))


def _eager_decoder(channels, strides, init, seed) -> RandomDecoder:
    dec = RandomDecoder.__new__(RandomDecoder)
    nn.Module.__init__(dec)
    dec.init_scheme, dec.seed = init, seed
    with torch.random.fork_rng(devices=[]):
        dec._build(channels, strides)  # CPU layers with their own random init, then overwritten
    init_decoder(dec, init, seed)
    return dec


def _eager_feature_model(spec, path, *, decoder_init="kaiming", decoder_seed=0, device="cpu", in_channels=None) -> FeatureModel:
    """The previous nnssl loader (full CPU build, copy-load, CPU dry run), for the tiny test models."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    arch = ckpt["nnssl_adaptation_plan"]["architecture_plans"]
    net = nnssl_mod._build_network(arch["arch_class_name"], arch["arch_kwargs"], arch["arch_kwargs_requiring_import"], in_channels or 1)
    enc = net.encoder
    enc.load_state_dict({k[len("encoder.") :]: v for k, v in ckpt["network_weights"].items() if k.startswith("encoder.")}, strict=True)
    enc.return_skips = True
    stages = measure_stages(enc, in_channels or 1, [8, 8, 8])
    fm = FeatureModel(enc, stages, load_report=LoadReport("nnssl", "x"), preprocessing=spec.preprocessing, in_channels=in_channels or 1,
                      decoder_init=decoder_init, decoder_seed=decoder_seed, device=device)
    fm.decoder = _eager_decoder([s.channels for s in stages], [s.stride for s in stages], decoder_init, decoder_seed).eval()
    return fm


def _all_tensors(m: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(m.named_parameters(remove_duplicate=False)), **dict(m.named_buffers(remove_duplicate=False))}


def test_meta_load_equals_the_eager_load_bitwise(nnssl_full):
    path, net = nnssl_full
    new = load_feature_model(SPEC, path)
    old = _eager_feature_model(SPEC, path)
    got, ref = _all_tensors(new.encoder), _all_tensors(old.encoder)
    assert got.keys() == ref.keys() and len(got) > 0
    for k in ref:  # every parameter and buffer: loaded, on the CPU, equal bit for bit
        assert not got[k].is_meta and got[k].device.type == "cpu", k
        assert got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k]), k
        assert got[k].is_contiguous()
    assert [(s.name, s.channels, s.stride) for s in new.stages] == [(s.name, s.channels, s.stride) for s in old.stages]
    x = torch.randn((1, 1, 16, 16, 16), generator=torch.Generator().manual_seed(5))
    a, b = new(x), old(x)
    assert a.keys() == b.keys() and all(torch.equal(a[s], b[s]) for s in a)


@pytest.mark.parametrize("init", ["kaiming", "xavier", "gaussian"])
def test_decoder_without_the_wasted_init_is_the_eager_decoder(init):
    ch, st = [8, 16, 32], [(1, 1, 1), (2, 2, 2), (4, 4, 4)]
    new, old = RandomDecoder(ch, st, init=init, seed=7), _eager_decoder(ch, st, init, 7)
    got, ref = _all_tensors(new), _all_tensors(old)
    assert got.keys() == ref.keys()
    for k in ref:
        assert not got[k].is_meta and torch.equal(got[k], ref[k]), k


def test_a_tensor_the_state_dict_does_not_cover_is_an_error_not_garbage(nnssl_full, monkeypatch):
    """A non-persistent buffer is never in a checkpoint: left on `meta`, the load must refuse."""
    path, _ = nnssl_full
    build = nnssl_mod._build_network

    def with_hidden_buffer(*args, **kwargs):
        net = build(*args, **kwargs)
        net.encoder.stem.register_buffer("scratch", torch.ones(3), persistent=False)
        return net

    monkeypatch.setattr(nnssl_mod, "_build_network", with_hidden_buffer)
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(SPEC, path)
    assert err.value.code == "unsupported_architecture" and "stem.scratch" in err.value.message


def test_stage_errors_still_come_after_key_errors(tmp_path: Path, nnssl_full):
    """The stages are measured on `meta` before the load, but a key error is still reported first."""
    _, net = nnssl_full
    weights = dict(net.state_dict())
    del weights["encoder.stages.1.blocks.0.conv1.norm.weight"]
    path = tmp_path / "c.pth"
    torch.save({"network_weights": weights, "nnssl_adaptation_plan": nnssl_plan(kwargs=serialised_kwargs())}, path)
    wrong = [{"name": f"e{i}", "channels": 4, "stride": [1, 1, 1], "role": "encoder"} for i in range(3)]
    wrong_stages = ModelSpec.model_validate({**SPEC.model_dump(), "stages": wrong})
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(wrong_stages, path)
    assert err.value.code == "missing_keys"
    with pytest.raises(ModelLoadError) as err:
        load_feature_model(wrong_stages, nnssl_full[0])
    assert err.value.code == "stage_mismatch"


def _cases() -> list[CaseVolume]:
    rng = np.random.default_rng(1)
    out = []
    for shape, spacing in [((24, 20, 22), (1.0, 1.0, 1.0)), ((18, 16, 17), (1.5, 1.5, 1.5))]:
        lab = np.zeros(shape, np.int64)
        c = np.asarray(shape) // 2
        zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        r = np.sqrt(((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2)
        lab[r < 8] = 1
        lab[r < 4] = 2
        out.append(CaseVolume((lab * 1.5 + rng.normal(0, 0.5, shape)).astype(np.float32)[None], lab, spacing))
    return out


def _scores(res) -> dict:
    d = res.to_dict()
    for k in ("timings", "load_report"):  # wall times; the eager reference does not rebuild the report
        d.pop(k)
    for e in d["diagnostics"]["extraction"]:
        e.pop("seconds", None)
    return d


def test_score_model_is_unchanged_by_the_fast_load(nnssl_full, monkeypatch):
    path, _ = nnssl_full
    config = ScoringConfig(n_samples=200, n_anchors=30, k=3, decoder_init="xavier", decoder_seed=2)
    new = pipeline.score_model(SPEC, path, _cases(), config, device="cpu")
    monkeypatch.setattr(pipeline, "load_feature_model", _eager_feature_model)
    old = pipeline.score_model(SPEC, path, _cases(), config, device="cpu")
    assert _scores(new) == _scores(old)
    assert np.isfinite(new.grtd) and np.isfinite(new.lbtc)
