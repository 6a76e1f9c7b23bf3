"""The OpenAPI 3.1 document of /api/v1, generated from the route table and the pydantic models (so the
document and the code cannot disagree; tests/api/test_openapi.py checks it against the mounted app)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from bot.api.http import Route

REF_TEMPLATE = "#/components/schemas/{model}"
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {"type": "http", "scheme": "bearer",
               "description": "An API key from `api.keys` in config.yaml (`Authorization: Bearer <key>`); "
                              "the key's role decides what it may do."},
    "alertmanagerBearer": {
        "type": "http", "scheme": "bearer",
        "description": "`alertmanager.bearer_token` (Alertmanager http_config authorization)."},
    "alertmanagerBasic": {
        "type": "http", "scheme": "basic",
        "description": "`alertmanager.username`/`password` (Alertmanager http_config basic_auth)."},
}
_PATH_PARAM = re.compile(r"\{(\w+)\}")
PATH_PARAM_DOCS = {"id": "Incident id: `INC-12` or `12`.", "name": "Heartbeat name (config `heartbeats`)."}


def _models(routes: Sequence[Route]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    """Request bodies in validation mode (what we accept), responses in serialization mode (what we send)."""
    out: list[tuple[type[BaseModel], JsonSchemaMode]] = []
    for r in routes:
        if r.request is not None and (r.request, "validation") not in out:
            out.append((r.request, "validation"))
        for _desc, model in r.responses.values():
            if model is not None and (model, "serialization") not in out:
                out.append((model, "serialization"))
    return out


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF_TEMPLATE)
    required = set(schema.get("required", []))
    params = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        description = prop.pop("description", "")
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": "query", "required": name in required, "schema": prop}
        if description:
            param["description"] = description
        params.append(param)
    return params


def build_document(routes: Sequence[Route], *, server_url: str | None = None) -> dict[str, Any]:
    refs, defs = models_json_schema(_models(routes), ref_template=REF_TEMPLATE)
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {"summary": r.summary, "operationId": r.handler.__name__,
                              "tags": list(r.tags) or ["api"]}
        params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
                   "description": PATH_PARAM_DOCS.get(name, name)} for name in _PATH_PARAM.findall(r.path)]
        if r.query is not None:
            params += query_parameters(r.query)
        if params:
            op["parameters"] = params
        if r.request is not None:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": refs[(r.request, "validation")]}}}
        responses: dict[str, Any] = {}
        for status, (desc, model) in sorted(r.responses.items()):
            resp: dict[str, Any] = {"description": desc}
            if model is not None:
                resp["content"] = {"application/json": {"schema": refs[(model, "serialization")]}}
            responses[str(status)] = resp
        op["responses"] = responses
        op["security"] = [{name: []} for name in r.security]
        paths.setdefault(r.path, {})[r.method.lower()] = op
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Tocsin API", "version": "1",
                 "description": "Inbound events, the Prometheus Alertmanager receiver and the incident read "
                                "API. Errors are JSON: `{error, message, field, details}`."},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }
    if server_url:
        doc["servers"] = [{"url": server_url.rstrip("/")}]
    return doc
