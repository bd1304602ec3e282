"""`toporank demo`: rank the demo zoo on an MNI152 pilot set through the real HTTP API and worker.

Builds (or reuses) the demo zoo and pilot set, starts the embedded service (`toporank serve`:
SQLite, filesystem broker, one worker process) on a free local port, then does what a user
would: create a tenant, upload the pilot set, register every checkpoint, start a ranking, follow
its progress and print the fused ordering with the raw scores and baselines.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

BASELINE_COLUMNS = ("logme", "gbc", "hscore", "transrate", "ccfv")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _embedded_env(service_dir: Path) -> dict[str, str]:
    """The caller's environment forced onto the embedded default under `service_dir`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env["TOPORANK_DATA_DIR"] = str(service_dir)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tar_gz(folder: Path) -> bytes:
    """The pilot-set folder as an in-memory tar.gz, entries relative to the folder."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                tar.add(path, arcname=str(path.relative_to(folder)))
    return buf.getvalue()


def _check(resp: httpx.Response, what: str) -> dict[str, Any]:
    if resp.status_code >= 400:
        raise SystemExit(f"demo: {what} failed with HTTP {resp.status_code}: {resp.text[:500]}")
    return resp.json() if resp.content else {}


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"demo: the service exited early (code {server.returncode}); see {log_path}")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"demo: the service was not ready after {timeout_s:.0f} s; see {log_path}")


def _short(name: str) -> str:
    """A model name without the demo zoo's common prefix, for one-line progress reports."""
    return name.removeprefix("demo-resenc-")[:16]


def _fmt(x: Any, width: int = 9) -> str:
    if isinstance(x, (int, float)):
        return f"{x:{width}.4f}"
    return f"{'-':>{width}}"


def print_table(rank: dict[str, Any], job: dict[str, Any], out: Any = sys.stdout) -> None:
    """The fused ordering with raw/normalised GRTD and LBTC and a few baselines beside it."""
    baselines = {it["model_id"]: (it.get("baselines") or {}) for it in job["items"]}
    cols = [c for c in BASELINE_COLUMNS if any(c in b for b in baselines.values())]
    print(f"\nK = {rank['K']} foreground classes, alpha = {rank['alpha']:.4f} "
          f"({'global' if rank['alpha'] >= 0.5 else 'local'} emphasis)", file=out)
    head = f"{'rank':>4}  {'model':<24}{'fused':>9}{'GRTD':>9}{'LBTC':>9}{'N(GRTD)':>9}{'N(LBTC)':>9}"
    head += "".join(f"{c:>11}" for c in cols)
    print(head, file=out)
    print("-" * len(head), file=out)
    for m in rank["models"]:
        row = f"{m['rank']:>4}  {str(m['name'] or m['model_id'])[:23]:<24}"
        row += "".join(_fmt(m[k]) for k in ("fused", "grtd", "lbtc", "grtd_norm", "lbtc_norm"))
        row += "".join(_fmt(baselines[m["model_id"]].get(c), 11) for c in cols)
        print(row, file=out)


def _existing_zoo(zoo_dir: Path, seed: int) -> list[tuple[str, dict[str, Any], Path]] | None:
    """The zoo a previous demo built with the same seed, if all its checkpoints are still there."""
    manifest = zoo_dir / "zoo.json"
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        zoo = [(m["name"], m["spec"], Path(m["checkpoint"])) for m in data["models"]]
    except (ValueError, KeyError, TypeError):
        return None
    if data.get("seed") != seed or not zoo or not all(p.is_file() for _, _, p in zoo):
        return None
    return zoo


def run_demo(args: argparse.Namespace) -> int:
    from worker import demo_zoo

    t0 = time.monotonic()
    data_dir = Path(args.data_dir).resolve()
    zoo_dir, pilot_dir, service_dir = data_dir / "zoo", data_dir / "pilot", data_dir / "service"
    service_dir.mkdir(parents=True, exist_ok=True)

    zoo = None if args.rebuild else _existing_zoo(zoo_dir, args.seed)
    if zoo is None:
        print(f"[demo] building the demo zoo in {zoo_dir} (pretraining small encoders on MNI152 volumes)", flush=True)
        zoo = demo_zoo.build_demo_zoo(zoo_dir, seed=args.seed)
        print(f"[demo] {len(zoo)} checkpoints ready ({time.monotonic() - t0:.0f} s)", flush=True)
    else:
        print(f"[demo] reusing the {len(zoo)} checkpoints in {zoo_dir} (--rebuild to pretrain again)", flush=True)
    pilot_folder = demo_zoo.build_demo_pilot_set(pilot_dir)
    archive = _tar_gz(Path(pilot_folder))

    env = _embedded_env(service_dir)
    cli = [sys.executable, "-m", "toporank.cli"]
    subprocess.run([*cli, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    key = subprocess.run([*cli, "create-tenant", "demo"], env=env, check=True, capture_output=True, text=True)
    api_key = key.stdout.strip().splitlines()[-1]

    port = args.port or _free_port()
    log_path = service_dir / "serve.log"
    with open(log_path, "ab") as log:
        server = subprocess.Popen([*cli, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers={"X-API-Key": api_key}, timeout=300) as client:
            _wait_ready(client, server, log_path)
            print(f"[demo] service ready at {base} (log: {log_path})", flush=True)
            ps = _check(client.post("/v1/pilot-sets", files={"archive": ("pilot.tar.gz", archive, "application/gzip")},
                                    data={"name": "MNI152 grey/white matter"}), "pilot-set upload")
            print(f"[demo] pilot set {ps['id']}: {ps['n_cases']} cases, labels {ps['labels']}, K = {ps['K']}", flush=True)

            model_ids = []
            for name, spec, ckpt in zoo:
                with open(ckpt, "rb") as fh:
                    m = _check(client.post("/v1/models", params={"wait": 300},
                                           data={"spec": json.dumps(spec)},
                                           files={"checkpoint": (Path(ckpt).name, fh, "application/octet-stream")}),
                               f"registering {name}")
                if m["status"] != "ready":
                    raise SystemExit(f"demo: model {name} is {m['status']}: {m.get('error')}")
                model_ids.append(m["id"])
                print(f"[demo] registered {name:<20} {m['id']}  sha256 {m['sha256'][:12]}", flush=True)

            job = _check(client.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": model_ids,
                                                         "config": {"seed": args.seed}}), "starting the ranking")
            print(f"[demo] ranking {job['id']} queued; following progress", flush=True)
            last = ""
            while True:
                job = _check(client.get(f"/v1/rankings/{job['id']}"), "reading the ranking")
                line = "  ".join(f"{_short(it['model_name'] or it['model_id'])} {it['status']} {it['progress']*100:3.0f}%"
                                 for it in job["items"])
                if line != last:
                    print(f"[demo] {job['status']:<9} {line}", flush=True)
                    last = line
                if job["status"] in ("succeeded", "partial", "failed", "cancelled"):
                    break
                time.sleep(1.0)
            if job["status"] not in ("succeeded", "partial"):
                raise SystemExit(f"demo: ranking ended {job['status']}: {job.get('error')}")
            rank = _check(client.get("/v1/rank", params={"ranking_id": job["id"], "partial": "true"}), "reading /v1/rank")
            print_table(rank, job)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"\n[demo] done in {time.monotonic() - t0:.0f} s", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="toporank demo", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=".data/demo", help="where the zoo, pilot set and service data live")
    p.add_argument("--port", type=int, default=0, help="API port (default: a free one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rebuild", action="store_true", help="pretrain the demo zoo again even if one is there")
    return run_demo(p.parse_args(list(argv or [])))
