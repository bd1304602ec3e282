"""Fixtures of the end-to-end tests (see services.py): one stack per run mode, tiny checkpoints."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from services import Stack, make_stack  # noqa: E402


@pytest.fixture(scope="module", params=["embedded", "postgres"])
def stack(request, tmp_path_factory) -> Iterator[Stack]:  # type: ignore[no-untyped-def]
    yield from make_stack(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> list[Path]:
    from ckpt_builder import build_checkpoint

    root = tmp_path_factory.mktemp("ckpts")
    return [build_checkpoint(root / f"m{i}" / "checkpoint_final.pth", seed=i) for i in range(3)]
