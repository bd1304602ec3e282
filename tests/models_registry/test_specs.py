"""The registry's model spec: validation at the edge, key rewrites, derived decoder stages."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from models_registry.specs import KeyRewrite, ModelSpec, PreprocessingSpec, StageSpec, decoder_stages_for, with_decoder_stages

PREP = {"spacing": [1.0, 1.0, 1.0], "patch_size": [64, 64, 64]}


def _enc(strides=(1, 2, 4, 8), channels=(8, 16, 32, 64)):
    return [StageSpec(name=f"enc{i}", channels=c, stride=(s, s, s), role="encoder") for i, (c, s) in enumerate(zip(channels, strides))]


def test_spec_round_trips_through_json():
    spec = ModelSpec(
        name="m",
        format="monai",
        architecture={"class": "SegResNet", "kwargs": {"init_filters": 8}},
        preprocessing=PREP,
        checkpoint_key="state_dict",
        prefix_rewrites=[{"old": "module.", "new": ""}],
    )
    again = ModelSpec.model_validate(json.loads(spec.model_dump_json()))
    assert again == spec
    assert again.preprocessing.normalization == "zscore"
    assert again.preprocessing.in_channels == 1


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"name": "m", "format": "onnx"}, "format"),
        ({"name": "m", "format": "monai", "architecture": {"class": "ResNet"}}, "architecture.class"),
        ({"name": "m", "format": "torchscript", "preprocessing": PREP}, "encoder stages"),
        ({"name": "m", "format": "nnssl", "checkpoint_key": "net"}, "monai formats only"),
        ({"name": "m", "format": "nnssl", "surprise": 1}, "extra"),
        ({"name": "m", "format": "nnssl", "preprocessing": {**PREP, "spacing": [1, 0, 1]}}, "spacing"),
        ({"name": "m", "format": "nnssl", "preprocessing": {**PREP, "normalization": "ct"}}, "ct_clip"),
        ({"name": "m", "format": "nnssl", "preprocessing": {**PREP, "ct_clip": [0, 1]}}, "normalization 'ct' only"),
        ({"name": "m", "format": "nnssl", "preprocessing": {**PREP, "normalization": "ct", "ct_clip": [5, 1]}}, "lo < hi"),
        ({"name": "m", "format": "nnssl", "stages": [{"name": "a", "channels": 1, "stride": [1, 1, 1], "role": "encoder"}] * 2}, "unique"),
        ({"name": "m", "format": "nnssl", "stages": [{"name": "a", "channels": 1, "stride": [0, 1, 1], "role": "encoder"}]}, "stride"),
    ],
)
def test_invalid_specs_are_rejected_with_a_reason(payload, message):
    with pytest.raises(ValidationError, match=message):
        ModelSpec.model_validate(payload)


def test_ct_preprocessing_accepts_clip_and_scale():
    prep = PreprocessingSpec(spacing=(1, 1, 1), patch_size=(8, 8, 8), normalization="ct", ct_clip=(-1000, 1000), ct_mean=0, ct_std=500)
    assert prep.ct_clip == (-1000, 1000)


def test_prefix_and_segment_rewrites():
    assert KeyRewrite(old="module.", new="").apply("module.layers1.0.x") == "layers1.0.x"
    assert KeyRewrite(old="module.", new="").apply("net.module.x") == "net.module.x"
    assert KeyRewrite(old="swin_vit.", new="swinViT.").apply("swin_vit.patch_embed.proj.weight") == "swinViT.patch_embed.proj.weight"
    seg = KeyRewrite(old="fc1", new="linear1", kind="segment")
    assert seg.apply("swinViT.layers1.0.blocks.0.mlp.fc1.weight") == "swinViT.layers1.0.blocks.0.mlp.linear1.weight"
    assert seg.apply("a.fc10.weight") == "a.fc10.weight"  # whole segments only
    multi = KeyRewrite(old="module.backbone", new="", kind="segment")
    assert multi.apply("module.backbone.stem.w") == "stem.w"


def test_decoder_stages_mirror_the_skips_coarse_to_fine():
    dec = decoder_stages_for(_enc())
    assert [s.name for s in dec] == ["dec0", "dec1", "dec2"]
    assert [s.channels for s in dec] == [32, 16, 8]
    assert [s.stride for s in dec] == [(4, 4, 4), (2, 2, 2), (1, 1, 1)]
    assert all(s.role == "decoder" for s in dec)


def test_decoder_stages_need_nested_strides():
    with pytest.raises(ValueError, match="divide"):
        decoder_stages_for(_enc(strides=(1, 2, 3, 8)))
    with pytest.raises(ValueError, match="two encoder stages"):
        decoder_stages_for(_enc()[:1])


def test_with_decoder_stages_replaces_stale_decoder_entries():
    stale = StageSpec(name="dec0", channels=999, stride=(1, 1, 1), role="decoder")
    spec = ModelSpec(name="m", format="nnssl", stages=_enc() + [stale])
    out = with_decoder_stages(spec)
    assert [s.name for s in out.stages] == ["enc0", "enc1", "enc2", "enc3", "dec0", "dec1", "dec2"]
    assert out.decoder_stages()[0].channels == 32


def test_specs_and_catalog_do_not_import_torch():
    code = "import sys, models_registry.specs, models_registry.catalog; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
