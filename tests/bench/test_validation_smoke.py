"""The validation benchmark's `smoke` profile end to end (protocol v2 at toy size): the roster with
the seed rule, admission and both truths; the sealed held-out task with truth and no score; every
table with finite numbers; a rerun from the cache, or from the exported records alone, that computes
nothing and writes the same files byte for byte; an unseen task spec; an honest partial report.

Not a quality threshold: the smoke zoo is pretrained for a few steps and fine-tuned for four.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from bench.validation.profiles import get_profile
from bench.validation.report import METRICS, RAW_METRICS
from bench.validation.run import run

pytestmark = pytest.mark.slow


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("smoke")
    messages: list[str] = []
    results = run(get_profile("smoke"), out_dir=root / "out", cache_dir=root / "cache", say=messages.append)
    return {"root": root, "results": results, "messages": messages}


def test_roster_truths_and_the_seal(smoke: dict) -> None:
    data = json.loads((smoke["root"] / "out" / "results.json").read_text())
    roster = {r["task"]: r for r in data["roster"]}
    assert list(roster) == ["hemisphere_mask", "cardiac_cavities", "anterior_mask"]
    assert roster["anterior_mask"]["group"] == "held_out" and roster["anterior_mask"]["sealed"]
    for t, r in roster.items():
        assert r["seeds"] == [0, 1, 2] and r["seeds_final"]  # the smoke seed rule always adds its stage
        assert r["seed_decisions"][0]["add"] == [2]
        assert r["verdict"]["admitted"] and _finite(r["verdict"]["random_dice"])
        for e in data["truth"][t].values():
            assert len(e["dice"]) == 3 and all(len(s) == 2 for s in e["snapshots"])  # 25 % and 50 % of the run
        assert all(len(e["dice"]) == 2 for e in data["truth_frozen"][t].values())  # frozen seeds 100, 101
    # the sealed task has its truth and no score anywhere
    assert "anterior_mask" not in data["scores"] and not roster["anterior_mask"]["scored"]
    assert set(data["scores"]) == {"hemisphere_mask", "cardiac_cavities"}
    # the method study's extra scoring pass (smoke: E3 only), on the tuning tasks only
    assert set(data["pass_scores"]) == {"hemisphere_mask", "cardiac_cavities"}
    assert all(set(p) == {"E3"} and len(p["E3"]) == 5 for p in data["pass_scores"].values())
    assert data["freeze"]["committed"] is False
    import gzip

    with gzip.open(smoke["root"] / "out" / "records.jsonl.gz", "rt") as fh:
        lines = [json.loads(x) for x in fh]
    assert not [x for x in lines if x["kind"] == "score" and x["record"]["inputs"]["task"] == "anterior_mask"]
    assert {x["record"]["inputs"]["device"] for x in lines} == {"cpu"}  # records are keyed by device


def test_every_table_has_finite_numbers(smoke: dict) -> None:
    out = smoke["root"] / "out"
    data = json.loads((out / "results.json").read_text())
    tables = data["tables"]
    tuning = tables["groups"]["tuning"]
    assert tuning == ["hemisphere_mask", "cardiac_cavities"] and tables["groups"]["held_out"] == ["anterior_mask"]
    assert len(tables["models"]["full"]) == 5 and len(tables["models"]["realistic"]) == 4
    assert tables["models"]["ladders"] == {"sup-tissue": ["sup-tissue", "sup-tissue-r50"]}
    hl = tables["headline"]["tuning"]
    for metric in METRICS:
        for z in ("realistic", "full"):
            b = hl[z]["bootstrap"][metric]
            assert _finite(b["mean"]) and _finite(b["lo"]) and _finite(b["hi"]) and b["lo"] <= b["hi"], (metric, z)
            assert 0 < hl[z]["permutation"][metric]["p"] <= 1
            assert all(_finite(tables["table1"][z][metric]["tasks"][t]) for t in tuning), metric
    assert hl["best_baseline"] in ("logme", "leep", "nleep", "nce", "gbc", "hscore", "regularized_hscore", "transrate", "ccfv")
    assert all(_finite(v["diff"]) for v in hl["paired"].values()) and _finite(hl["mdd"]["mdd"])
    for row in tables["tasks"].values():  # every task's truth, held-out included
        assert _finite(row["split_half"]["tau"]) and 0 <= row["reliability"]["icck"] <= 1
        assert _finite(row["frozen"]["kendall_full"]) and len(row["snapshots"]["mean_dice"]) == 3
        assert set(row["ladders"]) == {"sup-tissue"}
    for metric in RAW_METRICS:  # the label-permutation control and the decoder sweep of every raw metric
        p = tables["label_permutation"][metric]
        assert _finite(p["mean_effect"]) and isinstance(p["label_blind"], bool), metric
        assert _finite(tables["table2"]["variance_share"][metric]["mean_share"]), metric
    assert tables["table2"]["variance_share"]["lbtc"]["mean_share"] == pytest.approx(1.0)  # encoder stages only
    assert set(tables["table2"]["by_init"]) == {"kaiming", "xavier", "gaussian"}
    for m, tm in tables["timing"].items():
        assert _finite(tm["toporank_s"]) and _finite(tm["finetune_s"]) and _finite(tm["frozen_s"]), m
    report = (out / "report.md").read_text()
    for heading in ("## Headline", "## Tasks: admission", "## Two truths", "## Ladder check", "## Table 1", "## Table 2",
                    "## Table 3", "## Label-permutation control", "## Time per model", "## Truth per task"):
        assert heading in report
    assert "truth only, no score exists" in report
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(plots) == 4 and all((out / "plots" / p).stat().st_size > 1000 for p in plots)


def test_a_rerun_from_the_cache_computes_nothing_and_reproduces_the_report(smoke: dict) -> None:
    out = smoke["root"] / "out"
    before = {p: (out / p).read_bytes() for p in ("results.json", "report.md", "records.jsonl.gz")}
    messages: list[str] = []
    run(get_profile("smoke"), out_dir=out, cache_dir=smoke["root"] / "cache", say=messages.append)
    assert not any("to compute with" in m for m in messages), messages
    runs = json.loads((out / "run.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["computed"] == runs[0]["records"] and runs[-1]["computed"] == 0
    for p, content in before.items():
        assert (out / p).read_bytes() == content, p


def test_the_exported_records_let_an_empty_cache_reproduce_the_run(smoke: dict, tmp_path: Path) -> None:
    """A clone with the committed results folder and no cache: the records file fills the cache, so
    the run computes nothing and writes the same results and report."""
    src = smoke["root"] / "out"
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.json", "report.md", "records.jsonl.gz"):
        shutil.copy(src / name, out / name)
    cache = tmp_path / "cache"
    shutil.copytree(smoke["root"] / "cache" / "zoo", cache / "zoo")  # the same zoo bytes (v2 commits its zoo)
    messages: list[str] = []
    run(get_profile("smoke"), out_dir=out, cache_dir=cache, say=messages.append)
    assert not any("to compute with" in m for m in messages), messages
    last = json.loads((out / "run.json").read_text())["runs"][-1]
    assert last["computed"] == 0 and last["seeded_from_records_file"] == last["records"]
    for name in ("results.json", "report.md", "records.jsonl.gz"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name


def test_no_compute_reports_what_the_cache_holds_marked_partial(smoke: dict, tmp_path: Path) -> None:
    """`run --no-compute` on an unfinished cache: a task missing a truth record has no verdict and no
    scores, nothing is computed, and the report says what is missing."""
    cache = tmp_path / "cache"
    shutil.copytree(smoke["root"] / "cache", cache)
    data = json.loads((smoke["root"] / "out" / "results.json").read_text())
    ft_key = data["truth"]["cardiac_cavities"]["random-a"]["keys"][0]
    ft_file = cache / "finetune" / ft_key[:2] / f"{ft_key}.json"
    ft_file.unlink()
    out = tmp_path / "out"
    res = run(get_profile("smoke"), out_dir=out, cache_dir=cache, say=lambda m: None, compute=False)
    roster = {r["task"]: r for r in res["roster"]}
    assert roster["cardiac_cavities"]["verdict"] is None and "cardiac_cavities" not in res["scores"]
    assert res["partial"]["tasks_truth_incomplete"] == ["cardiac_cavities"]
    assert not ft_file.exists()  # nothing was computed
    assert "Partial report" in (out / "report.md").read_text()
    assert json.loads((out / "run.json").read_text())["runs"][-1]["partial"] is True
    assert res["truth"]["hemisphere_mask"] == data["truth"]["hemisphere_mask"]


def test_an_unseen_task_spec_runs_unchanged_and_a_sealed_one_stays_sealed(smoke: dict, tmp_path: Path) -> None:
    """`--tasks FILE`: a spec the benchmark has never seen runs through the same code and is scored;
    a sealed held-out spec passed the same way under another name gets its truth and no score."""
    spec = json.loads((ROOT / "bench" / "validation" / "tasks" / "hemisphere_mask.json").read_text())
    spec.update(name="new_mask", seed=987654, title="An unseen task")
    f = tmp_path / "new_mask.json"
    f.write_text(json.dumps(spec))
    sealed = json.loads((ROOT / "bench" / "validation" / "tasks" / "held_out" / "anterior_mask.json").read_text())
    sealed.update(name="renamed")
    g = tmp_path / "renamed.json"
    g.write_text(json.dumps(sealed))
    results = run(get_profile("smoke"), task_files=[f, g], out_dir=tmp_path / "out", cache_dir=smoke["root"] / "cache", say=lambda m: None)
    assert [r["task"] for r in results["roster"]] == ["new_mask", "renamed"]
    assert "new_mask" in results["scores"] and "renamed" not in results["scores"]
    assert {r["task"]: r["sealed"] for r in results["roster"]} == {"new_mask": False, "renamed": True}
    assert (tmp_path / "out" / "report.md").is_file()


def test_the_report_command_rewrites_the_runs_files_byte_for_byte(smoke: dict, tmp_path: Path) -> None:
    """`python -m bench.validation report results.json` on a copy of the run's folder writes the same
    results.json and report.md as the run did, naming the machine recorded in run.json, not this one."""
    from bench.validation.__main__ import main

    src = smoke["root"] / "out"
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.json", "report.md", "run.json"):
        shutil.copy(src / name, out / name)
    log = json.loads((out / "run.json").read_text())
    here = log["runs"][0]["machine"]["cpu"]
    for entry in log["runs"]:
        entry["machine"] = {**entry["machine"], "cpu": "Recorded CPU 9000"}
    (out / "run.json").write_text(json.dumps(log))
    assert main(["report", str(out / "results.json")]) == 0
    assert (out / "results.json").read_bytes() == (src / "results.json").read_bytes()
    original = (src / "report.md").read_text()
    assert f"**Machine:** {here}," in original
    assert (out / "report.md").read_text() == original.replace(f"**Machine:** {here},", "**Machine:** Recorded CPU 9000,")
