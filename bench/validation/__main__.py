"""`python -m bench.validation run --profile v2`: the validation benchmark (see docs/validation.md).

Subcommands: `run` (build the zoo, fine-tune, score, write results/validation/<profile>/) and
`report` (rewrite report.md and plots from an existing results.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def _key_values(items: Sequence[str]) -> dict[str, object]:
    """`KEY=VALUE` pairs, each VALUE read as JSON (a number, true/false, a list), else as a string."""
    out: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--finetune takes KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            out[key] = raw
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from bench.validation.profiles import PROFILES, get_profile, narrowed

    p = argparse.ArgumentParser(prog="python -m bench.validation", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run the benchmark (resumable: cached fine-tunes and scores are reused)")
    r.add_argument("--profile", default="v2", choices=sorted(PROFILES))
    r.add_argument("--tasks", nargs="+", type=Path, help="task spec files or folders to run instead of the profile's tasks")
    r.add_argument("--out", type=Path, help="output folder (default results/validation/<profile>)")
    r.add_argument("--cache", type=Path, help="cache folder (default $TOPORANK_VALIDATION_CACHE/<profile>, else ~/.cache/toporank-validation/<profile>)")
    r.add_argument("--jobs", type=int, help="worker processes (default: the profile's)")
    r.add_argument("--device", help="cpu or cuda (default: the profile's)")
    r.add_argument("--no-compute", action="store_true",
                   help="fine-tune and score nothing: report what the cache holds, marked partial when the plan is not complete")
    r.add_argument("--checkpoint-min", type=float, default=10.0,
                   help="export records.jsonl.gz every this many minutes while computing (to commit them as they land)")
    r.add_argument("--members", nargs="+", help="only these zoo members (a pilot study; default: the profile's)")
    r.add_argument("--seeds", nargs="+", type=int, help="fine-tune seeds (default: the profile's)")
    r.add_argument("--steps-scale", type=float, help="multiply every task's fine-tune steps and encoder warm-up (default: the profile's)")
    r.add_argument("--finetune", nargs="+", metavar="KEY=JSON", help="override fine-tuning settings, e.g. encoder_warmup_steps=0")
    r.add_argument("--decoders", choices=("all", "default"), default="all",
                   help="'default': score with the production decoder only (kaiming-0), skipping Table 2's sweep")
    sl = sub.add_parser("seal", help="write the profile's sealed.json (held-out task hashes), once, before any truth")
    sl.add_argument("--profile", default="v2", choices=sorted(PROFILES))
    rep = sub.add_parser("report", help="rewrite report.md and plots from results.json")
    rep.add_argument("results", type=Path, help="a results.json written by `run`")
    rep.add_argument("--docs", type=Path, help="also embed report.md in this page between its report markers (docs/validation.md)")
    args = p.parse_args(list(argv) if argv is not None else None)

    if args.cmd == "run":
        from bench.validation.run import run

        if args.jobs is not None and args.jobs < 1:
            p.error("--jobs must be >= 1")
        profile = get_profile(args.profile)
        try:
            profile = narrowed(profile, members=args.members, seeds=args.seeds, steps_scale=args.steps_scale,
                               default_decoder_only=args.decoders == "default", finetune=_key_values(args.finetune or []))
        except ValueError as exc:
            p.error(str(exc))
        if profile != get_profile(args.profile) and args.out is None:
            p.error("a narrowed profile (--members, --seeds, --steps-scale, --finetune, --decoders default) needs its own --out folder")
        out = args.out
        if out is None and args.tasks:
            p.error("--tasks needs its own --out folder (the profile's committed results are never overwritten)")
        if out is None and args.device and args.device != profile.device:
            p.error("a run on another device needs its own --out folder (records are keyed by device)")
        run(profile, task_files=args.tasks, out_dir=out, cache_dir=args.cache, jobs=args.jobs, device=args.device,
            compute=not args.no_compute, checkpoint_s=60.0 * args.checkpoint_min)
        return 0
    if args.cmd == "seal":
        from bench.validation.run import REPO, SEALED_FILE, seal

        profile = get_profile(args.profile)
        path = REPO / profile.seal_dir / SEALED_FILE
        data = seal(profile, path)
        print(json.dumps(data, indent=2))
        return 0
    from bench.validation.report import computing_run, write_report

    data = json.loads(args.results.read_text())
    out = args.results.parent
    runs = json.loads((out / "run.json").read_text())["runs"] if (out / "run.json").is_file() else []
    write_report(data, out, machine=computing_run(runs).get("machine"))  # the machine that computed the numbers, not this one
    if args.docs is not None:
        from bench.validation.report import docs_header, embed_in_docs

        header = docs_header(runs)
        embed_in_docs((out / "report.md").read_text(), args.docs, header)
    print(out / "report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
