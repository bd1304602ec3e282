"""Process-wide state of one API instance: settings, database, storage, task dispatch, auth cache."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.services.rank import RankCache
from app.storage import Storage
from toporank.settings import Settings


class Dispatcher(Protocol):
    """Sends work to the workers (messages carry ids only)."""

    def score_item(self, item_id: str) -> None: ...

    def validate_model(self, model_id: str) -> None: ...

    def broker_ok(self) -> bool: ...


class AuthCache:
    """key hash -> tenant id for `ttl` seconds, so hot endpoints skip the key lookup."""

    def __init__(self, ttl: float = 10.0, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key_hash: str) -> str | None:
        hit = self._data.get(key_hash)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key_hash: str, tenant_id: str) -> None:
        with self._lock:
            if len(self._data) >= self.max_size:
                self._data.clear()
            self._data[key_hash] = (tenant_id, time.monotonic() + self.ttl)


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
