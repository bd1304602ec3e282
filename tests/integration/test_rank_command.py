"""`toporank rank` against a real `toporank serve`: one command from an nnU-Net folder and two
checkpoint files to the printed ranking; a re-run registers nothing twice; errors are one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.utils.archives import nnunet_files

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _folder(root: Path) -> Path:
    for name, data in nnunet_files(n_cases=3, k=2, root="Dataset042_Tiny/").items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return root / "Dataset042_Tiny"


def _rank(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "toporank.cli", "rank", *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_one_command_ranks_checkpoints_on_a_folder(stack, checkpoints, tmp_path):  # type: ignore[no-untyped-def]
    folder = _folder(tmp_path / "nnUNet_raw")
    models = [f"--model={checkpoints[0]}", f"--model={checkpoints[1]}"]
    env = {"TOPORANK_SERVER": stack.url, "TOPORANK_API_KEY": stack.keys["a"]}
    config = ("--config", '{"n_samples": 256, "n_anchors": 32}')
    report = tmp_path / "report.html"
    first = _rank("--pilot", str(folder), *models, *config, "--report", str(report), "--confirm", "2", "--confirm-steps", "3",
                  env_extra=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "3-fold cross-validation, 3 steps per fold" in first.stdout and "top-1: " in first.stdout
    assert "evaluation ev_" in first.stdout and "fused weighted tau" in first.stdout
    assert "fine-tuning the top 2 on 3 folds" in first.stderr
    assert f"report: {report}" in first.stdout and report.read_text().count('<figure data-figure="') == 4
    assert first.stderr.count("registering and waiting for validation") == 2  # named after their folders: m0, m1
    assert "pilot set ps_" in first.stderr and "3 cases, K = 2" in first.stderr
    table = first.stdout.split("confirmation cf_")[0].splitlines()
    ranked = [line.split()[1] for line in table if line.lstrip()[:1].isdigit()]
    assert sorted(ranked) == ["m0", "m1"] and "succeeded" in first.stdout
    assert "fused 95%" in first.stdout and "stable: the top model ranks first in" in first.stdout  # 200 halves of 3 cases
    again = _rank("--pilot", str(folder), *models, *config, env_extra=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already registered as m0" in again.stderr and "already registered as m1" in again.stderr
    with stack.client() as c:  # each folder upload is a pilot set; no checkpoint was registered twice
        names = [m["name"] for m in c.get("/v1/models").json()["models"]]
        assert names.count("m0") == 1 and names.count("m1") == 1


@pytest.mark.parametrize("stack", ["embedded"], indirect=True)
def test_errors_are_one_line_with_the_apis_code(stack, checkpoints, tmp_path):  # type: ignore[no-untyped-def]
    folder = _folder(tmp_path / "raw")
    bad_key = _rank("--server", stack.url, "--api-key", "not-a-key", "--pilot", str(folder), f"--model={checkpoints[0]}")
    assert bad_key.returncode == 1 and "toporank rank: invalid_api_key: " in bad_key.stderr and "Traceback" not in bad_key.stderr
    no_server = _rank("--pilot", str(folder), f"--model={checkpoints[0]}")
    assert no_server.returncode == 1 and "--server and --api-key" in no_server.stderr
    unknown = _rank("--server", stack.url, "--api-key", stack.keys["a"], "--pilot", str(folder), "--shared", "nope")
    assert unknown.returncode == 1 and "no shared model named 'nope'" in unknown.stderr
