"""A score that changes must come with a new `SCORING_CODE_VERSION` (see tests/worker/golden.py)."""

from __future__ import annotations

import json

import pytest

from tests.worker.golden import GOLDEN, compute, differences
from transferability.config import SCORING_CODE_VERSION


def test_scores_match_the_golden_file_of_this_code_version() -> None:
    stored = json.loads(GOLDEN.read_text())
    if stored["code_version"] != SCORING_CODE_VERSION:
        pytest.fail(f"SCORING_CODE_VERSION is {SCORING_CODE_VERSION!r} but the golden scores were stored under "
                    f"{stored['code_version']!r}: regenerate them with `python -m tests.worker.golden --write`")
    moved = differences(stored, compute())
    assert not moved, ("scores changed but SCORING_CODE_VERSION did not; bump it (scores stored by the old code must not be "
                       "reused for the new) and run `python -m tests.worker.golden --write`:\n" + "\n".join(moved))


def test_the_guard_sees_a_moved_score() -> None:
    stored = json.loads(GOLDEN.read_text())
    moved = json.loads(json.dumps(stored))
    name = next(iter(moved["scores"]))
    moved["scores"][name]["grtd"] *= 1.01
    moved["scores"][name]["lbtc"] += 0.01
    assert len(differences(stored, moved)) == 2 and differences(stored, stored) == []
