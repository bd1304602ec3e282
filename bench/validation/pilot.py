"""Task-design pilot of validation v2: fine-tune ONE randomly initialised encoder on candidate tuning
task specs, with protocol v2's fine-tune and frozen-encoder truths, to see whether a recipe is
learnable in budget but not at its ceiling before the benchmark's specs are fixed.

Only tuning-task candidates are ever piloted (never a held-out spec). The encoder is a fresh nnU-Net
initialisation (He, seed 424242) that is not a member of the zoo; the pilot's task seeds (9001+) are
not the benchmark's. What it found, and which specs it led to, is in docs/decisions.md.

    python -m bench.validation.pilot results/validation/v2/pilot/specs --seeds 900 901 --out results/validation/v2/pilot/pilot.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PILOT_INIT_SEED = 424242


def _checkpoint(root: Path) -> tuple[Path, dict[str, Any]]:
    """A He-initialised demo ResEnc written as an nnssl encoder-only checkpoint, and its spec."""
    from models_registry.specs import ModelSpec
    from worker.demo_zoo import adaptation_plan, build_demo_unet, write_nnssl_checkpoint

    net = build_demo_unet(PILOT_INIT_SEED)
    net.apply(net.initialize)
    path = root / "pilot-random" / "checkpoint_final.pth"
    write_nnssl_checkpoint(path, {k: v for k, v in net.state_dict().items() if k.startswith("encoder.")}, adaptation_plan("pilot-random"))
    spec = ModelSpec(name="pilot-random", format="nnssl", architecture={"arch_class_name": "ResidualEncoderUNet"})
    return path, spec.model_dump(mode="json", exclude_none=True)


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    from bench.validation.profiles import FROZEN_SEED_OFFSET, FROZEN_V2, TRUTH_V2
    from bench.validation.run import TaskInput, model_spec_for_task
    from bench.validation.tasks import build_cases, load_tasks
    from models_registry.specs import ModelSpec
    from worker.finetune import FinetuneConfig, finetune

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", type=Path)
    ap.add_argument("--seeds", nargs="+", type=int, default=[900, 901])
    ap.add_argument("--frozen-seeds", type=int, default=1, help="how many of --seeds also run the frozen-encoder truth")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variant", default="truth_v2", help="a name for the fine-tune protocol variant of this call")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="fine-tune truth overrides of this variant")
    ap.add_argument("--no-frozen", action="store_true", help="skip the frozen-encoder runs")
    ap.add_argument("--work", type=Path, default=Path("/tmp/toporank-pilot"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    ckpt, spec_json = _checkpoint(args.work)

    class _Member:  # what model_spec_for_task reads
        spec = spec_json
        checkpoint = ckpt

    out: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {"runs": []}
    done = {(r["task"], r.get("variant", "truth_v2"), r["protocol"], r["seed"]) for r in out["runs"]}
    overrides = {k: json.loads(v) for k, _, v in (item.partition("=") for item in args.set)}
    for task in load_tasks(args.specs):
        cases = build_cases(task)
        ti = TaskInput(task.name, task.to_dict(), task.spec_hash(), "", "", task.k, task.regime, task.held_out)
        mspec = ModelSpec(**model_spec_for_task(_Member, ti))
        plans = [("finetune", s, {**task.finetune, **TRUTH_V2, **overrides, "seed": s}) for s in args.seeds]
        if not args.no_frozen:
            plans += [("frozen", s + FROZEN_SEED_OFFSET, {**task.finetune, **FROZEN_V2, "seed": s + FROZEN_SEED_OFFSET})
                      for s in args.seeds[: args.frozen_seeds]]
        for protocol, seed, cfg in plans:
            variant = args.variant if protocol == "finetune" else "frozen_v2"
            if (task.name, variant, protocol, seed) in done:
                continue
            t0 = time.perf_counter()
            res = finetune(mspec, ckpt, cases.train, cases.test, task.k + 1, FinetuneConfig.from_dict(cfg))
            row = {"task": task.name, "variant": variant, "k": task.k, "spec_hash": task.spec_hash(), "protocol": protocol, "seed": seed,
                   "dice": res.dice, "per_class": res.per_class, "snapshots": [{"fraction": s["fraction"], "dice": s["dice"]} for s in res.snapshots],
                   "seconds": res.seconds, "config": res.config}
            out["runs"].append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(out, indent=1, sort_keys=True))
            print(f"{task.name} {variant} seed {seed}: dice {res.dice:.3f} snapshots "
                  f"{[round(s['dice'], 3) for s in res.snapshots]} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
