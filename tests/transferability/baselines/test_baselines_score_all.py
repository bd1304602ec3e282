"""score_all: every baseline from one model's shared samples, omissions explained."""

from __future__ import annotations

import numpy as np
import pytest

from baselines_data import class_gaussians
from transferability.baselines import (
    BASELINE_NAMES,
    ccfv,
    gbc,
    hscore,
    logme,
    nce,
    nleep,
    regularized_hscore,
    score_all,
    score_all_with_diagnostics,
    transrate,
)
from transferability.baselines.leep import gmm_posteriors


def _model_samples(seed: int = 0, n: int = 480, d: int = 12, n_cases: int = 4):
    feats, labels = class_gaussians(n, d, 3, seed, separation=2.0)
    case_ids = np.arange(n) % n_cases
    return feats, labels, case_ids


def test_every_baseline_equals_its_function() -> None:
    feats, labels, case_ids = _model_samples()
    scores, diag = score_all_with_diagnostics(feats, labels, case_ids, seed=2)
    assert list(scores) == list(BASELINE_NAMES)
    assert diag["omitted"] == {}
    assert scores["logme"] == logme(feats, labels)
    assert scores["gbc"] == gbc(feats, labels)
    assert scores["hscore"] == hscore(feats, labels)
    assert scores["regularized_hscore"] == regularized_hscore(feats, labels)
    assert scores["transrate"] == transrate(feats, labels)
    assert scores["nleep"] == nleep(feats, labels, seed=2)
    assert scores["leep"] == scores["nleep"]
    source = np.argmax(gmm_posteriors(feats, 3, seed=2), axis=1)
    assert scores["nce"] == nce(source, labels)
    cases = [{"features": (feats[case_ids == m], labels[case_ids == m])} for m in range(4)]
    assert scores["ccfv"] == pytest.approx(ccfv(cases), rel=1e-12)
    assert "gmm" in diag["source"]
    assert diag["nleep_gmm"]["n_components"] == 15 and diag["nleep_gmm"]["pca_dims"] >= 1


def test_stage_features_feed_ccfv_only() -> None:
    feats, labels, case_ids = _model_samples(1)
    other, _ = class_gaussians(480, 5, 3, 9)
    stages = {"enc4": feats, "dec1": other}
    scores, diag = score_all_with_diagnostics(feats, labels, case_ids, stage_features=stages)
    cases = [{k: (v[case_ids == m], labels[case_ids == m]) for k, v in stages.items()} for m in range(4)]
    assert scores["ccfv"] == pytest.approx(ccfv(cases), rel=1e-12)
    assert set(diag["ccfv_per_stage"]) == {"enc4", "dec1"}
    assert scores["logme"] == score_all(feats, labels, case_ids)["logme"]


def test_source_head_predictions_are_used_when_given() -> None:
    feats, labels, case_ids = _model_samples(2)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=labels.size)
    scores, diag = score_all_with_diagnostics(feats, labels, case_ids, source_probs=probs)
    assert diag["source"] == "source_probs"
    assert scores["leep"] != scores["nleep"]
    assert scores["nce"] == nce(np.argmax(probs, axis=1), labels)


def test_undefined_metrics_are_omitted_with_a_reason() -> None:
    feats, labels, _ = _model_samples(3)
    scores, diag = score_all_with_diagnostics(feats, labels)  # no case ids
    assert "ccfv" not in scores and "case_ids" in diag["omitted"]["ccfv"]
    scores, diag = score_all_with_diagnostics(feats, labels, np.zeros(labels.size, int))
    assert "ccfv" not in scores and "at least 2 cases" in diag["omitted"]["ccfv"]
    small_f, small_y = feats[:12], labels[:12]  # fewer samples than 15 mixture components
    scores, diag = score_all_with_diagnostics(small_f, small_y)
    assert {"nleep", "leep", "nce"}.isdisjoint(scores)
    assert "15 mixture components" in diag["omitted"]["nleep"]
    assert {"logme", "gbc", "hscore", "regularized_hscore", "transrate"} <= set(scores)
    assert all(np.isfinite(v) for v in scores.values())


def test_invalid_input_raises() -> None:
    feats, labels, case_ids = _model_samples(4)
    bad = feats.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        score_all(bad, labels, case_ids)
    with pytest.raises(ValueError, match="class"):
        score_all(feats, np.zeros(labels.size, int))
    with pytest.raises(ValueError, match="entries"):
        score_all(feats, labels[:-1])
    with pytest.raises(ValueError, match="case_ids"):
        score_all(feats, labels, case_ids[:-1])
    with pytest.raises(ValueError, match="rows"):
        score_all(feats, labels, case_ids, stage_features={"s": feats[:-1]})


def test_deterministic() -> None:
    feats, labels, case_ids = _model_samples(5)
    assert score_all(feats, labels, case_ids, seed=1) == score_all(feats.copy(), labels.copy(), case_ids, seed=1)
