"""The validation benchmark's `smoke` profile end to end: every table with finite numbers, and a
rerun from the cache that computes nothing and writes the same report byte for byte.

Not a quality threshold: the smoke zoo is pretrained for a few steps and fine-tuned for four.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from bench.validation.profiles import get_profile
from bench.validation.report import BASELINES, METRICS, RAW_METRICS
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


def test_smoke_produces_every_table_with_finite_numbers(smoke: dict) -> None:
    out = smoke["root"] / "out"
    data = json.loads((out / "results.json").read_text())
    tables = data["tables"]
    tasks = list(data["inputs"]["tasks"])
    assert len(tasks) == 3 and len(data["inputs"]["models"]) == 4
    assert any(data["inputs"]["tasks"][t]["held_out"] for t in tasks)
    for metric in METRICS:  # Table 1 (and Table 3, a subset of its rows)
        row = tables["table1"][metric]
        assert all(_finite(row["tasks"][t]) for t in tasks), (metric, row["tasks"])
        assert _finite(row["all (tuning tasks)"]) and _finite(row["held-out"]) and _finite(row["ID"]) and _finite(row["OOD"])
    for init in ("kaiming", "xavier", "gaussian"):  # Table 2
        for metric in ("fused_penalised", "fused_contracted", "grtd_penalised", "grtd_contracted"):
            assert all(_finite(v) for v in tables["table2"][init][metric]["tasks"].values())
    assert tables["n_decoders"]["kaiming-0-x2"]["grtd_penalised"]["averaged"]["all (tuning tasks)"] is not None
    for metric in RAW_METRICS:  # the label-permutation control of every raw metric
        p = tables["label_permutation"][metric]
        assert _finite(p["mean_effect"]) and _finite(p["mean_tau_shuffled"]), metric
        assert isinstance(p["label_blind"], bool)
    for t in tasks:  # truth reproducibility
        r = tables["reproducibility"][t]
        assert _finite(r["split_half_tau"]) and _finite(r["mean_seed_std"]) and isinstance(r["informative"], bool)
    for m, tm in tables["timing"].items():  # time comparison
        assert _finite(tm["toporank_s"]) and _finite(tm["ccfv_s"]) and _finite(tm["finetune_s"]), m
    assert tables["default_variant"]["variant"] in ("contracted", "penalised")
    report = (out / "report.md").read_text()
    for heading in ("## Headline", "## Truth reproducibility per task", "## Table 1", "## Table 2", "## Table 3",
                    "## Label-permutation control", "## Time per model", "## GRTD variant"):
        assert heading in report
    for b in BASELINES:
        assert b in data["tables"]["table1"]
    plots = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert len(plots) == 4 and all((out / "plots" / p).stat().st_size > 1000 for p in plots)


def test_every_record_carries_the_hashes_of_its_inputs(smoke: dict) -> None:
    data = json.loads((smoke["root"] / "out" / "results.json").read_text())
    models = data["inputs"]["models"]
    assert all(len(m["sha256"]) == 64 for m in models.values())
    for t, spec in data["inputs"]["tasks"].items():
        assert len(spec["spec_hash"]) == 64 and len(spec["cases_key"]) == 64
        for m, tr in data["truth"][t].items():
            assert len(tr["keys"]) == len(tr["dice"]) == 2
        for d, by_model in data["scores"][t].items():
            for m, e in by_model.items():
                assert len(e["key"]) == 64 and len(e["config_hash"]) == 64
    cache = smoke["root"] / "cache"
    rec = json.loads(next((cache / "finetune").rglob("*.json")).read_text())
    assert {"task", "model", "spec_hash", "cases_key", "checkpoint_sha256", "finetune_config", "finetune_code"} <= set(rec["inputs"])


def test_a_rerun_from_the_cache_computes_nothing_and_reproduces_the_report(smoke: dict) -> None:
    out = smoke["root"] / "out"
    before = {p: (out / p).read_bytes() for p in ("results.json", "report.md")}
    messages: list[str] = []
    run(get_profile("smoke"), out_dir=out, cache_dir=smoke["root"] / "cache", say=messages.append)
    assert any("0 to compute" in m for m in messages), messages
    runs = json.loads((out / "run.json").read_text())["runs"]
    assert len(runs) == 2 and runs[0]["computed"] == runs[0]["records"] and runs[-1]["computed"] == 0
    for p, content in before.items():
        assert (out / p).read_bytes() == content, p


def test_an_unseen_task_spec_runs_unchanged(smoke: dict, tmp_path: Path) -> None:
    """`--tasks FILE`: a spec the benchmark has never seen (a copy of a shipped one, renamed and
    reseeded) runs through the same code, reusing the cached zoo."""
    spec = json.loads((ROOT / "bench" / "validation" / "tasks" / "brain_mask.json").read_text())
    spec.update(name="new_brain", seed=987654, title="An unseen task")
    f = tmp_path / "new_brain.json"
    f.write_text(json.dumps(spec))
    results = run(get_profile("smoke"), task_files=[f], out_dir=tmp_path / "out", cache_dir=smoke["root"] / "cache", say=lambda m: None)
    assert list(results["inputs"]["tasks"]) == ["new_brain"]
    assert (tmp_path / "out" / "report.md").is_file()


def test_no_compute_reports_what_the_cache_holds_marked_partial(smoke: dict, tmp_path: Path) -> None:
    """`run --no-compute` on an unfinished cache: tasks missing a fine-tune or a default-decoder score
    are left out, other decoder configs are left out per task, nothing is computed, the report says so."""
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(smoke["root"] / "cache", cache)
    data = json.loads((smoke["root"] / "out" / "results.json").read_text())
    ft_key = data["truth"]["abdomen"]["random"]["keys"][0]
    sc_key = data["scores"]["brain_mask"]["xavier-0"]["random"]["key"]
    ft_file = cache / "finetune" / ft_key[:2] / f"{ft_key}.json"
    ft_file.unlink()
    (cache / "score" / sc_key[:2] / f"{sc_key}.json").unlink()
    out = tmp_path / "out"
    res = run(get_profile("smoke"), out_dir=out, cache_dir=cache, say=lambda m: None, compute=False)
    assert list(res["inputs"]["tasks"]) == ["brain_mask", "cardiac"]
    assert res["partial"]["tasks_left_out"] == ["abdomen"]
    assert res["partial"]["decoders_left_out"] == {"brain_mask": ["xavier-0"]}
    assert "xavier-0" not in res["scores"]["brain_mask"] and "xavier-0" in res["scores"]["cardiac"]
    assert not ft_file.exists()  # nothing was computed
    assert "Partial report" in (out / "report.md").read_text()
    last = json.loads((out / "run.json").read_text())["runs"][-1]
    assert last["computed"] == 0 and last["partial"] is True
    # the tables of the tasks that are there equal the full run's
    assert res["truth"]["cardiac"] == data["truth"]["cardiac"]

    for f in (cache / "finetune").rglob("*.json"):
        f.unlink()
    with pytest.raises(RuntimeError, match="nothing to report"):  # a fresh out dir: no records file to read back
        run(get_profile("smoke"), out_dir=tmp_path / "out2", cache_dir=cache, say=lambda m: None, compute=False)


def test_the_exported_records_let_an_empty_cache_reproduce_the_run(smoke: dict, tmp_path: Path) -> None:
    """A clone with the committed results folder and no cache: the records file fills the cache, so
    the run computes nothing and writes the same results and report."""
    import shutil

    src = smoke["root"] / "out"
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.json", "report.md", "records.jsonl.gz"):
        shutil.copy(src / name, out / name)
    cache = tmp_path / "cache"
    shutil.copytree(smoke["root"] / "cache" / "zoo", cache / "zoo")  # the same zoo bytes (rebuilt, it would match on this machine)
    messages: list[str] = []
    run(get_profile("smoke"), out_dir=out, cache_dir=cache, say=messages.append)
    assert any("0 to compute" in m for m in messages), messages
    last = json.loads((out / "run.json").read_text())["runs"][-1]
    assert last["computed"] == 0 and last["seeded_from_records_file"] == last["records"]
    for name in ("results.json", "report.md", "records.jsonl.gz"):
        assert (out / name).read_bytes() == (src / name).read_bytes(), name


def test_the_report_command_rewrites_the_runs_files_byte_for_byte(smoke: dict, tmp_path: Path) -> None:
    """`python -m bench.validation report results.json` on a copy of the run's folder writes the same
    results.json and report.md as the run did, naming the machine recorded in run.json, not this one."""
    import shutil

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
