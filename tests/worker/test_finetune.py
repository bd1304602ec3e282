"""worker.finetune on a tiny nnssl ResEnc checkpoint: config validation, determinism, learning,
encoder warm-up and the learning-rate schedule, sliding-window geometry, Dice, loss, errors,
progress, multi-channel input and the JSON result."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import worker.finetune as ft
from models_registry.specs import ModelSpec, PreprocessingSpec
from worker.extract import CaseVolume
from worker.finetune import FinetuneConfig, FinetuneResult, dice_ce_loss, dice_per_class, finetune, predict_case
from worker.preprocess import normalize

PATCH = (16, 16, 16)  # a multiple of the tiny checkpoint's coarsest stride (4)


def _spec(spacing=(1.0, 1.0, 1.0), normalization="zscore") -> ModelSpec:
    return ModelSpec(
        name="t", format="nnssl", preprocessing=PreprocessingSpec(spacing=spacing, patch_size=PATCH, normalization=normalization)
    )


def _sphere_case(seed: int, shape=(20, 20, 20), spacing=(1.0, 1.0, 1.0), channels: int = 1, inner: bool = False) -> CaseVolume:
    """A bright ball (label 1; with `inner`, a brighter core labelled 2) in Gaussian noise."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.35, 0.65, 3) * np.asarray(shape)
    r = rng.uniform(4.0, 6.0)
    g = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    d = np.linalg.norm(g - c, axis=-1)
    lab = (d < r).astype(np.int64)
    if inner:
        lab[d < r / 2] = 2
    img = np.stack([(2.0 * lab + rng.normal(0.0, 0.5, shape)) * (k + 1) for k in range(channels)]).astype(np.float32)
    return CaseVolume(img, lab, spacing)


def _train_test(channels: int = 1) -> tuple[list[CaseVolume], list[CaseVolume]]:
    return [_sphere_case(i, channels=channels) for i in range(3)], [_sphere_case(10 + i, channels=channels) for i in range(2)]


def _cfg(**kw) -> FinetuneConfig:
    return FinetuneConfig(**{"patch": PATCH, **kw})


# 1. config ---------------------------------------------------------------------------------------


def test_config_defaults_are_valid_and_follow_nnunet():
    cfg = FinetuneConfig()
    assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay, cfg.poly_exponent) == ("sgd", 1e-2, 0.99, 3e-5, 0.9)
    assert cfg.foreground_fraction == pytest.approx(1 / 3) and cfg.sw_overlap == 0.5 and cfg.threads == 1
    assert cfg.encoder_warmup_steps == 0 and cfg.encoder_lr_scale == 1.0 and len(cfg.patch) == 3
    assert FinetuneConfig.from_dict(None) == cfg == FinetuneConfig.from_dict({})


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"steps": 0}, "steps"),
        ({"patch": (16, 16)}, "patch"),
        ({"patch": (16, 0, 16)}, "patch"),
        ({"batch_size": 0}, "batch_size"),
        ({"optimizer": "adam"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"steps": 10, "encoder_warmup_steps": 10}, "encoder_warmup_steps"),
        ({"steps": 10, "encoder_warmup_steps": 11}, "encoder_warmup_steps"),
        ({"encoder_lr_scale": 0.0}, "encoder_lr_scale"),
        ({"encoder_lr_scale": 1.5}, "encoder_lr_scale"),
        ({"foreground_fraction": 1.5}, "foreground_fraction"),
        ({"decoder_init": "orthogonal"}, "decoder_init"),
        ({"sw_overlap": 1.0}, "sw_overlap"),
        ({"threads": 0}, "threads"),
    ],
)
def test_config_invalid_fields_name_themselves(kw, name):
    with pytest.raises(ValueError, match=name):
        FinetuneConfig(**kw)


def test_config_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ValueError, match="unknown.*bogus"):
        FinetuneConfig.from_dict({"steps": 3, "bogus": 1})
    cfg = FinetuneConfig(
        steps=7, patch=(8, 12, 16), batch_size=3, optimizer="adamw", lr=3e-3, momentum=0.9, encoder_warmup_steps=2,
        encoder_lr_scale=0.5, foreground_fraction=0.5, augment=False, decoder_init="xavier", seed=5, sw_overlap=0.25, threads=None,
    )
    d = cfg.to_dict()
    assert d["patch"] == [8, 12, 16] and d["threads"] is None
    back = FinetuneConfig.from_dict(json.loads(json.dumps(d)))
    assert back == cfg and isinstance(back.patch, tuple) and back.to_dict() == d


# 2. determinism ----------------------------------------------------------------------------------


def test_same_seed_same_numbers_other_seed_other_losses(nnssl_full):
    path, _ = nnssl_full
    train, test = _train_test()
    threads = torch.get_num_threads()
    a = finetune(_spec(), path, train, test, 2, _cfg(steps=6, seed=0))
    b = finetune(_spec(), path, train, test, 2, _cfg(steps=6, seed=0))
    c = finetune(_spec(), path, train, test, 2, _cfg(steps=6, seed=1))
    assert torch.get_num_threads() == threads  # the thread pin is undone
    assert a.dice == b.dice and a.per_case == b.per_case and a.losses == b.losses and a.per_case_class == b.per_case_class
    assert [s for s, _ in a.losses] == list(range(1, 7))
    assert all(math.isfinite(v) for _, v in a.losses)
    assert [v for _, v in c.losses] != [v for _, v in a.losses]


# 3. it learns ------------------------------------------------------------------------------------


def test_learns_an_easy_task(nnssl_full):
    """Measured (SGD defaults, 60 steps, seeds 0-5): Dice 0.80-0.96; after 1 step <= 0.1."""
    path, _ = nnssl_full
    train, test = _train_test()
    one = finetune(_spec(), path, train, test, 2, _cfg(steps=1))
    many = finetune(_spec(), path, train, test, 2, _cfg(steps=60))
    assert one.dice < 0.3
    assert many.dice > 0.7 and many.dice > one.dice + 0.5
    assert min(many.per_case) > 0.65
    assert many.losses[-1][1] < 0.5 * many.losses[0][1]


# 4. encoder warm-up and the schedule -------------------------------------------------------------


def test_lr_schedule_ramps_then_poly_decays():
    cfg = FinetuneConfig(steps=101, encoder_warmup_steps=10, lr=0.02)
    lrs = [ft._lr_at(s, cfg) for s in range(cfg.steps)]
    for s in range(10):  # linear ramp reaching lr at the end of warm-up
        assert lrs[s] == pytest.approx(0.02 * (s + 1) / 10)
    assert lrs[10] == pytest.approx(0.02)
    tail = lrs[10:]
    assert all(x > y for x, y in zip(tail, tail[1:]))  # strictly decreasing poly
    for s in (10, 40, 77, 100):
        assert lrs[s] == pytest.approx(0.02 * (1 - (s - 10) / 91) ** 0.9)
    assert 0 < lrs[-1] < 0.02 * 0.02  # ~0 at the last step
    plain = FinetuneConfig(steps=50, lr=0.01)
    assert ft._lr_at(0, plain) == pytest.approx(0.01) and ft._lr_at(49, plain) == pytest.approx(0.01 * (1 / 50) ** 0.9)


def test_warmup_freezes_the_encoder_and_the_encoder_rate_is_scaled(nnssl_full, monkeypatch):
    path, _ = nnssl_full
    train, test = _train_test()
    cfg = _cfg(steps=6, encoder_warmup_steps=3, encoder_lr_scale=0.25, augment=False)
    got: dict = {}
    records: list[dict] = []
    real_build, real_opt = ft.build_segmentation_net, ft._optimizer

    def build(fm, num_classes, seed):
        got["net"] = real_build(fm, num_classes, seed)
        return got["net"]

    def snap(mod: nn.Module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in mod.parameters()]

    def changed(before: list[torch.Tensor], mod: nn.Module) -> bool:
        return any(not torch.equal(b, p.detach()) for b, p in zip(before, mod.parameters()))

    def make_opt(net, c):
        opt = real_opt(net, c)
        got["opt"] = opt
        inner = opt.step

        def step(*a, **k):
            enc, dec, head = snap(net.encoder), snap(net.decoder), snap(net.head)
            rec = {"lrs": [g["lr"] for g in opt.param_groups], "enc_grad": any(p.grad is not None for p in net.encoder.parameters())}
            out = inner(*a, **k)
            rec.update(enc=changed(enc, net.encoder), dec=changed(dec, net.decoder), head=changed(head, net.head))
            records.append(rec)
            return out

        opt.step = step
        return opt

    monkeypatch.setattr(ft, "build_segmentation_net", build)
    monkeypatch.setattr(ft, "_optimizer", make_opt)
    finetune(_spec(), path, train, test, 2, cfg)

    net, opt = got["net"], got["opt"]
    ids = lambda ps: [id(p) for p in ps]  # noqa: E731
    assert ids(opt.param_groups[0]["params"]) == ids(net.encoder.parameters())
    assert ids(opt.param_groups[1]["params"]) == ids([*net.decoder.parameters(), *net.head.parameters()])
    assert len(records) == cfg.steps
    for s, r in enumerate(records):
        sched = ft._lr_at(s, cfg)
        assert r["lrs"][0] == pytest.approx(0.25 * sched) and r["lrs"][1] == pytest.approx(sched)
        assert r["dec"] and r["head"]
        if s < cfg.encoder_warmup_steps:
            assert not r["enc"] and not r["enc_grad"], f"encoder changed during warm-up step {s}"
        else:
            assert r["enc"] and r["enc_grad"], f"encoder frozen after warm-up (step {s})"


def test_optional_protocol_fields_validate_and_stay_out_of_default_configs():
    """swa_fraction, eval_fractions and train_encoder appear in to_dict only when set, so the configs
    and record keys of runs that do not use them are unchanged."""
    assert set(FinetuneConfig().to_dict()) == set(FinetuneConfig.__dataclass_fields__) - set(FinetuneConfig.OPTIONAL)
    cfg = FinetuneConfig(steps=200, swa_fraction=0.25, eval_fractions=(0.25, 0.5), train_encoder=False)
    d = cfg.to_dict()
    assert d["swa_fraction"] == 0.25 and d["eval_fractions"] == [0.25, 0.5] and d["train_encoder"] is False
    assert FinetuneConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert cfg.swa_start() == 150 and cfg.eval_steps() == [50, 100] and FinetuneConfig(steps=9).swa_start() == 9
    for bad in ({"swa_fraction": 1.0}, {"swa_fraction": -0.1}, {"eval_fractions": (0.5, 0.25)}, {"eval_fractions": (1.0,)},
                {"eval_fractions": (0.5, 0.5)}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            FinetuneConfig(**bad)


def test_snapshots_do_not_change_the_run_and_swa_predicts_with_the_average(nnssl_full, monkeypatch):
    path, _ = nnssl_full
    train, test = _train_test()
    plain = finetune(_spec(), path, train, test, 2, _cfg(steps=8, augment=False))
    snap = finetune(_spec(), path, train, test, 2, _cfg(steps=8, augment=False, eval_fractions=(0.25, 0.5)))
    assert snap.losses == plain.losses and snap.dice == plain.dice  # evaluating mid-run draws no random numbers
    assert [s["step"] for s in snap.snapshots] == [2, 4] and [s["fraction"] for s in snap.snapshots] == [0.25, 0.5]
    assert all(0.0 <= s["dice"] <= 1.0 and len(s["per_case"]) == len(test) for s in snap.snapshots)
    assert "snapshots" not in plain.to_dict() and len(snap.to_dict()["snapshots"]) == 2

    # SWA: the weights used for the final prediction are the mean of the weights after each averaged step
    seen: list[dict[str, torch.Tensor]] = []
    final: dict = {}
    real_opt, real_predict = ft._optimizer, ft.predict_case

    def make_opt(net, c):
        opt = real_opt(net, c)
        inner = opt.step

        def step(*a, **k):
            out = inner(*a, **k)
            seen.append({n: p.detach().clone() for n, p in net.named_parameters()})
            return out

        opt.step = step
        return opt

    def predict(net, *a, **k):
        final.setdefault("w", {n: p.detach().clone() for n, p in net.named_parameters()})
        return real_predict(net, *a, **k)

    monkeypatch.setattr(ft, "_optimizer", make_opt)
    monkeypatch.setattr(ft, "predict_case", predict)
    res = finetune(_spec(), path, train, test, 2, _cfg(steps=8, augment=False, swa_fraction=0.25))
    assert len(seen) == 8
    for name, w in final["w"].items():
        expect = torch.stack([s[name] for s in seen[6:]]).mean(0)
        torch.testing.assert_close(w, expect, rtol=1e-5, atol=1e-6)
    assert not torch.equal(final["w"]["head.weight"], seen[-1]["head.weight"])
    assert "SWA" in res.recipe["weights"]


def test_train_encoder_false_never_moves_the_encoder(nnssl_full, monkeypatch):
    path, _ = nnssl_full
    train, test = _train_test()
    got: dict = {}
    real_build = ft.build_segmentation_net

    def build(fm, num_classes, seed):
        got["net"] = real_build(fm, num_classes, seed)
        got["enc0"] = [p.detach().clone() for p in got["net"].encoder.parameters()]
        got["dec0"] = [p.detach().clone() for p in got["net"].decoder.parameters()]
        return got["net"]

    monkeypatch.setattr(ft, "build_segmentation_net", build)
    res = finetune(_spec(), path, train, test, 2, _cfg(steps=5, train_encoder=False, swa_fraction=0.4))
    net = got["net"]
    assert all(torch.equal(a, b.detach()) for a, b in zip(got["enc0"], net.encoder.parameters()))
    assert any(not torch.equal(a, b.detach()) for a, b in zip(got["dec0"], net.decoder.parameters()))
    assert res.recipe["encoder"].startswith("frozen") and res.config["train_encoder"] is False


# 5. sliding-window geometry ----------------------------------------------------------------------


class _Threshold(nn.Module):
    """Logits as a pointwise function of channel 0: class 1 = k * (x - thr), class 0 = 0."""

    def __init__(self, thr: float = 0.0, k: float = 10.0) -> None:
        super().__init__()
        self.thr, self.k = thr, k
        self.inputs: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(tuple(x.shape))
        return torch.cat([torch.zeros_like(x[:, :1]), self.k * (x[:, :1] - self.thr)], 1)


def _distance_case(shape, spacing, seed=0, offset=0.0, scale=1.0) -> CaseVolume:
    """Signed distance (mm) inside an off-centre ball: label = image > 0 on the original grid."""
    rng = np.random.default_rng(seed)
    ext = np.asarray(shape) * np.asarray(spacing)
    c = ext * rng.uniform(0.3, 0.45, 3)
    g = np.stack(np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    dist = (0.3 * ext.min() - np.linalg.norm(g - c, axis=-1)).astype(np.float32)
    return CaseVolume((dist * scale + offset)[None], (dist > 0).astype(np.int64), spacing)


@pytest.mark.parametrize(
    "shape, spacing, windows",
    [
        ((10, 12, 9), (1.0, 1.0, 1.0), "one"),  # smaller than the patch: padded
        ((40, 35, 37), (1.0, 1.0, 1.0), "many"),  # several overlapping windows
        ((12, 11, 13), (2.0, 2.0, 2.0), "many"),  # coarser than the model: upsampled
        ((7, 7, 6), (2.0, 2.0, 2.0), "one"),  # upsampled and still padded
        ((30, 28, 31), (0.7, 0.7, 0.7), "many"),  # finer than the model: downsampled
        ((20, 17, 19), (0.7, 0.7, 0.7), "one"),  # downsampled and padded (odd padding on one axis)
        ((13, 20, 29), (2.0, 1.0, 0.7), "many"),  # anisotropic
    ],
)
def test_predict_case_maps_back_to_the_original_grid(shape, spacing, windows):
    case = _distance_case(shape, spacing)
    prep = PreprocessingSpec(spacing=(1.0, 1.0, 1.0), patch_size=PATCH, normalization="none")
    net = _Threshold()
    pred = predict_case(net, case, prep, 2, PATCH, 0.5, torch.device("cpu"))
    assert pred.shape == case.shape and pred.dtype == np.int64
    assert all(s[2:] == PATCH and s[0] <= ft.PREDICT_BATCH for s in net.inputs)
    n_windows = sum(s[0] for s in net.inputs)
    assert (n_windows == 1) if windows == "one" else (n_windows > 1)
    bad = pred != case.label
    if tuple(spacing) == (1.0, 1.0, 1.0):
        assert not bad.any()  # no resampling: exact
    else:
        # measured: misses only where the boundary cuts the voxel (|d| < 0.24 mm), 0.3-0.6 % of the
        # voxels (2 % in the 294-voxel case, mostly surface)
        assert bad.mean() <= (0.01 if bad.size >= 1000 else 0.025)
        assert not bad.any() or np.abs(case.image[0][bad]).max() < 0.4


def test_predict_case_normalises_like_the_spec():
    case = _distance_case((22, 19, 21), (1.5, 1.5, 1.5), seed=3, offset=100.0, scale=20.0)  # raw intensities far from 0
    prep = PreprocessingSpec(spacing=(1.0, 1.0, 1.0), patch_size=PATCH, normalization="zscore")
    img = case.image[0].astype(np.float64)
    thr = (100.0 - img.mean()) / img.std()  # the raw boundary (100) in z-score units
    pred = predict_case(_Threshold(thr=float(thr), k=1.0), case, prep, 2, PATCH, 0.5, torch.device("cpu"))
    assert np.allclose(normalize(case.image, prep)[0], (img - img.mean()) / img.std(), atol=1e-4)
    assert (pred != case.label).mean() <= 0.015


# 6. Dice -----------------------------------------------------------------------------------------


def test_dice_per_class():
    truth = np.zeros((6, 6, 6), np.int64)
    truth[1:3, 1:3, 1:3] = 1
    truth[4:, 4:, 4:] = 2
    assert dice_per_class(truth, truth, 3) == {"1": 1.0, "2": 1.0}
    disjoint = np.zeros_like(truth)
    disjoint[0, 0, :] = 1
    disjoint[5, 0, :] = 2
    assert dice_per_class(disjoint, truth, 3) == {"1": 0.0, "2": 0.0}
    assert dice_per_class(truth, truth, 4)["3"] is None  # absent from both
    half = truth.copy()
    half[1, 1:3, 1:3] = 0  # 4 of the 8 class-1 voxels
    assert dice_per_class(half, truth, 3)["1"] == pytest.approx(2 * 4 / (4 + 8))
    assert dice_per_class(np.zeros_like(truth), truth, 3) == {"1": 0.0, "2": 0.0}


def test_result_means_ignore_undefined_classes(nnssl_full, monkeypatch):
    path, _ = nnssl_full
    train = [_sphere_case(i, inner=True) for i in range(2)]
    with_2 = _sphere_case(10, inner=True)
    without_2 = _sphere_case(11)
    assert (with_2.label == 2).any() and not (without_2.label == 2).any()

    def fake_predict(net, case, prep, num_classes, patch, overlap, device):  # class 2 predicted as class 1
        pred = case.label.copy()
        pred[pred == 2] = 1
        return pred

    monkeypatch.setattr(ft, "predict_case", fake_predict)
    r = finetune(_spec(), path, train, [with_2, without_2], 3, _cfg(steps=1))
    d1 = 2 * (with_2.label == 1).sum() / ((with_2.label == 1).sum() + (with_2.label >= 1).sum())
    assert r.per_case_class[0] == {"1": pytest.approx(d1), "2": 0.0}
    assert r.per_case_class[1] == {"1": 1.0, "2": None}
    assert r.per_case == [pytest.approx(d1 / 2), 1.0]  # case 2: the undefined class is left out, not counted as 0
    assert r.per_class == {"1": pytest.approx((d1 + 1) / 2), "2": 0.0}  # class 2: over the one case where defined
    assert r.dice == pytest.approx((d1 / 2 + 1) / 2)
    assert r.n_train == 2 and r.n_test == 2 and r.num_classes == 3


# 7. loss -----------------------------------------------------------------------------------------


def test_dice_ce_loss():
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 2, (2, 6, 6, 6), generator=g)  # class 2 absent from the target
    onehot = torch.nn.functional.one_hot(target, 3).permute(0, 4, 1, 2, 3).float()
    right = dice_ce_loss(30.0 * onehot, target)
    assert 0.0 <= float(right) < 0.01
    wrong = dice_ce_loss(30.0 * onehot.roll(1, dims=1), target)  # bg -> class 1, class 1 -> class 2
    assert float(wrong) > 10.0

    logits = torch.randn((2, 3, 6, 6, 6), generator=g, requires_grad=True)
    target3 = torch.randint(0, 3, (2, 6, 6, 6), generator=g)
    loss = dice_ce_loss(logits, target3)
    p = torch.softmax(logits.detach().double(), 1)[:, 1:]
    t = torch.nn.functional.one_hot(target3, 3).permute(0, 4, 1, 2, 3)[:, 1:].double()
    soft = (2 * (p * t).sum((0, 2, 3, 4)) + 1e-5) / (p.sum((0, 2, 3, 4)) + t.sum((0, 2, 3, 4)) + 1e-5)  # batch Dice
    ce = torch.nn.functional.cross_entropy(logits.detach().double(), target3)
    assert float(loss.detach()) == pytest.approx(float(ce + 1 - soft.mean()), rel=1e-5)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


# 8. errors ---------------------------------------------------------------------------------------


def test_clear_errors(nnssl_full):
    path, _ = nnssl_full
    train, test = _train_test()
    cfg = _cfg(steps=1)
    with pytest.raises(ValueError, match="training case"):
        finetune(_spec(), path, [], test, 2, cfg)
    with pytest.raises(ValueError, match="test case"):
        finetune(_spec(), path, train, [], 2, cfg)
    with pytest.raises(ValueError, match="num_classes"):
        finetune(_spec(), path, train, test, 1, cfg)
    bad_label = _sphere_case(0, inner=True)
    with pytest.raises(ValueError, match="label 2.*num_classes is 2"):
        finetune(_spec(), path, [bad_label], test, 2, cfg)
    with pytest.raises(ValueError, match="multiple of the model's coarsest stride"):
        finetune(_spec(), path, train, test, 2, _cfg(steps=1, patch=(18, 16, 16)))
    with pytest.raises(ValueError, match="channel counts"):
        finetune(_spec(), path, train, [_sphere_case(9, channels=2)], 2, cfg)


def test_a_training_label_lost_in_resampling_is_still_an_error(nnssl_full):
    """The label check must look at the case's own labels, not at the labels resampled to the
    model grid: a 0.5 mm case loses single voxels when resampled to 1 mm (nearest neighbour)."""
    path, _ = nnssl_full
    case = _sphere_case(0, shape=(24, 24, 24), spacing=(0.5, 0.5, 0.5))
    lab = case.label.copy()
    lab[0, 0, 0] = 2  # not on the nearest-neighbour lattice of the 12^3 model grid (it samples odd indices)
    bad = CaseVolume(case.image, lab, case.spacing)
    _, test = _train_test()
    with pytest.raises(ValueError, match="label 2.*num_classes is 2"):
        finetune(_spec(), path, [bad], test, 2, _cfg(steps=1))


# 9. progress -------------------------------------------------------------------------------------


def test_progress_phases_in_order(nnssl_full):
    path, _ = nnssl_full
    train, test = _train_test()
    seen: list[tuple[str, float]] = []
    finetune(_spec(), path, train, test, 2, _cfg(steps=5), progress=lambda s, f: seen.append((s, f)))
    order = [s for i, (s, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != s]
    assert order == ["load", "train", "predict"]
    assert all(0.0 <= f <= 1.0 for _, f in seen)
    for phase in order:
        fr = [f for s, f in seen if s == phase]
        assert fr == sorted(fr) and fr[-1] == 1.0
    assert [f for s, f in seen if s == "predict"] == [0.5, 1.0]
    assert seen[-1] == ("predict", 1.0)


# 10. multi-channel -------------------------------------------------------------------------------


def test_two_channel_cases_repeat_the_stem_and_fine_tune(nnssl_full, monkeypatch):
    path, pretrained = nnssl_full
    train, test = _train_test(channels=2)
    got: dict = {}
    real_build = ft.build_segmentation_net

    def build(fm, num_classes, seed):
        net = real_build(fm, num_classes, seed)
        got["stem"] = net.encoder.stem.convs[0].conv.weight.detach().clone()
        return net

    monkeypatch.setattr(ft, "build_segmentation_net", build)
    r = finetune(_spec(), path, train, test, 2, _cfg(steps=3))
    w1 = pretrained.encoder.stem.convs[0].conv.weight.detach()
    assert w1.shape[1] == 1 and got["stem"].shape[1] == 2
    torch.testing.assert_close(got["stem"], w1.repeat(1, 2, 1, 1, 1) / 2)
    assert math.isfinite(r.dice) and len(r.per_case) == 2 and len(r.losses) == 3


# 11. result --------------------------------------------------------------------------------------


def test_result_to_dict_is_json(nnssl_full):
    path, _ = nnssl_full
    train, test = _train_test()
    cfg = _cfg(steps=4, optimizer="adamw", lr=3e-3)
    r = finetune(_spec(), path, train, test, 2, cfg)
    assert isinstance(r, FinetuneResult)
    d = json.loads(json.dumps(r.to_dict(), allow_nan=False))
    assert d["config"] == cfg.to_dict() and FinetuneConfig.from_dict(d["config"]) == cfg
    assert {"train", "predict", "total"} <= set(d["seconds"]) and all(v >= 0 for v in d["seconds"].values())
    assert d["seconds"]["total"] >= d["seconds"]["train"] + d["seconds"]["predict"]
    assert d["code_version"] == ft.FINETUNE_CODE_VERSION and d["code_version"]
    assert d["recipe"]["optimizer"] == "adamw" and d["recipe"]["threads"] == 1 and d["recipe"]["device"] == "cpu"
    assert {"loss", "sampling", "schedule", "prediction", "decoder"} <= set(d["recipe"])
    assert d["losses"] == [[s, v] for s, v in r.losses] and d["dice"] == r.dice and d["n_train"] == 3 and d["n_test"] == 2


def test_lr_ramp_apart_from_the_encoder_warmup():
    """lr_ramp_steps=0: poly decay from the full rate at step 0 while the encoder is still frozen."""
    cfg = FinetuneConfig(steps=100, encoder_warmup_steps=50, lr_ramp_steps=0, lr=0.01)
    assert ft._lr_at(0, cfg) == pytest.approx(0.01) and ft._lr_at(50, cfg) == pytest.approx(0.01 * 0.5**0.9)
    short = FinetuneConfig(steps=100, encoder_warmup_steps=50, lr_ramp_steps=10, lr=0.01)
    assert ft._lr_at(4, short) == pytest.approx(0.005) and ft._lr_at(10, short) == pytest.approx(0.01)
    assert FinetuneConfig(steps=100, encoder_warmup_steps=50).to_dict() == FinetuneConfig.from_dict(
        FinetuneConfig(steps=100, encoder_warmup_steps=50, lr_ramp_steps=None).to_dict()).to_dict()
    with pytest.raises(ValueError, match="lr_ramp_steps"):
        FinetuneConfig(steps=10, lr_ramp_steps=10)
