"""Score one model on one pilot set: load, extract at the shared points, GRTD, LBTC, baselines.

The sample plan and the boundary anchors come from the ORIGINAL label grids and the config seed
only (metrics.md §2, §4), so every model is scored on the same physical points. LBTC patches are
laid out per stage with step = the stage's stride converted to original-grid voxels.
"""

from __future__ import annotations

import importlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models_registry.catalog import resolve_spec
from models_registry.specs import ModelSpec
from transferability.config import SCORING_CODE_VERSION, ScoringConfig, numeric_mode
from transferability.grtd import VARIANTS as GRTD_VARIANTS
from transferability.sampling import AnchorSet, SamplePlan, boundary_anchors, nearest_labels, patch_grid, sample_points
from worker.adapters import FeatureModel, load_feature_model, resolve_device
from worker.extract import CaseVolume, case_layout, extract_case

Progress = Callable[[str, float], None]

# Share of the overall progress per phase (extraction dominates the run time).
_PHASES = {
    "load": (0.0, 0.05), "extract": (0.05, 0.85), "grtd": (0.85, 0.9), "lbtc": (0.9, 0.92), "baselines": (0.92, 0.95),
    "bootstrap": (0.95, 1.0),
}

__all__ = ["CaseVolume", "GatheredFeatures", "ModelScoreResult", "default_stages", "load_model", "score_model"]


@dataclass
class ModelScoreResult:
    """Raw per-model scores (fusion happens at read time, over the models compared)."""

    grtd: float
    lbtc: float
    per_stage: dict[str, dict[str, float]]
    baselines: dict[str, float]
    diagnostics: dict[str, Any]
    timings: dict[str, float]
    load_report: dict[str, Any]
    config: dict[str, Any]
    config_hash: str
    stages: list[dict[str, Any]]
    numeric_mode: str
    details: dict[str, Any] = field(default_factory=dict)
    replicates: dict[str, Any] | None = None
    code_version: str = SCORING_CODE_VERSION
    features: "GatheredFeatures | None" = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON view of the stored score (the gathered features are never part of it)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "features"}
        return _jsonable({k: asdict(v) if is_dataclass(v) else v for k, v in out.items()})


@dataclass
class GatheredFeatures:
    """What the scores were computed from, handed out on request (`score_model(keep_features=True)`)
    so that a caller can recompute a metric on the same features (label-permutation controls,
    resampling) without extracting again. Never stored: features of patient data stay in memory.

    `points[stage]` (N, C) at the shared sample points with `labels` and `case` (N,);
    `patches[stage]` (A, k^3, C) with `patch_labels` / `patch_mask` (A, k^3) per LBTC stage;
    `extra_decoder_points[i][stage]`: the GRTD stages under fresh decoder i + 1 (n_decoders > 1);
    `anchor_case` (A,): the case of each LBTC patch's anchor.
    """

    points: dict[str, NDArray[np.float32]]
    labels: NDArray[np.int64]
    case: NDArray[np.int64]
    patches: dict[str, NDArray[np.float32]]
    patch_labels: dict[str, NDArray[np.int64]]
    patch_mask: dict[str, NDArray[np.bool_]]
    grtd_stages: list[str]
    lbtc_stages: list[str]
    baseline_stage: str
    extra_decoder_points: list[dict[str, NDArray[np.float32]]] = field(default_factory=list)
    anchor_case: NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def default_stages(fm: FeatureModel, config: ScoringConfig) -> tuple[list[str], list[str], str]:
    """(GRTD stages, LBTC stages, baseline stage): config's, else the two finest decoder stages,
    the two deepest encoder stages, and the finest GRTD stage."""
    names = {stage.name for stage in fm.stages}
    grtd = list(config.grtd_stages) if config.grtd_stages else [stage.name for stage in fm.decoder_stages[-2:]]
    lbtc = list(config.lbtc_stages) if config.lbtc_stages else [stage.name for stage in fm.encoder_stages[-2:]]
    for stage in grtd + lbtc:
        if stage not in names:
            raise ValueError(f"unknown stage {stage!r} in the scoring config; the model has {sorted(names)}")
    if config.baseline_stage is not None:
        base = config.baseline_stage
        if base not in names:
            raise ValueError(f"unknown baseline_stage {config.baseline_stage!r}; the model has {sorted(names)}")
    else:
        base = min(grtd, key=lambda n: (int(np.prod(fm.stage(n).stride)), -grtd.index(n)))
    return grtd, lbtc, base


class _PhaseTimer:
    """Seconds per named phase, in one dict: `with timer("grtd"): ...`."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = time.perf_counter() - t0


def _plan_samples(labels: list[NDArray[Any]], config: ScoringConfig) -> tuple[SamplePlan, AnchorSet, dict[str, float]]:
    """What needs only the labels and the seed, run beside the model load: the sample plan, the
    boundary anchors, and (first) the scoring modules' imports (~1 s for scikit-learn), so that the
    load hides them. Returns (plan, anchors, seconds per step)."""
    timer = _PhaseTimer()
    with timer("imports"):
        for module in ("transferability.baselines", "transferability.lbtc"):
            importlib.import_module(module)
    with timer("sample_plan"):
        plan = sample_points(labels, config.n_samples, config.seed)
    with timer("anchors"):
        anchors = boundary_anchors(labels, config.n_anchors, config.seed)
    return plan, anchors, timer.seconds


def _check_cases(cases: Sequence[CaseVolume]) -> None:
    if len(cases) == 0:
        raise ValueError("the pilot set has no cases")
    for m, c in enumerate(cases):
        if not isinstance(c, CaseVolume):
            raise ValueError(f"case {m} is not a CaseVolume")
    ch = {c.n_channels for c in cases}
    if len(ch) != 1:
        raise ValueError(f"cases have different channel counts {sorted(ch)}")


class _CaseQueries:
    """One case's query points per stage, in named segments (the shared points, the LBTC patches)
    that one extraction pass reads together and `split` hands back apart."""

    def __init__(self) -> None:
        self._parts: dict[str, list[tuple[str, NDArray[np.float64]]]] = {}

    def add(self, stage: str, segment: str, points: NDArray[np.float64]) -> None:
        self._parts.setdefault(stage, []).append((segment, points))

    def flat(self) -> dict[str, NDArray[np.float64]]:
        return {stage: np.concatenate([pts for _, pts in parts], axis=0) for stage, parts in self._parts.items()}

    def split(self, features: Mapping[str, NDArray[np.float32]]) -> dict[str, dict[str, NDArray[np.float32]]]:
        out: dict[str, dict[str, NDArray[np.float32]]] = {}
        for stage, parts in self._parts.items():
            ends = np.cumsum([pts.shape[0] for _, pts in parts])
            out[stage] = {seg: block for (seg, _), block in zip(parts, np.split(features[stage], ends[:-1]))}
        return out


@dataclass
class _Gathered:
    """Features of every case at the shared points and in the LBTC patches, and per-case diagnostics."""

    points: dict[str, NDArray[np.float32]]
    patches: dict[str, NDArray[np.float32]]
    patch_labels: dict[str, NDArray[np.int64]]
    patch_mask: dict[str, NDArray[np.bool_]]
    per_case: list[dict[str, Any]]
    query_seconds: float


def _gather(
    fm: FeatureModel,
    cases: Sequence[CaseVolume],
    plan: SamplePlan,
    anchors: AnchorSet | None,
    point_stages: Sequence[str],
    lbtc_stages: Sequence[str],
    config: ScoringConfig,
    batch_size: int | None,
    progress: Callable[[float], None],
) -> _Gathered:
    """Features at the shared points (`point_stages`) and, with `anchors`, in the LBTC patches
    (`lbtc_stages`), case by case: only the gathered arrays grow with the number of cases."""
    k3 = config.k**3
    n_anc = len(anchors) if anchors is not None else 0
    out = _Gathered(
        points={stage: np.zeros((len(plan), fm.stage(stage).channels), np.float32) for stage in point_stages},
        patches={stage: np.zeros((n_anc, k3, fm.stage(stage).channels), np.float32) for stage in lbtc_stages},
        patch_labels={stage: np.zeros((n_anc, k3), np.int64) for stage in lbtc_stages},
        patch_mask={stage: np.zeros((n_anc, k3), bool) for stage in lbtc_stages},
        per_case=[],
        query_seconds=0.0,
    )
    batch = batch_size or (2 if fm.device.type == "cuda" else 1)
    for m, case in enumerate(cases):
        t_q = time.perf_counter()
        idx_pts = plan.for_case(m)
        idx_anc = np.flatnonzero(anchors.case == m) if anchors is not None else np.zeros(0, np.int64)
        queries = _CaseQueries()
        for stage in point_stages:
            queries.add(stage, "points", plan.coords[idx_pts].astype(np.float64))
        patch_sel: dict[str, NDArray[np.bool_]] = {}
        if idx_anc.size and anchors is not None:
            layout = case_layout(case, fm.preprocessing, fm.coarsest_stride, config.sw_overlap)  # type: ignore[arg-type]
            for stage in lbtc_stages:
                grid_step = fm.stage(stage).stride if config.lbtc_patch_step is None else (config.lbtc_patch_step,) * 3
                step = layout.stride_in_original(grid_step)
                pts, mask = patch_grid(anchors.coords[idx_anc], step, config.k, [case.shape] * idx_anc.size)
                patch_sel[stage] = mask
                out.patch_mask[stage][idx_anc] = mask
                out.patch_labels[stage][idx_anc] = np.where(mask, nearest_labels(case.label, pts), 0)
                queries.add(stage, "patches", pts[mask])
        flat = queries.flat()
        out.query_seconds += time.perf_counter() - t_q
        if all(v.shape[0] == 0 for v in flat.values()):
            out.per_case.append({"skipped": "no sample points or anchors in this case"})
            progress((m + 1) / len(cases))
            continue
        ex = extract_case(
            fm, case, flat, overlap=config.sw_overlap, batch_size=batch, autocast_bf16=config.precision == "mixed",
            progress=lambda f, m=m: progress((m + f) / len(cases)),
        )
        for stage, segments in queries.split(ex.features).items():
            if "points" in segments:
                out.points[stage][idx_pts] = segments["points"]
            if "patches" in segments:
                block = np.zeros((idx_anc.size, k3, segments["patches"].shape[1]), np.float32)
                block[patch_sel[stage]] = segments["patches"]
                out.patches[stage][idx_anc] = block
        out.per_case.append(ex.diagnostics)
        progress((m + 1) / len(cases))
    return out


@dataclass
class _Loaded:
    """Phase 1: the model ready to extract, and the points every model is scored on."""

    fm: FeatureModel
    plan: SamplePlan
    anchors: AnchorSet
    prefetched: bool = False


def load_model(spec: ModelSpec, checkpoint_path: Path, config: ScoringConfig, device: str, in_channels: int) -> FeatureModel:
    """The feature model `score_model` scores: `spec`'s checkpoint with the config's fresh decoder on
    `device` (resolved) for `in_channels` input channels. A worker may call it ahead (worker.prefetch)."""
    return load_feature_model(
        resolve_spec(spec), Path(checkpoint_path), decoder_init=config.decoder_init, decoder_seed=config.decoder_seed,
        device=device, in_channels=in_channels,
    )


def _load_and_plan(
    spec: ModelSpec, checkpoint_path: Path, cases: Sequence[CaseVolume], config: ScoringConfig, dev: str, timer: _PhaseTimer,
    preloaded: "Future[FeatureModel] | None" = None,
) -> _Loaded:
    """Load the model (or take the one loaded ahead) while a thread lays out the sample points and
    anchors (they need only the labels)."""
    with ThreadPoolExecutor(1) as pool:
        sampling = pool.submit(_plan_samples, [c.label for c in cases], config)
        with timer("load"):
            fm = _ready_model(preloaded)
            prefetched = fm is not None
            if fm is None:
                fm = load_model(spec, checkpoint_path, config, dev, cases[0].n_channels)
            if fm.preprocessing is None:
                raise ValueError("the model has no preprocessing (spacing, patch size): set it in its spec or catalog entry")
        with timer("wait_sampling"):
            plan, anchors, sampling_seconds = sampling.result()
    timer.seconds.update(sampling_seconds)
    return _Loaded(fm, plan, anchors, prefetched)


def _ready_model(preloaded: "Future[FeatureModel] | None") -> FeatureModel | None:
    """The model loaded ahead (waiting for it if its load still runs), or None when there is none or
    its load failed: the caller then loads in the foreground, and reports any error itself."""
    if preloaded is None:
        return None
    try:
        return preloaded.result()
    except Exception:  # noqa: BLE001 - loaded again in the foreground, where the error is reported
        return None


def _gather_features(
    loaded: _Loaded, cases: Sequence[CaseVolume], config: ScoringConfig, batch_size: int | None,
    report: Callable[[str, float], None], timer: _PhaseTimer,
) -> tuple[GatheredFeatures, list[dict[str, Any]]]:
    """Phase 2: features at the shared points and in the LBTC patches, plus the GRTD stages under
    `n_decoders - 1` more fresh decoders (seeds decoder_seed + i; docs/decisions.md)."""
    fm, plan = loaded.fm, loaded.plan
    grtd_stages, lbtc_stages, base_stage = default_stages(fm, config)
    if len(loaded.anchors) == 0:
        raise ValueError("the label maps have no boundary voxels: LBTC needs at least two labels touching")
    n_passes = config.n_decoders
    with timer("extract"):
        first = _gather(
            fm, cases, plan, loaded.anchors, list(dict.fromkeys(grtd_stages + [base_stage])), lbtc_stages, config, batch_size,
            lambda f: report("extract", f / n_passes),
        )
        query_seconds = first.query_seconds
        extra_points: list[dict[str, NDArray[np.float32]]] = []
        for i in range(1, n_passes):
            fm.reseed_decoder(config.decoder_seed + i)
            more = _gather(fm, cases, plan, None, grtd_stages, [], config, batch_size, lambda f, i=i: report("extract", (i + f) / n_passes))
            extra_points.append(more.points)
            query_seconds += more.query_seconds
        if n_passes > 1:
            fm.reseed_decoder(config.decoder_seed)
    timer.seconds["extract_queries"] = query_seconds
    features = GatheredFeatures(
        points=first.points, labels=plan.labels, case=plan.case, patches=first.patches, patch_labels=first.patch_labels,
        patch_mask=first.patch_mask, grtd_stages=grtd_stages, lbtc_stages=lbtc_stages, baseline_stage=base_stage,
        extra_decoder_points=extra_points, anchor_case=loaded.anchors.case,
    )
    return features, first.per_case


@dataclass
class _Scores:
    """Phase 3: GRTD per decoder pass (averaged into the score), LBTC, and the baselines."""

    grtd_runs: list[Any]
    lbtc: Any
    baselines: dict[str, float]
    baseline_details: dict[str, Any]

    @property
    def grtd(self) -> float:
        return math.fsum(r.value for r in self.grtd_runs) / len(self.grtd_runs)

    def grtd_mean(self, key: str) -> dict[str, float]:
        """Per-stage values (`per_stage`) or per-variant values (`variants`), averaged over the passes."""
        first = getattr(self.grtd_runs[0], key)
        return {k: math.fsum(getattr(r, key)[k] for r in self.grtd_runs) / len(self.grtd_runs) for k in first}


def _score(
    features: GatheredFeatures, config: ScoringConfig, dev: str, report: Callable[[str, float], None], timer: _PhaseTimer
) -> _Scores:
    """Phase 3: GRTD on every decoder pass (exact MST on the GPU when there is one), LBTC, baselines."""
    from transferability.baselines import score_all_with_diagnostics
    from transferability.grtd import grtd as grtd_fn
    from transferability.lbtc import lbtc as lbtc_fn

    f = features
    with timer("grtd"):
        report("grtd", 0.0)
        other = tuple(v for v in GRTD_VARIANTS if v != config.grtd_variant)
        grtd_dev = dev if dev.startswith("cuda") else None
        runs = [
            grtd_fn(
                {stage: points[stage] for stage in f.grtd_stages}, f.labels, lam=config.lam, quantile=config.quantile,
                stages=f.grtd_stages, device=grtd_dev, variant=config.grtd_variant, extra_variants=other,
            )
            for points in [f.points, *f.extra_decoder_points]
        ]
        report("grtd", 1.0)
    with timer("lbtc"):
        report("lbtc", 0.0)
        lb = lbtc_fn(f.patches, f.patch_labels, f.patch_mask, stages=f.lbtc_stages)
        report("lbtc", 1.0)
    baselines: dict[str, float] = {}
    base_diag: dict[str, Any] = {}
    with timer("baselines"):
        if config.baselines:
            report("baselines", 0.0)
            baselines, base_diag = score_all_with_diagnostics(f.points[f.baseline_stage], f.labels, f.case, seed=config.seed)
    return _Scores(runs, lb, baselines, base_diag)


def _bootstrap(
    features: GatheredFeatures, scores: _Scores, n_cases: int, config: ScoringConfig, report: Callable[[str, float], None],
    timer: _PhaseTimer,
) -> dict[str, Any] | None:
    """Phase 4: GRTD and LBTC on `n_bootstrap` half-samples of the pilot cases (docs/decisions.md),
    from the features already gathered; None when the config asks for none."""
    from transferability import bootstrap as bs

    if config.n_bootstrap == 0:
        return None
    if n_cases < 2:
        return {"method": bs.SCHEME, "n_cases": n_cases, "unavailable": "a pilot set of one case cannot be resampled"}
    f = features
    with timer("bootstrap"):
        report("bootstrap", 0.0)
        masks = bs.case_subsets(n_cases, config.n_bootstrap, config.seed)
        runs = []
        misses = 0
        passes = [f.points, *f.extra_decoder_points]
        for i, points in enumerate(passes):
            values, diag = bs.grtd_replicates(
                {stage: points[stage] for stage in f.grtd_stages}, f.labels, f.case, masks, lam=config.lam,
                quantile=config.quantile, variant=config.grtd_variant, stages=f.grtd_stages,
                progress=lambda frac, i=i: report("bootstrap", (i + frac) / (len(passes) + 0.1)),
            )
            runs.append(values)
            misses += diag["quantile_band_misses"]
        grtd_reps = np.mean(np.stack(runs), axis=0)
        lbtc_reps = bs.lbtc_replicates(scores.lbtc.leakages, f.anchor_case, masks, stages=f.lbtc_stages)
        report("bootstrap", 1.0)
    return {
        "method": bs.SCHEME,
        "n_cases": n_cases,
        "subset_size": bs.subset_size(n_cases),
        "n_replicates": config.n_bootstrap,
        "seed": config.seed,
        "draws": bs.draws_fingerprint(masks),
        "effective_cases": {
            "grtd": bs.effective_cases(np.bincount(f.case, minlength=n_cases)),
            "lbtc": bs.effective_cases(np.bincount(f.anchor_case, minlength=n_cases)),
        },
        "grtd": [None if not np.isfinite(v) else float(v) for v in grtd_reps],
        "lbtc": [None if not np.isfinite(v) else float(v) for v in lbtc_reps],
        "quantile_band_misses": misses,
    }


def _diagnostics(
    loaded: _Loaded, features: GatheredFeatures, scores: _Scores, per_case: list[dict[str, Any]], dev: str, mode: str
) -> dict[str, Any]:
    """Phase 4: what a reader needs to trust the numbers (points per class, patches used, stages, decoder...)."""
    plan, anchors, fm, lb = loaded.plan, loaded.anchors, loaded.fm, scores.lbtc
    classes, counts = np.unique(plan.labels, return_counts=True)
    return {
        "device": dev,
        "autocast": "bf16" if mode == "cuda-bf16" else "fp32",
        "numeric_mode": mode,
        "n_cases": len(per_case),
        "n_points": len(plan),
        "points_per_class": {int(c): int(n) for c, n in zip(classes, counts)},
        "n_anchors": len(anchors),
        "n_boundary_voxels": anchors.n_boundary_voxels,
        "patches_used": dict(lb.patches_used),
        "patches_skipped": dict(lb.patches_skipped),
        "grtd_stages": features.grtd_stages,
        "lbtc_stages": features.lbtc_stages,
        "baseline_stage": features.baseline_stage,
        "baselines_omitted": scores.baseline_details.get("omitted", {}),
        "preprocessing": fm.preprocessing.model_dump(mode="json"),  # type: ignore[union-attr]
        "decoder": {"init": fm.decoder_init, "seed": fm.decoder_seed},
        "prefetched": loaded.prefetched,
        "extraction": per_case,
    }


def score_model(
    spec: ModelSpec,
    checkpoint_path: Path,
    cases: Sequence[CaseVolume],
    config: ScoringConfig,
    *,
    device: str = "auto",
    progress: Progress | None = None,
    batch_size: int | None = None,
    keep_features: bool = False,
    preloaded: "Future[FeatureModel] | None" = None,
    phase_done: Callable[[str], None] | None = None,
) -> ModelScoreResult:
    """GRTD, LBTC and baselines of one model on a pilot set (metrics.md §2-§4, §6).

    Four phases: load the model and plan the shared points, gather features, score, diagnostics.
    `timings` (seconds): `load`; `imports`, `sample_plan`, `anchors` (run in a background thread
    while the model loads: they need only the labels and the seed); `wait_sampling` (what the load
    did not hide of them); `extract` (with `extract_queries`, its share spent laying out the query
    points and patch labels); `grtd`, `lbtc`, `baselines`; `bootstrap` (the replicates, `replicates`);
    `finish` (diagnostics); `total`, all of it.

    `grtd` is `config.grtd_variant`, averaged over `config.n_decoders` fresh decoders (seeds
    decoder_seed, decoder_seed + 1, ...; the baselines read the first decoder only); every GRTD
    variant is reported in `details["grtd"]["variants"]` (the other costs one more MST per stage).
    `keep_features=True` hands the gathered features out in `.features` (never serialised).
    `preloaded`: the same model (`load_model` with the same arguments) loaded ahead by the caller;
    `load` is then the wait for it, and `diagnostics["prefetched"]` says it was used.
    `phase_done(phase)` is called as "load" and "extract" end (a worker starts its next load there).
    """
    t_start = time.perf_counter()

    def report(phase: str, frac: float) -> None:
        if progress is not None:
            lo, hi = _PHASES[phase]
            progress(phase, lo + (hi - lo) * min(max(frac, 0.0), 1.0))

    _check_cases(cases)
    timer = _PhaseTimer()
    dev = resolve_device(device)
    mode = numeric_mode(dev, config.precision)
    report("load", 0.0)
    loaded = _load_and_plan(spec, checkpoint_path, cases, config, dev, timer, preloaded)
    report("load", 1.0)
    if phase_done is not None:
        phase_done("load")
    features, per_case = _gather_features(loaded, cases, config, batch_size, report, timer)
    if phase_done is not None:
        phase_done("extract")
    scores = _score(features, config, dev, report, timer)
    replicates = _bootstrap(features, scores, len(cases), config, report, timer)
    with timer("finish"):
        diagnostics = _diagnostics(loaded, features, scores, per_case, dev, mode)
        load_report = loaded.fm.load_report.to_dict()
        stages = [stage.to_dict() for stage in loaded.fm.stages]
    timings = timer.seconds
    timings["total"] = time.perf_counter() - t_start
    report("bootstrap", 1.0)
    lb = scores.lbtc
    return ModelScoreResult(
        grtd=float(scores.grtd),
        lbtc=float(lb.value),
        per_stage={"grtd": scores.grtd_mean("per_stage"), "lbtc": dict(lb.per_stage)},
        baselines=scores.baselines,
        diagnostics=diagnostics,
        timings=timings,
        load_report=load_report,
        config=config.to_dict(),
        config_hash=config.hash(),
        stages=stages,
        numeric_mode=mode,
        details={
            "grtd": {
                **scores.grtd_runs[0].to_dict(),
                "variant": config.grtd_variant,
                "variants": scores.grtd_mean("variants"),
                "n_decoders": config.n_decoders,
                "per_decoder": [r.variants for r in scores.grtd_runs],
            },
            "lbtc": {"mean_leakage": dict(lb.mean_leakage)},
            "baselines": _jsonable(scores.baseline_details),
        },
        replicates=replicates,
        features=features if keep_features else None,
    )
