"""Tables, plots and `report.md` of a benchmark run, from its raw results alone.

`build_tables(results)` is deterministic, so a rerun from a full cache writes byte-identical
`results.json` and `report.md`. The paper's numbers are quoted beside ours, never mixed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.validation.analysis import (
    INFORMATIVE_SPLIT_HALF_TAU,
    LABEL_BLIND_EFFECT,
    agreement,
    chance_weighted_tau,
    fused_scores,
    mean_finite,
    permutation_effect,
    reproducibility,
    truth_summary,
)

BASELINES = ("logme", "leep", "nleep", "nce", "gbc", "hscore", "regularized_hscore", "transrate", "ccfv")
TOPO = ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted", "lbtc")
METRICS = TOPO + BASELINES
RAW_METRICS = ("grtd_penalised", "grtd_contracted", "lbtc") + BASELINES
DEFAULT_DECODER = "kaiming-0"

PAPER_TABLE1 = {  # the paper's Table 1 (weighted tau on the OpenMind zoo, 7 models)
    "columns": ["MSF", "ISL", "HNT", "TPC", "ACD", "KIT", "All"],
    "regime": ["ID", "ID", "ID", "ID", "OOD", "OOD", "avg"],
    "rows": {
        "LogME": [-0.524, -0.223, -0.315, -0.545, 0.575, -0.649, -0.280],
        "LEEP": [-0.220, -0.427, -0.492, -0.051, -0.621, 0.225, -0.264],
        "GBC": [-0.707, -0.601, -0.537, -0.256, -0.325, -0.621, -0.508],
        "CCFV": [0.277, 0.503, 0.869, 0.664, 0.817, 0.180, 0.552],
        "Ours (fused)": [0.705, 0.814, 0.905, 0.664, 0.671, 0.578, 0.723],
    },
}
PAPER_TABLE2 = {"Kaiming": 0.680, "Xavier": 0.659, "Gaussian": 0.674}  # averages over TPC, ACD, MSF
PAPER_TIME = {"CCFV": 609.9, "Ours": 6.99, "Fine-tune": 3000.0}  # seconds, averages over TPC, ACD, MSF
PAPER_TABLE3 = {"Global (GRTD)": 0.436, "Local (LBTC)": 0.475, "Adaptive (Ours)": 0.714}  # avg over ISL, MSF, ACD, TPC


# ----------------------------------------------------------------------------- tables
def _metric_values(task_scores: Mapping[str, Any], k: int) -> dict[str, dict[str, float]]:
    """metric -> model -> value for one (task, decoder), the fused scores computed zoo-relative."""
    rows = {m: e["metrics"] for m, e in task_scores.items()}
    out: dict[str, dict[str, float]] = {}
    for metric in RAW_METRICS:
        out[metric] = {m: r[metric] for m, r in rows.items() if r.get(metric) is not None}
    lbtc = out["lbtc"]
    for variant in ("penalised", "contracted"):
        g = out[f"grtd_{variant}"]
        both = [m for m in g if m in lbtc]
        out[f"fused_{variant}"] = fused_scores({m: g[m] for m in both}, {m: lbtc[m] for m in both}, k) if both else {}
    return out


def _shuffled_values(task_scores: Mapping[str, Any], k: int) -> dict[str, dict[str, float]]:
    """The same as `_metric_values`, from the label-permuted recomputation of the control."""
    shuffled = {m: {"metrics": e["control"]["shuffled"]} for m, e in task_scores.items() if "control" in e}
    return _metric_values(shuffled, k) if shuffled else {}


def _groups(inputs: Mapping[str, Any], repro: Mapping[str, Any]) -> dict[str, list[str]]:
    tasks = inputs["tasks"]
    dev = [t for t in tasks if not tasks[t]["held_out"]]
    return {
        "ID": [t for t in dev if tasks[t]["regime"] == "ID"],
        "OOD": [t for t in dev if tasks[t]["regime"] == "OOD"],
        "all (tuning tasks)": dev,
        "informative (tuning tasks)": [t for t in dev if repro[t]["informative"]],
        "held-out": [t for t in tasks if tasks[t]["held_out"]],
        "held-out informative": [t for t in tasks if tasks[t]["held_out"] and repro[t]["informative"]],
    }


def _std_finite(values: Sequence[float]) -> float:
    """Population std of the finite values; NaN with fewer than two."""
    got = [v for v in values if math.isfinite(v)]
    return float(np.std(got)) if len(got) > 1 else math.nan


def _avg(tau_by_task: Mapping[str, float], names: Sequence[str]) -> float:
    return mean_finite([tau_by_task.get(t, float("nan")) for t in names])


def default_variant(tau: Mapping[str, Mapping[str, float]], groups: Mapping[str, list[str]]) -> dict[str, Any]:
    """The GRTD variant the tuning tasks choose: higher mean weighted tau of the fused score on the
    informative tuning tasks (all tuning tasks when none is informative); ties keep the spec's."""
    basis = "informative (tuning tasks)" if groups["informative (tuning tasks)"] else "all (tuning tasks)"
    names = groups[basis]
    pen = _avg(tau["fused_penalised"], names)
    con = _avg(tau["fused_contracted"], names)
    pick = "penalised" if (math.isfinite(pen) and (not math.isfinite(con) or pen > con)) else "contracted"
    return {"variant": pick, "basis": basis, "tasks": names, "fused_penalised": pen, "fused_contracted": con}


def build_tables(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every table of the report, as JSON."""
    inputs = results["inputs"]
    tasks = list(inputs["tasks"])
    models = list(inputs["models"])
    truth_means: dict[str, dict[str, float]] = {}
    repro: dict[str, Any] = {}
    truth_rows: dict[str, Any] = {}
    for t in tasks:
        dice = {m: results["truth"][t][m]["dice"] for m in models if m in results["truth"][t]}
        summ = truth_summary(dice)
        truth_means[t] = {m: s["mean"] for m, s in summ.items()}
        truth_rows[t] = summ
        repro[t] = {**reproducibility(dice), "k": inputs["tasks"][t]["k"], "regime": inputs["tasks"][t]["regime"],
                    "held_out": inputs["tasks"][t]["held_out"]}
    groups = _groups(inputs, repro)

    decoders = sorted({d for t in tasks for d in results["scores"][t]})
    values = {t: {d: _metric_values(results["scores"][t][d], inputs["tasks"][t]["k"]) for d in results["scores"][t]} for t in tasks}
    tau: dict[str, dict[str, dict[str, float]]] = {d: {m: {} for m in METRICS} for d in decoders}
    detail: dict[str, dict[str, dict[str, Any]]] = {d: {m: {} for m in METRICS} for d in decoders}
    for t in tasks:
        for d, vals in values[t].items():
            for metric in METRICS:
                a = agreement(vals.get(metric, {}), truth_means[t])
                tau[d][metric][t] = a["weighted_tau"]
                detail[d][metric][t] = a
    base = tau[DEFAULT_DECODER]
    choice = default_variant(base, groups)

    table1 = {metric: {"tasks": {t: base[metric][t] for t in tasks}, **{g: _avg(base[metric], names) for g, names in groups.items()}}
              for metric in METRICS}
    regrets = {metric: {t: detail[DEFAULT_DECODER][metric][t]["top1_regret"] for t in tasks} for metric in METRICS}

    inits = sorted({d.split("-")[0] for d in decoders})
    table2: dict[str, Any] = {}
    for init in inits:
        single = [d for d in decoders if d.startswith(init + "-") and "-x" not in d]
        for metric in ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted"):
            per_task = {t: mean_finite([tau[d][metric].get(t, math.nan) for d in single]) for t in tasks}
            spread = {t: _std_finite([tau[d][metric].get(t, math.nan) for d in single]) for t in tasks}
            table2.setdefault(init, {})[metric] = {"tasks": per_task, "seed_std": spread, "decoders": single,
                                                   **{g: _avg(per_task, names) for g, names in groups.items()}}
    multi = [d for d in decoders if "-x" in d and d.split("-x")[0] in tau]
    n_decoders = {}
    for d in multi:
        one = d.split("-x")[0]

        def paired(metric: str, names: Sequence[str], d: str = d, one: str = one) -> list[str]:
            """Tasks where both the single and the averaged decoder have a finite tau (same tasks both sides)."""
            return [t for t in names if math.isfinite(tau[d][metric].get(t, math.nan)) and math.isfinite(tau[one][metric].get(t, math.nan))]

        n_decoders[d] = {metric: {"one": {g: _avg(tau[one][metric], paired(metric, names)) for g, names in groups.items()},
                                  "averaged": {g: _avg(tau[d][metric], paired(metric, names)) for g, names in groups.items()},
                                  "tasks_one": dict(tau[one][metric]), "tasks_averaged": dict(tau[d][metric])}
                         for metric in ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted")}

    perm: dict[str, Any] = {}
    for metric in METRICS:
        effects, fracs, tau_shuf = {}, {}, {}
        for t in tasks:
            sv = _shuffled_values(results["scores"][t][DEFAULT_DECODER], inputs["tasks"][t]["k"])
            if not sv:
                continue
            tau_shuf[t] = agreement(sv.get(metric, {}), truth_means[t])["weighted_tau"]
            if metric in RAW_METRICS:
                e = permutation_effect(values[t][DEFAULT_DECODER][metric], sv[metric])
                effects[t] = e["effect"]
                fracs[t] = e["frac_true_higher"]
        mean_effect = mean_finite(list(effects.values())) if effects else float("nan")
        perm[metric] = {
            "effect": effects, "frac_true_higher": fracs, "mean_effect": mean_effect,
            "mean_frac_true_higher": mean_finite(list(fracs.values())) if fracs else float("nan"),
            "tau_true": {t: base[metric][t] for t in tasks}, "tau_shuffled": tau_shuf,
            "mean_tau_true": mean_finite([base[metric][t] for t in tau_shuf]), "mean_tau_shuffled": mean_finite(list(tau_shuf.values())),
            "label_blind": bool(metric in RAW_METRICS and math.isfinite(mean_effect) and mean_effect < LABEL_BLIND_EFFECT),
        }

    timing: dict[str, Any] = {}
    for m in models:
        topo, ccfv, ft = [], [], []
        for t in tasks:
            e = results["scores"][t][DEFAULT_DECODER].get(m)
            if e is not None:
                tm = e["timings"]
                shared = tm["load"] + tm.get("wait_sampling", 0.0) + tm["extract"]
                topo.append(shared + tm["grtd"] + tm["lbtc"])
                if "ccfv_only" in e:
                    ccfv.append(shared + e["ccfv_only"]["compute_s"])
            tr = results["truth"][t].get(m)
            if tr is not None:
                ft.extend(s["total"] for s in tr["seconds"])
        timing[m] = {"toporank_s": mean_finite(topo), "ccfv_s": mean_finite(ccfv), "finetune_s": mean_finite(ft)}
    timing["mean"] = {k: mean_finite([timing[m][k] for m in models]) for k in ("toporank_s", "ccfv_s", "finetune_s")}

    headline_groups = ("informative (tuning tasks)", "all (tuning tasks)", "held-out", "held-out informative")
    by_set: dict[tuple[str, ...], dict[str, float]] = {}
    for g in headline_groups:  # groups that hold the same tasks share one simulation
        key = tuple(groups[g])
        if key not in by_set:
            by_set[key] = chance_weighted_tau([truth_means[t] for t in key])
    chance = {g: by_set[tuple(groups[g])] for g in headline_groups}
    fused_default = f"fused_{choice['variant']}"
    wins: dict[str, dict[str, dict[str, int]]] = {}
    for metric in METRICS:
        wins[metric] = {}
        for g in headline_groups:
            both = [t for t in groups[g] if math.isfinite(base[fused_default][t]) and math.isfinite(base[metric][t])]
            wins[metric][g] = {"wins": sum(base[fused_default][t] > base[metric][t] for t in both), "of": len(both)}

    return {
        "groups": groups,
        "chance": chance,
        "fused_wins": wins,
        "truth": truth_rows,
        "reproducibility": repro,
        "default_variant": choice,
        "table1": table1,
        "top1_regret": regrets,
        "table2": table2,
        "n_decoders": n_decoders,
        "label_permutation": perm,
        "timing": timing,
        "tau_by_decoder": tau,
    }


# ----------------------------------------------------------------------------- markdown
def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


METRIC_LABELS = {
    "fused_penalised": "Fused (GRTD penalised)",
    "fused_contracted": "Fused (GRTD contracted, §3)",
    "grtd_penalised": "GRTD penalised (§3a)",
    "grtd_contracted": "GRTD contracted (§3)",
    "lbtc": "LBTC",
    "logme": "LogME",
    "leep": "LEEP (= NLEEP here)",
    "nleep": "NLEEP",
    "nce": "NCE",
    "gbc": "GBC",
    "hscore": "H-score",
    "regularized_hscore": "H-score (regularised)",
    "transrate": "TransRate",
    "ccfv": "CCFV",
}


def render_markdown(results: Mapping[str, Any], tables: Mapping[str, Any], machine: Mapping[str, Any] | None = None) -> str:
    """`report.md`: the headline, Tables 1-3, the permutation control, timing and reproducibility."""
    inputs = results["inputs"]
    tasks = list(inputs["tasks"])
    groups = tables["groups"]
    held = groups["held-out"]
    dev_order = groups["ID"] + groups["OOD"]
    order = dev_order + held
    prof = results["profile"]
    choice = tables["default_variant"]
    t1 = tables["table1"]
    repro = tables["reproducibility"]
    out: list[str] = []
    out.append(f"# Validation benchmark — profile `{prof['name']}`\n")
    out.append(f"Produced by `python -m bench.validation run --profile {prof['name']}` from the JSON in this folder "
               "(`results.json`); every number below is recomputed from it by `bench/validation/report.py`.\n")
    zoo = inputs["models"]
    out.append(f"- **Zoo:** {len(zoo)} encoders (small ResEnc 8-16-32-64, nnssl checkpoints): "
               + ", ".join(f"`{m}`" for m in zoo) + ".")
    out.append(f"- **Tasks:** {len(tasks)} ({len(dev_order)} tuning tasks, {len(held)} held out: "
               + (", ".join(f"`{t}`" for t in held) or "none") + "). The held-out tasks were never looked at while choosing anything.")
    out.append(f"- **Truth:** held-out Dice after fine-tuning (`worker/finetune.py`), seeds {', '.join(str(s) for s in prof['seeds'])}; "
               f"scores on the training cases (the pilot set) through `worker.pipeline.score_model`, decoder `{DEFAULT_DECODER}` "
               "unless a table says otherwise.")
    if machine:
        out.append(f"- **Machine:** {machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}, torch {machine.get('torch')}"
                   + (f", GPU {machine['cuda']}" if machine.get("cuda") else "") + ".")
    codes = inputs["code"]
    out.append("- **Code versions:** " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())) + ".\n")

    partial = results.get("partial")
    if partial:
        left = partial["tasks_left_out"]
        out.append(f"> **Partial report.** The run has not finished: {partial['records_cached']} of {partial['records_total']} records "
                   "were cached when this was written. A task is reported once all its fine-tunes and default-decoder scores are; "
                   "tasks left out: " + (", ".join(f"`{t}`" for t in left) if left else "none") + "."
                   + (" Averages below are over the tasks present, and the GRTD-variant choice is provisional." if left else "")
                   + ("" if not partial.get("decoders_left_out") else " Decoder configs not yet scored (left out of Table 2 and the "
                      "n_decoders table for that task): " + "; ".join(f"`{t}`: {', '.join(ds)}" for t, ds in partial["decoders_left_out"].items()) + ".")
                   + "\n")
    out.append("## Headline\n")
    inf = groups["informative (tuning tasks)"]
    hin = groups["held-out informative"]
    fused_default = f"fused_{choice['variant']}"
    rows = []
    for metric in (fused_default, "fused_contracted" if fused_default != "fused_contracted" else "fused_penalised", "grtd_penalised", "lbtc", *BASELINES):
        rows.append([METRIC_LABELS[metric], _f(t1[metric]["informative (tuning tasks)"]), _f(t1[metric]["all (tuning tasks)"]),
                     _f(t1[metric]["held-out"]), _f(t1[metric]["held-out informative"])])
    out.append(f"Mean weighted Kendall's τ against the fine-tuning truth. Informative tuning tasks: {', '.join(inf) or 'none'}; "
               f"informative held-out tasks: {', '.join(hin) or 'none'}.\n")
    chance = tables["chance"]
    rows.append(["*random ranking, 95 % range*", *[f"{_f(chance[g]['lo95'], 2)}..{_f(chance[g]['hi95'], 2)}" for g in
                                                   ("informative (tuning tasks)", "all (tuning tasks)", "held-out", "held-out informative")]])
    out.append(_md_table(["metric", "informative tuning tasks", "all tuning tasks", "held-out", "held-out informative"], rows))
    out.append(f"\nThe last row is chance: the central 95 % of the mean weighted τ over those tasks' truths when the {len(zoo)} models are "
               "put in a random order, the same order on every task, as a task-blind metric would (seeded simulation, "
               "`analysis.chance_weighted_tau`). A mean inside it is no evidence of skill; one outside it is not proof of skill either, "
               "with this few tasks.\n")
    wins = tables["fused_wins"]
    out.append(f"Tasks on which the fused score (`{fused_default}`) has the higher τ, as wins / tasks where both τ are defined, on the "
               "informative tuning tasks and on the held-out tasks: "
               + "; ".join(f"vs {METRIC_LABELS[b]} {wins[b]['informative (tuning tasks)']['wins']}/{wins[b]['informative (tuning tasks)']['of']}, "
                           f"{wins[b]['held-out']['wins']}/{wins[b]['held-out']['of']}" for b in BASELINES) + ".\n")
    for basis, words in (("informative (tuning tasks)", "informative tuning tasks"), ("all (tuning tasks)", "tuning tasks, informative or not")):
        finite = [b for b in BASELINES if t1[b][basis] is not None and math.isfinite(t1[b][basis])]  # None: NaN read back from JSON
        if not finite:
            out.append(f"\nNo {words}: no best classic baseline there.\n")
            continue
        best = max(finite, key=lambda b: t1[b][basis])
        out.append(f"\nBest classic baseline on the {words}: **{METRIC_LABELS[best]}** "
                   f"({_f(t1[best][basis])}) vs fused {_f(t1[fused_default][basis])}.\n")

    out.append("## Truth reproducibility per task\n")
    out.append(f"Split-half τ: Kendall τ-b between the model rankings of disjoint halves of the seeds (with 3 seeds: each seed against "
               f"the mean of the other two, averaged). A task with split-half τ < {INFORMATIVE_SPLIT_HALF_TAU} is **uninformative** "
               "and is kept out of the informative averages. Spread/noise: std of the model means over the mean seed std.\n")
    rows = []
    for t in order:
        r = repro[t]
        rows.append([t, r["regime"], str(r["k"]), "yes" if r["held_out"] else "", f"{_f(r['split_half_tau'])} ({_f(r['split_half_min'], 2)}..{_f(r['split_half_max'], 2)})",
                     _f(r["spread_over_noise"], 2), f"{_f(r['dice_range'][0])}–{_f(r['dice_range'][1])}", _f(r["mean_seed_std"]),
                     "informative" if r["informative"] else "**uninformative**"])
    out.append(_md_table(["task", "regime", "K", "held out", "split-half τ (min..max)", "spread/noise", "Dice range", "mean seed std", "verdict"], rows))
    out.append("")

    out.append("## Table 1 — weighted τ per task and metric\n")
    out.append(f"Decoder `{DEFAULT_DECODER}`. Averages over task groups; held-out tasks in their own columns.\n")
    header = ["metric", *dev_order, "ID avg", "OOD avg", "all tuning avg", "informative avg", *[f"{t} (held out)" for t in held], "held-out avg"]
    rows = []
    for metric in METRICS:
        r = t1[metric]
        rows.append([METRIC_LABELS[metric], *[_f(r["tasks"][t]) for t in dev_order], _f(r["ID"]), _f(r["OOD"]), _f(r["all (tuning tasks)"]),
                     _f(r["informative (tuning tasks)"]), *[_f(r["tasks"][t]) for t in held], _f(r["held-out"])])
    out.append(_md_table(header, rows))
    out.append("\nThe paper's Table 1 (OpenMind zoo of 7 ResEnc-L models, real data; quoted, not reproduced):\n")
    pt = PAPER_TABLE1
    out.append(_md_table(["method", *[f"{c} ({r})" for c, r in zip(pt["columns"], pt["regime"])]],
                         [[name, *[_f(v) for v in vals]] for name, vals in pt["rows"].items()]))
    out.append("\nTop-1 regret (best truth Dice minus the Dice of the model each metric ranks first; lower is better):\n")
    rows = [[METRIC_LABELS[m], *[_f(tables["top1_regret"][m][t]) for t in order]] for m in METRICS]
    out.append(_md_table(["metric", *order], rows))
    out.append("")

    out.append("## Table 2 — decoder initialisation\n")
    out.append("Weighted τ, mean over the decoder seeds of each init (± std over those seeds, per task). Only decoder stages depend on "
               "the decoder, so GRTD and the fused score move; LBTC (encoder stages) does not.\n")
    t2 = tables["table2"]
    header = ["init", "metric", *order, "all tuning avg", "held-out avg"]
    rows = []
    for init in t2:
        for metric in ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted"):
            e = t2[init][metric]
            rows.append([init, METRIC_LABELS[metric], *[f"{_f(e['tasks'][t])} ± {_f(e['seed_std'][t], 2)}" for t in order],
                         _f(e["all (tuning tasks)"]), _f(e["held-out"])])
    out.append(_md_table(header, rows))
    out.append("\nPaper (average over TPC, ACD, MSF, fused): " + ", ".join(f"{k} {v:.3f}" for k, v in PAPER_TABLE2.items()) + ".\n")
    if tables["n_decoders"]:
        out.append("GRTD averaged over several fresh decoders (`n_decoders`; default 1):\n")
        rows = []
        for d, per in tables["n_decoders"].items():
            for metric, e in per.items():
                rows.append([d, METRIC_LABELS[metric], _f(e["one"]["all (tuning tasks)"]), _f(e["averaged"]["all (tuning tasks)"]),
                             _f(e["one"]["held-out"]), _f(e["averaged"]["held-out"])])
        out.append(_md_table(["config", "metric", "1 decoder: tuning avg", "averaged: tuning avg", "1 decoder: held-out avg", "averaged: held-out avg"], rows))
        out.append("")

    out.append("## Table 3 — global vs local vs fused\n")
    rows = []
    for metric in ("grtd_contracted", "grtd_penalised", "lbtc", "fused_contracted", "fused_penalised"):
        r = t1[metric]
        rows.append([METRIC_LABELS[metric], *[_f(r["tasks"][t]) for t in order], _f(r["all (tuning tasks)"]), _f(r["held-out"])])
    out.append(_md_table(["metric", *[f"{t} (K={repro[t]['k']})" for t in order], "all tuning avg", "held-out avg"], rows))
    out.append("\nPaper (average over ISL, MSF, ACD, TPC): " + ", ".join(f"{k} {v:.3f}" for k, v in PAPER_TABLE3.items()) + ".\n")

    out.append("## GRTD variant: the default chosen by the tuning tasks\n")
    out.append(f"Rule: the variant whose fused score has the higher mean weighted τ on the {choice['basis']} ({', '.join(choice['tasks'])}). "
               f"Fused with penalised GRTD: {_f(choice['fused_penalised'])}; with contracted GRTD: {_f(choice['fused_contracted'])}. "
               f"**Chosen: `{choice['variant']}`.** The held-out tasks played no part.\n")

    out.append("## Label-permutation control\n")
    out.append(f"Every metric recomputed on the same features (decoder `{DEFAULT_DECODER}`) with shuffled labels: point labels permuted over "
               "all sample points, patch labels within each patch. Effect = mean over models of (true − shuffled) / between-model std "
               f"of the true values, averaged over tasks; a raw metric with effect < {LABEL_BLIND_EFFECT} is reported **label-blind**. "
               "τ shuffled: the ranking the shuffled-label values give, against the truth.\n")
    rows = []
    for metric in METRICS:
        p = tables["label_permutation"][metric]
        verdict = "—" if metric not in RAW_METRICS else ("**label-blind**" if p["label_blind"] else "moves")
        rows.append([METRIC_LABELS[metric], _f(p["mean_effect"], 2), _f(p["mean_frac_true_higher"], 2), _f(p["mean_tau_true"]),
                     _f(p["mean_tau_shuffled"]), verdict])
    out.append(_md_table(["metric", "effect (std units)", "share of models higher with true labels", "τ true labels", "τ shuffled labels", "verdict"], rows))
    out.append("")

    out.append("## Time per model\n")
    tm = tables["timing"]
    out.append("Seconds per model and task on this machine, one torch thread per process: TopoRank = load + sampling + extraction + "
               "GRTD (both variants) + LBTC; CCFV = load + sampling + extraction + CCFV; fine-tune = one seed's training + prediction.\n")
    rows = [[m, _f(tm[m]["toporank_s"], 2), _f(tm[m]["ccfv_s"], 2), _f(tm[m]["finetune_s"], 1)] for m in zoo]
    rows.append(["**mean**", _f(tm["mean"]["toporank_s"], 2), _f(tm["mean"]["ccfv_s"], 2), _f(tm["mean"]["finetune_s"], 1)])
    out.append(_md_table(["model", "TopoRank s", "CCFV s", "fine-tune s (per seed)"], rows))
    out.append("\nPaper (GPU, ResEnc-L, averages): " + ", ".join(f"{k} {v} s" for k, v in PAPER_TIME.items()) + ".\n")

    out.append("## Truth per task (held-out Dice, mean ± std over seeds)\n")
    rows = []
    for m in zoo:
        rows.append([m, *[f"{_f(tables['truth'][t][m]['mean'])} ± {_f(tables['truth'][t][m]['std'], 3)}" if m in tables["truth"][t] else "—" for t in order]])
    out.append(_md_table(["model", *order], rows))
    out.append("\nPlots: `plots/<metric>_vs_dice.png` (score against mean Dice, one panel per task).\n")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- plots
def plot_metric(results: Mapping[str, Any], tables: Mapping[str, Any], metric: str, path: Path) -> None:
    """Score of `metric` against mean held-out Dice (seed std as error bars), one panel per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = results["inputs"]
    tasks = list(inputs["tasks"])
    ncol = min(4, len(tasks))
    nrow = int(math.ceil(len(tasks) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax, t in zip(axes.ravel(), tasks):
        vals = _metric_values(results["scores"][t][DEFAULT_DECODER], inputs["tasks"][t]["k"]).get(metric, {})
        tr = tables["truth"][t]
        ms = [m for m in inputs["models"] if m in vals and m in tr]
        x = [vals[m] for m in ms]
        y = [tr[m]["mean"] for m in ms]
        err = [0.0 if not math.isfinite(tr[m]["std"]) else tr[m]["std"] for m in ms]
        ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2)
        for xi, yi, m in zip(x, y, ms):
            ax.annotate(m, (xi, yi), fontsize=6, xytext=(2, 2), textcoords="offset points")
        tau = tables["tau_by_decoder"][DEFAULT_DECODER][metric][t]
        flag = " (held out)" if inputs["tasks"][t]["held_out"] else ""
        ax.set_title(f"{t}{flag}: τw = {_f(tau)}", fontsize=9)
        ax.set_xlabel(METRIC_LABELS[metric], fontsize=8)
        ax.set_ylabel("held-out Dice", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(fig)


def write_report(results: dict[str, Any], out_dir: Path, machine: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write `results.json` (raw results + tables), `report.md` and `plots/` into `out_dir`.

    Everything is built from `results` as read back from its JSON (tuples as lists, keys sorted, NaN
    as None), so `run` and a later `report` from the committed file write the same bytes."""
    from bench.validation.run import _finite

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(json.dumps(_finite({k: v for k, v in results.items() if k != "tables"}), sort_keys=True))
    tables = build_tables(results)
    text = json.dumps(_finite({**results, "tables": tables}), indent=1, sort_keys=True) + "\n"
    (out_dir / "results.json").write_text(text)
    tables = json.loads(text)["tables"]  # rendered as read back, like every later reader of the file
    (out_dir / "report.md").write_text(render_markdown(results, tables, machine))
    choice = tables["default_variant"]["variant"]
    for stale in (out_dir / "plots").glob("*_vs_dice.png"):  # a plot's name can depend on the chosen variant
        stale.unlink()
    for metric in (f"fused_{choice}", "grtd_penalised", "lbtc", "ccfv"):
        plot_metric(results, tables, metric, out_dir / "plots" / f"{metric}_vs_dice.png")
    return tables


DOCS_BEGIN = "<!-- report:begin (written by `python -m bench.validation report --docs`; do not edit) -->"
DOCS_END = "<!-- report:end -->"


def computing_run(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The entry of `run.json` whose machine computed the numbers: the latest one while the report is
    partial (a `--no-compute` beside the computing run), else the one that computed the most records."""
    if not runs:
        return {}
    if runs[-1].get("partial"):
        return runs[-1]
    return max(runs, key=lambda r: (r.get("computed", 0), r.get("wall_seconds", 0)))


def docs_header(runs: Sequence[Mapping[str, Any]]) -> str:
    """The lines above the embedded report: the command, the machine, and how long the computing took."""
    if not runs:
        return ""
    cold = max(runs, key=lambda r: (r.get("computed", 0), r.get("wall_seconds", 0)))
    last = runs[-1]
    m = computing_run(runs).get("machine", {})
    git = last.get("git", {})
    where = f"at git {str(git.get('commit'))[:12]}{' with uncommitted changes' if git.get('dirty') else ''}"
    if not last.get("partial"):
        text = (f"Command: `{cold.get('command')}`; machine: {m.get('cpu')}, {m.get('cores')} cores. The run that computed "
                f"{cold.get('computed')} of {cold.get('records')} records took {cold.get('wall_seconds', 0) / 60:.1f} min "
                f"(zoo {cold.get('zoo_seconds', 0) / 60:.1f} min); the latest run ({last.get('computed')} computed, "
                f"{last.get('wall_seconds', 0) / 60:.1f} min) was {where}.")
    else:
        text = (f"Command: `{last.get('command')}`, a partial report written while the computing run was still going "
                f"({last.get('cached_before')} of {last.get('records')} records were cached); machine: {m.get('cpu')}, {m.get('cores')} cores; "
                f"{where}. The run's total wall time is not known yet: the per-record seconds are in the time table.")
    return text + "\n\n"


def embed_in_docs(report_md: str, docs_path: Path, header: str = "") -> None:
    """Replace the text between the report markers of `docs_path` with `header` + `report_md`
    (the report's own title is demoted one level so it sits under the page's heading)."""
    text = Path(docs_path).read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise ValueError(f"{docs_path} has no report markers ({DOCS_BEGIN!r} ... {DOCS_END!r})")
    body = "\n".join(("#" + line) if line.startswith("#") else line for line in report_md.splitlines())
    head, rest = text.split(DOCS_BEGIN, 1)
    _, tail = rest.split(DOCS_END, 1)
    Path(docs_path).write_text(f"{head}{DOCS_BEGIN}\n{header}{body}\n{DOCS_END}{tail}")
