"""The console bell over real HTTP: the signed-in user's pages with an unread count, read marking with CSRF,
browser push opt-in (VAPID key, subscribe/unsubscribe, bad input is a 400), the service worker."""
from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from bot.context import Context
from core.rbac import Actor
from core.webpush import subscriptions
from tests.security.kit import login_form
from tests.stand_ins.push import Browser
from tests.web.console import console_client

OP = Actor("cli:op", "cli")


@pytest.fixture
async def console(make_ctx: Any) -> AsyncIterator[tuple[Context, TestClient]]:
    ctx = await make_ctx(worker={"enabled": False}, console={"session_secret": "bell-test-secret"},
                         contacts=[{"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
                                    "console_user": "otto", "preferences": {"default": ["email", "sms"]}},
                                   {"name": "bob", "email": "bob@example.com"},
                                   {"name": "carol", "email": "carol@example.com"}])
    async with console_client(ctx, {"otto": "operator", "vera": "operator"}) as client:
        yield ctx, client


async def login(client: TestClient, name: str) -> str:
    headers, csrf = await login_form(client)
    resp = await client.post("/login", data={"name": name, "password": f"{name}-password", "next": "/",
                                             "csrf": csrf}, headers=headers, allow_redirects=False)
    assert resp.status == 302, await resp.text()
    page = await (await client.get("/")).text()
    assert 'id="bell-button"' in page
    return re.search(r'<meta name="csrf" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]


async def test_bell_shows_my_pages_and_counts_unread(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    await ctx.service.declare(actor=OP, title="Checkout <failing>", severity="sev2")
    csrf = await login(client, "otto")
    data = await (await client.get("/bell")).json()
    assert data["unread"] == 1  # one page, sent by email and SMS
    [item] = data["items"]
    assert item["incident"] == "INC-1" and item["title"] == "INC-1: Checkout <failing>"
    assert sorted(item["channels"]) == ["email", "sms"] and item["unread"]
    assert (await client.post("/bell/read")).status == 403  # no CSRF token
    assert (await client.post("/bell/read", headers={"X-CSRF-Token": csrf})).status == 200
    assert (await (await client.get("/bell")).json())["unread"] == 0
    ctx.clock.advance(seconds=5)
    await ctx.service.update("INC-1", actor=OP, text="rolling back")
    data = await (await client.get("/bell")).json()
    assert data["unread"] == 1 and data["items"][0]["kind"] == "UPDATE"
    client.session.cookie_jar.clear()
    await login(client, "vera")  # no contact is vera's: nothing to show
    assert await (await client.get("/bell")).json() == {"unread": 0, "items": []}


async def test_push_opt_in_and_out(console: tuple[Context, TestClient]) -> None:
    ctx, client = console
    csrf = await login(client, "otto")
    key = (await (await client.get("/push/key")).json())["public_key"]
    assert key == (await (await client.get("/push/key")).json())["public_key"] and len(key) == 87
    browser = Browser("laptop", "https://push.example/laptop")
    sub = browser.subscription()
    assert (await client.post("/push/subscribe", json=sub)).status == 403
    resp = await client.post("/push/subscribe", json=sub, headers={"X-CSRF-Token": csrf})
    assert resp.status == 201
    assert [s.endpoint for s in await subscriptions(ctx.db, "otto")] == [sub["endpoint"]]
    bad = await client.post("/push/subscribe", json={"endpoint": "https://x", "keys": {}},
                            headers={"X-CSRF-Token": csrf})
    assert bad.status == 400 and "p256dh" in (await bad.json())["error"]
    notjson = await client.post("/push/subscribe", data=b"{", headers={"X-CSRF-Token": csrf})
    assert notjson.status == 400
    resp = await client.post("/push/unsubscribe", json={"endpoint": sub["endpoint"]}, headers={"X-CSRF-Token": csrf})
    assert (await resp.json()) == {"removed": True}
    assert await subscriptions(ctx.db, "otto") == []
    sw = await client.get("/sw.js")
    assert sw.status == 200 and sw.content_type == "application/javascript"
    assert "showNotification" in await sw.text()
