"""A small in-process cache whose entries expire: the API's key -> tenant lookups and the head rows
of finished rankings both use it."""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from typing import Any


class TTLCache:
    """key -> value for `ttl` seconds; when `max_size` entries are held, the next put starts afresh."""

    def __init__(self, ttl: float, max_size: int = 10_000) -> None:
        self.ttl = ttl
        self.max_size = max_size
        self._data: dict[Hashable, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        hit = self._data.get(key)
        if hit is None or hit[1] < time.monotonic():
            return None
        return hit[0]

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            if len(self._data) >= self.max_size:
                self._data.clear()
            self._data[key] = (value, time.monotonic() + self.ttl)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
