"""Benchmark of the exact MST (CPU numpy Prim, GPU torch Boruvka), of GRTD and of batched LBTC; prints JSON.

Each case runs in its own subprocess, so its peak RSS (ru_maxrss) is its own. The CPU speed
target is a ratio against scipy's `minimum_spanning_tree(squareform(pdist(X)))` measured in the
same process on the same data. The GPU cases run only when torch sees CUDA; GPU GRTD is timed
against the numpy GRTD on the same data in the same process.

    python bench/mst.py                 # all cases
    python bench/mst.py --cases cpu_n4096 lbtc
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

D = 320
TARGETS = {
    "cpu_n4096_speedup_vs_scipy_min": 30.0,
    "cpu_n20000_seconds_max": 8.0,
    "cpu_n20000_peak_rss_gb_max": 2.5,
    "gpu_n20000_seconds_max": 0.15,
    "gpu_vs_cpu_rel_diff_max": 1e-5,
    "lbtc_seconds_max": 2.0,
    "gpu_grtd_vs_cpu_rel_diff_max": 1e-5,
}


def _points(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def _timed(fn: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def case_cpu_n4096() -> dict[str, Any]:
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial.distance import pdist, squareform

    from transferability.mst import mst_weight

    x = _points(4096)
    mst_weight(x)  # warm-up: BLAS threads, page cache
    # Interleaved rounds, so that both sides see the same load from other processes on the machine.
    ours: list[float] = []
    scipy_times: list[float] = []
    for _ in range(3):
        t, w_ours = _timed(lambda: mst_weight(x), 3)
        ours += t
        t, w_scipy = _timed(lambda: float(minimum_spanning_tree(squareform(pdist(x))).sum()), 1)
        scipy_times += t
    speedup = statistics.median(scipy_times) / statistics.median(ours)
    return {
        "n": 4096,
        "d": D,
        "dtype": "float32",
        "ours_seconds": ours,
        "ours_median_s": statistics.median(ours),
        "scipy_seconds": scipy_times,
        "scipy_median_s": statistics.median(scipy_times),
        "speedup_median": speedup,
        "speedup_best": min(scipy_times) / min(ours),
        "weight_ours": w_ours,
        "weight_scipy": w_scipy,
        "weight_rel_diff": abs(w_ours - w_scipy) / w_scipy,
        "meets_target": speedup >= TARGETS["cpu_n4096_speedup_vs_scipy_min"],
    }


def case_cpu_n20000() -> dict[str, Any]:
    from transferability.mst import mst_weight

    x = _points(20000)
    rss_before = _peak_rss_bytes()
    times, w = _timed(lambda: mst_weight(x), 2)
    peak = _peak_rss_bytes()
    return {
        "n": 20000,
        "d": D,
        "dtype": "float32",
        "seconds": times,
        "first_call_s": times[0],
        "weight": w,
        "peak_rss_gb": peak / 1e9,
        "peak_rss_before_mst_gb": rss_before / 1e9,
        "meets_target": max(times) <= TARGETS["cpu_n20000_seconds_max"]
        and peak / 1e9 <= TARGETS["cpu_n20000_peak_rss_gb_max"],
    }


def case_gpu_n20000() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": "torch.cuda.is_available() is False"}
    from transferability.mst import mst_weight

    x = _points(20000)
    mst_weight(x, device="cuda")  # warm-up: context, cuBLAS handles, allocator

    def run() -> float:
        w = mst_weight(x, device="cuda")
        torch.cuda.synchronize()
        return w

    times, w_gpu = _timed(run, 5)
    w_cpu = mst_weight(x)
    rel = abs(w_gpu - w_cpu) / w_cpu
    best = min(times)
    return {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "n": 20000,
        "d": D,
        "seconds": times,
        "median_s": statistics.median(times),
        "weight_gpu": w_gpu,
        "weight_cpu": w_cpu,
        "rel_diff_vs_cpu": rel,
        "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        "best_s": best,
        "meets_target": statistics.median(times) <= TARGETS["gpu_n20000_seconds_max"]
        and rel <= TARGETS["gpu_vs_cpu_rel_diff_max"],
    }


def case_lbtc() -> dict[str, Any]:
    from transferability.lbtc import lbtc

    rng = np.random.default_rng(0)
    a_n, p_n = 512, 125
    feats = {s: rng.standard_normal((a_n, p_n, D)).astype(np.float32) for s in ("enc_4", "enc_5")}
    labels = rng.integers(0, 3, (a_n, p_n))
    mask = rng.random((a_n, p_n)) > 0.05
    lbtc(feats, labels, mask)  # warm-up
    times, res = _timed(lambda: lbtc(feats, labels, mask), 3)
    return {
        "anchors": a_n,
        "points_per_patch": p_n,
        "d": D,
        "stages": 2,
        "seconds": times,
        "median_s": statistics.median(times),
        "value": res.value,
        "patches_used": res.patches_used,
        "meets_target": statistics.median(times) <= TARGETS["lbtc_seconds_max"],
    }


def _labelled_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three noisy classes in D dimensions (float32), the shape of a pilot set's sampled features."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((3, D))[y] * 0.5 + rng.standard_normal((n, D))
    return x.astype(np.float32), y


def case_gpu_grtd() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": "torch.cuda.is_available() is False"}
    from transferability.grtd import grtd_stage_details

    out: dict[str, Any] = {"available": True, "device": torch.cuda.get_device_name(0), "d": D, "runs": {}}
    ok = True
    for n in (4096, 20000):
        x, y = _labelled_points(n)
        grtd_stage_details(x, y, device="cuda")  # warm-up: context, cuBLAS handles, allocator
        torch.cuda.reset_peak_memory_stats()
        gpu_times, gpu = _timed(lambda: grtd_stage_details(x, y, device="cuda"), 5)  # returns host floats: synced
        cpu_times, cpu = _timed(lambda: grtd_stage_details(x, y), 1)
        rel = abs(gpu.value - cpu.value) / abs(cpu.value)
        ok = ok and rel <= TARGETS["gpu_grtd_vs_cpu_rel_diff_max"]
        out["runs"][str(n)] = {
            "n": n,
            "gpu_seconds": gpu_times,
            "gpu_median_s": statistics.median(gpu_times),
            "cpu_numpy_s": cpu_times[0],
            "speedup_vs_cpu": cpu_times[0] / statistics.median(gpu_times),
            "value_gpu": gpu.value,
            "value_cpu": cpu.value,
            "rel_diff_vs_cpu": rel,
            "peak_gpu_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        }
    out["meets_target"] = ok
    return out


CASES: dict[str, Callable[[], dict[str, Any]]] = {
    "cpu_n4096": case_cpu_n4096,
    "cpu_n20000": case_cpu_n20000,
    "gpu_n20000": case_gpu_n20000,
    "gpu_grtd": case_gpu_grtd,
    "lbtc": case_lbtc,
}


def _machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:  # pragma: no cover
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {"api": d.get("internal_api"), "threads": d.get("num_threads"), "version": d.get("version")}
            for d in threadpool_info()
        ]
    except ImportError:  # pragma: no cover
        pass
    try:
        info["loadavg_at_start"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.case:
        result = CASES[args.case]()
        result["peak_rss_gb_process"] = _peak_rss_bytes() / 1e9
        print(json.dumps(result))
        return 0
    out: dict[str, Any] = {"bench": "mst", "machine": _machine(), "targets": TARGETS, "cases": {}}
    for name in args.cases:
        proc = subprocess.run(
            [sys.executable, __file__, "--case", name], capture_output=True, text=True, cwd=str(ROOT), check=False
        )
        if proc.returncode != 0:
            out["cases"][name] = {"error": proc.stderr.strip().splitlines()[-1:] or ["exit %d" % proc.returncode]}
            continue
        out["cases"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
    try:
        out["machine"]["loadavg_at_end"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
