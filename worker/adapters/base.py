"""What every adapter returns: a feature model (encoder + fresh decoder), its stages and a load report.

Errors are one exception type, `ModelLoadError`, with a stable machine code, so the API can store
and show why a checkpoint was refused.
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models_registry.specs import PreprocessingSpec, StageSpec, decoder_geometry
from worker.decoder import DecoderInit, RandomDecoder

ERROR_CODES = (
    "file_not_found",
    "unreadable_checkpoint",
    "wrong_format",
    "missing_keys",
    "unexpected_keys",
    "shape_mismatch",
    "channel_mismatch",
    "unsupported_architecture",
    "stage_mismatch",
    "bad_spec",
    "missing_preprocessing",
    "trainer_mismatch",
)


class ModelLoadError(Exception):
    """A checkpoint that cannot become a feature model; `code` is one of `ERROR_CODES`."""

    def __init__(self, code: str, message: str) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown ModelLoadError code {code!r}")
        super().__init__(f"[{code}] {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "detail": self.message}


@dataclass(frozen=True)
class StageInfo:
    """One stage of a feature model: `stride` is cumulative, in model-grid voxels."""

    name: str
    channels: int
    stride: tuple[int, int, int]
    role: str  # "encoder" | "decoder"

    def to_spec(self) -> StageSpec:
        return StageSpec(name=self.name, channels=self.channels, stride=self.stride, role=self.role)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "channels": self.channels, "stride": list(self.stride), "role": self.role}


LIST_LIMIT = 200  # longer key lists are cut in to_dict(); the counts stay exact


@dataclass
class LoadReport:
    """How a checkpoint mapped onto the encoder: every key is loaded, missing, unexpected or ignored."""

    format: str
    sha256: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        def cut(keys: list[str]) -> list[str]:
            return keys[:LIST_LIMIT]

        return {
            "format": self.format,
            "sha256": self.sha256,
            "n_loaded": len(self.loaded),
            "n_missing": len(self.missing),
            "n_unexpected": len(self.unexpected),
            "n_ignored": len(self.ignored),
            "missing": cut(self.missing),
            "unexpected": cut(self.unexpected),
            "ignored_prefixes": key_prefix_counts(self.ignored),
            "notes": list(self.notes),
            "meta": dict(self.meta),
        }


def key_prefix_counts(keys: Iterable[str], depth: int = 2) -> dict[str, int]:
    """Counts of keys per leading `depth` dotted segments (a compact view of what was ignored)."""
    return dict(sorted(Counter(".".join(k.split(".")[:depth]) for k in keys).items()))


class FeatureModel:
    """An encoder (returning its stage maps fine to coarse) plus the fresh random decoder.

    `forward(x)` returns `{stage name: map}` for every stage in `stages` (encoder stages `enc*`
    fine to coarse, then decoder stages `dec*` coarse to fine). Always eval mode, no grad.
    """

    def __init__(
        self,
        encoder: nn.Module,
        encoder_stages: Sequence[StageInfo],
        *,
        load_report: LoadReport,
        preprocessing: PreprocessingSpec | None,
        in_channels: int,
        decoder_init: DecoderInit = "kaiming",
        decoder_seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.encoder = encoder
        self.decoder = RandomDecoder(
            [s.channels for s in encoder_stages], [s.stride for s in encoder_stages], init=decoder_init, seed=decoder_seed
        )
        geometry = decoder_geometry([s.channels for s in encoder_stages], [tuple(s.stride) for s in encoder_stages])
        dec_stages = [StageInfo(f"dec{t}", c, stride, "decoder") for t, (c, stride) in enumerate(geometry)]
        self.stages: list[StageInfo] = list(encoder_stages) + dec_stages
        self.load_report = load_report
        self.preprocessing = preprocessing
        self.in_channels = int(in_channels)
        self.decoder_init = decoder_init
        self.decoder_seed = int(decoder_seed)
        self.device = torch.device(device)
        self.encoder.eval().to(self.device)
        self.decoder.eval().to(self.device)

    def reseed_decoder(self, seed: int) -> None:
        """Replace the fresh decoder by another one of the same init scheme drawn from `seed`."""
        enc = self.encoder_stages
        self.decoder = RandomDecoder(
            [s.channels for s in enc], [s.stride for s in enc], init=self.decoder_init, seed=seed
        ).eval().to(self.device)
        self.decoder_seed = int(seed)

    @property
    def encoder_stages(self) -> list[StageInfo]:
        return [s for s in self.stages if s.role == "encoder"]

    @property
    def decoder_stages(self) -> list[StageInfo]:
        return [s for s in self.stages if s.role == "decoder"]

    @property
    def coarsest_stride(self) -> tuple[int, int, int]:
        """Per-axis least common multiple of every stage's stride (window steps must be multiples)."""
        out = [1, 1, 1]
        for s in self.stages:
            for a in range(3):
                out[a] = _lcm(out[a], s.stride[a])
        return (out[0], out[1], out[2])

    def stage(self, name: str) -> StageInfo:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(f"no stage {name!r}; stages: {[s.name for s in self.stages]}")

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = list(self.encoder(x))
        enc_info = self.encoder_stages
        if len(enc) != len(enc_info):
            raise ModelLoadError("stage_mismatch", f"encoder returned {len(enc)} maps, expected {len(enc_info)}")
        dec = self.decoder(enc)
        out = {s.name: m for s, m in zip(enc_info, enc)}
        out.update({s.name: m for s, m in zip(self.decoder_stages, dec)})
        return out

    __call__ = forward

    def describe(self) -> dict[str, Any]:
        return {
            "stages": [s.to_dict() for s in self.stages],
            "in_channels": self.in_channels,
            "decoder_init": self.decoder_init,
            "decoder_seed": self.decoder_seed,
            "preprocessing": self.preprocessing.model_dump(mode="json") if self.preprocessing else None,
            "load_report": self.load_report.to_dict(),
        }


def _lcm(a: int, b: int) -> int:
    from math import gcd

    return a * b // gcd(a, b)


class StageEncoder(nn.Module):
    """Wraps a network and a function `(net, x) -> list of stage maps` as an encoder module."""

    def __init__(self, net: nn.Module, stages_fn: Callable[[nn.Module, torch.Tensor], list[torch.Tensor]]) -> None:
        super().__init__()
        self.net = net
        self._fn = stages_fn

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._fn(self.net, x)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def safe_torch_load(source: Path | bytes) -> Any:
    """`torch.load(..., map_location="cpu", weights_only=True)`: tensors and plain containers only."""
    try:
        if isinstance(source, (bytes, bytearray)):
            return torch.load(io.BytesIO(source), map_location="cpu", weights_only=True)
        return torch.load(source, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelLoadError("file_not_found", "checkpoint file not found") from None
    except Exception as exc:  # pickle errors, zip errors, disallowed globals under weights_only
        kind = type(exc).__name__
        hint = ""
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text:
            hint = " (it holds Python objects beyond tensors and plain containers; refused for safety)"
        elif "TorchScript" in text or "constants.pkl" in text:
            hint = " (this looks like a TorchScript archive: register it with format 'torchscript')"
        raise ModelLoadError("unreadable_checkpoint", f"torch.load failed ({kind}){hint}") from None


def dig(obj: Any, path: str | None) -> Any:
    """Follow a dotted key path (`state_dict`, `net`, `model.backbone`, ...) into nested dicts."""
    if not path:
        return obj
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            top = sorted(map(str, cur.keys()))[:20] if isinstance(cur, Mapping) else type(cur).__name__
            raise ModelLoadError("wrong_format", f"checkpoint has no key {part!r} on path {path!r}; found {top}")
        cur = cur[part]
    return cur


def as_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """Check that `obj` is a flat mapping of names to tensors."""
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError("wrong_format", f"{what} is not a non-empty mapping of parameter names to tensors")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelLoadError(
            "wrong_format",
            f"{what} is not a state dict: {len(bad)} entries are not tensors (first: {str(bad[0])[:80]!r}); "
            "set checkpoint_key to the dict holding the weights",
        )
    return dict(obj)


def measure_stages(
    encoder: nn.Module, in_channels: int, spatial: Sequence[int], names: Sequence[str] | None = None
) -> list[StageInfo]:
    """Dry-run `encoder` on zeros of `spatial` size and read each map's channels and stride.

    The zeros live on the encoder's device (`meta` gives the shapes without any compute)."""
    first = next(iter([*encoder.parameters(), *encoder.buffers()]), None)
    x = torch.zeros((1, in_channels, *spatial), dtype=torch.float32, device=first.device if first is not None else "cpu")
    with torch.no_grad():
        maps = list(encoder.eval()(x))
    out = []
    for i, m in enumerate(maps):
        if m.ndim != 5:
            raise ModelLoadError("stage_mismatch", f"stage {i} map has shape {tuple(m.shape)}; 5-D (B, C, X, Y, Z) expected")
        stride = []
        for a in range(3):
            n_in, n_out = int(spatial[a]), int(m.shape[2 + a])
            if n_out < 1 or n_in % n_out:
                raise ModelLoadError(
                    "stage_mismatch", f"stage {i}: input {tuple(spatial)} -> map {tuple(m.shape[2:])} is not an integer stride"
                )
            stride.append(n_in // n_out)
        name = names[i] if names is not None else f"enc{i}"
        out.append(StageInfo(name, int(m.shape[1]), (stride[0], stride[1], stride[2]), "encoder"))
    return out


def check_declared_stages(declared: Sequence[StageSpec], measured: Sequence[StageInfo]) -> None:
    """Declared encoder stages must match the measured ones in count, channels and stride."""
    if len(declared) != len(measured):
        raise ModelLoadError("stage_mismatch", f"spec declares {len(declared)} encoder stages, the network has {len(measured)}")
    for d, m in zip(declared, measured):
        if d.channels != m.channels or tuple(d.stride) != tuple(m.stride):
            raise ModelLoadError(
                "stage_mismatch",
                f"stage {d.name}: spec says {d.channels} channels / stride {tuple(d.stride)}, "
                f"the network gives {m.channels} / {m.stride}",
            )


def build_feature_model(
    encoder: nn.Module,
    measured: Sequence[StageInfo],
    declared: Sequence[StageSpec],
    *,
    load_report: LoadReport,
    preprocessing: PreprocessingSpec | None,
    in_channels: int,
    decoder_init: DecoderInit,
    decoder_seed: int,
    device: str | torch.device,
) -> FeatureModel:
    """Every adapter's last step: stages the spec declares are checked against the measured ones
    and named after them, the preprocessing is told the input channels, and the model is built."""
    stages = list(measured)
    if declared:
        check_declared_stages(declared, stages)
        stages = [StageInfo(d.name, m.channels, m.stride, "encoder") for d, m in zip(declared, stages)]
    prep = preprocessing
    if prep is not None and prep.in_channels != in_channels:
        prep = prep.model_copy(update={"in_channels": in_channels})
    return FeatureModel(
        encoder,
        stages,
        load_report=load_report,
        preprocessing=prep,
        in_channels=in_channels,
        decoder_init=decoder_init,
        decoder_seed=decoder_seed,
        device=device,
    )


def repeat_in_channels(w: torch.Tensor, target: int) -> torch.Tensor:
    """nnU-Net fine-tuning's rule for a 1-channel stem on C-channel input: repeat, divide by C."""
    return w.repeat(1, target, *([1] * (w.ndim - 2))) / target
