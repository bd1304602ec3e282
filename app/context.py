"""Process-wide state of one API instance: settings, database, storage, task dispatch, auth cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.cache import TTLCache
from app.limits import RateLimiter
from app.services.rank import RankCache
from app.storage import Storage
from toporank.settings import Settings


class Dispatcher(Protocol):
    """Sends work to the workers (messages carry ids only)."""

    def score_item(self, item_id: str) -> None: ...

    def validate_model(self, model_id: str) -> None: ...

    def finetune_item(self, item_id: str) -> None: ...

    def broker_ok(self) -> bool: ...


class AuthCache(TTLCache):
    """key hash -> tenant id for `ttl` seconds, so hot endpoints skip the key lookup."""

    def __init__(self, ttl: float = 10.0, max_size: int = 10_000) -> None:
        super().__init__(ttl, max_size)


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    storage: Storage
    dispatcher: Dispatcher
    metrics: Any
    auth_cache: AuthCache = field(default_factory=AuthCache)
    rank_cache: RankCache = field(default_factory=RankCache)
    rate_limiter: RateLimiter | None = None

    def __post_init__(self) -> None:
        if self.rate_limiter is None:
            broker = self.settings.celery_broker_url
            self.rate_limiter = RateLimiter(self.settings.rate_limit_per_minute, broker if broker.startswith("redis") else None)
