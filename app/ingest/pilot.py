"""Pilot-set archives in nnU-Net v2 or Medical Segmentation Decathlon layout, auto-detected.

nnU-Net: `dataset.json` with `channel_names`, `labels` (name -> value), `file_ending`;
`imagesTr/CASE_0000<ending>` per channel and `labelsTr/CASE<ending>`.
MSD: `dataset.json` with `modality`, `labels` (value -> name) and `training` pairs; images are 3-D
or 4-D (last axis = modality). Cases get opaque ids; the client's case names are not stored.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from app.ingest.archive import ArchiveLimits, extract, normalise_name
from app.ingest.errors import IngestError, Problem
from app.ingest.nifti import CaseProblem, CaseSummary, ingest_case, read_header

NIFTI_ENDINGS = (".nii.gz", ".nii")
MAX_PROBLEMS = 100
MAX_JSON_BYTES = 1 << 20


@dataclass(frozen=True)
class IngestLimits:
    archive: ArchiveLimits
    max_case_voxels: int
    max_cases: int = 2000


@dataclass
class IngestedCase:
    case_id: str
    position: int
    summary: CaseSummary


@dataclass
class IngestedPilotSet:
    layout: str
    dataset_name: str | None
    labels: dict[str, int]
    channels: dict[str, str]
    cases: list[IngestedCase] = field(default_factory=list)

    @property
    def num_foreground(self) -> int:
        return len(self.labels) - 1


@dataclass(frozen=True)
class _CaseFiles:
    key: str
    images: list[str]
    label: str
    four_d: bool


def _wanted(name: str) -> bool:
    path = PurePosixPath(name)
    if path.name.startswith("."):
        return False
    if path.name == "dataset.json":
        return True
    return len(path.parts) >= 2 and path.parts[-2] in ("imagesTr", "labelsTr") and path.name.endswith(NIFTI_ENDINGS)


def _find_root(files: dict[str, Path]) -> str:
    candidates = sorted((n for n in files if PurePosixPath(n).name == "dataset.json"), key=lambda n: (n.count("/"), n))
    if not candidates:
        raise IngestError("missing_dataset_json", "archive has no dataset.json (nnU-Net or MSD layout expected)")
    if len(candidates) > 1 and candidates[0].count("/") == candidates[1].count("/"):
        raise IngestError("ambiguous_archive", "archive holds several datasets", [Problem(c, "dataset.json") for c in candidates[:10]])
    parent = str(PurePosixPath(candidates[0]).parent)
    return "" if parent == "." else parent + "/"


def _load_json(name: str, path: Path) -> dict[str, Any]:
    if path.stat().st_size > MAX_JSON_BYTES:
        raise IngestError("invalid_dataset_json", "dataset.json is too large", [Problem(name, "larger than 1 MiB")])
    try:
        data = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        raise IngestError("invalid_dataset_json", "dataset.json is not valid JSON", [Problem(name, "invalid JSON")]) from exc
    if not isinstance(data, dict):
        raise IngestError("invalid_dataset_json", "dataset.json must hold a JSON object", [Problem(name, "not an object")])
    return data


def _consecutive_labels(pairs: list[tuple[str, Any]], where: str) -> dict[str, int]:
    """name -> value, checked: integer values 0..K, each once, 0 present, K >= 1."""
    out: dict[str, int] = {}
    for name, value in pairs:
        if isinstance(value, bool) or not isinstance(value, int):
            raise IngestError(
                "invalid_labels", f"label {name!r} must map to one integer (region-based labels are not supported)", [Problem(where, "labels")]
            )
        out[str(name)] = int(value)
    values = sorted(out.values())
    if values != list(range(len(values))):
        raise IngestError("invalid_labels", f"label values must be consecutive integers 0..K, got {values}", [Problem(where, "labels")])
    if len(values) < 2:
        raise IngestError("invalid_labels", "at least one foreground label is needed", [Problem(where, "labels")])
    return dict(sorted(out.items(), key=lambda kv: kv[1]))


def _channels(raw: Any, key: str, where: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not raw:
        raise IngestError("invalid_dataset_json", f"dataset.json needs a non-empty '{key}' object", [Problem(where, key)])
    try:
        idx = sorted(int(k) for k in raw)
    except ValueError as exc:
        raise IngestError("invalid_dataset_json", f"'{key}' keys must be channel indices", [Problem(where, key)]) from exc
    if idx != list(range(len(idx))):
        raise IngestError("invalid_dataset_json", f"'{key}' indices must be 0..C-1", [Problem(where, key)])
    return {str(i): str(raw[str(i)] if str(i) in raw else raw[i]) for i in idx}


def _nnunet_cases(root: str, meta: dict[str, Any], files: dict[str, Path], where: str) -> tuple[dict[str, str], dict[str, int], list[_CaseFiles]]:
    channels = _channels(meta.get("channel_names"), "channel_names", where)
    labels_raw = meta.get("labels")
    if not isinstance(labels_raw, dict):
        raise IngestError("invalid_dataset_json", "dataset.json needs a 'labels' object", [Problem(where, "labels")])
    labels = _consecutive_labels(list(labels_raw.items()), where)
    ending = meta.get("file_ending", ".nii.gz")
    if ending not in NIFTI_ENDINGS:
        raise IngestError("unsupported_file_ending", f"file_ending must be one of {NIFTI_ENDINGS}", [Problem(where, "file_ending")])
    n_ch = len(channels)
    images: dict[str, dict[int, str]] = {}
    problems: list[Problem] = []
    for name in files:
        if not name.startswith(root + "imagesTr/") or name.count("/") != root.count("/") + 1:
            continue
        stem = PurePosixPath(name).name
        if not stem.endswith(ending) or len(stem) < len(ending) + 6 or stem[-len(ending) - 5] != "_":
            problems.append(Problem(name, f"image file name must be CASE_XXXX{ending}"))
            continue
        core = stem[: -len(ending)]
        key, chan = core[:-5], core[-4:]
        if not chan.isdigit() or int(chan) >= n_ch:
            problems.append(Problem(name, f"channel index {chan} not in channel_names"))
            continue
        images.setdefault(key, {})[int(chan)] = name
    cases = []
    for key in sorted(images):
        label = f"{root}labelsTr/{key}{ending}"
        missing = [c for c in range(n_ch) if c not in images[key]]
        if missing:
            problems.append(Problem(images[key][min(images[key])], f"case lacks channel(s) {missing}"))
            continue
        if label not in files:
            problems.append(Problem(images[key][0], "case has no label file in labelsTr"))
            continue
        cases.append(_CaseFiles(key, [images[key][c] for c in range(n_ch)], label, False))
    keys = {c.key for c in cases} | set(images)
    for name in files:
        if name.startswith(root + "labelsTr/") and name.endswith(ending):
            if PurePosixPath(name).name[: -len(ending)] not in keys:
                problems.append(Problem(name, "label file has no image in imagesTr"))
    if problems:
        raise IngestError("invalid_pilot_set", "pilot set archive has problems", problems[:MAX_PROBLEMS])
    return channels, labels, cases


def _msd_cases(root: str, meta: dict[str, Any], files: dict[str, Path], where: str) -> tuple[dict[str, str], dict[str, int], list[_CaseFiles]]:
    channels = _channels(meta.get("modality"), "modality", where)
    labels_raw = meta.get("labels")
    if not isinstance(labels_raw, dict):
        raise IngestError("invalid_dataset_json", "dataset.json needs a 'labels' object", [Problem(where, "labels")])
    pairs: list[tuple[str, Any]] = []
    for value, name in labels_raw.items():
        try:
            pairs.append((str(name), int(value)))
        except ValueError as exc:
            raise IngestError("invalid_labels", "MSD label keys must be integers", [Problem(where, "labels")]) from exc
    labels = _consecutive_labels(pairs, where)
    training = meta.get("training")
    problems: list[Problem] = []
    entries: list[tuple[str, str]] = []
    if isinstance(training, list) and training:
        for i, entry in enumerate(training):
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(entry.get("label"), str):
                problems.append(Problem(where, f"training[{i}] needs 'image' and 'label' paths"))
                continue
            entries.append((root + normalise_name(entry["image"]), root + normalise_name(entry["label"])))
    else:
        for name in sorted(files):
            if name.startswith(root + "imagesTr/") and name.endswith(NIFTI_ENDINGS):
                entries.append((name, root + "labelsTr/" + PurePosixPath(name).name))
    cases = []
    for image, label in entries:
        if image not in files:
            problems.append(Problem(image, "image listed in dataset.json is missing"))
        elif label not in files:
            problems.append(Problem(label, "label listed in dataset.json is missing"))
        else:
            cases.append(_CaseFiles(PurePosixPath(image).name, [image], label, True))
    if problems:
        raise IngestError("invalid_pilot_set", "pilot set archive has problems", problems[:MAX_PROBLEMS])
    return channels, labels, sorted(cases, key=lambda c: c.key)


def ingest_archive(
    archive: Path,
    scratch: Path,
    out_dir: Path,
    limits: IngestLimits,
    new_case_id: Callable[[], str],
) -> IngestedPilotSet:
    """Validate the archive and write clean cases to `out_dir/cases/<case id>/`.

    On any problem `out_dir` is removed and IngestError raised; `scratch` is always removed.
    """
    try:
        files, _all = extract(archive, scratch, _wanted, limits.archive)
        root = _find_root(files)
        where = root + "dataset.json"
        meta = _load_json(where, files[where])
        if "channel_names" in meta:
            layout = "nnunet"
            channels, labels, cases = _nnunet_cases(root, meta, files, where)
        elif "modality" in meta:
            layout = "msd"
            channels, labels, cases = _msd_cases(root, meta, files, where)
        else:
            raise IngestError(
                "unknown_layout", "dataset.json has neither 'channel_names' (nnU-Net) nor 'modality' (MSD)", [Problem(where, "layout")]
            )
        if not cases:
            raise IngestError("empty_pilot_set", "archive holds no labelled training cases")
        if len(cases) > limits.max_cases:
            raise IngestError("too_many_cases", f"pilot set has {len(cases)} cases, more than {limits.max_cases}")
        name = meta.get("name") if isinstance(meta.get("name"), str) else None
        result = IngestedPilotSet(layout, name, labels, channels)
        problems: list[Problem] = []
        for position, case in enumerate(cases):
            try:
                images = [read_header(files[n], n, limits.max_case_voxels) for n in case.images]
                label = read_header(files[case.label], case.label, limits.max_case_voxels)
                if case.four_d:
                    if images[0].channels != len(channels):
                        raise CaseProblem(case.images[0], f"image has {images[0].channels} channel(s), dataset.json declares {len(channels)}")
                elif any(img.channels != 1 for img in images):
                    raise CaseProblem(case.images[0], "each nnU-Net channel file must be 3-D")
                case_id = new_case_id()
                summary = ingest_case(images, label, len(labels), out_dir / "cases" / case_id)
            except CaseProblem as exc:
                problems.append(exc.item)
                if len(problems) >= MAX_PROBLEMS:
                    break
                continue
            result.cases.append(IngestedCase(case_id, position, summary))
        if problems:
            raise IngestError("invalid_pilot_set", "some cases failed validation", problems)
        return result
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
