"""Benchmark: per-case time and peak memory of extraction + scoring (worker.pipeline.score_model).

Prints one JSON object. Each configuration runs in a fresh subprocess so its peak RSS is its own.
Baselines measured in the same run: the bare forward passes of the same windows (extraction
overhead = extract time / forward-only time) and the 1-case run (memory flatness = peak RSS
growth during scoring with N cases / with 1 case). With CUDA present it also scores on the GPU
(bf16 autocast) with the small ResEnc and with a ResEnc-L (random weights, OpenMind layout).

    python bench/extract.py            # CPU: small ResEnc, 1/4/8 cases of ~3 mm brains
    python bench/extract.py --quick    # fewer cases (smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def synthetic_case(seed: int, shape: tuple[int, int, int], spacing: tuple[float, float, float]):
    """A brain-like volume: nested ellipsoids (labels 0/1/2) with a smooth random warp and noise."""
    from worker.extract import CaseVolume

    rng = np.random.default_rng(seed)
    axes = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    wob = 0.08 * np.sin(3 * x + rng.uniform(0, 6)) * np.cos(4 * y + rng.uniform(0, 6)) + 0.05 * np.sin(5 * z + rng.uniform(0, 6))
    r = np.sqrt((x / 0.85) ** 2 + (y / 0.9) ** 2 + (z / 0.8) ** 2) + wob
    label = np.zeros(shape, np.int64)
    label[r < 0.9] = 1
    label[r < 0.6 + 0.1 * np.sin(8 * x)] = 2
    img = np.choose(label, [0.0, 60.0, 100.0]) + rng.normal(0, 8, shape)
    return CaseVolume(img.astype(np.float32)[None], label, spacing)


def write_checkpoint(kind: str, folder: Path) -> tuple[dict[str, Any], Path]:
    """A random-weight nnssl checkpoint: the demo ResEnc (8-16-32-64) or ResEnc-L (OpenMind)."""
    import torch

    from models_registry.catalog import resolve_spec
    from models_registry.specs import ModelSpec
    from worker.demo_zoo import adaptation_plan, build_demo_unet

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}.pth"
    if kind == "small":
        net = build_demo_unet(0)
        plan = adaptation_plan("bench")
        spec = ModelSpec(name="bench-small", format="nnssl", catalog="demo-resenc-mae")
    else:
        from worker.adapters.nnssl import _build_network

        torch.manual_seed(0)
        net = _build_network("ResEncL", None, None, 1)
        plan = dict(adaptation_plan("bench"), architecture_plans={"arch_class_name": "ResEncL", "arch_kwargs": None, "arch_kwargs_requiring_import": None})
        spec = ModelSpec(name="bench-resencl", format="nnssl", catalog="openmind-resencl-mae")
    torch.save({"network_weights": net.state_dict(), "nnssl_adaptation_plan": plan}, path)
    return resolve_spec(spec).model_dump(mode="json"), path


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class RssSampler:
    """Samples this process's RSS every 10 ms in a thread; `.peak` is the highest seen (MiB)."""

    def __init__(self) -> None:
        import threading

        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(0.01)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration, in its own process: score N cases, then time the bare forwards."""
    import torch

    from models_registry.specs import ModelSpec
    from transferability.config import ScoringConfig
    from worker.adapters import load_feature_model
    from worker.extract import case_layout
    from worker.pipeline import score_model

    spec = ModelSpec.model_validate(json.loads(Path(args.spec).read_text()))
    shape = tuple(args.shape)
    spacing = tuple(args.spacing)
    cases = [synthetic_case(100 + m, shape, spacing) for m in range(args.n_cases)]  # type: ignore[arg-type]
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    config = ScoringConfig()
    rss_before = rss_mb()
    sampler = RssSampler()
    sampler.start()
    t0 = time.perf_counter()
    res = score_model(spec, Path(args.checkpoint), cases, config, device=args.device)
    wall = time.perf_counter() - t0
    sampler.stop()
    warm: dict[str, Any] = {}
    if args.warm:
        # A long-lived worker: imports done, CUDA context and kernels loaded, checkpoint in the page
        # cache. The same call again, timed the same way; results must not change.
        t0 = time.perf_counter()
        res2 = score_model(spec, Path(args.checkpoint), cases, config, device=args.device)
        w2 = time.perf_counter() - t0
        warm = {"warm_wall_s": round(w2, 3), "warm_per_case_s": round(w2 / args.n_cases, 3),
                "warm_timings_s": {k: round(v, 3) for k, v in res2.timings.items()},
                "warm_same_scores": bool(res2.grtd == res.grtd and res2.lbtc == res.lbtc)}
    out: dict[str, Any] = {
        "device": args.device,
        "model": spec.name,
        "n_cases": args.n_cases,
        "case_shape": list(shape),
        "case_spacing": list(spacing),
        "wall_s": round(wall, 3),
        "per_case_s": round(wall / args.n_cases, 3),
        "per_case_extract_s": round(res.timings["extract"] / args.n_cases, 3),
        "timings_s": {k: round(v, 3) for k, v in res.timings.items()},
        "n_points": res.diagnostics["n_points"],
        "n_anchors": res.diagnostics["n_anchors"],
        "windows_per_case": [d.get("n_windows") for d in res.diagnostics["extraction"]],
        "rss_before_scoring_mb": round(rss_before, 1),
        "peak_rss_during_scoring_mb": round(sampler.peak, 1),
        "peak_rss_growth_mb": round(sampler.peak - rss_before, 1),
        "process_peak_rss_mb": round(peak_rss_mb(), 1),
        "grtd": res.grtd,
        "lbtc": res.lbtc,
        **warm,
    }
    if cuda:
        out["cuda_peak_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    # Full-resolution maps of whole volumes that extraction never materialises (for scale).
    fm = load_feature_model(spec, Path(args.checkpoint), device=args.device)
    lay = case_layout(cases[0], fm.preprocessing, fm.coarsest_stride, config.sw_overlap)
    vox = int(np.prod(lay.model_shape))
    out["whole_volume_feature_maps_mb_per_case"] = round(sum(s.channels * vox / np.prod(s.stride) for s in fm.stages) * 4 / 2**20, 1)
    # Baseline in the same process: the bare forward passes over the same windows.
    n_win = sum(d.get("n_windows", 0) for d in res.diagnostics["extraction"])
    batch = 2 if cuda else 1
    x = torch.randn((batch, 1, *fm.preprocessing.patch_size), device=fm.device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)
    n_batches = int(np.ceil(n_win / batch)) if n_win else 0
    times = []
    with torch.no_grad(), amp:
        for _ in range(2):  # warm-up (kernel selection / primitive caches)
            fm(x)
        for _ in range(max(3, min(8, n_batches))):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            fm(x)
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    forward_total = float(np.median(times)) * n_batches
    out["forward_only_s"] = round(forward_total, 3)  # median window-batch forward x batches
    out["extract_over_forward"] = round(res.timings["extract"] / forward_total, 3) if forward_total else None
    return out


def run_child(spec_path: Path, ckpt: Path, n_cases: int, shape, spacing, device: str, threads: int | None, warm: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", "--spec", str(spec_path), "--checkpoint", str(ckpt), "--n-cases", str(n_cases),
           "--shape", *map(str, shape), "--spacing", *map(str, spacing), "--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    if warm:
        cmd += ["--warm"]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:], "n_cases": n_cases, "device": device}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--spec")
    p.add_argument("--checkpoint")
    p.add_argument("--n-cases", type=int, default=1)
    p.add_argument("--shape", type=int, nargs=3, default=[52, 64, 50])
    p.add_argument("--spacing", type=float, nargs=3, default=[3.0, 3.0, 3.0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quick", action="store_true", help="1 and 2 cases only")
    p.add_argument("--no-gpu", action="store_true", help="skip the CUDA runs even when CUDA is present")
    p.add_argument("--gpu-only", action="store_true", help="skip the CPU scaling runs (keeps one CPU reference run)")
    p.add_argument("--gpu-small-cases", type=int, nargs="*", default=None, help="case counts of the small model on CUDA")
    p.add_argument("--resencl-cases", type=int, nargs="*", default=None, help="case counts of ResEnc-L on CUDA (default 1 4)")
    p.add_argument("--warm", action="store_true", help="also time a second, warm score_model call in the same process")
    p.add_argument("--resencl-shape", type=int, nargs=3, default=[160, 192, 160], help="ResEnc-L case shape at 1 mm")
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return

    import torch

    counts = [1, 2] if args.quick else [1, 4, 8]
    report: dict[str, Any] = {
        "benchmark": "extract+score (worker.pipeline.score_model, default ScoringConfig: 4096 points, 512 anchors, k=5)",
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
        "cpu": {},
        "gpu": None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        spec, ckpt = write_checkpoint("small", tmpd)
        spec_path = tmpd / "small.json"
        spec_path.write_text(json.dumps(spec))
        cpu_counts = [1] if args.gpu_only else counts
        runs = [run_child(spec_path, ckpt, n, args.shape, args.spacing, "cpu", args.threads) for n in cpu_counts]
        report["cpu"] = {"model": "demo ResEnc 8-16-32-64 (random weights), spacing 3 mm, patch 64^3", "runs": runs}
        if not args.gpu_only:
            # A large field of view at the model's spacing: many sliding windows per case.
            report["cpu"]["large_case"] = run_child(spec_path, ckpt, 1, [120, 140, 110], [3.0, 3.0, 3.0], "cpu", args.threads)
        ok = [r for r in runs if "error" not in r]
        if len(ok) >= 2:
            g1, gn = ok[0]["peak_rss_growth_mb"], ok[-1]["peak_rss_growth_mb"]
            report["cpu"]["memory_flatness"] = {
                "cases": [ok[0]["n_cases"], ok[-1]["n_cases"]],
                "peak_rss_growth_mb": [g1, gn],
                "ratio": round(gn / g1, 3) if g1 else None,
                "whole_volume_feature_maps_mb_if_materialised": round(ok[-1]["whole_volume_feature_maps_mb_per_case"] * ok[-1]["n_cases"], 1),
            }
        report["cpu"]["per_case_s"] = {str(r["n_cases"]): r["per_case_s"] for r in ok}
        if torch.cuda.is_available() and not args.no_gpu:
            gpu: dict[str, Any] = {"name": torch.cuda.get_device_name(0), "runs": []}
            for n in counts if args.gpu_small_cases is None else args.gpu_small_cases:
                gpu["runs"].append(run_child(spec_path, ckpt, n, args.shape, args.spacing, "cuda", None))
            if ok and gpu["runs"] and "error" not in gpu["runs"][0]:
                ref, dev = ok[0], gpu["runs"][0]
                gpu["small_1case_cuda_bf16_vs_cpu_fp32"] = {"grtd": [dev["grtd"], ref["grtd"]], "lbtc": [dev["lbtc"], ref["lbtc"]]}
            spec_l, ckpt_l = write_checkpoint("resencl", tmpd)
            spec_l_path = tmpd / "resencl.json"
            spec_l_path.write_text(json.dumps(spec_l))
            resencl_counts = args.resencl_cases if args.resencl_cases is not None else ([1] if args.quick else [1, 4])
            for n in resencl_counts:
                gpu["runs"].append(run_child(spec_l_path, ckpt_l, n, args.resencl_shape, [1.0, 1.0, 1.0], "cuda", None, args.warm))
            report["gpu"] = gpu
        else:
            report["gpu"] = "no CUDA device: GPU figures not measured"
    report = {"summary": summarise(report), **report}
    print(json.dumps(report, indent=2))


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    """The headline figures (copied from the runs below, nothing recomputed but ratios)."""
    out: dict[str, Any] = {}
    cpu = report.get("cpu", {})
    runs = [r for r in cpu.get("runs", []) if "error" not in r]
    out["cpu_per_case_s"] = {str(r["n_cases"]): r["per_case_s"] for r in runs}
    out["cpu_per_case_extract_s"] = {str(r["n_cases"]): r["per_case_extract_s"] for r in runs}
    out["cpu_extract_over_forward"] = {str(r["n_cases"]): r["extract_over_forward"] for r in runs}
    if "memory_flatness" in cpu:
        out["cpu_peak_rss_growth_mb"] = dict(zip(map(str, cpu["memory_flatness"]["cases"]), cpu["memory_flatness"]["peak_rss_growth_mb"]))
        out["cpu_rss_growth_ratio_many_vs_1_case"] = cpu["memory_flatness"]["ratio"]
    large = cpu.get("large_case")
    if isinstance(large, dict) and "error" not in large:
        out["cpu_large_case"] = {k: large[k] for k in ("case_shape", "windows_per_case", "per_case_s", "per_case_extract_s", "extract_over_forward", "peak_rss_growth_mb")}
    gpu = report.get("gpu")
    if isinstance(gpu, dict):
        out["gpu_name"] = gpu["name"]
        out["gpu_runs"] = [
            {k: r.get(k) for k in ("model", "n_cases", "case_shape", "per_case_s", "per_case_extract_s", "wall_s", "warm_wall_s", "warm_same_scores", "cuda_peak_allocated_mb", "whole_volume_feature_maps_mb_per_case")}
            for r in gpu["runs"] if "error" not in r
        ]
        if "small_1case_cuda_bf16_vs_cpu_fp32" in gpu:
            out["bf16_cuda_vs_fp32_cpu"] = gpu["small_1case_cuda_bf16_vs_cpu_fp32"]
    else:
        out["gpu"] = gpu
    errors = [r for r in cpu.get("runs", []) if "error" in r] + ([r for r in gpu["runs"] if "error" in r] if isinstance(gpu, dict) else [])
    out["errors"] = len(errors)
    return out


if __name__ == "__main__":
    main()
