"""Tiny, format-faithful pilot-set archives (nnU-Net v2 and MSD) for API and integration tests."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

PHI = b"PATIENT Jane Roe 1970-01-01"


def make_case(seed: int, shape=(24, 24, 24), k: int = 2, channels: int = 1):  # type: ignore[no-untyped-def]
    """A label map with K blob classes on background and matching noisy image channels."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    for c in range(1, k + 1):
        centre = rng.uniform(6, np.array(shape) - 6)
        radius = rng.uniform(3.0, 5.5)
        dist = np.sqrt(((grid - centre[:, None, None, None]) ** 2).sum(0))
        label[dist < radius] = c
    images = []
    for ch in range(channels):
        img = label.astype(np.float32) * (40.0 + 10 * ch) + rng.normal(0, 8.0, shape).astype(np.float32) + 100.0
        images.append(img)
    return images, label


def nifti_bytes(arr: np.ndarray, spacing=(1.5, 1.5, 2.0), affine: np.ndarray | None = None, phi: bool = True, gz: bool = True) -> bytes:
    if affine is None:
        affine = np.diag([*spacing, 1.0])
        affine[:3, 3] = [-10.0, 5.0, 2.5]
    img = nib.Nifti1Image(arr, affine)
    img.header.set_zooms(spacing[: arr.ndim] if arr.ndim == 3 else (*spacing, 1.0))
    if phi:
        img.header["descrip"] = PHI
        img.header["aux_file"] = b"jane_roe.txt"
    raw = img.to_bytes()
    return gzip.compress(raw, compresslevel=1) if gz else raw


Files = dict[str, bytes]


def nnunet_files(n_cases: int = 3, k: int = 2, channels: int = 1, shape=(24, 24, 24), root: str = "Dataset001_Tiny/") -> Files:
    files: Files = {}
    labels = {"background": 0, **{f"class{c}": c for c in range(1, k + 1)}}
    files[root + "dataset.json"] = json.dumps(
        {
            "channel_names": {str(c): f"MR{c}" for c in range(channels)},
            "labels": labels,
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
            "name": "Tiny",
        }
    ).encode()
    for i in range(n_cases):
        images, label = make_case(i, shape, k, channels)
        for c, img in enumerate(images):
            files[f"{root}imagesTr/patient{i:03d}_{c:04d}.nii.gz"] = nifti_bytes(img)
        files[f"{root}labelsTr/patient{i:03d}.nii.gz"] = nifti_bytes(label)
    return files


def msd_files(n_cases: int = 2, k: int = 2, channels: int = 2, shape=(20, 20, 20), root: str = "Task01_Tiny/") -> Files:
    files: Files = {}
    training = []
    for i in range(n_cases):
        images, label = make_case(10 + i, shape, k, channels)
        img4 = np.stack(images, axis=-1)
        files[f"{root}imagesTr/case_{i:03d}.nii.gz"] = nifti_bytes(img4)
        files[f"{root}labelsTr/case_{i:03d}.nii.gz"] = nifti_bytes(label)
        files[f"{root}imagesTr/._case_{i:03d}.nii.gz"] = b"macos resource fork"
        training.append({"image": f"./imagesTr/case_{i:03d}.nii.gz", "label": f"./labelsTr/case_{i:03d}.nii.gz"})
    files[root + "dataset.json"] = json.dumps(
        {
            "name": "Tiny",
            "modality": {str(c): f"MR{c}" for c in range(channels)},
            "labels": {"0": "background", **{str(c): f"class{c}" for c in range(1, k + 1)}},
            "numTraining": n_cases,
            "training": training,
        }
    ).encode()
    return files


def write_zip(path: Path, files: Files, symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, target)
    return path


def write_tar(path: Path, files: Files, extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        if extra is not None:
            extra(tf)
    return path
