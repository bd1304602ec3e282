"""Benchmark profiles: how big a run is (zoo, task roster, cases, truth protocols, seeds and their
rule, decoders, processes), and the rules fixed before any data (admission, extra seeds).

`smoke` proves every table can be produced (minutes, in the test suite); `v2` is the committed
benchmark (docs/validation.md, "Protocol v2"): 20 encoders, 8 tuning tasks and 3 sealed held-out
tasks, each with ordered reserves. `--device cuda` runs the same profile on a GPU (records keyed by
device, so they never mix with the CPU's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

DecoderKey = tuple[str, int, int]  # (init, seed, n_decoders)

TRANSFER_FINETUNE: dict[str, Any] = {"encoder_warmup_steps": 100, "encoder_lr_scale": 0.1}
"""The transfer protocol on top of each task's 200 steps: decoder and head alone for the first 100
steps (encoder frozen), then the encoder at a tenth of the rate. Full-rate fine-tuning from step 0
washed the pretraining out at this scale (v1: split-half tau < 0.5 on every tuning task, random init
among the best); see docs/decisions.md. Confirmations use the same recipe."""

TRUTH_V2: dict[str, Any] = {
    **TRANSFER_FINETUNE, "lr_ramp_steps": 0, "swa_fraction": 0.25, "eval_fractions": [0.25, 0.5], "sw_overlap": 0.25,
}
"""Protocol v2 fine-tune truth (docs/validation.md): TRANSFER_FINETUNE over the tasks' 200 steps but
with nnU-Net's poly decay from the full rate at step 0 (no ramp over the frozen phase: in the task
pilot the ramp left a lesion task at Dice 0 in every run, where the same steps without it reached
0.88-0.92; decisions.md), the final Dice from the uniform average of the weights over the last 50
steps (SWA), snapshots of the run at 25 % and 50 % of the steps (50 % = the end of the
encoder-frozen phase), sliding windows at a quarter overlap (12 windows per brain case, not 27)."""

FROZEN_V2: dict[str, Any] = {"steps": 100, "train_encoder": False, "swa_fraction": 0.25, "sw_overlap": 0.25}
"""Protocol v2's second, cheaper truth: the encoder frozen throughout, decoder and head trained alone
for 100 steps (poly decay from the full rate), SWA over the last 25, on seeds of their own."""

SCORING_V2: dict[str, Any] = {"n_bootstrap": 0}
"""The benchmark scores with the product's defaults but without the half-sampling replicates over the
pilot cases (`n_bootstrap`): no table uses them, and they cost about as much as the rest of a score.
Every value the tables read (GRTD, LBTC, baselines, the control) is computed on all cases either way."""

STUDY_PASSES: dict[str, dict[str, Any]] = {
    "E3": {"grtd_stages": ["enc2", "enc3"], "baseline_stage": "enc3"},
    "E2": {"grtd_stages": ["enc2", "enc3"], "baseline_stage": "enc2"},
    "P2": {"lbtc_patch_step": 2, "baselines": False},
    "P4": {"lbtc_patch_step": 4, "baselines": False},
}
"""The method study's extra scoring passes (docs/method-study.md), decoder kaiming 0, admitted tuning
tasks only: GRTD on the two deepest encoder stages with the baselines on the deepest (E3) or the
second-deepest (E2) encoder stage, and LBTC with patches of a fixed physical size (P2, P4: points 2
or 4 model voxels apart at every stage). Their records sit beside v2's, under `pass_scores`; the v2
report does not read them."""

FROZEN_SEED_OFFSET = 100
"""Frozen-encoder truth seeds are the fine-tune seeds + 100 (independent runs, not snapshots)."""


@dataclass(frozen=True)
class Admission:
    """The rule, fixed before any truth, that admits a task on its truth alone (never on scores).

    A task is admitted when the mean Dice of the random-init members lies in `random_dice` (learnable
    in budget, not at its ceiling) and the between-model spread over the run noise on the realistic
    zoo (std of the model means / mean seed std) is at least `spread_over_noise`, both after the seed
    rule. A task is *informative* when, in addition, its split-half tau on the realistic zoo is at
    least `informative_tau`; only informative tasks enter the informative averages.
    """

    random_dice: tuple[float, float] = (0.30, 0.85)
    spread_over_noise: float = 1.0
    informative_tau: float = 0.5


@dataclass(frozen=True)
class SeedRule:
    """Extra fine-tune seeds, fixed before any truth: while a task's split-half tau on the realistic
    zoo is below `below_tau`, the next stage of seeds is added (3 -> 5 -> 7 by default)."""

    below_tau: float = 0.5
    stages: tuple[tuple[int, ...], ...] = ((3, 4), (5, 6))


@dataclass(frozen=True)
class Profile:
    """One benchmark size. `decoders` lists the scoring configs per (model, task); the first is
    the production default (kaiming, seed 0, one decoder) and carries the label-permutation control.

    Tasks come in four ordered lists, by name: the primary tuning tasks, their reserves, the sealed
    held-out tasks and their (also sealed) reserves. A primary task that fails admission is replaced
    by the next reserve of its own list."""

    name: str
    zoo: str
    members: tuple[str, ...] | None = None  # None: every member of the zoo profile
    zoo_dir: str | None = None  # repo-relative folder of a committed zoo (None: under the cache)
    seal_dir: str = "results/validation/v2"  # repo-relative folder of sealed.json and the study's freeze.json
    tasks: tuple[str, ...] | None = None  # primary tuning tasks; None: every spec in the task folder
    reserves: tuple[str, ...] = ()
    held_out: tuple[str, ...] = ()
    held_out_reserves: tuple[str, ...] = ()
    n_train: int | None = None  # None: the task spec's
    n_test: int | None = None
    spacing_scale: float = 1.0
    steps_scale: float = 1.0  # multiplies each task's fine-tune steps (and encoder warm-up)
    finetune: dict[str, Any] = field(default_factory=dict)  # overrides of the tasks' finetune blocks
    frozen: dict[str, Any] | None = None  # overrides for the frozen-encoder truth (None: not run)
    seeds: tuple[int, ...] = (0, 1, 2)
    seed_rule: SeedRule | None = None
    admission: Admission | None = None  # None: every task is admitted (pilots, unseen task specs)
    decoders: tuple[DecoderKey, ...] = (
        ("kaiming", 0, 1),
        ("kaiming", 1, 1),
        ("kaiming", 2, 1),
        ("kaiming", 3, 1),
        ("kaiming", 4, 1),
        ("xavier", 0, 1),
        ("gaussian", 0, 1),
    )
    scoring: dict[str, Any] = field(default_factory=lambda: dict(SCORING_V2))  # ScoringConfig overrides
    score_passes: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra scoring passes on the tuning tasks
    shuffles: int = 1  # label permutations per (model, task) in the control
    n_boot: int = 2000  # bootstrap replicates and permutation draws of the report's intervals and p-values
    jobs: int = 2  # worker processes (one torch thread each)
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decoders"] = [list(d) for d in self.decoders]
        return out

    def frozen_seeds(self) -> tuple[int, ...]:
        return tuple(s + FROZEN_SEED_OFFSET for s in self.seeds) if self.frozen is not None else ()


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        zoo="smoke",
        members=("random-a", "random-b", "sup-tissue", "sup-tissue-r50", "mae-brain"),
        tasks=("hemisphere_mask", "cardiac_cavities"),
        reserves=("white_matter",),
        held_out=("anterior_mask",),
        n_train=2,
        n_test=1,
        finetune={**TRUTH_V2, "steps": 4, "encoder_warmup_steps": 2, "sw_overlap": 0.0},
        frozen={**FROZEN_V2, "steps": 2, "sw_overlap": 0.0},
        seeds=(0, 1),
        seed_rule=SeedRule(below_tau=2.0, stages=((2,),)),  # always fires: the extra-seed path runs in the test
        admission=Admission(random_dice=(0.0, 1.0), spread_over_noise=0.0),
        decoders=(("kaiming", 0, 1), ("kaiming", 1, 1), ("xavier", 0, 1), ("gaussian", 0, 1)),
        scoring={**SCORING_V2, "n_samples": 256, "n_anchors": 32},
        score_passes={"E3": STUDY_PASSES["E3"]},
        n_boot=200,
    ),
    "v2": Profile(
        name="v2",
        zoo="v2",
        zoo_dir="results/validation/v2/zoo",
        tasks=("tissue", "hemisphere_tissue", "hemisphere_mask", "hemispheres", "liver", "cardiac_cavities", "cardiac", "thorax"),
        reserves=("white_matter", "grey_matter"),
        held_out=("anterior_mask", "ct_structures", "cardiac_lv"),
        held_out_reserves=("hemisphere_wm", "ct_spine"),
        n_test=8,
        finetune=dict(TRUTH_V2),
        frozen=dict(FROZEN_V2),
        seed_rule=SeedRule(),
        admission=Admission(),
        score_passes=dict(STUDY_PASSES),
    ),
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
