"""The benchmark zoo, v2: twenty small ResEnc encoders (the demo U-Net 8-16-32-64) in nnssl
encoder-only checkpoint format whose members differ by construction: in data (brain MR, abdomen CT,
cardiac MR, a mix of the three), in objective (supervised segmentation, MAE, SimCLR, Models
Genesis, none) and, on two degradation ladders, in how much of a trained encoder is left.

Realistic zoo (14, what a hospital's zoo holds):
  random-a, random-b      untrained, nnU-Net init (`build_unet`) from two seeds
  sup-tissue, sup-hemi    supervised: brain grey / white matter (3 classes); the same by hemisphere (5)
  sup-organs, sup-cardiac supervised: CT liver / kidneys / spleen (4); LV cavity / myocardium / RV (4)
  mae-{brain,ct,cardiac,mix}        masked reconstruction on each source and on their union
  simclr-{brain,mix}                SimCLR NT-Xent
  genesis-{brain,cardiac}           Models Genesis restoration
Degradation ladders (6): sup-tissue-r25/-r50/-r75 and mae-mix-r25/-r50/-r75, the base member's final
weights with 25 / 50 / 75 % of the output filters of every encoder conv layer (stem, both convs of
every residual block and the 1x1 skip projections: 12 layers) re-initialised: for a chosen filter j,
conv weight[j], bias[j] and the affine weight[j] / bias[j] of the norm that normalises that conv's
output are copied from a fresh `build_unet` whose seed is derived from the zoo seed and the base's
name (`ladder_fresh_net`). One seeded permutation per layer, shared by the three rungs, picks the
first round(p * C) filters (`reinit_filters`), so the sets are nested (r25 within r50 within r75)
and the order base > r25 > r50 > r75 (less of the pretraining left) is known by construction. A
ladder is derived from its base's saved checkpoint right after the base, in the same run group
(`MemberDef.run` is the base's), so asking for a ladder alone builds (or reuses) its base too.

Data (all 3 mm, 32^3 crops; each bank from `np.random.default_rng([seed, k])`, its own k):
  brain    `worker.demo_zoo.CropBank`: augmented MNI152 T1 (`make_volume`), z-scored per volume; k 1
  ct       `PhantomCropBank`: `phantoms.abdomen_ct(augment=True)` CT-windowed exactly as the CT tasks
           window it for the models (`worker.preprocess.normalize` with the member's plan
           preprocessing + `CT_INTENSITY` = clip [-160, 240] HU -> [-1, 1], as
           `bench.validation.run.model_spec_for_task` builds it), crops centred in the body
           (> -500 HU before windowing); k 2
  cardiac  `CardiacCropBank`: `phantoms.cardiac_cine(augment=True)` z-scored per volume as the plan
           (`normalize` with the plan's z-score), crops centred on voxels brighter than 0.2 on the
           phantom's [0, 1] scale before z-scoring (everything but lungs: the FOV lies inside the
           chest); k 7
  mix      `MixCropBank`: the brain, ct and cardiac banks' volumes together, uniform over volumes
  labelled brain tissue (`LabelledCropBank`, 3 classes, k 3), brain hemisphere (`LabelledHemisphereCropBank`,
           5 classes as tasks.py's hemisphere recipe: left GM 1, left WM 2, right GM 3, right WM 4; k 5),
           CT organs (`LabelledPhantomCropBank`, windowed as ct, 4 classes; k 4), cardiac
           (`LabelledCardiacCropBank`, z-scored as cardiac, 4 classes; k 6).
Every volume is padded to >= 32 per axis with its normalised background (none needs it at 3 mm).

Checkpoints: `out_dir/<name>/checkpoint_final.pth` + `adaptation_plan.json` (the OpenMind release
layout), `network_weights` holding the encoder only (`encoder.*`: no decoder, no heads; the conv and
norm tensors that `convs.0.conv` and `convs.0.all_modules.0` name twice share one storage in the
file), 225,056 float32 parameters: 922,599 bytes a member, ~18.5 MB for the twenty. The plan says
`ZScoreNormalization` for every member, the CT ones too: the product reads only z-score plans, and
the benchmark's CT tasks give every member the CT window (`CT_INTENSITY`) anyway. A cache manifest
`out_dir/manifest.json`: a member whose entry matches (code version, seed, settings; for a ladder
also its base's sha256) and whose file still has its sha256 is not rebuilt; the manifest is
rewritten after every member, so a partial build resumes.

Reproducibility: a build is a function of the step counts and the seed only (constant learning
rate, no wall-time budget). Single-threaded (`threads=1`) it is bitwise repeatable on one machine,
not across CPU models; with more torch threads the CPU kernels (MKL, oneDNN) round differently from
process to process. The cache never rebuilds an intact member: keep one built zoo as the
benchmark's artifact rather than rebuilding it.

Cost (measured on a 2-core AMD EPYC host, one torch thread, batch 4; 50 steps of mae-mix, 15 of
each other objective, extrapolated): seconds per step MAE 0.46, supervised 0.49, SimCLR 0.44, Models
Genesis 0.40, so a `v2` member of 1000 steps takes ~7.6 / 8.2 / 7.3 / 6.6 min; the twelve trained
members ~91 min on one core (~46 min as two one-thread processes, `bench.validation.run`'s
`build_zoo_parallel`, on two free cores); the crop banks ~9 s in all, a ladder rung < 1 s, the random
inits nothing. `smoke` (every member, 3 steps at batch 2) builds in ~20 s on one core.

    python -m bench.validation.zoo --out DIR --profile v2|smoke [--seed N] [--members a,b] [--threads 1]
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
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from models_registry.catalog import DEMO_SPACING
from models_registry.specs import ModelSpec, PreprocessingSpec
from worker.demo_zoo import (
    CROP,
    CropBank,
    Projector,
    adaptation_plan,
    build_demo_unet,
    contrast_view,
    genesis_corrupt,
    make_volume,
    mask_blocks,
    nt_xent,
    write_nnssl_checkpoint,
    zscore,
)

ZOO_CODE_VERSION = "bench-zoo-2"
"""Bumped whenever an objective, the data or the checkpoint layout changes (invalidates caches)."""

MANIFEST = "manifest.json"
NO_DATA = "none"  # the untrained members
BRAIN_SOURCE = "mni152-brain-3mm"  # worker.demo_zoo.CropBank: augmented nilearn MNI152 T1, z-scored
CT_SOURCE = "abdomen-ct-phantom-3mm"  # PhantomCropBank: phantoms.abdomen_ct, CT-windowed as the CT tasks
CARDIAC_SOURCE = "cardiac-cine-phantom-3mm"  # CardiacCropBank: phantoms.cardiac_cine, z-scored
MIX_SOURCE = "mix-brain-ct-cardiac-3mm"  # MixCropBank: the three banks' volumes, uniform over volumes
BRAIN_TISSUE_SOURCE = "mni152-brain-3mm-tissue-labels"  # background / GM / WM (3 classes)
BRAIN_HEMI_SOURCE = "mni152-brain-3mm-hemisphere-labels"  # background / left GM, WM / right GM, WM (5 classes)
CT_ORGANS_SOURCE = "abdomen-ct-phantom-3mm-organ-labels"  # background / liver / kidneys / spleen (4 classes)
CARDIAC_LABELLED_SOURCE = "cardiac-cine-phantom-3mm-labels"  # background / LV cavity / LV myocardium / RV cavity (4)

CT_INTENSITY: dict[str, Any] = {"normalization": "ct", "ct_clip": (-160.0, 240.0)}
"""The `intensity` block of the benchmark's CT tasks (tasks/liver.json, held-out ct_structures and
ct_spine): the models see CT clipped to [-160, 240] HU and mapped to [-1, 1]."""
CT_BODY_HU = -500.0  # crops of the CT banks are centred on voxels above this (inside the body)
CARDIAC_BODY = 0.2  # ... of the cardiac banks on voxels above this on the phantom's [0, 1] scale (not lung)
LR = 2e-3
WEIGHT_DECAY = 1e-4
LADDER_FRACTIONS = (0.25, 0.5, 0.75)

# which bank (the k of its generator) and which profile bank size each source uses
_SOURCE_BANK: dict[str, tuple[int, str]] = {
    BRAIN_SOURCE: (1, "brain_bank"),
    CT_SOURCE: (2, "ct_bank"),
    BRAIN_TISSUE_SOURCE: (3, "brain_bank"),
    CT_ORGANS_SOURCE: (4, "ct_bank"),
    BRAIN_HEMI_SOURCE: (5, "brain_bank"),
    CARDIAC_LABELLED_SOURCE: (6, "cardiac_bank"),
    CARDIAC_SOURCE: (7, "cardiac_bank"),
}
_MIX_PARTS = (BRAIN_SOURCE, CT_SOURCE, CARDIAC_SOURCE)
_NORMALISATION = {
    BRAIN_SOURCE: "zscore per volume", BRAIN_TISSUE_SOURCE: "zscore per volume", BRAIN_HEMI_SOURCE: "zscore per volume",
    CT_SOURCE: "ct clip [-160, 240] -> [-1, 1]", CT_ORGANS_SOURCE: "ct clip [-160, 240] -> [-1, 1]",
    CARDIAC_SOURCE: "zscore per volume", CARDIAC_LABELLED_SOURCE: "zscore per volume",
    MIX_SOURCE: "each part as its own source",
}
_DATASET_NAME = {
    NO_DATA: "Bench_untrained",
    BRAIN_SOURCE: "Bench_MNI152_nilearn", BRAIN_TISSUE_SOURCE: "Bench_MNI152_nilearn", BRAIN_HEMI_SOURCE: "Bench_MNI152_nilearn",
    CT_SOURCE: "Bench_AbdomenCT_phantom", CT_ORGANS_SOURCE: "Bench_AbdomenCT_phantom",
    CARDIAC_SOURCE: "Bench_CardiacCine_phantom", CARDIAC_LABELLED_SOURCE: "Bench_CardiacCine_phantom",
    MIX_SOURCE: "Bench_MNI152_AbdomenCT_CardiacCine_mix",
}


# ----------------------------------------------------------------------------- members and profiles
@dataclass(frozen=True)
class MemberDef:
    """One zoo member: which objective, on which data. `run` names the pretraining run (its seeds
    and its run group); a ladder rung (`ladder_of` = its base, `reinit` = the fraction of every
    encoder conv layer's output filters re-initialised) is no run of its own: it shares its base's."""

    name: str
    method: str  # the paper's family: MAE, ModelsGenesis, SimCLR, Supervised, none
    variant: str
    objective: str  # key of OBJECTIVES ("random": untrained; "reinit": a ladder rung)
    run: str
    data: str = BRAIN_SOURCE
    description: str = ""
    ladder_of: str | None = None
    reinit: float = 0.0


def _member_defs() -> tuple[MemberDef, ...]:
    base = (
        MemberDef("random-a", "none", "init-a", "random", "random-a", NO_DATA, "nnU-Net random init (He, a=0.01), untrained"),
        MemberDef("random-b", "none", "init-b", "random", "random-b", NO_DATA, "nnU-Net random init (He, a=0.01) from another seed, untrained"),
        MemberDef("sup-tissue", "Supervised", "brain-tissue", "supervised", "sup-tissue", BRAIN_TISSUE_SOURCE,
                  "supervised grey / white-matter segmentation of augmented MNI152 (a hospital's own nnU-Net)"),
        MemberDef("sup-hemi", "Supervised", "brain-hemisphere", "supervised", "sup-hemi", BRAIN_HEMI_SOURCE,
                  "supervised grey / white matter by hemisphere (4 foreground classes) of augmented MNI152"),
        MemberDef("sup-organs", "Supervised", "abdomen-organs", "supervised", "sup-organs", CT_ORGANS_SOURCE,
                  "supervised liver / kidney / spleen segmentation of abdomen CT phantoms"),
        MemberDef("sup-cardiac", "Supervised", "cardiac", "supervised", "sup-cardiac", CARDIAC_LABELLED_SOURCE,
                  "supervised LV cavity / LV myocardium / RV cavity segmentation of cardiac cine phantoms"),
        MemberDef("mae-brain", "MAE", "brain", "mae", "mae-brain", BRAIN_SOURCE, "masked reconstruction on brain MR"),
        MemberDef("mae-ct", "MAE", "ct", "mae", "mae-ct", CT_SOURCE, "masked reconstruction on abdomen CT phantoms"),
        MemberDef("mae-cardiac", "MAE", "cardiac", "mae", "mae-cardiac", CARDIAC_SOURCE, "masked reconstruction on cardiac cine phantoms"),
        MemberDef("mae-mix", "MAE", "mix", "mae", "mae-mix", MIX_SOURCE, "masked reconstruction on brain MR + abdomen CT + cardiac MR"),
        MemberDef("simclr-brain", "SimCLR", "brain", "simclr", "simclr-brain", BRAIN_SOURCE, "SimCLR NT-Xent on brain MR"),
        MemberDef("simclr-mix", "SimCLR", "mix", "simclr", "simclr-mix", MIX_SOURCE, "SimCLR NT-Xent on brain MR + abdomen CT + cardiac MR"),
        MemberDef("genesis-brain", "ModelsGenesis", "brain", "genesis", "genesis-brain", BRAIN_SOURCE, "Models Genesis restoration on brain MR"),
        MemberDef("genesis-cardiac", "ModelsGenesis", "cardiac", "genesis", "genesis-cardiac", CARDIAC_SOURCE,
                  "Models Genesis restoration on cardiac cine phantoms"),
    )
    by = {m.name: m for m in base}
    ladders = []
    for b in ("sup-tissue", "mae-mix"):
        d = by[b]
        for p in LADDER_FRACTIONS:
            pct = round(100 * p)
            ladders.append(MemberDef(f"{b}-r{pct}", d.method, f"{d.variant}-r{pct}", "reinit", d.run, d.data,
                                     f"{d.description}; {pct} % of every encoder conv layer's output filters re-initialised",
                                     ladder_of=b, reinit=p))
    return (*base, *ladders)


MEMBER_DEFS: dict[str, MemberDef] = {m.name: m for m in _member_defs()}
MEMBER_NAMES = tuple(MEMBER_DEFS)


@dataclass(frozen=True)
class ZooProfile:
    """Step counts per member (optimiser steps of its run, constant LR; a ladder rung has its
    base's), batch, bank sizes (volumes) per source; an optional subset of members; the device."""

    name: str
    steps: Mapping[str, int]
    batch: int = 4
    brain_bank: int = 10
    ct_bank: int = 6
    cardiac_bank: int = 8
    members: tuple[str, ...] | None = None
    device: str = "cpu"
    description: str = ""

    def member_names(self) -> tuple[str, ...]:
        return tuple(self.members) if self.members is not None else tuple(n for n in MEMBER_NAMES if n in self.steps)

    def bank_size(self, source: str) -> int | dict[str, int]:
        if source == MIX_SOURCE:
            return {s: int(getattr(self, _SOURCE_BANK[s][1])) for s in _MIX_PARTS}
        return int(getattr(self, _SOURCE_BANK[source][1]))


def _steps(trained: int) -> dict[str, int]:
    """Every trained member `trained` steps, the random inits 0, a ladder rung its base's."""
    out = {n: 0 if d.objective == "random" else trained for n, d in MEMBER_DEFS.items()}
    for n, d in MEMBER_DEFS.items():
        if d.ladder_of is not None:
            out[n] = out[d.ladder_of]
    return out


ZOO_PROFILES: dict[str, ZooProfile] = {
    "v2": ZooProfile(
        "v2", _steps(1000), batch=4, brain_bank=10, ct_bank=6, cardiac_bank=8,
        description="the benchmark's zoo: 20 members, every trained one 1000 steps at batch 4",
    ),
    "smoke": ZooProfile(
        "smoke", _steps(3), batch=2, brain_bank=2, ct_bank=1, cardiac_bank=1,
        description="every member, 3 steps each (tests; ~20 s on one core)",
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


# ----------------------------------------------------------------------------- normalisation
@lru_cache(maxsize=1)
def plan_preprocessing() -> PreprocessingSpec:
    """The preprocessing every member's adaptation plan gives the product (z-score, 3 mm, ...)."""
    from worker.adapters.nnssl import plan_preprocessing as from_plan

    prep = from_plan(adaptation_plan("bench-zoo"), 1)
    assert prep is not None
    return prep


@lru_cache(maxsize=1)
def ct_preprocessing() -> PreprocessingSpec:
    """The plan's preprocessing with the CT tasks' intensity, built as
    `bench.validation.run.model_spec_for_task` builds it for a CT task."""
    full = {**plan_preprocessing().model_dump(mode="json"), "ct_clip": None, "ct_mean": None, "ct_std": None, **CT_INTENSITY}
    return PreprocessingSpec(**full)


def ct_normalize(hu: NDArray[np.floating]) -> NDArray[np.float32]:
    """A CT volume (X, Y, Z, HU) as the models see it on the CT tasks (`worker.preprocess.normalize`)."""
    from worker.preprocess import normalize

    return normalize(np.asarray(hu, dtype=np.float32)[None], ct_preprocessing())[0]


def mr_normalize(img: NDArray[np.floating]) -> NDArray[np.float32]:
    """An MR volume z-scored as the members' plan normalises it (`worker.preprocess.normalize`)."""
    from worker.preprocess import normalize

    return normalize(np.asarray(img, dtype=np.float32)[None], plan_preprocessing())[0]


# ----------------------------------------------------------------------------- data
def _pads(shape: Sequence[int], size: Sequence[int]) -> list[tuple[int, int]]:
    return [(max(0, s - n) // 2, max(0, s - n) - max(0, s - n) // 2) for n, s in zip(shape, size)]


def _pad(arr: NDArray[Any], value: float, size: Sequence[int] = (CROP,) * 3) -> NDArray[Any]:
    """Pad (centred, with `value`) to at least `size` per axis."""
    pads = _pads(arr.shape, size)
    if not any(a or b for a, b in pads):
        return arr
    return np.pad(arr, pads, mode="constant", constant_values=value)


def _pad_min(vol: NDArray[np.float32], size: Sequence[int] = (CROP,) * 3) -> NDArray[np.float32]:
    """Pad (centred, with the volume's minimum: the background) to at least `size` per axis."""
    return _pad(vol, float(vol.min()), size).astype(np.float32)


def _centres(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    idx = np.argwhere(mask)
    return idx if len(idx) else np.argwhere(np.ones_like(mask, dtype=bool))


def _ct_case(rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
    """An augmented abdomen CT phantom at 3 mm: (windowed volume, labels, crop centres in the body)."""
    from bench.validation.phantoms import abdomen_ct

    hu, lab = abdomen_ct(rng, tuple(float(s) for s in DEMO_SPACING), augment=True)
    air = float(ct_normalize(np.full((1, 1, 1), -1000.0, dtype=np.float32)).ravel()[0])
    vol = _pad(ct_normalize(hu), air).astype(np.float32)
    body = _pad(np.asarray(hu) > CT_BODY_HU, False)
    return vol, _pad(np.asarray(lab, dtype=np.int64), 0), _centres(body)


def _cardiac_case(rng: np.random.Generator) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
    """An augmented cardiac cine phantom at 3 mm: (z-scored volume, labels, crop centres: not lung)."""
    from bench.validation.phantoms import cardiac_cine

    img, lab = cardiac_cine(rng, tuple(float(s) for s in DEMO_SPACING), augment=True)
    vol = _pad_min(mr_normalize(img))
    body = _pad(np.asarray(img) > CARDIAC_BODY, False)
    return vol, _pad(np.asarray(lab, dtype=np.int64), 0), _centres(body)


class PhantomCropBank(CropBank):
    """`CropBank` over abdomen CT phantoms at 3 mm, CT-windowed as the CT tasks window them for the
    models (`ct_normalize`), crops centred inside the body (> -500 HU)."""

    def __init__(self, rng: np.random.Generator, n: int = 6) -> None:
        self.rng = rng
        self.vols, self.centres = [], []
        for _ in range(n):
            vol, _, centres = _ct_case(rng)
            self.vols.append(vol)
            self.centres.append(centres)


class CardiacCropBank(CropBank):
    """`CropBank` over cardiac cine phantoms at 3 mm, z-scored per volume (`mr_normalize`), crops
    centred on voxels brighter than `CARDIAC_BODY` before normalisation (not lung)."""

    def __init__(self, rng: np.random.Generator, n: int = 8) -> None:
        self.rng = rng
        self.vols, self.centres = [], []
        for _ in range(n):
            vol, _, centres = _cardiac_case(rng)
            self.vols.append(vol)
            self.centres.append(centres)


class MixCropBank(CropBank):
    """The union of other banks' volumes (each normalised as in its own source), with their crop
    centres; crops are drawn uniformly over the volumes."""

    def __init__(self, banks: Sequence[CropBank], rng: np.random.Generator) -> None:
        self.rng = rng
        self.vols = [v for b in banks for v in b.vols]
        self.centres = [c for b in banks for c in b.centres]


class LabelledCropBank(CropBank):
    """`CropBank` over augmented MNI152 volumes that keeps their labels (background / GM / WM), for
    supervised members: `labelled_batch` returns aligned image and label crops."""

    n_classes = 3

    def __init__(self, rng: np.random.Generator, n: int = 10) -> None:
        self.rng = rng
        self.vols, self.labels, self.centres = [], [], []
        for _ in range(n):
            img, lab = make_volume(rng, DEMO_SPACING)
            self._add(zscore(img), lab)

    def _add(self, vol: NDArray[np.float32], lab: NDArray[np.int64], centres: NDArray[np.int64] | None = None) -> None:
        self.vols.append(vol)
        self.labels.append(np.asarray(lab, dtype=np.int64))
        self.centres.append(centres if centres is not None else _centres(vol > 0.0))  # inside the head

    def labelled_batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for _ in range(size):
            v = int(self.rng.integers(len(self.vols)))
            a, b, c = self.corner(v)
            xs.append(self.vols[v][a : a + CROP, b : b + CROP, c : c + CROP])
            ys.append(self.labels[v][a : a + CROP, b : b + CROP, c : c + CROP])
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys))


class LabelledHemisphereCropBank(LabelledCropBank):
    """Augmented MNI152 volumes labelled as tasks.py's `hemisphere_tissue` recipe labels them:
    background 0, left GM 1, left WM 2, right GM 3, right WM 4 (side from the template x in mm,
    RAS, at the recipe's default midline); `tasks.warp_template` + `tasks.mni_intensity` with
    `make_volume`'s augmentation, z-scored per volume."""

    n_classes = 5

    def __init__(self, rng: np.random.Generator, n: int = 10) -> None:
        from bench.validation.tasks import (
            MNI_AUG,
            HemisphereParams,
            mni_intensity,
            tissue_labels,
            warp_template,
        )

        midline = float(HemisphereParams().midline_mm)
        self.rng = rng
        self.vols, self.labels, self.centres = [], [], []
        for _ in range(n):
            w = warp_template(rng, DEMO_SPACING, MNI_AUG)
            tis = tissue_labels(w)
            right = (w["x_mm"] >= midline).astype(np.int64)  # RAS: +x is the subject's right
            lab = np.where(tis > 0, tis + 2 * right, 0).astype(np.int64)
            self._add(zscore(mni_intensity(rng, w["t1"], MNI_AUG)), lab)


class LabelledPhantomCropBank(LabelledCropBank):
    """`LabelledCropBank` over abdomen CT phantoms (background / liver / kidneys / spleen),
    CT-windowed like `PhantomCropBank`, crops centred inside the body."""

    n_classes = 4

    def __init__(self, rng: np.random.Generator, n: int = 6) -> None:
        self.rng = rng
        self.vols, self.labels, self.centres = [], [], []
        for _ in range(n):
            self._add(*_ct_case(rng))


class LabelledCardiacCropBank(LabelledCropBank):
    """`LabelledCropBank` over cardiac cine phantoms (background / LV cavity / LV myocardium / RV
    cavity), z-scored like `CardiacCropBank`, crops centred as there."""

    n_classes = 4

    def __init__(self, rng: np.random.Generator, n: int = 8) -> None:
        self.rng = rng
        self.vols, self.labels, self.centres = [], [], []
        for _ in range(n):
            self._add(*_cardiac_case(rng))


_BANK_CLASSES: dict[str, Callable[[np.random.Generator, int], CropBank]] = {
    BRAIN_SOURCE: CropBank,
    CT_SOURCE: PhantomCropBank,
    CARDIAC_SOURCE: CardiacCropBank,
    BRAIN_TISSUE_SOURCE: LabelledCropBank,
    BRAIN_HEMI_SOURCE: LabelledHemisphereCropBank,
    CT_ORGANS_SOURCE: LabelledPhantomCropBank,
    CARDIAC_LABELLED_SOURCE: LabelledCardiacCropBank,
}


def make_bank(source: str, profile: ZooProfile, seed: int, cache: dict[str, CropBank] | None = None) -> CropBank:
    """The crop bank of `source` for `profile` and zoo seed `seed` (reused from / added to `cache`)."""
    cache = {} if cache is None else cache
    if source not in cache:
        if source == MIX_SOURCE:
            cache[source] = MixCropBank([make_bank(s, profile, seed, cache) for s in _MIX_PARTS], np.random.default_rng([seed, 8]))
        else:
            k, _ = _SOURCE_BANK[source]
            cache[source] = _BANK_CLASSES[source](np.random.default_rng([seed, k]), int(profile.bank_size(source)))  # type: ignore[arg-type]
    return cache[source]


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


def encoder_weights(net: nn.Module) -> dict[str, torch.Tensor]:
    """The `encoder.*` entries of the state dict, copied to the CPU once per storage: the keys that
    name one tensor twice (`convs.0.conv` / `convs.0.all_modules.0`) keep sharing it, so torch.save
    writes it once."""
    out: dict[str, torch.Tensor] = {}
    memo: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], torch.Tensor] = {}
    for k, v in net.state_dict().items():
        if not k.startswith("encoder."):
            continue
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        if key not in memo:
            memo[key] = v.detach().to("cpu", copy=True).contiguous()
        out[k] = memo[key]
    return out


def reinit_layers(net: nn.Module) -> dict[str, nn.Module]:
    """The encoder's conv layers a ladder re-initialises, by name: every conv + norm unit
    (`ConvDropoutNormReLU`: the stem, conv1 / conv2 of each residual block, the 1x1 skip projections)."""
    return {name: mod for name, mod in net.named_modules()
            if name.startswith("encoder.") and isinstance(getattr(mod, "conv", None), nn.Conv3d) and hasattr(mod, "norm")}


def _ladder_key(base: str) -> int:
    return zlib.crc32(f"{base}:reinit".encode())


def ladder_torch_seed(seed: int, base: str) -> int:
    """The torch seed of `ladder_fresh_net` (zoo seed, base name)."""
    return int(np.random.default_rng([seed, _ladder_key(base), 1]).integers(2**31 - 1))


def ladder_fresh_net(seed: int, base: str) -> nn.Module:
    """The freshly initialised network a ladder of `base` copies its re-initialised filters from."""
    return build_unet(ladder_torch_seed(seed, base))


def reinit_filters(seed: int, base: str, fraction: float, channels: Mapping[str, int]) -> dict[str, list[int]]:
    """Per layer (name -> output channels C), the output filters a rung re-initialises: the first
    round(fraction * C) of one permutation seeded by (zoo seed, base, layer), nested across fractions."""
    out = {}
    for name, c in channels.items():
        perm = np.random.default_rng([seed, _ladder_key(base), 2, zlib.crc32(name.encode())]).permutation(int(c))
        out[name] = sorted(int(j) for j in perm[: round(fraction * c)])
    return out


def degrade(base_weights: Mapping[str, torch.Tensor], seed: int, base: str, fraction: float) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """A ladder rung: `base_weights` (encoder.*) with `reinit_filters` of every conv layer copied,
    with their bias and the affine weight / bias of the norm after it, from `ladder_fresh_net`.
    Returns (encoder weights, filters re-initialised per layer)."""
    fresh = ladder_fresh_net(seed, base)
    net = copy.deepcopy(fresh)
    enc = {k[len("encoder."):]: v for k, v in base_weights.items() if k.startswith("encoder.")}
    net.encoder.load_state_dict(enc, strict=True)
    layers, fresh_layers = reinit_layers(net), reinit_layers(fresh)
    chosen = reinit_filters(seed, base, fraction, {n: int(m.conv.out_channels) for n, m in layers.items()})
    with torch.no_grad():
        for name, idx in chosen.items():
            if not idx:
                continue
            j = torch.as_tensor(idx, dtype=torch.long)
            mod, ref = layers[name], fresh_layers[name]
            for part in ("conv", "norm"):
                for attr in ("weight", "bias"):
                    p, q = getattr(getattr(mod, part), attr, None), getattr(getattr(ref, part), attr, None)
                    if p is not None and q is not None:
                        p[j] = q[j]
    return encoder_weights(net), chosen


# ----------------------------------------------------------------------------- objectives
class Objective:
    """A pretext task over a U-Net: `loss()` draws its own batch. `aux` modules (heads, mask
    tokens) are trained but not saved: a checkpoint holds the encoder only (`encoder_weights`)."""

    settings: ClassVar[dict[str, Any]] = {}
    part_names: ClassVar[tuple[str, ...]] = ()  # components of a summed loss, logged as `last_parts` by loss()

    def __init__(self, net: nn.Module, bank: CropBank, rng: np.random.Generator, batch: int, device: str) -> None:
        self.net, self.bank, self.rng, self.batch, self.device = net, bank, rng, batch, device
        self.aux: nn.Module = nn.ModuleList()

    def parameters(self) -> list[nn.Parameter]:
        return [*self.net.parameters(), *self.aux.parameters()]

    def to(self, device: str) -> Objective:
        self.net.to(device)
        self.aux.to(device)
        return self

    def train(self, mode: bool = True) -> None:
        self.net.train(mode)
        self.aux.train(mode)

    def loss(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def weights(self) -> dict[str, torch.Tensor]:
        return encoder_weights(self.net)

    def _t(self, x: NDArray[np.float32] | torch.Tensor) -> torch.Tensor:
        t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
        return t.to(self.device)


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


class MAEObjective(Objective):
    """MAE-style: 60 % of 4^3 blocks zeroed at the input, MSE on the masked voxels (dense U-Net)."""

    settings: ClassVar[dict[str, Any]] = {"mask_ratio": 0.6, "mask_block": 4, "fill": "zero", "loss": "mse_masked"}

    def loss(self) -> torch.Tensor:
        x = self._t(self.bank.batch(self.batch))
        keep = self._t(mask_blocks(self.rng, self.batch, self.settings["mask_ratio"], self.settings["mask_block"]))
        pred = self.net(x * keep)
        return ((pred - x) ** 2)[~keep].mean()


class GenesisObjective(Objective):
    """Models Genesis: restore the crop from `genesis_corrupt` (non-linear intensity, local
    shuffling, in-/out-painting), MSE on the whole crop."""

    settings: ClassVar[dict[str, Any]] = {"transforms": "intensity p0.9, shuffle p0.5, in/out-painting p0.8", "loss": "mse"}

    def loss(self) -> torch.Tensor:
        x = self.bank.batch(self.batch)
        xin = np.stack([genesis_corrupt(self.rng, v[0]) for v in x.numpy()])[:, None]
        return F.mse_loss(self.net(self._t(xin)), self._t(x))


class SimCLRObjective(Objective):
    """SimCLR: NT-Xent (tau 0.2) between two views (`contrast_view`: contrast + noise, 3-voxel shift) of
    a crop, on the demo `Projector` (deepest map pooled to 2^3; trained, not saved)."""

    settings: ClassVar[dict[str, Any]] = {"tau": 0.2, "views": "gamma 0.7-1.4 + noise, shift <= 3 voxels", "head": "Projector (2^3 pool, 128, 32), not saved"}

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.head = Projector(int(self.net.encoder.output_channels[-1]))
        self.aux = self.head

    def _pairs(self) -> tuple[list[NDArray[np.float32]], list[NDArray[np.float32]]]:
        a, b = [], []
        for _ in range(self.batch):
            v = int(self.rng.integers(len(self.bank.vols)))
            corner = self.bank.corner(v)
            a.append(contrast_view(self.rng, self.bank.crop(v, corner)))
            b.append(contrast_view(self.rng, self.bank.crop(v, self.bank.shifted(v, corner, jitter=3))))
        return a, b

    def loss(self) -> torch.Tensor:
        a, b = self._pairs()
        x = self._t(np.stack(a + b)[:, None])
        return _nt_xent(self.head(self.net.encoder(x)[-1]), float(self.settings["tau"]))


class SupervisedObjective(Objective):
    """Supervised segmentation, the non-SSL member a hospital's zoo holds (its own nnU-Net): a
    1x1x1 head (trained, not saved) on the finest decoder stage, cross-entropy + soft Dice over the
    foreground classes of the labelled source. Only the encoder is saved (scoring and fine-tuning
    build fresh decoders)."""

    settings: ClassVar[dict[str, Any]] = {"loss": "ce + soft dice (foreground)", "head": "1x1x1 conv on the finest decoder stage, not saved"}

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
    "genesis": GenesisObjective,
    "simclr": SimCLRObjective,
    "supervised": SupervisedObjective,
}


# ----------------------------------------------------------------------------- seeds, settings, specs
def _run_seeds(seed: int, run: str) -> tuple[np.random.Generator, int]:
    """(numpy generator, torch seed) of a run: a function of the zoo seed and the run's name only."""
    key = zlib.crc32(run.encode())
    torch_seed = int(np.random.default_rng([seed, key, 1]).integers(2**31 - 1))
    return np.random.default_rng([seed, key, 0]), torch_seed


def _data_settings(source: str, profile: ZooProfile) -> dict[str, Any]:
    return {"source": source, "bank_size": profile.bank_size(source), "normalization": _NORMALISATION[source],
            "crop": CROP, "spacing": list(DEMO_SPACING)}


def member_settings(name: str, profile: ZooProfile, device: str) -> dict[str, Any]:
    """Everything a member's weights depend on besides the seed and the code (the cache key); a
    ladder rung's include its base's."""
    d = MEMBER_DEFS[name]
    out: dict[str, Any] = {"method": d.method, "variant": d.variant, "objective": d.objective, "run": d.run}
    if d.ladder_of is not None:
        out.update({
            "steps": int(profile.steps[d.ladder_of]),
            "ladder": {"base": d.ladder_of, "reinit": d.reinit, "base_settings": member_settings(d.ladder_of, profile, device),
                       "fresh_init": "build_unet(seed from (zoo seed, base))", "selection": "per encoder conv layer, the first "
                       "round(reinit * C) output filters of one permutation seeded by (zoo seed, base, layer)",
                       "copied": "conv weight[j], bias[j]; norm weight[j], bias[j]"},
        })
        return json.loads(json.dumps(out))
    out["steps"] = int(profile.steps[name])
    obj = OBJECTIVES.get(d.objective)
    if obj is not None:
        out.update({
            "objective_settings": dict(obj.settings),
            "data": _data_settings(d.data, profile),
            "batch": profile.batch,
            "optimizer": {"name": "AdamW", "lr": LR, "weight_decay": WEIGHT_DECAY, "schedule": "constant"},
            "device": device,
        })
    out["layout"] = "encoder"
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
    plan = adaptation_plan(name)
    plan["trainer_name"] = f"toporank.bench.zoo:{name}"
    plan["pretrain_plan"]["dataset_name"] = _DATASET_NAME[MEMBER_DEFS[name].data]
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


def load_encoder_weights(path: Path) -> dict[str, torch.Tensor]:
    """The `network_weights` of a zoo checkpoint (encoder.*)."""
    return torch.load(path, map_location="cpu", weights_only=True)["network_weights"]  # type: ignore[no-any-return]


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


def _resolve_profile(profile: str | ZooProfile) -> ZooProfile:
    if isinstance(profile, ZooProfile):
        return profile
    if profile in ZOO_PROFILES:
        return ZOO_PROFILES[profile]
    raise ValueError(f"unknown zoo profile {profile!r}; known: {sorted(ZOO_PROFILES)}")


def build_zoo(
    out_dir: Path,
    profile: str | ZooProfile = "v2",
    *,
    seed: int = 0,
    members: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> list[ZooMember]:
    """Build (or reuse from `out_dir/manifest.json`) the members of `profile` (or `members`) and
    return them in zoo order. A ladder rung needs its base: the base is built (or reused) in the
    same `out_dir` too, but only the members asked for are returned. `profile`: a name in
    ZOO_PROFILES or a ZooProfile. `device` defaults to the profile's (`cuda` falls back to `cpu`
    when no GPU is visible); `threads` sets `torch.set_num_threads` for the build (else the caller's)."""
    prof = _resolve_profile(profile)
    names = list(members) if members is not None else list(prof.member_names())
    unknown = [n for n in names if n not in MEMBER_DEFS or n not in prof.steps]
    if unknown:
        raise ValueError(f"unknown zoo members {unknown}; known: {list(MEMBER_NAMES)}")
    names = [n for n in MEMBER_NAMES if n in names]  # zoo order, no duplicates
    bases = {MEMBER_DEFS[n].ladder_of for n in names} - {None}
    build = [n for n in MEMBER_NAMES if n in names or n in bases]
    dev = device or prof.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        dev = "cpu"
    say = progress or (lambda _m: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = _read_manifest(out_dir)
    manifest["code_version"] = ZOO_CODE_VERSION
    entries: dict[str, Any] = manifest["members"]
    settings: ClassVar[dict[str, Any]] = {n: member_settings(n, prof, dev) for n in build}
    todo = [n for n in build if MEMBER_DEFS[n].ladder_of is None and not _cached(out_dir, entries.get(n), settings[n], seed)]
    for n in build:
        b = MEMBER_DEFS[n].ladder_of
        if b is not None and (b in todo or not _cached(out_dir, entries.get(n), settings[n], seed)
                              or entries[n].get("pretrain", {}).get("base_sha256") != entries.get(b, {}).get("sha256")):
            todo.append(n)
    for n in build:
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
            make_bank(source, prof, seed, banks)
            say(f"crop bank {source}: {len(banks[source].vols)} volumes in {time.perf_counter() - t:.1f} s")
        return banks[source]

    def save(name: str, weights: dict[str, torch.Tensor], pretrain: dict[str, Any]) -> None:
        d = MEMBER_DEFS[name]
        path = out_dir / name / "checkpoint_final.pth"
        write_nnssl_checkpoint(path, weights, member_plan(name))
        sha = _sha256(path)
        pretrain = {**pretrain, "profile": prof.name, "device": dev, "threads": torch.get_num_threads()}
        entries[name] = {"name": name, "method": d.method, "variant": d.variant, "checkpoint": f"{name}/checkpoint_final.pth",
                         "sha256": sha, "spec": member_spec(name), "pretrain": pretrain, "settings": settings[name], "seed": seed,
                         "code_version": ZOO_CODE_VERSION}
        manifest["profile"] = prof.name
        _write_manifest(out_dir, manifest)

    def save_trained(name: str, weights: dict[str, torch.Tensor], log: dict[str, Any], run_info: dict[str, Any]) -> None:
        d = MEMBER_DEFS[name]
        st = settings[name]
        save(name, weights, {**run_info, **log, "objective": d.objective, "objective_settings": st.get("objective_settings", {}),
                             "data_source": d.data, "batch": st.get("batch"), "bank_size": st.get("data", {}).get("bank_size"), "lr": LR})
        first, last = log.get("first_loss"), log.get("last_loss")
        say(f"{name}: {log['steps']} steps, {log['seconds']:.1f} s, loss {first if first is None else round(first, 4)} -> "
            f"{last if last is None else round(last, 4)}")

    def save_rung(name: str) -> None:
        d = MEMBER_DEFS[name]
        base = str(d.ladder_of)
        t = time.perf_counter()
        base_entry = entries[base]
        weights, chosen = degrade(load_encoder_weights(out_dir / base_entry["checkpoint"]), seed, base, d.reinit)
        save(name, weights, {"run": d.run, "seed": seed, "ladder_of": base, "reinit": d.reinit, "base_sha256": base_entry["sha256"],
                             "fresh_torch_seed": ladder_torch_seed(seed, base), "steps": base_entry["pretrain"].get("steps"),
                             "seconds": round(time.perf_counter() - t, 3), "objective": d.objective,
                             "reinit_filters": chosen, "first_loss": None, "last_loss": None, "loss_curve": []})
        say(f"{name}: {base} with {round(100 * d.reinit)} % of its encoder filters re-initialised "
            f"({sum(map(len, chosen.values()))} filters in {len(chosen)} conv layers)")

    try:
        runs: dict[str, list[str]] = {}
        for n in todo:
            runs.setdefault(MEMBER_DEFS[n].run, []).append(n)
        for run, run_members in runs.items():
            trained = [n for n in run_members if MEMBER_DEFS[n].ladder_of is None]
            if trained:
                d0 = MEMBER_DEFS[trained[0]]
                rng, torch_seed = _run_seeds(seed, run)
                net = build_unet(torch_seed)
                run_info = {"run": run, "seed": seed, "torch_seed": torch_seed}
                snapshots: dict[int, list[str]] = {}
                for n in trained:
                    snapshots.setdefault(int(prof.steps[n]), []).append(n)
                say(f"run {run}: {d0.objective}, snapshots {sorted(snapshots)}")
                if d0.objective == "random":
                    for n in trained:
                        save_trained(n, encoder_weights(net), {"steps": 0, "seconds": 0.0, **_loss_summary([])}, run_info)
                else:
                    obj = OBJECTIVES[d0.objective](net, _bank_for(bank(d0.data), rng), rng, prof.batch, dev)
                    obj.to(dev)
                    _train_run(obj, snapshots, LR, lambda n, w, log, info=run_info: save_trained(n, w, log, info))
            for n in run_members:
                if MEMBER_DEFS[n].ladder_of is not None:
                    save_rung(n)
    finally:
        if threads is not None:
            torch.set_num_threads(old_threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn
    return [_member_from_entry(out_dir, entries[n], n not in todo) for n in names]


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.validation.zoo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per member + manifest.json)")
    p.add_argument("--profile", choices=sorted(ZOO_PROFILES), default="v2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--members", default=None, help="comma-separated subset of members")
    p.add_argument("--device", default=None, help="cpu / cuda (default: the profile's)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for the build (1: bitwise repeatable)")
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
