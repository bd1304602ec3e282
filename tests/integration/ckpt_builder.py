"""Tiny real nnssl checkpoints (ResEnc U-Net 4-8-16) for end-to-end runs: built, never downloaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FEATURES = [4, 8, 16]


def arch_kwargs() -> dict[str, Any]:
    n = len(FEATURES)
    return {
        "n_stages": n,
        "features_per_stage": FEATURES,
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * n,
        "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        "n_blocks_per_stage": [1] * n,
        "n_conv_per_stage_decoder": [1] * (n - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.modules.activation.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def plan() -> dict[str, Any]:
    """The tiny ResEnc's adaptation plan: 2 mm, 16^3 pre-training patches."""
    from tests.utils.nnssl_layouts import adaptation_plan

    return adaptation_plan("ResidualEncoderUNet", arch_kwargs(), 2.0, 16)


def build_checkpoint(path: Path, seed: int) -> Path:
    """A full ResEnc U-Net nnssl checkpoint whose weights depend on `seed`."""
    import torch
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    kw = arch_kwargs()
    kw.update(conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU)
    torch.manual_seed(seed)
    net = ResidualEncoderUNet(input_channels=1, num_classes=2, deep_supervision=False, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * seed * torch.randn_like(p))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": net.state_dict(), "nnssl_adaptation_plan": plan()}, path)
    return path


SPEC = {
    "format": "nnssl",
    "preprocessing": {"spacing": [2.0, 2.0, 2.0], "normalization": "zscore", "patch_size": [16, 16, 16], "in_channels": 1},
}
