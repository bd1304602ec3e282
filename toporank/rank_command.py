"""`toporank rank`: rank checkpoints on a pilot set through a running TopoRank server, in one command.

Registers the checkpoints the server does not hold yet (matched by sha256 against your models and
the shared zoo), uploads the pilot set (an nnU-Net / MSD folder is zipped on the fly), starts the
ranking, shows a progress bar per model, prints the fused ordering with its 95% intervals and
stability verdict, saves the HTML report (`--report`) and, with `--confirm K`, fine-tunes the top K
models by cross-validation on the pilot set (a progress bar per model) and prints their held-out
Dice, the top-1 verdict and the evaluation it records. Needs only the client install (no torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from toporank.client import ApiError, Client
from toporank.files import sha256_of

BASELINE_COLUMNS = ("logme", "gbc", "hscore", "transrate", "ccfv")


def parse_model_arg(text: str) -> tuple[Path, str | None]:
    """`FILE` or `FILE=CATALOG` -> (path, catalog entry or None)."""
    path, sep, catalog = text.rpartition("=") if "=" in text else (text, "", "")
    return Path(path if sep else text), (catalog or None)


def _fmt(x: Any, width: int = 9) -> str:
    return f"{x:{width}.4f}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def _interval(iv: Any, fmt: str = "{:.3f}") -> str:
    return f"[{fmt.format(iv[0])}, {fmt.format(iv[1])}]" if iv else "-"


def print_table(rank: dict[str, Any], job: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """The fused ordering with raw and normalised GRTD and LBTC, the bootstrap's 95% intervals and
    P(rank 1) when the ranking has them, a few baselines, and the stability verdict."""
    baselines = {it["model_id"]: (it.get("baselines") or {}) for it in job["items"]}
    cols = [c for c in BASELINE_COLUMNS if any(c in b for b in baselines.values())]
    unc = rank.get("uncertainty") or {}
    per_model = unc.get("models") or {} if unc.get("available") else {}
    print(f"\nK = {rank['K']} foreground classes, alpha = {rank['alpha']:.4f} "
          f"({'global' if rank['alpha'] >= 0.5 else 'local'} emphasis)", file=out)
    head = f"{'rank':>4}  {'model':<24}{'fused':>9}"
    if per_model:
        head += f"{'fused 95%':>18}{'rank 95%':>10}{'P(1st)':>8}"
    head += f"{'GRTD':>9}{'LBTC':>9}{'N(GRTD)':>9}{'N(LBTC)':>9}"
    head += "".join(f"{c:>11}" for c in cols)
    print(head, file=out)
    print("-" * len(head), file=out)
    for m in rank["models"]:
        row = f"{m['rank']:>4}  {str(m['name'] or m['model_id'])[:23]:<24}{_fmt(m['fused'])}"
        if per_model:
            u = per_model.get(m["model_id"]) or {}
            ranks = u.get("rank_interval")
            p1 = u.get("p_rank1")
            row += f"{_interval(u.get('fused_interval')):>18}{(f'{ranks[0]}-{ranks[1]}' if ranks else '-'):>10}"
            row += f"{(f'{p1:.2f}' if p1 is not None else '-'):>8}"
        row += "".join(_fmt(m[k]) for k in ("grtd", "lbtc", "grtd_norm", "lbtc_norm"))
        row += "".join(_fmt(baselines.get(m["model_id"], {}).get(c), 11) for c in cols)
        print(row, file=out)
    if not unc:
        return
    if not unc.get("available"):
        print(f"\nno uncertainty: {unc.get('reason')}", file=out)
        return
    top = per_model.get(unc["top_model"], {}).get("p_rank1")
    verdict = "stable" if unc.get("stable") else "NOT stable"
    print(f"\n{verdict}: the top model ranks first in {100 * (top or 0):.0f}% of {unc['n_replicates_used']} half-samples "
          f"of the {unc['n_cases']} pilot cases (stable at >= {100 * unc['stable_threshold']:.0f}%)", file=out)
    if unc.get("note"):
        print(f"note: {unc['note']}", file=out)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def resolve_models(client: Client, model_args: Sequence[str], shared_names: Sequence[str]) -> list[str]:
    """Model ids for the `--model` files (registered when the server lacks them) and `--shared` names."""
    known = client.list_models()
    by_sha = {m.sha256: m for m in known if m.status != "invalid"}
    ids: list[str] = []
    for arg in model_args:
        path, catalog = parse_model_arg(arg)
        if not path.is_file():
            raise SystemExit(f"toporank rank: checkpoint {path} not found")
        sha = sha256_of(path)
        label = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
        if sha in by_sha:
            m = by_sha[sha]
            _say(f"model {label}: already registered as {m.name} ({m.id})")
        else:
            _say(f"model {label}: registering{f' as {catalog}' if catalog else ''} and waiting for validation")
            m = client.register_model(path, catalog=catalog)
        if m.status == "invalid":
            err = m.error.code if m.error else "invalid"
            raise SystemExit(f"toporank rank: model {label} failed validation ({err}: {m.error.detail if m.error else ''})")
        ids.append(m.id)
    shared = {m.name: m for m in known if m.shared}
    for name in shared_names:
        if name not in shared:
            raise SystemExit(f"toporank rank: no shared model named {name!r}; shared: {', '.join(sorted(shared)) or 'none'}")
        ids.append(shared[name].id)
    if not ids:
        raise SystemExit("toporank rank: name at least one --model or --shared model")
    return ids


def run(args: argparse.Namespace) -> int:
    server = args.server or os.environ.get("TOPORANK_SERVER")
    key = args.api_key or os.environ.get("TOPORANK_API_KEY")
    if not server or not key:
        raise SystemExit("toporank rank: give --server and --api-key (or TOPORANK_SERVER and TOPORANK_API_KEY)")
    config = json.loads(args.config) if args.config else None
    from rich.progress import BarColumn, Progress, TextColumn

    try:
        with Client(server, key) as client:
            model_ids = resolve_models(client, args.model or [], args.shared or [])
            _say(f"pilot set {args.pilot}: uploading")
            ps = client.upload_pilot_set(args.pilot, name=args.name)
            _say(f"pilot set {ps.id}: {ps.n_cases} cases, K = {ps.K}")
            job = client.rank(ps, model_ids, config)
            with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%  {task.fields[state]}"),
                          transient=False, console=None) as bars:
                tasks = {it.model_id: bars.add_task(str(it.model_name or it.model_id)[:28], total=100, state=it.status)
                         for it in job.items}

                def show(j: Any) -> None:
                    for it in j.items:
                        state = it.status if it.status != "running" else f"{it.stage or 'running'}"
                        bars.update(tasks[it.model_id], completed=100 * (1.0 if it.status == "succeeded" else it.progress), state=state)

                job = client.wait(job, progress=show)
            if job.status not in ("succeeded", "partial"):
                errors = "; ".join(f"{it.model_name}: {it.error.code}" for it in job.items if it.error)
                raise SystemExit(f"toporank rank: ranking {job.id} ended {job.status}{f' ({errors})' if errors else ''}")
            rank = client.rank_result(job, partial=job.status == "partial")
            print_table(rank.model_dump(), job.model_dump())
            print(f"\nranking {job.id} ({job.status})")
            if args.report:
                path = client.report(job, args.report, partial=job.status == "partial")
                print(f"report: {path}")
            if args.confirm:
                confirm_top(client, job, args.confirm, args.confirm_steps)
    except ApiError as exc:
        raise SystemExit(f"toporank rank: {exc.code}: {exc.detail}") from None
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"toporank rank: {exc}") from None
    return 0


def print_confirmation(conf: dict[str, Any], out: TextIO = sys.stdout) -> None:
    """The confirmation's held-out Dice per model, the top-1 verdict and the evaluation's weighted tau."""
    print(f"\nconfirmation {conf['id']} ({conf['status']}): {conf['n_folds']}-fold cross-validation, {conf['steps']} steps per fold",
          file=out)
    print(f"{'pred':>4}  {'model':<24} {'Dice mean':>9} {'± std':>7} {'folds':>5}", file=out)
    for m in conf["models"]:
        print(f"{m['predicted_rank'] or '-':>4}  {str(m['name'] or m['model_id'])[:24]:<24} {_fmt(m['dice_mean'])} "
              f"{_fmt(m['dice_std'], 7)} {m['n_folds_done']:>2}/{conf['n_folds']:<2}", file=out)
    verdict = conf["top1_confirmed"]
    if verdict is None:
        print(f"top-1: not judged ({conf['top1_note']})", file=out)
    else:
        print(f"top-1: {'confirmed' if verdict else 'NOT confirmed'} (predicted top within one standard error of the best: "
              f"{'yes' if verdict else 'no'})", file=out)
    ev = conf.get("evaluation")
    if ev:
        print(f"evaluation {ev['id']}: fused weighted tau {_fmt(ev['metrics'].get('fused', {}).get('weighted_tau')).strip()} "
              f"over {ev['n_models']} models", file=out)
    elif conf.get("note"):
        print(f"no evaluation: {conf['note']}", file=out)


def confirm_top(client: Client, job: Any, top_k: int, steps: int) -> None:
    """Fine-tune the ranking's top `top_k` models with a progress bar per model, then print the result."""
    from rich.progress import BarColumn, Progress, TextColumn

    conf = client.confirm(job, top_k=top_k, steps=steps)
    cost = conf.expected_cost.get("seconds")
    _say(f"confirmation {conf.id}: fine-tuning the top {top_k} on {conf.n_folds} folds"
         + (f" (expected {cost:.0f} s of worker time)" if cost else ""))
    with Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%  {task.fields[state]}"),
                  transient=False, console=None) as bars:
        tasks = {m.model_id: bars.add_task(str(m.name or m.model_id)[:28], total=100, state=m.status) for m in conf.models}

        def show(c: Any) -> None:
            for m in c.models:
                done = sum(f.status == "succeeded" for f in m.folds)
                bars.update(tasks[m.model_id], completed=100 * m.progress, state=f"{m.status} {done}/{c.n_folds} folds")

        conf = client.wait_confirmation(conf, progress=show)
    print_confirmation(conf.model_dump())


def add_parser(sub: Any) -> None:
    p = sub.add_parser("rank", help="rank checkpoints on a pilot set through a running server (client only)",
                       description=__doc__.splitlines()[0])
    p.add_argument("--server", help="e.g. http://127.0.0.1:8000 (default: $TOPORANK_SERVER)")
    p.add_argument("--api-key", help="your tenant's key (default: $TOPORANK_API_KEY)")
    p.add_argument("--pilot", required=True, help="nnU-Net / MSD dataset folder, or a .zip / .tar.gz of one")
    p.add_argument("--name", help="a name for the pilot set")
    p.add_argument("--model", action="append", metavar="FILE[=CATALOG]", help="a checkpoint, optionally with its catalog entry")
    p.add_argument("--shared", action="append", metavar="NAME", help="a model of the shared zoo, by name")
    p.add_argument("--config", help="scoring config overrides as JSON, e.g. '{\"n_samples\": 2048}'")
    p.add_argument("--report", metavar="OUT.html", help="also save the ranking's self-contained HTML report here")
    p.add_argument("--confirm", type=int, metavar="K", help="then fine-tune the top K models by cross-validation on the pilot set")
    p.add_argument("--confirm-steps", type=int, default=120, metavar="N", help="optimiser steps per fold of --confirm (default 120)")
    p.set_defaults(func=run)
