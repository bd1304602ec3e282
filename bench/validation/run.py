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
        tmp.write_text(json.dumps(_finite(value), sort_keys=True))
        os.replace(tmp, p)


RECORDS_FILE = "records.jsonl.gz"
"""Every record of a run, exported beside results.json: committed, it lets a fresh clone (or the next
session on a fresh machine) resume or re-report the run without recomputing what it holds."""


def export_records(path: Path, items: Sequence[dict[str, Any]], records: Mapping[str, dict[str, Any]]) -> int:
    """Write the records of `items` held in `records` as gzip JSON lines sorted by key (byte-stable:
    no timestamp in the gzip header), atomically; returns how many were written."""
    import gzip

    kinds = {it["key"]: it["kind"] for it in items}
    keys = sorted(k for k in kinds if k in records)
    lines = "".join(json.dumps({"kind": kinds[k], "key": k, "record": _finite(records[k])}, sort_keys=True) + "\n" for k in keys)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(lines.encode())
    os.replace(tmp, path)
    return len(keys)


def import_records(path: Path, items: Sequence[dict[str, Any]], cache: Cache) -> int:
    """Seed `cache` with the records in an exported file that the plan `items` needs and the cache
    lacks. A record is taken only if its key is the digest of the inputs it carries and of the same
    kind, so a stale or edited file cannot feed a record to the wrong item; returns how many."""
    import gzip

    if not path.is_file():
        return 0
    wanted = {it["key"]: it["kind"] for it in items}
    seeded = 0
    with gzip.open(path, "rt") as fh:
        for line in fh:
            entry = json.loads(line)
            key, kind, rec = entry.get("key"), entry.get("kind"), entry.get("record")
            if wanted.get(key) != kind or not isinstance(rec, dict) or digest(rec.get("inputs")) != key:
                continue
            if cache.get(kind, key) is None:
                cache.put(kind, key, rec)
                seeded += 1
    return seeded


def _finite(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, NaN/inf to None."""
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
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


def finetune_config(spec_finetune: dict[str, Any], profile: Profile, seed: int, device: str) -> dict[str, Any]:
    """The fine-tune config of one run: the task's block, the profile's overrides, its step scale."""
    from worker.finetune import FinetuneConfig

    cfg = {**spec_finetune, **profile.finetune, "seed": int(seed), "threads": 1}
    if profile.steps_scale != 1.0:
        cfg["steps"] = max(1, int(round(cfg.get("steps", FinetuneConfig.steps) * profile.steps_scale)))
        if "encoder_warmup_steps" in cfg:
            cfg["encoder_warmup_steps"] = int(round(cfg["encoder_warmup_steps"] * profile.steps_scale))
    return FinetuneConfig.from_dict(cfg).to_dict()


def scoring_config(profile: Profile, key: DecoderKey) -> dict[str, Any]:
    """The scoring config of one (model, task, decoder) item. The GRTD variant is pinned to the
    spec's so the cache does not depend on the code default (both variants are computed anyway)."""
    from transferability.config import ScoringConfig

    init, seed, n = key
    cfg = ScoringConfig.from_dict({**profile.scoring, "decoder_init": init, "decoder_seed": seed, "n_decoders": n, "grtd_variant": "contracted"})
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


def run_item(item: dict[str, Any]) -> dict[str, Any]:
    """Compute one cached record (in a worker process) and store it; returns its kind and key."""
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


def plan_items(tasks: Sequence[TaskInput], zoo: Sequence[Any], profile: Profile, cache: Cache, device: str) -> list[dict[str, Any]]:
    """Every record the profile needs, with its key (pending or cached alike). Phase 0 is what every
    table needs (the fine-tunes and the default decoder's scores with the control), phase 1 the other
    decoder configs (Table 2, n_decoders); `execute` computes all of phase 0 first."""
    versions = code_versions()
    items = []
    for t in tasks:
        for m in zoo:
            spec = model_spec_for_task(m, t)
            base = {"task": t.name, "model": m.name, "spec_hash": t.spec_hash, "cases_key": t.cases_key, "checkpoint_sha256": m.sha256,
                    "model_spec": spec}
            common = {"cache": str(cache.root), "cases_file": t.cases_file, "k": t.k, "spec": spec, "checkpoint": str(m.checkpoint), "device": device}
            for seed in profile.seeds:
                cfg = finetune_config(t.spec.get("finetune", {}), profile, seed, device)
                inputs = {**base, "finetune_config": cfg, "finetune_code": versions["finetune"], "cache_version": CACHE_VERSION}
                items.append({**common, "kind": "finetune", "key": digest(inputs), "inputs": inputs, "config": cfg, "phase": 0,
                              "held_out": t.held_out,
                              "label": f"finetune {t.name} {m.name} seed {seed}"})
            for j, dk in enumerate(profile.decoders):
                cfg = scoring_config(profile, dk)
                control = j == 0
                inputs = {**base, "scoring_config": cfg, "scoring_code": versions["scoring"], "control_shuffles": profile.shuffles if control else 0,
                          "cache_version": CACHE_VERSION}
                items.append({**common, "kind": "score", "key": digest(inputs), "inputs": inputs, "config": cfg, "control": control,
                              "phase": 0 if control else 1, "held_out": t.held_out,
                              "shuffles": profile.shuffles, "decoder": decoder_label(dk), "label": f"score {t.name} {m.name} {decoder_label(dk)}"})
    return items


def execute(
    items: Sequence[dict[str, Any]], cache: Cache, jobs: int, say: Callable[[str], None]
) -> tuple[dict[str, dict[str, Any]], int]:
    """Run the items that are not cached yet (in `jobs` processes); return every record by key
    and how many were computed now."""
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for it in items:
        rec = cache.get(it["kind"], it["key"])
        if rec is not None:
            records[it["key"]] = rec
        else:
            todo.append(it)
    # stable: task by task within a phase, tuning tasks before held-out ones
    todo.sort(key=lambda it: (it.get("phase", 0), bool(it.get("held_out", False))))
    say(f"{len(items)} records: {len(items) - len(todo)} cached, {len(todo)} to compute with {jobs} process(es)")
    if not todo:
        return records, 0
    t0 = time.perf_counter()
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
                records[out["key"]] = json.loads(json.dumps(_finite(out["record"])))  # as a rerun reads it from the cache
                done += 1
                secs = _record_seconds(out["record"])
                elapsed = time.perf_counter() - t0
                eta = elapsed / done * (len(todo) - done)
                say(f"[{done}/{len(todo)}] {out['label']}: {_record_summary(out['record'])} ({secs:.1f} s; elapsed {elapsed / 60:.1f} min, "
                    f"eta {eta / 60:.1f} min)")
    return records, len(todo)


def _record_seconds(rec: dict[str, Any]) -> float:
    if "dice" in rec:
        return float(rec["seconds"]["total"])
    return float(rec["timings"]["total"])


def _record_summary(rec: dict[str, Any]) -> str:
    if "dice" in rec:
        return f"dice {rec['dice']:.3f}" if rec["dice"] is not None else "dice n/a"
    return f"grtd {rec['grtd']:.4f} lbtc {rec['lbtc']:.4f}"


def collect(tasks: Sequence[TaskInput], zoo: Sequence[Any], profile: Profile, items: Sequence[dict[str, Any]],
            records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The raw results of the run (what the tables are computed from), keyed by task and model."""
    truth: dict[str, Any] = {t.name: {} for t in tasks}
    scores: dict[str, Any] = {t.name: {} for t in tasks}
    for it in items:
        rec = records[it["key"]]
        t, m = it["inputs"]["task"], it["inputs"]["model"]
        if it["kind"] == "finetune":
            e = truth[t].setdefault(m, {"dice": [], "per_class": [], "seconds": [], "keys": [], "seeds": []})
            e["dice"].append(rec["dice"])
            e["per_class"].append(rec["per_class"])
            e["seconds"].append(rec["seconds"])
            e["keys"].append(it["key"])
            e["seeds"].append(it["config"]["seed"])
        else:
            row = {"grtd": rec["grtd"], "lbtc": rec["lbtc"], "grtd_contracted": rec["grtd_variants"]["contracted"],
                   "grtd_penalised": rec["grtd_variants"]["penalised"], **rec["baselines"]}
            entry = {"metrics": row, "key": it["key"], "config_hash": rec["config_hash"], "timings": rec["timings"]}
            if "control" in rec:
                entry["control"] = rec["control"]
                entry["ccfv_only"] = rec["ccfv_only"]
            scores[t].setdefault(it["decoder"], {})[m] = entry
    return {
        "profile": profile.to_dict(),
        "inputs": {
            "tasks": {t.name: {"spec_hash": t.spec_hash, "cases_key": t.cases_key, "k": t.k, "regime": t.regime, "held_out": t.held_out,
                               "title": t.spec.get("title"), "n_train": profile.n_train or t.spec["n_train"],
                               "n_test": profile.n_test or t.spec["n_test"]} for t in tasks},
            "models": {m.name: {"sha256": m.sha256, "method": m.method, "variant": m.variant, "pretrain": m.pretrain} for m in zoo},
            "code": code_versions(),
        },
        "truth": truth,
        "scores": scores,
    }


def cached_records(items: Sequence[dict[str, Any]], cache: Cache) -> dict[str, dict[str, Any]]:
    """The records of `items` that are already cached, by key (nothing is computed)."""
    out = {}
    for it in items:
        rec = cache.get(it["kind"], it["key"])
        if rec is not None:
            out[it["key"]] = rec
    return out


def reportable(tasks: Sequence[TaskInput], items: Sequence[dict[str, Any]], records: Mapping[str, Any]
               ) -> tuple[list[TaskInput], list[dict[str, Any]], dict[str, list[str]]]:
    """What can be reported from `records`: the tasks whose phase-0 records (fine-tunes, default
    decoder) are all there, the items to report (a task's other decoder configs only where every model
    has them), and per task the decoder configs left out."""
    complete, keep, left_out = [], [], {}
    for t in tasks:
        mine = [it for it in items if it["inputs"]["task"] == t.name]
        if not all(it["key"] in records for it in mine if it.get("phase", 0) == 0):
            continue
        complete.append(t)
        keep += [it for it in mine if it.get("phase", 0) == 0]
        groups: dict[str, list[dict[str, Any]]] = {}
        for it in mine:
            if it.get("phase", 0) == 1:
                groups.setdefault(it["decoder"], []).append(it)
        for dec, its in groups.items():
            if all(it["key"] in records for it in its):
                keep += its
            else:
                left_out.setdefault(t.name, []).append(dec)
    order = {id(it): i for i, it in enumerate(items)}
    keep.sort(key=lambda it: order[id(it)])  # plan order, so the results do not depend on what was cached when
    return complete, keep, left_out


def run(profile: Profile, *, task_files: Sequence[Path] | None = None, out_dir: Path | None = None, cache_dir: Path | None = None,
        jobs: int | None = None, device: str | None = None, say: Callable[[str], None] | None = None,
        compute: bool = True) -> dict[str, Any]:
    """The whole benchmark for `profile`; writes `out_dir` (results.json, report.md, plots/, run.json).

    `compute=False` computes no fine-tune or score: it reports what the cache holds, on the tasks
    whose every record is cached, and marks the results `partial` (with the tasks left out) when
    that is not all of them, so a long run can be reported honestly before it has finished (a task
    needs its fine-tunes and default-decoder scores; other decoder configs are left out per task)."""
    from bench.validation.report import write_report
    from bench.validation.tasks import load_tasks

    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    out_dir = Path(out_dir or REPO / "results" / "validation" / profile.name)
    cache = Cache(Path(cache_dir or default_cache_root() / profile.name))
    dev = device or profile.device
    import torch

    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"profile {profile.name!r} wants {dev}, but torch sees no CUDA device")
    if task_files:
        specs = load_tasks([Path(p) for p in task_files])
    else:
        specs = load_tasks()
        if profile.tasks is not None:
            by_name = {s.name: s for s in specs}
            specs = [by_name[n] for n in profile.tasks]
    say(f"profile {profile.name}: {len(specs)} tasks ({', '.join(s.name for s in specs)})")
    t0 = time.perf_counter()
    from bench.validation.report import DEFAULT_DECODER, computing_run

    if decoder_label(profile.decoders[0]) != DEFAULT_DECODER:
        raise ValueError(f"profile {profile.name!r}: its first decoder config must be the report's default, {DEFAULT_DECODER}")
    zoo_jobs = (jobs or profile.jobs) if compute else 1  # --no-compute: one process beside a running benchmark
    zoo = build_zoo_parallel(cache.root / "zoo", profile.zoo, profile.members, dev, zoo_jobs, say)
    zoo_s = time.perf_counter() - t0
    say(f"zoo: {len(zoo)} members ready in {zoo_s:.1f} s")
    tasks = prepare_tasks(specs, profile, cache, say)
    items = plan_items(tasks, zoo, profile, cache, dev)
    seeded = import_records(out_dir / RECORDS_FILE, items, cache)
    if seeded:
        say(f"{seeded} records taken from {out_dir / RECORDS_FILE} into the cache")
    t0 = time.perf_counter()
    if compute:
        records, computed = execute(items, cache, jobs or profile.jobs, say)
    else:
        records, computed = cached_records(items, cache), 0
        say(f"{len(items)} records: {len(records)} cached; computing none (--no-compute)")
    work_s = time.perf_counter() - t0
    exported = export_records(out_dir / RECORDS_FILE, items, records)
    say(f"{exported} records exported to {out_dir / RECORDS_FILE}")
    complete, report_items, decoders_left_out = reportable(tasks, items, records)
    if not complete:
        raise RuntimeError("nothing to report: no task has its fine-tunes and default-decoder scores all cached yet")
    missing = [t.name for t in tasks if t not in complete]
    if missing or decoders_left_out:
        say(f"partial report: {len(complete)} of {len(tasks)} tasks complete; left out: {', '.join(missing) or 'none'}; "
            f"decoder configs not yet scored on {len(decoders_left_out)} task(s)")
    results = collect(complete, zoo, profile, report_items, records)
    if missing or decoders_left_out:
        results["partial"] = {"tasks_left_out": missing, "decoders_left_out": decoders_left_out, "records_cached": len(records),
                              "records_total": len(items)}
    results["zoo_pretrain_seconds"] = {m.name: m.pretrain.get("seconds") for m in zoo}
    log = out_dir / "run.json"  # one entry per invocation: the cold run's time survives reruns from the cache
    history = json.loads(log.read_text()).get("runs", []) if log.is_file() else []
    here = {"machine": machine(), "computed": computed, "partial": bool(missing or decoders_left_out)}
    write_report(results, out_dir, machine=computing_run([*history, here]).get("machine"))  # a rerun elsewhere keeps the machine
    run_info = {"profile": profile.name, "git": git_state(), "machine": here["machine"], "wall_seconds": time.perf_counter() - t_start,
                "zoo_seconds": zoo_s, "work_seconds": work_s, "records": len(items), "computed": computed,
                "cached_before": len(records) - computed, "seeded_from_records_file": seeded, "partial": here["partial"],
                "command": " ".join(["python -m bench.validation", *sys.argv[1:]])}
    log.write_text(json.dumps({"runs": [*history, run_info]}, indent=2, sort_keys=True) + "\n")
    say(f"done in {run_info['wall_seconds'] / 60:.1f} min: {out_dir}")
    return results
