"""API test kit: a config with API keys and Alertmanager credentials, and a client for the real app
(bot.server.build_app) served by aiohttp's TestServer on loopback."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select

from bot.context import Context
from bot.server import build_app
from core.models import AuditEntry, Delivery, Incident, IncidentMessage, SeenKey
from tests.conftest import deep_merge

OPS_KEY = "tk-ops-4f1c2a9b7e"
VIEW_KEY = "tk-view-8d3e5f60aa"
AM_TOKEN = "am-token-1b2c3d4e5f"
AM_USER, AM_PASSWORD = "alertmanager", "am-pass-9a8b7c6d"

API_CONFIG: dict[str, Any] = {
    "api": {"keys": [{"name": "ci", "key": OPS_KEY, "role": "operator"},
                     {"name": "dashboard", "key": VIEW_KEY, "role": "viewer"}]},
    "alertmanager": {"bearer_token": AM_TOKEN, "username": AM_USER, "password": AM_PASSWORD},
}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


OPS = bearer(OPS_KEY)
VIEWER = bearer(VIEW_KEY)


def event(event_id: str = "evt-1", **over: Any) -> dict[str, Any]:
    """A valid /api/v1/events body (the seed's NotificationEvent shape)."""
    body: dict[str, Any] = {
        "event_type": "scan.complete", "event_id": event_id, "timestamp": "2026-01-01T10:30:00Z",
        "tenant_id": "acme-corp",
        "payload": {"title": "nginx image has critical CVEs", "severity": "critical", "verdict": "FAIL"},
        "metadata": {"source_service": "scanner", "correlation_id": "scan-7f3a"},
    }
    return deep_merge(body, over)


def am_alert(name: str = "HighLatency", *, instance: str = "db1", status: str = "firing",
             severity: str = "critical", fingerprint: str | None = None) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, "instance": instance, "severity": severity},
            "annotations": {"summary": f"{name} on {instance}"},
            "startsAt": "2026-01-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-01-01T10:05:00Z",
            "generatorURL": "http://prometheus.local/graph",
            "fingerprint": fingerprint or f"fp-{name}-{instance}"}


def am_hook(alerts: list[dict[str, Any]], *, status: str | None = None,
            group_key: str = '{}:{alertname="HighLatency"}', **over: Any) -> dict[str, Any]:
    """An Alertmanager webhook body, version 4."""
    firing = any(a["status"] == "firing" for a in alerts)
    body = {"version": "4", "groupKey": group_key, "truncatedAlerts": 0,
            "status": status or ("firing" if firing else "resolved"), "receiver": "tocsin",
            "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
            "commonLabels": {"alertname": alerts[0]["labels"]["alertname"]}, "commonAnnotations": {},
            "externalURL": "http://alertmanager.local", "alerts": alerts}
    body.update(over)
    return body


async def counts(ctx: Context) -> dict[str, int]:
    """Rows per table that an inbound request may write: all zero after a refused request. The delivery
    worker's own audit entries (delivery.*) are left out: it runs in the app and sends in the background."""
    out = {}
    async with ctx.db.sessions() as s:
        for name, model in (("incidents", Incident), ("messages", IncidentMessage), ("deliveries", Delivery),
                            ("seen_keys", SeenKey)):
            out[name] = int((await s.execute(select(func.count()).select_from(model))).scalar_one())
        out["audit"] = int((await s.execute(select(func.count()).select_from(AuditEntry)
                                            .where(AuditEntry.action.not_like("delivery.%")))).scalar_one())
    return out


@pytest.fixture
async def make_client(make_ctx: Callable[..., Any]) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `client, ctx = await make_client(**config_overrides)`, the app served on 127.0.0.1."""
    clients: list[TestClient] = []

    async def factory(**overrides: Any) -> tuple[TestClient, Context]:
        ctx = await make_ctx(**deep_merge(API_CONFIG, overrides))
        app, _rt = await build_app(ctx)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client, ctx

    yield factory
    for c in clients:
        await c.close()


@pytest.fixture
async def api(make_client: Callable[..., Any]) -> tuple[TestClient, Context]:
    client, ctx = await make_client()
    return client, ctx
