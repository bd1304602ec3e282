"""Issue 12's acceptance run: the demo zoo on the demo pilot set, ranked, confirmed (top 2, a few
steps) and evaluated automatically, all through the HTTP API, on the embedded default and on
PostgreSQL + Redis. The zoo is `worker.demo_zoo.build_demo_zoo` with a short pretraining (the same
architecture, checkpoint layout and catalog entries as `toporank demo`, fewer steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from helpers_e2e import SMALL, poll, poll_confirmation

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:  # type: ignore[type-arg]
    from worker import demo_zoo

    root = tmp_path_factory.mktemp("demo")
    zoo = demo_zoo.build_demo_zoo(root / "zoo", seed=0, steps=3, batch=2, bank_size=2, budget_s=60)
    pilot = demo_zoo.build_demo_pilot_set(root / "pilot")
    archive = root / "pilot.zip"
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(pilot.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(pilot.parent))
    return {"zoo": zoo, "archive": archive}


def test_demo_zoo_ranked_confirmed_and_evaluated(stack, demo):  # type: ignore[no-untyped-def]
    c = stack.client()
    with open(demo["archive"], "rb") as fh:
        ps = c.post("/v1/pilot-sets", files={"archive": ("pilot.zip", fh)})
    assert ps.status_code == 201, ps.text
    ps = ps.json()
    assert ps["n_cases"] == 4 and ps["K"] == 2
    ids = []
    for entry, _spec, ckpt in demo["zoo"]:
        spec = {"name": entry, "format": "nnssl", "catalog": entry}
        r = c.post("/v1/models", params={"wait": 120},
                   files={"spec": (None, json.dumps(spec)), "checkpoint": ("checkpoint_final.pth", Path(ckpt).read_bytes())})
        assert r.status_code == 201 and r.json()["status"] == "ready", r.text
        ids.append(r.json()["id"])
    rid = c.post("/v1/rankings", json={"pilot_set_id": ps["id"], "model_ids": ids, "config": SMALL}).json()["id"]
    assert poll(c, rid, timeout=600)["status"] == "succeeded"
    order = [m["model_id"] for m in c.get("/v1/rank", params={"ranking_id": rid}).json()["models"]]

    r = c.post(f"/v1/rankings/{rid}/confirmations", json={"top_k": 2, "steps": 4})
    assert r.status_code == 202, r.text
    conf = r.json()
    assert conf["n_folds"] == 4 and conf["expected_cost"]["per_model"][order[0]]["seconds_per_model"] > 0  # demo ResEnc on CPU: measured
    done = poll_confirmation(c, rid, conf["id"], timeout=900)
    assert done["status"] == "succeeded", done
    assert [m["model_id"] for m in done["models"]] == order[:2] and done["predicted_top"] == order[0]
    for m in done["models"]:
        assert m["n_folds_done"] == 4 and 0.0 <= m["dice_mean"] <= 1.0 and math.isfinite(m["dice_std"])
        assert set(m["per_class"]) == {"1", "2"}
    assert isinstance(done["top1_confirmed"], bool) and done["best_model"] in order[:2]
    ev = done["evaluation"]
    assert ev is not None and ev["n_models"] == 2 and math.isfinite(ev["metrics"]["fused"]["weighted_tau"])
