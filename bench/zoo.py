"""Benchmark: wall time of ranking a whole zoo through the real service, prefetch off vs on; prints JSON.

Users rank zoos, not single models: the figure is the wall time from `POST /v1/rankings` to the
ranking's status `succeeded` for every model of the zoo, through `toporank serve` (API + one Celery
worker, as a user runs it). Both arms of `TOPORANK_PREFETCH_NEXT` (the worker loads the next queued
model of a ranking while it scores the current one) run in the same run, alternated `--repeats`
times, each on a fresh service (fresh data dir, and a fresh database and queue on PostgreSQL +
Redis) so that no score is reused.

Per arm: start serve, create a tenant, upload the pilot set, register the zoo (validated), rank
the first model alone with another seed (`first_ranking_s`: the cold worker; its score is not
reused by the timed ranking), then the timed ranking of the whole zoo, polled every 0.1 s (`e2e_s`).
Per model, the `timings` of its stored score as GET /v1/rankings/{id} returns them (`load`,
`extract`, `grtd`, `lbtc`, `baselines`, `bootstrap`, `total`, `task_total_s`) and `prefetched` (the
worker used a model loaded ahead); each item's start and finish come from the arm's registry
database (the API does not expose them): `run_order` is the order the worker took the items in.
`other_cpu_s`, the CPU seconds used during the timed ranking by processes other than the bench and
the service (PostgreSQL and Redis included), flags a run disturbed by other load (on 2 cores it
slowed extraction several-fold); `host_steal_s`, the CPU seconds the hypervisor gave to other
guests meanwhile, flags a run disturbed from outside the machine (every phase slows alike). Then serve is stopped and its processes checked gone
(`leftover_processes`, killed if any).

In-run baseline: the off arm. `comparison.target_met` is the issue's target, the end-to-end time
drops by at least the off arm's measured load time (`saved_s >= load_off_s`); `hideable_met` asks
for the load time prefetch can hide (every model's but the first taken); with `--repeats` the arms'
means are compared. `--before` adds a third arm per repeat, the service as it was before this work
(no prefetch, the filesystem broker polled every second, `TOPORANK_BROKER_POLL_S=1`).

Zoos: `demo`, the demo zoo and pilot set of `toporank demo` (worker.demo_zoo, cached under
`--work-dir`); `resencl`, `--models` random-weight ResEnc-L nnssl checkpoints (one seed each) and
`--cases` synthetic cases of `--shape` at 1 mm (bench/extract.py's checkpoint and cases).

    python bench/zoo.py                                   # demo zoo, CPU, embedded default, off then on
    python bench/zoo.py --repeats 2 --order on off
    python bench/zoo.py --models 2 --cases 2 --pretrain-steps 2 --pretrain-bank 2 \\
        --config '{"n_samples": 256, "n_anchors": 32, "n_bootstrap": 20}'          # smoke size
    python bench/zoo.py --zoo resencl --device cuda --cases 10 --shape 160 160 160  # the GPU machine
    python bench/zoo.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        --broker-url redis://127.0.0.1:6379/14               # PostgreSQL + Redis (a database per arm)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from toporank import demo, rank_command  # noqa: E402
from toporank.client import Client  # noqa: E402

ARMS = {"off": False, "on": True, "before": False}
"""Arm -> TOPORANK_PREFETCH_NEXT. `before` (with --before) is the service as it was before this work:
no prefetch, and the filesystem broker polled every second (kombu's default)."""
BEFORE_POLL_S = 1.0
TIMING_KEYS = ("load", "extract", "grtd", "lbtc", "baselines", "bootstrap", "total", "task_total_s")
RESENCL_CATALOG = "openmind-resencl-mae"
RESENCL_SPACING = (1.0, 1.0, 1.0)


def say(text: str) -> None:
    """A progress line on stderr."""
    print(f"[bench.zoo] {text}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- inputs
@dataclass
class Inputs:
    """The checkpoints to rank (`FILE=CATALOG`, as `toporank rank --model` takes them) and the pilot folder."""

    models: list[str]
    pilot: Path
    about: dict[str, Any] = field(default_factory=dict)


def demo_inputs(args: argparse.Namespace, work: Path) -> Inputs:
    """The demo zoo (built once per seed / steps / bank under `work`) and the demo pilot set."""
    from worker import demo_zoo

    zoo_dir = work / f"demo-zoo-seed{args.seed}-steps{args.pretrain_steps}-bank{args.pretrain_bank}"
    zoo = demo._existing_zoo(zoo_dir, args.seed)
    if zoo is None:
        say(f"building the demo zoo in {zoo_dir} ({args.pretrain_steps} pretraining steps per model)")
        zoo = demo_zoo.build_demo_zoo(zoo_dir, seed=args.seed, steps=args.pretrain_steps, bank_size=args.pretrain_bank)
    cases = args.cases or 4
    pilot_dir = work / f"demo-pilot-{cases}"
    pilot = pilot_dir / "Dataset900_DemoBrain"
    if not (pilot / "dataset.json").is_file():
        pilot = demo_zoo.build_demo_pilot_set(pilot_dir, n_cases=cases)
    zoo = zoo[: args.models] if args.models else zoo
    return Inputs([f"{ckpt}={spec['catalog']}" for _, spec, ckpt in zoo], pilot,
                  {"zoo": "demo", "models": [name for name, _, _ in zoo], "n_cases": cases, "zoo_dir": str(zoo_dir)})


def resencl_checkpoints(folder: Path, n: int) -> list[Path]:
    """`n` ResEnc-L nnssl checkpoints with random weights, seed i for the i-th (bench/extract.py's is seed 0)."""
    import torch

    from bench.extract import write_checkpoint
    from worker.adapters.nnssl import _build_network

    paths = [folder / f"resencl-{i}" / "checkpoint_final.pth" for i in range(n)]
    if all(p.is_file() for p in paths):
        return paths
    _, base = write_checkpoint("resencl", folder / "resencl-0")
    base.replace(paths[0])
    plan = torch.load(paths[0], map_location="cpu", weights_only=False)["nnssl_adaptation_plan"]
    for i, path in enumerate(paths[1:], start=1):
        if not path.is_file():
            torch.manual_seed(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"network_weights": _build_network("ResEncL", None, None, 1).state_dict(), "nnssl_adaptation_plan": plan}, path)
    return paths


def write_synthetic_pilot(folder: Path, n_cases: int, shape: Sequence[int]) -> Path:
    """An nnU-Net-layout pilot set of bench/extract.py's synthetic cases (labels 0/1/2) at 1 mm."""
    import nibabel as nib
    import numpy as np

    from bench.extract import synthetic_case

    root = folder / "Dataset901_BenchSynthetic"
    if (root / "dataset.json").is_file():
        return root
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    affine = np.diag([*RESENCL_SPACING, 1.0])
    for m in range(n_cases):
        case = synthetic_case(100 + m, tuple(shape), RESENCL_SPACING)  # type: ignore[arg-type]
        nib.save(nib.Nifti1Image(case.image[0], affine), root / "imagesTr" / f"synth_{m:03d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(case.label.astype(np.uint8), affine), root / "labelsTr" / f"synth_{m:03d}.nii.gz")
    meta = {"name": "BenchSynthetic", "channel_names": {"0": "MR"}, "labels": {"background": 0, "outer": 1, "inner": 2},
            "numTraining": n_cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root


def resencl_inputs(args: argparse.Namespace, work: Path) -> Inputs:
    """`--models` ResEnc-L checkpoints (default 7) and `--cases` synthetic cases of `--shape`."""
    n_models, cases = args.models or 7, args.cases or 10
    say(f"writing {n_models} ResEnc-L checkpoints and {cases} synthetic cases of {args.shape} under {work}")
    paths = resencl_checkpoints(work / "resencl", n_models)
    pilot = write_synthetic_pilot(work / f"resencl-pilot-{cases}-{'x'.join(map(str, args.shape))}", cases, args.shape)
    return Inputs([f"{p}={RESENCL_CATALOG}" for p in paths], pilot,
                  {"zoo": "resencl", "models": [p.parent.name for p in paths], "n_cases": cases, "shape": list(args.shape)})


# ----------------------------------------------------------------------------- one service per arm
@dataclass
class Service:
    """A running `toporank serve`: its URL, a tenant's key, the registry URL and its process."""

    url: str
    api_key: str
    database_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    leftover: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def fresh_database(url: str | None) -> Iterator[str | None]:
    """A new, empty PostgreSQL database beside the one `url` names, dropped afterwards (None: embedded SQLite)."""
    if url is None:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"toporank_bench_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def purge_queue(broker_url: str | None, queue: str) -> None:
    """Delete the Redis keys of this arm's queue (nothing to do on the filesystem broker)."""
    if broker_url is None or not broker_url.startswith(("redis://", "rediss://")):
        return
    import redis

    r = redis.Redis.from_url(broker_url)
    try:
        for key in r.scan_iter(match=f"*{queue}*"):
            r.delete(key)
    finally:
        r.close()


def arm_env(
    args: argparse.Namespace, prefetch: bool, service_dir: Path, database_url: str | None, queue: str, poll_s: float | None = None,
) -> dict[str, str]:
    """The service's environment: the demo's embedded default, then this arm's settings."""
    env = demo._embedded_env(service_dir)
    env.update(TOPORANK_PREFETCH_NEXT=str(prefetch).lower(), TOPORANK_DEVICE=args.device, TOPORANK_TASK_QUEUE=queue,
               TOPORANK_LOG_LEVEL=args.log_level)
    if poll_s is not None:
        env["TOPORANK_BROKER_POLL_S"] = str(poll_s)
    if database_url:
        env["TOPORANK_DATABASE_URL"] = database_url
    if args.broker_url:
        env["TOPORANK_BROKER_URL"] = env["TOPORANK_RESULT_BACKEND"] = args.broker_url
    return env


def registry_url(service_dir: Path, database_url: str | None) -> str:
    """The registry the service uses (SQLite under its data dir unless a database URL is set)."""
    from toporank.settings import Settings

    return Settings(data_dir=service_dir, database_url=database_url).sqlalchemy_url


def start_service(env: dict[str, str], service_dir: Path) -> tuple[subprocess.Popen[bytes], str, str, Path]:
    """Migrate, create a tenant and start `toporank serve` on a free port, as `toporank demo` does."""
    cli = [sys.executable, "-m", "toporank.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    key = subprocess.run([*cli, "create-tenant", "bench"], env=env, check=True, capture_output=True, text=True, cwd=ROOT)
    port = demo._free_port()
    log_path = service_dir / "serve.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    return server, f"http://127.0.0.1:{port}", key.stdout.strip().splitlines()[-1], log_path


def stop_service(server: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """SIGTERM serve (it cold-stops its worker), as the demo does; returns its processes still alive after, killed."""
    import psutil

    try:
        family = psutil.Process(server.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
    _, alive = psutil.wait_procs(family, timeout=30)
    left = [{"pid": p.pid, "cmdline": " ".join(p.cmdline())} for p in alive if _running(p)]
    for p in alive:
        try:
            os.kill(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _running(proc: Any) -> bool:
    """Whether a psutil process is still there and not a zombie."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextmanager
def service(args: argparse.Namespace, prefetch: bool, service_dir: Path, poll_s: float | None = None) -> Iterator[Service]:
    """A fresh serve for one arm (fresh data dir, database and queue); stopped and cleaned afterwards."""
    queue = f"toporank-bench-{secrets.token_hex(4)}"
    service_dir.mkdir(parents=True, exist_ok=True)
    with fresh_database(args.database_url) as db_url:
        env = arm_env(args, prefetch, service_dir, db_url, queue, poll_s)
        server, url, key, log_path = start_service(env, service_dir)
        svc = Service(url, key, registry_url(service_dir, db_url), server, log_path)
        try:
            import httpx

            with httpx.Client(base_url=url, timeout=30) as probe:
                demo._wait_ready(probe, server, log_path, timeout_s=args.ready_timeout_s)
            yield svc
        finally:
            svc.leftover = stop_service(server)
            purge_queue(args.broker_url, queue)


# ----------------------------------------------------------------------------- rankings
def _busy_cpu_s(pid: int) -> tuple[float, float, float]:
    """(CPU seconds the whole machine has been busy, CPU seconds of this process and of `pid` with
    its descendants, CPU seconds the hypervisor gave to other guests while this one wanted them)."""
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.system + sum(getattr(t, k, 0.0) for k in ("nice", "irq", "softirq"))  # guest is inside user
    procs = [psutil.Process(), psutil.Process(pid)]
    procs += procs[1].children(recursive=True)
    own = 0.0
    for p in procs:
        try:
            c = p.cpu_times()
            own += c.user + c.system + c.children_user + c.children_system
        except psutil.NoSuchProcess:
            pass
    return busy, own, getattr(t, "steal", 0.0)


def timed_ranking(client: Client, pilot_set: Any, model_ids: list[str], config: dict[str, Any], timeout_s: float,
                  server_pid: int) -> tuple[Any, float, float, float]:
    """POST /v1/rankings and poll every 0.1 s until terminal; (the finished job, seconds POST -> terminal,
    CPU seconds spent meanwhile by processes other than the bench and the service, and CPU seconds
    stolen by the hypervisor meanwhile: both noise on this machine)."""
    busy0, own0, steal0 = _busy_cpu_s(server_pid)
    t0 = time.perf_counter()
    job = client.wait(client.rank(pilot_set, model_ids, config), poll_s=0.1, timeout=timeout_s)
    seconds = time.perf_counter() - t0
    busy1, own1, steal1 = _busy_cpu_s(server_pid)
    if job.status != "succeeded":
        errors = "; ".join(f"{it.model_name}: {it.error.code} {it.error.detail}" for it in job.items if it.error)
        raise RuntimeError(f"ranking {job.id} ended {job.status} ({errors})")
    return job, seconds, max(0.0, (busy1 - busy0) - (own1 - own0)), max(0.0, steal1 - steal0)


def item_times(database_url: str, ranking_id: str) -> dict[str, tuple[float | None, float | None]]:
    """Per model: its item's start and finish, seconds after the ranking's creation (registry database)."""
    from sqlalchemy import select

    from models_registry.db import make_engine, make_sessionmaker, session_scope
    from models_registry.tables import RankingItem, RankingJob

    engine = make_engine(database_url, pool_size=1)
    try:
        with session_scope(make_sessionmaker(engine)) as s:
            created = s.get(RankingJob, ranking_id).created_at  # type: ignore[union-attr]
            rows = s.scalars(select(RankingItem).where(RankingItem.ranking_id == ranking_id)).all()
            return {it.model_id: (_since(created, it.started_at), _since(created, it.finished_at)) for it in rows}
    finally:
        engine.dispose()


def _since(t0: Any, t: Any) -> float | None:
    """Seconds from `t0` to `t` (both from the same database), None if `t` is unset."""
    return None if t is None else round((t - t0).total_seconds(), 3)


def model_rows(job: Any, times: dict[str, tuple[float | None, float | None]]) -> list[dict[str, Any]]:
    """One row per item of the timed ranking, in queue order: its score's timings and its start / finish."""
    rows = []
    for it in job.items:
        timings = it.timings or {}
        started, finished = times.get(it.model_id, (None, None))
        prefetched = ((it.result or {}).get("diagnostics") or {}).get("prefetched")
        rows.append({"model": it.model_name, "status": it.status, "reused": it.reused, "attempts": it.attempts,
                     **{k: timings.get(k) for k in TIMING_KEYS}, "prefetched": prefetched,
                     "prefetch_background_s": timings.get("prefetch_background_s"), "started_s": started, "finished_s": finished})
    return rows


def summarise_arm(e2e_s: float, first_s: float, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The arm's headline figures, from its timed ranking's rows."""
    total = sum(r["total"] or 0.0 for r in rows)
    task = sum(r["task_total_s"] or 0.0 for r in rows)
    load = sum(r["load"] or 0.0 for r in rows)
    starts = sorted((r["started_s"], r["finished_s"]) for r in rows if r["started_s"] is not None and r["finished_s"] is not None)
    gaps = [max(0.0, b[0] - a[1]) for a, b in zip(starts, starts[1:])]
    return {"e2e_s": round(e2e_s, 3), "first_ranking_s": round(first_s, 3), "n_models": len(rows),
            "sum_model_total_s": round(total, 3), "sum_task_total_s": round(task, 3), "sum_load_s": round(load, 3),
            "load_share": round(load / total, 4) if total else None, "dispatch_overhead_s": round(e2e_s - task, 3),
            "first_item_start_s": starts[0][0] if starts else None, "sum_gaps_between_items_s": round(sum(gaps), 3),
            "first_taken_load_s": round(min(rows, key=_start)["load"] or 0.0, 3) if rows else 0.0,
            "n_prefetched": sum(bool(r["prefetched"]) for r in rows), "run_order": [r["model"] for r in sorted(rows, key=_start)],
            "any_reused": any(r["reused"] for r in rows)}


def _start(row: dict[str, Any]) -> float:
    """A row's start for sorting (unknown last)."""
    return row["started_s"] if row["started_s"] is not None else float("inf")


def run_arm(args: argparse.Namespace, inputs: Inputs, arm: str, repeat: int, work: Path) -> dict[str, Any]:
    """One arm on a fresh service: set up, warm up on one model, time the whole zoo, stop."""
    prefetch = ARMS[arm]
    service_dir = Path(tempfile.mkdtemp(prefix=f"arm-{arm}-{repeat}-", dir=work / "runs"))
    say(f"arm {arm} (prefetch_next={prefetch}, repeat {repeat}): starting serve in {service_dir}")
    t_setup = time.perf_counter()
    poll_s = BEFORE_POLL_S if arm == "before" else None
    with service(args, prefetch, service_dir, poll_s) as svc, Client(svc.url, svc.api_key) as client:
        ids = rank_command.resolve_models(client, inputs.models, [])
        pilot_set = client.upload_pilot_set(inputs.pilot, name="bench zoo")
        setup_s = time.perf_counter() - t_setup
        config = {**args.config, "seed": args.seed}
        pid = svc.process.pid
        _, first_s, _, _ = timed_ranking(client, pilot_set, ids[:1], {**config, "seed": args.seed + 1}, args.timeout_s, pid)
        say(f"arm {arm}: warm-up ranking of 1 model {first_s:.1f} s; timing the zoo of {len(ids)}")
        job, e2e_s, other_cpu_s, steal_s = timed_ranking(client, pilot_set, ids, config, args.timeout_s, pid)
        rows = model_rows(job, item_times(svc.database_url, job.id))
    say(f"arm {arm}: e2e {e2e_s:.1f} s (other processes used {other_cpu_s:.1f} CPU s meanwhile, the host stole "
        f"{steal_s:.1f}); serve stopped")
    out = {"arm": arm, "prefetch_next": prefetch, "repeat": repeat, "setup_s": round(setup_s, 3),
           **summarise_arm(e2e_s, first_s, rows), "other_cpu_s": round(other_cpu_s, 3),
           "host_steal_s": round(steal_s, 3),
           "leftover_processes": svc.leftover, "models": rows}
    if not args.keep_service_dirs:
        import shutil

        shutil.rmtree(service_dir, ignore_errors=True)
    return out


def comparison(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Off vs on (and before vs on, with --before) over the arms of this run (means over repeats).

    `target_met`: the time saved by prefetch is at least the off arm's whole load time (the issue's
    target as written); `hideable_met`: at least the load time prefetch can hide, every model's
    but the first taken (nothing runs before it to load it beside)."""
    def mean(arm: str, key: str) -> float:
        return statistics.fmean(a[key] for a in arms if a["arm"] == arm)

    off, on, load_off = mean("off", "e2e_s"), mean("on", "e2e_s"), mean("off", "sum_load_s")
    hideable = statistics.fmean(a["sum_load_s"] - a["first_taken_load_s"] for a in arms if a["arm"] == "off")
    saved = off - on
    out = {"e2e_off_s": round(off, 3), "e2e_on_s": round(on, 3), "saved_s": round(saved, 3), "load_off_s": round(load_off, 3),
           "target_met": saved >= load_off, "load_hideable_off_s": round(hideable, 3), "hideable_met": saved >= hideable,
           "ratio_on_over_off": round(on / off, 4) if off else None,
           "e2e_off_runs_s": [a["e2e_s"] for a in arms if a["arm"] == "off"],
           "e2e_on_runs_s": [a["e2e_s"] for a in arms if a["arm"] == "on"]}
    if any(a["arm"] == "before" for a in arms):
        before = mean("before", "e2e_s")
        out.update(e2e_before_s=round(before, 3), saved_vs_before_s=round(before - on, 3),
                   ratio_on_over_before=round(on / before, 4) if before else None,
                   e2e_before_runs_s=[a["e2e_s"] for a in arms if a["arm"] == "before"])
    return out


# ----------------------------------------------------------------------------- report
def machine(device: str) -> dict[str, Any]:
    """Where it ran."""
    import torch

    out: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
                           "python": platform.python_version(), "torch": torch.__version__}
    if device != "cpu" and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the report."""
    work = Path(args.work_dir).resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = demo_inputs(args, work) if args.zoo == "demo" else resencl_inputs(args, work)
    say(f"inputs ready ({time.perf_counter() - t0:.0f} s): {len(inputs.models)} models, pilot set {inputs.pilot}")
    per_repeat = (["before"] if args.before else []) + list(args.order)
    arms = [run_arm(args, inputs, arm, repeat, work) for repeat in range(args.repeats) for arm in per_repeat]
    return {"benchmark": "zoo ranking end to end through toporank serve (POST /v1/rankings -> succeeded), TOPORANK_PREFETCH_NEXT off vs on (and the service before, with --before)",
            "machine": machine(args.device), "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "inputs": inputs.about, "arms": arms, "comparison": comparison(arms), "seconds": round(time.perf_counter() - t0, 1)}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--zoo", choices=("demo", "resencl"), default="demo")
    p.add_argument("--models", type=int, default=None, help="rank the first K models (demo: all 4; resencl: 7)")
    p.add_argument("--cases", type=int, default=None, help="pilot cases (demo: 4; resencl: 10)")
    p.add_argument("--shape", type=int, nargs=3, default=[160, 160, 160], help="resencl: synthetic case shape at 1 mm")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="TOPORANK_DEVICE of the service")
    p.add_argument("--order", nargs=2, choices=("off", "on"), default=["off", "on"], help="arm order within a repeat")
    p.add_argument("--before", action="store_true",
                   help="a third arm per repeat, first: the service before this work (no prefetch, broker polled every 1 s)")
    p.add_argument("--repeats", type=int, default=1, help="alternate the two arms this many times")
    p.add_argument("--seed", type=int, default=0, help="scoring seed (the warm-up uses seed + 1) and demo zoo seed")
    p.add_argument("--config", type=json.loads, default={}, help="ScoringConfig overrides as JSON (default: the defaults)")
    p.add_argument("--pretrain-steps", type=int, default=None, help="demo zoo: optimiser steps per model (default: the demo's)")
    p.add_argument("--pretrain-bank", type=int, default=None, help="demo zoo: volumes in the crop bank (default: the demo's)")
    p.add_argument("--work-dir", default=str(ROOT / ".data" / "bench-zoo"), help="cache of the zoo and pilot set; service dirs under runs/")
    p.add_argument("--keep-service-dirs", action="store_true", help="keep each arm's data dir (serve.log, registry) under runs/")
    p.add_argument("--database-url", help="PostgreSQL server URL; each arm gets a fresh database beside it (default: embedded SQLite)")
    p.add_argument("--broker-url", help="Redis URL for the broker and result backend; each arm its own queue (default: filesystem)")
    p.add_argument("--timeout-s", type=float, default=3600.0, help="per ranking")
    p.add_argument("--ready-timeout-s", type=float, default=120.0, help="wait for serve's /readyz")
    p.add_argument("--log-level", default="WARNING", help="TOPORANK_LOG_LEVEL of the service")
    args = p.parse_args(argv)
    if set(args.order) != {"off", "on"}:
        p.error("--order names both arms: off on, or on off")
    if isinstance(args.config, dict) and "seed" in args.config:
        p.error("--config: give the seed with --seed")
    from worker import demo_zoo

    args.pretrain_steps = args.pretrain_steps or demo_zoo.DEFAULT_STEPS
    args.pretrain_bank = args.pretrain_bank or demo_zoo.BANK_SIZE
    return args


def _stop_on_sigterm() -> None:
    """SIGTERM (`timeout`, a scheduler) unwinds like Ctrl-C, so that the running arm stops its service."""
    def handler(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    _stop_on_sigterm()
    print(json.dumps(run(parse_args(argv)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
