"""POST/GET/DELETE /v1/pilot-sets: layouts, safe extraction, NIfTI checks, PHI stripping."""

from __future__ import annotations

import gzip
import tarfile

import nibabel as nib
import numpy as np
import pytest

from tests.utils.archives import PHI, make_case, msd_files, nifti_bytes, nnunet_files, write_tar, write_zip


def post_archive(api, key, path, name=None):  # type: ignore[no-untyped-def]
    data = {"name": name} if name else None
    with open(path, "rb") as fh:
        return api.post("/v1/pilot-sets", headers={"X-API-Key": key}, files={"archive": ("x.zip", fh)}, data=data)


def stored_files(settings):  # type: ignore[no-untyped-def]
    root = settings.storage_root
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_nnunet_upload_and_clean_storage(api, keys, settings, tmp_path, kind):
    files = nnunet_files(n_cases=3, k=2)
    path = tmp_path / f"set.{kind}"
    (write_zip if kind == "zip" else write_tar)(path, files)
    r = post_archive(api, keys["a"], path, name="liver pilot")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["layout"] == "nnunet" and body["K"] == 2 and body["name"] == "liver pilot"
    assert body["labels"] == {"background": 0, "class1": 1, "class2": 2}
    assert body["n_cases"] == 3 and len(body["cases"]) == 3
    for i, case in enumerate(body["cases"]):
        _, label = make_case(i)
        assert case["id"].startswith("case_") and "patient" not in case["id"]
        assert case["shape"] == [24, 24, 24] and case["spacing"] == pytest.approx([1.5, 1.5, 2.0])
        assert case["voxels_per_class"] == {str(c): int((label == c).sum()) for c in range(3)}
    stored = stored_files(settings)
    assert all("patient" not in str(p) for p in stored)
    assert len(stored) == 6
    for p in stored:
        raw = gzip.decompress(p.read_bytes())[:352]
        assert PHI not in raw and b"jane_roe" not in raw
        hdr = nib.load(p).header
        assert bytes(hdr["descrip"]).strip(b"\x00") == b"" and bytes(hdr["aux_file"]).strip(b"\x00") == b""
    # stored data are the uploaded voxels, geometry kept
    case0 = settings.storage_root.rglob(f"{body['cases'][0]['id']}/image_0000.nii.gz").__next__()
    imgs, lab = make_case(0)
    stored_img = nib.load(case0)
    np.testing.assert_allclose(stored_img.get_fdata(), imgs[0], rtol=0, atol=1e-4)
    assert stored_img.header.get_zooms() == pytest.approx((1.5, 1.5, 2.0))
    np.testing.assert_allclose(stored_img.affine[:3, 3], [-10.0, 5.0, 2.5])
    lab_stored = nib.load(case0.parent / "label.nii.gz")
    np.testing.assert_array_equal(np.asarray(lab_stored.dataobj), lab)


def test_msd_layout_multichannel(api, keys, tmp_path):
    r = post_archive(api, keys["a"], write_tar(tmp_path / "msd.tar.gz", msd_files(n_cases=2, channels=2)))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["layout"] == "msd" and body["channels"] == {"0": "MR0", "1": "MR1"} and body["K"] == 2
    assert [c["n_channels"] for c in body["cases"]] == [2, 2]


def test_get_list_delete_isolation_and_hard_delete(api, keys, settings, tmp_path):
    ha, hb = {"X-API-Key": keys["a"]}, {"X-API-Key": keys["b"]}
    ps = post_archive(api, keys["a"], write_zip(tmp_path / "a.zip", nnunet_files(2))).json()
    assert api.get(f"/v1/pilot-sets/{ps['id']}", headers=ha).json()["cases"] == ps["cases"]
    assert [p["id"] for p in api.get("/v1/pilot-sets", headers=ha).json()["pilot_sets"]] == [ps["id"]]
    assert api.get("/v1/pilot-sets", headers=hb).json()["pilot_sets"] == []
    assert api.get(f"/v1/pilot-sets/{ps['id']}", headers=hb).status_code == 404
    assert api.delete(f"/v1/pilot-sets/{ps['id']}", headers=hb).status_code == 404
    assert stored_files(settings)
    assert api.delete(f"/v1/pilot-sets/{ps['id']}", headers=ha).status_code == 204
    assert stored_files(settings) == []
    assert api.get(f"/v1/pilot-sets/{ps['id']}", headers=ha).status_code == 404


def _expect(api, key, path, status, code, settings, problem_file=None):  # type: ignore[no-untyped-def]
    r = post_archive(api, key, path)
    body = r.json()
    assert r.status_code == status, body
    assert body["code"] == code, body
    if problem_file is not None:
        assert any(problem_file in e["file"] for e in body["errors"]), body
    assert stored_files(settings) == []  # nothing kept, nothing half-written
    return body


def test_traversal_and_absolute_paths_rejected(api, keys, settings, tmp_path):
    files = nnunet_files(1)
    _expect(api, keys["a"], write_zip(tmp_path / "t.zip", {**files, "../../evil.txt": b"x"}), 422, "unsafe_archive", settings, "evil")
    _expect(api, keys["a"], write_tar(tmp_path / "t.tar.gz", {**files, "/etc/evil": b"x"}), 422, "unsafe_archive", settings, "evil")
    assert not (tmp_path.parent / "evil.txt").exists()


def test_symlinks_and_devices_rejected(api, keys, settings, tmp_path):
    files = nnunet_files(1)
    _expect(api, keys["a"], write_zip(tmp_path / "s.zip", files, symlinks={"Dataset001_Tiny/link": "/etc/passwd"}),
            422, "unsafe_archive", settings, "link")

    def add_symlink(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("Dataset001_Tiny/imagesTr/link_0000.nii.gz")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(info)

    def add_device(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("Dataset001_Tiny/dev")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)

    _expect(api, keys["a"], write_tar(tmp_path / "s.tar.gz", files, add_symlink), 422, "unsafe_archive", settings, "link")
    _expect(api, keys["a"], write_tar(tmp_path / "d.tar.gz", files, add_device), 422, "unsafe_archive", settings, "dev")


def test_oversized_upload_and_bombs(api, keys, settings, tmp_path):
    big = tmp_path / "big.zip"
    big.write_bytes(b"PK\x03\x04" + b"\x00" * (settings.max_upload_bytes + 100))
    r = post_archive(api, keys["a"], big)
    assert r.status_code == 413 and r.json()["code"] == "upload_too_large"
    # a highly compressible payload trips the ratio cap before it is fully written
    bomb = tmp_path / "bomb.tar.gz"
    write_tar(bomb, {**nnunet_files(1), "Dataset001_Tiny/zeros.bin": b"\x00" * (300 << 20)})
    assert bomb.stat().st_size < settings.max_upload_bytes
    _expect(api, keys["a"], bomb, 413, "archive_ratio_exceeded", settings)


def test_oversized_nifti_rejected_from_header(api, keys, settings, tmp_path, monkeypatch):
    ctx = api.app.state.ctx
    monkeypatch.setattr(ctx.settings, "max_case_voxels", 20 * 20 * 20)
    body = _expect(api, keys["a"], write_zip(tmp_path / "o.zip", nnunet_files(1)), 422, "invalid_pilot_set", settings)
    assert "more than the limit" in body["errors"][0]["problem"]


def test_mismatched_shapes_and_affines(api, keys, settings, tmp_path):
    files = nnunet_files(2)
    _, label = make_case(1, shape=(24, 24, 20))
    files["Dataset001_Tiny/labelsTr/patient001.nii.gz"] = nifti_bytes(label)
    body = _expect(api, keys["a"], write_zip(tmp_path / "m.zip", files), 422, "invalid_pilot_set", settings, "patient001_0000")
    assert "shape" in body["errors"][0]["problem"]
    files = nnunet_files(1)
    _, label = make_case(0)
    shifted = np.diag([1.5, 1.5, 2.0, 1.0])
    shifted[:3, 3] = [0.0, 0.0, 40.0]
    files["Dataset001_Tiny/labelsTr/patient000.nii.gz"] = nifti_bytes(label, affine=shifted)
    body = _expect(api, keys["a"], write_zip(tmp_path / "a.zip", files), 422, "invalid_pilot_set", settings)
    assert "affine" in body["errors"][0]["problem"]


def test_wrong_labels_nan_images_and_bad_dataset_json(api, keys, settings, tmp_path):
    files = nnunet_files(1, k=2)
    _, label = make_case(0)
    label[0, 0, 0] = 5
    files["Dataset001_Tiny/labelsTr/patient000.nii.gz"] = nifti_bytes(label)
    body = _expect(api, keys["a"], write_zip(tmp_path / "l.zip", files), 422, "invalid_pilot_set", settings, "labelsTr/patient000")
    assert "label value 5" in body["errors"][0]["problem"]

    files = nnunet_files(1)
    imgs, _ = make_case(0)
    imgs[0][3, 3, 3] = np.nan
    files["Dataset001_Tiny/imagesTr/patient000_0000.nii.gz"] = nifti_bytes(imgs[0])
    body = _expect(api, keys["a"], write_zip(tmp_path / "n.zip", files), 422, "invalid_pilot_set", settings)
    assert "NaN" in body["errors"][0]["problem"]

    files = nnunet_files(1)
    files["Dataset001_Tiny/dataset.json"] = b'{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": [1, 2]}, "file_ending": ".nii.gz"}'
    _expect(api, keys["a"], write_zip(tmp_path / "r.zip", files), 422, "invalid_labels", settings)
    files.pop("Dataset001_Tiny/dataset.json")
    _expect(api, keys["a"], write_zip(tmp_path / "j.zip", files), 422, "missing_dataset_json", settings)

    files = nnunet_files(1)
    files.pop("Dataset001_Tiny/labelsTr/patient000.nii.gz")
    _expect(api, keys["a"], write_zip(tmp_path / "u.zip", files), 422, "invalid_pilot_set", settings, "patient000_0000")


def test_not_an_archive_and_not_nifti(api, keys, settings, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello world" * 100)
    _expect(api, keys["a"], junk, 415, "unsupported_archive", settings)
    files = nnunet_files(1)
    files["Dataset001_Tiny/imagesTr/patient000_0000.nii.gz"] = gzip.compress(b"not a nifti" * 100)
    body = _expect(api, keys["a"], write_zip(tmp_path / "x.zip", files), 422, "invalid_pilot_set", settings)
    assert "NIfTI" in body["errors"][0]["problem"]


def test_truncated_nifti_data(api, keys, settings, tmp_path):
    files = nnunet_files(1)
    imgs, _ = make_case(0)
    raw = gzip.decompress(nifti_bytes(imgs[0]))
    files["Dataset001_Tiny/imagesTr/patient000_0000.nii.gz"] = gzip.compress(raw[: len(raw) // 2])
    body = _expect(api, keys["a"], write_zip(tmp_path / "tr.zip", files), 422, "invalid_pilot_set", settings)
    assert "truncated" in body["errors"][0]["problem"]


def test_client_names_never_logged(api, keys, settings, tmp_path, caplog):
    files = nnunet_files(1)
    files["Dataset001_Tiny/../secret_patient_name.txt"] = b"x"
    with caplog.at_level("DEBUG"):
        post_archive(api, keys["a"], write_zip(tmp_path / "p.zip", files))
        post_archive(api, keys["a"], write_zip(tmp_path / "q.zip", nnunet_files(1)))
    assert "secret_patient_name" not in caplog.text and "patient000" not in caplog.text
