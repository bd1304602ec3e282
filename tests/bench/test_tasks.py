"""Validation-benchmark task specs (bench/validation/tasks.py) and phantoms: schema, errors,
hashing, deterministic case generation, label content. Small n throughout (< 20 s on 2 cores)."""

from __future__ import annotations

import json

import numpy as np

import pytest

from worker.finetune import FinetuneConfig

from bench.validation import phantoms
from bench.validation.tasks import (
    HELD_OUT_DIR,
    HELD_OUT_RESERVE_DIR,
    RECIPES,
    RESERVE_DIR,
    TASK_DIR,
    TaskSpec,
    TaskSpecError,
    build_cases,
    list_task_files,
    load_tasks,
)

V1_DIR = TASK_DIR / "v1"  # the first benchmark's specs: the schema and recipe tests use them
EXPECTED_K = {"tissue": 2, "brain_mask": 1, "lesions": 1, "tumour": 2, "vessels": 1, "hemisphere_tissue": 4, "abdomen": 3, "cardiac": 3}
V2_K = {
    TASK_DIR: {"tissue": 2, "hemisphere_tissue": 4, "hemisphere_mask": 1, "hemispheres": 2, "liver": 1, "cardiac_cavities": 2,
               "cardiac": 3, "thorax": 6},
    RESERVE_DIR: {"white_matter": 1, "grey_matter": 1},
    HELD_OUT_DIR: {"anterior_mask": 1, "ct_structures": 6, "cardiac_lv": 1},
    HELD_OUT_RESERVE_DIR: {"hemisphere_wm": 2, "ct_spine": 2},
}
GRIDS_3MM = {"mni152": (52, 64, 50), "abdomen_phantom": (100, 83, 50), "cardiac_phantom": (50, 50, 33)}


def _raw(name: str) -> dict:
    return json.loads((V1_DIR / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def specs() -> dict[str, TaskSpec]:
    return {s.name: s for s in load_tasks([V1_DIR])}


@pytest.fixture(scope="module")
def one_case_each(specs):
    return {name: build_cases(s, n_train=1, n_test=0) for name, s in specs.items()}


# ----------------------------------------------------------------------------- specs
def test_v2_specs_by_group_load_and_validate():
    """The benchmark's tuning tasks, reserves and sealed held-out tasks: names, K, groups, 4 + 8 cases,
    distinct seeds across every group, K from 1 to 6 among the tuning tasks."""
    seen_seeds = set()
    for folder, expected in V2_K.items():
        got = {s.name: s for s in load_tasks([folder])}
        assert {n: s.k for n, s in got.items()} == expected, folder
        for s in got.values():
            assert s.held_out == (folder in (HELD_OUT_DIR, HELD_OUT_RESERVE_DIR))
            assert (s.n_train, s.n_test) == (4, 8) and s.spacing == (3.0, 3.0, 3.0)
            assert s.regime == ("ID" if s.source == "mni152" else "OOD")
            FinetuneConfig.from_dict(s.finetune)
            seen_seeds.add(s.seed)
    assert len(seen_seeds) == sum(len(v) for v in V2_K.values())
    assert sorted(set(V2_K[TASK_DIR].values())) == [1, 2, 3, 4, 6]


def test_v2_recipes_label_what_they_say(specs):
    """Every new recipe at 3 mm: all its labels present, sides and planes where the template puts
    them, and the phantom recipes' images equal the plain phantom's (reading `structures` draws nothing)."""
    rng = lambda: np.random.default_rng([5, 0, 0])  # noqa: E731
    sp = (3.0, 3.0, 3.0)
    aug = {k: v for k, v in phantoms.ABDOMEN_AUG.items()}
    img, lab = RECIPES["ct_structures"].fn(rng(), sp, {}, aug)
    plain_img, plain_lab = phantoms.abdomen_ct(rng(), sp, True, aug=aug)
    assert np.array_equal(img, plain_img) and np.array_equal(lab[plain_lab > 0], plain_lab[plain_lab > 0])
    assert set(np.unique(lab)) == set(range(7))
    caug = dict(phantoms.CARDIAC_AUG)
    img, lab = RECIPES["thorax"].fn(rng(), sp, {}, caug)
    plain_img, plain_lab = phantoms.cardiac_cine(rng(), sp, True, aug=caug)
    assert np.array_equal(img, plain_img) and np.array_equal(lab[plain_lab > 0], plain_lab[plain_lab > 0])
    assert set(np.unique(lab)) == set(range(7))
    _, lv = RECIPES["cardiac_lv"].fn(rng(), sp, {}, caug)
    assert np.array_equal(lv == 1, (plain_lab == 1) | (plain_lab == 2))
    _, cav = RECIPES["cardiac_cavities"].fn(rng(), sp, {}, caug)
    assert np.array_equal(cav == 2, plain_lab == 3) and not np.any(cav[plain_lab == 2])
    mni = {k: v for k, v in specs["tissue"].augmentation.model_dump().items()}
    _, tis = RECIPES["tissue"].fn(rng(), sp, {}, mni)
    _, hemi = RECIPES["hemispheres"].fn(rng(), sp, {"midline_mm": 0.0}, mni)
    _, mask = RECIPES["hemisphere_mask"].fn(rng(), sp, {"side": "left", "midline_mm": 0.0}, mni)
    assert np.array_equal(hemi > 0, tis > 0) and np.array_equal(mask == 1, hemi == 1)
    x = np.arange(tis.shape[0])[:, None, None] * np.ones(tis.shape)
    assert x[hemi == 1].mean() < x[hemi == 2].mean()  # RAS: left is low x after the warp too (10 degrees at most)
    _, oct_ = RECIPES["octants"].fn(rng(), sp, {"x_split_mm": 0.0, "y_split_mm": -24.0, "z_split_mm": 10.0}, mni)
    _, lobes = RECIPES["lobes"].fn(rng(), sp, {"midline_mm": 0.0, "frontal_y_mm": -12.0, "temporal_z_mm": 0.0}, mni)
    assert set(np.unique(oct_)) == set(range(9)) and set(np.unique(lobes)) == set(range(7))
    assert np.array_equal((oct_ >= 5), (hemi == 2)) and np.array_equal((lobes >= 4), (hemi == 2))
    _, wm = RECIPES["white_matter"].fn(rng(), sp, {}, mni)
    _, gm = RECIPES["grey_matter"].fn(rng(), sp, {}, mni)
    _, hwm = RECIPES["hemisphere_wm"].fn(rng(), sp, {"midline_mm": 0.0}, mni)
    assert np.array_equal(wm == 1, tis == 2) and np.array_equal(gm == 1, tis == 1) and np.array_equal(hwm > 0, tis == 2)


def test_v1_specs_load_and_validate(specs):
    assert [p.stem for p in list_task_files(V1_DIR)] == sorted(EXPECTED_K)
    assert {n: s.k for n, s in specs.items()} == EXPECTED_K
    assert {n for n, s in specs.items() if s.held_out} == {"tumour", "cardiac"}
    assert len({s.seed for s in specs.values()}) == len(specs)
    for s in specs.values():
        assert s.regime == ("ID" if s.source == "mni152" else "OOD")
        assert s.labels == RECIPES[s.label_recipe].labels and s.labels["background"] == 0
        assert sorted(s.labels.values()) == list(range(s.k + 1))
        assert s.spacing == (3.0, 3.0, 3.0) and s.n_train == 4 and s.n_test == 4
        FinetuneConfig.from_dict(s.finetune)  # the fine-tuner accepts every shipped budget
        again = TaskSpec.from_dict(s.to_dict())
        assert again == s and again.spec_hash() == s.spec_hash()


def test_unknown_keys_are_errors():
    for where, patch in (
        ("'colour'", lambda d: d.update(colour="red")),
        ("'augmentation.blur'", lambda d: d["augmentation"].update(blur=1.0)),
        ("'diameter'", lambda d: d["recipe_params"].update(diameter=3.0)),
    ):
        d = _raw("lesions")
        patch(d)
        with pytest.raises(TaskSpecError, match="unknown key") as e:
            TaskSpec.from_dict(d, origin="x.json")
        assert where in str(e.value) and str(e.value).startswith("x.json: ")


def test_bad_labels_and_values_name_the_field():
    cases = [
        (lambda d: d["labels"].pop("background"), "labels.*background"),
        (lambda d: d["labels"].update(grey_matter=3), "contiguous"),
        (lambda d: d.update(labels={"background": 0, "grey_matter": 1}), r"K = 2.*K = 1"),
        (lambda d: d["labels"].update(grey_matter=2, white_matter=1), "produces"),
        (lambda d: d.update(spacing=[3.0, -1.0, 3.0]), "spacing"),
        (lambda d: d.update(spacing=[3.0, 3.0]), "spacing"),
        (lambda d: d["augmentation"].update(scale=[1.1, 0.9]), "augmentation.scale"),
        (lambda d: d.update(regime="in"), "regime"),
        (lambda d: d.update(label_recipe="nope"), "unknown recipe"),
        (lambda d: d.update(source="abdomen_phantom"), "needs source 'mni152'"),
        (lambda d: d.update(n_train=0), "n_train"),
        (lambda d: d.pop("seed"), "missing required field 'seed'"),
        (lambda d: d.update(name="Has Space"), "name"),
    ]
    for patch, pattern in cases:
        d = _raw("tissue")
        patch(d)
        with pytest.raises(TaskSpecError, match=pattern):
            TaskSpec.from_dict(d)
    d = _raw("lesions")
    d["recipe_params"]["count"] = [5, 2]
    with pytest.raises(TaskSpecError, match=r"recipe_params \(lesions\).*count"):
        TaskSpec.from_dict(d)


def test_spec_hash_stable_and_sensitive(specs):
    s = specs["lesions"]
    d = _raw("lesions")
    shuffled = dict(reversed(list(d.items())))  # key order does not matter
    assert TaskSpec.from_dict(shuffled).spec_hash() == s.spec_hash()
    sparse = {k: v for k, v in d.items() if k not in ("recipe_params", "augmentation", "n_train", "n_test", "spacing")}
    assert TaskSpec.from_dict(sparse).spec_hash() == s.spec_hash()  # the shipped values are the defaults
    for patch in (
        lambda d: d.update(seed=7),
        lambda d: d["augmentation"].update(noise=[0.0, 0.01]),
        lambda d: d["recipe_params"].update(count=[1, 2]),
        lambda d: d["finetune"].update(steps=121),
        lambda d: d.update(held_out=True),
    ):
        d2 = _raw("lesions")
        patch(d2)
        assert TaskSpec.from_dict(d2).spec_hash() != s.spec_hash()
    assert len(s.spec_hash()) == 64


def test_load_tasks_rejects_duplicates_and_misnamed_files(tmp_path):
    d = _raw("brain_mask")
    (tmp_path / "brain_mask.json").write_text(json.dumps(d))
    (tmp_path / "other.json").write_text(json.dumps({**d, "name": "other"}))
    with pytest.raises(TaskSpecError, match="seed 1002 already used"):
        load_tasks([tmp_path])
    (tmp_path / "other.json").write_text(json.dumps({**d, "seed": 5}))
    with pytest.raises(TaskSpecError, match="file is named 'other.json'"):
        load_tasks([tmp_path])
    (tmp_path / "other.json").write_text("{not json")
    with pytest.raises(TaskSpecError, match="cannot read"):
        load_tasks([tmp_path / "other.json"])


# ----------------------------------------------------------------------------- cases
def test_build_cases_deterministic_and_prefix(specs):
    s = specs["tissue"]
    a = build_cases(s, n_train=4, n_test=1, spacing_scale=2.0)  # 6 mm voxels: fast
    b = build_cases(s, n_train=2, n_test=1, spacing_scale=2.0)
    assert len(a.train) == 4 and len(b.train) == 2 and len(a.test) == len(b.test) == 1
    for x, y in zip(b.train + b.test, a.train[:2] + a.test):
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.label, y.label)
    assert not np.array_equal(a.train[0].image, a.test[0].image)
    assert not np.array_equal(a.train[0].image, a.train[1].image)
    assert a.label_names == s.labels and a.k == 2 and a.spacing == (6.0, 6.0, 6.0)


def test_every_case_valid_and_plausible(specs, one_case_each):
    for name, tc in one_case_each.items():
        s = specs[name]
        (c,) = tc.train
        assert c.image.shape == (1, *GRIDS_3MM[s.source]) and c.image.dtype == np.float32
        assert c.label.shape == c.image.shape[1:] and c.label.dtype == np.int64
        assert c.spacing == (3.0, 3.0, 3.0) and np.isfinite(c.image).all()
        counts = np.bincount(c.label.ravel(), minlength=s.k + 1)
        assert len(counts) == s.k + 1 and (counts > 0).all(), (name, counts)
        assert tc.attempts == {}  # no redraws were needed
    frac = {n: np.bincount(tc.train[0].label.ravel()) / tc.train[0].label.size for n, tc in one_case_each.items()}
    assert 0.3 < frac["brain_mask"][1] < 0.5
    assert frac["lesions"][1] < 0.003 and frac["vessels"][1] < 0.02  # small / thin structures
    assert frac["tumour"][1] < frac["tumour"][2] < 0.05
    left, right = frac["hemisphere_tissue"][1:3].sum(), frac["hemisphere_tissue"][3:5].sum()
    assert 0.75 < left / right < 1.33
    lab = one_case_each["abdomen"].train[0].label
    img = one_case_each["abdomen"].train[0].image[0]
    xs = 3.0 * (np.arange(lab.shape[0]) - (lab.shape[0] - 1) / 2)[:, None, None] * np.ones(lab.shape)  # mm
    assert xs[lab == 1].mean() > 20 and xs[lab == 3].mean() < -20  # liver on the right (+x, RAS), spleen left
    assert 40 < np.median(img[lab == 1]) < 80 and img.min() < -900  # HU: liver ~60, air outside
    cl = one_case_each["cardiac"].train[0]
    assert np.median(cl.image[0][cl.label == 1]) > 2 * np.median(cl.image[0][cl.label == 2])  # bright blood, dark myocardium


def test_tissue_recipe_mirrors_make_volume():
    from bench.validation.tasks import MNI_AUG, _recipe_tissue
    from worker.demo_zoo import make_volume

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as build_cases: multi-threaded kernels round differently from call to call
    try:
        img, lab = make_volume(np.random.default_rng(3), (3.0, 3.0, 3.0))
        img2, lab2 = _recipe_tissue(np.random.default_rng(3), (3.0, 3.0, 3.0), {}, MNI_AUG)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_allclose(img, img2, atol=1e-3)


def test_new_spec_file_in_tmp_dir_loads_and_builds(tmp_path):
    spec = {
        "name": "coarse_brain",
        "title": "A spec never seen before",
        "regime": "ID",
        "source": "mni152",
        "label_recipe": "brain_mask",
        "labels": {"background": 0, "brain": 1},
        "spacing": [6, 6, 6],
        "n_train": 1,
        "n_test": 2,
        "augmentation": {"noise": [0.0, 0.0]},
        "seed": 424242,
    }
    (tmp_path / "coarse_brain.json").write_text(json.dumps(spec))
    (s,) = load_tasks([tmp_path])
    assert s.recipe_params == {"threshold": 0.5} and s.augmentation.rotation_deg == 10.0 and s.finetune == {}
    tc = build_cases(s)
    assert len(tc.train) == 1 and len(tc.test) == 2 and tc.k == 1
    assert tc.train[0].label.shape == (26, 32, 25) and tc.spacing == (6.0, 6.0, 6.0)
    assert set(np.unique(tc.test[1].label)) == {0, 1}
    half = build_cases(s, n_train=1, n_test=0, spacing_scale=0.5)  # finer voxels: 3 mm
    assert half.train[0].label.shape == (52, 64, 50) and half.spacing == (3.0, 3.0, 3.0)


# ----------------------------------------------------------------------------- phantoms
@pytest.mark.parametrize("fn,grid", [(phantoms.abdomen_ct, (100, 83, 50)), (phantoms.cardiac_cine, (50, 50, 33))])
def test_phantoms_shapes_labels_determinism(fn, grid):
    img, lab = fn(np.random.default_rng(11), (3.0, 3.0, 3.0))
    assert img.shape == lab.shape == grid and img.dtype == np.float32 and lab.dtype == np.int64
    assert set(np.unique(lab)) == {0, 1, 2, 3} and np.isfinite(img).all()
    img2, lab2 = fn(np.random.default_rng(11), (3.0, 3.0, 3.0))
    np.testing.assert_array_equal(img, img2)
    np.testing.assert_array_equal(lab, lab2)
    img3, _ = fn(np.random.default_rng(12), (3.0, 3.0, 3.0))
    assert not np.array_equal(img, img3)
    # augment=False: canonical anatomy (labels independent of the rng), no noise
    c1, l1 = fn(np.random.default_rng(1), (3.0, 3.0, 3.0), augment=False)
    _, l2 = fn(np.random.default_rng(2), (3.0, 3.0, 3.0), augment=False)
    np.testing.assert_array_equal(l1, l2)
    assert set(np.unique(l1)) == {0, 1, 2, 3}
    # the anatomy does not depend on the voxel size (only the voxel noise is drawn per voxel)
    _, fine = fn(np.random.default_rng(11), (2.5, 2.5, 2.5))
    f3 = np.bincount(lab.ravel(), minlength=4) / lab.size
    f2 = np.bincount(fine.ravel(), minlength=4) / fine.size
    np.testing.assert_allclose(f2[1:], f3[1:], rtol=0.2)


def test_phantom_aug_override_and_errors():
    ident = dict(phantoms.IDENTITY_AUG)
    a, la = phantoms.cardiac_cine(np.random.default_rng(0), (4.0, 4.0, 4.0), aug=ident)
    assert la.max() == 3 and a.dtype == np.float32
    with pytest.raises(ValueError, match="unknown augmentation keys"):
        phantoms.abdomen_ct(np.random.default_rng(0), (4.0, 4.0, 4.0), aug={"blur": 1})
    with pytest.raises(ValueError, match="spacing"):
        phantoms.abdomen_ct(np.random.default_rng(0), (4.0, 0.0, 4.0))


def test_intensity_override_is_validated_and_only_hashed_when_set(specs):
    d = _raw("abdomen")
    assert specs["abdomen"].intensity is not None and specs["abdomen"].intensity.normalization == "ct"
    assert "intensity" not in specs["tissue"].to_dict()  # unset: absent, so older spec hashes hold
    bad = {**d, "intensity": {"normalization": "ct"}}
    with pytest.raises(TaskSpecError, match="intensity"):
        TaskSpec.from_dict(bad)
    other = {**d, "intensity": {"normalization": "ct", "ct_clip": [-100.0, 200.0]}}
    assert TaskSpec.from_dict(other).spec_hash() != specs["abdomen"].spec_hash()


def test_a_ct_task_scores_and_fine_tunes_members_with_ct_windowing(specs, tmp_path):
    from bench.validation.run import TaskInput, model_spec_for_task
    from bench.validation.zoo import build_zoo
    from models_registry.specs import ModelSpec

    member = build_zoo(tmp_path / "zoo", "smoke", members=["random-a"], threads=1)[0]
    t = specs["abdomen"]
    ti = TaskInput(t.name, t.to_dict(), t.spec_hash(), "", "", t.k, t.regime, t.held_out)
    spec = ModelSpec(**model_spec_for_task(member, ti))
    assert spec.preprocessing.normalization == "ct" and spec.preprocessing.ct_clip == (-160.0, 240.0)
    assert spec.preprocessing.spacing == (3.0, 3.0, 3.0) and spec.preprocessing.patch_size == (64, 64, 64)
    brain = specs["tissue"]
    plain = model_spec_for_task(member, TaskInput(brain.name, brain.to_dict(), brain.spec_hash(), "", "", brain.k, brain.regime, False))
    assert plain == member.spec
