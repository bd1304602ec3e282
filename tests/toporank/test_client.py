"""toporank.client without a server: API errors carry the API's code and detail, a folder is
zipped on the fly (streamed, chunked) with every file, responses come back as the API's models."""

from __future__ import annotations

import io
import json
import zipfile
from email.parser import BytesParser
from email.policy import HTTP

import httpx
import pytest

from toporank.client import ApiError, Client, _ZipStream

PILOT = {"id": "ps_1", "name": "p", "layout": "nnunet", "labels": {"background": 0, "a": 1}, "K": 1, "n_cases": 2,
         "channels": {"0": "T1"}, "created_at": "2026-12-03T00:00:00Z", "cases": []}


def _multipart_parts(request: httpx.Request) -> dict[str, bytes]:
    raw = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.read()
    msg = BytesParser(policy=HTTP).parsebytes(raw)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True) for part in msg.iter_parts()}


def test_a_folder_is_zipped_on_the_fly_and_streamed(tmp_path):
    folder = tmp_path / "Dataset042_Brain"
    files = {"dataset.json": b"{}", "imagesTr/c_0000.nii.gz": b"\x1f\x8bimage", "labelsTr/c.nii.gz": b"\x1f\x8blabel"}
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["chunked"] = request.headers.get("transfer-encoding") == "chunked"
        seen["parts"] = _multipart_parts(request)
        return httpx.Response(201, json=PILOT)

    with Client("http://toporank", "key", transport=httpx.MockTransport(handler)) as tr:
        ps = tr.upload_pilot_set(folder, name="brain")
    assert ps.id == "ps_1" and ps.n_cases == 2
    assert seen["chunked"]  # no temporary file, no length known up front
    with zipfile.ZipFile(io.BytesIO(seen["parts"]["archive"])) as zf:
        assert {n: zf.read(n) for n in zf.namelist()} == files
    assert seen["parts"]["name"] == b"brain"


def test_api_errors_carry_code_and_detail():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, json={"code": "ranking_not_found", "detail": "no such ranking", "errors": [{"field": "x"}]})

    with Client("http://toporank", "key", transport=httpx.MockTransport(handler)) as tr:
        with pytest.raises(ApiError) as err:
            tr.rank_result("rk_nope")
    assert (err.value.status, err.value.code, err.value.detail) == (404, "ranking_not_found", "no such ranking")
    assert err.value.errors == [{"field": "x"}]


def test_unreachable_server_and_bad_inputs_are_clear(tmp_path):
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with Client("http://toporank", "key", transport=httpx.MockTransport(handler)) as tr:
        with pytest.raises(ApiError) as err:
            tr.list_models()
        assert err.value.code == "unreachable"
        with pytest.raises(FileNotFoundError):
            tr.upload_pilot_set(tmp_path / "missing")
        (tmp_path / "notes.txt").write_text("x")
        with pytest.raises(ValueError, match="archive"):
            tr.upload_pilot_set(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="API key"):
        Client("http://toporank", "")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no files"):
        _ZipStream(tmp_path / "empty")


def test_rank_sends_ids_config_and_idempotency_key():
    sent = {}

    def handler(request: httpx.Request) -> httpx.Response:
        sent["body"] = json.loads(request.content)
        sent["key"] = request.headers.get("idempotency-key")
        return httpx.Response(202, json={
            "id": "rk_1", "status": "queued", "pilot_set_id": "ps_1", "progress": 0.0, "config": {}, "config_hash": "h", "fusion": {},
            "cancel_requested": False, "error": None, "items": [], "created_at": "2026-12-03T00:00:00Z",
            "updated_at": "2026-12-03T00:00:00Z", "finished_at": None,
        })

    with Client("http://toporank", "key", transport=httpx.MockTransport(handler)) as tr:
        job = tr.rank({"id": "ps_1"}, ["mdl_a", "mdl_b"], {"n_samples": 256}, idempotency_key="k1")
    assert job.id == "rk_1" and sent["key"] == "k1"
    assert sent["body"] == {"pilot_set_id": "ps_1", "model_ids": ["mdl_a", "mdl_b"], "config": {"n_samples": 256}}


def test_report_is_saved_as_the_served_page_and_errors_raise(tmp_path):
    page = "<!DOCTYPE html><html><body>report</body></html>"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/rankings/rk_1/report":
            assert request.url.params["partial"] == "false"
            return httpx.Response(200, text=page, headers={"content-type": "text/html; charset=utf-8"})
        return httpx.Response(409, json={"code": "ranking_incomplete", "detail": "ranking is running"})

    with Client("http://toporank", "key", transport=httpx.MockTransport(handler)) as tr:
        out = tr.report("rk_1", tmp_path / "r.html")
        assert out.read_text() == page
        with pytest.raises(ApiError) as err:
            tr.report("rk_2", tmp_path / "x.html")
    assert err.value.code == "ranking_incomplete" and not (tmp_path / "x.html").exists()
