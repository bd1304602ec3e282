"""Per-tenant limits: stored bytes, rankings in flight, and a request rate per API key.

Each refusal is 429 with a `code` and a `Retry-After` header. The rate limit counts requests in
fixed one-minute windows: in Redis when the deployment's broker is Redis (shared by every API
process), else in this process (the embedded default runs one). If Redis cannot be reached the
request is let through: the limit protects the service and must not take it down.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.errors import ApiError
from app.storage import Storage
from models_registry.tables import RankingJob

log = logging.getLogger(__name__)

WINDOW_S = 60
STORAGE_RETRY_AFTER_S = 3600  # space comes back when the tenant deletes something, not by waiting
RANKING_RETRY_AFTER_S = 30


def tenant_storage_bytes(storage: Storage, tenant: str) -> int:
    """Bytes the tenant's pilot sets and models take in storage (a walk of its folder)."""
    total = 0
    for folder, _dirs, files in os.walk(storage.tenant_dir(tenant)):
        for name in files:
            try:
                total += (Path(folder) / name).stat().st_size
            except OSError:  # removed while we walked
                pass
    return total


def declared_length(request: Any) -> int:
    """The request's Content-Length, 0 when absent (a chunked upload is checked once stored)."""
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else 0


def ensure_storage(storage: Storage, tenant: str, incoming: int, quota: int) -> None:
    """429 `storage_quota_exceeded` when `incoming` more bytes would take the tenant past `quota` (0: no quota)."""
    if quota <= 0:
        return
    used = tenant_storage_bytes(storage, tenant)
    if used + incoming > quota:
        raise ApiError(
            429, "storage_quota_exceeded",
            f"this upload ({incoming} bytes) would take your storage to {used + incoming} of {quota} bytes; "
            "delete pilot sets or models to make room",
            headers={"Retry-After": str(STORAGE_RETRY_AFTER_S)},
        )


def ensure_ranking_slot(session: Session, tenant: str, limit: int) -> None:
    """429 `too_many_rankings` when the tenant already has `limit` rankings queued or running (0: no limit)."""
    if limit <= 0:
        return
    running = session.scalar(
        select(func.count()).select_from(RankingJob).where(RankingJob.tenant_id == tenant, RankingJob.status.in_(("queued", "running")))
    )
    if (running or 0) >= limit:
        raise ApiError(
            429, "too_many_rankings", f"{running} of your rankings are queued or running (limit {limit}); wait for one to finish",
            headers={"Retry-After": str(RANKING_RETRY_AFTER_S)},
        )


class RateLimiter:
    """At most `per_minute` requests per key and one-minute window (0: off)."""

    def __init__(self, per_minute: int, redis_url: str | None = None) -> None:
        self.per_minute = int(per_minute)
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, int]] = {}  # key -> (window, count)
        self._redis = None
        if redis_url and self.per_minute > 0:
            import redis

            self._redis = redis.Redis.from_url(redis_url, socket_timeout=0.5, socket_connect_timeout=0.5)

    def hit(self, key: str, now: float | None = None) -> None:
        """Count one request of `key`; 429 `rate_limited` with Retry-After (seconds to the next window) past the limit."""
        if self.per_minute <= 0:
            return
        now = time.time() if now is None else now
        window = int(now // WINDOW_S)
        count = self._count_redis(key, window) if self._redis is not None else None
        if count is None:
            count = self._count_local(key, window)
        if count > self.per_minute:
            retry = max(1, int((window + 1) * WINDOW_S - now + 0.999))
            raise ApiError(429, "rate_limited", f"more than {self.per_minute} requests this minute with this key",
                           headers={"Retry-After": str(retry)})

    def _count_local(self, key: str, window: int) -> int:
        with self._lock:
            seen_window, count = self._counts.get(key, (window, 0))
            count = count + 1 if seen_window == window else 1
            if len(self._counts) > 100_000:  # old windows of idle keys
                self._counts = {k: v for k, v in self._counts.items() if v[0] == window}
            self._counts[key] = (window, count)
            return count

    def _count_redis(self, key: str, window: int) -> int | None:
        name = f"toporank:rate:{key}:{window}"
        try:
            pipe = self._redis.pipeline()  # type: ignore[union-attr]
            pipe.incr(name)
            pipe.expire(name, 2 * WINDOW_S)
            count, _ = pipe.execute()
            return int(count)
        except Exception as exc:  # noqa: BLE001 - Redis down: count here rather than refuse service
            log.warning("rate limiter: Redis unreachable (%s); counting in this process", type(exc).__name__)
            return None
