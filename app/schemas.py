"""Request and response bodies of the v1 API (they document the contract in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from transferability.fusion import DEFAULT_A


class ErrorItem(BaseModel):
    file: str | None = None
    field: str | None = None
    problem: str


class ErrorBody(BaseModel):
    """Every error: a stable `code`, a human `detail`, optional per-file/field problems."""

    code: str
    detail: str
    errors: list[ErrorItem] | None = None


class ErrorInfo(BaseModel):
    code: str
    detail: str | None = None


class ModelOut(BaseModel):
    """A registered model. `status` is `validating` until a worker has loaded the checkpoint,
    then `ready` (with `load_report` and verified `stages`) or `invalid` (with `error`)."""

    id: str
    name: str
    format: str
    catalog: str | None
    ssl_method: str | None
    shared: bool
    sha256: str
    size_bytes: int
    status: str
    error: ErrorInfo | None
    stages: list[dict[str, Any]]
    preprocessing: dict[str, Any] | None
    load_report: dict[str, Any] | None
    created_at: datetime
    validated_at: datetime | None


class ModelList(BaseModel):
    models: list[ModelOut]


class CaseOut(BaseModel):
    id: str
    shape: list[int]
    spacing: list[float]
    n_channels: int
    voxels_per_class: dict[str, int] = Field(description="label value -> voxel count")


class PilotSetOut(BaseModel):
    id: str
    name: str
    layout: str = Field(description="nnunet or msd (auto-detected)")
    labels: dict[str, int] = Field(description="label name -> value; 0 is background")
    K: int = Field(description="number of foreground classes")
    channels: dict[str, str]
    n_cases: int
    cases: list[CaseOut] | None = None
    created_at: datetime


class PilotSetList(BaseModel):
    pilot_sets: list[PilotSetOut]


class FusionParams(BaseModel):
    """metrics.md §5: alpha = sigmoid(a (ln K - b)) unless `alpha` pins it."""

    model_config = ConfigDict(extra="forbid")
    a: float = DEFAULT_A
    b: float | None = Field(default=None, description="default ln 2.5")
    alpha: float | None = Field(default=None, ge=0.0, le=1.0)


class RankingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pilot_set_id: str
    model_ids: list[str] = Field(min_length=1, max_length=500, json_schema_extra={"uniqueItems": True},
                                 description="distinct model ids (your models or the shared zoo)")
    config: dict[str, Any] | None = Field(default=None, description="ScoringConfig overrides (metrics.md)")
    fusion: FusionParams | None = None


class ItemOut(BaseModel):
    model_id: str
    model_name: str | None
    status: str
    stage: str | None
    progress: float
    attempts: int
    reused: bool = Field(description="score reused from an earlier ranking with the same config hash")
    error: ErrorInfo | None
    numeric_mode: str | None = Field(default=None, description="How the score was computed: cpu-fp32, cuda-bf16 or cuda-fp32")
    grtd: float | None
    lbtc: float | None
    baselines: dict[str, Any] | None
    timings: dict[str, Any] | None
    result: dict[str, Any] | None


class RankingOut(BaseModel):
    id: str
    pilot_set_id: str
    status: str = Field(description="queued, running, succeeded, partial, failed or cancelled")
    progress: float
    config: dict[str, Any]
    config_hash: str
    fusion: dict[str, Any]
    cancel_requested: bool
    error: str | None
    items: list[ItemOut]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class RankingList(BaseModel):
    rankings: list[RankingOut]


class RankedModel(BaseModel):
    rank: int
    model_id: str
    name: str | None
    fused: float
    grtd: float
    lbtc: float
    grtd_norm: float
    lbtc_norm: float


class ModelUncertainty(BaseModel):
    grtd_interval: list[float] | None = Field(description="95% interval of GRTD over the replicates (pseudo-values)")
    lbtc_interval: list[float] | None
    fused_interval: list[float] | None
    rank_interval: list[int] | None = Field(description="2.5% and 97.5% quantiles of the model's rank")
    p_rank1: float | None = Field(description="share of replicates where the model ranks first")


class Uncertainty(BaseModel):
    available: bool
    reason: str | None = Field(None, description="why there is no uncertainty (available: false)")
    models_without: list[str] | None = None
    method: str | None = Field(None, description="half-sampling: m = floor(M/2) of the M pilot cases per replicate")
    level: float | None = None
    n_cases: int | None = None
    effective_cases: dict[str, float] | None = Field(
        None, description="Kish's effective number of cases behind GRTD and LBTC: the t factor's degrees of freedom + 1"
    )
    subset_size: int | None = None
    n_replicates: int | None = None
    n_replicates_used: int | None = Field(None, description="replicates where every model's score is defined")
    n_distinct_halves: int | None = Field(None, description="distinct case subsets among the replicates (C(M, m) at most)")
    note: str | None = Field(None, description="a caveat, e.g. too few distinct halves for the shares to mean much")
    seed: int | None = None
    models: dict[str, ModelUncertainty] | None = None
    p_above: dict[str, dict[str, float | None]] | None = Field(None, description="p_above[i][j] = P(model i ranks above model j)")
    top_model: str | None = None
    stable: bool | None = Field(None, description="the top model's P(rank 1) >= stable_threshold")
    stable_threshold: float | None = None


class GateSource(BaseModel):
    """Which fusion gate a ranking response used: `default` (metrics.md §5), `ranking` (the ranking's own
    fusion parameters), `request` (alpha, a or b in the query) or `calibrated` (the tenant's calibration)."""

    source: str
    calibration_id: str | None


class RankOut(BaseModel):
    ranking_id: str
    status: str
    partial: bool
    K: int
    alpha: float
    a: float
    b: float
    models: list[RankedModel]
    missing: list[str]
    gate: GateSource
    uncertainty: Uncertainty | None = Field(None, description="absent with uncertainty=false")


class EvaluationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    truth: dict[str, float] = Field(description="model id -> fine-tuned Dice (higher is better)")


class EvaluationOut(BaseModel):
    id: str
    ranking_id: str
    n_models: int
    metrics: dict[str, dict[str, Any]] = Field(
        description="per score (fused, grtd, lbtc, each baseline): weighted_tau, kendall_tau, spearman, top1_regret"
    )
    created_at: datetime


class ConfirmationIn(BaseModel):
    """Fine-tune some of a finished ranking's models by cross-validation over its pilot cases."""

    model_config = ConfigDict(extra="forbid")
    top_k: int | None = Field(default=None, ge=1, le=50, description="the ranking's top k models (default 2 when `models` is not given)")
    models: list[str] | None = Field(default=None, min_length=1, max_length=50, json_schema_extra={"uniqueItems": True},
                                     description="model ids of the ranking to confirm, instead of top_k")
    steps: int = Field(default=120, ge=1, description="optimiser steps per fold (capped by TOPORANK_MAX_FINETUNE_STEPS)")
    folds: int | None = Field(default=None, ge=2, description="F of F-fold cross-validation; default leave-one-out up to 5 cases, 5 above")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="base seed: fold plan and per-fold fine-tune seeds")
    finetune: dict[str, Any] | None = Field(
        default=None, description="worker.finetune.FinetuneConfig overrides (patch, batch_size, lr, ...); steps and seed come from above"
    )


class FoldOut(BaseModel):
    fold: int
    status: str
    stage: str | None
    progress: float
    attempts: int
    reused: bool
    n_test: int
    dice: float | None
    per_class: dict[str, float | None] | None
    error: ErrorInfo | None


class ConfirmedModel(BaseModel):
    model_id: str
    name: str | None
    predicted_rank: int | None = Field(description="the model's rank in the ranking's fused order")
    status: str
    progress: float
    dice_mean: float | None = Field(description="mean held-out Dice over the folds done")
    dice_std: float | None = Field(description="sample standard deviation over folds")
    dice_se: float | None = Field(description="standard error of the mean (std / sqrt(folds))")
    n_folds_done: int
    per_class: dict[str, float | None]
    folds: list[FoldOut]


class ConfirmationOut(BaseModel):
    id: str
    ranking_id: str
    status: str = Field(description="queued, running, succeeded, partial, failed or cancelled")
    progress: float
    cancel_requested: bool
    n_folds: int
    fold_plan: list[list[str]] = Field(description="per fold, the ids of its held-out pilot cases")
    steps: int
    seed: int
    finetune: dict[str, Any]
    expected_cost: dict[str, Any] = Field(description="per model, seconds of worker time from measured seconds per step (or null and why)")
    predicted_top: str | None
    best_model: str | None
    top1_confirmed: bool | None = Field(
        description="the predicted top model's mean Dice is within one standard error of the best confirmed model's; null when it cannot be said"
    )
    top1_note: str | None
    evaluation: EvaluationOut | None
    note: str | None
    models: list[ConfirmedModel]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class CalibrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(default="auto", pattern="^(auto|gate|per_k)$",
                      description="`gate` fits (a, b); `per_k` one alpha per K seen; `auto`: per_k below 3 distinct K values, else gate")


class CalibrationOut(BaseModel):
    """A fitted fusion gate and what it buys on the tenant's own evaluations (in sample and leave-one-out)."""

    id: str
    kind: str
    a: float
    b: float
    alpha_by_k: dict[str, float]
    n_evaluations: int
    n_skipped: int
    distinct_k: list[int]
    mean_tau_default: float
    mean_tau_fitted: float
    loo_tau_default: float | None = Field(description="leave-one-evaluation-out mean weighted tau of the default gate")
    loo_tau_fitted: float | None = Field(description="the same for a gate fitted without the held-out evaluation")
    loo: list[dict[str, Any]]
    warnings: list[str]
    evaluation_ids: list[str]
    created_at: datetime


class CalibrationList(BaseModel):
    calibrations: list[CalibrationOut]
