"""Load the next model of a ranking while the current one is scored (one slot per worker process).

A worker scores a ranking's items one message at a time. Loading a checkpoint (read, sha256,
build, assign the weights) needs neither the accelerator nor the current model, so while item i
extracts and scores, a background thread loads item i+1's model into this slot, together with
the pilot set's cases already in memory. When item i+1's message reaches this process, its task
takes the slot instead of loading again. The slot is a cache, nothing more: messages, acks and
redelivery are untouched (a task whose slot is missing, stale or failed loads as before; a dead
worker loses the slot with everything else), so a prefetched model never changes a result.

Only one load runs in the background at a time, and any task that does not take the slot waits for
an in-flight load to end before it starts (`discard`), so a load never overlaps work other than the
scoring it was started beside. An untaken slot is dropped after `IDLE_DROP_S` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

IDLE_DROP_S = 300.0
"""An untaken slot (the next message went to another worker, the ranking was cancelled) is dropped after this long."""


@dataclass(frozen=True)
class LoadKey:
    """Everything a loaded feature model depends on: the stored checkpoint and its hash, the spec,
    the fresh decoder, the device and the input channels."""

    checkpoint: str
    sha256: str
    spec_json: str
    decoder_init: str
    decoder_seed: int
    device: str
    in_channels: int


@dataclass
class Prefetched(Generic[T]):
    """What a task takes from the slot: the model load (done or in flight), the cases it was
    started with, and how long the background load took (None while it runs)."""

    item_id: str
    key: LoadKey
    pilot_set_id: str
    cases: list[Any]
    load: Future[T]
    started: float = field(default_factory=time.perf_counter)
    background_s: float | None = None


class Prefetcher(Generic[T]):
    """The slot: `start` a load for an item, `take` it for that item, `discard` otherwise."""

    def __init__(self, idle_drop_s: float = IDLE_DROP_S) -> None:
        self._lock = threading.Lock()
        self._slot: Prefetched[T] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._idle_drop_s = idle_drop_s
        self._timer: threading.Timer | None = None

    def start(self, item_id: str, key: LoadKey, pilot_set_id: str, cases: list[Any], load: Callable[[], T]) -> None:
        """Load `load()` in the background for `item_id`, replacing (after it ends) any earlier slot."""
        self.discard()
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="prefetch")
            entry: Prefetched[T] = Prefetched(item_id, key, pilot_set_id, cases, Future())

            def run() -> T:
                try:
                    return load()
                finally:
                    entry.background_s = time.perf_counter() - entry.started

            entry.load = self._pool.submit(run)
            self._slot = entry
            self._arm_timer()

    def take(self, item_id: str) -> Prefetched[T] | None:
        """The slot if it was started for `item_id` (its load may still run); else None, after
        waiting for any in-flight load to end and dropping it."""
        with self._lock:
            slot, self._slot = self._slot, None
            self._cancel_timer()
        if slot is None:
            return None
        if slot.item_id == item_id:
            return slot
        wait_quietly(slot.load)
        return None

    def discard(self) -> None:
        """Drop the slot, after its load (if still running) has ended."""
        with self._lock:
            slot, self._slot = self._slot, None
            self._cancel_timer()
        if slot is not None:
            wait_quietly(slot.load)

    def pending_item(self) -> str | None:
        """The item the slot holds a load for, if any."""
        with self._lock:
            return None if self._slot is None else self._slot.item_id

    def _arm_timer(self) -> None:
        self._cancel_timer()
        self._timer = threading.Timer(self._idle_drop_s, self._drop_if_idle)
        self._timer.daemon = True
        self._timer.start()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _drop_if_idle(self) -> None:
        with self._lock:
            slot = self._slot
            if slot is not None and slot.load.done():
                self._slot = None
                self._timer = None
            elif slot is not None:  # still loading: look again later
                self._arm_timer()


def wait_quietly(load: Future[Any]) -> None:
    """Wait for a load nobody will use; its error, if any, is the next real load's to report."""
    try:
        load.result()
    except Exception:  # noqa: BLE001 - the task that needs this model loads it again and reports
        pass
