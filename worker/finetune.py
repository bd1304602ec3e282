"""Fine-tune an encoder with a fresh decoder on labelled cases and measure held-out Dice.

This is the ground truth the rankings are judged against (the validation benchmark) and what the
confirmation feature runs for a ranking's top candidates. It follows nnU-Net's recipe at small
scale: Dice + cross-entropy, random patches with foreground oversampling, a poly learning-rate
schedule, and Gaussian-blended sliding-window prediction of the held-out cases with per-class
Dice on their original grids. The encoder comes from the same adapters scoring uses, the decoder
is the same fresh `RandomDecoder` plus a 1x1x1 segmentation head.

The budget is a number of optimiser steps, never wall time, so a seed gives the same numbers on
any machine with the same thread count (the caller pins it; `FinetuneConfig.threads`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from models_registry.finetune_config import FINETUNE_CODE_VERSION, FinetuneConfig
from models_registry.specs import ModelSpec, PreprocessingSpec
from worker.adapters import FeatureModel, load_feature_model, resolve_device
from worker.extract import GAUSSIAN_SIGMA_SCALE, CaseVolume
from worker.preprocess import normalize, resample_image, resample_label, resampled_shape, window_starts


PREDICT_BATCH = 4
"""Windows per forward pass in prediction (oneDNN runs a batch of one 3-D window ~3x slower per window)."""

__all__ = ["FINETUNE_CODE_VERSION", "FinetuneConfig", "FinetuneResult", "finetune", "predict_case", "dice_per_class", "dice_ce_loss"]

Progress = Callable[[str, float], None]


@dataclass
class FinetuneResult:
    """Held-out Dice of one fine-tuning run, with what produced it."""

    dice: float  # mean over test cases of the mean foreground-class Dice
    per_case: list[float]
    per_class: dict[str, float]  # class id -> mean Dice over the test cases where it is defined
    per_case_class: list[dict[str, float | None]]
    losses: list[tuple[int, float]]  # (step, mean loss over the steps since the previous entry)
    seconds: dict[str, float]
    config: dict[str, Any]
    n_train: int
    n_test: int
    num_classes: int
    recipe: dict[str, Any] = field(default_factory=dict)
    code_version: str = FINETUNE_CODE_VERSION
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # Dice at `eval_fractions` of the run, in step order

    def to_dict(self) -> dict[str, Any]:
        """JSON view; an undefined Dice (a class absent from every test case) is None. `snapshots`
        appears only when the config asked for some (records of runs without them are unchanged)."""
        out = asdict(self)
        out["losses"] = [list(x) for x in self.losses]
        if not self.snapshots:
            out.pop("snapshots")
        return _nan_to_none(out)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


class SegmentationNet(nn.Module):
    """Encoder (stage maps fine to coarse) + U-Net decoder + 1x1x1 head, logits at input size."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = self.decoder(list(self.encoder(x)))
        logits = self.head(maps[-1])
        if tuple(logits.shape[2:]) != tuple(x.shape[2:]):  # finest decoder stage coarser than the input
            logits = F.interpolate(logits, size=tuple(x.shape[2:]), mode="trilinear", align_corners=False)
        return logits


def build_segmentation_net(fm: FeatureModel, num_classes: int, seed: int) -> SegmentationNet:
    """The trainable network of a loaded feature model: its encoder, its fresh decoder and a new
    head (He normal from `seed`, bias 0); every parameter trainable."""
    finest = fm.decoder_stages[-1] if fm.decoder_stages else fm.encoder_stages[0]
    head = nn.Conv3d(finest.channels, num_classes, kernel_size=1)
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    with torch.no_grad():
        w = torch.empty(head.weight.shape)
        nn.init.kaiming_normal_(w, a=1e-2, generator=gen)
        head.weight.copy_(w)
        head.bias.zero_()
    net = SegmentationNet(fm.encoder, fm.decoder, head).to(fm.device).to(memory_format=torch.channels_last_3d)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


@dataclass
class _Prepared:
    """A case in the model grid: normalised image (C, X, Y, Z) and labels, padded to >= patch."""

    image: torch.Tensor
    label: torch.Tensor
    fg: list[NDArray[np.int64]]  # per foreground class: flat indices of its voxels


def _to_model_grid(case: CaseVolume, prep: PreprocessingSpec) -> tuple[torch.Tensor, tuple[int, int, int]]:
    shape = resampled_shape(case.shape, case.spacing, prep.spacing)
    return resample_image(normalize(case.image, prep), shape), shape


def _pad_to(t: torch.Tensor, size: Sequence[int], value: float) -> torch.Tensor:
    pads: list[int] = []
    for n, p in reversed(list(zip(t.shape[-3:], size))):
        extra = max(0, int(p) - int(n))
        pads += [extra // 2, extra - extra // 2]
    return F.pad(t, pads, mode="constant", value=value) if any(pads) else t


def _prepare_training(cases: Sequence[CaseVolume], prep: PreprocessingSpec, patch: Sequence[int], num_classes: int) -> list[_Prepared]:
    out = []
    for case in cases:
        img, shape = _to_model_grid(case, prep)
        lab = torch.from_numpy(resample_label(case.label, shape))
        img = _pad_to(img, patch, 0.0)
        lab = _pad_to(lab[None].float(), patch, 0.0)[0].long()
        flat = lab.reshape(-1).numpy()
        fg = [np.flatnonzero(flat == c) for c in range(1, num_classes)]
        out.append(_Prepared(img, lab, fg))
    return out


def _sample_patch(
    case: _Prepared, patch: Sequence[int], rng: np.random.Generator, force_fg: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One training patch: uniform over valid corners, or centred on a foreground voxel of a
    random present class (nnU-Net's oversampling), clipped into the volume."""
    shape = case.label.shape
    present = [c for c in case.fg if c.size]
    if force_fg and present:
        cls = present[int(rng.integers(len(present)))]
        centre = np.unravel_index(int(cls[int(rng.integers(cls.size))]), shape)
        corner = [int(np.clip(c - p // 2, 0, n - p)) for c, p, n in zip(centre, patch, shape)]
    else:
        corner = [int(rng.integers(0, n - p + 1)) for p, n in zip(patch, shape)]
    sl = tuple(slice(c, c + p) for c, p in zip(corner, patch))
    return case.image[(slice(None), *sl)], case.label[sl]


def _augment(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Intensity augmentation per patch (nnU-Net's brightness, contrast, gamma and noise, milder)."""
    y = x.clone()
    if rng.random() < 0.15:
        y = y * float(rng.uniform(0.75, 1.25))
    if rng.random() < 0.15:
        mean = y.mean()
        y = (y - mean) * float(rng.uniform(0.75, 1.25)) + mean
    if rng.random() < 0.3:
        lo, hi = float(y.min()), float(y.max())
        span = max(hi - lo, 1e-6)
        y = ((y - lo) / span).clamp(0, 1) ** float(rng.uniform(0.7, 1.5)) * span + lo
    if rng.random() < 0.1:
        y = y + torch.from_numpy(rng.normal(0.0, float(rng.uniform(0.0, 0.1)), size=tuple(y.shape)).astype(np.float32))
    return y


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """nnU-Net's loss: cross-entropy + (1 - soft Dice) over the foreground classes, Dice pooled
    over the batch ("batch Dice"); for one class this is the binary soft Dice."""
    ce = F.cross_entropy(logits, target)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].to(probs.dtype)
    axes = (0, 2, 3, 4)
    inter = (probs * onehot).sum(axes)
    denom = probs.sum(axes) + onehot.sum(axes)
    dice = (2 * inter + smooth) / (denom + smooth).clamp_min(1e-8)
    return ce + (1.0 - dice.mean())


def _lr_at(step: int, cfg: FinetuneConfig) -> float:
    """Linear ramp over the first `lr_ramp_steps` (by default the encoder warm-up), then poly decay
    over the remaining steps."""
    w = cfg.encoder_warmup_steps if cfg.lr_ramp_steps is None else cfg.lr_ramp_steps
    if step < w:
        return cfg.lr * (step + 1) / w
    return cfg.lr * (1.0 - (step - w) / (cfg.steps - w)) ** cfg.poly_exponent


def _optimizer(net: SegmentationNet, cfg: FinetuneConfig) -> torch.optim.Optimizer:
    """Two parameter groups, encoder first; each group's `scale` multiplies the scheduled rate."""
    groups = [
        {"params": list(net.encoder.parameters()), "scale": cfg.encoder_lr_scale},
        {"params": [*net.decoder.parameters(), *net.head.parameters()], "scale": 1.0},
    ]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)


def _gaussian_importance(patch: Sequence[int]) -> torch.Tensor:
    axes = [torch.arange(p, dtype=torch.float64) for p in patch]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    p = torch.tensor(list(patch), dtype=torch.float64)
    z = (grid - (p - 1) / 2) / (p * GAUSSIAN_SIGMA_SCALE)
    w = torch.exp(-0.5 * (z * z).sum(-1))
    return (w / w.max()).clamp_min(1e-6).float()


@torch.no_grad()
def predict_case(
    net: nn.Module, case: CaseVolume, prep: PreprocessingSpec, num_classes: int, patch: Sequence[int], overlap: float, device: torch.device
) -> NDArray[np.int64]:
    """Label map of `case` on its original grid: sliding windows over the model-grid volume,
    softmax blended with the Gaussian importance map, resampled back (trilinear), argmax."""
    img, shape = _to_model_grid(case, prep)
    padded = _pad_to(img, patch, 0.0)
    size = padded.shape[1:]
    before = [(int(s) - int(n)) // 2 for s, n in zip(size, shape)]
    starts = [window_starts(int(s), int(p), max(1, int(p * (1 - overlap)))) for s, p in zip(size, patch)]
    weight = _gaussian_importance(patch).to(device)
    acc = torch.zeros((num_classes, *size), dtype=torch.float32, device=device)
    wsum = torch.zeros(tuple(size), dtype=torch.float32, device=device)
    x_all = padded.to(device)
    windows = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    for w0 in range(0, len(windows), PREDICT_BATCH):
        chunk = windows[w0 : w0 + PREDICT_BATCH]
        x = torch.stack([x_all[:, a : a + patch[0], b : b + patch[1], c : c + patch[2]] for a, b, c in chunk])
        probs_b = torch.softmax(net(x.contiguous(memory_format=torch.channels_last_3d)).float(), dim=1)
        for (a, b, c), probs in zip(chunk, probs_b):
            acc[:, a : a + patch[0], b : b + patch[1], c : c + patch[2]] += probs * weight
            wsum[a : a + patch[0], b : b + patch[1], c : c + patch[2]] += weight
    probs = acc / wsum
    probs = probs[:, before[0] : before[0] + shape[0], before[1] : before[1] + shape[1], before[2] : before[2] + shape[2]]
    if tuple(probs.shape[1:]) != tuple(case.shape):
        probs = F.interpolate(probs[None], size=tuple(case.shape), mode="trilinear", align_corners=False)[0]
    return probs.argmax(0).cpu().numpy().astype(np.int64)


def dice_per_class(pred: NDArray[np.integer], truth: NDArray[np.integer], num_classes: int) -> dict[str, float | None]:
    """Dice of every foreground class; None where the class is absent from both (undefined)."""
    out: dict[str, float | None] = {}
    for c in range(1, num_classes):
        p, t = pred == c, truth == c
        denom = int(p.sum()) + int(t.sum())
        out[str(c)] = None if denom == 0 else 2.0 * float(np.logical_and(p, t).sum()) / denom
    return out


def _mean_defined(values: Sequence[float | None]) -> float:
    got = [v for v in values if v is not None]
    return float(np.mean(got)) if got else float("nan")


def finetune(
    spec: ModelSpec,
    checkpoint_path: Path,
    train: Sequence[CaseVolume],
    test: Sequence[CaseVolume],
    num_classes: int,
    config: FinetuneConfig | None = None,
    *,
    device: str = "cpu",
    progress: Progress | None = None,
) -> FinetuneResult:
    """Fine-tune the encoder of `spec` + a fresh decoder on `train`, return Dice on `test`.

    `num_classes` counts the background (K + 1). `progress(phase, fraction)` is called with
    phase "load", "train" (every few steps) and "predict" (per test case).
    """
    cfg = config or FinetuneConfig()
    if len(train) == 0:
        raise ValueError("fine-tuning needs at least one training case")
    if len(test) == 0:
        raise ValueError("fine-tuning needs at least one test case")
    if num_classes < 2:
        raise ValueError("num_classes counts the background and must be >= 2")
    ch = {c.n_channels for c in [*train, *test]}
    if len(ch) != 1:
        raise ValueError(f"cases have different channel counts {sorted(ch)}")
    for split, cases in (("training", train), ("test", test)):
        top = max(int(c.label.max()) for c in cases)  # on the cases' own grids, before any resampling
        if top >= num_classes:
            raise ValueError(f"a {split} case holds label {top}, but num_classes is {num_classes}")

    def report(phase: str, frac: float) -> None:
        if progress is not None:
            progress(phase, min(max(frac, 0.0), 1.0))

    prev_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # the caller's global RNG state is left as it was
            return _run(spec, Path(checkpoint_path), train, test, num_classes, cfg, resolve_device(device), report)
    finally:
        torch.set_num_threads(prev_threads)


def _run(
    spec: ModelSpec,
    checkpoint_path: Path,
    train: Sequence[CaseVolume],
    test: Sequence[CaseVolume],
    num_classes: int,
    cfg: FinetuneConfig,
    device: str,
    report: Callable[[str, float], None],
) -> FinetuneResult:
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    report("load", 0.0)
    fm = load_feature_model(
        spec, checkpoint_path, decoder_init=cfg.decoder_init, decoder_seed=cfg.seed, device=device, in_channels=train[0].n_channels
    )
    prep = fm.preprocessing
    if prep is None:
        raise ValueError("the model has no preprocessing (spacing, patch size): set it in its spec or catalog entry")
    coarse = fm.coarsest_stride
    if any(p % s for p, s in zip(cfg.patch, coarse)):
        raise ValueError(f"patch {tuple(cfg.patch)} must be a multiple of the model's coarsest stride {coarse}")
    torch.manual_seed(cfg.seed)
    net = build_segmentation_net(fm, num_classes, cfg.seed)
    data = _prepare_training(train, prep, cfg.patch, num_classes)
    seconds["load"] = time.perf_counter() - t0
    report("load", 1.0)

    t0 = time.perf_counter()
    rng = np.random.default_rng([cfg.seed, 17])
    opt = _optimizer(net, cfg)
    n_fg = int(round(cfg.batch_size * cfg.foreground_fraction))
    losses: list[tuple[int, float]] = []
    window: list[float] = []
    log_every = max(1, cfg.steps // 20)
    swa_start = cfg.swa_start()
    snapshot_at = dict(zip(cfg.eval_steps(), cfg.eval_fractions))
    snapshots: list[dict[str, Any]] = []
    average = _WeightAverage()
    predict_s = 0.0
    net.train()
    for step in range(cfg.steps):
        frozen = not cfg.train_encoder or step < cfg.encoder_warmup_steps
        for p in net.encoder.parameters():
            p.requires_grad_(not frozen)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg) * g["scale"]
        xs, ys = [], []
        for j in range(cfg.batch_size):
            case = data[int(rng.integers(len(data)))]
            # nnU-Net forces the last third of each batch onto foreground
            x, y = _sample_patch(case, cfg.patch, rng, force_fg=j >= cfg.batch_size - n_fg)
            xs.append(_augment(x, rng) if cfg.augment else x)
            ys.append(y)
        x = torch.stack(xs).to(device).contiguous(memory_format=torch.channels_last_3d)
        y = torch.stack(ys).to(device)
        loss = dice_ce_loss(net(x), y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning diverged at step {step} (loss {float(loss)})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)  # nnU-Net clips at 12
        opt.step()
        if step >= swa_start:
            average.add(net)
        window.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == cfg.steps:
            losses.append((step + 1, float(np.mean(window))))
            window = []
            report("train", (step + 1) / cfg.steps)
        if step + 1 in snapshot_at:  # Dice of the weights as they are at this step (a snapshot of this run)
            t1 = time.perf_counter()
            net.eval()
            ev = _evaluate(net, test, prep, num_classes, cfg, device)
            net.train()
            snapshots.append({"fraction": snapshot_at[step + 1], "step": step + 1, "dice": ev.dice, "per_case": ev.per_case,
                              "per_class": ev.per_class})
            predict_s += time.perf_counter() - t1
    net.eval()
    if average.count:
        average.load_into(net)
    seconds["train"] = time.perf_counter() - t0 - predict_s
    if snapshots:
        seconds["snapshots"] = predict_s

    t0 = time.perf_counter()
    ev = _evaluate(net, test, prep, num_classes, cfg, device, lambda m: report("predict", (m + 1) / len(test)))
    seconds["predict"] = time.perf_counter() - t0
    seconds["total"] = sum(seconds.values())
    per_case, per_class, per_case_class = ev.per_case, ev.per_class, ev.per_case_class
    return FinetuneResult(
        dice=ev.dice,
        per_case=per_case,
        per_class=per_class,
        per_case_class=per_case_class,
        losses=losses,
        seconds=seconds,
        config=cfg.to_dict(),
        n_train=len(train),
        n_test=len(test),
        num_classes=num_classes,
        recipe={
            "loss": "cross-entropy + (1 - soft batch Dice over foreground classes)",
            "sampling": f"{cfg.batch_size - n_fg} uniform + {n_fg} foreground-centred patches per batch",
            "schedule": f"linear ramp over {cfg.encoder_warmup_steps} encoder-frozen steps, then poly^{cfg.poly_exponent}; "
            f"encoder rate x{cfg.encoder_lr_scale}",
            "optimizer": cfg.optimizer,
            "grad_clip_norm": 12.0,
            "augmentation": "intensity only (scale, contrast, gamma, noise)" if cfg.augment else "none",
            "prediction": f"sliding window {list(cfg.patch)}, overlap {cfg.sw_overlap}, Gaussian sigma = patch/8, "
            "softmax blended, trilinear back to the original grid",
            "decoder": f"fresh RandomDecoder ({cfg.decoder_init}, seed {cfg.seed}) + 1x1x1 head",
            "device": device,
            "threads": torch.get_num_threads(),
            **_optional_recipe(cfg, average.count),
        },
        snapshots=snapshots,
    )


def _optional_recipe(cfg: FinetuneConfig, averaged: int) -> dict[str, Any]:
    """The recipe lines of the optional protocol settings, only when they are used."""
    out: dict[str, Any] = {}
    if not cfg.train_encoder:
        out["encoder"] = "frozen for the whole run (decoder and head trained alone)"
    if averaged:
        out["weights"] = f"uniform average of the weights after each of the last {averaged} steps (SWA), used for the final Dice"
    if cfg.eval_fractions:
        out["snapshots"] = f"held-out Dice also after {cfg.eval_steps()} steps, with the weights of that step"
    return out


class _WeightAverage:
    """Running uniform average of a network's parameters (stochastic weight averaging). Buffers
    are not averaged: the networks here normalise per instance and hold no running statistics."""

    def __init__(self) -> None:
        self.count = 0
        self.avg: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def add(self, net: nn.Module) -> None:
        self.count += 1
        for name, p in net.named_parameters():
            if name not in self.avg:
                self.avg[name] = p.detach().clone()
            else:
                self.avg[name].add_(p.detach() - self.avg[name], alpha=1.0 / self.count)

    @torch.no_grad()
    def load_into(self, net: nn.Module) -> None:
        for name, p in net.named_parameters():
            p.copy_(self.avg[name])


@dataclass
class _Evaluation:
    dice: float
    per_case: list[float]
    per_class: dict[str, float]
    per_case_class: list[dict[str, float | None]]


def _evaluate(
    net: nn.Module, test: Sequence[CaseVolume], prep: PreprocessingSpec, num_classes: int, cfg: FinetuneConfig, device: str,
    done: Callable[[int], None] | None = None,
) -> _Evaluation:
    """Held-out Dice of `net` on `test`: per case the mean over its defined foreground classes."""
    per_case_class: list[dict[str, float | None]] = []
    for m, case in enumerate(test):
        pred = predict_case(net, case, prep, num_classes, cfg.patch, cfg.sw_overlap, torch.device(device))
        per_case_class.append(dice_per_class(pred, case.label, num_classes))
        if done is not None:
            done(m)
    per_case = [_mean_defined(list(d.values())) for d in per_case_class]
    per_class = {str(c): _mean_defined([d[str(c)] for d in per_case_class]) for c in range(1, num_classes)}
    dice = float(np.nanmean(per_case)) if not all(math.isnan(v) for v in per_case) else float("nan")
    return _Evaluation(dice, per_case, per_class, per_case_class)
