"""Benchmark profiles and their narrowing for pilot studies (`run --members/--seeds/--steps-scale/--decoders`)."""

from __future__ import annotations

import pytest

from bench.validation.__main__ import main
from bench.validation.profiles import get_profile, narrowed


def test_narrowing_changes_only_what_is_asked() -> None:
    cpu = get_profile("v2")
    assert narrowed(cpu) == cpu
    pilot = narrowed(cpu, members=["random-a", "mae-mix"], seeds=[0, 1], steps_scale=2.0, default_decoder_only=True)
    assert pilot.members == ("random-a", "mae-mix") and pilot.seeds == (0, 1) and pilot.steps_scale == 2.0
    assert pilot.decoders == cpu.decoders[:1] == (("kaiming", 0, 1),)
    assert (pilot.zoo, pilot.tasks, pilot.finetune, pilot.scoring) == (cpu.zoo, cpu.tasks, cpu.finetune, cpu.scoring)
    assert narrowed(pilot, steps_scale=0.5).steps_scale == 1.0  # multiplies the profile's own scale


def test_the_v2_rules_are_the_protocols() -> None:
    """The rules docs/validation.md (Protocol v2) fixed before any truth: a change here is a change of protocol."""
    from bench.validation.profiles import FROZEN_V2, TRUTH_V2, Admission, SeedRule

    v2 = get_profile("v2")
    assert v2.admission == Admission(random_dice=(0.30, 0.85), spread_over_noise=1.0, informative_tau=0.5)
    assert v2.seed_rule == SeedRule(below_tau=0.5, stages=((3, 4), (5, 6))) and v2.seeds == (0, 1, 2)
    assert v2.frozen_seeds() == (100, 101, 102) and v2.n_test == 8 and v2.zoo_dir == "results/validation/v2/zoo"
    assert TRUTH_V2 == {"encoder_warmup_steps": 100, "encoder_lr_scale": 0.1, "lr_ramp_steps": 0, "swa_fraction": 0.25,
                        "eval_fractions": [0.25, 0.5], "sw_overlap": 0.25}
    assert FROZEN_V2 == {"steps": 100, "train_encoder": False, "swa_fraction": 0.25, "sw_overlap": 0.25}
    assert v2.scoring == {"n_bootstrap": 0}  # no table reads the half-sampling replicates
    assert v2.tasks == ("tissue", "hemisphere_tissue", "hemisphere_mask", "hemispheres", "liver", "cardiac_cavities", "cardiac", "thorax")
    assert v2.reserves == ("white_matter", "grey_matter")
    assert v2.held_out == ("anterior_mask", "ct_structures", "cardiac_lv") and v2.held_out_reserves == ("hemisphere_wm", "ct_spine")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"members": []}, "distinct member"),
        ({"members": ["random", "random"]}, "distinct member"),
        ({"seeds": [0, 0]}, "distinct non-negative"),
        ({"seeds": [-1]}, "distinct non-negative"),
        ({"steps_scale": 0.0}, "steps-scale"),
    ],
)
def test_narrowing_refuses_nonsense(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        narrowed(get_profile("v2"), **kwargs)


def test_smoke_members_outside_the_profile_are_refused() -> None:
    with pytest.raises(ValueError, match="not in profile"):
        narrowed(get_profile("smoke"), members=["simclr-mix"])


def test_a_narrowed_run_needs_its_own_out_folder(capsys: pytest.CaptureFixture[str]) -> None:
    """A pilot must never overwrite the committed results of the full profile."""
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", "v2", "--seeds", "0", "1"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_finetune_overrides_merge_into_the_profiles_recipe() -> None:
    cpu = get_profile("v2")
    full_rate = narrowed(cpu, finetune={"encoder_warmup_steps": 0, "encoder_lr_scale": 1.0})
    assert full_rate.finetune == {**cpu.finetune, "encoder_warmup_steps": 0, "encoder_lr_scale": 1.0}
    with pytest.raises(ValueError, match="unknown fine-tune settings"):
        narrowed(cpu, finetune={"warmup": 0})


def test_finetune_values_are_read_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.validation.__main__ import _key_values

    assert _key_values(["steps=300", "augment=false", "optimizer=adamw", "patch=[24,24,24]"]) == {
        "steps": 300, "augment": False, "optimizer": "adamw", "patch": [24, 24, 24]}
    with pytest.raises(SystemExit):
        main(["run", "--profile", "v2", "--finetune", "steps", "--out", "/tmp/never"])
    assert "KEY=VALUE" in capsys.readouterr().err
