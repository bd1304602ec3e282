"""ScoringConfig: defaults from metrics.md, strict parsing, a hash that keys score reuse."""

import pytest

from transferability.config import ScoringConfig


def test_defaults_follow_the_spec():
    cfg = ScoringConfig()
    assert (cfg.seed, cfg.n_samples, cfg.lam, cfg.quantile, cfg.k, cfg.n_anchors) == (0, 4096, 1.0, 0.9, 5, 512)
    assert cfg.decoder_init == "kaiming" and cfg.decoder_seed == 0


def test_hash_is_stable_and_sensitive():
    a = ScoringConfig.from_dict({"grtd_stages": ["dec3", "dec4"]})
    b = ScoringConfig.from_dict({"grtd_stages": ("dec3", "dec4")})
    assert a.hash() == b.hash()
    assert a.hash() != ScoringConfig.from_dict({"grtd_stages": ["dec3", "dec4"], "seed": 1}).hash()
    assert ScoringConfig().hash() == ScoringConfig.from_dict({}).hash()


def test_round_trip():
    cfg = ScoringConfig.from_dict({"n_samples": 256, "lbtc_stages": ["enc4"], "decoder_init": "xavier"})
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
    ],
)
def test_bad_config_is_a_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        ScoringConfig.from_dict(bad)
