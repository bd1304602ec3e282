"""Run the validation benchmark: build the zoo, fine-tune every (model, task, seed), score every
(model, task, decoder) through the production `score_model`, and write the results and report.

Every fine-tune and every score is cached as JSON under a key that hashes its inputs (checkpoint
sha256, task spec hash, case layout, config incl. seed and budget, code versions), so an
interrupted run continues where it stopped and a rerun from a full cache recomputes nothing.
Work runs in `profile.jobs` spawned processes with one torch thread each (reproducible numbers
whatever the machine's core count).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from bench.validation.profiles import DecoderKey, Profile, decoder_label

REPO = Path(__file__).resolve().parents[2]
CACHE_VERSION = "1"
"""Bump when the layout of a cached record changes (old records are then ignored)."""


# ----------------------------------------------------------------------------- cache
def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def digest(obj: Any) -> str:
    """sha256 of the canonical JSON of `obj`: the key of a cached record."""
    return hashlib.sha256(canonical(obj).encode()).hexdigest()


class Cache:
    """JSON records under `root/<kind>/<key[:2]>/<key>.json`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.json"

    def get(self, kind: str, key: str) -> dict[str, Any] | None:
        p = self.path(kind, key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            return None  # a torn or foreign file: recompute

    def put(self, kind: str, key: str, value: dict[str, Any]) -> None:
        p = self.path(kind, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(json_safe(value), sort_keys=True))
        os.replace(tmp, p)


RECORD_KINDS = ("finetune", "score")
RECORDS_FILE = "records.jsonl.gz"
"""Every record of a run, exported beside results.json: committed, it lets a fresh clone (or the next
session on a fresh machine) resume or re-report the run without recomputing what it holds."""


def export_records(path: Path, items: Sequence[dict[str, Any]], records: Mapping[str, dict[str, Any]]) -> int:
    """Write the records of `items` held in `records` as gzip JSON lines sorted by key (byte-stable:
    no timestamp in the gzip header), atomically; returns how many were written."""
    import gzip

    kinds = {it["key"]: it["kind"] for it in items}
    keys = sorted(k for k in kinds if k in records)
    lines = "".join(json.dumps({"kind": kinds[k], "key": k, "record": json_safe(records[k])}, sort_keys=True) + "\n" for k in keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(lines.encode())
    os.replace(tmp, path)
    return len(keys)


def import_records(path: Path, items: Sequence[dict[str, Any]] | None, cache: Cache) -> int:
    """Seed `cache` with the records in an exported file that the plan `items` needs (None: every
    record of a known kind) and the cache lacks. A record is taken only if its key is the digest of
    the inputs it carries (and, given `items`, of the same kind), so a stale or edited file cannot
    feed a record to the wrong item; returns how many."""
    import gzip

    if not path.is_file():
        return 0
    wanted = {it["key"]: it["kind"] for it in items} if items is not None else None
    seeded = 0
    with gzip.open(path, "rt") as fh:
        for line in fh:
            entry = json.loads(line)
            key, kind, rec = entry.get("key"), entry.get("kind"), entry.get("record")
            if wanted is not None and wanted.get(key) != kind:
                continue
            if kind not in RECORD_KINDS or not isinstance(rec, dict) or digest(rec.get("inputs")) != key:
                continue
            if cache.get(kind, key) is None:
                cache.put(kind, key, rec)
                seeded += 1
    return seeded


def json_safe(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def default_cache_root() -> Path:
    """Where runs cache their records unless told otherwise: `$TOPORANK_VALIDATION_CACHE`, else
    `~/.cache/toporank-validation`, outside the checkout, so a run that spans sessions (or a fresh
    clone) resumes instead of starting over."""
    env = os.environ.get("TOPORANK_VALIDATION_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "toporank-validation"


# ----------------------------------------------------------------------------- work items
@dataclass(frozen=True)
class TaskInput:
    """A task as the workers see it: its spec, where its cases are, and the hash of both."""

    name: str
    spec: dict[str, Any]
    spec_hash: str
    cases_file: str
    cases_key: str
    k: int
    regime: str
    held_out: bool


def finetune_config(spec_finetune: dict[str, Any], profile: Profile, seed: int, device: str, protocol: str = "finetune") -> dict[str, Any]:
    """The config of one truth run: the task's block, the profile's overrides for `protocol`
    (`finetune`, or `frozen`: the encoder never trains), its step scale."""
    from worker.finetune import FinetuneConfig

    if protocol not in ("finetune", "frozen"):
        raise ValueError(f"unknown truth protocol {protocol!r}")
    overrides = profile.finetune if protocol == "finetune" else (profile.frozen or {})
    cfg = {**spec_finetune, **overrides, "seed": int(seed), "threads": 1}
    if profile.steps_scale != 1.0:
        cfg["steps"] = max(1, int(round(cfg.get("steps", FinetuneConfig.steps) * profile.steps_scale)))
        if "encoder_warmup_steps" in cfg:
            cfg["encoder_warmup_steps"] = int(round(cfg["encoder_warmup_steps"] * profile.steps_scale))
    return FinetuneConfig.from_dict(cfg).to_dict()


def scoring_config(profile: Profile, key: DecoderKey, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The scoring config of one (model, task, decoder) item, with a scoring pass's `overrides`. The
    GRTD variant is pinned to the spec's so the cache does not depend on the code default (both
    variants are computed anyway)."""
    from transferability.config import ScoringConfig

    init, seed, n = key
    cfg = ScoringConfig.from_dict({**profile.scoring, **(overrides or {}), "decoder_init": init, "decoder_seed": seed, "n_decoders": n,
                                   "grtd_variant": "contracted"})
    return cfg.to_dict()


def code_versions() -> dict[str, str]:
    from bench.validation.tasks import GENERATOR_VERSION
    from bench.validation.zoo import ZOO_CODE_VERSION
    from transferability.config import SCORING_CODE_VERSION
    from worker.finetune import FINETUNE_CODE_VERSION

    return {
        "scoring": SCORING_CODE_VERSION,
        "finetune": FINETUNE_CODE_VERSION,
        "zoo": ZOO_CODE_VERSION,
        "task_generator": GENERATOR_VERSION,
        "bench_cache": CACHE_VERSION,
    }


# ----------------------------------------------------------------------------- worker side
def _init_worker() -> None:
    import warnings

    import torch

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")


@lru_cache(maxsize=4)
def _load_cases(path: str) -> tuple[list[Any], list[Any]]:
    from worker.extract import CaseVolume

    z = np.load(path)
    out: dict[str, list[Any]] = {"train": [], "test": []}
    for split in out:
        for i in range(int(z[f"{split}_n"])):
            out[split].append(CaseVolume(z[f"{split}_{i}_image"], z[f"{split}_{i}_label"], tuple(z[f"{split}_{i}_spacing"])))
    return out["train"], out["test"]


class SealedTaskError(RuntimeError):
    """A score of a sealed held-out task was asked for before the freeze file was committed."""


def run_item(item: dict[str, Any]) -> dict[str, Any]:
    """Compute one cached record (in a worker process) and store it; returns its kind and key.
    Refuses a score of a sealed task unless the plan saw a committed freeze (a second lock behind
    the planner's, so no code path scores a sealed task early)."""
    if item["kind"] == "score" and item.get("sealed") and not item.get("freeze_committed"):
        raise SealedTaskError(f"refusing to score sealed task {item['inputs']['task']!r}: no committed {FREEZE_FILE}")
    cache = Cache(Path(item["cache"]))
    rec = _finetune_record(item) if item["kind"] == "finetune" else _score_record(item)
    rec["inputs"] = item["inputs"]
    cache.put(item["kind"], item["key"], rec)
    return {"kind": item["kind"], "key": item["key"], "label": item["label"], "record": rec}


def _finetune_record(item: dict[str, Any]) -> dict[str, Any]:
    from models_registry.specs import ModelSpec
    from worker.finetune import FinetuneConfig, finetune

    train, test = _load_cases(item["cases_file"])
    res = finetune(
        ModelSpec(**item["spec"]), Path(item["checkpoint"]), train, test, item["k"] + 1,
        FinetuneConfig.from_dict(item["config"]), device=item["device"],
    )
    return res.to_dict()


def _score_record(item: dict[str, Any]) -> dict[str, Any]:
    from models_registry.specs import ModelSpec
    from transferability.config import ScoringConfig
    from worker.pipeline import score_model

    train, _ = _load_cases(item["cases_file"])  # the pilot set is the labelled training cases
    res = score_model(
        ModelSpec(**item["spec"]), Path(item["checkpoint"]), train, ScoringConfig.from_dict(item["config"]),
        device=item["device"], keep_features=bool(item["control"]),
    )
    rec = {
        "grtd": res.grtd,
        "lbtc": res.lbtc,
        "grtd_variants": res.details["grtd"]["variants"],
        "grtd_per_decoder": res.details["grtd"]["per_decoder"],
        "per_stage": res.per_stage,
        "baselines": res.baselines,
        "baselines_omitted": res.diagnostics.get("baselines_omitted", {}),
        "timings": res.timings,
        "config_hash": res.config_hash,
        "code_version": res.code_version,
        "n_points": res.diagnostics["n_points"],
        "n_anchors": res.diagnostics["n_anchors"],
        "patches_used": res.diagnostics["patches_used"],
    }
    if item["control"]:
        rec["control"] = label_permutation_control(res, item["shuffles"], seed=item["config"]["seed"])
        rec["ccfv_only"] = _time_ccfv(res)
    return rec


def shuffle_patch_labels(labels: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Labels permuted among the in-volume points of each patch (the patch's label mix is kept)."""
    out = labels.copy()
    for a in range(labels.shape[0]):
        idx = np.flatnonzero(mask[a])
        out[a, idx] = labels[a, idx[rng.permutation(idx.size)]]
    return out


def label_permutation_control(res: Any, shuffles: int, seed: int) -> dict[str, Any]:
    """Every metric recomputed on the same features with shuffled labels (`shuffles` draws, mean).

    Point labels are permuted over all sample points (case ids kept, class counts kept), patch
    labels within each patch. A metric that measures transferability must move.
    """
    from transferability.baselines import score_all
    from transferability.grtd import grtd
    from transferability.lbtc import lbtc

    f = res.features
    draws: list[dict[str, float]] = []
    for r in range(shuffles):
        rng = np.random.default_rng([seed, 104729, r])
        y = rng.permutation(f.labels)
        pl = {s: shuffle_patch_labels(f.patch_labels[s], f.patch_mask[s], rng) for s in f.lbtc_stages}
        g = grtd({s: f.points[s] for s in f.grtd_stages}, y, stages=f.grtd_stages, variant="contracted", extra_variants=("penalised",))
        out = {"grtd_contracted": g.variants["contracted"], "grtd_penalised": g.variants["penalised"]}
        out["lbtc"] = lbtc(f.patches, pl, f.patch_mask, stages=f.lbtc_stages).value
        out.update(score_all(f.points[f.baseline_stage], y, f.case, seed=seed))
        draws.append(out)
    keys = sorted(set().union(*draws))
    return {"shuffled": {k: float(np.mean([d[k] for d in draws if k in d])) for k in keys}, "shuffles": shuffles}


def _time_ccfv(res: Any) -> dict[str, float]:
    """CCFV alone on the same features (the paper's time comparison): its own compute seconds,
    checked equal to the value `score_all` stored."""
    from transferability.baselines.ccfv import ccfv_per_stage

    f = res.features
    x = f.points[f.baseline_stage].astype(np.float64)
    t0 = time.perf_counter()
    cases = [{f.baseline_stage: (x[f.case == m], f.labels[f.case == m])} for m in np.unique(f.case)]
    value = sum(ccfv_per_stage(cases).values())
    seconds = time.perf_counter() - t0
    stored = res.baselines.get("ccfv")
    if stored is not None and not math.isclose(value, stored, rel_tol=1e-9, abs_tol=1e-12):
        raise RuntimeError(f"CCFV timed {value} differs from score_all's {stored}")
    return {"value": value, "compute_s": seconds}


# ----------------------------------------------------------------------------- parent side
def git_state() -> dict[str, Any]:
    """The commit the run's code came from, and whether tracked files differed from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        return {"commit": head, "dirty": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def _build_zoo_group(root: str, zoo_profile: str, members: list[str], device: str) -> list[Any]:
    from bench.validation.zoo import build_zoo

    _init_worker()
    return build_zoo(Path(root), zoo_profile, members=members, device=device, threads=1)


def build_zoo_parallel(root: Path, zoo_profile: str, members: Sequence[str] | None, device: str, jobs: int,
                       say: Callable[[str], None]) -> list[Any]:
    """The profile's zoo, one pretraining run per process with one torch thread (bitwise
    repeatable: with more threads the CPU kernels' reductions are not), each run cached under
    `root/<run>/` with its own manifest; members returned in zoo order."""
    from bench.validation.zoo import MEMBER_DEFS, MEMBER_NAMES, ZOO_PROFILES

    names = list(members) if members is not None else list(ZOO_PROFILES[zoo_profile].member_names())
    runs: dict[str, list[str]] = {}
    for n in names:
        runs.setdefault(MEMBER_DEFS[n].run, []).append(n)
    steps = ZOO_PROFILES[zoo_profile].steps
    order = sorted(runs, key=lambda r: -max(steps[n] for n in runs[r]))  # longest runs first
    built: dict[str, Any] = {}
    if jobs <= 1 or device.startswith("cuda"):
        for r in order:
            for m in _build_zoo_group(str(root / r), zoo_profile, runs[r], device):
                built[m.name] = m
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            futs = {pool.submit(_build_zoo_group, str(root / r), zoo_profile, runs[r], device): r for r in order}
            for fut in futs:
                for m in fut.result():
                    built[m.name] = m
                    say(f"zoo member {m.name}: {'cached' if m.cached else 'built'} ({m.sha256[:12]})")
    return [built[n] for n in MEMBER_NAMES if n in built]


def prepare_tasks(specs: Sequence[Any], profile: Profile, cache: Cache, say: Callable[[str], None]) -> list[TaskInput]:
    """Build (or reuse) every task's cases as one .npz per task under the cache."""
    from bench.validation.tasks import GENERATOR_VERSION, build_cases

    out = []
    for spec in specs:
        n_train = profile.n_train or spec.n_train
        n_test = profile.n_test or spec.n_test
        ck = {"spec": spec.spec_hash(), "generator": GENERATOR_VERSION, "n_train": n_train, "n_test": n_test, "spacing_scale": profile.spacing_scale}
        key = digest(ck)
        path = cache.root / "cases" / f"{spec.name}-{key[:16]}.npz"
        if not path.is_file():
            t0 = time.perf_counter()
            tc = build_cases(spec, n_train=n_train, n_test=n_test, spacing_scale=profile.spacing_scale)
            arrays: dict[str, Any] = {"train_n": len(tc.train), "test_n": len(tc.test)}
            for split, cases in (("train", tc.train), ("test", tc.test)):
                for i, c in enumerate(cases):
                    arrays[f"{split}_{i}_image"] = c.image
                    arrays[f"{split}_{i}_label"] = c.label.astype(np.uint8)
                    arrays[f"{split}_{i}_spacing"] = np.asarray(c.spacing)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, path)
            say(f"task {spec.name}: {n_train} train + {n_test} test cases built in {time.perf_counter() - t0:.1f} s")
        out.append(TaskInput(spec.name, spec.to_dict(), spec.spec_hash(), str(path), key, spec.k, spec.regime, spec.held_out))
    return out


def model_spec_for_task(member: Any, task: TaskInput) -> dict[str, Any]:
    """The registry spec a member is fine-tuned and scored with on `task`: its own, or, when the task
    sets `intensity`, its preprocessing (from the checkpoint's adaptation plan) with that
    normalisation, as a hospital would register an MR-pretrained encoder for a CT pilot set."""
    intensity = task.spec.get("intensity")
    if not intensity:
        return dict(member.spec)
    from worker.adapters.nnssl import plan_preprocessing

    plan = json.loads((Path(member.checkpoint).parent / "adaptation_plan.json").read_text())
    prep = plan_preprocessing(plan, int(plan.get("pretrain_num_input_channels", 1)))
    if prep is None:
        raise ValueError(f"zoo member {member.name}: its adaptation plan has no preprocessing to adapt")
    full = {**prep.model_dump(mode="json"), "ct_clip": None, "ct_mean": None, "ct_std": None, **intensity}
    return {**member.spec, "preprocessing": full}


# ----------------------------------------------------------------------------- sealing
SEALED_FILE = "sealed.json"
FREEZE_FILE = "freeze.json"


def seal_digest(spec: Any) -> str:
    """What sealing commits for a task: the sha256 of its fully-defaulted spec (`spec_hash`)."""
    return str(spec.spec_hash())


def content_digest(spec: Any) -> str:
    """The sha256 of what makes a task's cases and truth: its spec without name, title and
    description, so a sealed spec copied under another name is still recognised as sealed."""
    body = {k: v for k, v in spec.to_dict().items() if k not in ("name", "title", "description")}
    return digest(body)


@dataclass(frozen=True)
class Sealed:
    """The sealed tasks of a benchmark: name -> spec hash, and the content hashes."""

    by_name: Mapping[str, str]
    contents: frozenset[str]

    def __contains__(self, spec: Any) -> bool:
        return spec.name in self.by_name or content_digest(spec) in self.contents

    def __len__(self) -> int:
        return len(self.by_name)


def read_sealed(path: Path) -> Sealed:
    """The sealed tasks listed in a sealed.json (none when the file does not exist)."""
    if not path.is_file():
        return Sealed({}, frozenset())
    data = json.loads(path.read_text())
    rows = data.get("tasks", [])
    return Sealed({str(t["name"]): str(t["spec_hash"]) for t in rows}, frozenset(str(t["content_hash"]) for t in rows))


def seal(profile: Profile, path: Path) -> dict[str, Any]:
    """Write `sealed.json` for the profile's held-out tasks and their reserves: name, spec hash and
    file of each, in roster order. Sealing happens once, before any truth exists; an existing file
    is never changed (RuntimeError if the profile's held-out specs no longer match it)."""
    from bench.validation.tasks import HELD_OUT_DIR, HELD_OUT_RESERVE_DIR, load_tasks

    rows = []
    for names, folder, role in ((profile.held_out, HELD_OUT_DIR, "held_out"), (profile.held_out_reserves, HELD_OUT_RESERVE_DIR, "reserve")):
        for name in names:
            f = folder / f"{name}.json"
            spec = load_tasks([f])[0]
            if not spec.held_out:
                raise ValueError(f"{f}: a sealed task must say held_out: true")
            rows.append({"name": spec.name, "role": role, "spec_hash": seal_digest(spec), "content_hash": content_digest(spec),
                         "file": str(f.relative_to(REPO))})
    data = {"profile": profile.name, "tasks": rows,
            "rule": "no score of these tasks before the method study's freeze.json is committed (bench/validation/run.py refuses)"}
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("tasks") != rows:
            raise RuntimeError(f"{path} exists and differs: sealed tasks never change")
        return old
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return data


def check_sealed(specs: Sequence[Any], sealed: Sealed) -> None:
    """Every held-out spec must be sealed, unchanged: a held-out task whose spec differs from the
    hash committed before any truth existed is refused, so it cannot be swapped after a look."""
    for spec in specs:
        want = sealed.by_name.get(spec.name)
        if want is None:
            raise RuntimeError(f"held-out task {spec.name!r} is not in {SEALED_FILE}: seal it (commit its hash) before any run")
        if seal_digest(spec) != want:
            raise RuntimeError(f"held-out task {spec.name!r} differs from its sealed spec ({want[:12]}...): sealed specs never change")


def freeze_state(path: Path) -> dict[str, Any]:
    """Whether the freeze file of the method study exists, parses and is committed unchanged in git
    (its last commit id); sealed tasks may be scored only when `committed` is true."""
    out: dict[str, Any] = {"path": str(path), "exists": path.is_file(), "committed": False, "commit": None}
    if not out["exists"]:
        return out
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        out["error"] = "not JSON"
        return out
    if not isinstance(data, dict) or "default" not in data:
        out["error"] = "no 'default' config"
        return out
    try:
        rel = str(path.resolve().relative_to(REPO))
        commit = subprocess.run(["git", "log", "-n", "1", "--format=%H", "--", rel], cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", rel], cwd=REPO, capture_output=True, text=True,
                               check=True).stdout.strip()
    except (OSError, ValueError, subprocess.CalledProcessError):
        out["error"] = "not in this git checkout"
        return out
    out["commit"] = commit or None
    out["committed"] = bool(commit) and not dirty
    return out


# ----------------------------------------------------------------------------- plan
GROUPS = ("tuning", "held_out")
"""Task groups: the tuning tasks (scored, used to choose anything) and the sealed held-out tasks
(truth only, until a freeze is committed)."""


@dataclass
class TaskGroups:
    """The roster candidates of a run: per group, the primary tasks and the ordered reserves."""

    primary: dict[str, list[Any]]
    reserves: dict[str, list[Any]]

    def all_specs(self) -> list[Any]:
        return [s for g in GROUPS for s in self.primary.get(g, []) + self.reserves.get(g, [])]


def task_groups(profile: Profile, task_files: Sequence[Path] | None) -> TaskGroups:
    """The profile's tasks by group (tuning, reserve, held out, held-out reserve), or with `task_files`
    the given specs as tuning tasks (a spec the benchmark has never seen: no reserves, no sealing)."""
    from bench.validation.tasks import (
        HELD_OUT_DIR,
        HELD_OUT_RESERVE_DIR,
        RESERVE_DIR,
        TASK_DIR,
        load_tasks,
    )

    if task_files:
        return TaskGroups({"tuning": load_tasks([Path(p) for p in task_files]), "held_out": []}, {"tuning": [], "held_out": []})

    def named(names: Sequence[str], folder: Path) -> list[Any]:
        return load_tasks([folder / f"{n}.json" for n in names]) if names else []

    tuning = named(profile.tasks, TASK_DIR) if profile.tasks is not None else load_tasks([TASK_DIR])
    groups = TaskGroups(
        {"tuning": tuning, "held_out": named(profile.held_out, HELD_OUT_DIR)},
        {"tuning": named(profile.reserves, RESERVE_DIR), "held_out": named(profile.held_out_reserves, HELD_OUT_RESERVE_DIR)},
    )
    load_tasks_unique(groups.all_specs())
    for s in groups.primary["held_out"] + groups.reserves["held_out"]:
        if not s.held_out:
            raise ValueError(f"task {s.name!r} is listed as held out but its spec says held_out: false")
    for s in groups.primary["tuning"] + groups.reserves["tuning"]:
        if s.held_out:
            raise ValueError(f"task {s.name!r} is a held-out spec listed as a tuning task")
    return groups


def load_tasks_unique(specs: Sequence[Any]) -> None:
    """Names and seeds must be distinct across every group of a run."""
    names = [s.name for s in specs]
    seeds = [s.seed for s in specs]
    if len(set(names)) != len(names) or len(set(seeds)) != len(seeds):
        raise ValueError(f"task names and seeds must be distinct across the run's groups: {names}, {seeds}")


def realistic_members(zoo: Sequence[Any]) -> list[str]:
    """The zoo a hospital holds: every member but the degradation ladders."""
    from bench.validation.zoo import MEMBER_DEFS

    return [m.name for m in zoo if MEMBER_DEFS[m.name].ladder_of is None]


def random_members(zoo: Sequence[Any]) -> list[str]:
    """The untrained (random-init) members."""
    from bench.validation.zoo import MEMBER_DEFS

    return [m.name for m in zoo if MEMBER_DEFS[m.name].objective == "random"]


def seed_plan(profile: Profile, dice_by_seed: Mapping[int, Mapping[str, float]] | None, realistic: Sequence[str]) -> dict[str, Any]:
    """The fine-tune seeds a task needs under the seed rule, given the Dice it has so far
    (`seed -> model -> Dice` of the seeds computed, or None before any): the base seeds, then each
    further stage while the split-half tau of the seeds so far (realistic zoo) stays below the rule's
    threshold. Returns the seeds, whether they are all computed (`final`), and the taus that decided."""
    from bench.validation.analysis import split_half_tau

    seeds = list(profile.seeds)
    decided: list[dict[str, Any]] = []
    stages = list(profile.seed_rule.stages) if profile.seed_rule is not None else []
    have = dict(dice_by_seed or {})
    while True:
        if not all(s in have for s in seeds):
            return {"seeds": seeds, "final": False, "decisions": decided}
        if not stages:
            return {"seeds": seeds, "final": True, "decisions": decided}
        by_model = {m: [have[s][m] for s in seeds] for m in realistic}
        tau = split_half_tau(by_model)["tau"]
        more = not (math.isfinite(tau) and tau >= profile.seed_rule.below_tau)  # type: ignore[union-attr]
        decided.append({"seeds": list(seeds), "split_half_tau": tau, "add": list(stages[0]) if more else []})
        if not more:
            return {"seeds": seeds, "final": True, "decisions": decided}
        seeds += list(stages.pop(0))


def admission(profile: Profile, dice: Mapping[str, Sequence[float]], realistic: Sequence[str], randoms: Sequence[str]) -> dict[str, Any]:
    """The admission verdict of a task from its final truth (model -> Dice per seed), by the
    profile's rule; never from a score."""
    from bench.validation.analysis import split_half_tau, spread_to_noise

    real = {m: dice[m] for m in realistic}
    rnd = float(np.mean([np.mean(dice[m]) for m in randoms])) if randoms else float("nan")
    ratio = spread_to_noise(real)
    tau = split_half_tau(real)["tau"]
    rule = profile.admission
    if rule is None:
        return {"admitted": True, "informative": bool(math.isfinite(tau) and tau >= 0.5), "random_dice": rnd,
                "spread_over_noise": ratio, "split_half_tau": tau, "reasons": []}
    reasons = []
    lo, hi = rule.random_dice
    if not (math.isfinite(rnd) and lo <= rnd <= hi):
        reasons.append(f"random-init Dice {rnd:.3f} outside [{lo}, {hi}]")
    if not (math.isfinite(ratio) and ratio >= rule.spread_over_noise):
        reasons.append(f"spread over noise {ratio:.2f} < {rule.spread_over_noise}")
    admitted = not reasons
    return {"admitted": admitted, "informative": bool(admitted and math.isfinite(tau) and tau >= rule.informative_tau),
            "random_dice": rnd, "spread_over_noise": ratio, "split_half_tau": tau, "reasons": reasons}


@dataclass
class TaskState:
    """Where a task stands: its group, whether it is a reserve, the seeds it needs, its verdict."""

    spec: Any
    group: str
    reserve: bool
    seeds: list[int]
    seeds_final: bool
    seed_decisions: list[dict[str, Any]]
    verdict: dict[str, Any] | None  # None until its truth (all seeds, both protocols) is in
    replaces: str | None = None


Lookup = Callable[[Mapping[str, Any]], "dict[str, Any] | None"]
"""The record of a plan item, or None when it is not computed yet."""


class Planner:
    """Turns the profile, the zoo and the records so far into the records still needed, deciding the
    seeds (seed rule), admission and reserves from the truth alone. A pure function of the records:
    the same records always give the same plan, so a resumed or repeated run decides the same."""

    def __init__(self, profile: Profile, zoo: Sequence[Any], groups: TaskGroups, cache: Cache, device: str,
                 prepare: Callable[[Sequence[Any]], list[TaskInput]], sealed: Sealed, freeze: Mapping[str, Any]) -> None:
        self.profile, self.zoo, self.groups, self.cache, self.device = profile, zoo, groups, cache, device
        self.realistic = realistic_members(zoo)
        self.randoms = random_members(zoo)
        self.sealed, self.freeze = sealed, dict(freeze)
        self._prepare = prepare
        self._inputs: dict[str, TaskInput] = {}
        self.versions = code_versions()

    def task_input(self, spec: Any) -> TaskInput:
        if spec.name not in self._inputs:
            self._inputs[spec.name] = self._prepare([spec])[0]
        return self._inputs[spec.name]

    def is_sealed(self, spec: Any) -> bool:
        """Sealed by name or by content: a sealed spec passed under another name stays sealed."""
        return spec in self.sealed

    def scorable(self, spec: Any) -> bool:
        """A task may be scored unless it is sealed and no freeze is committed."""
        return not self.is_sealed(spec) or bool(self.freeze.get("committed"))

    # -- items
    def finetune_items(self, t: TaskInput, protocol: str, seeds: Sequence[int], group: str) -> list[dict[str, Any]]:
        items = []
        for m in self.zoo:
            spec = model_spec_for_task(m, t)
            base = self._base(t, m, spec)
            common = self._common(t, m, spec)
            for seed in seeds:
                cfg = finetune_config(t.spec.get("finetune", {}), self.profile, seed, self.device, protocol)
                inputs = {**base, "protocol": protocol, "finetune_config": cfg, "finetune_code": self.versions["finetune"],
                          "device": self.device, "cache_version": CACHE_VERSION}
                items.append({**common, "kind": "finetune", "key": digest(inputs), "inputs": inputs, "config": cfg, "phase": 0,
                              "protocol": protocol, "group": group, "label": f"{protocol} {t.name} {m.name} seed {seed}"})
        return items

    def score_items(self, task_spec: Any, group: str) -> list[dict[str, Any]]:
        """Every score of a task: the decoder sweep (the first carries the control), then the profile's
        extra scoring passes (`score_passes`, decoder kaiming 0) on the tuning tasks."""
        items = []
        t = self.task_input(task_spec)
        sealed = self.is_sealed(task_spec)
        configs: list[tuple[str, dict[str, Any], bool, int, str | None]] = [
            (decoder_label(dk), scoring_config(self.profile, dk), j == 0, 1 if j == 0 else 2, None)
            for j, dk in enumerate(self.profile.decoders)]
        if group == "tuning":
            configs += [(f"pass-{name}", scoring_config(self.profile, ("kaiming", 0, 1), overrides), False, 3, name)
                        for name, overrides in self.profile.score_passes.items()]
        for m in self.zoo:
            mspec = model_spec_for_task(m, t)
            base = self._base(t, m, mspec)
            common = self._common(t, m, mspec)
            for label, cfg, control, phase, pass_name in configs:
                inputs = {**base, "scoring_config": cfg, "scoring_code": self.versions["scoring"],
                          "control_shuffles": self.profile.shuffles if control else 0, "device": self.device, "cache_version": CACHE_VERSION}
                items.append({**common, "kind": "score", "key": digest(inputs), "inputs": inputs, "config": cfg, "control": control,
                              "phase": phase, "group": group, "sealed": sealed, "pass": pass_name,
                              "freeze_committed": bool(self.freeze.get("committed")), "shuffles": self.profile.shuffles,
                              "decoder": label, "label": f"score {t.name} {m.name} {label}"})
        return items

    def _base(self, t: TaskInput, m: Any, spec: dict[str, Any]) -> dict[str, Any]:
        return {"task": t.name, "model": m.name, "spec_hash": t.spec_hash, "cases_key": t.cases_key, "checkpoint_sha256": m.sha256,
                "model_spec": spec}

    def _common(self, t: TaskInput, m: Any, spec: dict[str, Any]) -> dict[str, Any]:
        return {"cache": str(self.cache.root), "cases_file": t.cases_file, "k": t.k, "spec": spec, "checkpoint": str(m.checkpoint),
                "device": self.device}

    # -- decisions
    def _dice(self, items: Sequence[dict[str, Any]], lookup: Lookup) -> dict[int, dict[str, float]]:
        """seed -> model -> Dice for the seeds every model has."""
        by_seed: dict[int, dict[str, float]] = {}
        for it in items:
            rec = lookup(it)
            if rec is not None:
                by_seed.setdefault(int(it["config"]["seed"]), {})[it["inputs"]["model"]] = _dice_value(rec)
        models = {m.name for m in self.zoo}
        return {s: d for s, d in by_seed.items() if set(d) == models}

    def state(self, spec: Any, group: str, reserve: bool, lookup: Lookup) -> tuple[TaskState, list[dict[str, Any]]]:
        """A task's state and every truth item it needs now."""
        t = self.task_input(spec)
        max_seeds = list(self.profile.seeds) + [s for st in (self.profile.seed_rule.stages if self.profile.seed_rule else ()) for s in st]
        probe = self.finetune_items(t, "finetune", max_seeds, group)
        plan = seed_plan(self.profile, self._dice(probe, lookup), self.realistic)
        items = [it for it in probe if it["config"]["seed"] in plan["seeds"]]
        if self.profile.frozen is not None:
            items += self.finetune_items(t, "frozen", self.profile.frozen_seeds(), group)
        verdict = None
        recs = [lookup(it) for it in items]
        if plan["final"] and all(r is not None for r in recs):
            dice: dict[str, list[float]] = {m.name: [] for m in self.zoo}
            for it, rec in zip(items, recs):
                if it["protocol"] == "finetune":
                    dice[it["inputs"]["model"]].append(_dice_value(rec))  # type: ignore[arg-type]
            verdict = admission(self.profile, dice, self.realistic, self.randoms)
        return TaskState(spec, group, reserve, plan["seeds"], plan["final"], plan["decisions"], verdict), items

    def plan(self, lookup: Lookup) -> tuple[list[TaskState], list[dict[str, Any]]]:
        """The roster (every task considered so far, with its state) and every item it needs now:
        truth for the primary tasks and for each reserve called in by a failed task of its group,
        scores for the admitted tuning tasks (and held-out ones only after a committed freeze)."""
        states: list[TaskState] = []
        items: list[dict[str, Any]] = []
        for group in GROUPS:
            reserves = list(self.groups.reserves.get(group, []))
            queue: list[tuple[Any, bool, str | None]] = [(s, False, None) for s in self.groups.primary.get(group, [])]
            while queue:
                spec, is_reserve, replaces = queue.pop(0)
                st, its = self.state(spec, group, is_reserve, lookup)
                st.replaces = replaces
                states.append(st)
                items += its
                if st.verdict is not None and not st.verdict["admitted"] and reserves:
                    queue.append((reserves.pop(0), True, spec.name))
                if st.verdict is not None and st.verdict["admitted"] and self.scorable(spec):
                    items += self.score_items(spec, group)
        return states, items


def _dice_value(rec: Mapping[str, Any]) -> float:
    d = rec.get("dice")
    return float(d) if d is not None else float("nan")


def execute(
    items: Sequence[dict[str, Any]], cache: Cache, jobs: int, say: Callable[[str], None],
    checkpoint: Callable[[], None] | None = None, checkpoint_s: float = 600.0,
) -> tuple[dict[str, dict[str, Any]], int]:
    """Run the items that are not cached yet (in `jobs` processes); return every record by key
    and how many were computed now. `checkpoint()` is called every `checkpoint_s` seconds while work
    goes on (the run exports its records there, so they can be committed as they land)."""
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for it in items:
        rec = cache.get(it["kind"], it["key"])
        if rec is not None:
            records[it["key"]] = rec
        else:
            todo.append(it)
    # truth before scores (phase), tuning tasks before held-out ones, otherwise plan order
    todo.sort(key=lambda it: (it.get("phase", 0), it.get("group") == "held_out"))
    say(f"{len(items)} records: {len(items) - len(todo)} cached, {len(todo)} to compute with {jobs} process(es)")
    if not todo:
        return records, 0
    t0 = last = time.perf_counter()
    done = 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        pending: set[Future[dict[str, Any]]] = set()
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < 2 * jobs:
                pending.add(pool.submit(run_item, queue.pop(0)))
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                out = fut.result()  # a failing item stops the run; what finished stays cached
                records[out["key"]] = json.loads(json.dumps(json_safe(out["record"])))  # as a rerun reads it from the cache
                done += 1
                secs = _record_seconds(out["record"])
                elapsed = time.perf_counter() - t0
                eta = elapsed / done * (len(todo) - done)
                say(f"[{done}/{len(todo)}] {out['label']}: {_record_summary(out['record'])} ({secs:.1f} s; elapsed {elapsed / 60:.1f} min, "
                    f"eta {eta / 60:.1f} min)")
            if checkpoint is not None and time.perf_counter() - last >= checkpoint_s:
                checkpoint()
                last = time.perf_counter()
    return records, len(todo)


def _record_seconds(rec: dict[str, Any]) -> float:
    if "dice" in rec:
        return float(rec["seconds"]["total"])
    return float(rec["timings"]["total"])


def _record_summary(rec: dict[str, Any]) -> str:
    if "dice" in rec:
        return f"dice {rec['dice']:.3f}" if rec["dice"] is not None else "dice n/a"
    return f"grtd {rec['grtd']:.4f} lbtc {rec['lbtc']:.4f}"


def _truth_entry() -> dict[str, list[Any]]:
    return {"dice": [], "per_class": [], "seconds": [], "keys": [], "seeds": [], "snapshots": []}


def collect(states: Sequence[TaskState], zoo: Sequence[Any], profile: Profile, planner: Planner, items: Sequence[dict[str, Any]],
            records: Mapping[str, dict[str, Any]], freeze: Mapping[str, Any]) -> dict[str, Any]:
    """The raw results of the run (what the tables are computed from), keyed by task and model:
    the roster with every decision, both truths of every task considered, the scores of the scored tasks."""
    from bench.validation.zoo import MEMBER_DEFS

    names = [st.spec.name for st in states]
    truth: dict[str, Any] = {n: {} for n in names}
    frozen: dict[str, Any] = {n: {} for n in names}
    scores: dict[str, Any] = {}
    pass_scores: dict[str, Any] = {}
    for it in items:
        rec = records.get(it["key"])
        if rec is None:
            continue
        t, m = it["inputs"]["task"], it["inputs"]["model"]
        if it["kind"] == "finetune":
            e = (truth if it["protocol"] == "finetune" else frozen)[t].setdefault(m, _truth_entry())
            e["dice"].append(rec["dice"])
            e["per_class"].append(rec["per_class"])
            e["seconds"].append(rec["seconds"])
            e["keys"].append(it["key"])
            e["seeds"].append(it["config"]["seed"])
            e["snapshots"].append([s["dice"] for s in rec.get("snapshots", [])])
        else:
            row = {"grtd": rec["grtd"], "lbtc": rec["lbtc"], "grtd_contracted": rec["grtd_variants"]["contracted"],
                   "grtd_penalised": rec["grtd_variants"]["penalised"], **rec["baselines"]}
            entry = {"metrics": row, "key": it["key"], "config_hash": rec["config_hash"], "timings": rec["timings"],
                     "per_stage": rec.get("per_stage"), "grtd_per_decoder": rec.get("grtd_per_decoder")}
            if "control" in rec:
                entry["control"] = rec["control"]
                entry["ccfv_only"] = rec["ccfv_only"]
            if it.get("pass"):
                pass_scores.setdefault(t, {}).setdefault(it["pass"], {})[m] = entry
            else:
                scores.setdefault(t, {}).setdefault(it["decoder"], {})[m] = entry
    roster = []
    for st in states:
        roster.append({"task": st.spec.name, "group": st.group, "reserve": st.reserve, "replaces": st.replaces, "seeds": st.seeds,
                       "seeds_final": st.seeds_final, "seed_decisions": st.seed_decisions, "verdict": st.verdict,
                       "sealed": planner.is_sealed(st.spec), "scored": st.spec.name in scores})
    tasks = {}
    for st in states:
        t = planner.task_input(st.spec)
        tasks[t.name] = {"spec_hash": t.spec_hash, "cases_key": t.cases_key, "k": t.k, "regime": t.regime, "held_out": t.held_out,
                         "group": st.group, "title": t.spec.get("title"), "n_train": profile.n_train or t.spec["n_train"],
                         "n_test": profile.n_test or t.spec["n_test"]}
    return {
        "profile": profile.to_dict(),
        "inputs": {
            "tasks": tasks,
            "models": {m.name: {"sha256": m.sha256, "method": m.method, "variant": m.variant, "pretrain": m.pretrain,
                                "realistic": m.name in planner.realistic, "random_init": m.name in planner.randoms,
                                "ladder_of": MEMBER_DEFS[m.name].ladder_of, "reinit": MEMBER_DEFS[m.name].reinit} for m in zoo},
            "code": code_versions(),
        },
        "roster": roster,
        "freeze": {k: freeze.get(k) for k in ("exists", "committed", "commit")},
        "truth": truth,
        "truth_frozen": frozen,
        "scores": scores,
        "pass_scores": pass_scores,
    }


def cached_records(items: Sequence[dict[str, Any]], cache: Cache) -> dict[str, dict[str, Any]]:
    """The records of `items` that are already cached, by key (nothing is computed)."""
    out = {}
    for it in items:
        rec = cache.get(it["kind"], it["key"])
        if rec is not None:
            out[it["key"]] = rec
    return out


def complete_truth(states: Sequence[TaskState], items: Sequence[dict[str, Any]], records: Mapping[str, Any]) -> list[str]:
    """The tasks whose truth items (every planned seed, both protocols) are all there."""
    out = []
    for st in states:
        mine = [it for it in items if it["kind"] == "finetune" and it["inputs"]["task"] == st.spec.name]
        if st.seeds_final and mine and all(it["key"] in records for it in mine):
            out.append(st.spec.name)
    return out


def run(profile: Profile, *, task_files: Sequence[Path] | None = None, out_dir: Path | None = None, cache_dir: Path | None = None,
        jobs: int | None = None, device: str | None = None, say: Callable[[str], None] | None = None,
        compute: bool = True, checkpoint_s: float = 600.0) -> dict[str, Any]:
    """The whole benchmark for `profile`; writes `out_dir` (results.json, report.md, plots/, run.json,
    records.jsonl.gz).

    Truth first (both protocols, the seed rule, admission, reserves), then the scores of the admitted
    tuning tasks; the held-out tasks get their truth and no score unless the freeze file is committed.
    `compute=False` computes nothing and reports what the cache holds, marked `partial` when the plan
    is not complete, so a long run can be reported honestly before it has finished."""
    from bench.validation.report import DEFAULT_DECODER, computing_run, write_report

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    out_dir = Path(out_dir or REPO / "results" / "validation" / profile.name)
    cache = Cache(Path(cache_dir or default_cache_root() / profile.name))
    dev = device or profile.device
    import torch

    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"profile {profile.name!r} wants {dev}, but torch sees no CUDA device")
    if decoder_label(profile.decoders[0]) != DEFAULT_DECODER:
        raise ValueError(f"profile {profile.name!r}: its first decoder config must be the report's default, {DEFAULT_DECODER}")
    groups = task_groups(profile, task_files)
    seal_dir = REPO / profile.seal_dir
    sealed = read_sealed(seal_dir / SEALED_FILE)
    check_sealed(groups.primary["held_out"] + groups.reserves["held_out"], sealed)
    freeze = freeze_state(seal_dir / FREEZE_FILE)
    say(f"profile {profile.name}: tuning {[s.name for s in groups.primary['tuning']]}, held out {[s.name for s in groups.primary['held_out']]} "
        f"(sealed: {len(sealed)}; freeze committed: {freeze['committed']})")
    t0 = time.perf_counter()
    zoo_root = REPO / profile.zoo_dir if profile.zoo_dir else cache.root / "zoo"
    zoo_jobs = (jobs or profile.jobs) if compute else 1
    zoo_dev = "cpu" if profile.zoo_dir else dev  # a committed zoo is the CPU-built artifact on every device
    zoo = build_zoo_parallel(zoo_root, profile.zoo, profile.members, zoo_dev, zoo_jobs, say)
    zoo_s = time.perf_counter() - t0
    say(f"zoo: {len(zoo)} members ready in {zoo_s:.1f} s ({zoo_root})")
    planner = Planner(profile, zoo, groups, cache, dev, lambda specs: prepare_tasks(specs, profile, cache, say), sealed, freeze)
    records_file = out_dir / RECORDS_FILE
    seeded = import_records(records_file, None, cache)
    if seeded:
        say(f"{seeded} records taken from {records_file} into the cache")
    computed = 0
    t0 = time.perf_counter()

    def lookup(it: Mapping[str, Any]) -> dict[str, Any] | None:
        return cache.get(it["kind"], it["key"])

    planned: dict[str, dict[str, Any]] = {}  # every item of every round: what the checkpoints export
    while True:  # each round computes what the records so far call for; decisions follow the truth
        states, items = planner.plan(lookup)
        planned.update((it["key"], it) for it in items)
        pending = [it for it in items if lookup(it) is None]
        if not pending or not compute:
            break
        _, n = execute(pending, cache, jobs or profile.jobs, say, checkpoint_s=checkpoint_s,
                       checkpoint=lambda: export_records(records_file, list(planned.values()), cached_records(list(planned.values()), cache)))
        computed += n
    work_s = time.perf_counter() - t0
    records = cached_records(items, cache)
    exported = export_records(records_file, items, records)
    say(f"{exported} records exported to {records_file}")
    done_truth = complete_truth(states, items, records)
    if not done_truth:
        raise RuntimeError("nothing to report: no task has its truth all cached yet")
    missing = [it for it in items if it["key"] not in records]
    results = collect(states, zoo, profile, planner, items, records, freeze)
    if missing:
        results["partial"] = {"records_cached": len(items) - len(missing), "records_total": len(items),
                              "tasks_truth_incomplete": [st.spec.name for st in states if st.spec.name not in done_truth],
                              "tasks_scores_incomplete": sorted({it["inputs"]["task"] for it in missing if it["kind"] == "score"})}
        say(f"partial report: {len(missing)} of {len(items)} records missing")
    results["zoo_pretrain_seconds"] = {m.name: m.pretrain.get("seconds") for m in zoo}
    log = out_dir / "run.json"  # one entry per invocation: the cold run's time survives reruns from the cache
    history = json.loads(log.read_text()).get("runs", []) if log.is_file() else []
    here = {"machine": machine(), "computed": computed, "partial": bool(missing)}
    write_report(results, out_dir, machine=computing_run([*history, here]).get("machine"))  # a rerun elsewhere keeps the machine
    run_info = {"profile": profile.name, "git": git_state(), "machine": here["machine"], "wall_seconds": time.perf_counter() - t_start,
                "zoo_seconds": zoo_s, "work_seconds": work_s, "records": len(items), "computed": computed,
                "cached_before": len(records) - computed, "seeded_from_records_file": seeded, "partial": here["partial"],
                "device": dev, "command": " ".join(["python -m bench.validation", *sys.argv[1:]])}
    log.write_text(json.dumps({"runs": [*history, run_info]}, indent=2, sort_keys=True) + "\n")
    say(f"done in {run_info['wall_seconds'] / 60:.1f} min: {out_dir}")
    return results
