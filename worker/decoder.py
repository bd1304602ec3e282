"""The fresh, randomly initialised nnU-Net-style decoder of metrics.md §1.

Built only from the encoder's stage channels and strides (`models_registry.specs.decoder_geometry`):
per skip (deepest first) a transposed conv up to the skip's stride, concatenation with the skip,
then one conv block (3x3x3 conv, InstanceNorm, LeakyReLU), as nnU-Net's ResEnc-L decoder. A token
encoder (every stage at one stride, as Primus) has no finer skips: the same transposed conv and
conv block upsample its last map by 2 per stage to stride 1. Seeded, so a score is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from models_registry.specs import decoder_geometry, is_token_encoder

DecoderInit = Literal["kaiming", "xavier", "gaussian"]
INIT_SCHEMES: tuple[str, ...] = ("kaiming", "xavier", "gaussian")
GAUSSIAN_STD = 0.01
KAIMING_NEG_SLOPE = 1e-2  # nnU-Net's InitWeights_He(1e-2)


class _ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, kernel_size=3, padding=1, bias=True)
        self.norm = nn.InstanceNorm3d(c_out, eps=1e-5, affine=True)
        self.act = nn.LeakyReLU(negative_slope=1e-2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class RandomDecoder(nn.Module):
    """U-Net decoder over encoder maps listed fine to coarse; returns its stage maps coarse to fine.

    `channels[s]`, `strides[s]` describe encoder stage s (cumulative strides, per axis). Upsampling
    factors are the stride ratios between consecutive stages (1 where they are equal, as in UNETR).
    """

    def __init__(
        self,
        channels: Sequence[int],
        strides: Sequence[Sequence[int]],
        *,
        init: DecoderInit = "kaiming",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) or len(channels) < 2:
            raise ValueError("the decoder needs >= 2 encoder stages with matching channels and strides")
        if init not in INIT_SCHEMES:
            raise ValueError(f"decoder init must be one of {INIT_SCHEMES}, got {init!r}")
        self.init_scheme = init
        self.seed = int(seed)
        # Built on `meta` (the layers' own random init would be overwritten), then given CPU memory
        # that `init_decoder` fills entirely; the global RNG is not touched.
        with torch.random.fork_rng(devices=[]), torch.device("meta"):
            self._build(channels, strides)
        self.to_empty(device="cpu")
        written = init_decoder(self, init, seed)
        every = {id(t) for t in [*self.parameters(), *self.buffers()]}
        if written != every:  # pragma: no cover - guards a layer type init_decoder does not know
            raise RuntimeError(f"{len(every - written)} decoder tensors would be left uninitialised")

    def _build(self, channels: Sequence[int], strides: Sequence[Sequence[int]]) -> None:
        self.transpconvs = nn.ModuleList()
        self.stages = nn.ModuleList()
        strides3 = [tuple(int(v) for v in s) for s in strides]
        try:
            geometry = decoder_geometry(list(channels), strides3)  # type: ignore[arg-type]
        except ValueError as exc:
            raise ValueError(f"stride is not a multiple of the skip's stride: {exc}") from None
        self.use_skips = not is_token_encoder(strides3)  # type: ignore[arg-type]
        c_in, s_in = channels[-1], strides3[-1]
        for c_out, s_out in geometry:
            factor = tuple(a // b for a, b in zip(s_in, s_out))
            self.transpconvs.append(nn.ConvTranspose3d(c_in, c_out, factor, factor, bias=True))
            self.stages.append(_ConvBlock(2 * c_out if self.use_skips else c_out, c_out))
            c_in, s_in = c_out, s_out

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        x = skips[-1]
        out = []
        for t, (up, block) in enumerate(zip(self.transpconvs, self.stages)):
            x = up(x)
            x = block(torch.cat((x, skips[-(t + 2)]), dim=1) if self.use_skips else x)
            out.append(x)
        return out


def init_decoder(module: nn.Module, scheme: DecoderInit, seed: int) -> set[int]:
    """Initialise every conv / transposed conv of `module` in registration order from one seeded
    generator: `kaiming` = He normal (a=1e-2, as nnU-Net), `xavier` = Glorot uniform, `gaussian` =
    N(0, 0.01^2); biases 0, norm affine weight 1 / bias 0. The global RNG is not touched.
    Returns the ids of the tensors written (so a caller can check none was missed)."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    written: set[int] = set()
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                w = torch.empty(m.weight.shape, dtype=torch.float32)
                if scheme == "kaiming":
                    nn.init.kaiming_normal_(w, a=KAIMING_NEG_SLOPE, generator=gen)
                elif scheme == "xavier":
                    nn.init.xavier_uniform_(w, generator=gen)
                elif scheme == "gaussian":
                    nn.init.normal_(w, 0.0, GAUSSIAN_STD, generator=gen)
                else:  # pragma: no cover - validated by the caller
                    raise ValueError(scheme)
                m.weight.copy_(w)
                written.add(id(m.weight))
                if m.bias is not None:
                    m.bias.zero_()
                    written.add(id(m.bias))
            elif isinstance(m, nn.InstanceNorm3d) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
                written.update((id(m.weight), id(m.bias)))
    return written
