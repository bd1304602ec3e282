"""The demo zoo: small ResEnc encoders pretrained with different self-supervised objectives on
volumes made from the MNI152 T1 template that ships inside nilearn, written as nnssl checkpoints;
and a demo pilot set (grey / white matter) in nnU-Net layout. Nothing is downloaded.

Objectives: masked reconstruction (MAE-like), Models-Genesis-style restoration, contrastive
(SimCLR, NT-Xent on pooled deepest features), and one encoder left at random initialisation.
Step counts are fixed (deterministic for a seed); `budget_s` only caps the wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from models_registry.catalog import DEMO_PATCH, DEMO_SPACING, demo_arch_kwargs, get_entry, resolve_spec
from models_registry.specs import ModelSpec

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
FOV_MM = (156.0, 192.0, 150.0)  # covers the brain of the template
CROP = 32
BANK_SIZE = 10
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}
DEFAULT_STEPS = 120
DEFAULT_BUDGET_S = 150.0
PILOT_SPACINGS = ((3.0, 3.0, 3.0), (2.5, 2.5, 2.5), (3.0, 3.0, 3.0), (2.5, 3.0, 2.5))


# ----------------------------------------------------------------------------- template volumes
def template_dir() -> Path:
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data"


@lru_cache(maxsize=1)
def load_template() -> dict[str, Any]:
    """T1, GM and WM probability maps of the MNI152 2009a template (1 mm) from nilearn's package data."""
    import nibabel as nib

    out: dict[str, Any] = {}
    for key, name in TEMPLATE_FILES.items():
        path = template_dir() / name
        if not path.is_file():
            raise RuntimeError(f"nilearn's packaged template file {name} is missing; reinstall nilearn (nothing is downloaded)")
        img = nib.load(path)
        out[key] = torch.from_numpy(np.asarray(img.dataobj, dtype=np.float32) / 255.0)
        out["affine"] = img.affine
    brain = (out["gm"] + out["wm"]) > 0.2
    idx = torch.nonzero(brain)
    out["centre_vox"] = ((idx.min(0).values + idx.max(0).values).float() / 2).numpy()
    return out


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], ctrl: int, amp: float) -> torch.Tensor:
    """A smooth random field (3, X, Y, Z): Gaussian control points on a ctrl^3 grid, upsampled."""
    coarse = torch.from_numpy(rng.normal(0.0, amp, size=(1, 3, ctrl, ctrl, ctrl)).astype(np.float32))
    return F.interpolate(coarse, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=True)[0]


def _rotation(rng: np.random.Generator, max_deg: float) -> NDArray[np.float64]:
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def make_volume(
    rng: np.random.Generator, spacing: Sequence[float], augment: bool = True
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """One brain volume at `spacing` (mm): (T1 image (X, Y, Z), labels 0/1/2 = background/GM/WM).

    Augmentation: random affine (rotation 10 deg, scale 0.92-1.08, shift 6 mm), elastic warp
    (smooth displacement, ~3 mm), intensity (gamma, multiplicative bias field, noise).
    """
    tpl = load_template()
    shape = [int(round(f / s)) for f, s in zip(FOV_MM, spacing)]
    axes = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * float(s) for n, s in zip(shape, spacing)]
    mm = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3) offsets from the FOV centre
    if augment:
        lin = _rotation(rng, 10.0) * rng.uniform(0.92, 1.08, size=3)[None, :]
        mm = mm @ torch.from_numpy(lin.T.astype(np.float32))
        mm = mm + torch.from_numpy(rng.uniform(-6, 6, size=3).astype(np.float32))
        mm = mm + _smooth_field(rng, shape, 5, 3.0).permute(1, 2, 3, 0)
    src = mm + torch.from_numpy(tpl["centre_vox"].astype(np.float32))  # template voxels are 1 mm
    size = torch.tensor(tpl["t1"].shape, dtype=torch.float32)
    grid = (2 * src / (size - 1) - 1).flip(-1)[None]  # grid_sample wants (z, y, x) -> (W, H, D) order
    vols = torch.stack([tpl["t1"], tpl["gm"], tpl["wm"]])[None]
    warped = F.grid_sample(vols, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
    t1, gm, wm = warped[0], warped[1], warped[2]
    bg = torch.clamp(1 - gm - wm, min=0)
    label = torch.argmax(torch.stack([bg, gm, wm]), dim=0).numpy().astype(np.int64)
    img = t1.clamp(min=0)
    if augment:
        img = img ** float(rng.uniform(0.7, 1.5))
        img = img * torch.exp(_smooth_field(rng, shape, 3, 0.15)[0])
        img = img + torch.from_numpy(rng.normal(0, rng.uniform(0.01, 0.04), size=shape).astype(np.float32))
    return (img * 100.0).numpy().astype(np.float32), label


def zscore(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """`x` standardised to mean 0 and std 1 (float32), as the demo models' plans normalise."""
    return ((x - x.mean()) / max(float(x.std()), 1e-8)).astype(np.float32)


# ----------------------------------------------------------------------------- networks
def build_demo_unet(seed: int) -> nn.Module:
    """The demo ResEnc U-Net (8-16-32-64) of the catalog, built with dynamic_network_architectures."""
    from dynamic_network_architectures.architectures.unet import ResidualEncoderUNet

    from worker.adapters.nnssl import resolve_class

    kw = demo_arch_kwargs()
    for k in ("conv_op", "norm_op", "nonlin"):
        kw[k] = resolve_class(kw[k])
    torch.manual_seed(seed)
    return ResidualEncoderUNet(input_channels=1, num_classes=1, deep_supervision=False, **kw)


def adaptation_plan(name: str) -> dict[str, Any]:
    """The nnssl adaptation plan written with every demo checkpoint."""
    kw = demo_arch_kwargs()
    return {
        "architecture_plans": {
            "arch_class_name": "ResidualEncoderUNet",
            "arch_kwargs": kw,
            "arch_kwargs_requiring_import": ["conv_op", "norm_op", "nonlin"],
        },
        "pretrain_plan": {
            "dataset_name": "Demo_MNI152_nilearn",
            "plans_name": "toporankDemoPlans",
            "configurations": {
                "demo3mm": {
                    "spacing": list(DEMO_SPACING),
                    "patch_size": [CROP] * 3,
                    "normalization_schemes": ["ZScoreNormalization"],
                }
            },
        },
        "pretrain_num_input_channels": 1,
        "recommended_downstream_patchsize": list(DEMO_PATCH),
        "key_to_encoder": "encoder.stages",
        "key_to_stem": "encoder.stem",
        "keys_to_in_proj": ["encoder.stem.convs.0.conv", "encoder.stem.convs.0.all_modules.0"],
        "key_to_lpe": None,
        "trainer_name": f"toporank.demo_zoo:{name}",
    }


# ----------------------------------------------------------------------------- data for pretraining
class CropBank:
    """Augmented, z-scored demo volumes at the demo spacing and random 32^3 crops inside the head."""

    def __init__(self, rng: np.random.Generator, n: int = BANK_SIZE) -> None:
        self.rng = rng
        self.vols = [zscore(make_volume(rng, DEMO_SPACING)[0]) for _ in range(n)]
        self.centres = [np.argwhere(v > 0.0) for v in self.vols]  # inside the head

    def corner(self, v: int) -> tuple[int, int, int]:
        vol = self.vols[v]
        c = self.centres[v][self.rng.integers(len(self.centres[v]))]
        return tuple(int(np.clip(ci - CROP // 2, 0, n - CROP)) for ci, n in zip(c, vol.shape))  # type: ignore[return-value]

    def shifted(self, v: int, corner: Sequence[int], jitter: int) -> tuple[int, int, int]:
        d = self.rng.integers(-jitter, jitter + 1, size=3)
        return tuple(int(np.clip(c + di, 0, n - CROP)) for c, di, n in zip(corner, d, self.vols[v].shape))  # type: ignore[return-value]

    def crop(self, v: int, corner: Sequence[int]) -> NDArray[np.float32]:
        a, b, c = corner
        return self.vols[v][a : a + CROP, b : b + CROP, c : c + CROP]

    def batch(self, size: int) -> torch.Tensor:
        out = []
        for _ in range(size):
            v = int(self.rng.integers(len(self.vols)))
            out.append(self.crop(v, self.corner(v)))
        return torch.from_numpy(np.stack(out)[:, None])


# ----------------------------------------------------------------------------- objectives
def mask_blocks(rng: np.random.Generator, b: int, ratio: float = 0.6, block: int = 4) -> torch.Tensor:
    """A keep-mask (b, 1, CROP, CROP, CROP) of `block`^3 cells, a fraction `ratio` of them masked (MAE-style)."""
    g = CROP // block
    keep = rng.random((b, 1, g, g, g)) >= ratio
    return torch.from_numpy(np.repeat(np.repeat(np.repeat(keep, block, 2), block, 3), block, 4))


def genesis_corrupt(rng: np.random.Generator, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Models Genesis transforms: non-linear intensity, local shuffling, in-/out-painting."""
    y = x.copy()
    if rng.random() < 0.9:  # monotone non-linear intensity map on [min, max]
        lo, hi = float(y.min()), float(y.max())
        t = (y - lo) / max(hi - lo, 1e-6)
        y = (lo + (hi - lo) * t ** float(rng.uniform(0.4, 2.5))).astype(np.float32)
    if rng.random() < 0.5:  # local pixel shuffling in small blocks
        for _ in range(40):
            s = rng.integers(2, 6, size=3)
            a = [int(rng.integers(0, CROP - k)) for k in s]
            blk = y[a[0] : a[0] + s[0], a[1] : a[1] + s[1], a[2] : a[2] + s[2]]
            y[a[0] : a[0] + s[0], a[1] : a[1] + s[1], a[2] : a[2] + s[2]] = rng.permutation(blk.ravel()).reshape(blk.shape)
    if rng.random() < 0.8:
        if rng.random() < 0.5:  # in-painting
            for _ in range(int(rng.integers(1, 4))):
                s = rng.integers(6, 14, size=3)
                a = [int(rng.integers(0, CROP - k)) for k in s]
                y[a[0] : a[0] + s[0], a[1] : a[1] + s[1], a[2] : a[2] + s[2]] = rng.normal(0, 1, size=tuple(s))
        else:  # out-painting
            s = rng.integers(14, 24, size=3)
            a = [int(rng.integers(0, CROP - k)) for k in s]
            keep = y[a[0] : a[0] + s[0], a[1] : a[1] + s[1], a[2] : a[2] + s[2]].copy()
            y = rng.normal(0, 1, size=y.shape).astype(np.float32)
            y[a[0] : a[0] + s[0], a[1] : a[1] + s[1], a[2] : a[2] + s[2]] = keep
    return y.astype(np.float32)


def contrast_view(rng: np.random.Generator, x: NDArray[np.float32]) -> NDArray[np.float32]:
    """A contrastive view: gamma-like contrast change and noise, re-standardised (no flips: the
    embedding keeps a coarse 2x2x2 layout)."""
    y = x
    lo = float(y.min())
    y = (y - lo) ** float(rng.uniform(0.7, 1.4))
    y = y + rng.normal(0, 0.1 * float(y.std()) + 1e-6, size=y.shape)
    return zscore(np.ascontiguousarray(y, dtype=np.float32))


def nt_xent(z: torch.Tensor, tau: float = 0.2) -> torch.Tensor:
    """SimCLR's NT-Xent over 2B embeddings where rows i and i+B are the positive pair (chance
    level: ln(2B - 1))."""
    z = F.normalize(z, dim=1)
    b2 = z.shape[0]
    b = b2 // 2
    sim = z @ z.T / tau
    sim = sim.masked_fill(torch.eye(b2, dtype=torch.bool), float("-inf"))
    target = torch.cat([torch.arange(b, b2), torch.arange(0, b)])
    return F.cross_entropy(sim, target)


class Projector(nn.Module):
    """SimCLR head on the deepest map pooled to 2x2x2 (global average pooling would mostly see
    the instance norms' fixed statistics and leave the loss at chance)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.projector = nn.Sequential(nn.Linear(8 * c, 128), nn.ReLU(inplace=True), nn.Linear(128, 32))

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.projector(F.adaptive_avg_pool3d(deepest, 2).flatten(1))


@dataclass
class TrainLog:
    steps: int = 0
    first_loss: float = float("nan")
    last_loss: float = float("nan")
    seconds: float = 0.0
    stopped_by_budget: bool = False


def _train(method: str, net: nn.Module, bank: CropBank, rng: np.random.Generator, steps: int, budget_s: float, batch: int) -> tuple[TrainLog, nn.Module | None]:
    head = Projector(int(net.encoder.output_channels[-1])) if method == "contrastive" else None
    params = list(net.parameters()) + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    log = TrainLog()
    t0 = time.perf_counter()
    net.train()
    losses = []
    for step in range(steps):
        if time.perf_counter() - t0 > budget_s:
            log.stopped_by_budget = True
            break
        if method == "mae":
            x = bank.batch(batch)
            keep = mask_blocks(rng, batch)
            pred = net(x * keep)
            hidden = ~keep
            loss = ((pred - x) ** 2)[hidden].mean()
        elif method == "genesis":
            x = bank.batch(batch)
            xin = torch.from_numpy(np.stack([genesis_corrupt(rng, v[0]) for v in x.numpy()])[:, None])
            loss = F.mse_loss(net(xin), x)
        elif method == "contrastive":
            a, b = [], []
            for _ in range(batch):
                v = int(rng.integers(len(bank.vols)))
                corner = bank.corner(v)
                a.append(contrast_view(rng, bank.crop(v, corner)))
                b.append(contrast_view(rng, bank.crop(v, bank.shifted(v, corner, jitter=3))))
            x = torch.from_numpy(np.stack(a + b)[:, None])
            loss = nt_xent(head(net.encoder(x)[-1]))  # type: ignore[misc]
        else:  # pragma: no cover
            raise ValueError(method)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        log.steps = step + 1
    net.eval()
    log.seconds = time.perf_counter() - t0
    if losses:
        log.first_loss = float(np.mean(losses[:5]))
        log.last_loss = float(np.mean(losses[-5:]))
    return log, head


# ----------------------------------------------------------------------------- the zoo
DEMO_MODELS = (
    ("demo-resenc-mae", "mae"),
    ("demo-resenc-genesis", "genesis"),
    ("demo-resenc-contrastive", "contrastive"),
    ("demo-resenc-random", "random"),
)


def write_nnssl_checkpoint(path: Path, weights: dict[str, torch.Tensor], plan: dict[str, Any]) -> None:
    """An nnssl `checkpoint_final.pth` (+ `adaptation_plan.json` beside it, as the OpenMind release)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"network_weights": {k: v.detach().cpu().contiguous() for k, v in weights.items()}, "nnssl_adaptation_plan": plan}, path)
    (path.parent / "adaptation_plan.json").write_text(json.dumps(plan, indent=2))


def build_demo_zoo(
    out_dir: Path,
    *,
    seed: int = 0,
    budget_s: float = DEFAULT_BUDGET_S,
    steps: int = DEFAULT_STEPS,
    batch: int = 4,
    bank_size: int = BANK_SIZE,
) -> list[tuple[str, dict[str, Any], Path]]:
    """Pretrain the demo encoders and write them as nnssl checkpoints under `out_dir/<name>/`.

    Returns (catalog entry name, resolved spec dict, checkpoint path) per model and writes
    `out_dir/zoo.json` with the same plus the training log of each model.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    rng = np.random.default_rng(seed)
    bank = CropBank(rng, bank_size)
    trained = [m for _, m in DEMO_MODELS if m != "random"]
    per_budget = max(1.0, (budget_s - (time.perf_counter() - t_all)) / len(trained))
    results: list[tuple[str, dict[str, Any], Path]] = []
    manifest = []
    for i, (name, method) in enumerate(DEMO_MODELS):
        net = build_demo_unet(seed * 100 + i)
        head = None
        log = TrainLog()
        if method != "random":
            log, head = _train(method, net, bank, np.random.default_rng([seed, i]), steps, per_budget, batch)
        if method == "contrastive":  # encoder-only layout of contrastive nnssl checkpoints
            weights = {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}
            weights.update({k: v for k, v in head.state_dict().items()})  # type: ignore[union-attr]
        else:
            weights = dict(net.state_dict())
        path = out_dir / name / "checkpoint_final.pth"
        write_nnssl_checkpoint(path, weights, adaptation_plan(name))
        entry = get_entry(name)
        spec = resolve_spec(ModelSpec(name=name, format="nnssl", catalog=name)).model_dump(mode="json")
        results.append((name, spec, path))
        manifest.append({"name": name, "ssl_method": entry.ssl_method, "checkpoint": str(path), "spec": spec, "training": log.__dict__})
    summary = {"seed": seed, "steps": steps, "budget_s": budget_s, "seconds": time.perf_counter() - t_all, "models": manifest}
    (out_dir / "zoo.json").write_text(json.dumps(summary, indent=2))
    return results


# ----------------------------------------------------------------------------- the pilot set
def build_demo_pilot_set(out_dir: Path, *, n_cases: int = 4, seed: int = 1) -> Path:
    """An nnU-Net-layout pilot set (T1, labels background / grey matter / white matter, K = 2)
    of augmented template volumes at 2.5-3 mm. Returns the dataset folder."""
    import nibabel as nib

    root = Path(out_dir) / "Dataset900_DemoBrain"
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for m in range(n_cases):
        spacing = PILOT_SPACINGS[m % len(PILOT_SPACINGS)]
        img, lab = make_volume(rng, spacing)
        affine = np.diag([*spacing, 1.0])
        nib.save(nib.Nifti1Image(img, affine), root / "imagesTr" / f"demo_{m:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), root / "labelsTr" / f"demo_{m:03d}.nii.gz")
    meta = {
        "name": "DemoBrain",
        "description": "Augmented MNI152 2009a template (nilearn package data), GM/WM from its probability maps",
        "channel_names": {"0": "T1"},
        "labels": LABELS,
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def load_pilot_cases(root: Path) -> list[Any]:
    """The cases of an nnU-Net-layout folder (as written by `build_demo_pilot_set`) as CaseVolumes."""
    import nibabel as nib

    from worker.extract import CaseVolume

    root = Path(root)
    meta = json.loads((root / "dataset.json").read_text())
    ending = meta.get("file_ending", ".nii.gz")
    n_ch = len(meta["channel_names"])
    cases = []
    for lab_path in sorted((root / "labelsTr").glob(f"*{ending}")):
        case = lab_path.name[: -len(ending)]
        lab_img = nib.load(lab_path)
        chans = [np.asarray(nib.load(root / "imagesTr" / f"{case}_{c:04d}{ending}").get_fdata(dtype=np.float32)) for c in range(n_ch)]
        spacing = tuple(float(z) for z in lab_img.header.get_zooms()[:3])
        cases.append(CaseVolume(np.stack(chans), np.asarray(lab_img.dataobj).astype(np.int64), spacing))
    return cases


def main(argv: Sequence[str] | None = None) -> int:
    """`toporank build-demo-zoo [--out DIR] [--seed N] [--budget-s S] [--steps N] [--cases N]`."""
    p = argparse.ArgumentParser(prog="toporank build-demo-zoo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(".data/demo"), help="output folder (zoo/ and pilot/ inside)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="wall-time cap of the pretraining")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="optimiser steps per pretrained model")
    p.add_argument("--cases", type=int, default=4, help="pilot cases")
    args = p.parse_args(list(argv) if argv is not None else None)
    t0 = time.perf_counter()
    zoo = build_demo_zoo(args.out / "zoo", seed=args.seed, budget_s=args.budget_s, steps=args.steps)
    pilot = build_demo_pilot_set(args.out / "pilot", n_cases=args.cases, seed=args.seed + 1)
    print(json.dumps({"models": [{"name": n, "checkpoint": str(c)} for n, _, c in zoo], "pilot_set": str(pilot),
                      "seconds": round(time.perf_counter() - t0, 1)}, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
