"""Private helpers shared by the metric modules: thread pools, BLAS threads, torch devices.

Not public API; the metric modules (`mst`, `grtd`, `lbtc`) import from here rather than from each other.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

_BLAS_CONTROLLER: Any = None


@contextmanager
def blas_single_thread() -> Iterator[None]:
    """Limit BLAS to one thread inside the block (threadpoolctl), restoring it afterwards."""
    global _BLAS_CONTROLLER
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - scikit-learn (a core dependency) brings threadpoolctl
        yield
        return
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    with _BLAS_CONTROLLER.limit(limits=1, user_api="blas"):
        yield


def worker_count() -> int:
    """Threads for the buffer build: the CPUs this process may run on (capped at 16)."""
    try:
        return max(1, min(16, len(os.sched_getaffinity(0))))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, min(16, os.cpu_count() or 1))


def run_tasks(fn: Callable[[int], None], starts: list[int], workers: int) -> None:
    """Run fn(start) for every start, on `workers` threads pulling from one queue (dynamic)."""
    if workers <= 1 or len(starts) <= 1:
        for s0 in starts:
            fn(s0)
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for _ in pool.map(fn, starts):
            pass


def resolve_device(device: Any) -> Any:
    """None -> numpy path; 'auto' -> CUDA when torch sees one, else numpy; anything else -> torch."""
    if device is None:
        return None
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is installed in every environment we ship
        raise ValueError(f"device={device!r} needs torch, which is not installed") from exc
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else None
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asked for CUDA, but torch sees no CUDA device")
    return dev
