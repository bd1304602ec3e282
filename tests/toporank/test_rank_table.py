"""`toporank rank`'s table: intervals, P(rank 1) and the stability verdict when the ranking has them."""

from __future__ import annotations

import io

from toporank.rank_command import print_table

RANK = {
    "K": 2, "alpha": 0.21,
    "models": [
        {"rank": 1, "model_id": "a", "name": "alpha", "fused": 0.9, "grtd": -0.1, "lbtc": 0.8, "grtd_norm": 1.0, "lbtc_norm": 0.9},
        {"rank": 2, "model_id": "b", "name": "beta", "fused": 0.2, "grtd": -0.2, "lbtc": 0.7, "grtd_norm": 0.0, "lbtc_norm": 0.1},
    ],
}
JOB = {"items": [{"model_id": "a", "baselines": {"logme": 0.5}}, {"model_id": "b", "baselines": {}}]}


def _table(uncertainty):  # type: ignore[no-untyped-def]
    out = io.StringIO()
    print_table({**RANK, "uncertainty": uncertainty} if uncertainty is not None else RANK, JOB, out)
    return out.getvalue()


def test_intervals_and_a_stable_verdict():
    text = _table({
        "available": True, "n_cases": 8, "n_replicates_used": 200, "top_model": "a", "stable": True, "stable_threshold": 0.9,
        "models": {"a": {"fused_interval": [0.71, 1.0], "rank_interval": [1, 1], "p_rank1": 0.97},
                   "b": {"fused_interval": [0.0, 0.35], "rank_interval": [2, 2], "p_rank1": 0.03}},
    })
    assert "fused 95%" in text and "[0.710, 1.000]" in text and "0.97" in text
    assert "\nstable: the top model ranks first in 97% of 200 half-samples of the 8 pilot cases" in text


def test_an_unstable_verdict_and_no_uncertainty():
    text = _table({
        "available": True, "n_cases": 4, "n_replicates_used": 200, "top_model": "a", "stable": False, "stable_threshold": 0.9,
        "note": "only 6 distinct halves of 4 cases: the shares rest on few resamples",
        "models": {"a": {"fused_interval": [0.1, 1.0], "rank_interval": [1, 2], "p_rank1": 0.55},
                   "b": {"fused_interval": [0.0, 0.9], "rank_interval": [1, 2], "p_rank1": 0.45}},
    })
    assert "NOT stable: the top model ranks first in 55%" in text and "1-2" in text
    assert "note: only 6 distinct halves of 4 cases" in text
    text = _table({"available": False, "reason": "2 model(s) have no replicates: x"})
    assert "fused 95%" not in text and "no uncertainty: 2 model(s) have no replicates" in text
    assert "stable" not in _table(None)
