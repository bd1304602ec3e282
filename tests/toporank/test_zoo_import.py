"""`toporank zoo import DIR`: downloaded releases become shared models, once each, with the entry
their trainer says; what cannot be imported is skipped with its reason; every tenant lists them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.storage import Storage
from models_registry.tables import Model
from tests.utils.api import api, dispatcher, keys, sessions, settings  # noqa: F401 - fixtures
from tests.utils.archives import nnunet_files, write_zip
from tests.utils.nnssl_layouts import trainer_checkpoint, write_hub_release
from tests.worker.ckpt_factory import build_dna_network, nnssl_plan, serialised_kwargs
from toporank.zoo import format_table, import_zoo

KW = serialised_kwargs()


def _downloads(root: Path) -> Path:
    """A folder as a hospital would fill it: three releases (one of them Primus), an unknown trainer, a
    plan that contradicts its trainer, an empty folder. The weights are toy-sized under a `ResEncL` plan:
    importing reads the trainer and the plan only (loading is the worker's validation, tested in
    tests/worker/test_nnssl_layouts.py)."""
    net = build_dna_network("ResidualEncoderUNet", KW)
    resencl = nnssl_plan("ResEncL", None)
    write_hub_release(root / "ResEncL-OpenMind-MAE", net, resencl, "BaseMAETrainer")
    run = root / "VoCoTrainer__nnsslPlans__onemmiso"  # raw trainer output: the plan (no trainer name) one folder up
    (run / "fold_all").mkdir(parents=True)
    (run / "adaptation_plan.json").write_text(json.dumps(resencl))
    torch.save(trainer_checkpoint(build_dna_network("ResidualEncoderUNet", KW, seed=1), resencl, "VoCoTrainer"),
               run / "fold_all" / "checkpoint_final.pth")
    write_hub_release(root / "odd-mae", build_dna_network("ResidualEncoderUNet", KW, seed=3), nnssl_plan(kwargs=KW), "BaseMAETrainer")
    write_hub_release(root / "PrimusM-OpenMind-SimMIM", net, dict(nnssl_plan(kwargs=KW), architecture_plans={"arch_class_name": "PrimusM"}),
                      "SimMIMEvaTrainer")
    write_hub_release(root / "homegrown", build_dna_network("ResidualEncoderUNet", KW, seed=2), nnssl_plan(kwargs=KW), "MyTrainer")
    (root / "empty").mkdir()
    return root


def test_import_registers_each_release_once_as_a_shared_model(tmp_path, api, settings, keys):  # noqa: F811
    folder = _downloads(tmp_path / "downloads")
    sessions = api.app.state.ctx.sessions
    storage = Storage(settings.storage_root)
    queued: list[str] = []
    rows = {r.name: r for r in import_zoo(folder, sessions, storage, queued.append)}
    assert rows["ResEncL-OpenMind-MAE"].entry == "openmind-resencl-mae" and rows["ResEncL-OpenMind-MAE"].ok
    assert rows["VoCoTrainer__nnsslPlans__onemmiso"].entry == "openmind-resencl-voco"
    assert rows["PrimusM-OpenMind-SimMIM"].entry == "openmind-primusm-simmim" and rows["PrimusM-OpenMind-SimMIM"].ok
    assert "MyTrainer matches no catalog entry" in rows["homegrown"].status
    assert "no checkpoint_final.pth" in rows["empty"].status
    assert "the plan says ResidualEncoderUNet" in rows["odd-mae"].status and rows["odd-mae"].entry is None
    imported = [rows[n].model_id for n in ("PrimusM-OpenMind-SimMIM", "ResEncL-OpenMind-MAE", "VoCoTrainer__nnsslPlans__onemmiso")]
    assert queued == imported
    with sessions() as s:
        models = {m.id: m for m in s.query(Model).all()}
    assert set(models) == set(imported)
    for mid in imported:
        m = models[mid]
        assert m.tenant_id is None and m.status == "validating" and len(m.sha256) == 64
        stored = storage.resolve(m.checkpoint_path)
        assert stored.is_file() and (stored.parent / "adaptation_plan.json").is_file()
    assert models[imported[1]].spec["catalog"] == "openmind-resencl-mae" and models[imported[1]].spec["stages"]

    again = {r.name: r for r in import_zoo(folder, sessions, storage, queued.append)}
    assert again["ResEncL-OpenMind-MAE"].status.startswith("already imported") and again["ResEncL-OpenMind-MAE"].model_id == imported[1]
    assert queued == imported  # nothing queued twice
    with sessions() as s:
        assert s.query(Model).count() == 3
    table = format_table(again.values())
    assert table.splitlines()[0].split() == ["name", "entry", "sha256", "status"] and len(table.splitlines()) == 7

    for tenant in ("a", "b"):  # every tenant sees the shared zoo, can filter it, cannot delete it
        h = {"X-API-Key": keys[tenant]}
        shared = api.get("/v1/models", params={"shared": "true"}, headers=h).json()["models"]
        assert sorted(m["id"] for m in shared) == sorted(imported) and all(m["shared"] for m in shared)
        assert api.get("/v1/models", params={"shared": "false"}, headers=h).json()["models"] == []
        assert len(api.get("/v1/models", headers=h).json()["models"]) == 3
        r = api.delete(f"/v1/models/{imported[0]}", headers=h)
        assert r.status_code == 403 and r.json()["code"] == "shared_model_readonly"
        with open(write_zip(tmp_path / f"{tenant}.zip", nnunet_files(1)), "rb") as fh:
            ps = api.post("/v1/pilot-sets", headers=h, files={"archive": ("p.zip", fh)}).json()
        started = api.post("/v1/rankings", headers=h, json={"pilot_set_id": ps["id"], "model_ids": imported})
        assert started.status_code == 202 and len(started.json()["items"]) == 3  # the shared zoo is rankable by all


def _cli(args, data_dir):  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOPORANK_")}
    env["TOPORANK_DATA_DIR"] = str(data_dir)
    return subprocess.run([sys.executable, "-m", "toporank.cli", *args], env=env, capture_output=True, text=True, timeout=180)


def test_the_command_prints_a_table_and_a_rerun_is_a_no_op(tmp_path):
    folder = _downloads(tmp_path / "downloads")
    first = _cli(["zoo", "import", str(folder)], tmp_path / "data")
    assert first.returncode == 1, first.stderr  # some folders were skipped: scripts must see it
    lines = first.stdout.splitlines()
    assert lines[0].split() == ["name", "entry", "sha256", "status"] and "Traceback" not in first.stderr
    assert any(line.startswith("ResEncL-OpenMind-MAE") and "openmind-resencl-mae" in line and "imported, validating" in line for line in lines)
    second = _cli(["zoo", "import", str(folder)], tmp_path / "data")
    assert sum("already imported" in line for line in second.stdout.splitlines()) == 3
    missing = _cli(["zoo", "import", str(tmp_path / "nope")], tmp_path / "data")
    assert missing.returncode == 1 and "is not a folder" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("layout", ["fold_0_and_fold_1", "fold_all_wins"])
def test_several_folds_need_a_fold_all(tmp_path, layout):
    from toporank.zoo import find_checkpoint

    sub = tmp_path / "m"
    for fold in ("fold_0", "fold_1") + (("fold_all",) if layout == "fold_all_wins" else ()):
        (sub / fold).mkdir(parents=True)
        (sub / fold / "checkpoint_final.pth").write_bytes(b"x")
    found = find_checkpoint(sub)
    if layout == "fold_all_wins":
        assert found == sub / "fold_all" / "checkpoint_final.pth"
    else:
        assert isinstance(found, str) and "no fold_all" in found
