"""The OpenAPI document stays in sync with the code: the same routes as the mounted app, request schemas
equal to the pydantic models, and real answers (status and body) that match what it documents."""
from __future__ import annotations

from typing import Any

import pytest

from bot.api import ROUTES
from bot.api.openapi import REF_TEMPLATE, build_document, query_parameters
from bot.server import build_app
from tests.api.conftest import AM_TOKEN, OPS, VIEWER, am_alert, am_hook, bearer, event

DOC = build_document(ROUTES)


def _app_routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if path.startswith("/api/v1") and route.method != "HEAD":
            out.add((route.method, path))
    return out


async def test_every_mounted_route_is_documented_and_vice_versa(ctx: Any) -> None:
    app, rt = await build_app(ctx)
    try:
        documented = {(method.upper(), path) for path, ops in DOC["paths"].items() for method in ops}
        assert _app_routes(app) == documented
    finally:
        await rt.http.close()


def test_request_and_response_schemas_are_the_models() -> None:
    components = DOC["components"]["schemas"]
    for route in ROUTES:
        op = DOC["paths"][route.path][route.method.lower()]
        models = [(route.request, "validation")] if route.request else []
        models += [(m, "serialization") for _d, m in route.responses.values() if m is not None]
        for model, mode in models:
            schema = model.model_json_schema(ref_template=REF_TEMPLATE, mode=mode)
            for name, sub in schema.pop("$defs", {}).items():
                assert components[name] == sub, name
            assert components[model.__name__] == schema, model.__name__
        if route.request:
            assert op["requestBody"]["content"]["application/json"]["schema"] == {
                "$ref": REF_TEMPLATE.format(model=route.request.__name__)}
        if route.query:
            query = [p for p in op.get("parameters", []) if p["in"] == "query"]
            assert query == query_parameters(route.query)
        assert set(op["responses"]) == {str(s) for s in route.responses}


def test_document_is_valid_openapi() -> None:
    validator = pytest.importorskip("openapi_spec_validator", reason="openapi-spec-validator not installed")
    validator.validate(DOC)
    assert DOC["openapi"].startswith("3.")


async def test_served_document_needs_no_key(api: Any) -> None:
    client, _ctx = api
    resp = await client.get("/api/v1/openapi.json")
    body = await resp.json()
    assert resp.status == 200 and body["paths"] == DOC["paths"]
    assert body["servers"] == [{"url": "http://127.0.0.1:8080"}]


async def test_real_answers_match_the_document(api: Any) -> None:
    """Each endpoint's answers, good and bad: the status is documented and the body fits its schema."""
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema not installed")
    client, _ctx = api

    async def check(method: str, template: str, url: str, **kwargs: Any) -> None:
        resp = await client.request(method, url, **kwargs)
        responses = DOC["paths"][template][method.lower()]["responses"]
        assert str(resp.status) in responses, (method, url, resp.status, await resp.text())
        content = responses[str(resp.status)].get("content")
        if content:
            schema = {**content["application/json"]["schema"], "components": DOC["components"]}
            jsonschema.Draft202012Validator(schema).validate(await resp.json())

    ev, am = "/api/v1/events", "/api/v1/alertmanager"
    one, many = "/api/v1/incidents/{id}", "/api/v1/incidents"
    await check("POST", ev, ev, json=event("o1"), headers=OPS)                      # 202
    await check("POST", ev, ev, json=event("o1"), headers=OPS)                      # 200 duplicate
    await check("POST", ev, ev, json=event(event_id=3), headers=OPS)                # 400
    await check("POST", ev, ev, json=event("o3"))                                   # 401
    await check("POST", ev, ev, json=event("o4"), headers=VIEWER)                   # 403
    await check("POST", ev, ev, data=b"x" * (2 * 1024 * 1024), headers=OPS)        # 413
    await check("POST", am, am, json=am_hook([am_alert()]), headers=bearer(AM_TOKEN))
    await check("POST", am, am, json=am_hook([am_alert()], version="9"), headers=bearer(AM_TOKEN))
    await check("GET", many, many + "?state=all", headers=VIEWER)
    await check("GET", many, many + "?state=nope", headers=VIEWER)
    await check("GET", one, "/api/v1/incidents/INC-1", headers=VIEWER)
    await check("GET", one, "/api/v1/incidents/INC-77", headers=VIEWER)
    await check("GET", one, "/api/v1/incidents/x", headers=VIEWER)
    await check("GET", "/api/v1/openapi.json", "/api/v1/openapi.json")
    hb = "/api/v1/heartbeats/{name}"
    await check("POST", hb, "/api/v1/heartbeats/nope", headers=OPS)                 # 404
    await check("POST", hb, "/api/v1/heartbeats/nope")                              # 401
    await check("GET", hb, "/api/v1/heartbeats/nope?token=x")                       # 404
    await check("GET", hb, "/api/v1/heartbeats/nope")                               # 400
