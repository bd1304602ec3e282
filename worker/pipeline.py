"""Score one model on one pilot set: load, extract at the shared points, GRTD, LBTC, baselines.

The sample plan and the boundary anchors come from the ORIGINAL label grids and the config seed
only (metrics.md §2, §4), so every model is scored on the same physical points. LBTC patches are
laid out per stage with step = the stage's stride converted to original-grid voxels.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models_registry.catalog import resolve_spec
from models_registry.specs import ModelSpec
from transferability.config import SCORING_CODE_VERSION, ScoringConfig
from transferability.grtd import VARIANTS as GRTD_VARIANTS
from transferability.sampling import AnchorSet, SamplePlan, boundary_anchors, nearest_labels, patch_grid, sample_points
from worker.adapters import FeatureModel, load_feature_model, resolve_device
from worker.extract import CaseVolume, case_layout, extract_case

Progress = Callable[[str, float], None]

# Share of the overall progress per phase (extraction dominates the run time).
_PHASES = {"load": (0.0, 0.05), "extract": (0.05, 0.85), "grtd": (0.85, 0.93), "lbtc": (0.93, 0.97), "baselines": (0.97, 1.0)}

__all__ = ["CaseVolume", "GatheredFeatures", "ModelScoreResult", "default_stages", "score_model"]


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
    details: dict[str, Any] = field(default_factory=dict)
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
    `extra_decoder_points[i][stage]`: the GRTD stages under fresh decoder i + 1 (n_decoders > 1).
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
    names = {s.name for s in fm.stages}
    grtd = list(config.grtd_stages) if config.grtd_stages else [s.name for s in fm.decoder_stages[-2:]]
    lbtc = list(config.lbtc_stages) if config.lbtc_stages else [s.name for s in fm.encoder_stages[-2:]]
    for s in grtd + lbtc:
        if s not in names:
            raise ValueError(f"unknown stage {s!r} in the scoring config; the model has {sorted(names)}")
    if config.baseline_stage is not None:
        base = config.baseline_stage
        if base not in names:
            raise ValueError(f"unknown baseline_stage {config.baseline_stage!r}; the model has {sorted(names)}")
    else:
        base = min(grtd, key=lambda n: (int(np.prod(fm.stage(n).stride)), -grtd.index(n)))
    return grtd, lbtc, base


def _sampling_job(
    labels: list[NDArray[Any]], config: ScoringConfig
) -> tuple[SamplePlan, AnchorSet, tuple[Any, Any, Any], dict[str, float]]:
    """What needs only the labels and the seed (plus the scoring modules' imports, ~1 s for
    scikit-learn): run beside the model load. Returns (plan, anchors, (grtd, lbtc, baselines), timings)."""
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    from transferability.baselines import score_all_with_diagnostics
    from transferability.grtd import grtd as grtd_fn
    from transferability.lbtc import lbtc as lbtc_fn

    times["imports"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    plan = sample_points(labels, config.n_samples, config.seed)
    times["sample_plan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    anchors = boundary_anchors(labels, config.n_anchors, config.seed)
    times["anchors"] = time.perf_counter() - t0
    return plan, anchors, (grtd_fn, lbtc_fn, score_all_with_diagnostics), times


def _check_cases(cases: Sequence[CaseVolume]) -> None:
    if len(cases) == 0:
        raise ValueError("the pilot set has no cases")
    for m, c in enumerate(cases):
        if not isinstance(c, CaseVolume):
            raise ValueError(f"case {m} is not a CaseVolume")
    ch = {c.n_channels for c in cases}
    if len(ch) != 1:
        raise ValueError(f"cases have different channel counts {sorted(ch)}")


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
) -> tuple[tuple[dict[str, NDArray[np.float32]], tuple[dict[str, Any], dict[str, Any], dict[str, Any]]], list[dict[str, Any]], float]:
    """Features at the shared points (`point_stages`) and, with `anchors`, in the LBTC patches
    (`lbtc_stages`), case by case: only the gathered arrays grow with the number of cases.

    Returns ((point features, (patch features, patch labels, patch masks)), per-case extraction
    diagnostics, seconds spent laying out query points).
    """
    k3 = config.k**3
    n_anc = len(anchors) if anchors is not None else 0
    point_feats = {s: np.zeros((len(plan), fm.stage(s).channels), np.float32) for s in point_stages}
    patch_feats = {s: np.zeros((n_anc, k3, fm.stage(s).channels), np.float32) for s in lbtc_stages}
    patch_labels = {s: np.zeros((n_anc, k3), np.int64) for s in lbtc_stages}
    patch_mask = {s: np.zeros((n_anc, k3), bool) for s in lbtc_stages}
    per_case: list[dict[str, Any]] = []
    batch = batch_size or (2 if fm.device.type == "cuda" else 1)
    t_queries = 0.0
    for m, case in enumerate(cases):
        t_q = time.perf_counter()
        idx_pts = plan.for_case(m)
        idx_anc = np.flatnonzero(anchors.case == m) if anchors is not None else np.zeros(0, np.int64)
        queries: dict[str, list[NDArray[np.float64]]] = {}
        for s in point_stages:
            queries.setdefault(s, []).append(plan.coords[idx_pts].astype(np.float64))
        patch_sel: dict[str, NDArray[np.bool_]] = {}
        if idx_anc.size and anchors is not None:
            layout = case_layout(case, fm.preprocessing, fm.coarsest_stride, config.sw_overlap)  # type: ignore[arg-type]
            for s in lbtc_stages:
                step = layout.stride_in_original(fm.stage(s).stride)
                pts, mask = patch_grid(anchors.coords[idx_anc], step, config.k, [case.shape] * idx_anc.size)
                patch_sel[s] = mask
                patch_mask[s][idx_anc] = mask
                patch_labels[s][idx_anc] = np.where(mask, nearest_labels(case.label, pts), 0)
                queries.setdefault(s, []).append(pts[mask])
        flat = {s: np.concatenate(v, axis=0) for s, v in queries.items()}
        t_queries += time.perf_counter() - t_q
        if all(v.shape[0] == 0 for v in flat.values()):
            per_case.append({"skipped": "no sample points or anchors in this case"})
            progress((m + 1) / len(cases))
            continue
        ex = extract_case(
            fm, case, flat, overlap=config.sw_overlap, batch_size=batch,
            progress=lambda f, m=m: progress((m + f) / len(cases)),
        )
        for s in flat:
            got = ex.features[s]
            offset = 0
            if s in point_feats:
                point_feats[s][idx_pts] = got[: idx_pts.size]
                offset = idx_pts.size
            if s in patch_sel:
                block = np.zeros((idx_anc.size, k3, got.shape[1]), np.float32)
                block[patch_sel[s]] = got[offset:]
                patch_feats[s][idx_anc] = block
        per_case.append(ex.diagnostics)
        progress((m + 1) / len(cases))
    return (point_feats, (patch_feats, patch_labels, patch_mask)), per_case, t_queries


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
) -> ModelScoreResult:
    """GRTD, LBTC and baselines of one model on a pilot set (metrics.md §2-§4, §6).

    `timings` (seconds): `load`; `imports`, `sample_plan`, `anchors` (run in a background thread
    while the model loads: they need only the labels and the seed); `wait_sampling` (what the load
    did not hide of them); `extract` (with `extract_queries`, its share spent laying out the query
    points and patch labels); `grtd`, `lbtc`, `baselines`; `finish` (diagnostics); `total`, all of it.

    `grtd` is `config.grtd_variant`, averaged over `config.n_decoders` fresh decoders (seeds
    decoder_seed, decoder_seed + 1, ...; the baselines read the first decoder only); every GRTD
    variant is reported in `details["grtd"]["variants"]` (the other costs one more MST per stage).
    `keep_features=True` hands the gathered features out in `.features` (never serialised).
    """
    t_start = time.perf_counter()

    def report(phase: str, frac: float) -> None:
        if progress is not None:
            lo, hi = _PHASES[phase]
            progress(phase, lo + (hi - lo) * min(max(frac, 0.0), 1.0))

    _check_cases(cases)
    timings: dict[str, float] = {}
    dev = resolve_device(device)
    report("load", 0.0)
    labels = [c.label for c in cases]
    with ThreadPoolExecutor(1) as pool:
        sampling = pool.submit(_sampling_job, labels, config)
        t0 = time.perf_counter()
        spec = resolve_spec(spec)
        fm = load_feature_model(
            spec, Path(checkpoint_path), decoder_init=config.decoder_init, decoder_seed=config.decoder_seed, device=dev,
            in_channels=cases[0].n_channels,
        )
        if fm.preprocessing is None:
            raise ValueError("the model has no preprocessing (spacing, patch size): set it in its spec or catalog entry")
        timings["load"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        plan, anchors, fns, job_times = sampling.result()
        timings["wait_sampling"] = time.perf_counter() - t0
    timings.update(job_times)
    grtd_fn, lbtc_fn, score_all_with_diagnostics = fns
    report("load", 1.0)

    grtd_stages, lbtc_stages, base_stage = default_stages(fm, config)
    point_stages = list(dict.fromkeys(grtd_stages + [base_stage]))
    if len(anchors) == 0:
        raise ValueError("the label maps have no boundary voxels: LBTC needs at least two labels touching")

    t0 = time.perf_counter()
    n_passes = config.n_decoders
    gathered, per_case, t_queries = _gather(
        fm, cases, plan, anchors, point_stages, lbtc_stages, config, batch_size,
        lambda f: report("extract", f / n_passes),
    )
    point_feats, (patch_feats, patch_labels, patch_mask) = gathered
    extra_points: list[dict[str, NDArray[np.float32]]] = []
    for i in range(1, n_passes):  # GRTD averaged over fresh decoders decoder_seed + i (docs/decisions.md)
        fm.reseed_decoder(config.decoder_seed + i)
        more, _, t_more = _gather(
            fm, cases, plan, None, grtd_stages, [], config, batch_size, lambda f, i=i: report("extract", (i + f) / n_passes)
        )
        extra_points.append(more[0])
        t_queries += t_more
    if n_passes > 1:
        fm.reseed_decoder(config.decoder_seed)
    timings["extract"] = time.perf_counter() - t0
    timings["extract_queries"] = t_queries

    t0 = time.perf_counter()
    report("grtd", 0.0)
    other = tuple(v for v in GRTD_VARIANTS if v != config.grtd_variant)
    grtd_dev = dev if dev.startswith("cuda") else None  # exact MST on the GPU when present
    runs = [
        grtd_fn(
            {s: feats[s] for s in grtd_stages}, plan.labels, lam=config.lam, quantile=config.quantile,
            stages=grtd_stages, device=grtd_dev, variant=config.grtd_variant, extra_variants=other,
        )
        for feats in [point_feats, *extra_points]
    ]
    g = runs[0]
    grtd_value = math.fsum(r.value for r in runs) / len(runs)
    grtd_per_stage = {s: math.fsum(r.per_stage[s] for r in runs) / len(runs) for s in grtd_stages}
    grtd_variants = {v: math.fsum(r.variants[v] for r in runs) / len(runs) for v in g.variants}
    timings["grtd"] = time.perf_counter() - t0
    report("grtd", 1.0)

    t0 = time.perf_counter()
    report("lbtc", 0.0)
    lb = lbtc_fn(patch_feats, patch_labels, patch_mask, stages=lbtc_stages)
    timings["lbtc"] = time.perf_counter() - t0
    report("lbtc", 1.0)

    baselines: dict[str, float] = {}
    base_diag: dict[str, Any] = {}
    t0 = time.perf_counter()
    if config.baselines:
        report("baselines", 0.0)
        baselines, base_diag = score_all_with_diagnostics(point_feats[base_stage], plan.labels, plan.case, seed=config.seed)
    timings["baselines"] = time.perf_counter() - t0
    t0 = time.perf_counter()

    classes, counts = np.unique(plan.labels, return_counts=True)
    diagnostics = {
        "device": dev,
        "autocast": "bf16" if dev.startswith("cuda") else "fp32",
        "n_cases": len(cases),
        "n_points": len(plan),
        "points_per_class": {int(c): int(n) for c, n in zip(classes, counts)},
        "n_anchors": len(anchors),
        "n_boundary_voxels": anchors.n_boundary_voxels,
        "patches_used": dict(lb.patches_used),
        "patches_skipped": dict(lb.patches_skipped),
        "grtd_stages": grtd_stages,
        "lbtc_stages": lbtc_stages,
        "baseline_stage": base_stage,
        "baselines_omitted": base_diag.get("omitted", {}),
        "preprocessing": fm.preprocessing.model_dump(mode="json"),
        "decoder": {"init": fm.decoder_init, "seed": fm.decoder_seed},
        "extraction": per_case,
    }
    load_report = fm.load_report.to_dict()
    stages = [s.to_dict() for s in fm.stages]
    timings["finish"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    report("baselines", 1.0)
    return ModelScoreResult(
        grtd=float(grtd_value),
        lbtc=float(lb.value),
        per_stage={"grtd": grtd_per_stage, "lbtc": dict(lb.per_stage)},
        baselines=baselines,
        diagnostics=diagnostics,
        timings=timings,
        load_report=load_report,
        config=config.to_dict(),
        config_hash=config.hash(),
        stages=stages,
        details={
            "grtd": {
                **g.to_dict(),
                "variant": config.grtd_variant,
                "variants": grtd_variants,
                "n_decoders": n_passes,
                "per_decoder": [r.variants for r in runs],
            },
            "lbtc": {"mean_leakage": dict(lb.mean_leakage)},
            "baselines": _jsonable(base_diag),
        },
        features=GatheredFeatures(
            points=point_feats, labels=plan.labels, case=plan.case, patches=patch_feats, patch_labels=patch_labels,
            patch_mask=patch_mask, grtd_stages=grtd_stages, lbtc_stages=lbtc_stages, baseline_stage=base_stage,
            extra_decoder_points=extra_points,
        ) if keep_features else None,
    )
