"""The fine-tuning recipe's settings (worker.finetune runs it): importable without torch, so the API
can validate a confirmation's overrides and key its records."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

FINETUNE_CODE_VERSION = "1"
"""Bump when a change alters any fine-tuning result for the same inputs and config."""

Optimizer = Literal["sgd", "adamw"]


@dataclass(frozen=True)
class FinetuneConfig:
    """Every choice a fine-tuning result depends on (recorded with the result).

    Defaults follow nnU-Net where it has one (SGD, Nesterov momentum 0.99, lr 1e-2, weight decay
    3e-5, poly exponent 0.9, 1/3 foreground patches, Dice + CE, Gaussian sliding window with half
    overlap); the rest is ours: `encoder_warmup_steps` trains decoder and head alone first (the
    encoder frozen, the learning rate ramped linearly), as fine-tuning of pretrained nnU-Net
    encoders does; `encoder_lr_scale` gives the encoder a smaller learning rate than decoder and head
    (1: one rate for all, as nnU-Net); augmentation is intensity only (no mirroring: some tasks are
    lateralised). Training and prediction run channels-last (faster 3-D convolutions on the CPU).
    """

    steps: int = 120
    patch: tuple[int, int, int] = (32, 32, 32)
    batch_size: int = 2
    optimizer: Optimizer = "sgd"
    lr: float = 1e-2
    momentum: float = 0.99
    weight_decay: float = 3e-5
    poly_exponent: float = 0.9
    encoder_warmup_steps: int = 0
    encoder_lr_scale: float = 1.0
    foreground_fraction: float = 1.0 / 3.0
    augment: bool = True
    decoder_init: str = "kaiming"  # worker.decoder.DecoderInit
    seed: int = 0
    sw_overlap: float = 0.5
    threads: int | None = 1

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if len(self.patch) != 3 or min(self.patch) < 1:
            raise ValueError(f"patch must be 3 positive integers, got {self.patch}")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError("lr must be a positive finite number")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError("momentum must be in [0, 1)")
        if self.weight_decay < 0:
            raise ValueError("weight_decay must be >= 0")
        if not 0 <= self.encoder_warmup_steps < self.steps:
            raise ValueError("encoder_warmup_steps must be in [0, steps)")
        if not (0.0 < self.encoder_lr_scale <= 1.0):
            raise ValueError("encoder_lr_scale must be in (0, 1]")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError("foreground_fraction must be in [0, 1]")
        if self.decoder_init not in ("kaiming", "xavier", "gaussian"):
            raise ValueError("decoder_init must be one of kaiming, xavier, gaussian")
        if not 0.0 <= self.sw_overlap < 1.0:
            raise ValueError("sw_overlap must be in [0, 1)")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be >= 1 or None")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "FinetuneConfig":
        """From JSON (a task spec's `finetune` block, a request); unknown keys are an error."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown fine-tune config key(s): {', '.join(unknown)}")
        if "patch" in data:
            data["patch"] = tuple(int(p) for p in data["patch"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch"] = list(self.patch)
        return out
