"""The files nnssl leaves beside a checkpoint, read without torch (the adapter and `zoo import` share this)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PLAN_FILE = "adaptation_plan.json"


def sidecar_plans(checkpoint_path: Path) -> list[Path]:
    """Where nnssl leaves `adaptation_plan.json`: beside the checkpoint (hub release,
    add_adaptation_plan.py) or one folder up (a trainer's output, `fold_X/` below it)."""
    return [d / PLAN_FILE for d in (checkpoint_path.parent, checkpoint_path.parent.parent) if (d / PLAN_FILE).is_file()]


def read_plan_json(path: Path) -> dict[str, Any]:
    """An `adaptation_plan.json` as a dict; ValueError when it is not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError, TypeError):
        raise ValueError(f"{PLAN_FILE} is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError(f"{PLAN_FILE} is not a JSON object")
    return data


def name_field(mapping: Any, key: str) -> str | None:
    """`mapping[key]` when it is a non-empty string (trainer names, architecture names), else None."""
    value = mapping.get(key) if isinstance(mapping, dict) else None
    return value if isinstance(value, str) and value else None


def plan_architecture(plan: Any) -> str | None:
    """`architecture_plans.arch_class_name` of a plan, if it has one."""
    return name_field(plan.get("architecture_plans") if isinstance(plan, dict) else None, "arch_class_name")


def sidecar_identity(checkpoint_path: Path) -> tuple[str | None, str | None]:
    """(trainer name, plan architecture) from the plan JSON nnssl left beside the checkpoint."""
    for side in sidecar_plans(checkpoint_path):
        try:
            plan = read_plan_json(side)
        except ValueError:
            continue
        return name_field(plan, "trainer_name"), plan_architecture(plan)
    return None, None
