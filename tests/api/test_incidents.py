"""GET /api/v1/incidents and /api/v1/incidents/{id} on SQLite and PostgreSQL."""
from __future__ import annotations

from typing import Any

import pytest

from core.rbac import Actor
from tests.api.conftest import OPS, VIEWER, event

OP = Actor("cli:op")


async def _three(ctx: Any) -> None:
    """INC-1 open, INC-2 monitoring, INC-3 resolved."""
    for title in ("db down", "api slow", "disk full"):
        await ctx.service.declare(actor=OP, title=title, severity="sev2")
    await ctx.service.monitor(2, actor=OP)
    await ctx.service.resolve(3, actor=OP)


@pytest.mark.parametrize(("query", "want"), [
    ("", ["INC-2", "INC-1"]), ("?state=open", ["INC-2", "INC-1"]),
    ("?state=all", ["INC-3", "INC-2", "INC-1"]), ("?state=resolved", ["INC-3"]),
    ("?state=monitoring", ["INC-2"]), ("?state=all&limit=1", ["INC-3"]),
])
async def test_list_filters_by_state(api: Any, query: str, want: list[str]) -> None:
    client, ctx = api
    await _three(ctx)
    resp = await client.get(f"/api/v1/incidents{query}", headers=VIEWER)  # a viewer may read
    body = await resp.json()
    assert resp.status == 200 and [i["ref"] for i in body["incidents"]] == want and body["count"] == len(want)


async def test_cursor_reaches_every_older_incident_and_says_how_many_more(api: Any) -> None:
    client, ctx = api
    for n in range(5):
        await ctx.service.declare(actor=OP, title=f"incident {n}", severity="sev3")
    seen: list[str] = []
    query = "?state=all&limit=2"
    for want_more in (3, 1, 0):
        body = await (await client.get(f"/api/v1/incidents{query}", headers=VIEWER)).json()
        seen += [i["ref"] for i in body["incidents"]]
        assert body["more"] == want_more, body
        if not want_more:
            assert body["next_cursor"] is None
            break
        await ctx.service.declare(actor=OP, title="newer one", severity="sev3")  # a new one does not shift pages
        query = f"?state=all&limit=2&cursor={body['next_cursor']}"
    assert seen == ["INC-5", "INC-4", "INC-3", "INC-2", "INC-1"]


@pytest.mark.parametrize(("query", "field"), [
    ("?state=closed", "state"), ("?limit=0", "limit"), ("?cursor=0", "cursor"), ("?cursor=x", "cursor"), ("?limit=many", "limit"), ("?colour=red", "colour")])
async def test_bad_query_is_400_naming_the_parameter(api: Any, query: str, field: str) -> None:
    client, _ctx = api
    resp = await client.get(f"/api/v1/incidents{query}", headers=OPS)
    body = await resp.json()
    assert resp.status == 400 and body["field"] == field, body


async def test_detail_has_thread_state_changes_and_delivery_status(api: Any) -> None:
    client, ctx = api
    resp = await client.post("/api/v1/events", json=event("d1"), headers=OPS)
    assert resp.status == 202
    await client.post("/api/v1/events", json=event("d2", payload={"message": "patched"}), headers=OPS)
    for ref in ("1", "INC-1", "inc-1"):
        resp = await client.get(f"/api/v1/incidents/{ref}", headers=VIEWER)
        body = await resp.json()
        assert resp.status == 200 and body["ref"] == "INC-1"
    assert [m["kind"] for m in body["thread"]] == ["INITIAL", "UPDATE"]
    assert body["thread"][1]["body"] == "patched" and body["thread"][0]["author"] == "api:ci"
    assert body["state_changes"][0]["to_state"] == "open"
    assert body["deliveries"] and {"recipient", "channel", "status", "attempts"} <= set(body["deliveries"][0])
    assert all("address" not in d for d in body["deliveries"])  # phone numbers and emails stay out
    assert sum(body["delivery_summary"].values()) == len(body["deliveries"])
    assert body["created_at"].endswith("+00:00") or body["created_at"].endswith("Z")
    assert (body["commander"], body["comms"], body["scribe"]) == ("api:ci", None, None)
    from bot.dispatch import run_text
    assert (await run_text(ctx.service, Actor("cli:op", "cli"), "role INC-1 scribe carol"))[1].ok
    body = await (await client.get("/api/v1/incidents/1", headers=VIEWER)).json()
    assert body["scribe"] == "contact:carol" and body["thread"][-1]["kind"] == "ROLE"


async def test_detail_errors(api: Any) -> None:
    client, _ctx = api
    resp = await client.get("/api/v1/incidents/INC-999", headers=OPS)
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await client.get("/api/v1/incidents/banana", headers=OPS)
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_input"
    resp = await client.get("/api/v1/incidents/1")
    assert resp.status == 401
    resp = await client.get("/api/v1/incidents", headers={"Authorization": "Bearer nope"})
    assert resp.status == 401


async def test_an_access_entry_outranks_the_keys_own_role(make_client: Any) -> None:
    # The `ci` key says operator; an explicit access entry lets an admin demote it without a new key.
    client, _ctx = await make_client(access={"api:ci": "viewer"})
    assert (await client.get("/api/v1/incidents", headers=OPS)).status == 200
    resp = await client.post("/api/v1/events", json=event(), headers=OPS)
    assert resp.status == 403 and "VIEWER" in (await resp.json())["message"]
