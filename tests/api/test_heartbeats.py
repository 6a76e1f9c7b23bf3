"""/api/v1/heartbeats/{name}: POST with an API key, GET with the heartbeat's own token (cron + curl);
Alertmanager's Watchdog alert counts as a ping and opens nothing."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from core.heartbeats import Heartbeats
from core.models import HeartbeatState, Incident
from tests.api.conftest import AM_TOKEN, OPS, VIEWER, am_alert, am_hook, bearer, counts

TOKEN = "hb-secret-0123456789"
BEATS: dict[str, Any] = {
    "heartbeats": [{"name": "nightly-backup", "interval": "24h", "grace": "30m", "token": TOKEN},
                   {"name": "no-token", "interval": "1h"},
                   {"name": "prometheus", "interval": "5m", "grace": "1m"}],
    "alertmanager": {"watchdog": {"heartbeat": "prometheus"}},
}
URL = "/api/v1/heartbeats/nightly-backup"


async def _state(ctx: Any, name: str) -> HeartbeatState | None:
    async with ctx.db.sessions() as s:
        return await s.get(HeartbeatState, name)


async def test_post_with_an_api_key_and_get_with_the_token_ping(make_client: Callable[..., Any]) -> None:
    client, ctx = await make_client(**BEATS)
    resp = await client.post(URL, headers=OPS)
    body = await resp.json()
    assert resp.status == 200 and body["status"] == "ok" and body["recovered"] is None
    resp = await client.get(f"{URL}?token={TOKEN}")
    assert resp.status == 200
    row = await _state(ctx, "nightly-backup")
    assert row is not None and row.pings == 2


async def test_refused_pings_change_nothing(make_client: Callable[..., Any]) -> None:
    client, ctx = await make_client(**BEATS)
    before = await _state(ctx, "nightly-backup")
    cases = [
        (client.get(f"{URL}?token=wrong-token"), 403),
        (client.get(URL), 400),                                   # no token
        (client.get("/api/v1/heartbeats/no-token?token=x"), 403),  # it has no token: API key only
        (client.get(f"/api/v1/heartbeats/nope?token={TOKEN}"), 404),
        (client.post(URL), 401),
        (client.post(URL, headers=VIEWER), 403),
        (client.post("/api/v1/heartbeats/nope", headers=OPS), 404),
    ]
    for request, status in cases:
        resp = await request
        body = await resp.json()
        assert resp.status == status, (status, body)
        assert TOKEN not in str(body)
    after = await _state(ctx, "nightly-backup")
    assert (after.pings if after else 0) == (before.pings if before else 0) == 0


async def test_a_ping_after_a_miss_resolves_it_over_http(make_client: Callable[..., Any]) -> None:
    client, ctx = await make_client(**BEATS)
    beats = Heartbeats(ctx.service)
    await beats.sync()
    ctx.clock.advance(hours=25)
    await beats.check()
    async with ctx.db.sessions() as s:
        inc = (await s.execute(select(Incident).where(Incident.source == "heartbeat",
                                                      Incident.title.contains("nightly-backup")))).scalar_one()
    resp = await client.get(f"{URL}?token={TOKEN}")
    assert (await resp.json())["recovered"] == inc.ref


async def test_the_watchdog_alert_pings_its_heartbeat_and_opens_nothing(make_client: Callable[..., Any]) -> None:
    client, ctx = await make_client(**BEATS)
    before = await counts(ctx)
    hook = am_hook([am_alert("Watchdog", severity="none")], group_key='{}:{alertname="Watchdog"}')
    resp = await client.post("/api/v1/alertmanager", json=hook, headers=bearer(AM_TOKEN))
    body = await resp.json()
    assert resp.status == 200 and body["result"]["action"] == "heartbeat", body
    assert (await _state(ctx, "prometheus")).pings == 1  # type: ignore[union-attr]
    after = await counts(ctx)
    assert after["incidents"] == before["incidents"] and after["seen_keys"] == before["seen_keys"]
    # a Watchdog among other alerts: the others open their incident, the Watchdog pings
    mixed = am_hook([am_alert("Watchdog"), am_alert("DiskFull")], group_key="{}:{}")
    resp = await client.post("/api/v1/alertmanager", json=mixed, headers=bearer(AM_TOKEN))
    body = await resp.json()
    assert body["result"]["action"] == "opened" and body["result"]["firing"] == 1
    assert (await _state(ctx, "prometheus")).pings == 2  # type: ignore[union-attr]
    # a resolved Watchdog is no ping
    gone = am_hook([am_alert("Watchdog", status="resolved")], group_key='{}:{alertname="Watchdog"}')
    resp = await client.post("/api/v1/alertmanager", json=gone, headers=bearer(AM_TOKEN))
    assert (await resp.json())["result"]["action"] == "heartbeat"
    assert (await _state(ctx, "prometheus")).pings == 2  # type: ignore[union-attr]


async def test_without_a_watchdog_heartbeat_the_watchdog_is_an_ordinary_alert(
        make_client: Callable[..., Any]) -> None:
    client, _ctx = await make_client()
    hook = am_hook([am_alert("Watchdog")], group_key='{}:{alertname="Watchdog"}')
    resp = await client.post("/api/v1/alertmanager", json=hook, headers=bearer(AM_TOKEN))
    assert (await resp.json())["result"]["action"] == "opened"
