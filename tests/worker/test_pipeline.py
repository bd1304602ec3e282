"""score_model end to end on tiny checkpoints: shared points, patch geometry, determinism, result."""

from __future__ import annotations

import json

import numpy as np
import pytest

import worker.pipeline as pipeline
from models_registry.specs import ModelSpec, PreprocessingSpec
from transferability.config import ScoringConfig
from transferability.sampling import boundary_anchors, patch_grid
from worker.extract import CaseVolume
from worker.preprocess import resampled_shape


def _cases() -> list[CaseVolume]:
    rng = np.random.default_rng(0)
    out = []
    for m, (shape, spacing) in enumerate([((24, 20, 22), (1.0, 1.0, 1.0)), ((14, 12, 13), (2.0, 2.0, 2.0))]):
        lab = np.zeros(shape, np.int64)
        c = np.asarray(shape) // 2
        zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
        r = np.sqrt(((zz - c[0]) * spacing[0]) ** 2 + ((yy - c[1]) * spacing[1]) ** 2 + ((xx - c[2]) * spacing[2]) ** 2)
        lab[r < 8] = 1
        lab[r < 4] = 2
        img = (lab * 1.5 + rng.normal(0, 0.5, shape)).astype(np.float32)[None]
        out.append(CaseVolume(img, lab, spacing))
    return out


def _spec(spacing=(1.0, 1.0, 1.0)) -> ModelSpec:
    return ModelSpec(name="t", format="nnssl", preprocessing=PreprocessingSpec(spacing=spacing, patch_size=(16, 16, 16)))


CONFIG = ScoringConfig(n_samples=240, n_anchors=40, k=3)


def test_score_model_end_to_end_is_deterministic_and_json_ready(nnssl_full):
    path, _ = nnssl_full
    seen: list[tuple[str, float]] = []
    a = pipeline.score_model(_spec(), path, _cases(), CONFIG, device="cpu", progress=lambda s, f: seen.append((s, f)))
    b = pipeline.score_model(_spec(), path, _cases(), CONFIG, device="cpu")
    assert a.grtd == b.grtd and a.lbtc == b.lbtc and a.baselines == b.baselines  # bit-identical on CPU
    assert a.replicates == b.replicates and a.replicates["n_replicates"] == 200  # the same draws and values
    assert a.replicates["n_cases"] == 2 and a.replicates["subset_size"] == 1
    assert len(a.replicates["grtd"]) == len(a.replicates["lbtc"]) == 200
    assert a.per_stage["grtd"].keys() == {"dec0", "dec1"} and a.per_stage["lbtc"].keys() == {"enc1", "enc2"}
    assert a.grtd <= 0.0 and 0.0 <= a.lbtc <= 1.0
    assert a.diagnostics["baseline_stage"] == "dec1"
    assert {"logme", "gbc", "hscore", "ccfv"} <= set(a.baselines)
    assert a.diagnostics["n_points"] == 240 and a.diagnostics["n_anchors"] == 40
    assert sum(a.diagnostics["patches_used"].values()) > 0
    serial = ["load", "wait_sampling", "extract", "grtd", "lbtc", "baselines", "bootstrap", "finish"]
    assert set(a.timings) == set(serial) | {"imports", "sample_plan", "anchors", "extract_queries", "total"}
    assert all(v >= 0.0 for v in a.timings.values()) and a.timings["extract_queries"] <= a.timings["extract"]
    assert sum(a.timings[k] for k in serial) <= a.timings["total"]  # the serial phases are disjoint parts of total
    assert a.load_report["sha256"] and a.config_hash == CONFIG.hash()
    fr = [f for _, f in seen]
    assert fr == sorted(fr) and fr[-1] == 1.0 and {s for s, _ in seen} == {"load", "extract", "grtd", "lbtc", "baselines", "bootstrap"}
    json.dumps(a.to_dict())
    one = pipeline.score_model(_spec(), path, _cases()[:1], CONFIG, device="cpu")
    assert one.replicates == {"method": "half-sampling", "n_cases": 1, "unavailable": "a pilot set of one case cannot be resampled"}
    assert pipeline.score_model(_spec(), path, _cases(), ScoringConfig(n_samples=240, n_anchors=40, k=3, n_bootstrap=0),
                                device="cpu").replicates is None
    other = pipeline.score_model(_spec(), path, _cases(), ScoringConfig(n_samples=240, n_anchors=40, k=3, decoder_seed=1), device="cpu")
    assert other.grtd != a.grtd and other.lbtc == a.lbtc  # the decoder seed moves decoder stages only


def test_points_are_model_independent_and_patch_steps_follow_the_stage_stride(nnssl_full, monkeypatch):
    path, _ = nnssl_full
    calls: list[dict] = []
    real = pipeline.extract_case

    def spy(fm, case, queries, **kw):
        calls.append({"strides": {s.name: s.stride for s in fm.stages}, "spacing": case.spacing, "queries": {k: v.copy() for k, v in queries.items()},
                      "model_spacing": fm.preprocessing.spacing})
        return real(fm, case, queries, **kw)

    monkeypatch.setattr(pipeline, "extract_case", spy)
    cfg = ScoringConfig(n_samples=240, n_anchors=40, k=3, grtd_stages=("dec1",), lbtc_stages=("enc2",))
    pipeline.score_model(_spec((1.0, 1.0, 1.0)), path, _cases(), cfg, device="cpu")
    pipeline.score_model(_spec((1.5, 1.5, 1.5)), path, _cases(), cfg, device="cpu")
    first, second = calls[:2], calls[2:]
    for c1, c2 in zip(first, second):  # same sample points whatever the model's spacing
        n = min(len(c1["queries"]["dec1"]), len(c2["queries"]["dec1"]))
        assert np.array_equal(c1["queries"]["dec1"], c2["queries"]["dec1"]) and n > 0
    cases = _cases()
    anchors = boundary_anchors([c.label for c in cases], 40, cfg.seed)
    for i, c in enumerate(calls):
        m = i % 2
        stride = np.asarray(c["strides"]["enc2"], float)
        nominal = stride * np.asarray(c["model_spacing"]) / np.asarray(c["spacing"])
        shape = np.asarray(cases[m].shape)
        step = stride * shape / np.asarray(resampled_shape(shape, c["spacing"], c["model_spacing"]))  # on the actual grid
        assert np.allclose(step, nominal, rtol=0.06)
        pts, mask = patch_grid(anchors.coords[anchors.case == m], step, 3, [cases[m].shape] * int((anchors.case == m).sum()))
        got = c["queries"]["enc2"]
        assert len(got) == mask.sum() > 0
        np.testing.assert_allclose(got, pts[mask], rtol=0, atol=1e-9)


def test_lbtc_patch_step_fixes_the_patch_spacing_at_every_stage(nnssl_full, monkeypatch):
    """`lbtc_patch_step` = 1: patch points one model voxel apart at the deep stages too, so LBTC reads
    other points and moves; GRTD does not."""
    path, _ = nnssl_full
    calls: list[dict] = []
    real = pipeline.extract_case

    def spy(fm, case, queries, **kw):
        calls.append({k: v.copy() for k, v in queries.items()})
        return real(fm, case, queries, **kw)

    monkeypatch.setattr(pipeline, "extract_case", spy)
    base = ScoringConfig(n_samples=240, n_anchors=40, k=3, lbtc_stages=("enc2",), n_bootstrap=0)
    a = pipeline.score_model(_spec(), path, _cases(), base, device="cpu")
    b = pipeline.score_model(_spec(), path, _cases(), ScoringConfig(**{**base.to_dict(), "lbtc_stages": ("enc2",), "lbtc_patch_step": 1}),
                             device="cpu")
    cases = _cases()
    anchors = boundary_anchors([c.label for c in cases], 40, base.seed)
    for m, c in enumerate(calls[len(cases):]):
        shape = np.asarray(cases[m].shape)
        step = shape / np.asarray(resampled_shape(shape, cases[m].spacing, (1.0, 1.0, 1.0)))  # one model voxel on the case's grid
        pts, mask = patch_grid(anchors.coords[anchors.case == m], step, 3, [cases[m].shape] * int((anchors.case == m).sum()))
        np.testing.assert_allclose(c["enc2"], pts[mask], rtol=0, atol=1e-9)
    assert a.grtd == b.grtd and a.lbtc != b.lbtc and a.config_hash != b.config_hash


def test_bad_configs_are_clear_errors(nnssl_full):
    path, _ = nnssl_full
    with pytest.raises(ValueError, match="unknown stage"):
        pipeline.score_model(_spec(), path, _cases(), ScoringConfig(grtd_stages=("dec7",)), device="cpu")
    with pytest.raises(ValueError, match="no cases"):
        pipeline.score_model(_spec(), path, [], CONFIG, device="cpu")
    flat = [CaseVolume(np.zeros((1, 8, 8, 8), np.float32), np.ones((8, 8, 8), np.int64), (1, 1, 1))]
    with pytest.raises(ValueError, match="boundary"):
        pipeline.score_model(_spec(), path, flat, CONFIG, device="cpu")


def test_both_grtd_variants_are_reported_and_the_config_picks_the_score(nnssl_full):
    path, _ = nnssl_full
    a = pipeline.score_model(_spec(), path, _cases(), ScoringConfig(n_samples=240, n_anchors=40, k=3, grtd_variant="contracted"), device="cpu")
    b = pipeline.score_model(_spec(), path, _cases(), CONFIG, device="cpu")  # the default variant: penalised
    va, vb = a.details["grtd"]["variants"], b.details["grtd"]["variants"]
    assert va.keys() == vb.keys() == {"contracted", "penalised"}
    assert va == vb  # the same features: only which variant is `grtd` changes
    assert a.grtd == va["contracted"] and b.grtd == vb["penalised"] and a.grtd != b.grtd
    assert b.grtd <= 0.0 and b.lbtc == a.lbtc and b.baselines == a.baselines
    assert a.config_hash != b.config_hash


def test_n_decoders_averages_grtd_over_fresh_decoders_and_keep_features_hands_them_out(nnssl_full):
    from transferability.grtd import grtd

    path, _ = nnssl_full
    seeds = [pipeline.score_model(_spec(), path, _cases(), ScoringConfig(n_samples=240, n_anchors=40, k=3, decoder_seed=s), device="cpu")
             for s in (0, 1, 2)]
    avg = pipeline.score_model(
        _spec(), path, _cases(), ScoringConfig(n_samples=240, n_anchors=40, k=3, n_decoders=3), device="cpu", keep_features=True
    )
    assert avg.grtd == pytest.approx(np.mean([s.grtd for s in seeds]), rel=1e-12, abs=1e-15)
    for v in ("contracted", "penalised"):
        assert avg.details["grtd"]["variants"][v] == pytest.approx(np.mean([s.details["grtd"]["variants"][v] for s in seeds]), abs=1e-15)
    assert avg.baselines == seeds[0].baselines and avg.lbtc == seeds[0].lbtc  # first decoder only
    assert avg.details["grtd"]["n_decoders"] == 3 and len(avg.details["grtd"]["per_decoder"]) == 3
    f = avg.features
    assert f is not None and len(f.extra_decoder_points) == 2 and f.baseline_stage == "dec1"
    again = grtd({s: f.points[s] for s in f.grtd_stages}, f.labels, stages=f.grtd_stages, variant=CONFIG.grtd_variant)  # same features
    assert again.value == seeds[0].grtd
    assert f.patches["enc2"].shape[:2] == f.patch_labels["enc2"].shape == f.patch_mask["enc2"].shape
    assert "features" not in avg.to_dict() and seeds[0].features is None
    json.dumps(avg.to_dict())
