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
