"""The fresh decoder of metrics.md §1: structure, seeded determinism, the three init schemes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from worker.decoder import GAUSSIAN_STD, KAIMING_NEG_SLOPE, RandomDecoder

CH = [8, 16, 32, 64]
ST = [(1, 1, 1), (2, 2, 2), (4, 4, 4), (8, 8, 8)]


def _weights(dec: nn.Module) -> list[torch.Tensor]:
    return [m.weight.detach().clone() for m in dec.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]


def test_decoder_stages_are_coarse_to_fine_at_the_skip_resolutions():
    dec = RandomDecoder(CH, ST).eval()
    skips = [torch.randn(1, c, 16 // s[0], 16 // s[1], 16 // s[2]) for c, s in zip(CH, ST)]
    with torch.no_grad():
        out = dec(skips)
    assert [tuple(o.shape[1:]) for o in out] == [(32, 4, 4, 4), (16, 8, 8, 8), (8, 16, 16, 16)]


def test_same_seed_same_decoder_different_seed_different_decoder():
    a, b, c = RandomDecoder(CH, ST, seed=3), RandomDecoder(CH, ST, seed=3), RandomDecoder(CH, ST, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))
    assert not any(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c)))


def test_init_does_not_touch_the_global_rng():
    torch.manual_seed(11)
    before = torch.rand(3)
    torch.manual_seed(11)
    RandomDecoder(CH, ST, seed=0)
    assert torch.equal(torch.rand(3), before)


@pytest.mark.parametrize("scheme", ["kaiming", "xavier", "gaussian"])
def test_init_schemes_have_their_distributions(scheme):
    big = [64, 128, 128]
    dec = RandomDecoder(big, [(1, 1, 1), (2, 2, 2), (4, 4, 4)], init=scheme, seed=0)
    conv = dec.stages[0].conv  # Conv3d(256 -> 128, k=3)
    w = conv.weight.detach()
    fan_in = w.shape[1] * 27
    fan_out = w.shape[0] * 27
    if scheme == "kaiming":
        expected = math.sqrt(2.0 / (1 + KAIMING_NEG_SLOPE**2) / fan_in)
        assert abs(float(w.std()) / expected - 1) < 0.02
        assert abs(float(w.mean())) < 0.05 * expected
    elif scheme == "xavier":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert float(w.abs().max()) <= bound
        assert abs(float(w.std()) / (bound / math.sqrt(3)) - 1) < 0.02
    else:
        assert abs(float(w.std()) / GAUSSIAN_STD - 1) < 0.02
    assert float(conv.bias.detach().abs().max()) == 0.0
    norm = dec.stages[0].norm
    assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and float(norm.bias.detach().abs().max()) == 0.0


def test_schemes_differ_and_bad_input_is_refused():
    ws = {s: _weights(RandomDecoder(CH, ST, init=s, seed=0))[0] for s in ("kaiming", "xavier", "gaussian")}
    assert not torch.equal(ws["kaiming"], ws["xavier"]) and not torch.equal(ws["xavier"], ws["gaussian"])
    with pytest.raises(ValueError, match="init"):
        RandomDecoder(CH, ST, init="orthogonal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple"):
        RandomDecoder([4, 8], [(2, 2, 2), (3, 2, 2)])
    with pytest.raises(ValueError, match=">= 2"):
        RandomDecoder([4], [(1, 1, 1)])
