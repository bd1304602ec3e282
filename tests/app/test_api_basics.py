"""Auth, errors, health, readiness, metrics, OpenAPI."""

from __future__ import annotations


def test_healthz_and_openapi(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    spec = api.get("/openapi.json").json()
    for path in ("/v1/models", "/v1/pilot-sets", "/v1/rankings", "/v1/rank", "/v1/rankings/{ranking_id}/evaluation"):
        assert path in spec["paths"]
    assert "multipart/form-data" in spec["paths"]["/v1/models"]["post"]["requestBody"]["content"]
    assert "validating" in spec["paths"]["/v1/models"]["post"]["description"]
    assert api.get("/docs").status_code == 200


def test_auth_missing_and_invalid_key(api, keys):
    r = api.get("/v1/models")
    assert r.status_code == 401 and r.json()["code"] == "missing_api_key"
    r = api.get("/v1/models", headers={"X-API-Key": "trk_nope"})
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
    r = api.get("/v1/models", headers={"X-API-Key": keys["a"]})
    assert r.status_code == 200 and r.json() == {"models": []}


def test_keys_are_stored_hashed(api, keys, sessions):
    from models_registry.tables import ApiKey

    with sessions() as s:
        hashes = [k.key_hash for k in s.query(ApiKey).all()]
    assert len(hashes) == 2
    assert keys["a"] not in hashes and all(len(h) == 64 for h in hashes)


def test_unknown_route_and_validation_error_shape(api, keys):
    r = api.get("/v1/nothing", headers={"X-API-Key": keys["a"]})
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = api.post("/v1/rankings", json={"pilot_set_id": 3}, headers={"X-API-Key": keys["a"]})
    body = r.json()
    assert r.status_code == 422 and body["code"] == "validation_error"
    assert {e["field"] for e in body["errors"]} >= {"model_ids"}


def test_readyz_reflects_broker(api, dispatcher):
    r = api.get("/readyz")
    assert r.status_code == 200 and r.json()["checks"] == {"database": True, "broker": True}
    dispatcher.ok = False
    r = api.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["broker"] is False and r.json()["code"] == "not_ready"


def test_metrics_count_requests_by_route_template(api, keys):
    api.get("/v1/models/mdl_x", headers={"X-API-Key": keys["a"]})
    text = api.get("/metrics").text
    assert 'toporank_http_requests_total{method="GET",route="/v1/models/{model_id}",status="404"} 1.0' in text
    assert "mdl_x" not in text
    assert "toporank_ranking_items" in text


def test_an_unsupported_method_gets_405_with_every_allowed_method(api, keys):
    """OPTIONS and other undeclared methods: 405, a JSON error, and an `Allow` header naming all the
    methods of the path, as the OpenAPI document declares them (Starlette's own named only the first
    route matching the path: POST on /v1/models, which also serves GET)."""
    spec = api.get("/openapi.json").json()
    h = {"X-API-Key": keys["a"]}
    for template, ops in spec["paths"].items():
        path = template.replace("{", "x").replace("}", "")
        declared = sorted(m.upper() for m in ops)
        for method in ("OPTIONS", "PATCH", "PUT"):
            if method in declared:
                continue
            r = api.request(method, path, headers=h)
            assert r.status_code == 405, (method, path, r.status_code)
            assert r.json()["code"] == "method_not_allowed"
            assert sorted(m.strip() for m in r.headers["allow"].split(",")) == declared, (method, path, r.headers["allow"])


def test_operation_ids_are_clean_and_stable(api):
    """Generated clients name their functions after operationIds: the handler's name, not FastAPI's
    `create_ranking_v1_rankings_post`."""
    import re

    spec = api.get("/openapi.json").json()
    ids = {(path, method): op["operationId"] for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert len(set(ids.values())) == len(ids)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids.values()), ids
    assert ids[("/v1/rankings", "post")] == "create_ranking" and ids[("/v1/rank", "get")] == "get_rank"
    assert ids[("/v1/pilot-sets", "post")] == "create_pilot_set" and ids[("/v1/models/{model_id}", "delete")] == "delete_model"
    assert ids[("/v1/rankings/{ranking_id}/evaluation", "post")] == "create_evaluation"


def test_created_objects_link_to_the_operations_that_take_their_ids(api):
    """OpenAPI links (for generated clients and schemathesis' stateful phase): each one names an
    existing operation and one of its parameters, fed from the created object's `id`."""
    spec = api.get("/openapi.json").json()
    ops = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    want = {
        ("/v1/pilot-sets", "201"): {"get_pilot_set", "delete_pilot_set"},
        ("/v1/models", "201"): {"get_model", "delete_model"},
        ("/v1/rankings", "202"): {"get_ranking", "cancel_ranking", "create_evaluation", "get_rank", "create_confirmation"},
    }
    for (path, status), targets in want.items():
        links = spec["paths"][path]["post"]["responses"][status]["links"]
        assert set(links) == targets
        for link in links.values():
            (param, expr), = link["parameters"].items()
            assert expr == "$response.body#/id"
            assert param in {p["name"] for p in ops[link["operationId"]].get("parameters", [])}
    confirmation = spec["paths"]["/v1/rankings/{ranking_id}/confirmations"]["post"]["responses"]["202"]["links"]
    assert set(confirmation) == {"get_confirmation", "cancel_confirmation"}
    for link in confirmation.values():
        assert link["parameters"] == {"ranking_id": "$response.body#/ranking_id", "confirmation_id": "$response.body#/id"}
        assert set(link["parameters"]) == {p["name"] for p in ops[link["operationId"]]["parameters"]}


def test_json_bodies_document_400_and_uploads_refuse_unknown_parts(api, keys):
    spec = api.get("/openapi.json").json()
    for path in ("/v1/rankings", "/v1/rankings/{ranking_id}/evaluation"):
        assert spec["paths"][path]["post"]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")
    r = api.post("/v1/rankings", content=b"\x8f\x18YDL", headers={"X-API-Key": keys["a"], "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "bad_request"  # a body that is not even text (malformed JSON text is 422)
    for path in ("/v1/models", "/v1/pilot-sets"):
        body = spec["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert body["schema"]["additionalProperties"] is False  # the endpoints answer 422 unexpected_field
    assert spec["paths"]["/v1/models"]["post"]["requestBody"]["content"]["multipart/form-data"]["encoding"]["spec"] == {
        "contentType": "application/json"}


def test_times_are_rfc3339_with_an_offset_on_sqlite_too(api, keys):
    """SQLite hands back naive datetimes; the API must still answer `date-time` with an offset."""
    import json
    from datetime import datetime

    h = {"X-API-Key": keys["a"]}
    spec = {"name": "m", "format": "nnssl", "catalog": "demo-resenc-mae"}
    mid = api.post("/v1/models", headers=h, files={"spec": (None, json.dumps(spec)), "checkpoint": ("c", b"x" * 20)}).json()["id"]
    for body in (api.get(f"/v1/models/{mid}", headers=h).json(), api.get("/v1/models", headers=h).json()["models"][0]):
        assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None, body["created_at"]


def test_the_api_key_is_a_security_scheme_not_a_parameter(api):
    spec = api.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey", "in": "header", "name": "X-API-Key", "description": "Tenant API key from `toporank create-tenant`."}
    for path, ops in spec["paths"].items():
        for op in ops.values():
            assert all(p["name"].lower() != "x-api-key" for p in op.get("parameters", [])), path
    assert spec["paths"]["/v1/rankings"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("RankingIn")
    assert spec["components"]["schemas"]["RankingIn"]["properties"]["model_ids"]["uniqueItems"] is True


def test_metrics_declares_the_content_type_it_serves(api):
    spec = api.get("/openapi.json").json()
    declared = spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    served = api.get("/metrics").headers["content-type"].split(";")[0]
    assert list(declared) == ["text/plain"] == [served]


def test_ttl_cache_expires_and_starts_afresh_when_full(monkeypatch):
    from app import cache

    now = [100.0]
    monkeypatch.setattr(cache.time, "monotonic", lambda: now[0])
    c = cache.TTLCache(ttl=5.0, max_size=2)
    c.put("a", 1)
    c.put("b", 2)
    assert (c.get("a"), c.get("b"), c.get("c")) == (1, 2, None)
    now[0] = 105.5
    assert c.get("a") is None  # expired
    c.put("c", 3)  # full: starts afresh
    assert (c.get("b"), c.get("c")) == (None, 3)
    c.clear()
    assert c.get("c") is None


def test_text_the_database_cannot_store_is_refused_or_cleaned(api, keys, tmp_path):
    """NUL characters and lone surrogates (PostgreSQL refuses the first, UTF-8 cannot encode the
    second; the contract fuzzer found both as 500s): an id holding them names nothing (404, no query),
    a model name holding them is invalid (422), a pilot set's name is cleaned."""
    import json

    from tests.utils.archives import nnunet_files, write_zip

    h = {"X-API-Key": keys["a"]}
    for bad in ("ps_%00", "rk_a%00b"):
        assert api.get(f"/v1/pilot-sets/{bad}", headers=h).status_code == 404
        assert api.get(f"/v1/rank?ranking_id={bad}", headers=h).json()["code"] == "ranking_not_found"
        assert api.get(f"/v1/rankings/{bad}/confirmations/cf_x", headers=h).status_code == 404
    spec = {"name": "a\x00b", "format": "nnssl", "catalog": "demo-resenc-mae"}
    r = api.post("/v1/models", headers=h, files={"spec": (None, json.dumps(spec)), "checkpoint": ("c", b"x" * 64)})
    assert r.status_code == 422, r.text
    with open(write_zip(tmp_path / "p.zip", nnunet_files(1)), "rb") as fh:
        ps = api.post("/v1/pilot-sets", headers=h, data={"name": "brain\x00 \x07set"}, files={"archive": ("p.zip", fh)})
    assert ps.status_code == 201 and ps.json()["name"] == "brain set"
    r = api.post("/v1/rankings", headers=h, json={"pilot_set_id": ps.json()["id"], "model_ids": ["mdl_\x00"]})
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    lone = '{"pilot_set_id": "%s", "model_ids": ["mdl_\\ud800"]}' % ps.json()["id"]  # JSON may carry a lone surrogate
    r = api.post("/v1/rankings", headers={**h, "Content-Type": "application/json"}, content=lone)
    assert r.status_code == 404 and r.json()["code"] == "model_not_found"
    r = api.post("/v1/rankings", headers={**h, "Content-Type": "application/json"}, content='{"pilot_set_id": "ps_\\ud800", "model_ids": ["m"]}')
    assert r.status_code == 404 and r.json()["code"] == "pilot_set_not_found"
