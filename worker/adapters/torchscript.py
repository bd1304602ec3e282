"""TorchScript encoders: a scripted/traced module returning a tuple, list or dict of stage maps.

The spec declares the encoder stages (name, channels, stride); a dry run on one window of the
spec's patch size verifies them. Outputs are matched by position (tuple/list, optionally picked
with `architecture.output_indices`) or by key (dict: the stage names, or `architecture.output_keys`).
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from models_registry.specs import ModelSpec
from worker.adapters.base import (
    FeatureModel,
    LoadReport,
    ModelLoadError,
    build_feature_model,
    measure_stages,
    sha256_file,
)
from worker.decoder import DecoderInit


class _ScriptEncoder(nn.Module):
    def __init__(self, module: nn.Module, keys: list[str] | None, indices: list[int] | None) -> None:
        super().__init__()
        self.module = module
        self.keys = keys
        self.indices = indices

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.module(x)
        if isinstance(out, Mapping):
            if self.keys is None:
                raise ModelLoadError("stage_mismatch", "the module returns a dict but no output keys are known")
            missing = [k for k in self.keys if k not in out]
            if missing:
                raise ModelLoadError("stage_mismatch", f"module output has no key(s) {missing}; keys: {sorted(out)}")
            return [out[k] for k in self.keys]
        if isinstance(out, torch.Tensor):
            out = [out]
        if not isinstance(out, (list, tuple)):
            raise ModelLoadError("stage_mismatch", f"module returns {type(out).__name__}; a tuple, list or dict of maps is needed")
        if self.indices is not None:
            return [out[i] for i in self.indices]
        return list(out)


def load_torchscript(
    spec: ModelSpec,
    checkpoint_path: Path,
    *,
    in_channels: int | None,
    decoder_init: DecoderInit,
    decoder_seed: int,
    device: str,
) -> FeatureModel:
    if not checkpoint_path.is_file():
        raise ModelLoadError("file_not_found", "TorchScript file not found")
    if not zipfile.is_zipfile(checkpoint_path):
        raise ModelLoadError("wrong_format", "not a TorchScript archive (expected a zip written by torch.jit.save)")
    sha = sha256_file(checkpoint_path)
    with zipfile.ZipFile(checkpoint_path) as zf:
        if not any(n.endswith("/code/") or "/code/" in n for n in zf.namelist()):
            raise ModelLoadError("wrong_format", "the archive holds no TorchScript code: is it a torch.save checkpoint? use format nnssl/monai")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(checkpoint_path), map_location="cpu")
    except Exception as exc:  # malformed archives raise RuntimeError
        raise ModelLoadError("unreadable_checkpoint", f"torch.jit.load failed ({type(exc).__name__})") from None
    declared = spec.encoder_stages()
    if not declared:
        raise ModelLoadError("bad_spec", "a TorchScript model needs its encoder stages declared in the spec")
    arch = spec.architecture
    keys = [str(k) for k in arch["output_keys"]] if "output_keys" in arch else [s.name for s in declared]
    indices = [int(i) for i in arch["output_indices"]] if "output_indices" in arch else None
    encoder = _ScriptEncoder(module, keys, indices)
    prep = spec.preprocessing
    if prep is None:
        raise ModelLoadError("missing_preprocessing", "a TorchScript model needs preprocessing (spacing, patch size) in its spec")
    target_in = int(in_channels or prep.in_channels)
    measured = measure_stages(encoder, target_in, prep.patch_size)
    report = LoadReport(format="torchscript", sha256=sha, loaded=sorted(module.state_dict().keys()))
    report.notes.append(f"strides verified by a dry run on {tuple(prep.patch_size)}")
    return build_feature_model(
        encoder, measured, declared, load_report=report, preprocessing=prep, in_channels=target_in,
        decoder_init=decoder_init, decoder_seed=decoder_seed, device=device,
    )
