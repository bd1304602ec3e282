"""Procedural phantoms for the out-of-distribution validation tasks: abdominal CT and cardiac cine MR.

Both are built the same way: an implicit canonical anatomy (ellipsoids, rings and tubes deformed
by smooth random fields) is evaluated at the voxel centres of the output grid after a random
affine + elastic coordinate transform, then painted with tissue intensities, blurred a little
(partial volume) and given noise. Nothing is read from disk or the network.

Determinism: every random draw except the voxel noise comes from a fixed number of draws whose
sizes depend on the field of view, not on the spacing, so the same rng state gives the same
anatomy at 3 mm and at 1.5 mm; the voxel noise is drawn last.

Axes follow RAS: x = patient right (+) / left (-), y = anterior (+), z = superior (+).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

ABDOMEN_FOV_MM = (300.0, 250.0, 150.0)
CARDIAC_FOV_MM = (150.0, 150.0, 100.0)
ABDOMEN_LABELS = {"background": 0, "liver": 1, "kidneys": 2, "spleen": 3}
CARDIAC_LABELS = {"background": 0, "lv_cavity": 1, "lv_myocardium": 2, "rv_cavity": 3}

# Default augmentation of each phantom (same keys as the task spec's `augmentation` block).
# `noise` is a std range in units of the phantom's reference scale: 1000 HU for CT, 1.0 for MR.
ABDOMEN_AUG: dict[str, Any] = {
    "rotation_deg": 8.0,
    "scale": (0.9, 1.1),
    "shift_mm": 10.0,
    "elastic_mm": 4.0,
    "gamma": (1.0, 1.0),
    "bias_amplitude": 0.0,
    "noise": (0.008, 0.025),
}
CARDIAC_AUG: dict[str, Any] = {
    "rotation_deg": 15.0,
    "scale": (0.9, 1.1),
    "shift_mm": 8.0,
    "elastic_mm": 2.0,
    "gamma": (0.8, 1.25),
    "bias_amplitude": 0.25,
    "noise": (0.015, 0.05),
}
IDENTITY_AUG: dict[str, Any] = {
    "rotation_deg": 0.0,
    "scale": (1.0, 1.0),
    "shift_mm": 0.0,
    "elastic_mm": 0.0,
    "gamma": (1.0, 1.0),
    "bias_amplitude": 0.0,
    "noise": (0.0, 0.0),
}
PV_SIGMA_VOX = 0.45  # Gaussian blur (voxels) standing in for the partial-volume effect


# ----------------------------------------------------------------------------- shared helpers
def grid_axes(fov_mm: Sequence[float], spacing: Sequence[float]) -> list[NDArray[np.float64]]:
    """Voxel-centre coordinates (mm, centred on 0) of the grid covering `fov_mm` at `spacing`."""
    if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise ValueError(f"spacing must be 3 positive numbers (mm), got {tuple(spacing)}")
    shape = [max(1, int(round(f / float(s)))) for f, s in zip(fov_mm, spacing)]
    return [(np.arange(n) - (n - 1) / 2.0) * float(s) for n, s in zip(shape, spacing)]


def smooth_noise(
    rng: np.random.Generator,
    axes: Sequence[NDArray[np.float64]],
    fov_mm: Sequence[float],
    corr_mm: float,
    channels: int = 1,
) -> NDArray[np.float32]:
    """A smooth Gaussian random field (channels, X, Y, Z) with unit variance everywhere.

    Gaussian nodes on a grid of step `corr_mm` over `fov_mm` (so the number of draws, and the
    field, do not depend on the voxel spacing), interpolated with separable Gaussian weights
    normalised so that every voxel has variance 1.
    """
    mats = []
    sizes = []
    for ax, fov in zip(axes, fov_mm):
        n = int(math.ceil(fov / corr_mm)) + 3
        nodes = np.linspace(-fov / 2 - corr_mm, fov / 2 + corr_mm, n)
        step = nodes[1] - nodes[0]
        w = np.exp(-0.5 * ((ax[:, None] - nodes[None, :]) / (0.7 * step)) ** 2)
        w /= np.sqrt((w**2).sum(axis=1, keepdims=True))
        mats.append(w.astype(np.float32))
        sizes.append(n)
    coarse = rng.standard_normal((channels, *sizes)).astype(np.float32)
    t = np.einsum("cabd,kd->cabk", coarse, mats[2], optimize=True)
    t = np.einsum("cabk,jb->cajk", t, mats[1], optimize=True)
    return np.ascontiguousarray(np.einsum("cajk,ia->cijk", t, mats[0], optimize=True), dtype=np.float32)


def _rotation(rng: np.random.Generator, max_deg: float) -> NDArray[np.float64]:
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, size=3))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot_z(deg: float) -> NDArray[np.float64]:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])


def _rot_y(deg: float) -> NDArray[np.float64]:
    t = math.radians(deg)
    return np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])


def merge_aug(default: Mapping[str, Any], aug: Mapping[str, Any] | None, augment: bool) -> dict[str, Any]:
    """The augmentation actually used: identity when `augment` is False, else `default` updated by `aug`."""
    if not augment:
        return dict(IDENTITY_AUG)
    out = dict(default)
    if aug:
        unknown = set(aug) - set(IDENTITY_AUG)
        if unknown:
            raise ValueError(f"unknown augmentation keys {sorted(unknown)}; known: {sorted(IDENTITY_AUG)}")
        out.update(aug)
    return out


def warped_coords(
    rng: np.random.Generator,
    axes: Sequence[NDArray[np.float64]],
    fov_mm: Sequence[float],
    aug: Mapping[str, Any],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float32]]:
    """Canonical-frame coordinates (x, y, z), each (X, Y, Z) float32 in mm, of every output voxel.

    p' = (R diag(s)) p + shift + elastic(p): rotation up to `rotation_deg` about each axis,
    per-axis scale in `scale`, shift up to `shift_mm`, a smooth displacement of std `elastic_mm`.
    Draws a fixed number of values whatever `aug` says (identity values give the identity).
    """
    lo, hi = aug["scale"]
    lin = _rotation(rng, float(aug["rotation_deg"])) * rng.uniform(float(lo), float(hi), size=3)[None, :]
    shift = rng.uniform(-1.0, 1.0, size=3) * float(aug["shift_mm"])
    field = smooth_noise(rng, axes, fov_mm, max(fov_mm) / 4.0, channels=3)
    a = [
        np.asarray(axes[0], dtype=np.float32)[:, None, None],
        np.asarray(axes[1], dtype=np.float32)[None, :, None],
        np.asarray(axes[2], dtype=np.float32)[None, None, :],
    ]
    shape = tuple(len(ax) for ax in axes)
    out = []
    for i in range(3):
        c = np.zeros(shape, dtype=np.float32)
        c += a[0] * np.float32(lin[i, 0])
        c += a[1] * np.float32(lin[i, 1])
        c += a[2] * np.float32(lin[i, 2])
        c += np.float32(shift[i])
        if float(aug["elastic_mm"]) > 0:
            c += np.float32(aug["elastic_mm"]) * field[i]
        out.append(c)
    return out[0], out[1], out[2]


def _intensity(
    rng: np.random.Generator,
    img: NDArray[np.float32],
    axes: Sequence[NDArray[np.float64]],
    fov_mm: Sequence[float],
    aug: Mapping[str, Any],
    *,
    lo: float,
    scale: float,
    rician: bool,
) -> NDArray[np.float32]:
    """Gamma (on (img - lo) / scale), multiplicative bias field, then Gaussian or Rician noise.

    `noise` is a std in units of `scale`. Fixed draw order: gamma, bias field, noise std, noise.
    """
    g = float(rng.uniform(*aug["gamma"]))
    bias = smooth_noise(rng, axes, fov_mm, max(fov_mm) / 2.0)[0]
    sigma = float(rng.uniform(*aug["noise"])) * scale
    out = img.astype(np.float32)
    if g != 1.0:
        t = np.clip((out - lo) / scale, 0.0, None)
        out = (lo + scale * t**g).astype(np.float32)
    if float(aug["bias_amplitude"]) > 0:
        out = (lo + (out - lo) * np.exp(float(aug["bias_amplitude"]) * bias)).astype(np.float32)
    if sigma > 0:
        n1 = rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
        if rician:
            n2 = rng.normal(0.0, sigma, size=out.shape).astype(np.float32)
            out = np.sqrt((out + n1) ** 2 + n2**2).astype(np.float32)
        else:
            out = out + n1
    return out.astype(np.float32)


def _frame(xyz: Sequence[NDArray[np.float32]], centre: Sequence[float], rot: NDArray[np.float64] | None = None) -> list[NDArray[np.float32]]:
    """Coordinates relative to `centre` in a body frame whose axes are the columns of `rot`."""
    d = [xyz[i] - np.float32(centre[i]) for i in range(3)]
    if rot is None:
        return d
    r = np.asarray(rot, dtype=np.float32)
    return [d[0] * r[0, j] + d[1] * r[1, j] + d[2] * r[2, j] for j in range(3)]


def _ellipsoid_q(
    xyz: Sequence[NDArray[np.float32]], centre: Sequence[float], semi: Sequence[float], rot: NDArray[np.float64] | None = None
) -> NDArray[np.float32]:
    """Normalised ellipsoid radius: < 1 inside the ellipsoid (centre, semi-axes, body rotation).

    `xyz` are the three coordinate arrays (contiguous, for speed).
    """
    u = _frame(xyz, centre, rot)
    return np.sqrt(sum((u[j] / np.float32(semi[j])) ** 2 for j in range(3)))


# ----------------------------------------------------------------------------- abdomen CT
def abdomen_ct(
    rng: np.random.Generator,
    spacing: Sequence[float],
    augment: bool = True,
    *,
    aug: Mapping[str, Any] | None = None,
    structures: dict[str, NDArray[np.bool_]] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """An abdominal CT phantom (HU image (X, Y, Z) float32, labels (X, Y, Z) int64).

    FOV 300 x 250 x 150 mm (x = right-left, y = anterior-posterior, z = superior-inferior).
    Body: elliptic cross-section (air -1000 outside) with subcutaneous fat (-100), an abdominal
    muscle wall (50), visceral fat / bowel texture, spine (vertebral bodies 250 with a 700
    cortex, discs, canal, posterior elements), paraspinal muscles, ribs in the upper half, aorta
    and IVC. Labels: 1 liver (60 HU), 2 kidneys, both (medulla 25, cortex 45, hilum notch),
    3 spleen (50); perirenal fat around the kidneys. Organs are deformed ellipsoids with
    position / size / rotation jitter and a smooth random boundary perturbation, confined to the
    abdominal cavity outside the spine and paraspinal muscles; kidneys > spleen > liver, and the
    aorta / IVC cut through all but the kidneys.
    `augment=False`: canonical anatomy, no warp, no noise. `aug` overrides `ABDOMEN_AUG`. A dict
    passed as `structures` is filled with the unlabelled anatomy's masks as drawn (`vertebrae`,
    `paraspinal_muscles`, `aorta`; no extra random numbers are drawn, so image and labels are unchanged).
    """
    A = merge_aug(ABDOMEN_AUG, aug, augment)
    fov = ABDOMEN_FOV_MM
    axes = grid_axes(fov, spacing)
    shape = tuple(len(a) for a in axes)
    v = 1.0 if augment else 0.0  # scales every anatomical variation

    # anatomy draws (fixed count)
    body_ax = 132.0 + v * rng.uniform(-10, 8)
    body_ay = 100.0 + v * rng.uniform(-8, 8)
    harm = (v * rng.normal(0, 1, size=(4, 2)) * np.array([[0.03], [0.025], [0.015], [0.01]])).tolist()
    zharm = (v * rng.normal(0, 0.035, size=2)).tolist()
    fat_t = 18.0 + v * rng.uniform(-8, 10)
    wall_t = 9.0 + v * rng.uniform(-2, 3)
    organ = {}
    for name, c, s, rz, ry in (
        ("liver", (52.0, 8.0, 22.0), (72.0, 80.0, 60.0), 0.0, 0.0),
        ("spleen", (-82.0, -32.0, 28.0), (24.0, 45.0, 48.0), -30.0, 0.0),
        ("kidney_r", (65.0, -28.0, -28.0), (24.0, 30.0, 52.0), 20.0, -12.0),
        ("kidney_l", (-65.0, -28.0, -18.0), (24.0, 30.0, 52.0), -20.0, 12.0),
    ):
        jit = v * rng.uniform(-9, 9, size=3)
        scl = 1.0 + v * rng.uniform(-0.13, 0.13, size=3)
        rot = _rot_z(rz + v * rng.uniform(-10, 10)) @ _rot_y(ry + v * rng.uniform(-8, 8))
        organ[name] = (np.asarray(c) + jit, np.asarray(s) * scl, rot)
    spine_x = v * rng.uniform(-6, 6)
    disc_phase = rng.uniform(0, 35.0) if augment else 10.0
    rib_phase = rng.uniform(0, 2 * np.pi) if augment else 0.0
    hu_jit = (v * rng.normal(0, 6, size=4)).tolist()  # liver, spleen, kidney, muscle
    pert = smooth_noise(rng, axes, fov, 40.0, channels=4)  # organ boundary perturbations
    texture = smooth_noise(rng, axes, fov, 18.0, channels=2)  # bowel / visceral fat, organ texture

    x, y, z = warped_coords(rng, axes, fov, A)

    # body outline: ellipse with angular harmonics and a slow change along z
    th = np.arctan2(y / body_ay, x / body_ax)
    rmod = 1.0 + sum(harm[k][0] * np.cos((k + 2) * th) + harm[k][1] * np.sin((k + 2) * th) for k in range(4))
    zmod = 1.0 + zharm[0] * np.sin(2 * np.pi * z / 300.0) + zharm[1] * np.cos(2 * np.pi * z / 200.0)
    flat_back = np.where(y < 0, 1.0 - 0.12 * np.clip(-y / body_ay, 0, 1) ** 4, 1.0)  # lying on the table
    ax_, ay_ = body_ax * rmod * zmod, body_ay * rmod * zmod * flat_back
    r_body = np.sqrt((x / ax_) ** 2 + (y / ay_) ** 2)
    body = r_body < 1.0
    # depth below the skin (mm, approximately) from the normalised radius
    depth = (1.0 - r_body) * np.sqrt((ax_ * np.cos(th)) ** 2 + (ay_ * np.sin(th)) ** 2)
    fat_here = fat_t * (1.0 + 0.5 * np.clip(y / body_ay, 0, 1))  # thicker anteriorly
    cavity = depth > fat_here + wall_t

    img = np.full(shape, -1000.0, dtype=np.float32)
    img[body] = -100.0  # subcutaneous fat
    img[body & (depth > fat_here)] = 50.0 + hu_jit[3]  # muscle wall
    visc = np.where(texture[0] > 0.35, -95.0, 25.0 + 8.0 * texture[1]).astype(np.float32)
    visc = np.where(texture[0] < -2.2, -850.0, visc)  # a few bowel gas pockets
    img = np.where(cavity, visc, img)

    # spine and paraspinal muscles (positions relative to the back)
    yb = -body_ay * zmod
    para = (((np.abs(x - spine_x) - 34.0) / 22.0) ** 2 + ((y - (yb + 40.0)) / 18.0) ** 2) < 1.0
    img = np.where(para & body, 50.0 + hu_jit[3], img)
    vb_q = np.sqrt(((x - spine_x) / 21.0) ** 2 + ((y - (yb + 78.0)) / 17.0) ** 2)
    disc = np.abs(((z - disc_phase) % 35.0) - 17.5) > 13.5
    vert = np.where(disc, 90.0, np.where(vb_q > 0.82, 700.0, 250.0)).astype(np.float32)
    img = np.where(vb_q < 1.0, vert, img)
    canal = np.sqrt(((x - spine_x) / 9.0) ** 2 + ((y - (yb + 52.0)) / 8.0) ** 2) < 1.0
    post = (np.abs(x - spine_x) < 14.0) & (y > yb + 24.0) & (y < yb + 62.0) & ~canal & ~disc
    img = np.where(post & body, 500.0, img)
    img = np.where(canal, 10.0, img)

    # ribs: short arcs in the muscle wall of the upper half
    wall = body & (depth > fat_here) & (depth < fat_here + wall_t + 4.0)
    ribs = wall & (z > -10.0) & (np.cos(9.0 * th + rib_phase + z / 14.0) > 0.8) & (y > yb + 30.0)
    img = np.where(ribs, 600.0, img)

    # organs
    lab = np.zeros(shape, dtype=np.int64)
    inside = cavity & (vb_q > 1.15) & ~para
    c, s, rot = organ["liver"]
    d = _frame((x, y, z), c, rot)
    taper = np.clip(1.0 - 0.55 * np.clip(-d[0] / np.float32(s[0]), 0, None), 0.3, 1.0)  # thin left lobe
    q_liver = np.sqrt((d[0] / np.float32(s[0])) ** 2 + (d[1] / (np.float32(s[1]) * taper)) ** 2 + (d[2] / (np.float32(s[2]) * taper)) ** 2)
    liver = (q_liver + 0.12 * v * pert[0] < 1.0) & inside
    c, s, rot = organ["spleen"]
    spleen = (_ellipsoid_q((x, y, z), c, s, rot) + 0.1 * v * pert[1] < 1.0) & inside
    kidneys = np.zeros(shape, dtype=bool)
    cortex = np.zeros(shape, dtype=bool)
    perirenal = np.zeros(shape, dtype=bool)
    for k, name in enumerate(("kidney_r", "kidney_l")):
        c, s, rot = organ[name]
        q = _ellipsoid_q((x, y, z), c, s, rot) + 0.06 * v * pert[2 + k]
        hilum = _ellipsoid_q((x, y, z), c - np.array([np.sign(c[0]) * s[0] * 0.9, 0.0, 0.0]), (s[0] * 0.45, s[1] * 0.35, s[2] * 0.3)) < 1.0
        kid = (q < 1.0) & ~hilum & inside
        kidneys |= kid
        perirenal |= (q < 1.3) & inside
        cortex |= kid & (q > 0.78)
    img = np.where(perirenal, -90.0, img)  # perirenal fat
    img = np.where(liver, 60.0 + hu_jit[0] + 4.0 * texture[1], img)
    img = np.where(spleen, 50.0 + hu_jit[1] + 3.0 * texture[1], img)
    img = np.where(kidneys, np.where(cortex, 45.0, 25.0) + hu_jit[2], img)
    lab[liver] = 1
    lab[spleen] = 3
    lab[kidneys] = 2

    # great vessels (not labelled): aorta left-anterior of the spine, IVC on the right
    aorta = np.sqrt((x - (spine_x - 18.0)) ** 2 + (y - (yb + 108.0)) ** 2) < 12.0
    ivc = np.sqrt(((x - (spine_x + 24.0)) / 13.0) ** 2 + ((y - (yb + 106.0)) / 10.0) ** 2) < 1.0
    vessels = (aorta | ivc) & cavity & ~kidneys
    img = np.where(vessels, 42.0, img)
    lab[vessels] = 0
    if structures is not None:
        structures.update(vertebrae=vb_q < 1.0, paraspinal_muscles=para & body & ~(vb_q < 1.0), aorta=aorta & cavity & ~kidneys)

    img = ndimage.gaussian_filter(img, PV_SIGMA_VOX).astype(np.float32)
    img = _intensity(rng, img, axes, fov, A, lo=-1000.0, scale=1000.0, rician=False)
    return img, lab


# ----------------------------------------------------------------------------- cardiac cine MR
def cardiac_cine(
    rng: np.random.Generator,
    spacing: Sequence[float],
    augment: bool = True,
    *,
    aug: Mapping[str, Any] | None = None,
    structures: dict[str, NDArray[np.bool_]] | None = None,
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """A short-axis cine (bSSFP-like) MR phantom (image (X, Y, Z) float32 ~[0, 1], labels int64).

    FOV 150 x 150 x 100 mm, z along the LV long axis (base at +z, apex toward -z). Labels:
    1 LV cavity (blood 0.85, papillary muscles included as in ACDC), 2 LV myocardium (0.28),
    3 RV cavity (a crescent around the septum; the thin RV free wall is not labelled). A random
    cardiac phase shrinks the cavities and thickens the wall (end-diastole -> end-systole); wall
    thickness varies with the angle. Around it: epicardial fat (bright), lungs (dark), chest
    wall, liver below the heart, descending aorta and the left atrium above the base (bright
    blood, not labelled). Intensity inhomogeneity (bias field + coil fall-off), Rician noise.
    `augment=False`: end-diastole, canonical sizes, no warp, no noise. `aug` overrides `CARDIAC_AUG`.
    A dict passed as `structures` is filled with the unlabelled anatomy's masks as drawn (`lungs`,
    `liver`, `descending_aorta`, `left_atrium`; no extra random numbers are drawn).
    """
    A = merge_aug(CARDIAC_AUG, aug, augment)
    fov = CARDIAC_FOV_MM
    axes = grid_axes(fov, spacing)
    shape = tuple(len(a) for a in axes)
    v = 1.0 if augment else 0.0

    phase = float(rng.uniform(0.0, 1.0)) if augment else 0.0
    cph = 0.5 * (1.0 - math.cos(2 * math.pi * phase))  # 0 = end-diastole, 1 = end-systole
    a_ed = 25.0 + v * rng.uniform(-4, 4)
    a_endo = a_ed * (1.0 - 0.36 * cph)
    t_wall = (8.0 + v * rng.uniform(-1.5, 2.0)) * (1.0 + 0.5 * cph)
    L = (72.0 + v * rng.uniform(-6, 6)) * (1.0 - 0.1 * cph)
    z_base = 32.0 + v * rng.uniform(-5, 5)
    wall_harm = (v * rng.normal(0, 1, size=(2, 2)) * np.array([[0.15], [0.08]])).tolist()
    rv_dir = math.radians(30.0 + v * rng.uniform(-15, 15))  # anterior and to the patient's right
    rv_scale = (1.0 + v * rng.uniform(-0.12, 0.12)) * (1.0 - 0.3 * cph)
    pap_ang = np.radians(np.array([160.0, 260.0]) + v * rng.uniform(-15, 15, size=2))  # away from the septum
    fat_amt = 0.4 + v * rng.uniform(-0.25, 0.25)
    coil = rng.normal(0, 1, size=3) if augment else np.zeros(3)
    tex = smooth_noise(rng, axes, fov, 25.0, channels=3)

    x, y, z = warped_coords(rng, axes, fov, A)

    # background: mediastinum, chest wall anteriorly, lungs on both sides, liver below
    img = np.full(shape, 0.42, dtype=np.float32) + 0.04 * tex[0]
    lungs = ((np.abs(x + 8.0) - 78.0) / 38.0) ** 2 + ((y + 5.0) / 75.0) ** 2 + (z / 140.0) ** 2 < 1.0
    img = np.where(lungs, 0.05 + 0.02 * tex[1], img)
    chest = y > 62.0 + 6.0 * tex[1]
    img = np.where(chest, np.where(y > 74.0, 0.85, 0.3), img)  # muscle, then subcutaneous fat
    liver = (z < -38.0 + 8.0 * tex[2]) & (x > -20.0) & ~lungs
    img = np.where(liver, 0.36, img)
    dao = np.sqrt((x + 25.0) ** 2 + (y + 52.0) ** 2) < 11.0
    img = np.where(dao, 0.8, img)

    # left ventricle (axis along z, centred in-plane at 0)
    rho = np.sqrt(x**2 + y**2)
    th = np.arctan2(y, x)
    tmod = 1.0 + sum(wall_harm[k][0] * np.cos((k + 1) * th) + wall_harm[k][1] * np.sin((k + 1) * th) for k in range(2))
    below = z <= z_base
    dz = z - z_base
    q_endo = np.sqrt((rho / a_endo) ** 2 + (dz / L) ** 2)
    t_here = t_wall * tmod
    q_epi = np.sqrt((rho / (a_endo + t_here)) ** 2 + (dz / (L + 0.8 * t_wall)) ** 2)
    lv = below & (q_endo < 1.0)
    myo = below & (q_epi < 1.0) & ~lv

    # right ventricle: an ellipsoid beside the septum, minus the LV; thin free wall unlabelled
    u = np.array([math.cos(rv_dir), math.sin(rv_dir)], dtype=np.float32)
    d_rv = (a_ed + t_wall) * 0.95
    cx, cy = float(u[0] * d_rv), float(u[1] * d_rv)
    along = (x - cx) * u[0] + (y - cy) * u[1]
    across = -(x - cx) * u[1] + (y - cy) * u[0]
    s_al, s_ac, s_z = 30.0 * rv_scale, 48.0 * rv_scale, 0.8 * L
    q_rv = np.sqrt((along / s_al) ** 2 + (across / s_ac) ** 2 + (dz / s_z) ** 2)
    rv_out = below & (q_rv < 1.0) & (q_epi >= 1.0)
    rv_in = below & (q_rv < 1.0 - 3.0 / s_al) & (q_epi >= 1.0 + 2.0 / (a_endo + t_wall))
    rv_wall = rv_out & ~rv_in

    # epicardial fat: a patchy layer a few mm outside the epicardium and the RV wall
    heart = lv | myo | rv_out
    near = below & ~heart & ((q_epi < 1.0 + 6.0 / (a_endo + t_wall)) | (q_rv < 1.0 + 5.0 / s_al))
    fat = near & (tex[1] > 0.8 - 2.0 * fat_amt)
    img = np.where(fat, 0.88, img)

    # left atrium above the base (bright blood, not labelled)
    la = np.sqrt(((x + 4.0) / 22.0) ** 2 + ((y + 18.0) / 18.0) ** 2 + ((z - z_base - 24.0) / 22.0) ** 2) < 1.0
    img = np.where(la, 0.82, img)

    img = np.where(myo | rv_wall, 0.28 + 0.02 * tex[2], img)
    img = np.where(lv | rv_in, 0.85 + 0.03 * tex[0], img)
    # papillary muscles: myocardium-dark rods in the LV cavity, labelled cavity (ACDC convention)
    pap = np.zeros(shape, dtype=bool)
    for ang in pap_ang:
        px, py = 0.6 * a_endo * math.cos(ang), 0.6 * a_endo * math.sin(ang)
        pap |= (np.sqrt((x - px) ** 2 + (y - py) ** 2) < 0.18 * a_endo + 1.0) & (dz < -12.0) & (dz > -0.7 * L)
    pap &= lv
    img = np.where(pap, 0.3, img)

    lab = np.zeros(shape, dtype=np.int64)
    lab[lv] = 1
    lab[myo] = 2
    lab[rv_in] = 3
    if structures is not None:
        heart_all = heart | rv_in
        structures.update(lungs=lungs & ~heart_all & ~la & ~dao & ~chest, liver=liver & ~heart_all, descending_aorta=dao & ~heart_all,
                          left_atrium=la & ~heart_all)

    # coil fall-off: smooth exponential gradient in a random direction
    if augment:
        cdir = coil / (np.linalg.norm(coil) + 1e-8)
        img = img * np.exp(np.float32(-0.25 / 75.0) * (x * np.float32(cdir[0]) + y * np.float32(cdir[1]) + z * np.float32(cdir[2])))
    img = ndimage.gaussian_filter(np.clip(img, 0.0, None).astype(np.float32), PV_SIGMA_VOX).astype(np.float32)
    img = _intensity(rng, img, axes, fov, A, lo=0.0, scale=1.0, rician=True)
    return img, lab
