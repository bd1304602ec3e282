"""nnssl / OpenMind checkpoints: `{"network_weights": state dict, "nnssl_adaptation_plan": plan}`.

Layouts accepted (tests/utils/nnssl_layouts.py writes each as nnssl does): the hub release
(`checkpoint_final.pth` with `adaptation_plan.json` and `config.json` beside it), raw trainer output
(`fold_X/checkpoint_final.pth` with optimizer state, logs and `init_args`, its plan JSON one folder
up), SparK/S3D output (`network_weights` + `spark_weights`, no plan: the catalog entry's plan is
used) and state dicts saved through DDP / `torch.compile` (`module.` / `_orig_mod.` stripped).
The file's `trainer_name` is recorded and must agree with the catalog entry it is registered under.

The plan names the architecture (`ResEncL` preset, or `ResidualEncoderUNet` / `PlainConvUNet`
with `arch_kwargs`) and where the stem and encoder live in the state dict. We build the network
with `dynamic_network_architectures`, keep its encoder, load stem + encoder strictly and report
every other key (decoder, projection heads, the decoder's alias of the encoder) as ignored. A
1-channel stem is repeated for C-channel input as nnU-Net fine-tuning does.

The network is built on the `meta` device (no random init of ~100 M parameters that the load would
overwrite), its stage shapes are measured there, and the checkpoint tensors are then assigned in
place of every meta parameter/buffer; one left on `meta` is an error, never uninitialised memory.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models_registry.catalog import entry_for_trainer, get_entry
from models_registry.nnssl_files import PLAN_FILE, name_field, read_plan_json, sidecar_plans
from models_registry.specs import ModelSpec, PreprocessingSpec
from worker.adapters import primus
from worker.adapters.base import (
    FeatureModel,
    LoadReport,
    ModelLoadError,
    StageInfo,
    as_state_dict,
    build_feature_model,
    measure_stages,
    repeat_in_channels,
    safe_torch_load,
    sha256_file,
)
from worker.decoder import DecoderInit

RESENC_L_KWARGS: dict[str, Any] = {
    "n_stages": 6,
    "features_per_stage": [32, 64, 128, 256, 320, 320],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[3, 3, 3]] * 6,
    "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 3, 4, 6, 6, 6],
    "n_conv_per_stage_decoder": [1, 1, 1, 1, 1],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-5, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.modules.activation.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}
"""The `ResEncL` preset of nnssl (6 stages 32-64-128-256-320-320, blocks 1-3-4-6-6-6)."""

_IMPORTABLE_ROOTS = ("torch.nn", "dynamic_network_architectures")
_CLASS_KWARGS = ("conv_op", "norm_op", "dropout_op", "nonlin", "block")
SUPPORTED_ARCHS = ("ResEncL", "ResidualEncoderUNet", "PlainConvUNet", "PrimusS", "PrimusB", "PrimusM", "PrimusL")


def resolve_class(dotted: str) -> type:
    """Import a class named in `arch_kwargs` (torch.nn / dynamic_network_architectures only)."""
    if not isinstance(dotted, str) or not any(dotted == r or dotted.startswith(r + ".") for r in _IMPORTABLE_ROOTS):
        raise ModelLoadError("unsupported_architecture", f"refusing to import {dotted!r}: only torch.nn and dynamic_network_architectures classes")
    module_name, _, attr = dotted.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attr)
    except (ImportError, AttributeError):
        raise ModelLoadError("unsupported_architecture", f"cannot resolve {dotted!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ModelLoadError("unsupported_architecture", f"{dotted!r} is not an nn.Module class")
    return cls


def _build_network(arch_class_name: str, arch_kwargs: Mapping[str, Any] | None, requiring_import: list[str] | None, in_channels: int) -> nn.Module:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    if arch_class_name == "ResEncL":
        kwargs = dict(RESENC_L_KWARGS)
        cls: type = ResidualEncoderUNet
        requiring_import = ["conv_op", "norm_op", "dropout_op", "nonlin"]
    elif arch_class_name in ("ResidualEncoderUNet", "PlainConvUNet"):
        if not isinstance(arch_kwargs, Mapping) or not arch_kwargs:
            raise ModelLoadError("wrong_format", f"architecture {arch_class_name} needs arch_kwargs in the adaptation plan")
        kwargs = dict(arch_kwargs)
        cls = ResidualEncoderUNet if arch_class_name == "ResidualEncoderUNet" else PlainConvUNet
    else:
        raise ModelLoadError(
            "unsupported_architecture", f"nnssl architecture {arch_class_name!r} is not supported (supported: {', '.join(SUPPORTED_ARCHS)})"
        )
    for key in set(requiring_import or []) | set(_CLASS_KWARGS):
        if key in kwargs and isinstance(kwargs[key], str):
            kwargs[key] = resolve_class(kwargs[key])
    for key in ("num_classes", "input_channels", "deep_supervision"):
        kwargs.pop(key, None)
    try:
        return cls(input_channels=in_channels, num_classes=1, deep_supervision=False, **kwargs)
    except (TypeError, AssertionError, ValueError, KeyError) as exc:
        raise ModelLoadError("unsupported_architecture", f"cannot build {arch_class_name} from arch_kwargs: {exc}") from None


WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Added to state-dict keys by DistributedDataParallel and torch.compile; nnssl unwraps before saving."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_plan_json(path)
    except ValueError as exc:
        raise ModelLoadError("wrong_format", str(exc)) from None


def read_plan(ckpt: Mapping[str, Any], spec: ModelSpec, checkpoint_path: Path) -> tuple[dict[str, Any], str]:
    """The adaptation plan and where it came from: embedded in the checkpoint, else
    `spec.architecture['adaptation_plan']`, else an `adaptation_plan.json` (`sidecar_plans`), else
    the plan of the spec's catalog entry (SparK/S3D output is saved without one)."""
    plan = ckpt.get("nnssl_adaptation_plan")
    if isinstance(plan, Mapping):
        return dict(plan), "checkpoint"
    plan = spec.architecture.get("adaptation_plan")
    if isinstance(plan, Mapping):
        return dict(plan), "spec"
    for side in sidecar_plans(checkpoint_path):
        where = PLAN_FILE if side.parent == checkpoint_path.parent else f"../{PLAN_FILE}"
        return _read_json(side), where
    if spec.catalog is not None:
        entry = get_entry(spec.catalog)
        if entry.adaptation_plan is not None:
            return dict(entry.adaptation_plan), f"catalog entry {entry.name}"
    raise ModelLoadError(
        "wrong_format", f"no nnssl_adaptation_plan in the checkpoint, the spec, an {PLAN_FILE} beside it or one folder up, "
        "or a catalog entry with a plan"
    )


def read_trainer_name(ckpt: Mapping[str, Any], checkpoint_path: Path) -> str | None:
    """The nnssl trainer class that wrote the file: `trainer_name` in the checkpoint, else in the
    `adaptation_plan.json` that add_adaptation_plan.py writes beside it."""
    name = ckpt.get("trainer_name")
    if isinstance(name, str) and name:
        return name
    for side in sidecar_plans(checkpoint_path):
        name = name_field(_read_json(side), "trainer_name")
        if name is not None:
            return name
    return None


def check_trainer(spec: ModelSpec, trainer_name: str | None, report: LoadReport) -> None:
    """Refuse a checkpoint whose trainer contradicts the catalog entry it is registered under
    (`trainer_mismatch`), unless the spec allows it; the override goes into the report."""
    report.meta["trainer_name"] = trainer_name
    if trainer_name is None or spec.catalog is None:
        return
    entry = get_entry(spec.catalog)
    if not entry.trainer_names or entry.accepts_trainer(trainer_name):
        return
    if spec.allow_trainer_mismatch:
        report.meta["trainer_mismatch_allowed"] = True
        report.notes.append(f"trainer {trainer_name} is not one of {entry.name}'s; accepted because the spec sets allow_trainer_mismatch")
        return
    other = entry_for_trainer(trainer_name)
    hint = f" it looks like {other.name}." if other is not None else ""
    raise ModelLoadError(
        "trainer_mismatch",
        f"the checkpoint was written by {trainer_name}, but catalog entry {entry.name} comes from {', '.join(entry.trainer_names)};"
        f"{hint} Register it under the right entry, or set allow_trainer_mismatch in the spec to override",
    )


def strip_wrapper_prefixes(weights: Mapping[str, torch.Tensor], report: LoadReport) -> dict[str, torch.Tensor]:
    """Drop the `module.` / `_orig_mod.` prefixes DDP and torch.compile put on every key, as nnssl does before saving."""
    out: dict[str, torch.Tensor] = {}
    stripped: set[str] = set()
    for key, value in weights.items():
        new = key
        while (prefix := next((p for p in WRAPPER_PREFIXES if new.startswith(p)), None)) is not None:
            new = new[len(prefix) :]  # DDP around a compiled model gives `module._orig_mod.`
            stripped.add(prefix)
        if new in out:
            raise ModelLoadError("wrong_format", f"two network_weights keys map to {new!r} once wrapper prefixes are stripped")
        out[new] = value
    if stripped:
        report.notes.append(f"stripped wrapper prefixes {', '.join(sorted(stripped))} from network_weights (DDP / torch.compile)")
    return out


def plan_preprocessing(plan: Mapping[str, Any], in_channels: int) -> PreprocessingSpec | None:
    """Preprocessing read from the plan as nnssl's default preprocessor applies it: the pre-training
    spacing, z-score (inside the non-zero mask when the plan says `use_mask_for_norm`), crop to the
    non-zero box, the plan's `transpose_forward`, spline resampling; the recommended patch. None if incomplete."""
    try:
        pretrain = plan["pretrain_plan"]
        configs = pretrain["configurations"]
        cfg = next(iter(configs.values())) if isinstance(configs, Mapping) else configs
        spacing = tuple(float(s) for s in cfg["spacing"])
        patch = tuple(int(p) for p in plan.get("recommended_downstream_patchsize") or cfg["patch_size"])
        schemes = cfg.get("normalization_schemes", ["ZScoreNormalization"])
        mask_norm = any(bool(m) for m in (cfg.get("use_mask_for_norm") or [False]))
        transpose = tuple(int(a) for a in (pretrain.get("transpose_forward") or (0, 1, 2)))
    except (KeyError, TypeError, ValueError, StopIteration):
        return None
    if len(spacing) != 3 or len(patch) != 3 or any("ZScore" not in str(s) for s in schemes):
        return None
    try:
        return PreprocessingSpec(
            spacing=spacing, normalization="zscore", patch_size=patch, in_channels=in_channels,  # type: ignore[arg-type]
            resampling="nnunet", crop_to_nonzero=True, use_mask_for_norm=mask_norm, transpose_forward=transpose,  # type: ignore[arg-type]
        )
    except ValueError:
        return None


def load_nnssl(
    spec: ModelSpec,
    checkpoint_path: Path,
    *,
    in_channels: int | None,
    decoder_init: DecoderInit,
    decoder_seed: int,
    device: str,
) -> FeatureModel:
    with ThreadPoolExecutor(1) as pool:  # hashing and unpickling both release the GIL: overlap them
        sha_job = pool.submit(sha256_file, checkpoint_path)
        ckpt = safe_torch_load(checkpoint_path)
        sha = sha_job.result()
    if not isinstance(ckpt, Mapping) or "network_weights" not in ckpt:
        found = sorted(map(str, ckpt.keys()))[:12] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ModelLoadError("wrong_format", f"not an nnssl checkpoint: no 'network_weights' (found {found})")
    report = LoadReport(format="nnssl", sha256=sha)
    check_trainer(spec, read_trainer_name(ckpt, checkpoint_path), report)
    weights = strip_wrapper_prefixes(as_state_dict(ckpt["network_weights"], "network_weights"), report)
    plan, plan_source = read_plan(ckpt, spec, checkpoint_path)
    if "spark_weights" in ckpt:
        report.notes.append("SparK trainer output: network_weights used, spark_weights (the SparK wrapper) ignored")
    if plan_source.startswith("catalog"):
        report.notes.append(f"the checkpoint carries no adaptation plan: the plan of {plan_source} was used")
    arch = plan.get("architecture_plans") or {}
    arch_name = arch.get("arch_class_name")
    if not isinstance(arch_name, str):
        raise ModelLoadError("wrong_format", "adaptation plan has no architecture_plans.arch_class_name")
    wanted = spec.architecture.get("arch_class_name")
    if wanted is not None and wanted != arch_name:
        raise ModelLoadError("bad_spec", f"spec expects architecture {wanted!r}, the checkpoint's plan says {arch_name!r}")
    pt_in = int(plan.get("pretrain_num_input_channels", 1))
    prep = spec.preprocessing
    target_in = int(in_channels or (prep.in_channels if prep else pt_in))
    if arch_name in primus.PRESETS:
        return _load_primus(spec, arch_name, weights, plan, plan_source, pt_in, target_in, report,
                            decoder_init=decoder_init, decoder_seed=decoder_seed, device=device)

    with torch.device("meta"):  # shapes only: every tensor is replaced by a checkpoint tensor below
        net = _build_network(arch_name, arch.get("arch_kwargs"), arch.get("arch_kwargs_requiring_import"), target_in)
    net_key_encoder = getattr(net, "key_to_encoder", "encoder.stages")
    net_key_stem = getattr(net, "key_to_stem", "encoder.stem")
    pt_key_encoder = str(plan.get("key_to_encoder") or net_key_encoder)
    pt_key_stem = str(plan.get("key_to_stem") or net_key_stem)
    in_proj = [str(k) for k in (plan.get("keys_to_in_proj") or getattr(net, "keys_to_in_proj", ()))]
    root = net_key_encoder.split(".")[0]  # "encoder"
    encoder: nn.Module = getattr(net, root)
    expected = {f"{root}.{k}": v for k, v in encoder.state_dict().items()}

    report.meta.update({"arch_class_name": arch_name, "plan_source": plan_source, "pretrain_num_input_channels": pt_in})

    def to_net(key: str) -> str | None:
        if key.startswith(pt_key_stem + "."):
            return net_key_stem + key[len(pt_key_stem) :]
        if key.startswith(pt_key_encoder + "."):
            return net_key_encoder + key[len(pt_key_encoder) :]
        return None

    mapped: dict[str, torch.Tensor] = {}
    for key, value in weights.items():
        net_key = to_net(key)
        if net_key is None:
            report.ignored.append(key)
        else:
            mapped[net_key] = value
    report.missing = sorted(k for k in expected if k not in mapped)
    report.unexpected = sorted(k for k in mapped if k not in expected)
    if report.missing:
        raise ModelLoadError(
            "missing_keys",
            f"{len(report.missing)} stem/encoder weights are missing from the checkpoint (first: {report.missing[:3]}); "
            f"plan keys: stem {pt_key_stem!r}, encoder {pt_key_encoder!r}",
        )
    if report.unexpected:
        raise ModelLoadError(
            "unexpected_keys",
            f"{len(report.unexpected)} stem/encoder weights do not exist in {arch_name} (first: {report.unexpected[:3]}): "
            "the checkpoint's architecture differs from its plan",
        )
    proj_weights = {k for k in (to_net(p + ".weight") for p in in_proj) if k is not None}
    state: dict[str, torch.Tensor] = {}
    repeated = False
    for key, want in expected.items():
        got = mapped[key]
        if tuple(got.shape) != tuple(want.shape):
            if key in proj_weights:
                if got.ndim == want.ndim and got.shape[1] == 1 and got.shape[0] == want.shape[0] and got.shape[2:] == want.shape[2:]:
                    got = repeat_in_channels(got, int(want.shape[1]))
                    repeated = True
                else:
                    raise ModelLoadError(
                        "channel_mismatch",
                        f"stem expects {want.shape[1]} input channels, checkpoint has {got.shape[1]} (only 1 -> C is adapted)",
                    )
            else:
                raise ModelLoadError("shape_mismatch", f"{key}: checkpoint {tuple(got.shape)} vs network {tuple(want.shape)}")
        state[key[len(root) + 1 :]] = got.to(device=device, dtype=want.dtype).contiguous()
    if hasattr(encoder, "return_skips"):
        encoder.return_skips = True
    strides_cum = _cumulative_strides(encoder)
    coarse = [max(s[a] for s in strides_cum) for a in range(3)]
    measured = _measure_on_meta(encoder, target_in, [2 * c for c in coarse])
    encoder.load_state_dict(state, strict=True, assign=True)
    _check_materialised(encoder, arch_name)
    report.loaded = sorted(expected)
    if repeated:
        report.notes.append(f"stem weights repeated from {pt_in} to {target_in} input channels (divided by {target_in})")
    del net, state, mapped, weights, ckpt  # the pretrained/random decoder of the U-Net is never used
    if isinstance(measured, ModelLoadError):
        raise measured
    if measured is None:  # an op without a meta kernel: measure on the loaded weights
        measured = measure_stages(encoder, target_in, [2 * c for c in coarse])
    if prep is None:
        prep = plan_preprocessing(plan, target_in)
        if prep is not None:
            report.notes.append("preprocessing taken from the adaptation plan")
    return build_feature_model(
        encoder, measured, spec.encoder_stages(), load_report=report, preprocessing=prep, in_channels=target_in,
        decoder_init=decoder_init, decoder_seed=decoder_seed, device=device,
    )


def _load_primus(
    spec: ModelSpec, arch_name: str, weights: Mapping[str, torch.Tensor], plan: Mapping[str, Any], plan_source: str,
    pt_in: int, target_in: int, report: LoadReport, *, decoder_init: DecoderInit, decoder_seed: int, device: str,
) -> FeatureModel:
    """A Primus checkpoint (worker/adapters/primus.py): built for the extraction patch, encoder loaded strictly."""
    prep = spec.preprocessing or plan_preprocessing(plan, target_in)
    if prep is None:
        raise ModelLoadError("missing_preprocessing", "a Primus model needs its patch size: from the spec, or a complete plan")
    if spec.preprocessing is None:
        report.notes.append("preprocessing taken from the adaptation plan")
    report.meta.update({"plan_source": plan_source, "pretrain_num_input_channels": pt_in})
    encoder, stages = primus.load_primus_encoder(arch_name, weights, plan, target_in, tuple(prep.patch_size), report)
    return build_feature_model(
        encoder, stages, spec.encoder_stages(), load_report=report, preprocessing=prep, in_channels=target_in,
        decoder_init=decoder_init, decoder_seed=decoder_seed, device=device,
    )


def _measure_on_meta(encoder: nn.Module, in_channels: int, spatial: list[int]) -> list[StageInfo] | ModelLoadError | None:
    """Stage channels and strides from a shape-only forward of the meta encoder (no compute).

    A `ModelLoadError` is returned, not raised, so that key errors of the load still come first;
    None when some op has no meta kernel (the caller then measures the loaded encoder)."""
    try:
        return measure_stages(encoder, in_channels, spatial)
    except ModelLoadError as exc:
        return exc
    except (NotImplementedError, RuntimeError):
        return None


def _check_materialised(module: nn.Module, arch_name: str) -> None:
    """Every parameter and buffer must have come from the checkpoint (none left on `meta`)."""
    left = [n for n, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)] if t.is_meta]
    if left:
        raise ModelLoadError(
            "unsupported_architecture",
            f"{len(left)} tensors of {arch_name} are not in its state dict and were never loaded (first: {left[:3]})",
        )


def _cumulative_strides(encoder: nn.Module) -> list[tuple[int, int, int]]:
    out, cur = [], [1, 1, 1]
    for s in getattr(encoder, "strides", []):
        s3 = list(s) if isinstance(s, (list, tuple)) else [int(s)] * 3
        cur = [c * int(x) for c, x in zip(cur, s3)]
        out.append((cur[0], cur[1], cur[2]))
    if not out:
        raise ModelLoadError("unsupported_architecture", "encoder does not expose its strides")
    return out
