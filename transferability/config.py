"""The scoring config of metrics.md §8: every choice a stored score depends on, and its hash.

A ranking request may override any field; the canonical JSON of the full config (defaults
filled in) plus the scoring code version is hashed. A score row is reused only for an equal hash
*and* an equal numeric mode (`numeric_mode`: the device kind and the precision the features were
computed in), because bf16 autocast on CUDA and fp32 on the CPU give different numbers. `precision`
is therefore left out of the hash: it asks for a numeric mode, the mode itself is the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

SCORING_CODE_VERSION = "3"
"""Bump when a change alters any score for the same inputs; it is part of the config hash."""

DecoderInit = Literal["kaiming", "xavier", "gaussian"]
GRTDVariant = Literal["contracted", "penalised"]  # metrics.md §3 / §3a (transferability.grtd.VARIANTS)
Precision = Literal["mixed", "fp32"]
"""`mixed`: bf16 autocast for the encoder forward on CUDA, fp32 on the CPU; `fp32`: fp32 everywhere."""
NUMERIC_MODES = ("cpu-fp32", "cuda-bf16", "cuda-fp32")


def numeric_mode(device: str, precision: Precision) -> str:
    """The numeric mode a score is computed in on `device` ("cpu", "cuda", "cuda:1") at `precision`.

    Two scores are interchangeable only when their modes are equal (config.py's module docstring)."""
    kind = str(device).split(":", 1)[0]
    if kind == "cpu":
        return "cpu-fp32"
    if kind == "cuda":
        return "cuda-fp32" if precision == "fp32" else "cuda-bf16"
    raise ValueError(f"no numeric mode for device {device!r} (expected cpu or cuda)")


@dataclass(frozen=True)
class ScoringConfig:
    """Defaults follow metrics.md; `None` stage lists mean the spec's default stages."""

    seed: int = 0
    n_samples: int = 4096
    grtd_stages: tuple[str, ...] | None = None  # default: the two finest decoder stages
    lam: float = 1.0
    quantile: float = 0.9
    grtd_variant: GRTDVariant = "penalised"  # §3a; "contracted" is §3 (label-blind). Chosen by the benchmark: decisions.md
    lbtc_stages: tuple[str, ...] | None = None  # default: the two deepest encoder stages
    k: int = 5
    n_anchors: int = 512
    decoder_init: DecoderInit = "kaiming"
    decoder_seed: int = 0
    n_decoders: int = 1  # GRTD is averaged over this many fresh decoders
    baselines: bool = True
    baseline_stage: str | None = None  # default: the finest GRTD stage
    sw_overlap: float = 0.5
    n_bootstrap: int = 200  # half-sampling replicates over the pilot cases (seed: `seed`); 0 = none
    precision: Precision = "mixed"  # not hashed: see numeric_mode
    extra: dict[str, Any] = field(default_factory=dict)
    lbtc_patch_step: float | None = None  # LBTC patch points this many model voxels apart at every stage; None: one stage voxel

    OPTIONAL = ("lbtc_patch_step",)
    """Fields written by `to_dict` (and so hashed) only when set, so the configs and hashes of scores that
    do not use them read as they did before the fields existed."""

    def __post_init__(self) -> None:
        if self.n_samples < 2:
            raise ValueError("n_samples must be >= 2")
        if not 0.0 < self.quantile <= 1.0:
            raise ValueError("quantile must be in (0, 1]")
        if self.lam <= 0:
            raise ValueError("lam must be > 0")
        if self.k < 1 or self.k % 2 == 0:
            raise ValueError("k must be a positive odd integer")
        if self.n_anchors < 1:
            raise ValueError("n_anchors must be >= 1")
        if self.grtd_variant not in ("contracted", "penalised"):
            raise ValueError("grtd_variant must be one of contracted, penalised")
        if self.decoder_init not in ("kaiming", "xavier", "gaussian"):
            raise ValueError("decoder_init must be one of kaiming, xavier, gaussian")
        if isinstance(self.n_decoders, bool) or not isinstance(self.n_decoders, int) or self.n_decoders < 1:
            raise ValueError("n_decoders must be an integer >= 1")
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int) or not 0 <= self.n_bootstrap <= 10_000:
            raise ValueError("n_bootstrap must be an integer in [0, 10000]")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError("sw_overlap must be in [0, 1)")
        if self.precision not in ("mixed", "fp32"):
            raise ValueError("precision must be one of mixed, fp32")
        if self.lbtc_patch_step is not None and not (isinstance(self.lbtc_patch_step, (int, float)) and 0 < self.lbtc_patch_step <= 64):
            raise ValueError("lbtc_patch_step must be a number in (0, 64] or None")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "ScoringConfig":
        """Build from a request's JSON; unknown keys are an error, lists become tuples."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown scoring config key(s): {', '.join(unknown)}")
        for key in ("grtd_stages", "lbtc_stages"):
            if data.get(key) is not None:
                data[key] = tuple(str(s) for s in data[key])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("grtd_stages", "lbtc_stages"):
            if out[key] is not None:
                out[key] = list(out[key])
        for key in self.OPTIONAL:
            if out[key] is None:
                del out[key]
        return out

    def canonical_json(self) -> str:
        """What the hash covers: every field but `precision` (its effect is the numeric mode), and the code version."""
        config = self.to_dict()
        del config["precision"]
        return json.dumps({"config": config, "code": SCORING_CODE_VERSION}, sort_keys=True, separators=(",", ":"))

    def hash(self) -> str:
        """sha256 of the canonical JSON: the key of score reuse."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()
