"""The `/v1/rank` body: the fused ordering computed at read time (metrics.md §5), and the cache that
serves it again for finished rankings, whose scores no longer change."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.cache import TTLCache
from app.errors import ApiError, not_found
from app.ranking import fused_ranking, ranking_uncertainty
from app.services.lookups import owned_ranking, storable
from app.services.rankings import num_foreground, scored_items
from app.services.calibrations import latest_calibration
from models_registry.tables import TERMINAL_JOB, PilotSet, RankingJob
from transferability.calibration import Calibration
from transferability.fusion import DEFAULT_A, DEFAULT_B, ResolvedFusion, resolve_fusion

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

RETRY_AFTER_S = "5"


class RankCache:
    """Serialized `/v1/rank` bodies of finished rankings (their scores no longer change).

    Body keys include the job's `updated_at`, so deleting a model (which refreshes the job)
    misses. The job's head row (owner, status, fusion, updated_at) of a finished ranking is kept
    for `head_ttl` seconds, so a hot ranking is answered without a database round trip; deletes
    through this process clear the cache at once, other API processes see them within `head_ttl`.
    """

    def __init__(self, max_size: int = 4096, head_ttl: float = 1.0) -> None:
        self.max_size = max_size
        self.head_ttl = head_ttl
        self._data: dict[tuple[object, ...], bytes] = {}
        self._heads = TTLCache(head_ttl, max_size)
        self._lock = threading.Lock()

    def head(self, ranking_id: str) -> Any | None:
        return self._heads.get(ranking_id)

    def put_head(self, ranking_id: str, head: Any) -> None:
        self._heads.put(ranking_id, head)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
        self._heads.clear()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        return self._data.get(key)

    def put(self, key: tuple[object, ...], body: bytes) -> None:
        with self._lock:
            if len(self._data) >= self.max_size:
                self._data.clear()
            self._data[key] = body


def _fusion(head: Any, overrides: dict[str, float | None]) -> ResolvedFusion:
    return resolve_fusion(head.fusion, **overrides)


def _body_key(ranking_id: str, head: Any, partial: bool, fusion: ResolvedFusion, uncertainty: bool, gate: dict[str, Any]) -> tuple[Any, ...]:
    stamp = head.updated_at.isoformat() if head.updated_at else ""
    return (ranking_id, stamp, head.status, partial, fusion.alpha, fusion.a, fusion.b, uncertainty, gate["source"], gate["calibration_id"])


def _gate(head: Any, overrides: dict[str, float | None]) -> dict[str, Any]:
    """Where the gate's parameters come from, without a calibration: the request, the ranking, or the defaults."""
    if any(v is not None for v in overrides.values()):
        return {"source": "request", "calibration_id": None}
    resolved = resolve_fusion(head.fusion)
    if resolved.alpha is not None or resolved.a != DEFAULT_A or resolved.b != DEFAULT_B:
        return {"source": "ranking", "calibration_id": None}
    return {"source": "default", "calibration_id": None}


def cached_rank_body(
    cache: RankCache, tenant: str, ranking_id: str, partial: bool, overrides: dict[str, float | None], uncertainty: bool = True,
    fusion_mode: str = "ranking",
) -> bytes | None:
    """The cached body of a finished ranking the tenant owns, without touching the database; None on a
    miss (always for `fusion=calibrated`, whose gate is the tenant's latest calibration, read each time)."""
    head = cache.head(ranking_id)
    if head is None or head.tenant_id != tenant or fusion_mode != "ranking":
        return None
    return cache.get(_body_key(ranking_id, head, partial, _fusion(head, overrides), uncertainty, _gate(head, overrides)))


def _calibrated(session: Session, tenant: str, ranking_id: str, overrides: dict[str, float | None]) -> tuple[ResolvedFusion, dict[str, Any]]:
    """The gate of the tenant's latest calibration at this ranking's K; 422 with overrides, 409 without a calibration."""
    if any(v is not None for v in overrides.values()):
        raise ApiError(422, "conflicting_fusion", "fusion=calibrated takes no alpha, a or b")
    row = latest_calibration(session, tenant)
    if row is None:
        raise ApiError(409, "no_calibration", "no calibration yet: POST /v1/calibrations after evaluating some rankings")
    k = session.scalar(select(PilotSet.num_foreground).join(RankingJob, RankingJob.pilot_set_id == PilotSet.id).where(RankingJob.id == ranking_id))
    cal = Calibration.from_dict(row.params)
    return ResolvedFusion(alpha=cal.alpha_for(int(k or 1)), a=cal.a, b=cal.b), {"source": "calibrated", "calibration_id": row.id}


def _retry_later(status: str) -> dict[str, str] | None:
    return {"Retry-After": RETRY_AFTER_S} if status not in TERMINAL_JOB else None


def rank_body(
    sessions: sessionmaker[Session],
    cache: RankCache,
    tenant: str,
    ranking_id: str,
    partial: bool,
    overrides: dict[str, float | None],
    uncertainty: bool = True,
    fusion_mode: str = "ranking",
) -> bytes:
    """The serialized fused ranking (`RankOut`); finished rankings are served from the cache after one PK lookup.

    With `uncertainty`, the body carries the replicates fused into intervals, rank probabilities and
    `stable` (app.ranking.ranking_uncertainty). 409 while the ranking is incomplete (with Retry-After unless it has failed or been cancelled),
    unless `partial`, which ranks the models scored so far and lists the others in `missing`.
    `fusion_mode` "calibrated" fuses with the tenant's latest calibration; `gate` in the body says
    which gate was used.
    """
    if not storable(ranking_id):
        raise not_found("ranking")
    with sessions() as session:
        head = session.execute(
            select(RankingJob.tenant_id, RankingJob.status, RankingJob.fusion, RankingJob.updated_at).where(RankingJob.id == ranking_id)
        ).first()
        if head is None or head.tenant_id != tenant:
            raise not_found("ranking")
        status = head.status
        if status != "succeeded" and not partial:
            raise ApiError(409, "ranking_incomplete", f"ranking is {status}; retry later or pass partial=true", headers=_retry_later(status))
        if fusion_mode == "calibrated":
            fusion, gate = _calibrated(session, tenant, ranking_id, overrides)
        else:
            fusion, gate = _fusion(head, overrides), _gate(head, overrides)
        key = _body_key(ranking_id, head, partial, fusion, uncertainty, gate)
        if status in TERMINAL_JOB:
            cache.put_head(ranking_id, head)
            body = cache.get(key)
            if body is not None:
                return body
        job = owned_ranking(session, tenant, ranking_id)
        scores, names = scored_items(session, job)
        if not scores:
            raise ApiError(409, "no_scores", f"no model of this ranking has a score yet (status {status})", headers=_retry_later(status))
        out = fused_ranking(scores, names, num_foreground(session, job), a=fusion.a, b=fusion.b, alpha=fusion.alpha)
        out.update(
            ranking_id=job.id,
            status=status,
            partial=status != "succeeded",
            missing=[it.model_id for it in job.items if it.model_id not in scores],
            gate=gate,
        )
        if uncertainty:
            out["uncertainty"] = ranking_uncertainty(scores, out["K"], a=fusion.a, b=fusion.b, alpha=fusion.alpha)
        body = json.dumps(out, separators=(",", ":")).encode()
        if status in TERMINAL_JOB:
            cache.put(key, body)
        return body
