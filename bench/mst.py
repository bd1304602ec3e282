"""Benchmark of the exact MST (CPU numpy Prim, GPU torch Boruvka), of GRTD and of batched LBTC; prints JSON.

Each case runs in its own subprocess, so its peak RSS (ru_maxrss) is its own. The CPU speed
target is a ratio against scipy's `minimum_spanning_tree(squareform(pdist(X)))` measured in the
same process on the same data. The GPU cases run only when torch sees CUDA: the GPU MST times the
new torch path (tiled build + candidate-list Boruvka) against the previous one (strips + dense
sweeps) interleaved in one process, with a stage breakdown; GPU GRTD is timed against the numpy
GRTD on the same data in the same process.

    python bench/mst.py                 # all cases
    python bench/mst.py --cases cpu_n4096 lbtc
    python bench/mst.py --gpu-only      # GPU MST only: old vs new torch path at N=4096 and 20000
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
REPS_GPU = 5  # timed runs per GPU variant, after a warm-up
GPU_CASES = ["gpu_mst"]
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


def _gpu_weight(x: np.ndarray, variant: str, device: str = "cuda") -> float:
    """The public GPU pipeline of `mst_weight(x, device='cuda')` with the Boruvka variant chosen."""
    import math

    from bench.mst_dense import boruvka_edges_dense
    from transferability._validation import as_points
    from transferability.mst import _canonical, boruvka_edges_torch, edge_lengths

    pts = as_points(x)
    if variant not in ("topk", "dense"):
        raise ValueError(f"variant must be 'topk' or 'dense', got {variant!r}")
    edges = (boruvka_edges_dense if variant == "dense" else boruvka_edges_torch)(pts, device, "float32")
    return math.fsum(_canonical(edges, edge_lengths(pts, edges))[1].tolist())


def _gpu_mst_run(n: int, device: str = "cuda") -> dict[str, Any]:
    """Old (strips + dense sweeps) vs new (tiles + candidate lists) at one N, interleaved, plus a breakdown.

    `device` is 'cuda' in the benchmark; 'cpu' only smoke-tests this function where CUDA is absent.
    """
    import math

    import torch

    from transferability._validation import as_points
    from bench.mst_dense import boruvka_edges_from_sq_dense, torch_squared_distances_strips
    from transferability.mst import _canonical, boruvka_edges_from_sq, mst_weight, torch_edge_lengths, torch_squared_distances

    def sync_timed(fn: Callable[[], Any], reps: int) -> tuple[list[float], Any]:
        def run() -> Any:
            out = fn()
            if cuda:
                torch.cuda.synchronize()
            return out

        return _timed(run, reps)

    cuda = device == "cuda"
    x = _points(n)
    dev = torch.device(device)
    w_new = mst_weight(x, device=device)  # warm-up: context, cuBLAS handles, allocator
    w_old = _gpu_weight(x, "dense", device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    new_t: list[float] = []
    old_t: list[float] = []
    for _ in range(REPS_GPU):  # interleaved: both see the same clocks and the same allocator state
        t, w_new = sync_timed(lambda: mst_weight(x, device=device), 1)
        new_t += t
        t, w_old = sync_timed(lambda: _gpu_weight(x, "dense", device), 1)
        old_t += t
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else None
    t0 = time.perf_counter()
    w_cpu = mst_weight(x)
    cpu_s = time.perf_counter() - t0

    # Breakdown of the new path (each stage synchronised), and each half against its predecessor.
    pts = as_points(x)
    stats: dict[str, Any] = {}
    t0 = time.perf_counter()
    sq, _ = torch_squared_distances(pts, dev, "float32", stats=stats)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    edges_new = boruvka_edges_from_sq(sq, stats=stats)
    boruvka_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    w_break = math.fsum(_canonical(edges_new, torch_edge_lengths(pts, edges_new, dev))[1].tolist())
    lengths_s = time.perf_counter() - t0
    edges_dense = boruvka_edges_from_sq_dense(sq)
    same_edges = sorted(map(tuple, np.sort(edges_new, axis=1).tolist())) == sorted(
        map(tuple, np.sort(edges_dense, axis=1).tolist())
    )
    bor_new, _ = sync_timed(lambda: boruvka_edges_from_sq(sq), REPS_GPU)
    bor_dense, _ = sync_timed(lambda: boruvka_edges_from_sq_dense(sq), REPS_GPU)
    by_k = {str(k): statistics.median(sync_timed(lambda k=k: boruvka_edges_from_sq(sq, k=k), 3)[0]) for k in (0, 8, 32)}
    del sq
    build_new, _ = sync_timed(lambda: torch_squared_distances(pts, dev, "float32"), REPS_GPU)
    build_old, _ = sync_timed(lambda: torch_squared_distances_strips(pts, dev, "float32"), REPS_GPU)
    sq_old, _ = torch_squared_distances_strips(pts, dev, "float32")
    sq_new, _ = torch_squared_distances(pts, dev, "float32")
    off = ~torch.eye(n, dtype=torch.bool, device=dev)
    sq_rel = float(((sq_new - sq_old).abs()[off] / sq_old[off].clamp(min=1e-30)).max())
    sq_bitwise = bool(torch.equal(sq_new, sq_old))
    del sq_old, sq_new, off
    if cuda:
        torch.cuda.empty_cache()
    med_new, med_old = statistics.median(new_t), statistics.median(old_t)
    return {
        "n": n,
        "d": D,
        "new_seconds": new_t,
        "new_median_s": med_new,
        "new_best_s": min(new_t),
        "old_seconds": old_t,
        "old_median_s": med_old,
        "old_best_s": min(old_t),
        "speedup_median": med_old / med_new,
        "weight_new": w_new,
        "weight_old": w_old,
        "weight_cpu_numpy": w_cpu,
        "cpu_numpy_s": cpu_s,
        "rel_diff_new_vs_cpu": abs(w_new - w_cpu) / w_cpu,
        "rel_diff_old_vs_cpu": abs(w_old - w_cpu) / w_cpu,
        "new_edges_equal_dense_on_same_sq": same_edges,
        "sq_tiles_vs_strips_max_rel_diff": sq_rel,
        "sq_tiles_bitwise_equal_strips": sq_bitwise,
        "peak_gpu_mem_gb": peak,
        "breakdown_new": {
            "build_s": build_s,
            "prep_upload_s": stats.get("prep_upload_s"),
            "tiles_s": stats.get("tiles_s"),
            "boruvka_s": boruvka_s,
            "boruvka_first_pass_s": stats.get("first_pass_s"),
            "boruvka_rounds_s": stats.get("rounds_s"),
            "rounds": stats.get("rounds"),
            "k": stats.get("k"),
            "refreshed_rows_per_round": stats.get("refreshed_rows"),
            "edge_lengths_canonical_s": lengths_s,
            "weight_matches": w_break == w_new,
        },
        "build_median_s": {"tiles_new": statistics.median(build_new), "strips_old": statistics.median(build_old)},
        "boruvka_median_s": {
            "candidates_new": statistics.median(bor_new),
            "dense_old": statistics.median(bor_dense),
            "candidates_by_k": by_k,
        },
    }


def case_gpu_mst() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"available": False, "reason": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"available": False, "reason": "GPU unavailable: torch.cuda.is_available() is False"}
    t0 = time.perf_counter()
    runs = {str(n): _gpu_mst_run(n) for n in (4096, 20000)}
    big = runs["20000"]
    return {
        "available": True,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "reps": REPS_GPU,
        "runs": runs,
        "case_wall_s": time.perf_counter() - t0,
        "meets_target": big["new_median_s"] <= TARGETS["gpu_n20000_seconds_max"]
        and big["rel_diff_new_vs_cpu"] <= TARGETS["gpu_vs_cpu_rel_diff_max"],
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
    "gpu_mst": case_gpu_mst,
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
    parser.add_argument("--gpu-only", action="store_true", help="run only the GPU MST case (old vs new, N=4096, 20000)")
    parser.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    if args.gpu_only:
        args.cases = GPU_CASES
    if args.case:
        result = CASES[args.case]()
        result["peak_rss_gb_process"] = _peak_rss_bytes() / 1e9
        print(json.dumps(result))
        return 0
    out: dict[str, Any] = {"bench": "mst", "machine": _machine(), "targets": TARGETS, "cases": {}}
    for name in args.cases:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--case", name], capture_output=True, text=True, cwd=str(ROOT), check=False
        )
        if proc.returncode != 0:
            out["cases"][name] = {"error": proc.stderr.strip().splitlines()[-1:] or ["exit %d" % proc.returncode]}
            continue
        out["cases"][name] = json.loads(proc.stdout.strip().splitlines()[-1])
        out["cases"][name]["subprocess_wall_s"] = time.perf_counter() - t0
    try:
        out["machine"]["loadavg_at_end"] = os.getloadavg()
    except OSError:  # pragma: no cover
        pass
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
