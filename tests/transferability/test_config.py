"""ScoringConfig: defaults from metrics.md, strict parsing, a hash that keys score reuse."""

import pytest

from transferability.config import ScoringConfig


def test_defaults_follow_the_spec():
    cfg = ScoringConfig()
    assert (cfg.seed, cfg.n_samples, cfg.lam, cfg.quantile, cfg.k, cfg.n_anchors) == (0, 4096, 1.0, 0.9, 5, 512)
    assert cfg.decoder_init == "kaiming" and cfg.decoder_seed == 0
    assert cfg.grtd_variant == "penalised" and cfg.n_decoders == 1  # the benchmark's choice (docs/decisions.md)


def test_grtd_variants_match_the_scoring_code():
    from typing import get_args

    from transferability.config import GRTDVariant
    from transferability.grtd import VARIANTS

    assert get_args(GRTDVariant) == VARIANTS


def test_hash_is_stable_and_sensitive():
    a = ScoringConfig.from_dict({"grtd_stages": ["dec3", "dec4"]})
    b = ScoringConfig.from_dict({"grtd_stages": ("dec3", "dec4")})
    assert a.hash() == b.hash()
    assert a.hash() != ScoringConfig.from_dict({"grtd_stages": ["dec3", "dec4"], "seed": 1}).hash()
    assert ScoringConfig().hash() == ScoringConfig.from_dict({}).hash()
    assert ScoringConfig().hash() != ScoringConfig(grtd_variant="contracted").hash()
    assert ScoringConfig().hash() != ScoringConfig(n_decoders=3).hash()


def test_round_trip():
    cfg = ScoringConfig.from_dict(
        {
            "n_samples": 256,
            "lbtc_stages": ["enc4"],
            "decoder_init": "xavier",
            "grtd_variant": "penalised",
            "n_decoders": 4,
        }
    )
    assert ScoringConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"nope": 1}, "unknown scoring config key"),
        ({"k": 4}, "odd"),
        ({"quantile": 0}, "quantile"),
        ({"decoder_init": "orthogonal"}, "decoder_init"),
        ({"n_samples": 1}, "n_samples"),
        ({"lam": 0}, "lam"),
        ({"grtd_variant": "penalized"}, "grtd_variant"),
        ({"n_decoders": 0}, "n_decoders"),
        ({"n_decoders": 1.5}, "n_decoders"),
        ({"n_decoders": True}, "n_decoders"),
    ],
)
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        ScoringConfig.from_dict(bad)


def test_lbtc_patch_step_is_optional_and_hashed_only_when_set():
    """Configs that do not set it keep their dict and hash (stored scores stay valid)."""
    base = ScoringConfig()
    assert "lbtc_patch_step" not in base.to_dict() and ScoringConfig.from_dict(base.to_dict()) == base
    step = ScoringConfig(lbtc_patch_step=2)
    assert step.to_dict()["lbtc_patch_step"] == 2 and step.hash() != base.hash()
    assert ScoringConfig.from_dict(step.to_dict()) == step
    for bad in (0, -1, 100, "2"):
        with pytest.raises(ValueError, match="lbtc_patch_step"):
            ScoringConfig(lbtc_patch_step=bad)
