"""Benchmark profiles: how big a run is (zoo, tasks, cases, budgets, seeds, decoders, processes).

`smoke` proves every table can be produced (minutes, in the test suite), `cpu` is the committed
report (122 min on 2 cores, measured), `gpu` uses finer volumes and longer budgets on a GPU machine.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from collections.abc import Mapping, Sequence
from typing import Any

DecoderKey = tuple[str, int, int]  # (init, seed, n_decoders)


@dataclass(frozen=True)
class Profile:
    """One benchmark size. `decoders` lists the scoring configs per (model, task); the first is
    the production default (kaiming, seed 0, one decoder) and carries the label-permutation control."""

    name: str
    zoo: str
    members: tuple[str, ...] | None = None  # None: every member of the zoo profile
    tasks: tuple[str, ...] | None = None  # shipped task names; None: every shipped task
    n_train: int | None = None  # None: the task spec's
    n_test: int | None = None
    spacing_scale: float = 1.0
    steps_scale: float = 1.0  # multiplies each task's fine-tune steps (and encoder warm-up)
    finetune: dict[str, Any] = field(default_factory=dict)  # overrides of the tasks' finetune blocks
    seeds: tuple[int, ...] = (0, 1, 2)
    decoders: tuple[DecoderKey, ...] = (
        ("kaiming", 0, 1),
        ("kaiming", 1, 1),
        ("xavier", 0, 1),
        ("xavier", 1, 1),
        ("gaussian", 0, 1),
        ("gaussian", 1, 1),
        ("kaiming", 0, 3),
    )
    scoring: dict[str, Any] = field(default_factory=dict)  # ScoringConfig overrides
    shuffles: int = 1  # label permutations per (model, task) in the control
    jobs: int = 2  # worker processes (one torch thread each)
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decoders"] = [list(d) for d in self.decoders]
        return out


TRANSFER_FINETUNE: dict[str, Any] = {"encoder_warmup_steps": 100, "encoder_lr_scale": 0.1}
"""The truth's fine-tuning protocol on top of each task's block: decoder and head alone for the first
100 steps (encoder frozen), then the encoder at a tenth of the rate. Full-rate fine-tuning from step 0
washed the pretraining out at this scale (split-half tau < 0.5 on every tuning task, random init
among the best); see docs/decisions.md."""

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        zoo="smoke",
        members=("random", "mae-long", "simclr", "mae-ood"),
        tasks=("brain_mask", "abdomen", "cardiac"),
        n_train=2,
        n_test=1,
        finetune={"steps": 4, "sw_overlap": 0.0},
        seeds=(0, 1),
        decoders=(("kaiming", 0, 1), ("xavier", 0, 1), ("gaussian", 0, 1), ("kaiming", 0, 2)),
        scoring={"n_samples": 256, "n_anchors": 32},
    ),
    "cpu": Profile(name="cpu", zoo="cpu", finetune=dict(TRANSFER_FINETUNE)),
    "gpu": Profile(name="gpu", zoo="gpu", spacing_scale=0.5, steps_scale=4.0, seeds=(0, 1, 2, 3, 4), jobs=1, device="cuda",
                   finetune=dict(TRANSFER_FINETUNE)),
}


def get_profile(name: str) -> Profile:
    """The profile called `name`, or ValueError listing the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; known: {', '.join(sorted(PROFILES))}") from None


def decoder_label(key: DecoderKey) -> str:
    """`kaiming-0`, or `kaiming-0-x3` for GRTD averaged over 3 decoders."""
    init, seed, n = key
    return f"{init}-{seed}" if n == 1 else f"{init}-{seed}-x{n}"


def narrowed(
    profile: Profile,
    *,
    members: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    steps_scale: float | None = None,
    default_decoder_only: bool = False,
    finetune: Mapping[str, Any] | None = None,
) -> Profile:
    """`profile` for a pilot study: fewer members or seeds, another fine-tuning budget or recipe
    (`finetune` overrides the profile's FinetuneConfig fields), or only the production decoder. Records stay keyed by their full inputs, so nothing mixes with the full run's."""
    out = profile
    if members is not None:
        if not members or len(set(members)) != len(members):
            raise ValueError("--members needs distinct member names")
        if profile.members is not None and set(members) - set(profile.members):
            raise ValueError(f"members not in profile {profile.name!r}: {sorted(set(members) - set(profile.members))}")
        out = replace(out, members=tuple(members))
    if seeds is not None:
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise ValueError("--seeds needs distinct non-negative integers")
        out = replace(out, seeds=tuple(seeds))
    if steps_scale is not None:
        if not steps_scale > 0:
            raise ValueError("--steps-scale must be > 0")
        out = replace(out, steps_scale=out.steps_scale * steps_scale)
    if default_decoder_only:
        out = replace(out, decoders=out.decoders[:1])
    if finetune:
        from worker.finetune import FinetuneConfig

        unknown = sorted(set(finetune) - set(FinetuneConfig.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown fine-tune settings {unknown}")
        out = replace(out, finetune={**out.finetune, **finetune})
    return out
