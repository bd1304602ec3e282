"""NIfTI-1 checks and PHI-free re-writing, streamed in bounded chunks.

The header is read first and the data size checked against the cap before any voxel is
decompressed. Data is then streamed in chunks: images must be finite, labels integral and within
the declared label values. The output is a fresh header (geometry, dtype, scaling and units only:
`descrip`, `aux_file`, `intent_name`, `db_name` and extensions are blank) plus the data.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from nibabel.nifti1 import Nifti1Header

from app.ingest.errors import Problem

CHUNK_VOXELS = 1 << 20
MAX_VOX_OFFSET = 16 << 20
_ALLOWED_KINDS = {"u", "i", "f"}


class CaseProblem(Exception):
    """A problem with one file of one case."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(problem)
        self.item = Problem(file, problem)


@dataclass(frozen=True)
class NiftiInfo:
    name: str
    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    affine: np.ndarray
    zooms: tuple[float, float, float]
    slope: float | None
    inter: float | None
    vox_offset: int

    @property
    def spatial(self) -> tuple[int, int, int]:
        return (int(self.shape[0]), int(self.shape[1]), int(self.shape[2]))

    @property
    def channels(self) -> int:
        return int(self.shape[3]) if len(self.shape) == 4 else 1


def _open(path: Path) -> IO[bytes]:
    with open(path, "rb") as fh:
        magic = fh.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")  # noqa: SIM115


def read_header(path: Path, name: str, max_voxels: int) -> NiftiInfo:
    """Parse and sanity-check the header only; refuses oversize data before decompressing it."""
    try:
        with _open(path) as fh:
            raw = fh.read(348)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise CaseProblem(name, "not a readable NIfTI file") from exc
    if len(raw) < 348:
        raise CaseProblem(name, "file too short for a NIfTI-1 header")
    size_le = int.from_bytes(raw[:4], "little")
    size_be = int.from_bytes(raw[:4], "big")
    if 540 in (size_le, size_be):
        raise CaseProblem(name, "NIfTI-2 is not supported; save as NIfTI-1")
    if 348 not in (size_le, size_be):
        raise CaseProblem(name, "not a NIfTI-1 file")
    try:
        hdr = Nifti1Header(binaryblock=raw, check=False)
    except Exception as exc:  # noqa: BLE001 - nibabel raises several types for bad headers
        raise CaseProblem(name, "invalid NIfTI header") from exc
    if bytes(hdr["magic"].item()).rstrip(b"\x00") != b"n+1":
        raise CaseProblem(name, "not a single-file NIfTI-1 image (magic n+1)")
    shape = tuple(int(s) for s in hdr.get_data_shape())
    if len(shape) not in (3, 4) or any(s < 1 for s in shape):
        raise CaseProblem(name, f"expected a 3-D or 4-D image, header says shape {shape}")
    try:
        dtype = np.dtype(hdr.get_data_dtype())
    except Exception as exc:  # noqa: BLE001
        raise CaseProblem(name, "unsupported NIfTI data type") from exc
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None:
        raise CaseProblem(name, f"unsupported NIfTI data type {dtype.name}")
    n_vox = int(np.prod(shape, dtype=np.int64))
    if n_vox > max_voxels:
        raise CaseProblem(name, f"image has {n_vox} voxels, more than the limit of {max_voxels}")
    vox_offset = int(hdr["vox_offset"])
    if vox_offset < 348 or vox_offset > MAX_VOX_OFFSET:
        raise CaseProblem(name, "invalid vox_offset in NIfTI header")
    zooms = tuple(float(z) for z in hdr.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise CaseProblem(name, f"voxel spacing must be positive and finite, got {zooms}")
    affine = np.asarray(hdr.get_best_affine(), dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise CaseProblem(name, "affine is not finite")
    slope, inter = hdr.get_slope_inter()
    for v in (slope, inter):
        if v is not None and not np.isfinite(v):
            raise CaseProblem(name, "scaling (scl_slope/scl_inter) is not finite")
    return NiftiInfo(name, path, shape, dtype, affine, zooms, slope, inter, vox_offset)  # type: ignore[arg-type]


def iter_channels(info: NiftiInfo) -> Iterator[Iterator[np.ndarray]]:
    """For each channel (4th axis), an iterator of raw value chunks in file (Fortran) order."""
    nvox = int(np.prod(info.spatial, dtype=np.int64))
    item = info.dtype.itemsize
    fh = _open(info.path)
    try:
        skip = info.vox_offset
        while skip > 0:
            got = fh.read(min(skip, 1 << 20))
            if not got:
                raise CaseProblem(info.name, "file truncated before the image data")
            skip -= len(got)

        def channel() -> Iterator[np.ndarray]:
            left = nvox
            while left > 0:
                n = min(left, CHUNK_VOXELS)
                try:
                    buf = fh.read(n * item)
                except (OSError, EOFError, gzip.BadGzipFile) as exc:
                    raise CaseProblem(info.name, "image data cannot be decompressed") from exc
                if len(buf) != n * item:
                    raise CaseProblem(info.name, "image data truncated")
                left -= n
                yield np.frombuffer(buf, dtype=info.dtype)

        for _ in range(info.channels):
            yield channel()
    except (OSError, EOFError, gzip.BadGzipFile, ValueError) as exc:
        raise CaseProblem(info.name, "image data cannot be decompressed") from exc
    finally:
        fh.close()


def clean_header(shape: tuple[int, int, int], dtype: np.dtype, affine: np.ndarray, zooms, slope, inter) -> bytes:  # type: ignore[no-untyped-def]
    """A fresh NIfTI-1 header (+ empty extension flag) holding geometry, dtype and scaling only."""
    hdr = Nifti1Header()
    hdr.set_data_shape(shape)
    hdr.set_data_dtype(dtype.newbyteorder("<"))
    hdr.set_sform(affine, code=1)
    hdr.set_qform(affine, code=1, strip_shears=True)
    hdr.set_zooms(tuple(float(z) for z in zooms))
    hdr.set_xyzt_units("mm", "sec")
    if slope is not None:
        hdr.set_slope_inter(slope, inter if inter is not None else 0.0)
    hdr["vox_offset"] = 352
    block = hdr.binaryblock
    return block + b"\x00\x00\x00\x00"


class CleanWriter:
    """Writes one gzip NIfTI file: clean header then little-endian data chunks."""

    def __init__(self, path: Path, header: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = gzip.open(path, "wb", compresslevel=1)
        self._fh.write(header)

    def write(self, chunk: np.ndarray) -> None:
        self._fh.write(np.ascontiguousarray(chunk, dtype=chunk.dtype.newbyteorder("<")).tobytes())

    def close(self) -> None:
        self._fh.close()


def _scaled(chunk: np.ndarray, slope: float | None, inter: float | None) -> np.ndarray:
    if slope is None or slope == 0:
        return chunk if inter is None else chunk + inter
    return chunk * slope + (inter or 0.0)


@dataclass(frozen=True)
class CaseSummary:
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    voxels_per_class: dict[int, int]
    n_channels: int


def ingest_case(
    images: list[NiftiInfo], label: NiftiInfo, num_labels: int, out_dir: Path
) -> CaseSummary:
    """Check one case (channels as separate 3-D files, or one 4-D file) and write its clean copy.

    `num_labels` is K + 1 (background included): label values must lie in 0..K.
    """
    if label.channels != 1:
        raise CaseProblem(label.name, f"label map must be 3-D, header says shape {label.shape}")
    for img in images:
        if img.spatial != label.spatial:
            raise CaseProblem(img.name, f"image shape {img.spatial} differs from label shape {label.spatial}")
        if not np.allclose(img.affine, label.affine, atol=1e-3, rtol=1e-4):
            raise CaseProblem(img.name, "image affine differs from the label's affine")
        if not np.allclose(img.zooms, label.zooms, atol=1e-4, rtol=1e-4):
            raise CaseProblem(img.name, "image spacing differs from the label's spacing")
    out_dir.mkdir(parents=True, exist_ok=True)
    channel = 0
    for img in images:
        header = clean_header(img.spatial, img.dtype, img.affine, img.zooms, img.slope, img.inter)
        for chunks in iter_channels(img):
            writer = CleanWriter(out_dir / f"image_{channel:04d}.nii.gz", header)
            try:
                for chunk in chunks:
                    if chunk.dtype.kind == "f" and not np.all(np.isfinite(chunk)):
                        raise CaseProblem(img.name, "image holds NaN or infinite values")
                    writer.write(chunk)
            finally:
                writer.close()
            channel += 1
    counts = np.zeros(num_labels, dtype=np.int64)
    out_dtype = np.dtype(np.uint8 if num_labels <= 256 else np.uint16)
    writer = CleanWriter(out_dir / "label.nii.gz", clean_header(label.spatial, out_dtype, label.affine, label.zooms, None, None))
    try:
        for chunks in iter_channels(label):
            for chunk in chunks:
                values = _scaled(chunk, label.slope, label.inter)
                if values.dtype.kind == "f":
                    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
                        raise CaseProblem(label.name, "label values must be integers")
                ints = values.astype(np.int64)
                lo, hi = int(ints.min()), int(ints.max())
                if lo < 0 or hi >= num_labels:
                    bad = lo if lo < 0 else hi
                    raise CaseProblem(label.name, f"label value {bad} is not a declared label (0..{num_labels - 1})")
                counts += np.bincount(ints, minlength=num_labels)
                writer.write(ints.astype(out_dtype))
    finally:
        writer.close()
    return CaseSummary(
        shape=label.spatial,
        spacing=tuple(float(z) for z in label.zooms),  # type: ignore[arg-type]
        voxels_per_class={k: int(v) for k, v in enumerate(counts)},
        n_channels=channel,
    )


def header_bytes_of(path: Path) -> bytes:
    """The stored header block (tests use it to check that text fields are blank)."""
    with _open(path) as fh:
        return fh.read(352)


__all__ = ["CaseProblem", "CaseSummary", "NiftiInfo", "ingest_case", "read_header", "header_bytes_of"]
