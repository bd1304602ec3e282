"""MONAI networks from a state dict (`monai`) or a MONAI bundle (`monai_bundle`).

The spec names the class and its kwargs, where the weights sit in the loaded object
(`checkpoint_key`) and the key rewrites to apply (`module.` -> ``, `fc1` -> `linear1`, ...). Every
weight of the encoder part must load: a silent partial load (the classic trap with renamed keys)
is a `missing_keys` error. Decoder weights are never used (metrics.md §1: fresh decoder).

Bundles: only `configs/metadata.json` is read (never `inference.json`, which can run code); the
weights are `models/model.pt`.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models_registry.specs import MONAI_CLASSES, ModelSpec
from worker.adapters.base import (
    FeatureModel,
    LoadReport,
    ModelLoadError,
    StageEncoder,
    as_state_dict,
    build_feature_model,
    dig,
    measure_stages,
    repeat_in_channels,
    safe_torch_load,
    sha256_file,
)
from worker.decoder import DecoderInit

StagesFn = Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class MonaiFamily:
    """How to split a MONAI class into encoder stages: weight prefixes, stage maps, input divisor."""

    name: str
    prefixes: tuple[str, ...]
    stages: StagesFn
    divisor: Callable[[Mapping[str, Any]], tuple[int, int, int]]
    fixed_size: Callable[[Mapping[str, Any]], tuple[int, int, int] | None] = lambda kw: None
    dry_run_multiple: int = 2  # instance norms need > 1 voxel in the deepest map


def _rep3(v: Any) -> tuple[int, int, int]:
    if isinstance(v, (list, tuple)):
        if len(v) != 3:
            raise ModelLoadError("bad_spec", f"expected 3 values, got {v}")
        return (int(v[0]), int(v[1]), int(v[2]))
    return (int(v), int(v), int(v))


def _swin_stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    return list(net.swinViT(x, net.normalize))


def _segresnet_stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.convInit(x)
    out = []
    for down in net.down_layers:
        x = down(x)
        out.append(x)
    return out


def _unetr_stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    last, hidden = net.vit(x)
    return [net.proj_feat(hidden[3]), net.proj_feat(hidden[6]), net.proj_feat(hidden[9]), net.proj_feat(last)]


def _basicunet_stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x0 = net.conv_0(x)
    x1 = net.down_1(x0)
    x2 = net.down_2(x1)
    x3 = net.down_3(x2)
    x4 = net.down_4(x3)
    return [x0, x1, x2, x3, x4]


def _dynunet_stages(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.input_block(x)
    out = [x]
    for down in net.downsamples:
        x = down(x)
        out.append(x)
    out.append(net.bottleneck(x))
    return out


def _dynunet_divisor(kw: Mapping[str, Any]) -> tuple[int, int, int]:
    cur = [1, 1, 1]
    for s in kw.get("strides", []):
        cur = [c * v for c, v in zip(cur, _rep3(s))]
    return (cur[0], cur[1], cur[2])


FAMILIES: dict[str, MonaiFamily] = {
    "SwinUNETR": MonaiFamily(
        "SwinUNETR",
        ("swinViT.",),
        _swin_stages,
        lambda kw: _rep3(int(kw.get("patch_size", 2)) ** 5),
        dry_run_multiple=1,  # layer norms only
    ),
    "SegResNet": MonaiFamily(
        "SegResNet",
        ("convInit.", "down_layers."),
        _segresnet_stages,
        lambda kw: _rep3(2 ** (len(kw.get("blocks_down", (1, 2, 2, 4))) - 1)),
    ),
    "UNETR": MonaiFamily(
        "UNETR", ("vit.",), _unetr_stages, lambda kw: _rep3(16), fixed_size=lambda kw: _rep3(kw["img_size"])
    ),
    "BasicUNet": MonaiFamily(
        "BasicUNet", ("conv_0.", "down_1.", "down_2.", "down_3.", "down_4."), _basicunet_stages, lambda kw: _rep3(16)
    ),
    "DynUNet": MonaiFamily("DynUNet", ("input_block.", "downsamples.", "bottleneck."), _dynunet_stages, _dynunet_divisor),
}
assert set(FAMILIES) == set(MONAI_CLASSES)


def _build(cls_name: str, kwargs: Mapping[str, Any], in_channels: int) -> nn.Module:
    import monai.networks.nets as nets

    kw = dict(kwargs)
    kw.pop("in_channels", None)
    kw.setdefault("out_channels", 1)
    if cls_name in ("SegResNet", "BasicUNet", "DynUNet"):
        kw.setdefault("spatial_dims", 3)
    try:
        return getattr(nets, cls_name)(in_channels=in_channels, **kw)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ModelLoadError("bad_spec", f"cannot build MONAI {cls_name} from kwargs: {exc}") from None


def rewrite_keys(weights: Mapping[str, torch.Tensor], spec: ModelSpec) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        new = key
        for rw in spec.prefix_rewrites:
            new = rw.apply(new)
        if new in out:
            raise ModelLoadError("bad_spec", f"prefix rewrites map two checkpoint keys onto {new!r}")
        out[new] = value
    return out


def _load_monai_weights(
    spec: ModelSpec,
    raw: Any,
    *,
    sha: str,
    fmt: str,
    in_channels: int | None,
    decoder_init: DecoderInit,
    decoder_seed: int,
    device: str,
    meta: dict[str, Any] | None = None,
) -> FeatureModel:
    cls_name = spec.architecture.get("class")
    if cls_name not in FAMILIES:
        raise ModelLoadError("unsupported_architecture", f"MONAI class {cls_name!r} is not supported: {sorted(FAMILIES)}")
    family = FAMILIES[cls_name]
    kwargs = dict(spec.architecture.get("kwargs", {}))
    prep = spec.preprocessing
    target_in = int(in_channels or (prep.in_channels if prep else kwargs.get("in_channels", 1)))
    weights = as_state_dict(dig(raw, spec.checkpoint_key), f"the object at checkpoint_key {spec.checkpoint_key!r}")
    weights = rewrite_keys(weights, spec)
    net = _build(cls_name, kwargs, target_in)
    expected = {k: v for k, v in net.state_dict().items() if k.startswith(family.prefixes)}
    report = LoadReport(format=fmt, sha256=sha, meta={"class": cls_name, **(meta or {})})
    provided = {k: v for k, v in weights.items() if k.startswith(family.prefixes)}
    report.ignored = sorted(k for k in weights if k not in provided)
    report.missing = sorted(k for k in expected if k not in provided)
    report.unexpected = sorted(k for k in provided if k not in expected)
    if report.missing:
        hint = ""
        if not provided:
            sample = sorted(weights)[:3]
            hint = f"; no checkpoint key starts with {list(family.prefixes)} (first keys: {sample}) - declare prefix_rewrites"
        raise ModelLoadError(
            "missing_keys",
            f"{len(report.missing)} of {len(expected)} {cls_name} encoder weights are missing (first: {report.missing[:3]}){hint}",
        )
    state = {}
    repeated = []
    for key, want in expected.items():
        got = provided[key]
        if tuple(got.shape) != tuple(want.shape):
            if got.ndim == want.ndim and got.ndim >= 3 and got.shape[1] == 1 and want.shape[1] == target_in > 1 and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]:
                got = repeat_in_channels(got, target_in)
                repeated.append(key)
            else:
                raise ModelLoadError("shape_mismatch", f"{key}: checkpoint {tuple(got.shape)} vs network {tuple(want.shape)}")
        state[key] = got.to(want.dtype)
    result = net.load_state_dict(state, strict=False)
    not_loaded = [k for k in result.missing_keys if k in expected]
    if not_loaded or result.unexpected_keys:  # pragma: no cover - guarded above
        raise ModelLoadError("missing_keys", f"encoder weights not loaded: {not_loaded[:3]}")
    report.loaded = sorted(expected)
    if report.unexpected:
        report.notes.append(f"{len(report.unexpected)} checkpoint keys under the encoder prefixes have no slot in {cls_name}")
    if repeated:
        report.notes.append(f"input weights repeated from 1 to {target_in} channels: {repeated}")
    encoder = StageEncoder(net, family.stages)
    fixed = family.fixed_size(kwargs)
    if fixed is not None:
        dry = fixed
        if prep is not None and tuple(prep.patch_size) != fixed:
            raise ModelLoadError("bad_spec", f"{cls_name} takes exactly {fixed} windows; set preprocessing.patch_size to it")
    else:
        div = family.divisor(kwargs)
        k = family.dry_run_multiple
        dry = (k * div[0], k * div[1], k * div[2])
    measured = measure_stages(encoder, target_in, dry)
    return build_feature_model(
        encoder, measured, spec.encoder_stages(), load_report=report, preprocessing=prep, in_channels=target_in,
        decoder_init=decoder_init, decoder_seed=decoder_seed, device=device,
    )


def load_monai(spec: ModelSpec, checkpoint_path: Path, **kw: Any) -> FeatureModel:
    sha = sha256_file(checkpoint_path)
    raw = safe_torch_load(checkpoint_path)
    return _load_monai_weights(spec, raw, sha=sha, fmt="monai", **kw)


BUNDLE_METADATA = "configs/metadata.json"
BUNDLE_WEIGHTS = "models/model.pt"
MAX_METADATA_BYTES = 1 << 20


def read_bundle(path: Path) -> tuple[dict[str, Any], bytes, str]:
    """(metadata, weight bytes, sha256) of a bundle folder or zip; `inference.json` is never opened."""
    if path.is_dir():
        meta_p, weights_p = path / BUNDLE_METADATA, path / BUNDLE_WEIGHTS
        if not meta_p.is_file() or not weights_p.is_file():
            raise ModelLoadError("wrong_format", f"a MONAI bundle folder needs {BUNDLE_METADATA} and {BUNDLE_WEIGHTS}")
        if meta_p.stat().st_size > MAX_METADATA_BYTES:
            raise ModelLoadError("wrong_format", "metadata.json is too large")
        meta_bytes, weights = meta_p.read_bytes(), weights_p.read_bytes()
        sha = sha256_file(weights_p)
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            meta_name = _bundle_member(names, BUNDLE_METADATA)
            weights_name = _bundle_member(names, BUNDLE_WEIGHTS)
            if meta_name is None or weights_name is None:
                raise ModelLoadError("wrong_format", f"the zip is not a MONAI bundle: it needs {BUNDLE_METADATA} and {BUNDLE_WEIGHTS}")
            if zf.getinfo(meta_name).file_size > MAX_METADATA_BYTES:
                raise ModelLoadError("wrong_format", "metadata.json is too large")
            meta_bytes, weights = zf.read(meta_name), zf.read(weights_name)
        sha = sha256_file(path)
    elif not path.exists():
        raise ModelLoadError("file_not_found", "bundle not found")
    else:
        raise ModelLoadError("wrong_format", "a MONAI bundle is a folder or a zip archive")
    try:
        meta = json.loads(meta_bytes)
    except ValueError:
        raise ModelLoadError("wrong_format", "configs/metadata.json is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ModelLoadError("wrong_format", "configs/metadata.json is not a JSON object")
    return meta, weights, sha


def _bundle_member(names: Sequence[str], suffix: str) -> str | None:
    """`suffix` at the zip root or under exactly one top-level folder (how bundles are zipped)."""
    hits = [n for n in names if n == suffix or (n.endswith("/" + suffix) and n.count("/") == suffix.count("/") + 1)]
    return sorted(hits)[0] if hits else None


def bundle_input_channels(meta: Mapping[str, Any]) -> int | None:
    try:
        return int(meta["network_data_format"]["inputs"]["image"]["num_channels"])
    except (KeyError, TypeError, ValueError):
        return None


def load_monai_bundle(spec: ModelSpec, checkpoint_path: Path, **kw: Any) -> FeatureModel:
    meta, weights, sha = read_bundle(checkpoint_path)
    raw = safe_torch_load(weights)
    n_in = bundle_input_channels(meta)
    declared = spec.architecture.get("kwargs", {}).get("in_channels")
    if n_in is not None and declared is not None and int(declared) != n_in:
        raise ModelLoadError("bad_spec", f"bundle metadata says {n_in} input channels, the spec's kwargs say {declared}")
    info = {k: meta.get(k) for k in ("name", "version", "monai_version") if isinstance(meta.get(k), (str, int, float))}
    info["bundle_input_channels"] = n_in
    return _load_monai_weights(spec, raw, sha=sha, fmt="monai_bundle", meta=info, **kw)
