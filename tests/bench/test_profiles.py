"""Benchmark profiles and their narrowing for pilot studies (`run --members/--seeds/--steps-scale/--decoders`)."""

from __future__ import annotations

import pytest

from bench.validation.__main__ import main
from bench.validation.profiles import get_profile, narrowed


def test_narrowing_changes_only_what_is_asked() -> None:
    cpu = get_profile("cpu")
    assert narrowed(cpu) == cpu
    pilot = narrowed(cpu, members=["random", "mae-long"], seeds=[0, 1], steps_scale=2.0, default_decoder_only=True)
    assert pilot.members == ("random", "mae-long") and pilot.seeds == (0, 1) and pilot.steps_scale == 2.0
    assert pilot.decoders == cpu.decoders[:1] == (("kaiming", 0, 1),)
    assert (pilot.zoo, pilot.tasks, pilot.finetune, pilot.scoring) == (cpu.zoo, cpu.tasks, cpu.finetune, cpu.scoring)
    assert narrowed(get_profile("gpu"), steps_scale=0.5).steps_scale == 2.0  # multiplies the profile's own scale


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
        narrowed(get_profile("cpu"), **kwargs)


def test_smoke_members_outside_the_profile_are_refused() -> None:
    with pytest.raises(ValueError, match="not in profile"):
        narrowed(get_profile("smoke"), members=["voco"])


def test_a_narrowed_run_needs_its_own_out_folder(capsys: pytest.CaptureFixture[str]) -> None:
    """A pilot must never overwrite the committed results of the full profile."""
    with pytest.raises(SystemExit) as exc:
        main(["run", "--profile", "cpu", "--seeds", "0", "1"])
    assert exc.value.code == 2 and "--out" in capsys.readouterr().err


def test_finetune_overrides_merge_into_the_profiles_recipe() -> None:
    cpu = get_profile("cpu")
    full_rate = narrowed(cpu, finetune={"encoder_warmup_steps": 0, "encoder_lr_scale": 1.0})
    assert full_rate.finetune == {**cpu.finetune, "encoder_warmup_steps": 0, "encoder_lr_scale": 1.0}
    with pytest.raises(ValueError, match="unknown fine-tune settings"):
        narrowed(cpu, finetune={"warmup": 0})


def test_finetune_values_are_read_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    from bench.validation.__main__ import _key_values

    assert _key_values(["steps=300", "augment=false", "optimizer=adamw", "patch=[24,24,24]"]) == {
        "steps": 300, "augment": False, "optimizer": "adamw", "patch": [24, 24, 24]}
    with pytest.raises(SystemExit):
        main(["run", "--profile", "cpu", "--finetune", "steps", "--out", "/tmp/never"])
    assert "KEY=VALUE" in capsys.readouterr().err
