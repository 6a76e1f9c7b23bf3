"""An inbound event matching a maintenance window is accepted, recorded and answered `suppressed`; the
Alertmanager group opens its incident on its first notification after the window; /metrics counts it."""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from core.maintenance import Maintenance
from core.rbac import Actor
from tests.api.conftest import AM_TOKEN, OPS, am_alert, am_hook, bearer, counts, event

MANAGER = Actor("cli:manager", "cli")


async def test_events_and_alertmanager_are_suppressed_then_open(make_client: Callable[..., Any]) -> None:
    client, ctx = await make_client()
    await Maintenance(ctx.service).start(actor=MANAGER, duration=timedelta(hours=1), reason="upgrade")
    before = await counts(ctx)
    resp = await client.post("/api/v1/events", json=event("m1"), headers=OPS)
    body = await resp.json()
    assert resp.status == 202 and body["result"]["action"] == "suppressed", body
    assert "M-1" in body["result"]["note"]
    hook = am_hook([am_alert()])
    resp = await client.post("/api/v1/alertmanager", json=hook, headers=bearer(AM_TOKEN))
    assert (await resp.json())["result"]["action"] == "suppressed"
    after = await counts(ctx)
    assert after["incidents"] == before["incidents"] and after["deliveries"] == before["deliveries"]
    metrics = await (await client.get("/metrics")).text()
    assert "tocsin_maintenance_windows_active 1.0" in metrics
    assert 'tocsin_maintenance_suppressed_total{kind="event"}' in metrics
    ctx.clock.advance(hours=1, seconds=1)
    await Maintenance(ctx.service).expire()
    resp = await client.post("/api/v1/alertmanager", json=hook, headers=bearer(AM_TOKEN))
    assert (await resp.json())["result"]["action"] == "opened"
