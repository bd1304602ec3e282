"""Celery tasks: validate a registered model, score one (pilot set, model) item of a ranking.

Messages carry ids only; every task re-reads the registry, so a redelivered or duplicated
message is harmless: a finished item is skipped, and a score row that already exists for
(pilot set, model, config hash) is reused instead of recomputed. torch, the adapters and the
pipeline are imported inside the task bodies, never at import time (no CUDA before a fork).
While an item is scored, the next queued model of its ranking is loaded in the background
(worker.prefetch, `TOPORANK_PREFETCH_NEXT`); its message still arrives and is acked on its own.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from celery.signals import worker_process_init
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from models_registry.db import make_engine, make_sessionmaker
from models_registry.jobs import refresh_job
from models_registry.confirmations import find_record, fold_seed, refresh_confirmation, store_record
from models_registry.finetune_config import FINETUNE_CODE_VERSION, FinetuneConfig
from models_registry.scores import find_score, store_score
from models_registry.specs import ModelSpec
from models_registry.tables import (
    TERMINAL_ITEM,
    Confirmation,
    ConfirmationItem,
    Model,
    PilotSet,
    RankingItem,
    RankingJob,
    utcnow,
)
from toporank.settings import Settings, get_settings
from transferability.config import SCORING_CODE_VERSION, ScoringConfig, numeric_mode
from worker.celery_app import app
from worker.prefetch import LoadKey, Prefetched, Prefetcher, wait_quietly

log = logging.getLogger("toporank.worker")
PREFETCH: Prefetcher[Any] = Prefetcher()
"""This process's slot for the next model of a ranking (worker.prefetch)."""
T = TypeVar("T")
PROGRESS_EVERY_S = 0.5


class TaskCancelled(Exception):
    """Raised from the progress callback when the ranking was cancelled."""


@dataclass
class WorkerContext:
    """Per-process state, created lazily after the fork (engines must not cross a fork)."""

    settings: Settings
    sessions: sessionmaker[Session]
    storage_root: Path


_CTX: dict[int, WorkerContext] = {}


def worker_context() -> WorkerContext:
    pid = os.getpid()
    if pid not in _CTX:
        settings = get_settings()
        engine = make_engine(settings.sqlalchemy_url, pool_size=2)
        _CTX.clear()
        _CTX[pid] = WorkerContext(settings, make_sessionmaker(engine), settings.storage_root)
    return _CTX[pid]


def _stored(ctx: WorkerContext, relative: str) -> Path:
    path = (ctx.storage_root / relative).resolve()
    if ctx.storage_root.resolve() not in path.parents:
        raise ValueError("stored path escapes the storage root")
    return path


# --------------------------------------------------------------------------- validate_model
def validate_model_impl(ctx: WorkerContext, model_id: str) -> str:
    """Load the checkpoint with its adapter; store status ready + load report, or invalid + code."""
    from worker.adapters import ModelLoadError, load_feature_model

    with ctx.sessions() as s:
        model = s.get(Model, model_id)
        if model is None:
            return "gone"
        if model.status != "validating":
            return model.status
        spec_json, rel = dict(model.spec), model.checkpoint_path
    try:
        spec = ModelSpec.model_validate(spec_json)
        fm = load_feature_model(spec, _stored(ctx, rel), device="cpu")
        update: dict[str, Any] = {
            "status": "ready",
            "load_report": fm.load_report.to_dict(),
            "stages": [st.to_dict() for st in fm.stages],
            "error_code": None,
            "error_detail": None,
        }
    except ModelLoadError as exc:
        update = {"status": "invalid", "error_code": exc.code, "error_detail": exc.message[:2000]}
    except Exception as exc:  # noqa: BLE001 - an adapter bug must still end validation
        log.exception("model validation crashed")
        update = {"status": "invalid", "error_code": "validation_error", "error_detail": f"{type(exc).__name__}: {exc}"[:2000]}
    with ctx.sessions() as s:
        model = s.get(Model, model_id)
        if model is None:
            return "gone"
        for k, v in update.items():
            setattr(model, k, v)
        model.validated_at = utcnow()
        s.commit()
    return str(update["status"])


# --------------------------------------------------------------------------- score_item
def load_cases(ctx: WorkerContext, pilot_set: PilotSet) -> list[Any]:
    """The pilot set's cases as CaseVolume(image (C,X,Y,Z) float32, label (X,Y,Z) int64, spacing)."""
    import nibabel as nib
    import numpy as np

    from worker.extract import CaseVolume

    root = _stored(ctx, pilot_set.storage_path) / "cases"
    out = []
    for case in sorted(pilot_set.cases, key=lambda c: c.position):
        folder = root / case.id
        image = np.stack(
            [np.asarray(nib.load(folder / f"image_{c:04d}.nii.gz").get_fdata(dtype=np.float32)) for c in range(case.n_channels)]
        )
        label = np.asarray(nib.load(folder / "label.nii.gz").dataobj).astype(np.int64)
        out.append(CaseVolume(image=image, label=label, spacing=tuple(float(x) for x in case.spacing)))
    return out


def _cases_or_fail(ctx: WorkerContext, s: Session, unit: Any, pilot_set: PilotSet, finish: Callable[..., None]) -> list[Any] | None:
    """The pilot set's cases; None after failing `unit` (a ranking item, a confirmation fold) with
    `finish` when its stored files cannot be read (removed or corrupted under us)."""
    try:
        return load_cases(ctx, pilot_set)
    except Exception as exc:  # noqa: BLE001 - any unreadable file fails the unit, not the worker
        log.warning("pilot set cases unreadable: %s", type(exc).__name__)
        finish(s, unit, "failed", error_code="pilot_set_unreadable", error_detail="the pilot set's stored cases cannot be read")
        return None


def _finish_item(s: Session, item: RankingItem, status: str, **fields: Any) -> None:
    item.status = status
    for k, v in fields.items():
        setattr(item, k, v)
    item.finished_at = utcnow()
    s.flush()
    refresh_job(s, item.ranking_id)
    s.commit()


DB_OUTAGE_S = 300.0
"""How long a finished score waits for the registry database to come back before the task gives up."""


def _retrying_db(fn: Callable[[], T], what: str, outage_s: float = DB_OUTAGE_S) -> T:
    """`fn()`, retried every 2 s while the database is unreachable (a restart, a fail-over), for up
    to `outage_s`: a score that took minutes is not thrown away for a blip."""
    deadline = time.monotonic() + outage_s
    while True:
        try:
            return fn()
        except OperationalError as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("%s: database unreachable (%s); retrying", what, type(exc).__name__)
            time.sleep(2.0)


class _Progress:
    """Throttled progress writer of one unit of work (a ranking item, a confirmation fold); raises
    TaskCancelled once its parent (ranking, confirmation) is cancelled. While the database is
    unreachable the heartbeat is skipped, not fatal: the work goes on."""

    def __init__(self, ctx: WorkerContext, item_id: str, job_id: str, item_cls: type = RankingItem, parent_cls: type = RankingJob) -> None:
        self.ctx, self.item_id, self.job_id = ctx, item_id, job_id
        self.item_cls, self.parent_cls = item_cls, parent_cls
        self.last = 0.0

    def __call__(self, stage: str, fraction: float) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S and fraction < 1.0:
            return
        self.last = now
        try:
            with self.ctx.sessions() as s:
                item = s.get(self.item_cls, self.item_id)
                parent = s.get(self.parent_cls, self.job_id)
                if item is None or parent is None or parent.cancel_requested:
                    raise TaskCancelled()
                item.stage = str(stage)[:64]
                item.progress = float(min(max(fraction, 0.0), 0.99))
                item.heartbeat_at = utcnow()
                s.commit()
        except OperationalError as exc:
            log.warning("progress of %s not recorded: database unreachable (%s)", self.item_id, type(exc).__name__)


def _numeric_mode(ctx: WorkerContext, config_json: dict[str, Any]) -> str:
    """The numeric mode this worker scores a job's config in (its device kind and the config's precision)."""
    from worker.adapters import resolve_device

    return numeric_mode(resolve_device(ctx.settings.device), config_json.get("precision", "mixed"))


def score_item_impl(ctx: WorkerContext, item_id: str) -> str:
    """Score one ranking item (one model on one pilot set); returns the item's final status.

    Takes this process's prefetch slot first: if it holds this item's model (and the pilot set's
    cases), they are used instead of loading again; whatever the outcome, a load still running in
    the slot ends before the task does."""
    slot = PREFETCH.take(item_id)
    try:
        return _score_item(ctx, item_id, slot)
    finally:
        if slot is not None:
            wait_quietly(slot.load)


def _score_item(ctx: WorkerContext, item_id: str, slot: Prefetched[Any] | None) -> str:
    with ctx.sessions() as s:
        item = s.get(RankingItem, item_id)
        if item is None:
            return "gone"
        if item.status in TERMINAL_ITEM:
            return item.status
        job = s.get(RankingJob, item.ranking_id)
        assert job is not None
        if job.cancel_requested:
            _finish_item(s, item, "cancelled")
            return "cancelled"
        score = find_score(s, job.pilot_set_id, item.model_id, job.config_hash, _numeric_mode(ctx, job.config))
        if score is not None:
            _finish_item(s, item, "succeeded", score_id=score.id, reused=True, progress=1.0)
            return "succeeded"
        if item.attempts >= ctx.settings.max_task_attempts:
            _finish_item(
                s, item, "failed", error_code="worker_lost",
                error_detail=f"the worker died {item.attempts} times while scoring this model",
            )
            return "failed"
        model = s.get(Model, item.model_id)
        pilot_set = s.get(PilotSet, job.pilot_set_id)
        if model is None or pilot_set is None:
            _finish_item(s, item, "failed", error_code="gone", error_detail="model or pilot set was deleted")
            return "failed"
        if model.status == "invalid":
            _finish_item(s, item, "failed", error_code=model.error_code or "model_invalid", error_detail=model.error_detail)
            return "failed"
        item.attempts += 1
        item.status, item.stage, item.progress = "running", "loading", 0.0
        item.started_at = item.heartbeat_at = utcnow()
        s.flush()
        refresh_job(s, job.id)
        s.commit()
        spec_json, ckpt_rel, sha = dict(model.spec), model.checkpoint_path, model.sha256
        config_json, config_hash, job_id, ps_id, model_id = dict(job.config), job.config_hash, job.id, pilot_set.id, model.id
        position = item.position
        cases = slot.cases if slot is not None and slot.pilot_set_id == ps_id else _cases_or_fail(ctx, s, item, pilot_set, _finish_item)
        if cases is None:
            return "failed"

    def prefetch_next() -> None:
        if ctx.settings.prefetch_next:
            _prefetch_next(ctx, job_id, item_id, position, ps_id, config_json, config_hash, cases)

    status, fields = _run_pipeline(ctx, item_id, job_id, spec_json, ckpt_rel, sha, cases, config_json, slot, prefetch_next)

    def record() -> str:
        with ctx.sessions() as s:
            item = s.get(RankingItem, item_id)
            if item is None:
                return "gone"
            if status != "succeeded":
                _finish_item(s, item, status, **fields)
                return status
            row = store_score(
                s,
                pilot_set_id=ps_id,
                model_id=model_id,
                config_hash=config_hash,
                numeric_mode=fields["result"]["numeric_mode"],
                config={**config_json, "checkpoint_sha256": sha, "code_version": SCORING_CODE_VERSION,
                        "preprocessing": spec_json.get("preprocessing")},
                checkpoint_sha256=sha,
                code_version=SCORING_CODE_VERSION,
                grtd=fields["grtd"],
                lbtc=fields["lbtc"],
                result=fields["result"],
            )
            item = s.get(RankingItem, item_id)  # reloaded: storing may have rolled back a duplicate
            if item is None:
                return "gone"
            _finish_item(s, item, "succeeded", score_id=row.id, progress=1.0, stage="done")
            return "succeeded"

    return _retrying_db(record, f"storing the result of item {item_id}")


def _prefetch_phase(device: str) -> str:
    """The phase after which the next model starts loading: on a GPU, the load (the host's cores are
    idle while the GPU extracts); on the CPU, the extraction (which uses every core; the scoring
    after it is mostly single-threaded)."""
    return "load" if device.startswith("cuda") else "extract"


def _load_key(
    ctx: WorkerContext, ckpt_rel: str, sha: str, spec_json: dict[str, Any], config: ScoringConfig, in_channels: int
) -> LoadKey:
    """What the model `score_model` would load for this item depends on (worker.prefetch.LoadKey)."""
    from worker.adapters import resolve_device

    return LoadKey(
        checkpoint=ckpt_rel, sha256=sha, spec_json=json.dumps(spec_json, sort_keys=True), decoder_init=config.decoder_init,
        decoder_seed=config.decoder_seed, device=resolve_device(ctx.settings.device), in_channels=int(in_channels),
    )


def _prefetch_next(
    ctx: WorkerContext, job_id: str, item_id: str, position: int, ps_id: str, config_json: dict[str, Any], config_hash: str,
    cases: list[Any],
) -> None:
    """Start loading the ranking's next queued model that will need a load (ready, no stored
    score): the first after `position`, else the first before it. Never fails the current item."""
    try:
        with ctx.sessions() as s:
            queued = s.scalars(
                select(RankingItem).where(RankingItem.ranking_id == job_id, RankingItem.status == "queued", RankingItem.id != item_id)
            ).all()
            mode = _numeric_mode(ctx, config_json)
            for nxt in sorted(queued, key=lambda it: (it.position < position, it.position)):
                model = s.get(Model, nxt.model_id)
                if model is None or model.status != "ready":
                    continue
                if find_score(s, ps_id, model.id, config_hash, mode) is not None:
                    continue
                next_id, spec_json, ckpt_rel, sha = nxt.id, dict(model.spec), model.checkpoint_path, model.sha256
                break
            else:
                return
        from worker.pipeline import load_model

        spec, config, path = ModelSpec.model_validate(spec_json), ScoringConfig.from_dict(config_json), _stored(ctx, ckpt_rel)
        key = _load_key(ctx, ckpt_rel, sha, spec_json, config, cases[0].n_channels)
        PREFETCH.start(next_id, key, ps_id, cases, lambda: load_model(spec, path, config, key.device, key.in_channels))
    except Exception as exc:  # noqa: BLE001 - a missed prefetch only costs the next item its load time
        log.warning("could not start loading the next model ahead: %s", type(exc).__name__)


def _run_pipeline(
    ctx: WorkerContext, item_id: str, job_id: str, spec_json: dict[str, Any], ckpt_rel: str, sha: str, cases: list[Any],
    config_json: dict[str, Any], slot: Prefetched[Any] | None = None, prefetch_next: Callable[[], None] | None = None,
) -> tuple[str, dict[str, Any]]:
    """score_model on this item; the slot's model is used when it was loaded under this item's load
    key, and `prefetch_next` is called at the point `_prefetch_phase` picks for this device."""
    from worker.adapters import ModelLoadError
    from worker.pipeline import score_model

    try:
        spec = ModelSpec.model_validate(spec_json)
        config = ScoringConfig.from_dict(config_json)
        key = _load_key(ctx, ckpt_rel, sha, spec_json, config, cases[0].n_channels)
        preloaded = slot if slot is not None and slot.key == key else None
        start_after = _prefetch_phase(key.device)

        def phase_done(phase: str) -> None:
            if prefetch_next is not None and phase == start_after:
                prefetch_next()

        t0 = time.perf_counter()
        res = score_model(
            spec, _stored(ctx, ckpt_rel), cases, config, device=ctx.settings.device, progress=_Progress(ctx, item_id, job_id),
            preloaded=preloaded.load if preloaded is not None else None, phase_done=phase_done,
        )
        result = res.to_dict()
        result.setdefault("timings", {})
        if isinstance(result["timings"], dict):
            result["timings"].setdefault("task_total_s", time.perf_counter() - t0)
            if preloaded is not None and res.diagnostics.get("prefetched") and preloaded.background_s is not None:
                result["timings"]["prefetch_background_s"] = preloaded.background_s
        return "succeeded", {"grtd": res.grtd, "lbtc": res.lbtc, "result": result}
    except TaskCancelled:
        return "cancelled", {}
    except ModelLoadError as exc:
        return "failed", {"error_code": exc.code, "error_detail": exc.message[:2000]}
    except Exception as exc:  # noqa: BLE001 - recorded on the item; the task itself succeeds
        log.exception("scoring failed")
        return "failed", {"error_code": "scoring_error", "error_detail": f"{type(exc).__name__}: {exc}"[:2000]}


# --------------------------------------------------------------------------- finetune_item
def _finish_unit(s: Session, unit: ConfirmationItem, status: str, **fields: Any) -> None:
    unit.status = status
    for k, v in fields.items():
        setattr(unit, k, v)
    unit.finished_at = utcnow()
    s.flush()
    refresh_confirmation(s, unit.confirmation_id)  # the last unit to finish also records the evaluation
    s.commit()


def _device_kind(ctx: WorkerContext) -> str:
    from worker.adapters import resolve_device

    return "cuda" if resolve_device(ctx.settings.device).startswith("cuda") else "cpu"


def finetune_item_impl(ctx: WorkerContext, unit_id: str) -> str:
    """Fine-tune one model on one fold of a confirmation (worker.finetune) and store its held-out
    Dice; a record under the same key on this device kind is reused. Returns the unit's final status.
    A model still loading ahead for a ranking is waited for and dropped first (worker.prefetch)."""
    PREFETCH.discard()
    with ctx.sessions() as s:
        unit = s.get(ConfirmationItem, unit_id)
        if unit is None:
            return "gone"
        if unit.status in TERMINAL_ITEM:
            return unit.status
        conf = s.get(Confirmation, unit.confirmation_id)
        assert conf is not None
        if conf.cancel_requested:
            _finish_unit(s, unit, "cancelled")
            return "cancelled"
        job = s.get(RankingJob, conf.ranking_id)
        pilot_set = s.get(PilotSet, job.pilot_set_id) if job is not None else None
        model = s.get(Model, unit.model_id)
        if pilot_set is None or model is None:
            _finish_unit(s, unit, "failed", error_code="gone", error_detail="model or pilot set was deleted")
            return "failed"
        device = _device_kind(ctx)
        record = find_record(s, pilot_set.id, model.id, unit.key_hash, device)
        if record is not None:
            _finish_unit(s, unit, "succeeded", record_id=record.id, reused=True, progress=1.0)
            return "succeeded"
        if unit.attempts >= ctx.settings.max_task_attempts:
            _finish_unit(s, unit, "failed", error_code="worker_lost",
                         error_detail=f"the worker died {unit.attempts} times while fine-tuning this fold")
            return "failed"
        unit.attempts += 1
        unit.status, unit.stage, unit.progress = "running", "load", 0.0
        unit.started_at = unit.heartbeat_at = utcnow()
        s.flush()
        refresh_confirmation(s, conf.id)
        s.commit()
        plan, fold, base_cfg = [list(f) for f in conf.fold_plan], unit.fold, dict(conf.config)
        spec_json, ckpt_rel, conf_id, ps_id, model_id = dict(model.spec), model.checkpoint_path, conf.id, pilot_set.id, model.id
        num_classes = int(pilot_set.num_foreground) + 1
        key_hash = unit.key_hash
        cases = _cases_or_fail(ctx, s, unit, pilot_set, _finish_unit)
        if cases is None:
            return "failed"

    held_out = set(plan[fold])
    train = [c for i, c in enumerate(cases) if i not in held_out]
    test = [c for i, c in enumerate(cases) if i in held_out]
    cfg_json = {k: v for k, v in base_cfg.items() if k not in ("base_seed", "code_version")}
    cfg_json["seed"] = fold_seed(int(base_cfg["base_seed"]), fold)
    status, fields = _run_finetune(ctx, unit_id, conf_id, spec_json, ckpt_rel, train, test, num_classes, cfg_json)

    def record() -> str:
        with ctx.sessions() as s:
            unit = s.get(ConfirmationItem, unit_id)
            if unit is None:
                return "gone"
            if status != "succeeded":
                _finish_unit(s, unit, status, **fields)
                return status
            result = fields["result"]
            row = store_record(
                s, pilot_set_id=ps_id, model_id=model_id, key_hash=key_hash, device=device, fold=fold,
                dice=result["dice"], per_class=result["per_class"], result=result, code_version=FINETUNE_CODE_VERSION,
            )
            unit = s.get(ConfirmationItem, unit_id)  # reloaded: storing may have rolled back a duplicate
            if unit is None:
                return "gone"
            _finish_unit(s, unit, "succeeded", record_id=row.id, progress=1.0, stage="done")
            return "succeeded"

    return _retrying_db(record, f"storing the fine-tune of unit {unit_id}")


_FINETUNE_PHASES = {"load": (0.0, 0.05), "train": (0.05, 0.9), "predict": (0.9, 1.0)}


def _run_finetune(
    ctx: WorkerContext, unit_id: str, conf_id: str, spec_json: dict[str, Any], ckpt_rel: str, train: list[Any], test: list[Any],
    num_classes: int, cfg_json: dict[str, Any],
) -> tuple[str, dict[str, Any]]:
    from worker.adapters import ModelLoadError
    from worker.finetune import finetune

    heartbeat = _Progress(ctx, unit_id, conf_id, ConfirmationItem, Confirmation)

    def progress(phase: str, fraction: float) -> None:
        lo, hi = _FINETUNE_PHASES.get(phase, (0.0, 1.0))
        heartbeat(phase, lo + (hi - lo) * fraction)

    try:
        spec = ModelSpec.model_validate(spec_json)
        cfg = FinetuneConfig.from_dict(cfg_json)
        res = finetune(spec, _stored(ctx, ckpt_rel), train, test, num_classes, cfg, device=ctx.settings.device, progress=progress)
        return "succeeded", {"result": res.to_dict()}
    except TaskCancelled:
        return "cancelled", {}
    except ModelLoadError as exc:
        return "failed", {"error_code": exc.code, "error_detail": exc.message[:2000]}
    except (ValueError, FloatingPointError) as exc:
        return "failed", {"error_code": "finetune_error", "error_detail": str(exc)[:2000]}
    except Exception as exc:  # noqa: BLE001 - recorded on the unit; the task itself succeeds
        log.exception("fine-tuning failed")
        return "failed", {"error_code": "finetune_error", "error_detail": f"{type(exc).__name__}: {exc}"[:2000]}


# --------------------------------------------------------------------------- warm-up
WARM_MODULES = (
    "worker.pipeline", "worker.adapters.nnssl", "worker.adapters.monai_nets", "transferability.baselines",
    "transferability.grtd", "transferability.lbtc", "transferability.bootstrap",
)
"""Imported by `warm_up` (the slow ones: torch, scikit-learn, MONAI come with them)."""


def warm_up(device_setting: str) -> dict[str, float | str]:
    """What the first task would otherwise pay, done when a worker process starts: the scoring
    imports (torch, the adapters, scikit-learn) and, on a GPU, the CUDA context and the cuDNN and
    cuBLAS handles (one tiny bf16 convolution and product). Returns seconds per step."""
    timings: dict[str, float | str] = {}
    t0 = time.perf_counter()
    import importlib

    import torch

    from worker.adapters import resolve_device

    for module in WARM_MODULES:
        importlib.import_module(module)

    timings["imports_s"] = time.perf_counter() - t0
    device = resolve_device(device_setting)
    timings["device"] = device
    if device.startswith("cuda"):
        t1 = time.perf_counter()
        torch.cuda.init()
        conv = torch.nn.Conv3d(1, 8, 3, padding=1).to(device)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            out = conv(torch.zeros(1, 1, 16, 16, 16, device=device))
            (out.flatten(1) @ out.flatten(1).T).sum().item()
        torch.cuda.synchronize()
        timings["cuda_s"] = time.perf_counter() - t1
    return timings


@worker_process_init.connect
def _warm_up_pool_process(**_kwargs: Any) -> None:
    """After the fork, in the process that runs the tasks (CUDA is safe to start there)."""
    try:
        timings = warm_up(get_settings().device)
        log.info("worker process warmed up: %s", {k: round(v, 2) if isinstance(v, float) else v for k, v in timings.items()})
    except Exception as exc:  # noqa: BLE001 - the first task then pays it and reports any real error
        log.warning("worker warm-up failed: %s: %s", type(exc).__name__, exc)


# --------------------------------------------------------------------------- Celery wrappers
# A task that finds the database unreachable before it starts work is sent again later (Celery
# retry: a new message, with backoff) instead of failing its item.
_DB_RETRY = {"autoretry_for": (OperationalError,), "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True, "max_retries": 30}


@app.task(name="toporank.validate_model", acks_late=True, reject_on_worker_lost=True, **_DB_RETRY)
def validate_model(model_id: str) -> str:
    return validate_model_impl(worker_context(), model_id)


def _run_unit(ctx: WorkerContext, unit_id: str, impl: Callable[[WorkerContext, str], str], cls: type,
              finish: Callable[..., None]) -> str:
    """Run a unit task body; if it crashes, fail the unit (best effort: it must not stay `running`
    forever) and re-raise. An unreachable database is re-raised untouched: the task is retried later."""
    try:
        return impl(ctx, unit_id)
    except OperationalError:
        raise
    except Exception as exc:
        try:
            with ctx.sessions() as s:
                unit = s.get(cls, unit_id)
                if unit is not None and unit.status not in TERMINAL_ITEM:
                    finish(s, unit, "failed", error_code="internal_error", error_detail=type(exc).__name__)
        except Exception:  # noqa: BLE001
            log.exception("could not record the failure of %s", unit_id)
        raise


@app.task(name="toporank.score_item", acks_late=True, reject_on_worker_lost=True, **_DB_RETRY)
def score_item(item_id: str) -> str:
    return _run_unit(worker_context(), item_id, score_item_impl, RankingItem, _finish_item)


@app.task(name="toporank.finetune_item", acks_late=True, reject_on_worker_lost=True, **_DB_RETRY)
def finetune_item(unit_id: str) -> str:
    return _run_unit(worker_context(), unit_id, finetune_item_impl, ConfirmationItem, _finish_unit)
