"""Row factories for the tests: the fields a test cares about, plausible defaults for the rest."""

from __future__ import annotations

from typing import Any

from models_registry.tables import ModelScore


def score_row(
    pilot_set_id: str,
    model_id: str,
    config_hash: str,
    *,
    grtd: float = -0.1,
    lbtc: float = 0.9,
    config: dict[str, Any] | None = None,
    baselines: dict[str, Any] | None = None,
    **fields: Any,
) -> ModelScore:
    """A `ModelScore` as a worker would store it: `result` mirrors the scores unless given."""
    return ModelScore(
        pilot_set_id=pilot_set_id,
        model_id=model_id,
        config_hash=config_hash,
        numeric_mode=fields.pop("numeric_mode", "cpu-fp32"),
        config=config or {},
        grtd=grtd,
        lbtc=lbtc,
        baselines=baselines or {},
        result=fields.pop("result", {"grtd": grtd, "lbtc": lbtc}),
        timings=fields.pop("timings", {"total_s": 1.0}),
        checkpoint_sha256=fields.pop("checkpoint_sha256", "0" * 64),
        code_version=fields.pop("code_version", "1"),
        **fields,
    )



def tiny_world(api: Any, headers: dict[str, str], ctx: Any, checkpoints: list[Any], tmp_path: Any, n_cases: int) -> tuple[str, list[str]]:
    """Through the API: an `n_cases` pilot set (K = 2) and one model per tiny nnssl checkpoint, each
    validated by the worker's task body. Returns (pilot set id, model ids in checkpoint order)."""
    import json

    from tests.integration.ckpt_builder import SPEC
    from tests.utils.archives import nnunet_files, write_zip
    from worker.tasks import validate_model_impl

    with open(write_zip(tmp_path / "p.zip", nnunet_files(n_cases, k=2)), "rb") as fh:
        r = api.post("/v1/pilot-sets", headers=headers, files={"archive": ("p.zip", fh)})
    assert r.status_code == 201, r.text
    pilot_set = r.json()["id"]
    models = []
    for i, path in enumerate(checkpoints):
        r = api.post("/v1/models", headers=headers, files={"spec": (None, json.dumps({**SPEC, "name": f"tiny-{i}"})),
                                                            "checkpoint": ("checkpoint_final.pth", path.read_bytes())})
        assert r.status_code == 201, r.text
        models.append(r.json()["id"])
    assert [validate_model_impl(ctx, m) for m in models] == ["ready"] * len(models)
    return pilot_set, models
