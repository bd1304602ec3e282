"""The benchmark zoo v2 (bench/validation/zoo.py): the smoke profile builds every member as a small,
encoder-only nnssl checkpoint the product loads, members differ by construction, the degradation
ladders re-initialise nested filter sets of their base, builds are deterministic single-threaded and
the manifest cache rebuilds only what changed."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.validation import zoo
from models_registry.specs import ModelSpec
from worker.adapters import load_feature_model

THREADS = 1  # bitwise reproducible only single-threaded (MKL / oneDNN reductions vary run to run with more)
SEED = 0
MAX_BYTES = 1_100_000


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[zoo.ZooMember], list[str]]:
    out = tmp_path_factory.mktemp("zoo")
    said: list[str] = []
    members = zoo.build_zoo(out, "smoke", seed=SEED, progress=said.append, threads=THREADS)
    return out, members, said


def _weights(m: zoo.ZooMember) -> dict[str, torch.Tensor]:
    return zoo.load_encoder_weights(m.checkpoint)


def _digest(w: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(w):
        h.update(k.encode())
        h.update(w[k].numpy().tobytes())
    return h.hexdigest()


def _encoder_keys() -> set[str]:
    return {k for k in zoo.build_unet(0).state_dict() if k.startswith("encoder.")}


def test_member_set_and_profiles():
    names = zoo.MEMBER_NAMES
    assert len(names) == 20 and len(set(names)) == 20
    ladders = [n for n in names if zoo.MEMBER_DEFS[n].ladder_of is not None]
    assert ladders == [f"{b}-r{p}" for b in ("sup-tissue", "mae-mix") for p in (25, 50, 75)]
    for n in ladders:
        d = zoo.MEMBER_DEFS[n]
        base = zoo.MEMBER_DEFS[d.ladder_of]
        assert d.reinit == int(n.rsplit("-r", 1)[1]) / 100 and d.run == base.run and d.method == base.method
    realistic = [n for n in names if zoo.MEMBER_DEFS[n].ladder_of is None]
    assert len(realistic) == 14 and all(zoo.MEMBER_DEFS[n].reinit == 0.0 for n in realistic)
    assert [n for n in names if zoo.MEMBER_DEFS[n].objective == "random"] == ["random-a", "random-b"]
    assert {zoo.MEMBER_DEFS[n].objective for n in realistic} == {"random", "supervised", "mae", "simclr", "genesis"}
    assert len({zoo.MEMBER_DEFS[n].run for n in realistic}) == 14  # one run (seeds) per realistic member

    assert set(zoo.ZOO_PROFILES) == {"v2", "smoke"}
    v2 = zoo.ZOO_PROFILES["v2"]
    assert v2.member_names() == names and (v2.batch, v2.brain_bank, v2.ct_bank, v2.cardiac_bank) == (4, 10, 6, 8)
    for prof in zoo.ZOO_PROFILES.values():
        assert prof.member_names() == names
        for n in names:
            d = zoo.MEMBER_DEFS[n]
            want = 0 if d.objective == "random" else prof.steps[d.ladder_of] if d.ladder_of else prof.steps["mae-brain"]
            assert prof.steps[n] == want
    assert v2.steps["mae-mix"] == 1000 and zoo.ZOO_CODE_VERSION == "bench-zoo-2"
    with pytest.raises(ValueError):
        zoo.build_zoo(Path("/nonexistent-unused"), "smoke", members=["no-such-member"])
    with pytest.raises(ValueError):
        zoo.build_zoo(Path("/nonexistent-unused"), "cpu")


def test_smoke_profile_builds_every_member(smoke):
    out, members, said = smoke
    assert [m.name for m in members] == list(zoo.MEMBER_NAMES) and not any(m.cached for m in members)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["code_version"] == zoo.ZOO_CODE_VERSION and set(manifest["members"]) == set(zoo.MEMBER_NAMES)
    for m in members:
        d = zoo.MEMBER_DEFS[m.name]
        assert m.checkpoint == out / m.name / "checkpoint_final.pth"
        plan = json.loads((m.checkpoint.parent / "adaptation_plan.json").read_text())
        assert plan["trainer_name"] == f"toporank.bench.zoo:{m.name}"
        assert manifest["members"][m.name]["sha256"] == m.sha256 and m.method == d.method
        assert m.pretrain["steps"] == zoo.ZOO_PROFILES["smoke"].steps[m.name]
        if d.objective not in ("random", "reinit"):
            p = m.pretrain
            assert p["data_source"] == d.data and np.isfinite(p["first_loss"]) and np.isfinite(p["last_loss"])
        if d.ladder_of:
            assert m.pretrain["ladder_of"] == d.ladder_of and m.pretrain["reinit"] == d.reinit
            assert manifest["members"][m.name]["settings"]["ladder"]["base_settings"] == manifest["members"][d.ladder_of]["settings"]
    assert sum(s.startswith("run ") for s in said) == 14  # ladders train nothing


def test_checkpoints_are_small_encoder_only_and_load_as_feature_models(smoke):
    _, members, _ = smoke
    keys = _encoder_keys()
    for m in members:
        size = m.checkpoint.stat().st_size
        assert 850_000 < size < MAX_BYTES, (m.name, size)
        w = _weights(m)
        assert set(w) == keys, m.name  # encoder.* only: no decoder, no heads
        stem, twin = w["encoder.stem.convs.0.conv.weight"], w["encoder.stem.convs.0.all_modules.0.weight"]
        assert stem.untyped_storage().data_ptr() == twin.untyped_storage().data_ptr()  # one storage in the file
        fm = load_feature_model(ModelSpec(**m.spec), m.checkpoint)
        assert [s.channels for s in fm.encoder_stages] == [8, 16, 32, 64]
        assert fm.preprocessing.spacing == (3.0, 3.0, 3.0) and fm.preprocessing.patch_size == (64, 64, 64)
        assert fm.load_report.sha256 == m.sha256
    params = sum(t.numel() for t in {t.untyped_storage().data_ptr(): t for t in _weights(members[0]).values()}.values())
    assert params == 225_056


def test_members_differ_pairwise(smoke):
    _, members, _ = smoke
    digests = {m.name: _digest(_weights(m)) for m in members}
    assert len(set(digests.values())) == len(members)
    assert len({m.sha256 for m in members}) == len(members)
    a, b = (_weights(next(m for m in members if m.name == n)) for n in ("random-a", "random-b"))
    for k in a:
        if k.endswith("conv.weight"):  # two inits differ in every conv
            assert not torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("base", ["sup-tissue", "mae-mix"])
def test_ladder_rungs_reinitialise_nested_filter_sets(smoke, base):
    _, members, _ = smoke
    by = {m.name: m for m in members}
    bw = _weights(by[base])
    fresh = {k: v for k, v in zoo.ladder_fresh_net(SEED, base).state_dict().items() if k.startswith("encoder.")}
    layers = {n: int(m.conv.out_channels) for n, m in zoo.reinit_layers(zoo.build_unet(0)).items()}
    assert len(layers) == 12 and layers["encoder.stem.convs.0"] == 8
    owner = {k: next(n for n in layers if k.startswith(n + ".")) for k in bw}  # every encoder tensor is in a re-init unit
    previous: dict[str, set[int]] = {n: set() for n in layers}
    for p in zoo.LADDER_FRACTIONS:
        rung = by[f"{base}-r{round(100 * p)}"]
        w = _weights(rung)
        planned = zoo.reinit_filters(SEED, base, p, layers)
        assert rung.pretrain["reinit_filters"] == planned and rung.pretrain["base_sha256"] == by[base].sha256
        changed: dict[str, set[int]] = {n: set() for n in layers}
        for k, v in w.items():
            diff = (v != bw[k]).reshape(v.shape[0], -1).any(1)
            changed[owner[k]] |= {int(j) for j in torch.nonzero(diff).ravel()}
        for n, c in layers.items():
            assert changed[n] == set(planned[n]), (rung.name, n)  # trained vs fresh: every chosen filter differs
            assert len(changed[n]) == round(p * c)
            assert previous[n] < changed[n]  # nested: r25 within r50 within r75
            previous[n] = changed[n]
        for k, v in w.items():
            j = torch.as_tensor(planned[owner[k]], dtype=torch.long)
            keep = torch.ones(v.shape[0], dtype=torch.bool)
            keep[j] = False
            assert torch.equal(v[keep], bw[k][keep]), (rung.name, k)  # the rest is the base, bit for bit
            assert torch.equal(v[j], fresh[k][j]), (rung.name, k)  # the chosen filters are the fresh network's


def test_second_build_is_cached_and_identical(smoke):
    out, members, _ = smoke
    mtimes = {m.name: m.checkpoint.stat().st_mtime_ns for m in members}
    said: list[str] = []
    again = zoo.build_zoo(out, "smoke", seed=SEED, progress=said.append, threads=THREADS)
    assert all(m.cached for m in again) and not any(s.startswith("run ") or "re-initialised" in s for s in said)
    assert [m.sha256 for m in again] == [m.sha256 for m in members]
    assert {m.name: m.checkpoint.stat().st_mtime_ns for m in again} == mtimes


def test_stale_members_and_their_ladders_are_rebuilt_alone_and_identically(smoke, tmp_path: Path):
    out, members, _ = smoke
    copy = tmp_path / "zoo"
    shutil.copytree(out, copy)
    sha = {m.name: m.sha256 for m in members}
    (copy / "mae-mix-r50" / "checkpoint_final.pth").unlink()  # a rung alone
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["members"]["sup-tissue"]["code_version"] = "older"  # a stale base: its rungs follow it
    (copy / "manifest.json").write_text(json.dumps(manifest))
    said: list[str] = []
    rebuilt = zoo.build_zoo(copy, "smoke", seed=SEED, progress=said.append, threads=THREADS)
    assert sorted(m.name for m in rebuilt if not m.cached) == ["mae-mix-r50", "sup-tissue", "sup-tissue-r25", "sup-tissue-r50",
                                                               "sup-tissue-r75"]
    assert {m.name: m.sha256 for m in rebuilt} == sha  # deterministic: same bytes again
    assert [s for s in said if s.startswith("run ")] == ["run sup-tissue: supervised, snapshots [3]"]
    only = zoo.build_zoo(copy, "smoke", seed=SEED, members=["mae-mix-r25"])
    assert [m.name for m in only] == ["mae-mix-r25"] and only[0].cached


def test_a_ladder_alone_builds_its_base_bitwise_as_the_full_build(smoke, tmp_path: Path):
    _, members, _ = smoke
    sha = {m.name: m.sha256 for m in members}
    said: list[str] = []
    got = zoo.build_zoo(tmp_path / "z", "smoke", seed=SEED, members=["sup-tissue-r50"], progress=said.append, threads=THREADS)
    assert [m.name for m in got] == ["sup-tissue-r50"] and got[0].sha256 == sha["sup-tissue-r50"]
    manifest = json.loads((tmp_path / "z" / "manifest.json").read_text())
    assert set(manifest["members"]) == {"sup-tissue", "sup-tissue-r50"}
    assert manifest["members"]["sup-tissue"]["sha256"] == sha["sup-tissue"]  # repeatable single-threaded


def test_ct_banks_window_ct_as_the_ct_tasks_do(smoke):
    from bench.validation import tasks
    from bench.validation.phantoms import abdomen_ct
    from bench.validation.run import TaskInput, model_spec_for_task
    from worker.preprocess import normalize

    dirs = (tasks.TASK_DIR, tasks.RESERVE_DIR, tasks.HELD_OUT_DIR, tasks.HELD_OUT_RESERVE_DIR, tasks.TASK_DIR / "v1")
    ct_tasks = [t for d in dirs for t in tasks.load_tasks([d]) if t.source == "abdomen_phantom"]
    assert len(ct_tasks) >= 4  # liver, ct_structures, ct_spine, v1 abdomen
    _, members, _ = smoke
    for t in ct_tasks:
        assert t.intensity is not None and t.intensity.model_dump(exclude_none=True) == {**zoo.CT_INTENSITY}
        ti = TaskInput(t.name, t.to_dict(), t.spec_hash(), "", "", t.k, t.regime, t.held_out)
        for m in (members[0], next(m for m in members if m.name == "mae-ct")):
            assert ModelSpec(**model_spec_for_task(m, ti)).preprocessing == zoo.ct_preprocessing()

    bank = zoo.PhantomCropBank(np.random.default_rng([SEED, 2]), n=1)
    hu, _ = abdomen_ct(np.random.default_rng([SEED, 2]), (3.0, 3.0, 3.0), augment=True)
    assert np.array_equal(bank.vols[0], normalize(hu[None], zoo.ct_preprocessing())[0])
    assert float(bank.vols[0].min()) == -1.0 and float(bank.vols[0].max()) == 1.0
    assert all(hu[tuple(c)] > zoo.CT_BODY_HU for c in bank.centres[0])
    assert len(bank.centres[0]) == int((hu > zoo.CT_BODY_HU).sum())


def test_cardiac_and_mix_banks():
    from bench.validation.phantoms import cardiac_cine

    bank = zoo.CardiacCropBank(np.random.default_rng([SEED, 7]), n=1)
    img, _ = cardiac_cine(np.random.default_rng([SEED, 7]), (3.0, 3.0, 3.0), augment=True)
    vol = bank.vols[0]
    assert vol.shape == img.shape and abs(float(vol.mean())) < 1e-4 and abs(float(vol.std()) - 1.0) < 1e-3
    assert len(bank.centres[0]) == int((img > zoo.CARDIAC_BODY).sum())
    prof = zoo.ZOO_PROFILES["smoke"]
    cache: dict[str, zoo.CropBank] = {}
    mix = zoo.make_bank(zoo.MIX_SOURCE, prof, SEED, cache)
    parts = [cache[s] for s in (zoo.BRAIN_SOURCE, zoo.CT_SOURCE, zoo.CARDIAC_SOURCE)]
    assert [id(v) for v in mix.vols] == [id(v) for p in parts for v in p.vols]
    assert len(mix.vols) == prof.brain_bank + prof.ct_bank + prof.cardiac_bank
    assert np.array_equal(cache[zoo.CARDIAC_SOURCE].vols[0], vol)  # the cardiac bank of the zoo is this one
    assert mix.batch(3).shape == (3, 1, zoo.CROP, zoo.CROP, zoo.CROP)


@pytest.mark.parametrize(
    ("bank_cls", "n_classes"),
    [(zoo.LabelledCropBank, 3), (zoo.LabelledHemisphereCropBank, 5), (zoo.LabelledPhantomCropBank, 4), (zoo.LabelledCardiacCropBank, 4)],
)
def test_labelled_banks_keep_labels_aligned_with_their_images(bank_cls, n_classes):
    bank = bank_cls(np.random.default_rng(0), n=1)
    vol, lab = bank.vols[0], bank.labels[0]
    assert bank.n_classes == n_classes and vol.shape == lab.shape and min(vol.shape) >= zoo.CROP
    assert set(np.unique(lab)) == set(range(n_classes))  # every class present in the source volume
    mean = [float(vol[lab == c].mean()) for c in range(n_classes)]
    if bank_cls is zoo.LabelledCardiacCropBank:  # blood pools bright, myocardium dark
        assert mean[1] > mean[2] and mean[3] > mean[2]
    else:  # T1 GM / WM and CT organs are brighter than the background they are cut from
        assert all(mean[c] > mean[0] for c in range(1, n_classes))
    if bank_cls is zoo.LabelledHemisphereCropBank:  # left GM / WM (1, 2) vs right (3, 4): RAS, +x is the subject's right
        x = np.arange(lab.shape[0])[:, None, None] * np.ones_like(lab)
        assert x[(lab == 1) | (lab == 2)].mean() < x[(lab == 3) | (lab == 4)].mean()
        assert abs(mean[1] - mean[3]) < 0.2 and mean[2] > mean[1] and mean[4] > mean[3]  # GM darker than WM on both sides
    x, y = bank.labelled_batch(3)
    assert x.shape == (3, 1, zoo.CROP, zoo.CROP, zoo.CROP) and y.shape == (3, zoo.CROP, zoo.CROP, zoo.CROP)
    assert y.dtype == torch.int64 and int(y.max()) < n_classes


def test_supervised_objective_needs_labels():
    with pytest.raises(ValueError, match="labelled crop bank"):
        zoo.SupervisedObjective(zoo.build_unet(0), zoo.CropBank(np.random.default_rng(0), 1), np.random.default_rng(0), 2, "cpu")
