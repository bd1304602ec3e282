"""Builders of tiny, format-faithful checkpoints (nothing is downloaded); used by the worker tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

TINY_FEATURES = [4, 8, 16]


def serialised_kwargs(features=TINY_FEATURES, blocks=None, plain: bool = False) -> dict[str, Any]:
    """`arch_kwargs` as nnssl serialises them (classes as dotted names)."""
    n = len(features)
    kw: dict[str, Any] = {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.modules.activation.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if plain:
        kw["n_conv_per_stage"] = list(blocks or [1] * n)
    else:
        kw["n_blocks_per_stage"] = list(blocks or [1] * n)
    return kw


def build_dna_network(arch: str, kwargs: dict[str, Any], in_channels: int = 1, seed: int = 0) -> torch.nn.Module:
    """The same network the adapter builds, made independently here (with perturbed weights)."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    kw = copy.deepcopy(kwargs)
    kw["conv_op"] = torch.nn.Conv3d
    kw["norm_op"] = torch.nn.InstanceNorm3d
    kw["nonlin"] = torch.nn.LeakyReLU
    cls = PlainConvUNet if arch == "PlainConvUNet" else ResidualEncoderUNet
    torch.manual_seed(seed)
    net = cls(input_channels=in_channels, num_classes=2, deep_supervision=False, **kw)
    with torch.no_grad():  # make affine norm parameters non-trivial so a skipped load would show
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def nnssl_plan(arch: str = "ResidualEncoderUNet", kwargs: dict[str, Any] | None = None, **over: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "architecture_plans": {
            "arch_class_name": arch,
            "arch_kwargs": kwargs,
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "dropout_op", "nonlin"] if kwargs else None,
        },
        "pretrain_plan": {
            "dataset_name": "Dataset000_Test",
            "configurations": {
                "onemmiso": {"spacing": [1.0, 1.0, 1.0], "patch_size": [32, 32, 32], "normalization_schemes": ["ZScoreNormalization"]}
            },
        },
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": [32, 32, 32],
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
        "key_to_lpe": None,
    }
    plan.update(over)
    return plan
