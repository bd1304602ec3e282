"""API load benchmark (prints JSON): `GET /v1/rank` latency under concurrency, and RSS of the API
process while it ingests a ~1 GB pilot-set upload.

Part 1 (PostgreSQL + Redis): a fresh database holds a finished ranking of N models (score rows
are written through the registry, as the worker writes them; scoring is not what is measured).
A real uvicorn API process serves `GET /v1/rank`; C concurrent closed-loop clients (asyncio +
httpx, in this separate process) hammer it for D seconds after a warm-up. `GET /healthz` under
the same load is the in-run baseline (ratio = rank p99 / healthz p99).
Part 2: a ~1 GB zip (nnU-Net layout, uncompressed .nii of random noise, so nothing compresses)
is POSTed to `/v1/pilot-sets`; the API process's RSS is sampled every 20 ms.

Part 3 (`--mixed`): the same C clients for D seconds, each looping over a mix of what users do at
once: read `/v1/rank`, list models and rankings, submit rankings that reuse the stored scores
(answered `succeeded` at once), upload small pilot sets, and `GET /healthz` as the in-run baseline.
It reports per-operation latency and errors, rank p99 / healthz p99 from the same run, and the API
process's RSS over the run (first and last 10 s).

Usage: python bench/api_load.py [--models 50] [--clients 50] [--duration 15] [--upload-gb 1.0]
       [--api-workers 1] [--skip-upload] [--mixed] [--mixed-duration 60] [--pg URL] [--redis URL]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def seed_ranking(url: str, secret: str, n_models: int) -> tuple[str, str, str]:
    """Tenant, pilot set (K=3), N models with score rows and a succeeded ranking; returns (key, ranking id, pilot set id)."""
    from models_registry.db import make_engine, make_sessionmaker, session_scope
    from models_registry.migrate import upgrade_head
    from models_registry.tables import Model, ModelScore, PilotSet, RankingItem, RankingJob
    from models_registry.tenants import create_tenant
    from transferability.config import ScoringConfig

    engine = make_engine(url, pool_size=2)
    upgrade_head(engine)
    rng = np.random.default_rng(0)
    cfg = ScoringConfig()
    with session_scope(make_sessionmaker(engine)) as s:
        tenant, key = create_tenant(s, "bench", secret)
        ps = PilotSet(tenant_id=tenant.id, name="bench", layout="nnunet", labels={"background": 0, "a": 1, "b": 2, "c": 3},
                      num_foreground=3, channels={"0": "CT"}, storage_path="tenants/bench/none")
        s.add(ps)
        s.flush()
        job = RankingJob(tenant_id=tenant.id, pilot_set_id=ps.id, config=cfg.to_dict(), config_hash=cfg.hash(),
                         fusion={"a": 6.0, "b": None, "alpha": None}, status="succeeded", request_hash="0" * 64)
        s.add(job)
        s.flush()
        for i in range(n_models):
            m = Model(tenant_id=tenant.id, name=f"model-{i:02d}", format="nnssl", spec={"name": f"model-{i:02d}", "format": "nnssl"},
                      stages=[], checkpoint_path="none", sha256="0" * 64, size_bytes=1, status="ready")
            s.add(m)
            s.flush()
            sc = ModelScore(pilot_set_id=ps.id, model_id=m.id, config_hash=cfg.hash(), numeric_mode="cpu-fp32", config=cfg.to_dict(),
                            grtd=float(-rng.uniform(0.1, 0.6)), lbtc=float(rng.uniform(0.5, 0.95)),
                            baselines={"logme": float(rng.normal())}, result={}, timings={}, checkpoint_sha256="0" * 64, code_version="1")
            s.add(sc)
            s.flush()
            s.add(RankingItem(ranking_id=job.id, model_id=m.id, position=i, status="succeeded", progress=1.0, score_id=sc.id))
        job_id, ps_id = job.id, ps.id
    engine.dispose()
    return key, job_id, ps_id


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    """One keep-alive HTTP/1.1 GET on an open connection; returns the status code."""
    writer.write(request)
    await writer.drain()
    status_line = await reader.readline()
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return int(status_line.split()[1])


async def load(port: int, key: str, target: str, clients: int, duration: float, warmup: float) -> dict[str, Any]:
    """C closed-loop clients, each on its own keep-alive connection (a minimal asyncio HTTP/1.1
    client: a heavyweight client would compete with the server for the same 2 cores)."""
    request = (f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n\r\n").encode()
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + warmup + duration
    record_from = time.perf_counter() + warmup

    async def one_client() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                try:
                    ok = await _get(reader, writer, request) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                t1 = time.perf_counter()
                if t0 >= record_from:
                    if ok:
                        lat.append(t1 - t0)
                    else:
                        errors += 1
        finally:
            writer.close()

    await asyncio.gather(*(one_client() for _ in range(clients)))
    return {
        "requests": len(lat),
        "errors": errors,
        "throughput_rps": len(lat) / duration,
        "p50_ms": percentile(lat, 50) * 1e3,
        "p90_ms": percentile(lat, 90) * 1e3,
        "p99_ms": percentile(lat, 99) * 1e3,
        "max_ms": max(lat) * 1e3 if lat else math.nan,
        "mean_ms": statistics.fmean(lat) * 1e3 if lat else math.nan,
    }


def _wrk_ms(text: str) -> float:
    """wrk's duration text ('812.00us', '12.34ms', '1.02s') in milliseconds."""
    for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * scale
    raise ValueError(f"unexpected wrk duration {text!r}")


def load_wrk(port: int, key: str, target: str, clients: int, duration: float, warmup: float) -> dict[str, Any]:
    """The same closed-loop load from wrk (C, one thread): the client's own CPU cost, which competes
    with the server for the same 2 cores, is a fraction of a Python client's."""
    url = f"http://127.0.0.1:{port}{target}"
    base = ["wrk", "-t1", f"-c{clients}", "-H", f"X-API-Key: {key}", "--latency", url]
    subprocess.run([*base[:-2], f"-d{max(1, round(warmup))}s", url], check=True, capture_output=True)
    out = subprocess.run([*base[:-2], f"-d{max(1, round(duration))}s", "--latency", url], check=True, capture_output=True, text=True).stdout
    pct = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)$", out, flags=re.M))
    total = int(re.search(r"^\s+(\d+) requests in", out, flags=re.M).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errs.groups())) if errs else 0)
    lat = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, flags=re.M)
    return {
        "client": "wrk",
        "requests": total,
        "errors": errors,
        "throughput_rps": total / duration,
        "p50_ms": _wrk_ms(pct["50"]),
        "p90_ms": _wrk_ms(pct["90"]),
        "p99_ms": _wrk_ms(pct["99"]),
        "max_ms": _wrk_ms(lat.group(3)) if lat else math.nan,
        "mean_ms": _wrk_ms(lat.group(1)) if lat else math.nan,
    }


MIX = (("rank", 50), ("healthz", 15), ("list_models", 10), ("list_rankings", 10), ("rank_again", 10), ("upload", 5))
"""Operation weights of the mixed run (percent of each client's requests)."""


async def mixed_load(url: str, key: str, rid: str, body: dict[str, Any], archive: bytes, clients: int, duration: float,
                     api_pid: int) -> dict[str, Any]:
    """C closed-loop httpx clients, each drawing its next operation from MIX (seeded per client)."""
    headers = {"X-API-Key": key}
    lat: dict[str, list[float]] = {name: [] for name, _ in MIX}
    errors: dict[str, int] = {name: 0 for name, _ in MIX}
    rss: list[tuple[float, float]] = []
    names = [n for n, w in MIX for _ in range(w)]
    proc = psutil.Process(api_pid)
    t_start = time.perf_counter()
    stop_at = t_start + duration

    async def request(client: httpx.AsyncClient, op: str) -> bool:
        if op == "rank":
            r = await client.get("/v1/rank", params={"ranking_id": rid})
        elif op == "healthz":
            r = await client.get("/healthz")
        elif op == "list_models":
            r = await client.get("/v1/models")
        elif op == "list_rankings":
            r = await client.get("/v1/rankings", params={"limit": 20})
        elif op == "rank_again":
            r = await client.post("/v1/rankings", json=body)
            return r.status_code == 202 and r.json()["status"] == "succeeded"  # reused, not recomputed
        else:
            r = await client.post("/v1/pilot-sets", files={"archive": ("p.zip", archive, "application/zip")})
            return r.status_code == 201
        return r.status_code == 200

    async def one_client(i: int) -> None:
        rng = np.random.default_rng(i)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            while time.perf_counter() < stop_at:
                op = names[int(rng.integers(len(names)))]
                t0 = time.perf_counter()
                try:
                    ok = await request(client, op)
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat[op].append(time.perf_counter() - t0)
                else:
                    errors[op] += 1

    async def sample_rss() -> None:
        while time.perf_counter() < stop_at:
            rss.append((time.perf_counter() - t_start, proc.memory_info().rss / 2**20))
            await asyncio.sleep(0.5)

    await asyncio.gather(sample_rss(), *(one_client(i) for i in range(clients)))
    ops = {
        name: {"requests": len(v), "errors": errors[name], "p50_ms": percentile(v, 50) * 1e3, "p99_ms": percentile(v, 99) * 1e3}
        for name, v in lat.items()
    }
    first = [m for t, m in rss if t <= 10.0]
    last = [m for t, m in rss if t >= duration - 10.0]
    return {
        "clients": clients,
        "duration_s": duration,
        "operations": ops,
        "errors": sum(errors.values()),
        "rank_p99_over_healthz_p99": ops["rank"]["p99_ms"] / ops["healthz"]["p99_ms"],
        "api_rss_mb": {"first_10s_mean": statistics.fmean(first), "last_10s_mean": statistics.fmean(last),
                       "max": max(m for _, m in rss), "samples": len(rss),
                       "every_5s": [round(m, 1) for t, m in rss if abs(t / 5.0 - round(t / 5.0)) < 0.05]},
    }


def small_archive() -> bytes:
    """A one-case nnU-Net zip (24^3), as the mixed run's uploads."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.normal(size=(24, 24, 24)).astype(np.float32), np.eye(4))
    lab = nib.Nifti1Image((rng.random((24, 24, 24)) > 0.7).astype(np.uint8), np.eye(4))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Dataset001_Load/dataset.json", json.dumps({"channel_names": {"0": "MR"}, "labels": {"background": 0, "a": 1},
                                                                "file_ending": ".nii.gz", "numTraining": 1}))
        for name, im in (("imagesTr/c_0000.nii.gz", img), ("labelsTr/c.nii.gz", lab)):
            zf.writestr(f"Dataset001_Load/{name}", _nifti_gz(im))
    return buf.getvalue()


def _nifti_gz(image: Any) -> bytes:
    import gzip

    return gzip.compress(image.to_bytes(), compresslevel=1)


def write_big_archive(path: Path, target_bytes: int, shape=(160, 160, 160)) -> dict[str, Any]:
    """nnU-Net zip of uncompressed .nii cases (random float32 images, blob labels), stored (no zip compression)."""
    import nibabel as nib

    rng = np.random.default_rng(0)
    per_case = int(np.prod(shape)) * 5 + 2 * 352
    n_cases = max(1, round(target_bytes / per_case))
    grid = np.indices(shape, dtype=np.int16)
    centre = np.array(shape) // 2
    dist2 = ((grid - centre[:, None, None, None]) ** 2).sum(0)
    label = (dist2 < (shape[0] // 4) ** 2).astype(np.uint8) + (dist2 < (shape[0] // 8) ** 2).astype(np.uint8)
    lab_bytes = nib.Nifti1Image(label, np.eye(4)).to_bytes()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        zf.writestr("Dataset900_Bench/dataset.json", json.dumps(
            {"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1, "b": 2}, "file_ending": ".nii", "numTraining": n_cases}))
        for i in range(n_cases):
            img = rng.standard_normal(shape, dtype=np.float32)
            zf.writestr(f"Dataset900_Bench/imagesTr/case{i:03d}_0000.nii", nib.Nifti1Image(img, np.eye(4)).to_bytes())
            zf.writestr(f"Dataset900_Bench/labelsTr/case{i:03d}.nii", lab_bytes)
    return {"cases": n_cases, "case_shape": list(shape), "archive_bytes": path.stat().st_size}


def upload_rss(url: str, key: str, api_pid: int, archive: Path) -> dict[str, Any]:
    proc = psutil.Process(api_pid)
    base = proc.memory_info().rss
    peak = {"rss": base}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            try:
                rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
            except psutil.Error:
                break
            peak["rss"] = max(peak["rss"], rss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    t0 = time.perf_counter()
    with open(archive, "rb") as fh, httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=1800) as c:
        r = c.post("/v1/pilot-sets", files={"archive": ("bench.zip", fh)})
    wall = time.perf_counter() - t0
    done.set()
    t.join()
    return {
        "status": r.status_code,
        "n_cases": r.json().get("n_cases") if r.status_code == 201 else None,
        "error": None if r.status_code == 201 else r.text[:500],
        "wall_s": wall,
        "mb_per_s": archive.stat().st_size / wall / 1e6,
        "api_rss_before_mb": base / 1e6,
        "api_rss_peak_mb": peak["rss"] / 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--clients", type=int, default=50)
    p.add_argument("--duration", type=float, default=15.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--api-workers", type=int, default=1)
    p.add_argument("--upload-gb", type=float, default=1.0)
    p.add_argument("--skip-upload", action="store_true")
    p.add_argument("--mixed", action="store_true", help="also run the mixed workload (part 3)")
    p.add_argument("--mixed-duration", type=float, default=60.0)
    p.add_argument("--loop", default="auto", help="uvicorn event loop (auto picks uvloop when installed)")
    p.add_argument("--http", default="auto", help="uvicorn HTTP parser (auto picks httptools when installed)")
    p.add_argument("--client", choices=("auto", "wrk", "asyncio"), default="asyncio",
                   help="load generator: the built-in asyncio client, or wrk (apt-get install wrk) as a cross-check; "
                        "auto = wrk when on PATH")
    p.add_argument("--pg", default=os.environ.get("TOPORANK_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    p.add_argument("--redis", default=os.environ.get("TOPORANK_TEST_REDIS", "redis://127.0.0.1:6379/15"))
    args = p.parse_args(argv)

    from sqlalchemy import create_engine, text

    token = secrets.token_hex(4)
    db = f"toporank_bench_{token}"
    admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{db}"'))
    db_url = args.pg.rsplit("/", 1)[0] + f"/{db}"
    tmp = Path(tempfile.mkdtemp(prefix="toporank-bench-"))
    secret = "bench-secret-0123456789"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(TOPORANK_DATABASE_URL=db_url, TOPORANK_BROKER_URL=args.redis, TOPORANK_RESULT_BACKEND=args.redis,
               TOPORANK_SECRET_KEY=secret, TOPORANK_DATA_DIR=str(tmp / "data"), TOPORANK_LOG_LEVEL="WARNING",
               TOPORANK_TASK_QUEUE=f"toporank-bench-{token}",
               TOPORANK_RATE_LIMIT_PER_MINUTE="0",  # one key drives every client: the limit would measure itself
               TOPORANK_DEVICE="cpu")  # the API knows the workers' numeric mode: re-submitted rankings reuse at once
    port = free_port()
    api = None
    out: dict[str, Any] = {"benchmark": "api_load", "machine": os.environ.get("TOPORANK_BENCH_MACHINE", "2-core CPU sandbox"),
                           "cpu_count": os.cpu_count(), "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")}
    try:
        key, rid, ps_id = seed_ranking(db_url, secret, args.models)
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--workers", str(args.api_workers), "--no-access-log", "--loop", args.loop, "--http", args.http],
            env=env, cwd=REPO, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("API did not become ready")
            time.sleep(0.2)
        first = httpx.get(url + "/v1/rank", params={"ranking_id": rid}, headers={"X-API-Key": key}).json()
        assert len(first["models"]) == args.models, first
        client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "asyncio")

        def run_load(target: str) -> dict[str, Any]:
            if client == "wrk":
                return load_wrk(port, key, target, args.clients, args.duration, args.warmup)
            return {"client": "asyncio", **asyncio.run(load(port, key, target, args.clients, args.duration, args.warmup))}

        rank = run_load(f"/v1/rank?ranking_id={rid}")
        health = run_load("/healthz")
        out["rank"] = {"models": args.models, "clients": args.clients, "duration_s": args.duration,
                       "api_workers": args.api_workers, "database": "postgresql",
                       "uvicorn_loop": args.loop, "uvicorn_http": args.http, "uvloop_installed": _has("uvloop"),
                       "httptools_installed": _has("httptools"), **rank}
        out["healthz_baseline"] = health
        out["rank_p99_over_healthz_p99"] = rank["p99_ms"] / health["p99_ms"]
        out["rank_target"] = {"p99_ms_max": 50.0, "met": rank["p99_ms"] <= 50.0 and rank["errors"] == 0}
        if args.mixed:
            body = {"pilot_set_id": ps_id, "model_ids": [m["model_id"] for m in first["models"]]}
            out["mixed"] = asyncio.run(mixed_load(url, key, rid, body, small_archive(), args.clients, args.mixed_duration, api.pid))
            mixed = out["mixed"]
            out["mixed"]["target"] = {
                "errors": 0, "rank_p99_over_healthz_p99_max": 1.2, "rss_growth_mb_max": 50.0,
                "met": mixed["errors"] == 0 and mixed["rank_p99_over_healthz_p99"] <= 1.2
                and mixed["api_rss_mb"]["last_10s_mean"] - mixed["api_rss_mb"]["first_10s_mean"] <= 50.0,
            }
        if not args.skip_upload:
            archive = tmp / "bench.zip"
            info = write_big_archive(archive, int(args.upload_gb * 1e9))
            pid = api.pid
            res = upload_rss(url, key, pid, archive)
            out["upload"] = {**info, **res, "target": {"rss_mb_max": 300.0, "met": res["status"] == 201 and res["api_rss_peak_mb"] <= 300.0}}
    finally:
        if api is not None:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=30)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))

        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
