"""Builders of tiny, format-faithful checkpoints (nothing is downloaded); used by the worker tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from tests.utils.nnssl_layouts import adaptation_plan

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
    """The adaptation plan of a tiny nnssl checkpoint: 1 mm, 32^3 pre-training patches."""
    return adaptation_plan(arch, kwargs, 1.0, 32, **over)
