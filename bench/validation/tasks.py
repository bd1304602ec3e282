"""Validation tasks as data: the JSON task spec (`TaskSpec`), its validation, and the deterministic
generator that turns a spec into train / test cases (`build_cases`).

A task is one JSON file under `bench/validation/tasks/`. In-distribution tasks (source `mni152`)
warp the MNI152 2009a template that ships with nilearn (as `worker.demo_zoo.make_volume`) and
derive labels (and, for pathology, image changes) from its probability maps; out-of-distribution
tasks come from the procedural phantoms of `bench.validation.phantoms`. Nothing is downloaded.

    python -m bench.validation.tasks            # validate the shipped specs, print a table
    python -m bench.validation.tasks --stats    # also build 4 + 4 cases each: grids, fractions, s/case

Schema documentation: docs/validation.md ("Task specs").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from scipy import ndimage

from bench.validation import phantoms
from worker.extract import CaseVolume

TASK_DIR = Path(__file__).resolve().parent / "tasks"
"""The tuning tasks of the benchmark (v2). Beside them: `reserve/` (tuning reserves), `held_out/`
(sealed held-out tasks) with `held_out/reserve/`, and `v1/` (the specs of the first benchmark, kept
with its committed results)."""
RESERVE_DIR = TASK_DIR / "reserve"
HELD_OUT_DIR = TASK_DIR / "held_out"
HELD_OUT_RESERVE_DIR = HELD_OUT_DIR / "reserve"
GENERATOR_VERSION = 2  # bump when a recipe's output changes for the same spec (not part of spec_hash)
MAX_ATTEMPTS = 8  # a case missing a class is redrawn from rng([seed, split, i, attempt])
MNI_FOV_MM = (156.0, 192.0, 150.0)  # = worker.demo_zoo.FOV_MM: covers the template's brain

Range = tuple[float, float]
IntRange = tuple[int, int]


class TaskSpecError(ValueError):
    """A task spec that cannot be read or does not validate; the message names the file and field."""


# ----------------------------------------------------------------------------- schema pieces
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(v: Sequence[float], *, lo: float | None = None, hi: float | None = None) -> None:
    if v[0] > v[1]:
        raise ValueError(f"range must be [low, high] with low <= high, got {list(v)}")
    if lo is not None and v[0] < lo:
        raise ValueError(f"range {list(v)} must lie at or above {lo}")
    if hi is not None and v[1] > hi:
        raise ValueError(f"range {list(v)} must lie at or below {hi}")


class Augmentation(_Strict):
    """Random geometric and intensity augmentation of each case (identity values turn it off).

    Geometry: rotation up to `rotation_deg` about each axis, per-axis scale drawn in `scale`,
    shift up to `shift_mm` per axis, smooth elastic displacement of std `elastic_mm`. Intensity:
    gamma drawn in `gamma`, multiplicative bias field exp(N(0, bias_amplitude)) at coarse control
    points, additive noise of std drawn in `noise` (units of the source's reference scale: the
    template T1 in [0, 1]; 1000 HU for the abdomen phantom; 1.0 for the cardiac phantom).
    """

    rotation_deg: float = Field(ge=0.0, le=180.0)
    scale: Range
    shift_mm: float = Field(ge=0.0)
    elastic_mm: float = Field(ge=0.0)
    gamma: Range
    bias_amplitude: float = Field(ge=0.0, le=2.0)
    noise: Range

    @field_validator("scale", "gamma")
    @classmethod
    def _positive_range(cls, v: Range) -> Range:
        _check_range(v, lo=1e-3)
        return v

    @field_validator("noise")
    @classmethod
    def _noise_range(cls, v: Range) -> Range:
        _check_range(v, lo=0.0)
        return v


# `make_volume`'s augmentation (worker/demo_zoo.py) for the template; the phantoms' own defaults.
MNI_AUG: dict[str, Any] = {
    "rotation_deg": 10.0,
    "scale": (0.92, 1.08),
    "shift_mm": 6.0,
    "elastic_mm": 3.0,
    "gamma": (0.7, 1.5),
    "bias_amplitude": 0.15,
    "noise": (0.01, 0.04),
}
SOURCE_AUG: dict[str, dict[str, Any]] = {
    "mni152": MNI_AUG,
    "abdomen_phantom": phantoms.ABDOMEN_AUG,
    "cardiac_phantom": phantoms.CARDIAC_AUG,
}


# ----------------------------------------------------------------------------- recipe parameters
class NoParams(_Strict):
    """This recipe takes no parameters."""


class BrainMaskParams(_Strict):
    threshold: float = Field(0.5, gt=0.0, lt=2.0, description="brain where warped GM + WM probability > threshold")


class LesionParams(_Strict):
    """Lesion foci; the defaults are 2-5 voxels across at 3 mm (3-10 mm foci were 1-3 voxels, and no
    encoder learnt them in 120 fine-tuning steps: Dice 0 for every model and seed tried)."""

    count: IntRange = (4, 10)
    diameter_mm: Range = (6.0, 15.0)
    elongation: float = Field(1.5, ge=1.0, le=4.0)
    contrast: Range = (0.35, 0.7)

    @field_validator("count")
    @classmethod
    def _count(cls, v: IntRange) -> IntRange:
        _check_range(v, lo=1, hi=200)
        return v

    @field_validator("diameter_mm")
    @classmethod
    def _diam(cls, v: Range) -> Range:
        _check_range(v, lo=0.5, hi=60.0)
        return v

    @field_validator("contrast")
    @classmethod
    def _contrast(cls, v: Range) -> Range:
        _check_range(v, lo=-1.0, hi=5.0)
        return v


class TumourParams(_Strict):
    oedema_radius_mm: Range = (15.0, 28.0)
    core_fraction: Range = (0.35, 0.6)
    necrosis_fraction: Range = (0.3, 0.6)
    irregularity: float = Field(0.15, ge=0.0, le=0.6)
    min_depth_mm: float = Field(12.0, ge=0.0)
    oedema_drop: Range = (0.15, 0.3)
    enhancement: Range = (0.1, 0.3)
    necrosis_level: float = Field(0.35, ge=0.0, le=2.0)

    @field_validator("oedema_radius_mm")
    @classmethod
    def _radius(cls, v: Range) -> Range:
        _check_range(v, lo=2.0, hi=80.0)
        return v

    @field_validator("core_fraction", "necrosis_fraction", "oedema_drop")
    @classmethod
    def _fraction(cls, v: Range) -> Range:
        _check_range(v, lo=0.0, hi=0.95)
        return v

    @field_validator("enhancement")
    @classmethod
    def _enh(cls, v: Range) -> Range:
        _check_range(v, lo=-1.0, hi=3.0)
        return v


class VesselParams(_Strict):
    count: IntRange = (3, 7)
    radius_mm: Range = (2.0, 4.0)
    length_mm: Range = (60.0, 160.0)
    curvature: float = Field(0.12, ge=0.0, le=2.0)
    contrast: Range = (0.4, 0.7)
    min_label_radius_vox: float = Field(0.75, ge=0.0, le=3.0)

    @field_validator("count")
    @classmethod
    def _count(cls, v: IntRange) -> IntRange:
        _check_range(v, lo=1, hi=100)
        return v

    @field_validator("radius_mm")
    @classmethod
    def _radius(cls, v: Range) -> Range:
        _check_range(v, lo=0.25, hi=20.0)
        return v

    @field_validator("length_mm")
    @classmethod
    def _length(cls, v: Range) -> Range:
        _check_range(v, lo=2.0, hi=1000.0)
        return v

    @field_validator("contrast")
    @classmethod
    def _contrast(cls, v: Range) -> Range:
        _check_range(v, lo=-1.0, hi=5.0)
        return v


class HemisphereParams(_Strict):
    midline_mm: float = Field(0.0, ge=-40.0, le=40.0, description="template x (mm, RAS) separating left (<) from right")


class HemisphereMaskParams(_Strict):
    side: Literal["left", "right"] = "left"
    midline_mm: float = Field(0.0, ge=-40.0, le=40.0, description="template x (mm, RAS) separating left (<) from right")


class AnteriorMaskParams(_Strict):
    y_split_mm: float = Field(-24.0, ge=-90.0, le=60.0, description="template y (mm, RAS): brain anterior of it is labelled")


class OctantParams(_Strict):
    """Splits in template mm (RAS); the defaults are the template brain's medians (y -24, z 10) and its midline."""

    x_split_mm: float = Field(0.0, ge=-40.0, le=40.0)
    y_split_mm: float = Field(-24.0, ge=-90.0, le=60.0)
    z_split_mm: float = Field(10.0, ge=-60.0, le=70.0)


class LobeParams(_Strict):
    """Coarse lobes by template coordinates (mm, RAS): frontal anterior of `frontal_y_mm`; behind it,
    parieto-occipital at or above `temporal_z_mm`, temporal / inferior below; split left / right."""

    midline_mm: float = Field(0.0, ge=-40.0, le=40.0)
    frontal_y_mm: float = Field(-12.0, ge=-90.0, le=60.0)
    temporal_z_mm: float = Field(0.0, ge=-60.0, le=70.0)


# ----------------------------------------------------------------------------- the spec
Regime = Literal["ID", "OOD"]
Source = Literal["mni152", "abdomen_phantom", "cardiac_phantom"]


class IntensitySpec(_Strict):
    """How the models normalise this task's images, replacing their own intensity normalisation
    (spacing and window size stay the model's): a CT task is windowed as nnU-Net windows CT, not
    z-scored, which would leave 10-30 HU organ contrasts at a few hundredths of a unit."""

    normalization: Literal["zscore", "ct", "none"]
    ct_clip: tuple[float, float] | None = None
    ct_mean: float | None = None
    ct_std: float | None = None

    @model_validator(mode="after")
    def _ct(self) -> "IntensitySpec":
        from models_registry.specs import PreprocessingSpec

        PreprocessingSpec(spacing=(1.0, 1.0, 1.0), patch_size=(8, 8, 8), **self.model_dump())  # the registry's own rules
        return self


class TaskSpec(_Strict):
    """One validation task: where its images come from, how labels are made, how many cases.

    Fully-defaulted, it is hashed (`spec_hash`); `labels` fixes K (= number of foreground ids).
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    title: str = Field(min_length=1)
    description: str = ""
    regime: Regime
    held_out: bool = False
    source: Source
    label_recipe: str
    recipe_params: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, int]
    spacing: tuple[float, float, float] = (3.0, 3.0, 3.0)
    n_train: int = Field(4, ge=1, le=1000)
    n_test: int = Field(4, ge=1, le=1000)
    augmentation: Augmentation
    finetune: dict[str, Any] = Field(default_factory=dict)
    intensity: IntensitySpec | None = None
    seed: int = Field(ge=0, lt=2**63)

    @model_validator(mode="before")
    @classmethod
    def _fill_augmentation(cls, data: Any) -> Any:
        """Missing augmentation keys take the source's defaults (make_volume's for mni152)."""
        if isinstance(data, Mapping):
            src = data.get("source")
            aug = data.get("augmentation", {})
            if isinstance(src, str) and src in SOURCE_AUG and isinstance(aug, Mapping):
                data = {**data, "augmentation": {**SOURCE_AUG[src], **aug}}
        return data

    @field_validator("spacing")
    @classmethod
    def _spacing(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(not (0.25 <= s <= 20.0) for s in v):
            raise ValueError(f"each spacing must be in [0.25, 20] mm, got {list(v)}")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, int]) -> dict[str, int]:
        if v.get("background") != 0:
            raise ValueError('labels must map "background" to 0')
        ids = sorted(v.values())
        if ids != list(range(len(ids))):
            raise ValueError(f"label ids must be unique and contiguous 0..K, got {ids}")
        if len(ids) < 2:
            raise ValueError("labels need at least one foreground class (K >= 1)")
        return dict(sorted(v.items(), key=lambda kv: kv[1]))

    @model_validator(mode="after")
    def _recipe(self) -> TaskSpec:
        recipe = RECIPES.get(self.label_recipe)
        if recipe is None:
            raise ValueError(f"label_recipe: unknown recipe {self.label_recipe!r}; known: {sorted(RECIPES)}")
        if recipe.source != self.source:
            raise ValueError(f"label_recipe: recipe {self.label_recipe!r} needs source {recipe.source!r}, spec has {self.source!r}")
        if self.labels != recipe.labels:
            raise ValueError(
                f"labels: recipe {self.label_recipe!r} produces {recipe.labels} (K = {len(recipe.labels) - 1}), "
                f"spec declares {self.labels} (K = {len(self.labels) - 1})"
            )
        try:
            params = recipe.params.model_validate(self.recipe_params).model_dump(mode="json")
        except ValidationError as e:
            raise ValueError(f"recipe_params ({self.label_recipe}): {_format_errors(e)}") from None
        object.__setattr__(self, "recipe_params", params)  # fully defaulted
        return self

    # ------------------------------------------------------------------ convenience
    @property
    def k(self) -> int:
        """Number of foreground classes."""
        return len(self.labels) - 1

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, origin: str = "task spec") -> TaskSpec:
        """Validate a mapping; errors become `TaskSpecError` naming `origin` and each bad field."""
        if not isinstance(data, Mapping):
            raise TaskSpecError(f"{origin}: a task spec must be a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as e:
            raise TaskSpecError(f"{origin}: {_format_errors(e)}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> TaskSpec:
        """Read and validate one JSON spec; its `name` must equal the file name without `.json`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise TaskSpecError(f"{path}: cannot read task spec: {e}") from None
        spec = cls.from_dict(data, origin=str(path))
        if spec.name != path.stem:
            raise TaskSpecError(f"{path}: field 'name' is {spec.name!r} but the file is named {path.name!r}")
        return spec

    def to_dict(self) -> dict[str, Any]:
        """The fully-defaulted spec as plain JSON types (`intensity` only when set)."""
        out = self.model_dump(mode="json")
        if out.get("intensity") is None:
            out.pop("intensity", None)
        return out

    def spec_hash(self) -> str:
        """sha256 of the canonical JSON (sorted keys, no spaces) of the fully-defaulted spec."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return hashlib.sha256(blob.encode()).hexdigest()


def _format_errors(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        elif err["type"] == "missing" and err["loc"] and isinstance(err["loc"][-1], int):
            parent = ".".join(str(x) for x in err["loc"][:-1])
            parts.append(f"field {parent!r}: too few items (item {err['loc'][-1]} missing)")
        elif err["type"] == "missing":
            parts.append(f"missing required field {loc!r}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"field {loc!r}: {msg}" if loc else msg)
    return "; ".join(parts)


# ----------------------------------------------------------------------------- generated cases
@dataclass
class TaskCases:
    """The cases of one task: train / test `CaseVolume`s, label names (incl. background) and K."""

    spec: TaskSpec
    spacing: tuple[float, float, float]
    train: list[CaseVolume]
    test: list[CaseVolume]
    label_names: dict[str, int]
    k: int
    seconds: float = 0.0
    attempts: dict[str, int] = field(default_factory=dict)  # case id -> attempts, only where > 1


def build_cases(
    spec: TaskSpec, *, n_train: int | None = None, n_test: int | None = None, spacing_scale: float = 1.0
) -> TaskCases:
    """Generate the train and test cases of `spec`, deterministically.

    Train case i comes from `np.random.default_rng([spec.seed, 0, i])`, test case i from
    `[spec.seed, 1, i]`, so fewer cases are a prefix of more. `spacing_scale` multiplies the spec
    spacing (0.5: voxels half as large, 8x as many; the anatomy is the same physical size). Every
    case holds every label id 0..K: a case that misses one is redrawn from
    `[seed, split, i, attempt]` (attempt = 1, 2, ...), and `RuntimeError` after `MAX_ATTEMPTS`.
    """
    if not (0.05 <= spacing_scale <= 10.0):
        raise ValueError(f"spacing_scale must be in [0.05, 10], got {spacing_scale}")
    n_train = spec.n_train if n_train is None else int(n_train)
    n_test = spec.n_test if n_test is None else int(n_test)
    if n_train < 0 or n_test < 0:
        raise ValueError("n_train and n_test must be >= 0")
    spacing = tuple(float(s) * float(spacing_scale) for s in spec.spacing)
    t0 = time.perf_counter()
    attempts: dict[str, int] = {}
    import torch

    out: dict[int, list[CaseVolume]] = {0: [], 1: []}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # multi-threaded CPU kernels round differently from run to run (measured: 7e-3 of 111)
    try:
        for split, n in ((0, n_train), (1, n_test)):
            for i in range(n):
                case, tries = _make_case(spec, spacing, split, i)  # type: ignore[arg-type]
                out[split].append(case)
                if tries > 1:
                    attempts[f"{'train' if split == 0 else 'test'}_{i}"] = tries
    finally:
        torch.set_num_threads(threads)
    return TaskCases(
        spec=spec,
        spacing=spacing,  # type: ignore[arg-type]
        train=out[0],
        test=out[1],
        label_names=dict(spec.labels),
        k=spec.k,
        seconds=time.perf_counter() - t0,
        attempts=attempts,
    )


def _make_case(spec: TaskSpec, spacing: tuple[float, float, float], split: int, i: int) -> tuple[CaseVolume, int]:
    recipe = RECIPES[spec.label_recipe]
    aug = spec.augmentation.model_dump()
    for attempt in range(MAX_ATTEMPTS):
        key = [spec.seed, split, i] if attempt == 0 else [spec.seed, split, i, attempt]
        img, lab = recipe.fn(np.random.default_rng(key), spacing, spec.recipe_params, aug)
        present = np.bincount(lab.ravel(), minlength=spec.k + 1)
        if lab.min() < 0 or len(present) > spec.k + 1:
            raise RuntimeError(f"recipe {spec.label_recipe!r} produced label ids outside 0..{spec.k}")
        if np.all(present > 0):
            return CaseVolume(image=img[None].astype(np.float32), label=lab.astype(np.int64), spacing=spacing), attempt + 1
    raise RuntimeError(f"task {spec.name!r}: case {split}/{i} misses a class after {MAX_ATTEMPTS} attempts")


# ----------------------------------------------------------------------------- mni152 source
def warp_template(rng: np.random.Generator, spacing: Sequence[float], aug: Mapping[str, Any]) -> dict[str, NDArray[np.float32]]:
    """The template resampled at `spacing` after a random affine + elastic warp, as `make_volume`.

    Returns float32 (X, Y, Z) maps: `t1` (template T1 in [0, 1]), `gm`, `wm` (probabilities) and
    `x_mm`, `y_mm`, `z_mm`, the template's RAS coordinates (mm) that each voxel was sampled from
    (left/right, posterior/anterior, inferior/superior in the template frame, before the warp). Draws the same values as `make_volume` does
    (rotation, scale, shift, elastic control points) for the same augmentation.
    """
    import torch
    import torch.nn.functional as F

    from worker.demo_zoo import load_template

    tpl = load_template()
    shape = [int(round(f / float(s))) for f, s in zip(MNI_FOV_MM, spacing)]
    axes = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * float(s) for n, s in zip(shape, spacing)]
    mm = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    lin = phantoms._rotation(rng, float(aug["rotation_deg"])) * rng.uniform(*aug["scale"], size=3)[None, :]
    mm = mm @ torch.from_numpy(lin.T.astype(np.float32))
    shift = float(aug["shift_mm"])
    mm = mm + torch.from_numpy(rng.uniform(-shift, shift, size=3).astype(np.float32))
    mm = mm + _torch_smooth_field(rng, shape, 5, float(aug["elastic_mm"])).permute(1, 2, 3, 0)
    src = mm + torch.from_numpy(tpl["centre_vox"].astype(np.float32))  # template voxels are 1 mm
    size = torch.tensor(tpl["t1"].shape, dtype=torch.float32)
    grid = (2 * src / (size - 1) - 1).flip(-1)[None]
    vols = torch.stack([tpl["t1"], tpl["gm"], tpl["wm"]])[None]
    warped = F.grid_sample(vols, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0].numpy()
    aff = np.asarray(tpl["affine"], dtype=np.float64)
    ras = src.numpy().astype(np.float64) @ aff[:3, :3].T + aff[:3, 3]
    x_mm, y_mm, z_mm = (ras[..., a].astype(np.float32) for a in range(3))
    return {"t1": warped[0].clip(min=0.0), "gm": warped[1], "wm": warped[2], "x_mm": x_mm, "y_mm": y_mm, "z_mm": z_mm}


def _torch_smooth_field(rng: np.random.Generator, shape: Sequence[int], ctrl: int, amp: float):  # type: ignore[no-untyped-def]
    """`worker.demo_zoo._smooth_field`: Gaussian control points on a ctrl^3 grid, upsampled trilinearly."""
    import torch
    import torch.nn.functional as F

    coarse = torch.from_numpy(rng.normal(0.0, amp, size=(1, 3, ctrl, ctrl, ctrl)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)[0]


def mni_intensity(rng: np.random.Generator, t1: NDArray[np.float32], aug: Mapping[str, Any]) -> NDArray[np.float32]:
    """`make_volume`'s intensity augmentation (gamma, bias field, noise), then x100."""
    img = np.clip(t1, 0.0, None).astype(np.float32)
    img = img ** np.float32(rng.uniform(*aug["gamma"]))
    img = img * np.exp(_torch_smooth_field(rng, img.shape, 3, float(aug["bias_amplitude"]))[0].numpy())
    img = img + rng.normal(0, rng.uniform(*aug["noise"]), size=img.shape).astype(np.float32)
    return (img * 100.0).astype(np.float32)


def tissue_labels(w: Mapping[str, NDArray[np.float32]]) -> NDArray[np.int64]:
    """0 background / 1 GM / 2 WM: argmax of the warped (background, GM, WM) probabilities."""
    bg = np.clip(1.0 - w["gm"] - w["wm"], 0.0, None)
    return np.argmax(np.stack([bg, w["gm"], w["wm"]]), axis=0).astype(np.int64)


def _mm_grid(shape: Sequence[int], spacing: Sequence[float]) -> list[NDArray[np.float64]]:
    return [np.arange(n) * float(s) for n, s in zip(shape, spacing)]


def _soft_blob(q: NDArray[np.float64], r_mm: float, h_mm: float) -> NDArray[np.float64]:
    """Partial-volume occupancy of a blob (q < 1 inside, radius r_mm) with a ramp one voxel wide."""
    return np.clip((1.0 - q) * r_mm / h_mm + 0.5, 0.0, 1.0)


def _recipe_tissue(rng: np.random.Generator, spacing: Sequence[float], params: Mapping[str, Any], aug: Mapping[str, Any]):  # type: ignore[no-untyped-def]
    w = warp_template(rng, spacing, aug)
    return mni_intensity(rng, w["t1"], aug), tissue_labels(w)


def _recipe_brain_mask(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    w = warp_template(rng, spacing, aug)
    lab = ((w["gm"] + w["wm"]) > float(params["threshold"])).astype(np.int64)
    return mni_intensity(rng, w["t1"], aug), lab


def _recipe_hemisphere(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    w = warp_template(rng, spacing, aug)
    tis = tissue_labels(w)
    right = w["x_mm"] >= float(params["midline_mm"])  # RAS: +x is the subject's right
    lab = np.where(tis > 0, tis + 2 * right.astype(np.int64), 0).astype(np.int64)
    return mni_intensity(rng, w["t1"], aug), lab


def _brain_tissue(w: Mapping[str, NDArray[np.float32]]) -> NDArray[np.bool_]:
    """Brain as the tissue labels see it (GM or WM wins the argmax)."""
    return tissue_labels(w) > 0


def _recipe_hemisphere_mask(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The brain tissue of one hemisphere (K = 1): local texture cannot tell which side."""
    w = warp_template(rng, spacing, aug)
    left = w["x_mm"] < float(params["midline_mm"])
    side = left if params["side"] == "left" else ~left
    return mni_intensity(rng, w["t1"], aug), (_brain_tissue(w) & side).astype(np.int64)


def _recipe_anterior_mask(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The brain tissue anterior of a coronal plane of the template (K = 1)."""
    w = warp_template(rng, spacing, aug)
    front = w["y_mm"] > float(params["y_split_mm"])
    return mni_intensity(rng, w["t1"], aug), (_brain_tissue(w) & front).astype(np.int64)


def _recipe_hemispheres(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """Left brain 1, right brain 2 (K = 2)."""
    w = warp_template(rng, spacing, aug)
    right = (w["x_mm"] >= float(params["midline_mm"])).astype(np.int64)
    return mni_intensity(rng, w["t1"], aug), np.where(_brain_tissue(w), 1 + right, 0).astype(np.int64)


def _recipe_octants(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """Brain tissue in eight parts by template side, front / back and top / bottom (K = 8):
    label 1 + 4 * right + 2 * posterior + inferior."""
    w = warp_template(rng, spacing, aug)
    right = (w["x_mm"] >= float(params["x_split_mm"])).astype(np.int64)
    post = (w["y_mm"] <= float(params["y_split_mm"])).astype(np.int64)
    inf = (w["z_mm"] < float(params["z_split_mm"])).astype(np.int64)
    lab = np.where(_brain_tissue(w), 1 + 4 * right + 2 * post + inf, 0)
    return mni_intensity(rng, w["t1"], aug), lab.astype(np.int64)


def _recipe_lobes(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """Brain tissue in six coarse lobes (K = 6): per side, frontal 1, parieto-occipital 2,
    temporal / inferior 3 (right side + 3)."""
    w = warp_template(rng, spacing, aug)
    right = (w["x_mm"] >= float(params["midline_mm"])).astype(np.int64)
    frontal = w["y_mm"] > float(params["frontal_y_mm"])
    upper = w["z_mm"] >= float(params["temporal_z_mm"])
    lobe = np.where(frontal, 1, np.where(upper, 2, 3))
    return mni_intensity(rng, w["t1"], aug), np.where(_brain_tissue(w), lobe + 3 * right, 0).astype(np.int64)


def _random_semi(rng: np.random.Generator, r: float, elongation: float) -> NDArray[np.float64]:
    """Semi-axes with geometric mean r and axis ratios up to `elongation`."""
    e = rng.uniform(-0.5, 0.5, size=3) * math.log(max(elongation, 1.0))
    e -= e.mean()
    return r * np.exp(e)


def _box(
    c_vox: NDArray[np.float64], half_mm: float, spacing: Sequence[float], shape: Sequence[int]
) -> tuple[tuple[slice, ...], NDArray[np.float64]]:
    """The voxel box within `half_mm` of centre `c_vox` (voxel units): slices and mm offsets (.., 3)."""
    sp = np.asarray(spacing, dtype=np.float64)
    lo = np.maximum(np.floor(c_vox - half_mm / sp).astype(int), 0)
    hi = np.minimum(np.ceil(c_vox + half_mm / sp).astype(int) + 1, np.asarray(shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    g = np.stack(np.meshgrid(*[(np.arange(a, b) - c) * s for a, b, c, s in zip(lo, hi, c_vox, sp)], indexing="ij"), -1)
    return sl, g


def _q(g: NDArray[np.float64], semi: NDArray[np.float64], rot: NDArray[np.float64]) -> NDArray[np.float64]:
    """Normalised ellipsoid radius (< 1 inside) of mm offsets `g` for semi-axes `semi` in frame `rot`."""
    return np.sqrt((((g @ rot) / semi) ** 2).sum(-1))


def _recipe_lesions(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """Small hyperintense ellipsoidal foci centred in white matter (at least a radius deep)."""
    w = warp_template(rng, spacing, aug)
    tis = tissue_labels(w)
    shape = tis.shape
    sp = np.asarray(spacing, dtype=np.float64)
    h = float(sp.mean())
    wm = tis == 2
    depth = ndimage.distance_transform_edt(wm, sampling=sp)
    wm_level = float(w["t1"][wm].mean()) if wm.any() else 0.87
    n = int(rng.integers(params["count"][0], params["count"][1] + 1))
    lab = np.zeros(shape, dtype=np.int64)
    soft = np.zeros(shape, dtype=np.float64)
    boost = np.zeros(shape, dtype=np.float64)
    for _ in range(n):
        r = float(rng.uniform(*params["diameter_mm"])) / 2.0
        semi = _random_semi(rng, r, float(params["elongation"]))
        rot = phantoms._rotation(rng, 180.0)
        contrast = float(rng.uniform(*params["contrast"]))
        cand = np.argwhere(depth >= min(r, float(depth.max())))
        c_vox = cand[int(rng.integers(len(cand)))]
        c = c_vox + rng.uniform(-0.5, 0.5, size=3)
        sl, g = _box(c, float(semi.max()) + 2 * h, sp, shape)
        q = _q(g, semi, rot)
        s = _soft_blob(q, float(semi.min()), h)
        soft[sl] = np.maximum(soft[sl], s)
        boost[sl] = np.maximum(boost[sl], s * contrast)
        lab[sl][q <= 1.0] = 1
        lab[tuple(c_vox)] = 1  # every lesion shows in at least its centre voxel
    t1 = w["t1"] + (boost * wm_level).astype(np.float32)
    return mni_intensity(rng, t1, aug), lab


def _recipe_tumour(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """One tumour: core (enhancing rim + necrotic centre, label 1) inside irregular oedema (label 2)."""
    w = warp_template(rng, spacing, aug)
    shape = w["t1"].shape
    sp = np.asarray(spacing, dtype=np.float64)
    h = float(sp.mean())
    brain_p = np.clip(w["gm"] + w["wm"], 0.0, 1.0)
    brain = brain_p > 0.5
    depth = ndimage.distance_transform_edt(brain, sampling=sp)
    wm = tissue_labels(w) == 2
    wm_level = float(w["t1"][wm].mean()) if wm.any() else 0.87

    r_oed = float(rng.uniform(*params["oedema_radius_mm"]))
    semi_o = _random_semi(rng, r_oed, 1.4)
    rot_o = phantoms._rotation(rng, 180.0)
    r_core = r_oed * float(rng.uniform(*params["core_fraction"]))
    semi_c = _random_semi(rng, r_core, 1.3)
    rot_c = phantoms._rotation(rng, 180.0)
    off_dir = rng.normal(size=3)
    off = off_dir / (np.linalg.norm(off_dir) + 1e-12) * rng.uniform(0.0, 0.35) * (r_oed - r_core)
    nec = float(rng.uniform(*params["necrosis_fraction"]))
    drop = float(rng.uniform(*params["oedema_drop"]))
    enh = float(rng.uniform(*params["enhancement"]))
    fields = phantoms.smooth_noise(rng, phantoms.grid_axes(MNI_FOV_MM, spacing), MNI_FOV_MM, 12.0, channels=2)
    cand = np.argwhere(depth >= min(float(params["min_depth_mm"]), float(depth.max())))
    c = cand[int(rng.integers(len(cand)))] + rng.uniform(-0.5, 0.5, size=3)

    irr = float(params["irregularity"])
    reach = 1.0 / max(1.0 - 3.0 * irr, 0.1)  # q * (1 + irr * noise) < 1 needs q < reach (|noise| < 3)
    sl, g = _box(c, float(semi_o.max()) * reach + 2 * h, sp, shape)
    q_o = _q(g, semi_o, rot_o) * np.maximum(1.0 + irr * fields[0][sl], 1.0 / reach)
    q_c = _q(g - off, semi_c, rot_c) * np.maximum(1.0 + irr * fields[1][sl], 1.0 / reach)
    b = brain_p[sl]
    s_o = _soft_blob(q_o, float(semi_o.min()), h) * b
    s_c = _soft_blob(q_c, float(semi_c.min()), h) * b
    s_n = _soft_blob(q_c / max(nec, 1e-3), float(semi_c.min()) * nec, h) * b
    t1 = w["t1"].astype(np.float64).copy()
    t = t1[sl] * (1.0 - drop * s_o)
    t = t * (1.0 - s_c) + s_c * (1.0 + enh) * wm_level
    t = t * (1.0 - s_n) + s_n * float(params["necrosis_level"]) * wm_level
    t1[sl] = t
    lab = np.zeros(shape, dtype=np.int64)
    core = (q_c <= 1.0) & brain[sl]
    oed = (q_o <= 1.0) & brain[sl] & ~core
    box = np.zeros(q_o.shape, dtype=np.int64)
    box[oed] = 2
    box[core] = 1
    lab[sl] = box
    return mni_intensity(rng, t1.astype(np.float32), aug), lab


def _recipe_vessels(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """Thin bright tubes along smooth random curves (1 mm steps) that stay inside the brain."""
    w = warp_template(rng, spacing, aug)
    shape = np.asarray(w["t1"].shape)
    sp = np.asarray(spacing, dtype=np.float64)
    h = float(sp.mean())
    brain = (w["gm"] + w["wm"]) > 0.5
    wm = tissue_labels(w) == 2
    wm_level = float(w["t1"][wm].mean()) if wm.any() else 0.87
    depth = ndimage.distance_transform_edt(brain, sampling=sp)
    starts = np.argwhere(depth >= min(8.0, float(depth.max())))

    def inside(p_mm: NDArray[np.float64]) -> bool:
        v = np.round(p_mm / sp).astype(int)
        return bool(np.all(v >= 0) and np.all(v < shape) and brain[tuple(v)])

    n = int(rng.integers(params["count"][0], params["count"][1] + 1))
    lab = np.zeros(tuple(shape), dtype=np.int64)
    boost = np.zeros(tuple(shape), dtype=np.float64)
    r_min_label = float(params["min_label_radius_vox"]) * float(sp.max())
    for _ in range(n):
        r = float(rng.uniform(*params["radius_mm"]))
        length = float(rng.uniform(*params["length_mm"]))
        contrast = float(rng.uniform(*params["contrast"]))
        p0 = (starts[int(rng.integers(len(starts)))] + rng.uniform(-0.5, 0.5, size=3)) * sp
        d0 = rng.normal(size=3)
        d0 /= np.linalg.norm(d0) + 1e-12
        steps = int(round(length / 2.0))
        kicks = rng.normal(size=(2, steps, 3)) * float(params["curvature"])
        pts = [p0]
        for half, sign in ((0, 1.0), (1, -1.0)):
            p, d, seg = p0.copy(), sign * d0, []
            for s in range(steps):
                d = d + kicks[half, s]
                d /= np.linalg.norm(d) + 1e-12
                p = p + d  # 1 mm
                if not inside(p):
                    break
                seg.append(p)
            pts = pts + seg if half == 0 else seg[::-1] + pts
        P = np.asarray(pts)
        r_lab = max(r, r_min_label)
        dist = np.full(tuple(shape), np.inf)
        pad = max(r_lab, r) + 2 * h
        segs = zip(P[:-1], P[1:]) if len(P) > 1 else [(P[0], P[0])]
        for a, b in segs:
            lo = np.maximum(np.floor((np.minimum(a, b) - pad) / sp).astype(int), 0)
            hi = np.minimum(np.ceil((np.maximum(a, b) + pad) / sp).astype(int) + 1, shape)
            if np.any(hi <= lo):
                continue
            g = np.stack(np.meshgrid(*[np.arange(l0, h0) * s for l0, h0, s in zip(lo, hi, sp)], indexing="ij"), -1)
            ab = b - a
            t = np.clip(((g - a) @ ab) / max(float(ab @ ab), 1e-12), 0.0, 1.0)
            dd = np.linalg.norm(g - (a + t[..., None] * ab), axis=-1)
            sl = tuple(slice(int(l0), int(h0)) for l0, h0 in zip(lo, hi))
            dist[sl] = np.minimum(dist[sl], dd)
        near = np.isfinite(dist)
        s_img = np.zeros(tuple(shape))
        s_img[near] = np.clip((r - dist[near]) / h + 0.5, 0.0, 1.0)
        boost = np.maximum(boost, s_img * contrast)
        lab[dist <= r_lab] = 1
    t1 = w["t1"] + (boost * wm_level).astype(np.float32)
    return mni_intensity(rng, t1, aug), lab


def _recipe_abdomen(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    return phantoms.abdomen_ct(rng, spacing, True, aug=aug)


def _recipe_cardiac(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    return phantoms.cardiac_cine(rng, spacing, True, aug=aug)


def _with_structures(phantom, first_id: int, names: Sequence[str], rng, spacing, aug):  # type: ignore[no-untyped-def]
    """A phantom's labels plus some of its unlabelled structures as label ids `first_id`, `first_id`
    + 1, ... in order (the phantom's own labels win where they overlap)."""
    masks: dict[str, NDArray[np.bool_]] = {}
    img, lab = phantom(rng, spacing, True, aug=aug, structures=masks)
    out = lab.copy()
    for i, name in enumerate(names, start=first_id):
        out[(lab == 0) & masks[name]] = i
    return img, out


def _recipe_thorax(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The cardiac phantom's heart labels plus three structures around it (K = 6): lungs 4, liver 5,
    descending aorta 6 (the heart labels win where they overlap)."""
    return _with_structures(phantoms.cardiac_cine, len(phantoms.CARDIAC_LABELS), ("lungs", "liver", "descending_aorta"), rng, spacing, aug)


def _recipe_ct_structures(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The abdomen phantom's organs plus three structures (K = 6): vertebral bodies 4, paraspinal
    muscles 5, aorta 6 (organ labels win where they overlap)."""
    return _with_structures(phantoms.abdomen_ct, len(phantoms.ABDOMEN_LABELS), ("vertebrae", "paraspinal_muscles", "aorta"), rng, spacing, aug)


def _recipe_ct_spine(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The abdomen phantom's vertebral bodies 1 and paraspinal muscles 2 (K = 2), organs as background."""
    masks: dict[str, NDArray[np.bool_]] = {}
    img, _ = phantoms.abdomen_ct(rng, spacing, True, aug=aug, structures=masks)
    out = np.zeros(img.shape, dtype=np.int64)
    out[masks["vertebrae"]] = 1
    out[masks["paraspinal_muscles"]] = 2
    return img, out


def _recipe_white_matter(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """White matter alone (K = 1)."""
    w = warp_template(rng, spacing, aug)
    return mni_intensity(rng, w["t1"], aug), (tissue_labels(w) == 2).astype(np.int64)


def _recipe_grey_matter(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """Grey matter alone (K = 1)."""
    w = warp_template(rng, spacing, aug)
    return mni_intensity(rng, w["t1"], aug), (tissue_labels(w) == 1).astype(np.int64)


def _recipe_hemisphere_wm(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """White matter by hemisphere: left 1, right 2 (K = 2)."""
    w = warp_template(rng, spacing, aug)
    right = (w["x_mm"] >= float(params["midline_mm"])).astype(np.int64)
    return mni_intensity(rng, w["t1"], aug), np.where(tissue_labels(w) == 2, 1 + right, 0).astype(np.int64)


def _recipe_liver(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The abdomen phantom with the liver as the only label (K = 1)."""
    img, lab = phantoms.abdomen_ct(rng, spacing, True, aug=aug)
    return img, (lab == phantoms.ABDOMEN_LABELS["liver"]).astype(np.int64)


def _recipe_cardiac_lv(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The cardiac phantom with the whole left ventricle (cavity and myocardium) as one label (K = 1)."""
    img, lab = phantoms.cardiac_cine(rng, spacing, True, aug=aug)
    lv = (lab == phantoms.CARDIAC_LABELS["lv_cavity"]) | (lab == phantoms.CARDIAC_LABELS["lv_myocardium"])
    return img, lv.astype(np.int64)


def _recipe_cardiac_cavities(rng, spacing, params, aug):  # type: ignore[no-untyped-def]
    """The cardiac phantom's blood pools: LV cavity 1, RV cavity 2, myocardium as background (K = 2)."""
    img, lab = phantoms.cardiac_cine(rng, spacing, True, aug=aug)
    out = np.zeros_like(lab)
    out[lab == phantoms.CARDIAC_LABELS["lv_cavity"]] = 1
    out[lab == phantoms.CARDIAC_LABELS["rv_cavity"]] = 2
    return img, out


@dataclass(frozen=True)
class Recipe:
    """A label recipe: the source it needs, the labels it produces, its parameters and generator."""

    source: str
    labels: dict[str, int]
    params: type[BaseModel]
    fn: Callable[..., tuple[NDArray[np.float32], NDArray[np.int64]]]


RECIPES: dict[str, Recipe] = {
    "tissue": Recipe("mni152", {"background": 0, "grey_matter": 1, "white_matter": 2}, NoParams, _recipe_tissue),
    "brain_mask": Recipe("mni152", {"background": 0, "brain": 1}, BrainMaskParams, _recipe_brain_mask),
    "lesions": Recipe("mni152", {"background": 0, "lesion": 1}, LesionParams, _recipe_lesions),
    "tumour": Recipe("mni152", {"background": 0, "tumour_core": 1, "oedema": 2}, TumourParams, _recipe_tumour),
    "vessels": Recipe("mni152", {"background": 0, "vessel": 1}, VesselParams, _recipe_vessels),
    "hemisphere_tissue": Recipe(
        "mni152",
        {"background": 0, "left_grey_matter": 1, "left_white_matter": 2, "right_grey_matter": 3, "right_white_matter": 4},
        HemisphereParams,
        _recipe_hemisphere,
    ),
    "abdomen": Recipe("abdomen_phantom", dict(phantoms.ABDOMEN_LABELS), NoParams, _recipe_abdomen),
    "cardiac": Recipe("cardiac_phantom", dict(phantoms.CARDIAC_LABELS), NoParams, _recipe_cardiac),
    "hemisphere_mask": Recipe("mni152", {"background": 0, "hemisphere": 1}, HemisphereMaskParams, _recipe_hemisphere_mask),
    "anterior_mask": Recipe("mni152", {"background": 0, "anterior_brain": 1}, AnteriorMaskParams, _recipe_anterior_mask),
    "hemispheres": Recipe("mni152", {"background": 0, "left_brain": 1, "right_brain": 2}, HemisphereParams, _recipe_hemispheres),
    "octants": Recipe(
        "mni152",
        {"background": 0, **{f"{lr}_{ap}_{si}": 1 + 4 * i + 2 * j + k
                             for i, lr in enumerate(("left", "right")) for j, ap in enumerate(("anterior", "posterior"))
                             for k, si in enumerate(("superior", "inferior"))}},
        OctantParams,
        _recipe_octants,
    ),
    "lobes": Recipe(
        "mni152",
        {"background": 0, **{f"{lr}_{lobe}": 1 + 3 * i + j for i, lr in enumerate(("left", "right"))
                             for j, lobe in enumerate(("frontal", "parieto_occipital", "temporal_inferior"))}},
        LobeParams,
        _recipe_lobes,
    ),
    "liver": Recipe("abdomen_phantom", {"background": 0, "liver": 1}, NoParams, _recipe_liver),
    "thorax": Recipe("cardiac_phantom", {**phantoms.CARDIAC_LABELS, "lungs": 4, "liver": 5, "descending_aorta": 6}, NoParams, _recipe_thorax),
    "ct_structures": Recipe("abdomen_phantom", {**phantoms.ABDOMEN_LABELS, "vertebral_bodies": 4, "paraspinal_muscles": 5, "aorta": 6},
                            NoParams, _recipe_ct_structures),
    "ct_spine": Recipe("abdomen_phantom", {"background": 0, "vertebral_bodies": 1, "paraspinal_muscles": 2}, NoParams, _recipe_ct_spine),
    "white_matter": Recipe("mni152", {"background": 0, "white_matter": 1}, NoParams, _recipe_white_matter),
    "grey_matter": Recipe("mni152", {"background": 0, "grey_matter": 1}, NoParams, _recipe_grey_matter),
    "hemisphere_wm": Recipe("mni152", {"background": 0, "left_white_matter": 1, "right_white_matter": 2}, HemisphereParams,
                            _recipe_hemisphere_wm),
    "cardiac_lv": Recipe("cardiac_phantom", {"background": 0, "left_ventricle": 1}, NoParams, _recipe_cardiac_lv),
    "cardiac_cavities": Recipe("cardiac_phantom", {"background": 0, "lv_cavity": 1, "rv_cavity": 2}, NoParams, _recipe_cardiac_cavities),
}


# ----------------------------------------------------------------------------- files
def list_task_files(directory: str | Path = TASK_DIR) -> list[Path]:
    """The `*.json` task specs in `directory`, sorted by name."""
    d = Path(directory)
    if not d.is_dir():
        raise TaskSpecError(f"{d}: not a directory of task specs")
    return sorted(p for p in d.glob("*.json") if p.is_file())


def load_tasks(paths: Iterable[str | Path] | None = None) -> list[TaskSpec]:
    """Load and validate specs (files, or directories of `*.json`; default: the shipped tasks).

    Names and seeds must be unique across the loaded set (`TaskSpecError` otherwise).
    """
    files: list[Path] = []
    for p in [TASK_DIR] if paths is None else paths:
        p = Path(p)
        files.extend(list_task_files(p) if p.is_dir() else [p])
    specs = [TaskSpec.from_file(f) for f in files]
    seen_name: dict[str, Path] = {}
    seen_seed: dict[int, Path] = {}
    for f, s in zip(files, specs):
        if s.name in seen_name:
            raise TaskSpecError(f"{f}: task name {s.name!r} already used by {seen_name[s.name]}")
        if s.seed in seen_seed:
            raise TaskSpecError(f"{f}: seed {s.seed} already used by {seen_seed[s.seed]} (seeds must be distinct per task)")
        seen_name[s.name], seen_seed[s.seed] = f, f
    return specs


# ----------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Validate the validation-benchmark task specs (and build their cases).")
    ap.add_argument("paths", nargs="*", type=Path, help="spec files or directories (default: the shipped tasks)")
    ap.add_argument("--stats", action="store_true", help="build the cases and report grids, class fractions and seconds per case")
    ap.add_argument("--n", type=int, default=None, help="with --stats: cases per split (default: the spec's)")
    ap.add_argument("--spacing-scale", type=float, default=1.0)
    args = ap.parse_args(argv)
    specs = load_tasks(args.paths or None)
    rows = []
    for s in specs:
        row: dict[str, Any] = {"name": s.name, "regime": s.regime, "held_out": s.held_out, "source": s.source, "k": s.k, "hash": s.spec_hash()[:12]}
        if args.stats:
            tc = build_cases(s, n_train=args.n, n_test=args.n, spacing_scale=args.spacing_scale)
            cases = tc.train + tc.test
            fr = np.mean([np.bincount(c.label.ravel(), minlength=s.k + 1) / c.label.size for c in cases], axis=0)
            row.update(
                grid=list(cases[0].label.shape),
                fractions={name: round(float(fr[i]), 5) for name, i in s.labels.items() if i > 0},
                s_per_case=round(tc.seconds / len(cases), 3),
                redraws=tc.attempts,
            )
        rows.append(row)
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
