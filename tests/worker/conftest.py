"""Fixtures: tiny, format-faithful nnssl checkpoints built on the fly (nothing is downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ckpt_factory import build_dna_network, nnssl_plan, serialised_kwargs
from tests.utils.api import api, dispatcher, keys, sessions, settings  # noqa: F401 - fixtures of the worker task tests


@pytest.fixture
def nnssl_full(tmp_path: Path):
    """A full ResEnc U-Net checkpoint (MAE / Models Genesis layout: encoder + decoder + alias)."""
    kw = serialised_kwargs()
    net = build_dna_network("ResidualEncoderUNet", kw)
    path = tmp_path / "full" / "checkpoint_final.pth"
    path.parent.mkdir()
    torch.save({"network_weights": net.state_dict(), "nnssl_adaptation_plan": nnssl_plan(kwargs=kw), "citations": []}, path)
    return path, net


@pytest.fixture
def nnssl_encoder_only(tmp_path: Path):
    """An encoder-only checkpoint (contrastive layout: encoder + projection head)."""
    kw = serialised_kwargs()
    net = build_dna_network("ResidualEncoderUNet", kw, seed=1)
    weights = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
    weights["projector.0.weight"] = torch.randn(32, 16)
    weights["projector.0.bias"] = torch.randn(32)
    path = tmp_path / "enc" / "checkpoint_final.pth"
    path.parent.mkdir()
    torch.save({"network_weights": weights, "nnssl_adaptation_plan": nnssl_plan(kwargs=kw)}, path)
    return path, net
