"""The benchmark zoo: small self-supervised encoders in nnssl checkpoint format, one per SSL family
ranked in the paper (MAE, SimMIM, Models Genesis, S3D/SparK, VoCo, SimCLR, SwinUNETR pretext)
plus controls (random init, MAE at three pretraining lengths, MAE pretrained out of distribution)
and two supervised members (grey/white-matter segmentation of the brain source, organ segmentation of
the CT phantoms): the checkpoints a hospital's zoo also holds, and the members whose encoders should
make choosing matter.

Every member is a real pretraining run, at small scale, of the demo ResEnc U-Net 8-16-32-64
(`worker.demo_zoo.build_demo_unet`, nnU-Net's He init) on 32^3 crops of augmented MNI152 volumes at
3 mm (`worker.demo_zoo.CropBank`), except the OOD member(s), pretrained on abdomen CT phantoms
(`bench.validation.phantoms.abdomen_ct`). Runs are set by step counts and seeds only (constant
learning rate, so a snapshot after N steps of a run equals a run of N steps). Written as the
OpenMind hub release lays them out: `out_dir/<name>/checkpoint_final.pth` + `adaptation_plan.json`,
with a cache manifest `out_dir/manifest.json` (a member whose entry matches and whose file still
has its sha256 is not rebuilt; the manifest is rewritten after every member, so a partial build
resumes).

Reproducibility: a build is a function of the step counts and the seed only (no wall-time budget).
Single-threaded (`threads=1`) it is bitwise repeatable on one machine, not across CPU models (an
AMD EPYC and an AVX-512 Intel Xeon gave different weights for the same member); with more torch threads the CPU kernels
(MKL, oneDNN, and others: disabling oneDNN does not help) round differently from process to
process, so a rebuilt member's weights (and, over a few hundred steps, its loss curve) drift. The cache never rebuilds an intact member: keep one
built zoo as the benchmark's artifact rather than rebuilding it.

Cost (measured, 2 CPU cores, 2 torch threads): `smoke` ~15 s; `cpu` (13 members) ~10-12 min on a
quiet machine (30 min when two other jobs share the cores); `cpu-full` adds genesis-ood (~45 s).

    python -m bench.validation.zoo --out DIR --profile smoke|cpu|gpu [--seed N] [--members a,b]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from models_registry.catalog import DEMO_SPACING
from models_registry.specs import ModelSpec
from worker.demo_zoo import (
    CROP,
    CropBank,
    Projector,
    _genesis_corrupt,
    _mask_blocks,
    _view,
    _zscore,
    adaptation_plan,
    build_demo_unet,
    make_volume,
    nt_xent,
    write_nnssl_checkpoint,
)

ZOO_CODE_VERSION = "bench-zoo-1"
"""Bumped whenever an objective, the data or the checkpoint layout changes (invalidates caches)."""

MANIFEST = "manifest.json"
BRAIN_SOURCE = "mni152-brain-3mm"  # worker.demo_zoo.CropBank: augmented nilearn MNI152 T1, z-scored
OOD_SOURCE = "abdomen-ct-phantom-3mm"  # bench.validation.phantoms.abdomen_ct, z-scored per volume
BRAIN_LABELLED_SOURCE = "mni152-brain-3mm-tissue-labels"  # the brain source with its GM/WM labels (3 classes)
OOD_LABELLED_SOURCE = "abdomen-ct-phantom-3mm-organ-labels"  # the phantoms with liver/kidney/spleen labels (4 classes)
LR = 2e-3
WEIGHT_DECAY = 1e-4


# ----------------------------------------------------------------------------- members and profiles
@dataclass(frozen=True)
class MemberDef:
    """One zoo member: which objective, on which data, saved in which layout. Members sharing a
    `run` are snapshots of one pretraining run (at their own step counts)."""

    name: str
    method: str  # the paper's family: MAE, SimMIM, ModelsGenesis, S3D, VoCo, SimCLR, SwinUNETR, none
    variant: str
    objective: str  # key of OBJECTIVES ("random": untrained)
    run: str
    data: str = BRAIN_SOURCE
    description: str = ""


MEMBER_DEFS: dict[str, MemberDef] = {
    m.name: m
    for m in (
        MemberDef("random", "none", "init", "random", "random", description="nnU-Net random init (He, a=0.01), untrained"),
        MemberDef("mae-short", "MAE", "short", "mae", "mae", description="masked reconstruction, early snapshot of the MAE run"),
        MemberDef("mae-mid", "MAE", "mid", "mae", "mae", description="masked reconstruction, middle snapshot of the MAE run"),
        MemberDef("mae-long", "MAE", "long", "mae", "mae", description="masked reconstruction, final snapshot of the MAE run"),
        MemberDef("simmim", "SimMIM", "base", "simmim", "simmim", description="learnable mask token, L1 on masked voxels"),
        MemberDef("genesis", "ModelsGenesis", "base", "genesis", "genesis", description="Models Genesis restoration"),
        MemberDef("s3d", "S3D", "base", "s3d", "s3d", description="SparK-style sparse masked modelling (masked stage outputs)"),
        MemberDef("voco", "VoCo", "base", "voco", "voco", description="VoCo position contrast (overlap regression)"),
        MemberDef("simclr", "SimCLR", "base", "simclr", "simclr", description="SimCLR NT-Xent"),
        MemberDef("swinunetr", "SwinUNETR", "base", "swinunetr", "swinunetr", description="rotation + contrastive + inpainting"),
        MemberDef("mae-ood", "MAE", "ood", "mae", "mae-ood", OOD_SOURCE, "masked reconstruction on abdomen CT phantoms"),
        MemberDef("genesis-ood", "ModelsGenesis", "ood", "genesis", "genesis-ood", OOD_SOURCE, "Models Genesis on abdomen CT phantoms"),
        MemberDef("sup-tissue", "Supervised", "brain-tissue", "supervised", "sup-tissue", BRAIN_LABELLED_SOURCE,
                  "supervised grey/white-matter segmentation of augmented MNI152 (a hospital's own nnU-Net)"),
        MemberDef("sup-organs", "Supervised", "abdomen-organs", "supervised", "sup-organs", OOD_LABELLED_SOURCE,
                  "supervised liver/kidney/spleen segmentation of abdomen CT phantoms"),
    )
}
MEMBER_NAMES = tuple(MEMBER_DEFS)


@dataclass(frozen=True)
class ZooProfile:
    """Step counts per member (optimiser steps of its run, constant LR), batch, bank size; an
    optional subset of members; the device the runs use by default."""

    name: str
    steps: Mapping[str, int]
    batch: int = 4
    bank_size: int = 10
    ood_bank_size: int = 6
    members: tuple[str, ...] | None = None
    device: str = "cpu"
    description: str = ""

    def member_names(self) -> tuple[str, ...]:
        return tuple(self.members) if self.members is not None else tuple(n for n in MEMBER_NAMES if n in self.steps)


def _steps(short: int, base: int, ood: int, *, voco: int | None = None, swin: int | None = None) -> dict[str, int]:
    """MAE short / mid / long = short, 3x, 9x; every single-run member `base` steps (VoCo and
    SwinUNETR, whose steps see more crops, may be given fewer)."""
    return {
        "random": 0,
        "mae-short": short,
        "mae-mid": 3 * short,
        "mae-long": 9 * short,
        "simmim": base,
        "genesis": base,
        "s3d": base,
        "voco": voco if voco is not None else base,
        "simclr": base,
        "swinunetr": swin if swin is not None else base,
        "mae-ood": ood,
        "genesis-ood": ood,
        "sup-tissue": base,
        "sup-organs": base,
    }


ZOO_PROFILES: dict[str, ZooProfile] = {
    "smoke": ZooProfile(
        "smoke", _steps(2, 8, 6), batch=2, bank_size=2, ood_bank_size=2,
        description="every member, a few steps each (tests; < 1 min on 2 cores)",
    ),
    "cpu": ZooProfile(
        "cpu", _steps(40, 240, 240, voco=160, swin=160),
        members=tuple(n for n in MEMBER_NAMES if n != "genesis-ood"),
        description="the real zoo: 13 members (every one but genesis-ood), ~12 min on 2 quiet CPU cores",
    ),
    "cpu-full": ZooProfile(
        "cpu-full", _steps(40, 240, 240, voco=160, swin=160),
        description="the cpu zoo plus genesis-ood",
    ),
    "gpu": ZooProfile(
        "gpu", _steps(160, 960, 960, voco=640, swin=640), batch=8, bank_size=20, ood_bank_size=12, device="cuda",
        description="4x the cpu steps, batch 8, on a GPU",
    ),
}


@dataclass
class ZooMember:
    """A built member: its checkpoint, the registry spec to load it, how it was pretrained."""

    name: str
    method: str
    variant: str
    checkpoint: Path
    sha256: str
    spec: dict[str, Any]
    pretrain: dict[str, Any]
    cached: bool = False

    def to_json(self, root: Path | None = None) -> dict[str, Any]:
        d = asdict(self)
        d["checkpoint"] = str(self.checkpoint.relative_to(root) if root is not None else self.checkpoint)
        d.pop("cached")
        return d


# ----------------------------------------------------------------------------- data
def _pad_min(vol: NDArray[np.float32], size: Sequence[int]) -> NDArray[np.float32]:
    """Pad (centred, with the volume's minimum: the background) to at least `size` per axis."""
    pads = [(max(0, s - n) // 2, max(0, s - n) - max(0, s - n) // 2) for n, s in zip(vol.shape, size)]
    if not any(a or b for a, b in pads):
        return vol
    return np.pad(vol, pads, mode="constant", constant_values=float(vol.min())).astype(np.float32)


class PhantomCropBank(CropBank):
    """`CropBank` over abdomen CT phantoms (HU) at 3 mm: each z-scored per volume (the zoo's
    preprocessing), crops centred inside the body (> -500 HU)."""

    def __init__(self, rng: np.random.Generator, n: int = 6, spacing: Sequence[float] = DEMO_SPACING) -> None:
        from bench.validation.phantoms import abdomen_ct

        self.rng = rng
        self.vols, self.centres = [], []
        for _ in range(n):
            img, _ = abdomen_ct(rng, tuple(float(s) for s in spacing), augment=True)
            img = _pad_min(np.asarray(img, dtype=np.float32), [CROP] * 3)
            body = np.argwhere(img > -500.0)
            self.vols.append(_zscore(img))
            self.centres.append(body if len(body) else np.argwhere(np.ones_like(img, dtype=bool)))


class LabelledCropBank(CropBank):
    """`CropBank` over augmented MNI152 volumes that keeps their labels (background / GM / WM), for
    supervised members: `labelled_batch` returns aligned image and label crops."""

    n_classes = 3

    def __init__(self, rng: np.random.Generator, n: int = 10) -> None:
        self.rng = rng
        self.vols, self.labels, self.centres = [], [], []
        for _ in range(n):
            img, lab = make_volume(rng, DEMO_SPACING)
            vol = _zscore(img)
            self.vols.append(vol)
            self.labels.append(lab.astype(np.int64))
            self.centres.append(np.argwhere(vol > 0.0))

    def labelled_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(size):
            v = int(self.rng.integers(len(self.vols)))
            a, b, c = self.corner(v)
            xs.append(self.vols[v][a : a + CROP, b : b + CROP, c : c + CROP])
            ys.append(self.labels[v][a : a + CROP, b : b + CROP, c : c + CROP])
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


class LabelledPhantomCropBank(LabelledCropBank):
    """`LabelledCropBank` over abdomen CT phantoms (background / liver / kidneys / spleen), z-scored
    per volume like `PhantomCropBank`, crops centred inside the body."""

    n_classes = 4

    def __init__(self, rng: np.random.Generator, n: int = 6) -> None:
        from bench.validation.phantoms import abdomen_ct

        self.rng = rng
        self.vols, self.labels, self.centres = [], [], []
        for _ in range(n):
            img, lab = abdomen_ct(rng, tuple(float(s) for s in DEMO_SPACING), augment=True)
            pads = [(max(0, CROP - k) // 2, max(0, CROP - k) - max(0, CROP - k) // 2) for k in img.shape]
            img = _pad_min(np.asarray(img, dtype=np.float32), [CROP] * 3)
            lab = np.pad(np.asarray(lab, dtype=np.int64), pads, mode="constant", constant_values=0)
            body = np.argwhere(img > -500.0)
            self.vols.append(_zscore(img))
            self.labels.append(lab)
            self.centres.append(body if len(body) else np.argwhere(np.ones_like(img, dtype=bool)))


def _bank_for(bank: CropBank, rng: np.random.Generator) -> CropBank:
    """The same volumes with the run's own generator (a run never depends on other runs)."""
    view = copy.copy(bank)
    view.rng = rng
    return view


# ----------------------------------------------------------------------------- networks
def build_unet(seed: int) -> nn.Module:
    """The demo ResEnc U-Net with nnU-Net's initialisation (He a=0.01, last norm of each residual
    block zeroed), as nnssl trainers build it."""
    net = build_demo_unet(seed)  # seeds torch
    net.apply(net.initialize)
    return net


class VoCoHead(nn.Module):
    """VoCo projection: global average + max pooled deepest features -> 2-layer MLP."""

    def __init__(self, c: int, dim: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * c, 128), nn.ReLU(inplace=True), nn.Linear(128, dim))

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([deepest.mean((2, 3, 4)), deepest.amax((2, 3, 4))], 1))


# ----------------------------------------------------------------------------- objectives
def _nt_xent(z: torch.Tensor, tau: float) -> torch.Tensor:
    """`worker.demo_zoo.nt_xent` (used as is on the CPU), with its mask and targets on z's device."""
    if z.device.type == "cpu":
        return nt_xent(z, tau=tau)
    z = F.normalize(z, dim=1)
    b2 = z.shape[0]
    b = b2 // 2
    sim = (z @ z.T / tau).masked_fill(torch.eye(b2, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(b, b2, device=z.device), torch.arange(0, b, device=z.device)])
    return F.cross_entropy(sim, target)


class Objective:
    """A pretext task over a U-Net: `loss()` draws its own batch. `saved` heads are written with
    the checkpoint under their prefixes; `aux` parameters are trained but not saved. `layout` is
    `full` (U-Net + heads) or `encoder` (encoder.* + heads, as contrastive nnssl checkpoints)."""

    layout = "full"
    settings: dict[str, Any] = {}
    part_names: tuple[str, ...] = ()  # components of a summed loss, logged as `last_parts` by loss()

    def __init__(self, net: nn.Module, bank: CropBank, rng: np.random.Generator, batch: int, device: str) -> None:
        self.net, self.bank, self.rng, self.batch, self.device = net, bank, rng, batch, device
        self.saved: nn.Module = nn.ModuleDict()
        self.aux: nn.Module = nn.ModuleList()

    def parameters(self) -> list[nn.Parameter]:
        return [*self.net.parameters(), *self.saved.parameters(), *self.aux.parameters()]

    def to(self, device: str) -> "Objective":
        self.net.to(device)
        self.saved.to(device)
        self.aux.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)
        self.saved.train(mode)
        self.aux.train(mode)

    def loss(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def weights(self) -> dict[str, torch.Tensor]:
        sd = self.net.state_dict()
        if self.layout == "encoder":
            sd = {k: v for k, v in sd.items() if k.startswith("encoder.")}
        out = {k: v.detach().cpu().clone() for k, v in sd.items()}
        out.update({k: v.detach().cpu().clone() for k, v in self.saved.state_dict().items()})
        return out

    def _t(self, x: NDArray[np.float32] | torch.Tensor) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(self.device)


class MAEObjective(Objective):
    """MAE-style: 60 % of 4^3 blocks zeroed at the input, MSE on the masked voxels (dense U-Net)."""

    settings = {"mask_ratio": 0.6, "mask_block": 4, "fill": "zero", "loss": "mse_masked"}

    def loss(self) -> torch.Tensor:
        x = self._t(self.bank.batch(self.batch))
        keep = self._t(_mask_blocks(self.rng, self.batch, self.settings["mask_ratio"], self.settings["mask_block"]))
        pred = self.net(x * keep)
        return ((pred - x) ** 2)[~keep].mean()


class SimMIMObjective(Objective):
    """SimMIM-style: 50 % of 2^3 patches replaced by a learnable mask token (one scalar per input
    channel, trained, not saved), L1 on the masked voxels."""

    settings = {"mask_ratio": 0.5, "mask_block": 2, "fill": "learnable_token", "loss": "l1_masked"}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.aux = nn.ParameterList([nn.Parameter(torch.zeros(1, 1, 1, 1, 1))])  # the mask token, 1 input channel

    def loss(self) -> torch.Tensor:
        x = self._t(self.bank.batch(self.batch))
        keep = self._t(_mask_blocks(self.rng, self.batch, self.settings["mask_ratio"], self.settings["mask_block"]))
        k = keep.to(x.dtype)
        pred = self.net(x * k + (1 - k) * self.aux[0])
        return (pred - x).abs()[~keep].mean()


class GenesisObjective(Objective):
    """Models Genesis: restore the crop from `_genesis_corrupt` (non-linear intensity, local
    shuffling, in-/out-painting), MSE on the whole crop."""

    settings = {"transforms": "intensity p0.9, shuffle p0.5, in/out-painting p0.8", "loss": "mse"}

    def loss(self) -> torch.Tensor:
        x = self.bank.batch(self.batch)
        xin = np.stack([_genesis_corrupt(self.rng, v[0]) for v in x.numpy()])[:, None]
        return F.mse_loss(self.net(self._t(xin)), self._t(x))


class S3DObjective(Objective):
    """S3D / SparK-style sparse masked modelling: 60 % of the deepest stage's cells (8^3 voxels)
    masked; sparse convolution emulated by re-applying the (down-sampled) mask to the output of
    the stem and of every encoder stage (forward hooks), so masked regions never leak into visible
    features; the decoder densifies each skip by filling its masked positions with a learnable
    per-stage mask embedding (trained, not saved); MSE on the masked voxels."""

    settings = {"mask_ratio": 0.6, "mask_block": 8, "sparse": "mask re-applied after stem + every stage",
                "densify": "learnable per-stage mask embedding", "loss": "mse_masked"}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        chans = [int(c) for c in self.net.encoder.output_channels]
        self.aux = nn.ParameterList([nn.Parameter(torch.zeros(1, c, 1, 1, 1)) for c in chans])
        self._keep: torch.Tensor | None = None
        enc = self.net.encoder
        for mod in [enc.stem, *enc.stages]:
            mod.register_forward_hook(self._hook)

    def _mask_like(self, t: torch.Tensor) -> torch.Tensor:
        assert self._keep is not None
        return F.interpolate(self._keep, size=t.shape[2:], mode="nearest") if self._keep.shape[2:] != t.shape[2:] else self._keep

    def _hook(self, _mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
        if self._keep is None:
            return None
        return out * self._mask_like(out)

    def loss(self) -> torch.Tensor:
        x = self._t(self.bank.batch(self.batch))
        keep = self._t(_mask_blocks(self.rng, self.batch, self.settings["mask_ratio"], self.settings["mask_block"]))
        self._keep = keep.to(x.dtype)
        try:
            skips = self.net.encoder(x * self._keep)
        finally:
            keep_f, self._keep = self._keep, None
        dense = []
        for s, emb in zip(skips, self.aux):
            m = F.interpolate(keep_f, size=s.shape[2:], mode="nearest")
            dense.append(s * m + (1 - m) * emb)
        pred = self.net.decoder(dense)
        return ((pred - x) ** 2)[~keep].mean()


class VoCoObjective(Objective):
    """VoCo position contrast. A region of 64 x 64 (axes 0, 1; volume padded with background
    where smaller) x 32 is tiled by 2 x 2 base crops of 32^3; random 32^3 crops inside the region
    regress, with the clamped cosine similarity of their projected deepest features to each base
    crop's, the fraction of their volume that overlaps that base crop (L1); a regulariser pushes
    different base crops' similarities toward 0. Encoder-only layout + `voco_head.*`."""

    layout = "encoder"
    part_names = ("overlap_l1", "base_similarity_reg")
    settings = {"grid": [2, 2], "grid_axes": [0, 1], "region": [64, 64, 32], "random_crops": 2,
                "head": "global avg+max pool -> MLP 128 -> 64", "loss": "l1(relu(cos), overlap) + mean |cos(base_i, base_j)|",
                "regulariser_weight": 1.0, "regions_per_step": "batch // 2"}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.saved = nn.ModuleDict({"voco_head": VoCoHead(int(self.net.encoder.output_channels[-1]))})
        size = (2 * CROP, 2 * CROP, CROP)
        self.vols = [_pad_min(v, size) for v in self.bank.vols]
        self.centres = [np.argwhere(v > 0.0) for v in self.vols]  # inside the head / body (z > 0)
        self.n_rand = int(self.settings["random_crops"])
        self.regions = max(1, self.batch // 2)  # each region is 4 + n_rand crops

    def _sample(self) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]], NDArray[np.float32]]:
        rng = self.rng
        v = int(rng.integers(len(self.vols)))
        vol = self.vols[v]
        c = self.centres[v][rng.integers(len(self.centres[v]))]
        r = [int(np.clip(ci - s // 2, 0, n - s)) for ci, s, n in zip(c, (2 * CROP, 2 * CROP, CROP), vol.shape)]
        base = [vol[r[0] + CROP * i : r[0] + CROP * (i + 1), r[1] + CROP * j : r[1] + CROP * (j + 1), r[2] : r[2] + CROP]
                for i in range(2) for j in range(2)]
        rand, target = [], []
        for _ in range(self.n_rand):
            ox, oy = (int(o) for o in rng.integers(0, CROP + 1, size=2))
            rand.append(vol[r[0] + ox : r[0] + ox + CROP, r[1] + oy : r[1] + oy + CROP, r[2] : r[2] + CROP])
            target.append([max(0, CROP - abs(ox - CROP * i)) * max(0, CROP - abs(oy - CROP * j)) / CROP**2
                           for i in range(2) for j in range(2)])
        return base, rand, np.asarray(target, dtype=np.float32)

    def loss(self) -> torch.Tensor:
        bases, rands, targets = [], [], []
        for _ in range(self.regions):
            b, r, t = self._sample()
            bases += b
            rands += r
            targets.append(t)
        x = self._t(np.stack(bases + rands)[:, None])
        z = F.normalize(self.saved["voco_head"](self.net.encoder(x)[-1]), dim=1)
        nb = 4 * self.regions
        zb = z[:nb].view(self.regions, 4, -1)
        zr = z[nb:].view(self.regions, self.n_rand, -1)
        pred = torch.einsum("brd,bkd->brk", zr, zb).clamp(0.0, 1.0)
        target = self._t(np.stack(targets))
        pred_loss = (pred - target).abs().mean()
        sim_b = torch.einsum("bkd,bld->bkl", zb, zb)
        off = ~torch.eye(4, dtype=torch.bool, device=sim_b.device)
        reg = sim_b[:, off].abs().mean()
        self.last_parts = (float(pred_loss.detach()), float(reg.detach()))
        return pred_loss + float(self.settings["regulariser_weight"]) * reg


class SimCLRObjective(Objective):
    """SimCLR: NT-Xent (tau 0.2) between two views (`_view`: contrast + noise, 3-voxel shift) of
    a crop, on the demo `Projector` (deepest map pooled to 2^3). Encoder-only layout + `projector.*`."""

    layout = "encoder"
    settings = {"tau": 0.2, "views": "gamma 0.7-1.4 + noise, shift <= 3 voxels", "head": "Projector (2^3 pool, 128, 32)"}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.head = Projector(int(self.net.encoder.output_channels[-1]))
        self.saved = self.head  # keys projector.0 / projector.2, as the demo's contrastive checkpoint

    def _pairs(self) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
        a, b = [], []
        for _ in range(self.batch):
            v = int(self.rng.integers(len(self.bank.vols)))
            corner = self.bank.corner(v)
            a.append(_view(self.rng, self.bank.crop(v, corner)))
            b.append(_view(self.rng, self.bank.crop(v, self.bank.shifted(v, corner, jitter=3))))
        return a, b

    def loss(self) -> torch.Tensor:
        a, b = self._pairs()
        x = self._t(np.stack(a + b)[:, None])
        return _nt_xent(self.head(self.net.encoder(x)[-1]), float(self.settings["tau"]))


def _cutout(rng: np.random.Generator, x: NDArray[np.float32], lo: float, hi: float, max_block: int) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """SwinUNETR's `patch_rand_drop`: random boxes (2..max_block voxels a side) filled with noise
    until a fraction in [lo, hi] of the crop is covered. Returns (cut crop, dropped mask)."""
    y = x.copy()
    drop = np.zeros(x.shape, dtype=bool)
    goal = rng.uniform(lo, hi) * x.size
    while drop.sum() < goal:
        s = rng.integers(2, max_block + 1, size=3)
        a = [int(rng.integers(0, n - k + 1)) for n, k in zip(x.shape, s)]
        sl = tuple(slice(ai, ai + int(k)) for ai, k in zip(a, s))
        y[sl] = rng.normal(0.0, 1.0, size=tuple(int(k) for k in s))
        drop[sl] = True
    return y.astype(np.float32), drop


class SwinUNETRObjective(Objective):
    """SwinUNETR's pretext tasks on the ResEnc: two views (`_view` + shift) of a crop, each rotated
    by a random multiple of 90 deg about axis 2 and cut out (noise boxes over 10-30 %); loss =
    rotation cross-entropy (linear head on the 2^3-pooled deepest map) + NT-Xent between the views
    (tau 0.5) + L1 inpainting of the cut-out voxels through the full U-Net. Full U-Net layout +
    `rotation_head.*` + `contrastive_head.*`."""

    part_names = ("rotation_ce", "nt_xent", "inpaint_l1")
    settings = {"rotations": "k*90 deg about axis 2, k in 0..3", "cutout": [0.1, 0.3], "cutout_max_block": 8, "tau": 0.5,
                "loss": "ce_rot + nt_xent + l1_cutout", "weights": [1.0, 1.0, 1.0]}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        c = int(self.net.encoder.output_channels[-1])
        self.saved = nn.ModuleDict({"rotation_head": nn.Linear(8 * c, 4), "contrastive_head": Projector(c)})

    def loss(self) -> torch.Tensor:
        rng, bank = self.rng, self.bank
        clean, cut, drops, rots = [], [], [], []
        views: list[list[NDArray[np.float32]]] = [[], []]
        for _ in range(self.batch):
            v = int(rng.integers(len(bank.vols)))
            corner = bank.corner(v)
            views[0].append(_view(rng, bank.crop(v, corner)))
            views[1].append(_view(rng, bank.crop(v, bank.shifted(v, corner, jitter=3))))
        for view in views[0] + views[1]:
            k = int(rng.integers(4))
            r = np.ascontiguousarray(np.rot90(view, k, axes=(0, 1)))
            y, d = _cutout(rng, r, *self.settings["cutout"], self.settings["cutout_max_block"])
            clean.append(r)
            cut.append(y)
            drops.append(d)
            rots.append(k)
        x = self._t(np.stack(cut)[:, None])
        target = self._t(np.stack(clean)[:, None])
        drop = self._t(torch.from_numpy(np.stack(drops)[:, None]))
        skips = self.net.encoder(x)
        deepest = skips[-1]
        pooled = F.adaptive_avg_pool3d(deepest, 2).flatten(1)
        rot_loss = F.cross_entropy(self.saved["rotation_head"](pooled), self._t(torch.tensor(rots)))
        con_loss = _nt_xent(self.saved["contrastive_head"](deepest), float(self.settings["tau"]))
        rec = self.net.decoder(skips)
        rec_loss = (rec - target).abs()[drop].mean()
        w = self.settings["weights"]
        self.last_parts = (float(rot_loss.detach()), float(con_loss.detach()), float(rec_loss.detach()))
        return w[0] * rot_loss + w[1] * con_loss + w[2] * rec_loss


class SupervisedObjective(Objective):
    """Supervised segmentation, the non-SSL member a hospital's zoo holds (its own nnU-Net): a
    1x1x1 head (trained, not saved) on the finest decoder stage, cross-entropy + soft Dice over the
    foreground classes of the labelled source. Only the encoder transfers (scoring and fine-tuning
    build fresh decoders)."""

    settings = {"loss": "ce + soft dice (foreground)", "head": "1x1x1 conv on the finest decoder stage, not saved"}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        n_classes = int(getattr(self.bank, "n_classes", 0))
        if n_classes < 2 or not hasattr(self.bank, "labelled_batch"):
            raise ValueError("supervised pretraining needs a labelled crop bank")
        finest = self.net.decoder.stages[-1]
        chans = int(self.net.decoder.seg_layers[-1].in_channels)
        self.aux = nn.ModuleList([nn.Conv3d(chans, n_classes, 1)])
        self._feat: torch.Tensor | None = None
        finest.register_forward_hook(self._hook)

    def _hook(self, _mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        self._feat = out

    def loss(self) -> torch.Tensor:
        x, y = self.bank.labelled_batch(self.batch)  # type: ignore[attr-defined]
        x, y = self._t(x), self._t(y)
        self.net(x)
        assert self._feat is not None
        logits, self._feat = self.aux[0](self._feat), None
        if logits.shape[2:] != y.shape[1:]:
            logits = F.interpolate(logits, size=y.shape[1:], mode="trilinear", align_corners=False)
        ce = F.cross_entropy(logits, y)
        prob = logits.softmax(1)[:, 1:]
        onehot = F.one_hot(y, logits.shape[1]).permute(0, 4, 1, 2, 3)[:, 1:].to(prob.dtype)
        dims = (0, 2, 3, 4)
        dice = (2 * (prob * onehot).sum(dims) + 1e-5) / (prob.sum(dims) + onehot.sum(dims) + 1e-5)
        return ce + (1 - dice.mean())


OBJECTIVES: dict[str, type[Objective]] = {
    "mae": MAEObjective,
    "simmim": SimMIMObjective,
    "genesis": GenesisObjective,
    "s3d": S3DObjective,
    "voco": VoCoObjective,
    "simclr": SimCLRObjective,
    "swinunetr": SwinUNETRObjective,
    "supervised": SupervisedObjective,
}


# ----------------------------------------------------------------------------- seeds, settings, specs
def _run_seeds(seed: int, run: str) -> tuple[np.random.Generator, int]:
    """(numpy generator, torch seed) of a run: a function of the zoo seed and the run's name only."""
    key = zlib.crc32(run.encode())
    torch_seed = int(np.random.default_rng([seed, key, 1]).integers(2**31 - 1))
    return np.random.default_rng([seed, key, 0]), torch_seed


def member_settings(name: str, profile: ZooProfile, device: str) -> dict[str, Any]:
    """Everything a member's weights depend on besides the seed and the code (the cache key)."""
    d = MEMBER_DEFS[name]
    obj = OBJECTIVES.get(d.objective)
    steps = int(profile.steps[name])
    out: dict[str, Any] = {"method": d.method, "variant": d.variant, "objective": d.objective, "run": d.run, "steps": steps}
    if obj is not None:
        out.update({
            "objective_settings": dict(obj.settings),
            "layout": obj.layout,
            "data": {"source": d.data, "bank_size": profile.ood_bank_size if d.data in (OOD_SOURCE, OOD_LABELLED_SOURCE) else profile.bank_size,
                     "crop": CROP, "spacing": list(DEMO_SPACING)},
            "batch": profile.batch,
            "optimizer": {"name": "AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY, "schedule": "constant"},
            "device": device,
        })
    out["init"] = "build_demo_unet + nnU-Net InitWeights_He(1e-2) + zeroed last residual norm"
    return json.loads(json.dumps(out))


def member_spec(name: str) -> dict[str, Any]:
    """The registry spec of a member (nnssl; architecture, preprocessing and stages come from the
    checkpoint's adaptation plan / a dry run)."""
    d = MEMBER_DEFS[name]
    spec = ModelSpec(
        name=f"bench-zoo-{name}",
        format="nnssl",
        ssl_method=d.method,
        architecture={"arch_class_name": "ResidualEncoderUNet"},
        description=f"TopoRank benchmark zoo: {d.description} (demo ResEnc 8-16-32-64, {d.data})",
    )
    return spec.model_dump(mode="json", exclude_none=True)


def member_plan(name: str) -> dict[str, Any]:
    d = MEMBER_DEFS[name]
    plan = adaptation_plan(name)
    plan["trainer_name"] = f"toporank.bench.zoo:{name}"
    if d.data in (OOD_SOURCE, OOD_LABELLED_SOURCE):
        plan["pretrain_plan"]["dataset_name"] = "Bench_AbdomenCT_phantom"
    else:
        plan["pretrain_plan"]["dataset_name"] = "Bench_MNI152_nilearn"
    return plan


def _sha256(path: Path) -> str:
    from worker.adapters.base import sha256_file

    return sha256_file(path)


def _loss_summary(losses: Sequence[float], parts: Sequence[Sequence[float]] = (), part_names: Sequence[str] = ()) -> dict[str, Any]:
    if not losses:
        return {"first_loss": None, "last_loss": None, "loss_window": 0, "loss_curve": []}
    k = max(1, min(5, len(losses) // 4))
    n = min(len(losses), 40)
    chunks = np.array_split(np.asarray(losses, dtype=np.float64), n)
    extra: dict[str, Any] = {}
    if part_names and len(parts) == len(losses):
        arr = np.asarray(parts, dtype=np.float64)
        extra["first_parts"] = {p: float(v) for p, v in zip(part_names, arr[:k].mean(0))}
        extra["last_parts"] = {p: float(v) for p, v in zip(part_names, arr[-k:].mean(0))}
    return {
        **extra,
        "first_loss": float(np.mean(losses[:k])),
        "last_loss": float(np.mean(losses[-k:])),
        "loss_window": k,  # first/last_loss: mean over the first/last k steps
        "loss_curve": [round(float(c.mean()), 5) for c in chunks],
    }


# ----------------------------------------------------------------------------- manifest
def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and isinstance(data.get("members"), dict):
            return data
    except (OSError, ValueError):
        pass
    return {"members": {}}


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = out_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out_dir / MANIFEST)


def _cached(out_dir: Path, entry: Any, settings: dict[str, Any], seed: int) -> bool:
    if not isinstance(entry, dict):
        return False
    if entry.get("code_version") != ZOO_CODE_VERSION or entry.get("seed") != seed or entry.get("settings") != settings:
        return False
    path = out_dir / str(entry.get("checkpoint", ""))
    return path.is_file() and _sha256(path) == entry.get("sha256")


def _member_from_entry(out_dir: Path, entry: dict[str, Any], cached: bool) -> ZooMember:
    return ZooMember(entry["name"], entry["method"], entry["variant"], out_dir / entry["checkpoint"], entry["sha256"],
                     entry["spec"], entry["pretrain"], cached=cached)


# ----------------------------------------------------------------------------- building
def _train_run(
    objective: Objective, snapshots: Mapping[int, list[str]], lr: float, save: Callable[[str, dict[str, torch.Tensor], dict[str, Any]], None],
) -> None:
    """AdamW at a constant LR up to the last snapshot; at each snapshot step the weights are handed
    to `save(member, weights, log)` (a snapshot at step 0 is the initialisation)."""
    opt = torch.optim.AdamW(objective.parameters(), lr=lr, weight_decay=WEIGHT_DECAY)
    losses: list[float] = []
    parts: list[Sequence[float]] = []
    t0 = time.perf_counter()
    last = max(snapshots)
    for name in snapshots.get(0, []):
        save(name, objective.weights(), {"steps": 0, "seconds": 0.0, **_loss_summary([])})
    objective.train(True)
    for step in range(1, last + 1):
        loss = objective.loss()
        if not torch.isfinite(loss):
            raise RuntimeError(f"non-finite pretraining loss at step {step}: {float(loss)}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if objective.part_names:
            parts.append(getattr(objective, "last_parts", ()))
        if step in snapshots:
            objective.train(False)
            log = {"steps": step, "seconds": round(time.perf_counter() - t0, 3), **_loss_summary(losses, parts, objective.part_names)}
            for name in snapshots[step]:
                save(name, objective.weights(), log)
            objective.train(True)
    objective.train(False)


def build_zoo(
    out_dir: Path,
    profile: str | ZooProfile = "cpu",
    *,
    seed: int = 0,
    members: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> list[ZooMember]:
    """Build (or reuse from `out_dir/manifest.json`) the members of `profile` (or `members`) and
    return them in zoo order. `profile`: a name in ZOO_PROFILES or a ZooProfile. `device` defaults to the profile's (`cuda` falls back to `cpu` when no
    GPU is visible); `threads` sets `torch.set_num_threads` for the build (else the caller's)."""
    if isinstance(profile, ZooProfile):
        prof = profile
    elif profile in ZOO_PROFILES:
        prof = ZOO_PROFILES[profile]
    else:
        raise ValueError(f"unknown zoo profile {profile!r}; known: {sorted(ZOO_PROFILES)}")
    names = list(members) if members is not None else list(prof.member_names())
    unknown = [n for n in names if n not in MEMBER_DEFS or n not in prof.steps]
    if unknown:
        raise ValueError(f"unknown zoo members {unknown}; known: {list(MEMBER_NAMES)}")
    names = [n for n in MEMBER_NAMES if n in names]  # zoo order, no duplicates
    dev = device or prof.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        dev = "cpu"
    say = progress or (lambda _m: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_dir)
    manifest["code_version"] = ZOO_CODE_VERSION
    entries: dict[str, Any] = manifest["members"]
    settings = {n: member_settings(n, prof, dev) for n in names}
    todo = [n for n in names if not _cached(out_dir, entries.get(n), settings[n], seed)]
    for n in names:
        if n not in todo:
            say(f"{n}: cached ({entries[n]['sha256'][:12]})")

    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if dev.startswith("cuda"):  # bitwise repeatable on CPU; on a GPU as far as cuDNN allows
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    banks: dict[str, CropBank] = {}

    def bank(source: str) -> CropBank:
        if source not in banks:
            t = time.perf_counter()
            if source == OOD_SOURCE:
                banks[source] = PhantomCropBank(np.random.default_rng([seed, 2]), prof.ood_bank_size)
            elif source == OOD_LABELLED_SOURCE:
                banks[source] = LabelledPhantomCropBank(np.random.default_rng([seed, 4]), prof.ood_bank_size)
            elif source == BRAIN_LABELLED_SOURCE:
                banks[source] = LabelledCropBank(np.random.default_rng([seed, 3]), prof.bank_size)
            else:
                banks[source] = CropBank(np.random.default_rng([seed, 1]), prof.bank_size)
            say(f"crop bank {source}: {len(banks[source].vols)} volumes in {time.perf_counter() - t:.1f} s")
        return banks[source]

    def save(name: str, weights: dict[str, torch.Tensor], log: dict[str, Any], run_info: dict[str, Any]) -> None:
        d = MEMBER_DEFS[name]
        path = out_dir / name / "checkpoint_final.pth"
        write_nnssl_checkpoint(path, weights, member_plan(name))
        sha = _sha256(path)
        st = settings[name]
        pretrain = {**run_info, **log, "objective": d.objective, "objective_settings": st.get("objective_settings", {}),
                    "data_source": d.data, "batch": st.get("batch"), "bank_size": st.get("data", {}).get("bank_size"),
                    "lr": LR, "profile": prof.name, "device": dev, "threads": torch.get_num_threads()}
        entries[name] = {"name": name, "method": d.method, "variant": d.variant, "checkpoint": f"{name}/checkpoint_final.pth",
                         "sha256": sha, "spec": member_spec(name), "pretrain": pretrain, "settings": st, "seed": seed,
                         "code_version": ZOO_CODE_VERSION}
        manifest["profile"] = prof.name
        _write_manifest(out_dir, manifest)
        first, last = log.get("first_loss"), log.get("last_loss")
        say(f"{name}: {log['steps']} steps, {log['seconds']:.1f} s, loss {first if first is None else round(first, 4)} -> "
            f"{last if last is None else round(last, 4)}")

    try:
        runs: dict[str, list[str]] = {}
        for n in todo:
            runs.setdefault(MEMBER_DEFS[n].run, []).append(n)
        for run, run_members in runs.items():
            d0 = MEMBER_DEFS[run_members[0]]
            rng, torch_seed = _run_seeds(seed, run)
            net = build_unet(torch_seed)
            run_info = {"run": run, "seed": seed, "torch_seed": torch_seed}
            snapshots: dict[int, list[str]] = {}
            for n in run_members:
                snapshots.setdefault(int(prof.steps[n]), []).append(n)
            say(f"run {run}: {d0.objective}, snapshots {sorted(snapshots)}")
            if d0.objective == "random":
                for n in run_members:
                    w = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                    save(n, w, {"steps": 0, "seconds": 0.0, **_loss_summary([])}, run_info)
                continue
            obj = OBJECTIVES[d0.objective](net, _bank_for(bank(d0.data), rng), rng, prof.batch, dev)
            obj.to(dev)
            _train_run(obj, snapshots, LR, lambda n, w, log: save(n, w, log, run_info))
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn
    return [_member_from_entry(out_dir, entries[n], n not in todo) for n in names]


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.validation.zoo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per member + manifest.json)")
    p.add_argument("--profile", choices=sorted(ZOO_PROFILES), default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", default=None, help="comma-separated subset of members")
    p.add_argument("--device", default=None, help="cpu / cuda (default: the profile's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the build")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = p.parse_args(list(argv) if argv is not None else None)
    import sys

    t0 = time.perf_counter()
    members = [m.strip() for m in args.members.split(",") if m.strip()] if args.members else None
    say = None if args.quiet else (lambda m: print(f"[zoo {time.perf_counter() - t0:7.1f}s] {m}", file=sys.stderr, flush=True))
    zoo = build_zoo(args.out, args.profile, seed=args.seed, members=members, progress=say, device=args.device, threads=args.threads)
    summary = {
        "out": str(args.out),
        "profile": args.profile,
        "seed": args.seed,
        "code_version": ZOO_CODE_VERSION,
        "seconds": round(time.perf_counter() - t0, 1),
        "members": [
            {"name": m.name, "method": m.method, "variant": m.variant, "sha256": m.sha256, "steps": m.pretrain.get("steps"),
             "seconds": m.pretrain.get("seconds"), "first_loss": m.pretrain.get("first_loss"),
             "last_loss": m.pretrain.get("last_loss"), "cached": m.cached}
            for m in zoo
        ],
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
