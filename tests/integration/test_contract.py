"""The API against its own OpenAPI contract: schemathesis (coverage, fuzzing and stateful phases,
every check) against a real API and worker, on the embedded default and on PostgreSQL + Redis.

Three runs, because upload bodies are binary parts whose content the schema cannot describe
(tests/contract_hooks.py gives positive uploads real content, and a hook that rewrites requests
cannot also be judged on which requests schemathesis meant to be invalid):
  A. hooks on, every operation, every check except `negative_data_rejection` (the stateful phase
     owns real pilot sets and models and follows the OpenAPI links);
  B. hooks off, every operation but the two uploads, every check;
  C. hooks off, the two uploads, invalid cases only, `negative_data_rejection`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services import Stack, make_stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
UPLOADS = ("create_pilot_set", "create_model")


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def fuzz_stack(request, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    # the fuzzer sends about 60 requests a second: the per-key rate limit would answer most with 429
    yield from make_stack(request.param, tmp_path_factory.mktemp(f"fuzz-{request.param}"), env_extra={"TOPORANK_RATE_LIMIT_PER_MINUTE": "0"})


def _run(stack: Stack, *args: str, hooks: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    env["PYTHONPATH"] = str(ROOT)
    if hooks:
        env["SCHEMATHESIS_HOOKS"] = "tests.contract_hooks"
    cmd = [SCHEMATHESIS, "run", f"{stack.url}/openapi.json", "-H", f"X-API-Key: {stack.keys['a']}", "--seed", "1", "--no-color", *args]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    failures = out.stdout[out.stdout.find("FAILURES"):out.stdout.find("WARNINGS")] if "FAILURES" in out.stdout else ""
    assert out.returncode == 0, f"schemathesis {' '.join(args)} failed:\n{failures[:12000]}\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}"
    cases = out.stdout.split("Test cases:")[-1].split("\n")[1]
    assert " passed" in cases and int(cases.split()[0]) > 0, out.stdout[-3000:]  # it did test something


def test_every_operation_meets_its_contract(fuzz_stack):  # type: ignore[no-untyped-def]
    _run(fuzz_stack, "-c", "all", "--exclude-checks", "negative_data_rejection", "-n", "20", hooks=True)


def test_invalid_requests_are_refused(fuzz_stack):  # type: ignore[no-untyped-def]
    _run(fuzz_stack, "-c", "all", "-n", "20", *[a for op in UPLOADS for a in ("--exclude-operation-id", op)], hooks=False)
    _run(fuzz_stack, "-c", "negative_data_rejection", "-m", "negative", "-n", "20", "--phases", "coverage,fuzzing",
         *[a for op in UPLOADS for a in ("--include-operation-id", op)], hooks=False)
