"""Tables, plots and `report.md` of a benchmark run (protocol v2), from its raw results alone.

`build_tables(results)` is deterministic (every simulation is seeded), so a rerun from a full cache
writes byte-identical `results.json` and `report.md`. Every table is on the tuning tasks that were
admitted and scored; the held-out tasks show their truth only, until the method study's freeze is
committed. The paper's numbers are quoted beside ours, never mixed in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as sps

from bench.validation import stats
from bench.validation.analysis import (
    LABEL_BLIND_EFFECT,
    agreement,
    fused_scores,
    mean_finite,
    permutation_effect,
    split_half_tau,
    spread_to_noise,
    truth_summary,
)

BASELINES = ("logme", "leep", "nleep", "nce", "gbc", "hscore", "regularized_hscore", "transrate", "ccfv")
TOPO = ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted", "lbtc")
METRICS = TOPO + BASELINES
RAW_METRICS = ("grtd_penalised", "grtd_contracted", "lbtc") + BASELINES
DECODER_METRICS = ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted") + BASELINES
"""Scores read (in part) from the random decoder's stages; LBTC reads encoder stages only."""
DEFAULT_DECODER = "kaiming-0"
PRODUCT = "fused_penalised"
"""The product's default ranking today (metrics.md §5 with GRTD §3a); `fused_contracted` is the paper as written."""
ZOOS = ("realistic", "full")

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

METRIC_LABELS = {
    "fused_penalised": "Fused (GRTD penalised; product default)",
    "fused_contracted": "Fused (GRTD contracted; the paper as written)",
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


# ----------------------------------------------------------------------------- helpers
def metric_values(task_scores: Mapping[str, Any], k: int, models: Sequence[str]) -> dict[str, dict[str, float]]:
    """metric -> model -> value for one (task, decoder) over `models`, the fused scores computed
    relative to exactly those models (min-max over the zoo compared, metrics.md §5)."""
    rows = {m: e["metrics"] for m, e in task_scores.items() if m in models}
    out: dict[str, dict[str, float]] = {}
    for metric in RAW_METRICS:
        out[metric] = {m: r[metric] for m, r in rows.items() if r.get(metric) is not None}
    lbtc = out["lbtc"]
    for variant in ("penalised", "contracted"):
        g = out[f"grtd_{variant}"]
        both = [m for m in g if m in lbtc]
        out[f"fused_{variant}"] = fused_scores({m: g[m] for m in both}, {m: lbtc[m] for m in both}, k) if both else {}
    return out


def _shuffled_values(task_scores: Mapping[str, Any], k: int, models: Sequence[str]) -> dict[str, dict[str, float]]:
    """The same as `metric_values`, from the label-permuted recomputation of the control."""
    shuffled = {m: {"metrics": e["control"]["shuffled"]} for m, e in task_scores.items() if "control" in e}
    return metric_values(shuffled, k, models) if shuffled else {}


def _avg(tau_by_task: Mapping[str, float], names: Sequence[str]) -> float:
    return mean_finite([tau_by_task.get(t, float("nan")) for t in names])


def _ladders(models: Mapping[str, Any]) -> dict[str, list[str]]:
    """base -> [base, rungs by increasing re-initialised fraction]: the order known by construction."""
    out: dict[str, list[str]] = {}
    for m, info in models.items():
        if info.get("ladder_of"):
            out.setdefault(info["ladder_of"], []).append(m)
    return {b: [b, *sorted(rungs, key=lambda m: models[m]["reinit"])] for b, rungs in sorted(out.items()) if b in models}


def _rank_corr(a: Mapping[str, float], b: Mapping[str, float], models: Sequence[str], kind: str = "kendall") -> float:
    """Kendall τ-b (or Spearman ρ) between two model -> value maps over `models` (NaN below 3 models)."""
    ids = [m for m in models if m in a and m in b and math.isfinite(a[m]) and math.isfinite(b[m])]
    if len(ids) < 3:
        return float("nan")
    fn = sps.kendalltau if kind == "kendall" else sps.spearmanr
    r = fn([a[m] for m in ids], [b[m] for m in ids]).statistic
    return float(r) if np.isfinite(r) else float("nan")


def _dice_lists(entry: Mapping[str, Any], models: Sequence[str]) -> dict[str, list[float]]:
    return {m: [float("nan") if v is None else float(v) for v in entry[m]["dice"]] for m in models if m in entry}


# ----------------------------------------------------------------------------- tables
def task_truth_table(results: Mapping[str, Any], roster: Mapping[str, Any], realistic: Sequence[str], models: Sequence[str],
                     ladders: Mapping[str, list[str]]) -> dict[str, Any]:
    """Per task with a complete truth: both protocols' reproducibility, their agreement, the
    snapshots of the fine-tune run and whether the truth orders the ladders."""
    out: dict[str, Any] = {}
    for t, r in roster.items():
        if t not in results["truth"] or not results["truth"][t] or not r["seeds_final"]:
            continue
        dice = _dice_lists(results["truth"][t], models)
        if set(dice) != set(models) or any(len(v) != len(r["seeds"]) for v in dice.values()):
            continue  # not complete yet (a partial report)
        real = {m: dice[m] for m in realistic}
        means = {m: float(np.nanmean(v)) for m, v in dice.items()}
        row: dict[str, Any] = {
            "n_seeds": len(r["seeds"]),
            "split_half": split_half_tau(real),
            "split_half_full": split_half_tau(dice)["tau"],
            "spread_over_noise": spread_to_noise(real),
            "reliability": stats.truth_reliability(real),
            "mean_dice": {m: means[m] for m in models},
            "dice_range": [min(means.values()), max(means.values())],
        }
        fz = results.get("truth_frozen", {}).get(t, {})
        if fz and set(fz) >= set(models):
            fdice = _dice_lists(fz, models)
            fmeans = {m: float(np.nanmean(v)) for m, v in fdice.items()}
            row["frozen"] = {
                "mean_dice": fmeans,
                "split_half": split_half_tau({m: fdice[m] for m in realistic})["tau"],
                "reliability": stats.truth_reliability({m: fdice[m] for m in realistic}),
                "kendall_realistic": _rank_corr(means, fmeans, realistic),
                "kendall_full": _rank_corr(means, fmeans, models),
                "spearman_realistic": _rank_corr(means, fmeans, realistic, "spearman"),
            }
        snaps = results["truth"][t][models[0]].get("snapshots") or []
        if snaps and snaps[0]:
            n_snap = len(snaps[0])
            per = [{m: float(np.nanmean([s[i] if s[i] is not None else np.nan for s in results["truth"][t][m]["snapshots"]]))
                    for m in models} for i in range(n_snap)]
            row["snapshots"] = {
                "mean_dice": [float(np.mean(list(p.values()))) for p in per] + [float(np.mean(list(means.values())))],
                "kendall_to_final_realistic": [_rank_corr(p, means, realistic) for p in per],
            }
        row["ladders"] = {b: stats.ladder_check(means, lad) for b, lad in ladders.items()}
        out[t] = row
    return out


def build_tables(results: Mapping[str, Any]) -> dict[str, Any]:
    """Every table of the report, as JSON."""
    inputs = results["inputs"]
    models = list(inputs["models"])
    realistic = [m for m in models if inputs["models"][m].get("realistic", True)]
    ladders = _ladders(inputs["models"])
    roster = {r["task"]: r for r in results["roster"]}
    n_boot = int(results["profile"].get("n_boot", 2000))
    truth_tab = task_truth_table(results, roster, realistic, models, ladders)

    tuning = [t for t, r in roster.items() if r["group"] == "tuning" and (r["verdict"] or {}).get("admitted") and t in results["scores"]
              and DEFAULT_DECODER in results["scores"][t] and t in truth_tab]
    informative = [t for t in tuning if roster[t]["verdict"]["informative"]]
    held = [t for t, r in roster.items() if r["group"] == "held_out" and (r["verdict"] or {}).get("admitted")]
    held_scored = [t for t in held if t in results["scores"] and t in truth_tab]
    groups = {
        "tuning": tuning,
        "informative": informative,
        "ID": [t for t in tuning if inputs["tasks"][t]["regime"] == "ID"],
        "OOD": [t for t in tuning if inputs["tasks"][t]["regime"] == "OOD"],
        "held_out": held,
        "held_out_scored": held_scored,
    }
    scored = tuning + held_scored
    zoo_models = {"realistic": realistic, "full": models}
    truth_means = {z: {t: {m: truth_tab[t]["mean_dice"][m] for m in zoo_models[z]} for t in scored} for z in ZOOS}
    decoders = sorted({d for t in scored for d in results["scores"][t]})
    values = {z: {t: {d: metric_values(results["scores"][t][d], inputs["tasks"][t]["k"], zoo_models[z]) for d in results["scores"][t]}
                  for t in scored} for z in ZOOS}
    tau = {z: {d: {metric: {t: agreement(values[z][t][d].get(metric, {}), truth_means[z][t])["weighted_tau"]
                            for t in scored if d in values[z][t]} for metric in METRICS} for d in decoders} for z in ZOOS}

    # Table 1 and top-1 regret (default decoder)
    table1 = {z: {metric: {"tasks": dict(tau[z][DEFAULT_DECODER][metric]) if decoders else {},
                           **{g: _avg(tau[z][DEFAULT_DECODER][metric], names) if decoders else float("nan") for g, names in groups.items()}}
                  for metric in METRICS} for z in ZOOS}
    regret = {metric: {t: agreement(values["realistic"][t][DEFAULT_DECODER].get(metric, {}), truth_means["realistic"][t])["top1_regret"]
                       for t in scored} for metric in METRICS}

    # headline: intervals, permutation p-values, paired differences (realistic zoo; full zoo beside)
    def by_metric(z: str, names: Sequence[str]) -> dict[str, dict[str, dict[str, float]]]:
        return {metric: {t: values[z][t][DEFAULT_DECODER].get(metric, {}) for t in names} for metric in METRICS}

    headline: dict[str, Any] = {}
    for label, names in (("tuning", tuning), ("informative", informative)):
        if not names:
            headline[label] = None
            continue
        entry: dict[str, Any] = {}
        for z in ZOOS:
            sc = by_metric(z, names)
            tr = {t: truth_means[z][t] for t in names}
            boot = {m: {k: v for k, v in e.items() if k != "replicates"}
                    for m, e in stats.bootstrap_mean_tau(sc, tr, names, n_boot=n_boot, seed=11).items()}
            perm = stats.permutation_pvalue(sc, tr, names, draws=n_boot, seed=12)
            entry[z] = {"bootstrap": boot, "permutation": perm}
        sc = by_metric("realistic", names)
        tr = {t: truth_means["realistic"][t] for t in names}
        best = _best_baseline({b: entry["realistic"]["bootstrap"][b]["mean"] for b in BASELINES})
        pairs = [(metric, "lbtc") for metric in METRICS if metric != "lbtc"]
        if best is not None:
            pairs += [(metric, best) for metric in METRICS if metric != best]
        diffs = stats.paired_differences(sc, tr, names, pairs, n_boot=n_boot, seed=13)
        entry["best_baseline"] = best
        entry["paired"] = {f"{a}|{b}": v for (a, b), v in diffs.items()}
        ses = [v["se"] for v in diffs.values() if v["se"] is not None and math.isfinite(v["se"]) and v["se"] > 0]
        se_med = float(np.median(ses)) if ses else float("nan")
        entry["mdd"] = {"median_se_of_difference": se_med, "mdd": stats.minimum_detectable_difference(se_med) if ses else float("nan")}
        headline[label] = entry
    chance_sd = {"realistic": stats.chance_sd_single_task(len(realistic)), "full": stats.chance_sd_single_task(len(models))}

    # ladders: does each metric order each ladder (default decoder, full zoo values)
    ladder_metrics: dict[str, Any] = {}
    for metric in METRICS:
        per: dict[str, Any] = {}
        for b, lad in ladders.items():
            checks = {t: stats.ladder_check(values["full"][t][DEFAULT_DECODER].get(metric, {}), lad) for t in tuning}
            per[b] = {"tasks": checks, "mean_pairs_correct": mean_finite([c["frac_correct"] for c in checks.values()])}
        ladder_metrics[metric] = per

    # Table 2: decoder sweep, the encoder's share of each score's variance, GRTD averaged over the kaiming decoders
    inits = sorted({d.split("-")[0] for d in decoders})
    table2: dict[str, Any] = {"by_init": {}, "variance_share": {}, "averaged": {}}
    for init in inits:
        single = [d for d in decoders if d.startswith(init + "-") and "-x" not in d]
        table2["by_init"][init] = {"decoders": single, **{metric: {
            "tasks": {t: mean_finite([tau["realistic"][d][metric].get(t, math.nan) for d in single]) for t in tuning},
            "seed_std": {t: _std_finite([tau["realistic"][d][metric].get(t, math.nan) for d in single]) for t in tuning},
        } for metric in (*DECODER_METRICS, "lbtc")}}
        for metric in (*DECODER_METRICS, "lbtc"):
            e = table2["by_init"][init][metric]
            e["tuning"] = _avg(e["tasks"], tuning)
    sweep = [d for d in decoders if "-x" not in d]
    for metric in (*RAW_METRICS,):
        shares = {}
        for t in tuning:
            vals = {m: {d: values["full"][t][d][metric][m] for d in sweep if m in values["full"][t][d].get(metric, {})} for m in models}
            shares[t] = stats.variance_share(vals) if len(sweep) > 1 else None
        table2["variance_share"][metric] = {"tasks": shares, "mean_share": mean_finite([s["share"] for s in shares.values() if s])}
    kaiming = [d for d in sweep if d.startswith("kaiming-")]
    if len(kaiming) > 1:
        for z in ZOOS:
            avg_tau: dict[str, dict[str, float]] = {}
            for t in tuning:
                vals = {}
                for metric in ("grtd_penalised", "grtd_contracted", *BASELINES):
                    per_m = {m: [values[z][t][d][metric][m] for d in kaiming if m in values[z][t][d].get(metric, {})] for m in zoo_models[z]}
                    vals[metric] = {m: float(np.mean(v)) for m, v in per_m.items() if len(v) == len(kaiming)}
                lb = values[z][t][DEFAULT_DECODER]["lbtc"]
                k = inputs["tasks"][t]["k"]
                for variant in ("penalised", "contracted"):
                    g = vals[f"grtd_{variant}"]
                    both = [m for m in g if m in lb]
                    vals[f"fused_{variant}"] = fused_scores({m: g[m] for m in both}, {m: lb[m] for m in both}, k) if both else {}
                for metric, v in vals.items():
                    avg_tau.setdefault(metric, {})[t] = agreement(v, truth_means[z][t])["weighted_tau"]
            table2["averaged"][z] = {"decoders": kaiming, **{metric: {"tasks": v, "tuning": _avg(v, tuning),
                                                                      "one_decoder": table1[z][metric]["tuning"]} for metric, v in avg_tau.items()}}

    # label-permutation control (default decoder, full zoo)
    perm_ctl: dict[str, Any] = {}
    for metric in METRICS:
        effects, fracs, tau_shuf = {}, {}, {}
        for t in tuning:
            sv = _shuffled_values(results["scores"][t][DEFAULT_DECODER], inputs["tasks"][t]["k"], models)
            if not sv:
                continue
            tau_shuf[t] = agreement(sv.get(metric, {}), truth_means["full"][t])["weighted_tau"]
            if metric in RAW_METRICS:
                e = permutation_effect(values["full"][t][DEFAULT_DECODER][metric], sv[metric])
                effects[t] = e["effect"]
                fracs[t] = e["frac_true_higher"]
        mean_effect = mean_finite(list(effects.values())) if effects else float("nan")
        perm_ctl[metric] = {
            "effect": effects, "frac_true_higher": fracs, "mean_effect": mean_effect,
            "mean_frac_true_higher": mean_finite(list(fracs.values())) if fracs else float("nan"),
            "mean_tau_true": mean_finite([tau["full"][DEFAULT_DECODER][metric][t] for t in tau_shuf]) if decoders else float("nan"),
            "mean_tau_shuffled": mean_finite(list(tau_shuf.values())),
            "label_blind": bool(metric in RAW_METRICS and math.isfinite(mean_effect) and mean_effect < LABEL_BLIND_EFFECT),
        }

    # time per model
    timing: dict[str, Any] = {}
    for m in models:
        topo, ccfv, ft, fz = [], [], [], []
        for t in scored:
            e = results["scores"][t].get(DEFAULT_DECODER, {}).get(m)
            if e is not None:
                tm = e["timings"]
                shared = tm["load"] + tm.get("wait_sampling", 0.0) + tm["extract"]
                topo.append(shared + tm["grtd"] + tm["lbtc"])
                if "ccfv_only" in e:
                    ccfv.append(shared + e["ccfv_only"]["compute_s"])
        for t in truth_tab:
            tr = results["truth"][t].get(m)
            if tr is not None:
                ft.extend(s["total"] for s in tr["seconds"])
            fr = results.get("truth_frozen", {}).get(t, {}).get(m)
            if fr is not None:
                fz.extend(s["total"] for s in fr["seconds"])
        timing[m] = {"toporank_s": mean_finite(topo), "ccfv_s": mean_finite(ccfv), "finetune_s": mean_finite(ft), "frozen_s": mean_finite(fz)}
    timing["mean"] = {k: mean_finite([timing[m][k] for m in models]) for k in ("toporank_s", "ccfv_s", "finetune_s", "frozen_s")}

    return {
        "models": {"realistic": realistic, "full": models, "ladders": ladders},
        "groups": groups,
        "tasks": truth_tab,
        "headline": headline,
        "chance_sd_single_task": chance_sd,
        "table1": table1,
        "top1_regret": regret,
        "ladder_metrics": ladder_metrics,
        "table2": table2,
        "label_permutation": perm_ctl,
        "timing": timing,
        "tau_by_decoder": tau,
    }


def _best_baseline(means: Mapping[str, float]) -> str | None:
    finite = {b: v for b, v in means.items() if v is not None and math.isfinite(v)}
    return max(sorted(finite), key=lambda b: finite[b]) if finite else None


def _std_finite(values: Sequence[float]) -> float:
    """Population std of the finite values; NaN with fewer than two."""
    got = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.std(got)) if len(got) > 1 else math.nan


# ----------------------------------------------------------------------------- markdown
def _f(x: Any, nd: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}"


def _ci(e: Mapping[str, Any] | None, nd: int = 3) -> str:
    if not e:
        return "—"
    return f"{_f(e.get('mean', e.get('diff')), nd)} [{_f(e.get('lo'), 2)}, {_f(e.get('hi'), 2)}]"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _verdict(r: Mapping[str, Any]) -> str:
    v = r.get("verdict")
    if v is None:
        return "pending"
    if not v["admitted"]:
        return "**not admitted**: " + "; ".join(v["reasons"])
    return "admitted, informative" if v["informative"] else "admitted, not informative"


def render_markdown(results: Mapping[str, Any], tables: Mapping[str, Any], machine: Mapping[str, Any] | None = None) -> str:
    """`report.md`: the headline with intervals, the roster and admission, both truths, the ladders,
    Tables 1-3, the permutation control, timing and the truth itself."""
    inputs = results["inputs"]
    prof = results["profile"]
    roster = {r["task"]: r for r in results["roster"]}
    groups = tables["groups"]
    tuning, held = groups["tuning"], groups["held_out"]
    realistic, models = tables["models"]["realistic"], tables["models"]["full"]
    ladders = tables["models"]["ladders"]
    out: list[str] = []
    out.append(f"# Validation benchmark — profile `{prof['name']}`\n")
    out.append(f"Produced by `python -m bench.validation run --profile {prof['name']}` from the JSON in this folder "
               "(`results.json`); every number below is recomputed from it by `bench/validation/report.py`.\n")
    ladder_names = [m for m in models if m not in realistic]
    out.append(f"- **Zoo:** {len(models)} encoders (small ResEnc 8-16-32-64, nnssl checkpoints): the realistic zoo of {len(realistic)} "
               f"({', '.join(f'`{m}`' for m in realistic)}) and {len(ladder_names)} ladder rungs "
               f"({', '.join(f'`{m}`' for m in ladder_names) or 'none'}). τ is reported on the realistic zoo (headline) and on the full zoo.")
    out.append(f"- **Tasks:** {len(tuning)} admitted tuning tasks ({', '.join(f'`{t}`' for t in tuning) or 'none'}) and "
               f"{len(held)} admitted held-out tasks ({', '.join(f'`{t}`' for t in held) or 'none'}), sealed: "
               + ("scored after the freeze commit " + str(results.get("freeze", {}).get("commit")) if groups["held_out_scored"]
                  else "**truth only, no score exists**") + ".")
    seeds_note = ", ".join(str(s) for s in prof["seeds"])
    out.append(f"- **Truth:** held-out Dice on {prof.get('n_test') or 'the spec'} test cases after fine-tuning (`worker/finetune.py`, "
               f"protocol v2: {prof['finetune']}), seeds {seeds_note} and more by the seed rule; a second truth with the encoder frozen "
               f"({prof.get('frozen')}). Scores on the training cases (the pilot set) through `worker.pipeline.score_model`, decoder "
               f"`{DEFAULT_DECODER}` unless a table says otherwise.")
    if machine:
        out.append(f"- **Machine:** {machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}, torch {machine.get('torch')}"
                   + (f", GPU {machine['cuda']}" if machine.get("cuda") else "") + ".")
    codes = inputs["code"]
    out.append("- **Code versions:** " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())) + ".\n")
    partial = results.get("partial")
    if partial:
        out.append(f"> **Partial report.** The run has not finished: {partial['records_cached']} of {partial['records_total']} planned "
                   "records were cached when this was written (later rounds of the seed rule and reserves may add more). Truth incomplete: "
                   + (", ".join(f"`{t}`" for t in partial["tasks_truth_incomplete"]) or "none") + "; scores incomplete: "
                   + (", ".join(f"`{t}`" for t in partial["tasks_scores_incomplete"]) or "none")
                   + ". Every table below covers only what is complete.\n")

    out.append("## Headline\n")
    hl = tables["headline"].get("tuning")
    if not hl:
        out.append("No admitted tuning task has its scores yet.\n")
    else:
        boot_r, perm_r = hl["realistic"]["bootstrap"], hl["realistic"]["permutation"]
        boot_f = hl["full"]["bootstrap"]
        inf = tables["headline"].get("informative")
        best = hl["best_baseline"]
        out.append(f"Mean weighted Kendall's τ against the fine-tuning truth over the {len(tuning)} admitted tuning tasks, on the realistic "
                   f"zoo ({len(realistic)} models), with a 95 % interval from a two-level bootstrap (tasks and models resampled, "
                   f"{prof.get('n_boot', 2000)} replicates) and a one-sided permutation p-value against task-blind random orders. "
                   f"Δ: the paired difference of the mean τ with its 95 % interval (same replicates). Best baseline: the baseline with the "
                   f"highest mean here ({METRIC_LABELS.get(best, '—') if best else '—'}), chosen after the fact, so its Δ flatters it.\n")
        rows = []
        for metric in METRICS:
            pd = hl["paired"]
            rows.append([METRIC_LABELS[metric], _ci(boot_r[metric]), _f(perm_r[metric]["p"], 3),
                         _ci(inf["realistic"]["bootstrap"][metric]) if inf else "—", _ci(boot_f[metric]),
                         _ci(pd.get(f"{metric}|lbtc")) if metric != "lbtc" else "", _ci(pd.get(f"{metric}|{best}")) if best and metric != best else ""])
        out.append(_md_table(["metric", "mean τ, realistic zoo [95 % CI]", "p (perm.)", f"informative tasks ({len(groups['informative'])})",
                              "mean τ, full zoo [95 % CI]", "Δ vs LBTC", f"Δ vs best baseline ({best})"], rows))
        mdd = hl["mdd"]
        cs = tables["chance_sd_single_task"]
        out.append(f"\n**What this benchmark can detect.** The median bootstrap standard error of a paired difference of mean τ is "
                   f"{_f(mdd['median_se_of_difference'])}, so the smallest difference it detects (α = 0.05 two-sided, power 0.8) is about "
                   f"**{_f(mdd['mdd'], 2)}**. On one task, a random ordering of the {len(realistic)} realistic models has a τ with SD "
                   f"{_f(cs['realistic'], 2)} ({_f(cs['full'], 2)} with all {len(models)}).\n")

    out.append("## Tasks: admission, seeds and reproducibility of the truth\n")
    out.append("Every task considered, in the order the rules called them in (a failed primary task calls its group's next reserve). "
               "Admission and the seed rule were fixed before any truth (docs/validation.md, Protocol v2) and look at the truth only. "
               "Split-half τ, spread/noise and reliability are on the realistic zoo after the seed rule; reliability is that of the model "
               "means (one-way random effects, ICC(1,k)).\n")
    rows = []
    for t, r in roster.items():
        tt = tables["tasks"].get(t, {})
        v = r.get("verdict") or {}
        rel = (tt.get("reliability") or {}).get("icck")
        rows.append([f"`{t}`", r["group"].replace("_", "-") + (" (reserve)" if r["reserve"] else ""), str(inputs["tasks"][t]["k"]),
                     inputs["tasks"][t]["regime"], str(len(r["seeds"])), _f(v.get("random_dice")), _f(v.get("spread_over_noise"), 2),
                     _f(v.get("split_half_tau")), _f(rel), _verdict(r), f"`{r['replaces']}`" if r.get("replaces") else ""])
    out.append(_md_table(["task", "group", "K", "regime", "seeds", "random-init Dice", "spread/noise", "split-half τ", "reliability",
                          "verdict", "replaces"], rows))
    out.append("")

    out.append("## Two truths: fine-tuning and the frozen encoder\n")
    out.append("Fine-tune truth: the product's transfer recipe (encoder frozen for the first half, then at a tenth of the rate, SWA over the "
               "last quarter). Frozen truth: decoder and head trained alone on the frozen encoder, on seeds of its own. Agreement: Kendall "
               "τ-b between the two truths' model means. Snapshots: mean Dice over the zoo at 25 % and 50 % of the fine-tune run and at "
               "its end, and the τ-b of each snapshot's model ranking with the final one (50 % is the end of the frozen phase of the same "
               "run, so it is not an independent truth).\n")
    rows = []
    for t, tt in tables["tasks"].items():
        fz = tt.get("frozen") or {}
        sn = tt.get("snapshots") or {}
        rows.append([f"`{t}`", _f(tt["reliability"].get("icck")), _f((fz.get("reliability") or {}).get("icck")),
                     _f(fz.get("kendall_realistic")), _f(fz.get("kendall_full")),
                     _f(float(np.mean(list(tt["mean_dice"].values())))), _f(float(np.mean(list(fz["mean_dice"].values())))) if fz else "—",
                     " / ".join(_f(x) for x in sn.get("mean_dice", [])) or "—",
                     " / ".join(_f(x, 2) for x in sn.get("kendall_to_final_realistic", [])) or "—"])
    out.append(_md_table(["task", "reliability fine-tune", "reliability frozen", "τ-b agreement (realistic)", "τ-b agreement (full)",
                          "mean Dice fine-tune", "mean Dice frozen", "mean Dice at 25 / 50 / 100 %", "τ-b snapshot vs final (25 / 50 %)"], rows))
    out.append("")

    out.append("## Ladder check\n")
    out.append("Each ladder is a trained member with 25 / 50 / 75 % of every encoder layer's filters re-initialised: the order base > r25 > "
               "r50 > r75 holds by construction for the encoder, so a metric should reproduce it. Whether fine-tuning reproduces it is a "
               "property of the task (pretraining that does not help leaves the rungs tied). Fraction of the ladder's pairs ordered "
               "correctly (ties count half); truth on every task, metrics on the admitted tuning tasks (mean, default decoder).\n")
    if ladders:
        rows = []
        for t, tt in tables["tasks"].items():
            rows.append([f"`{t}` (truth)", *[_f(tt["ladders"][b]["frac_correct"], 2) for b in ladders]])
        for metric in METRICS:
            rows.append([METRIC_LABELS[metric], *[_f(tables["ladder_metrics"][metric][b]["mean_pairs_correct"], 2) for b in ladders]])
        out.append(_md_table(["", *[f"ladder of `{b}`" for b in ladders]], rows))
        out.append("")

    if tuning:
        for z, words in (("realistic", f"realistic zoo ({len(realistic)} models)"), ("full", f"full zoo ({len(models)} models)")):
            out.append(f"## Table 1 — weighted τ per tuning task and metric, {words}\n")
            out.append(f"Decoder `{DEFAULT_DECODER}`; the fused scores are min-max normalised over the zoo compared.\n")
            t1 = tables["table1"][z]
            header = ["metric", *[f"{t} (K={inputs['tasks'][t]['k']})" for t in tuning], "ID avg", "OOD avg", "tuning avg", "informative avg"]
            rows = [[METRIC_LABELS[m], *[_f(t1[m]["tasks"].get(t)) for t in tuning], _f(t1[m]["ID"]), _f(t1[m]["OOD"]), _f(t1[m]["tuning"]),
                     _f(t1[m]["informative"])] for m in METRICS]
            out.append(_md_table(header, rows))
            out.append("")
        out.append("The paper's Table 1 (OpenMind zoo of 7 ResEnc-L models, real data; quoted, not reproduced):\n")
        pt = PAPER_TABLE1
        out.append(_md_table(["method", *[f"{c} ({r})" for c, r in zip(pt["columns"], pt["regime"])]],
                             [[name, *[_f(v) for v in vals]] for name, vals in pt["rows"].items()]))
        out.append("\nTop-1 regret on the realistic zoo (best truth Dice minus the Dice of the model each metric ranks first; lower is better):\n")
        out.append(_md_table(["metric", *tuning], [[METRIC_LABELS[m], *[_f(tables["top1_regret"][m].get(t)) for t in tuning]] for m in METRICS]))
        out.append("")

        out.append("## Table 2 — the random decoder\n")
        t2 = tables["table2"]
        out.append("Mean weighted τ over the tuning tasks (realistic zoo) under each decoder initialisation (mean over its seeds), and the "
                   "encoder's share of each raw score's variance across the decoder sweep (random effects over models × decoder configs, "
                   "mean over tasks; 1 = the decoder does not matter, 0 = only the decoder does). LBTC reads encoder stages only.\n")
        inits = list(t2["by_init"])
        rows = []
        for metric in (*DECODER_METRICS, "lbtc"):
            share = t2["variance_share"].get(metric, {}).get("mean_share")
            rows.append([METRIC_LABELS[metric], *[_f(t2["by_init"][i][metric]["tuning"]) for i in inits], _f(share, 2) if metric in RAW_METRICS else "—"])
        out.append(_md_table(["metric", *[f"{i} ({len(t2['by_init'][i]['decoders'])} seeds)" for i in inits], "encoder share of variance"], rows))
        out.append("\nPaper (average over TPC, ACD, MSF, fused): " + ", ".join(f"{k} {v:.3f}" for k, v in PAPER_TABLE2.items()) + ".\n")
        if t2["averaged"]:
            avg = t2["averaged"]["realistic"]
            out.append(f"Scores averaged over the {len(avg['decoders'])} kaiming decoders ({', '.join(avg['decoders'])}) before ranking, "
                       "against one decoder (realistic zoo, tuning avg):\n")
            rows = [[METRIC_LABELS[m], _f(avg[m]["one_decoder"]), _f(avg[m]["tuning"])] for m in METRICS if m in avg]
            out.append(_md_table(["metric", "one decoder", "averaged"], rows))
            out.append("")

        out.append("## Table 3 — global vs local vs fused\n")
        t1 = tables["table1"]["realistic"]
        rows = [[METRIC_LABELS[m], *[_f(t1[m]["tasks"].get(t)) for t in tuning], _f(t1[m]["tuning"])]
                for m in ("grtd_contracted", "grtd_penalised", "lbtc", "fused_contracted", "fused_penalised")]
        out.append(_md_table(["metric", *[f"{t} (K={inputs['tasks'][t]['k']})" for t in tuning], "tuning avg"], rows))
        out.append("\nPaper (average over ISL, MSF, ACD, TPC): " + ", ".join(f"{k} {v:.3f}" for k, v in PAPER_TABLE3.items()) + ".\n")

        out.append("## Label-permutation control\n")
        out.append(f"Every metric recomputed on the same features (decoder `{DEFAULT_DECODER}`) with shuffled labels: point labels permuted "
                   "over all sample points, patch labels within each patch. Effect = mean over models of (true − shuffled) / between-model "
                   f"std of the true values, averaged over the tuning tasks (full zoo); a raw metric with effect < {LABEL_BLIND_EFFECT} is "
                   "reported **label-blind**.\n")
        rows = []
        for metric in METRICS:
            p = tables["label_permutation"][metric]
            verdict = "—" if metric not in RAW_METRICS else ("**label-blind**" if p["label_blind"] else "moves")
            rows.append([METRIC_LABELS[metric], _f(p["mean_effect"], 2), _f(p["mean_frac_true_higher"], 2), _f(p["mean_tau_true"]),
                         _f(p["mean_tau_shuffled"]), verdict])
        out.append(_md_table(["metric", "effect (std units)", "share of models higher with true labels", "τ true labels", "τ shuffled labels",
                              "verdict"], rows))
        out.append("")

    out.append("## Time per model\n")
    tm = tables["timing"]
    out.append("Seconds per model and task on the computing machine, one torch thread per process: TopoRank = load + sampling + "
               "extraction + GRTD (both variants) + LBTC; CCFV = load + sampling + extraction + CCFV; fine-tune = one seed's training "
               "and its three evaluations; frozen = one frozen-encoder run.\n")
    rows = [[m, _f(tm[m]["toporank_s"], 2), _f(tm[m]["ccfv_s"], 2), _f(tm[m]["finetune_s"], 1), _f(tm[m]["frozen_s"], 1)] for m in models]
    rows.append(["**mean**", _f(tm["mean"]["toporank_s"], 2), _f(tm["mean"]["ccfv_s"], 2), _f(tm["mean"]["finetune_s"], 1), _f(tm["mean"]["frozen_s"], 1)])
    out.append(_md_table(["model", "TopoRank s", "CCFV s", "fine-tune s (per seed)", "frozen s (per seed)"], rows))
    out.append("\nPaper (GPU, ResEnc-L, averages): " + ", ".join(f"{k} {v} s" for k, v in PAPER_TIME.items()) + ".\n")

    out.append("## Truth per task (held-out Dice, mean ± std over seeds; fine-tune truth)\n")
    tasks_done = list(tables["tasks"])
    rows = []
    for m in models:
        cells = []
        for t in tasks_done:
            d = _dice_lists(results["truth"][t], [m]).get(m, [])
            s = truth_summary({m: d})[m] if d else None
            cells.append(f"{_f(s['mean'])} ± {_f(s['std'])}" if s else "—")
        rows.append([m, *cells])
    out.append(_md_table(["model", *tasks_done], rows))
    out.append("\nPlots: `plots/<metric>_vs_dice.png` (score against mean Dice on the tuning tasks, one panel per task).\n")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- plots
def plot_metric(results: Mapping[str, Any], tables: Mapping[str, Any], metric: str, path: Path) -> None:
    """Score of `metric` against mean fine-tune Dice on the scored tuning tasks, one panel per task
    (ladder rungs hollow)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = results["inputs"]
    tasks = tables["groups"]["tuning"]
    models = tables["models"]["full"]
    realistic = set(tables["models"]["realistic"])
    ncol = min(4, max(1, len(tasks)))
    nrow = math.ceil(max(1, len(tasks)) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    for ax, t in zip(axes.ravel(), tasks):
        vals = metric_values(results["scores"][t][DEFAULT_DECODER], inputs["tasks"][t]["k"], models).get(metric, {})
        mean = tables["tasks"][t]["mean_dice"]
        for m in models:
            if m not in vals:
                continue
            ax.plot(vals[m], mean[m], "o", ms=4, mfc="C0" if m in realistic else "none", mec="C0")
            ax.annotate(m, (vals[m], mean[m]), fontsize=6, xytext=(2, 2), textcoords="offset points")
        tau = tables["table1"]["full"][metric]["tasks"].get(t)
        ax.set_title(f"{t}: τw = {_f(tau)} (full zoo)", fontsize=9)
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
    from bench.validation.run import json_safe

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = json.loads(json.dumps(json_safe({k: v for k, v in results.items() if k != "tables"}), sort_keys=True))
    tables = build_tables(results)
    text = json.dumps(json_safe({**results, "tables": tables}), indent=1, sort_keys=True) + "\n"
    (out_dir / "results.json").write_text(text)
    tables = json.loads(text)["tables"]  # rendered as read back, like every later reader of the file
    (out_dir / "report.md").write_text(render_markdown(results, tables, machine))
    for stale in (out_dir / "plots").glob("*_vs_dice.png"):
        stale.unlink()
    if tables["groups"]["tuning"]:
        for metric in (PRODUCT, "lbtc", "grtd_penalised", "ccfv"):
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
    computed = sum(int(r.get("computed", 0)) for r in runs)
    wall = sum(float(r.get("wall_seconds", 0)) for r in runs if r.get("computed"))
    last = runs[-1]
    m = computing_run(runs).get("machine", {})
    git = last.get("git", {})
    where = f"at git {str(git.get('commit'))[:12]}{' with uncommitted changes' if git.get('dirty') else ''}"
    state = "a partial report, written while the run was still going" if last.get("partial") else "the complete run"
    text = (f"Command: `{last.get('command')}`; {state}. Machine: {m.get('cpu')}, {m.get('cores')} cores. {computed} records were computed "
            f"over {sum(1 for r in runs if r.get('computed'))} invocation(s) taking {wall / 60:.1f} min of wall time in all; the latest "
            f"invocation ({last.get('computed')} computed) was {where}.")
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
