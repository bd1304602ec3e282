"""`toporank demo`: rank the demo zoo on an MNI152 pilot set through the real HTTP API and worker.

Builds (or reuses) the demo zoo and pilot set, starts the embedded service (`toporank serve`:
SQLite, filesystem broker, one worker process) on a free local port, creates a tenant, then runs
what a user would type: `toporank rank --pilot FOLDER --model FILE=CATALOG ...`, which uploads the
pilot-set folder, registers every checkpoint, follows the ranking and prints the fused ordering
with the raw scores and baselines.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from toporank import rank_command


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
        with httpx.Client(base_url=base, timeout=30) as client:
            _wait_ready(client, server, log_path)
        print(f"[demo] service ready at {base} (log: {log_path}); what a user types from here:", flush=True)
        argv = ["rank", "--server", base, "--api-key", api_key, "--pilot", str(pilot_folder), "--name", "MNI152 grey/white matter",
                "--config", json.dumps({"seed": args.seed}), *[f"--model={ckpt}={spec['catalog']}" for _, spec, ckpt in zoo],
                "--report", str(data_dir / "report.html"), "--confirm", "2", "--confirm-steps", str(args.confirm_steps)]
        print(f"[demo] toporank {' '.join(argv[:3])} --api-key *** {' '.join(argv[5:])}", flush=True)
        parser = argparse.ArgumentParser(prog="toporank")
        rank_command.add_parser(parser.add_subparsers(dest="command"))
        rank_command.run(parser.parse_args(argv))
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
    p.add_argument("--confirm-steps", type=int, default=40,
                   help="fine-tuning steps per fold when confirming the top 2 (a demo budget; real confirmations use hundreds)")
    return run_demo(p.parse_args(list(argv or [])))
