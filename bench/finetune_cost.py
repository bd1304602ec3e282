"""Measured fine-tuning cost per architecture and device, from the validation benchmark's records.

Reads the fine-tune records a benchmark run exported (`results/validation/<profile>/records.jsonl.gz`)
and writes `models_registry/finetune_cost.json`: per (architecture signature, device) the median
seconds per optimiser step and per predicted test case, with the recipe they were measured under
(patch, batch, threads) and how many runs. The confirmation API quotes its expected cost from it.

    python -m bench.finetune_cost results/validation/cpu/records.jsonl.gz

Prints the table as JSON. The benchmark zoo is the demo ResEnc (models_registry.catalog.DEMO_*).
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
from pathlib import Path

from models_registry.catalog import DEMO_FEATURES, DEMO_STRIDES
from models_registry.finetune_cost import COST_TABLE, architecture_signature


def _demo_signature() -> str:
    return architecture_signature([{"role": "encoder", "channels": c, "stride": [s, s, s]} for c, s in zip(DEMO_FEATURES, DEMO_STRIDES)])


def build(records_path: Path) -> dict:
    step_s: list[float] = []
    case_s: list[float] = []
    recipe: set[tuple] = set()
    devices: set[str] = set()
    with gzip.open(records_path, "rt") as fh:
        for line in fh:
            row = json.loads(line)
            if row.get("kind") != "finetune":
                continue
            rec = row["record"]
            cfg, sec = rec["config"], rec["seconds"]
            step_s.append(sec["train"] / cfg["steps"])
            case_s.append(sec["predict"] / max(rec["n_test"], 1))
            recipe.add((tuple(cfg["patch"]), cfg["batch_size"], cfg.get("threads")))
            devices.add(rec.get("recipe", {}).get("device", "cpu"))
    if not step_s:
        raise SystemExit(f"{records_path}: no fine-tune records")
    if len(recipe) != 1 or len(devices) != 1:
        raise SystemExit(f"{records_path}: records mix recipes {sorted(recipe)} or devices {sorted(devices)}")
    (patch, batch, threads), device = recipe.pop(), devices.pop()
    return {
        "source": str(records_path),
        "entries": [
            {
                "architecture": _demo_signature(),
                "description": "demo ResEnc 8-16-32-64 (the validation benchmark's zoo)",
                "source": str(records_path),
                "device": device,
                "seconds_per_step": statistics.median(step_s),
                "seconds_per_test_case": statistics.median(case_s),
                "patch": list(patch),
                "batch_size": batch,
                "threads": threads,
                "n_runs": len(step_s),
                "step_seconds_p10_p90": [statistics.quantiles(step_s, n=10)[0], statistics.quantiles(step_s, n=10)[-1]],
            }
        ],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("records", type=Path)
    p.add_argument("--out", type=Path, default=COST_TABLE)
    args = p.parse_args(argv)
    table = build(args.records)
    args.out.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    json.dump(table, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
