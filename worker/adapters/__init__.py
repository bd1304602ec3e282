"""Zoo adapters: registry spec + checkpoint file -> feature model (encoder stages + fresh decoder).

`load_feature_model` dispatches on `spec.format` (nnssl/OpenMind, MONAI state dict, MONAI bundle,
TorchScript). Every failure is a `ModelLoadError` with a stable `code`.
"""

from __future__ import annotations

from pathlib import Path

from models_registry.specs import ModelSpec
from worker.adapters.base import ERROR_CODES, FeatureModel, LoadReport, ModelLoadError, StageInfo
from worker.decoder import INIT_SCHEMES, DecoderInit

__all__ = [
    "ERROR_CODES",
    "FeatureModel",
    "LoadReport",
    "ModelLoadError",
    "StageInfo",
    "load_feature_model",
    "resolve_device",
]


def resolve_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when a GPU is visible, else `cpu`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_feature_model(
    spec: ModelSpec,
    checkpoint_path: Path,
    *,
    decoder_init: DecoderInit = "kaiming",
    decoder_seed: int = 0,
    device: str = "cpu",
    in_channels: int | None = None,
) -> FeatureModel:
    """Build the feature model of `spec` from `checkpoint_path`.

    `in_channels` overrides the spec's channel count (the pilot set's, e.g. for multi-modal input;
    a 1-channel stem is then repeated). `decoder_init` / `decoder_seed` set the fresh decoder.
    """
    if decoder_init not in INIT_SCHEMES:
        raise ModelLoadError("bad_spec", f"decoder_init must be one of {INIT_SCHEMES}, got {decoder_init!r}")
    if in_channels is not None and int(in_channels) < 1:
        raise ModelLoadError("bad_spec", f"in_channels must be >= 1, got {in_channels}")
    from models_registry.catalog import resolve_spec

    try:
        spec = resolve_spec(spec)  # fills a catalog entry's defaults; idempotent
    except ValueError as exc:
        raise ModelLoadError("bad_spec", str(exc)) from None
    path = Path(checkpoint_path)
    if not path.exists():
        raise ModelLoadError("file_not_found", "checkpoint file not found")
    kw = dict(in_channels=in_channels, decoder_init=decoder_init, decoder_seed=int(decoder_seed), device=resolve_device(device))
    if spec.format == "nnssl":
        from worker.adapters.nnssl import load_nnssl

        return load_nnssl(spec, path, **kw)
    if spec.format == "monai":
        from worker.adapters.monai_nets import load_monai

        return load_monai(spec, path, **kw)
    if spec.format == "monai_bundle":
        from worker.adapters.monai_nets import load_monai_bundle

        return load_monai_bundle(spec, path, **kw)
    if spec.format == "torchscript":
        from worker.adapters.torchscript import load_torchscript

        return load_torchscript(spec, path, **kw)
    raise ModelLoadError("bad_spec", f"unknown format {spec.format!r}")  # pragma: no cover - pydantic guards it
