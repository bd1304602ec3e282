"""Expected cost of fine-tuning, from measured seconds per step (bench/finetune_cost.py writes the table).

An estimate, quoted before a confirmation runs: per (architecture signature, device) the benchmark's
median seconds per optimiser step and per predicted test case, scaled by the voxels per step of the
requested recipe against the measured one. No measurement for the architecture or device: no number,
and the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

COST_TABLE = Path(__file__).with_name("finetune_cost.json")


def architecture_signature(stages: Iterable[Mapping[str, Any]]) -> str:
    """The encoder's stage widths and cumulative strides, e.g. `8@1-16@2-32@4-64@8` (what the cost of
    a step mostly depends on; blocks per stage are not in a model's stored stages)."""
    parts = []
    for st in stages:
        if st.get("role", "encoder") != "encoder":
            continue
        stride = st.get("stride") or [1]
        parts.append(f"{int(st['channels'])}@{'x'.join(str(int(s)) for s in stride) if len(set(stride)) > 1 else int(stride[0])}")
    return "-".join(parts)


@lru_cache(maxsize=1)
def _table() -> list[dict[str, Any]]:
    if not COST_TABLE.is_file():
        return []
    return list(json.loads(COST_TABLE.read_text()).get("entries", []))


def expected_cost(
    stages: Iterable[Mapping[str, Any]], device: str, steps: int, patch: Sequence[int], batch_size: int, test_cases_per_fold: Sequence[int]
) -> dict[str, Any]:
    """Seconds of worker time to fine-tune one model on every fold (train + predict), or None with a reason.

    `device` is `cpu` or `cuda` (None when unknown: the deployment's device is `auto`)."""
    signature = architecture_signature(stages)
    if device not in ("cpu", "cuda"):
        return {"seconds_per_model": None, "architecture": signature, "reason": "the workers' device is not known to the API (TOPORANK_DEVICE=auto)"}
    entry = next((e for e in _table() if e["architecture"] == signature and e["device"] == device), None)
    if entry is None:
        return {"seconds_per_model": None, "architecture": signature, "device": device,
                "reason": f"no measured fine-tuning cost for architecture {signature} on {device}"}
    scale = (math.prod(patch) * batch_size) / (math.prod(entry["patch"]) * entry["batch_size"])
    folds = len(test_cases_per_fold)
    train = folds * steps * entry["seconds_per_step"] * scale
    predict = sum(test_cases_per_fold) * entry["seconds_per_test_case"]
    return {
        "seconds_per_model": train + predict,
        "architecture": signature,
        "device": device,
        "basis": {k: entry[k] for k in ("seconds_per_step", "seconds_per_test_case", "patch", "batch_size", "threads", "n_runs", "source")
                  if k in entry},
        "voxel_scale": scale,
        "note": f"measured with {entry.get('threads')} thread(s) per fine-tune on the benchmark's machine; predict time "
                "is per test case of the benchmark's size",
    }
