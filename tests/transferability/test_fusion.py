"""Task-adaptive fusion (metrics.md §5): gate values, min-max guard, ranking and ties."""

from __future__ import annotations

import json
import math

import pytest

from transferability.fusion import DEFAULT_B, fuse, minmax, task_alpha


def test_default_b_is_ln_2_5() -> None:
    assert DEFAULT_B == math.log(2.5)


@pytest.mark.parametrize("k, spec_value, places", [(1, 0.004, 3), (2, 0.21, 2), (3, 0.75, 2)])
def test_alpha_matches_spec_table(k: int, spec_value: float, places: int) -> None:
    alpha = task_alpha(k)
    assert round(alpha, places) == spec_value
    assert alpha == pytest.approx(1.0 / (1.0 + math.exp(-6.0 * (math.log(k) - math.log(2.5)))), rel=1e-15)


def test_alpha_is_global_for_many_classes_and_monotone() -> None:
    assert task_alpha(5) > 0.98
    values = [task_alpha(k) for k in range(1, 20)]
    assert all(a < b for a, b in zip(values, values[1:]))
    assert task_alpha(1, a=6.0, b=0.0) == 0.5  # kappa = ln 1 = 0 = b


def test_fuse_exposes_alpha_and_kappa() -> None:
    res = fuse({"m1": (-0.2, 0.8), "m2": (-0.3, 0.9)}, num_foreground_classes=3)
    assert res.alpha == task_alpha(3)
    assert res.kappa == math.log(3)
    assert not res.alpha_pinned


def test_minmax_and_all_equal_guard() -> None:
    assert minmax({"a": 1.0, "b": 3.0, "c": 2.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert minmax({"a": 7.0, "b": 7.0}) == {"a": 0.5, "b": 0.5}
    assert minmax({"only": -1.0}) == {"only": 0.5}


def test_all_models_tied_rank_by_id() -> None:
    res = fuse({"zeta": (-0.1, 0.5), "alpha": (-0.1, 0.5), "mid": (-0.1, 0.5)}, 2)
    assert [m.model_id for m in res.models] == ["alpha", "mid", "zeta"]
    assert [m.rank for m in res.models] == [1, 2, 3]
    for m in res.models:
        assert m.grtd_norm == 0.5 and m.lbtc_norm == 0.5 and m.score == pytest.approx(0.5)


def test_fused_scores_and_order() -> None:
    scores = {"a": (-0.10, 0.60), "b": (-0.30, 0.90), "c": (-0.20, 0.70)}
    res = fuse(scores, num_foreground_classes=2)
    alpha = task_alpha(2)
    expected = {
        "a": alpha * 1.0 + (1 - alpha) * 0.0,
        "b": alpha * 0.0 + (1 - alpha) * 1.0,
        "c": alpha * 0.5 + (1 - alpha) * (0.1 / 0.3),
    }
    by_id = {m.model_id: m for m in res.models}
    for mid, s in expected.items():
        assert by_id[mid].score == pytest.approx(s, rel=1e-12)
        assert (by_id[mid].grtd, by_id[mid].lbtc) == scores[mid]
    assert [m.model_id for m in res.models] == sorted(expected, key=lambda m: -expected[m])
    assert [m.rank for m in res.models] == [1, 2, 3]


def test_pinned_alpha_selects_one_stream() -> None:
    scores = {"a": (-0.1, 0.2), "b": (-0.5, 0.9)}
    assert [m.model_id for m in fuse(scores, 1, alpha=1.0).models] == ["a", "b"]  # GRTD only
    assert [m.model_id for m in fuse(scores, 9, alpha=0.0).models] == ["b", "a"]  # LBTC only
    assert fuse(scores, 9, alpha=0.0).alpha_pinned
    # The gate follows K when not pinned: K = 1 is local (LBTC), K = 9 global (GRTD).
    assert fuse(scores, 1).models[0].model_id == "b"
    assert fuse(scores, 9).models[0].model_id == "a"


def test_ties_in_fused_score_break_by_model_id() -> None:
    # Mirror-image models: with alpha = 0.5 both fuse to exactly 0.5.
    res = fuse({"m2": (1.0, 0.0), "m1": (0.0, 1.0)}, 1, alpha=0.5)
    assert [m.model_id for m in res.models] == ["m1", "m2"]


def test_to_dict_is_json_friendly() -> None:
    res = fuse({"a": (-0.1, 0.6), "b": (-0.2, 0.7)}, 3)
    out = json.loads(json.dumps(res.to_dict()))
    assert out["alpha"] == res.alpha
    assert [m["model_id"] for m in out["models"]] == [m.model_id for m in res.models]
    assert set(out["models"][0]) == {"model_id", "grtd", "lbtc", "grtd_norm", "lbtc_norm", "score", "rank"}


@pytest.mark.parametrize(
    "scores, k, kwargs, msg",
    [
        ({}, 2, {}, "non-empty"),
        ({"a": (0.1, 0.2)}, 0, {}, "integer >= 1"),
        ({"a": (0.1, 0.2)}, 1.5, {}, "integer >= 1"),
        ({"a": (0.1, 0.2)}, True, {}, "integer >= 1"),
        ({"a": (float("nan"), 0.2)}, 2, {}, "NaN or inf"),
        ({"a": (0.1,)}, 2, {}, "pair"),
        ({"a": (0.1, 0.2)}, 2, {"alpha": 1.5}, r"\[0, 1\]"),
        ({"a": (0.1, 0.2)}, 2, {"a": float("inf")}, "finite"),
    ],
)
def test_validation(scores: dict, k: int, kwargs: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        fuse(scores, k, **kwargs)


def test_resolve_fusion_prefers_overrides_then_stored_then_defaults():
    import math

    from transferability.fusion import DEFAULT_A, DEFAULT_B, resolve_fusion

    assert resolve_fusion() == resolve_fusion(None) == resolve_fusion({})
    d = resolve_fusion()
    assert (d.alpha, d.a, d.b) == (None, DEFAULT_A, DEFAULT_B) and d.b == math.log(2.5)
    stored = {"a": 3.0, "b": None, "alpha": 0.25}
    s = resolve_fusion(stored)
    assert (s.alpha, s.a, s.b) == (0.25, 3.0, DEFAULT_B)  # a stored None means the default
    o = resolve_fusion(stored, alpha=0.0, a=1.0, b=0.5)
    assert (o.alpha, o.a, o.b) == (0.0, 1.0, 0.5)  # 0.0 is an override, not a missing value
    assert isinstance(resolve_fusion({"a": 2}).a, float)
