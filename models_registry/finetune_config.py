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

    Three options serve the validation benchmark's truth (docs/validation.md, protocol v2) and are
    off by default: `swa_fraction` predicts with the uniform average of the weights over the last
    part of the run (less run-to-run noise), `eval_fractions` also measures held-out Dice at those
    fractions of the steps (snapshots of the one run, with its weights at that step), and
    `train_encoder=False` keeps the encoder frozen for the whole run (decoder and head trained alone).
    `lr_ramp_steps` sets the linear learning-rate ramp apart from the encoder warm-up (None: the ramp
    lasts the warm-up, as before; 0: poly decay from the full rate at step 0, nnU-Net's schedule).
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
    swa_fraction: float = 0.0
    eval_fractions: tuple[float, ...] = ()
    train_encoder: bool = True
    lr_ramp_steps: int | None = None

    OPTIONAL = ("swa_fraction", "eval_fractions", "train_encoder", "lr_ramp_steps")
    """Fields written by `to_dict` only when they differ from their defaults, so the configs (and the
    record keys) of runs that do not use them read as they did before the fields existed."""

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
        if self.lr_ramp_steps is not None and not 0 <= self.lr_ramp_steps < self.steps:
            raise ValueError("lr_ramp_steps must be in [0, steps) or None (ramp over the encoder warm-up)")
        if not 0.0 <= self.swa_fraction < 1.0:
            raise ValueError("swa_fraction must be in [0, 1)")
        if any(not 0.0 < f < 1.0 for f in self.eval_fractions) or list(self.eval_fractions) != sorted(set(self.eval_fractions)):
            raise ValueError("eval_fractions must be increasing fractions in (0, 1)")

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
        if "eval_fractions" in data:
            data["eval_fractions"] = tuple(float(f) for f in data["eval_fractions"])
        return cls(**data)

    def swa_start(self) -> int:
        """The first step (0-based) whose weights enter the average; `steps` when averaging is off."""
        if self.swa_fraction <= 0.0:
            return self.steps
        return self.steps - max(1, int(round(self.swa_fraction * self.steps)))

    def eval_steps(self) -> list[int]:
        """The step counts (1-based, after that many optimiser steps) of the `eval_fractions` snapshots."""
        return [max(1, min(self.steps - 1, int(round(f * self.steps)))) for f in self.eval_fractions]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["patch"] = list(self.patch)
        out["eval_fractions"] = list(self.eval_fractions)
        for name in self.OPTIONAL:
            if getattr(self, name) == getattr(FinetuneConfig, name):
                out.pop(name)
        return out
