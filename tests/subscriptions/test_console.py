"""The console over real HTTP: Follow/Unfollow on the incident page (CSRF, refusals said on the page with a
4xx, nothing stored), and the bell shows the followed incident's news next to the user's own pages."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot.context import Context
from core.models import Delivery, Subscription
from core.rbac import Actor
from tests.security.kit import login_form
from tests.web.console import console_client

OP = Actor("cli:op", "cli")


@pytest.fixture
async def console(make_ctx: Any) -> AsyncIterator[tuple[Context, TestClient]]:
    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "follow-test-secret"},
                         contacts=[{"name": "alice", "email": "alice@example.com", "console_user": "otto"},
                                   {"name": "bob", "email": "bob@example.com"},
                                   {"name": "carol", "email": "carol@example.com", "console_user": "vera"}])
    async with console_client(ctx, {"otto": "operator", "vera": "viewer", "zed": "viewer"}) as client:
        yield ctx, client


async def login(client: TestClient, name: str) -> str:
    client.session.cookie_jar.clear()
    headers, csrf = await login_form(client)
    resp = await client.post("/login", data={"name": name, "password": f"{name}-password", "next": "/",
                                             "csrf": csrf}, headers=headers, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    page = await (await client.get("/")).text()
    return re.search(r'<meta name="csrf" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]


async def follows(ctx: Context) -> list[tuple[str, str, str]]:
    async with ctx.db.sessions() as s:
        return [(r.contact, r.key, r.created_by) for r in (await s.execute(select(Subscription))).scalars()]


async def test_follow_from_the_incident_page_and_the_bell_shows_its_news(console: tuple[Context, TestClient]
                                                                         ) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Checkout failing", severity="sev2")
    csrf = await login(client, "vera")  # carol's console user; carol is not paged for INC-1
    assert await (await client.get("/bell")).json() == {"unread": 0, "items": []}
    page = await (await client.get("/incidents/1")).text()
    assert 'id="follow"' in page and 'id="unfollow"' not in page
    assert (await client.post("/incidents/1/follow", data={})).status == 403  # no CSRF token
    resp = await client.post("/incidents/1/follow", data={"csrf": csrf}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == "/incidents/1?msg=followed"
    page = await (await client.get("/incidents/1?msg=followed")).text()
    assert 'id="unfollow"' in page and "Following: its news reaches you" in page
    assert await follows(ctx) == [("carol", "INC-1", "web:vera")]

    bell = await (await client.get("/bell")).json()
    assert bell["unread"] == 1
    [item] = bell["items"]
    assert (item["incident"], item["kind"], item["channels"], item["followed"]) == ("INC-1", "INITIAL", [], True)
    ctx.clock.advance(seconds=5)
    await ctx.service.update("INC-1", actor=OP, text="rolling back")
    bell = await (await client.get("/bell")).json()
    assert bell["unread"] == 2 and bell["items"][0]["kind"] == "UPDATE" and bell["items"][0]["text"] == "rolling back"
    async with ctx.db.sessions() as s:
        [d] = (await s.execute(select(Delivery).where(Delivery.recipient == "carol"))).scalars().all()
    assert (d.channel, d.purpose) == ("email", "subscription")

    resp = await client.post("/incidents/1/unfollow", data={"csrf": csrf}, allow_redirects=False)
    assert resp.headers["Location"] == "/incidents/1?msg=unfollowed"
    assert await follows(ctx) == []
    assert (await (await client.get("/bell")).json())["items"] == []
    again = await client.post("/incidents/1/unfollow", data={"csrf": csrf})
    assert again.status == 404 and "carol does not follow INC-1" in await again.text()


async def test_a_page_and_a_follow_of_the_same_message_are_one_bell_entry(console: tuple[Context, TestClient]
                                                                           ) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Search slow", severity="sev3")
    csrf = await login(client, "otto")  # alice: routed (oncall) and following
    await client.post("/incidents/1/follow", data={"csrf": csrf})
    await ctx.service.update("INC-1", actor=OP, text="looking")
    bell = await (await client.get("/bell")).json()
    assert [(i["kind"], i["channels"], i["followed"]) for i in bell["items"]] == [
        ("UPDATE", ["email"], True), ("INITIAL", ["email"], True)]
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.recipient == "alice"))).scalars().all()
    assert [d.purpose for d in rows] == ["page", "page"]  # routed: no second copy as a follower


async def test_refusals_are_said_on_the_page_and_store_nothing(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Done", severity="sev4")
    await ctx.service.resolve("INC-1", actor=OP)
    csrf = await login(client, "zed")  # no contact is zed's
    page = await (await client.get("/incidents/1")).text()
    assert 'id="follow-hint"' in page and 'id="follow"' not in page
    resp = await client.post("/incidents/1/follow", data={"csrf": csrf})
    assert resp.status == 400 and "web:zed is not linked to a contact" in await resp.text()
    csrf = await login(client, "vera")
    resp = await client.post("/incidents/1/follow", data={"csrf": csrf})
    assert resp.status == 409 and "INC-1 is resolved: it has no more news to follow" in await resp.text()
    assert (await client.post("/incidents/77/follow", data={"csrf": csrf})).status == 404
    assert await follows(ctx) == []


async def test_escalation_pages_are_in_the_bell_too(make_ctx: Any) -> None:
    """An escalation page is one of the user's pages (purpose `escalation`), so the bell lists it."""
    from core.bell import bell
    from tests.escalation.conftest import policy_config

    ctx = await make_ctx(worker={"enabled": False}, **policy_config(5),
                         contacts=[{"name": "alice", "email": "alice@example.com"},
                                   {"name": "bob", "email": "bob@example.com"},
                                   {"name": "carol", "email": "carol@example.com", "console_user": "vera"}])
    await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    assert (await bell(ctx.db, ctx.cfg, "vera")).items == []  # carol (leads) is level 1, not paged at open
    ctx.clock.advance(seconds=10)
    await ctx.service.escalate("INC-1", actor=OP)
    got = await bell(ctx.db, ctx.cfg, "vera")
    assert got.unread == 1 and [(i["kind"], i["channels"]) for i in got.items] == [("ESCALATION", ["email"])]
