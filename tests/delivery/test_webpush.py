"""Web Push: VAPID keys generated once and kept in the database, subscriptions per user and browser, pages
that a push-service stand-in decrypts (http-ece, RFC 8291), 404/410 removing the subscription."""
from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from bot.context import Context
from core.config import ConfigHolder
from core.delivery.webpush import WebPushSender
from core.errors import InvalidInput
from core.webpush import subscribe, subscriptions, unsubscribe, vapid_keys
from tests.delivery.helpers import envelope, notification
from tests.stand_ins.http import HttpStandIn, retry_after
from tests.stand_ins.push import PushService

ALICE = {"contacts": [{"name": "alice", "email": "alice@example.com", "console_user": "alice",
                       "preferences": {"default": ["webpush", "email"]}},
                      {"name": "bob", "email": "bob@example.com"}, {"name": "carol", "email": "carol@example.com"}],
         "channels": {"webpush": {"subject": "mailto:ops@example.com", "retry": {"timeout_seconds": 5}}}}


def sender(ctx: Context, http: aiohttp.ClientSession) -> WebPushSender:
    return WebPushSender(ConfigHolder(ctx.cfg), http=http, db=ctx.db)


async def test_vapid_keys_are_made_once_and_kept(ctx: Context) -> None:
    first = await vapid_keys(ctx.db, now=ctx.clock.now())
    again = await vapid_keys(ctx.db, now=ctx.clock.now())
    assert first == again and len(first.public_key) == 87  # 65-byte point, base64url


async def test_page_reaches_every_browser_encrypted(make_ctx: Any, peer: HttpStandIn,
                                                    http: aiohttp.ClientSession) -> None:
    ctx = await make_ctx(**ALICE)
    push = PushService(peer)
    laptop, phone = push.browser("laptop"), push.browser("phone")
    for b in (laptop, phone):
        await subscribe(ctx.db, user="alice", subscription=b.subscription(), user_agent=b.name, now=ctx.clock.now())
    n = notification(links={"Incident": "https://tocsin.example/incidents/12"})
    result = await sender(ctx, http).send(envelope("webpush", "alice", n))
    assert result.outcome == "delivered" and result.summary == "accepted by 2 of 2 browsers", result
    for b in (laptop, phone):
        [msg] = b.received
        assert msg["title"] == "[SEV1] INC-12 Declared: Database <primary> down & out"
        assert msg["url"] == "https://tocsin.example/incidents/12" and msg["require_interaction"] is True
        assert msg["ack_url"] == "https://tocsin.example/ack/tok123"
    keys = await vapid_keys(ctx.db, now=ctx.clock.now())
    assert f"k={keys.public_key}" in peer.requests[0].headers["Authorization"]


@pytest.mark.parametrize("status", [404, 410])
async def test_gone_subscription_is_removed(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession,
                                            status: int) -> None:
    ctx = await make_ctx(**ALICE)
    push = PushService(peer)
    old, new = push.browser("old"), push.browser("new")
    for b in (old, new):
        await subscribe(ctx.db, user="alice", subscription=b.subscription(), user_agent="", now=ctx.clock.now())
    old.gone = status
    result = await sender(ctx, http).send(envelope("webpush", "alice"))
    assert result.outcome == "delivered" and "1 of 2" in result.summary
    assert [s.endpoint for s in await subscriptions(ctx.db, "alice")] == [new.endpoint]
    new.gone = status
    result = await sender(ctx, http).send(envelope("webpush", "alice"))
    assert result.outcome == "permanent" and result.status_code == status
    assert await subscriptions(ctx.db, "alice") == []
    result = await sender(ctx, http).send(envelope("webpush", "alice"))
    assert result.outcome == "permanent" and "no browser subscribed" in result.summary


async def test_throttled_push_service_retries(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ctx = await make_ctx(**ALICE)
    push = PushService(peer)
    b = push.browser("laptop")
    await subscribe(ctx.db, user="alice", subscription=b.subscription(), user_agent="", now=ctx.clock.now())
    peer.script("/push/*", retry_after(4))
    result = await sender(ctx, http).send(envelope("webpush", "alice"))
    assert (result.outcome, result.retry_after) == ("retry", 4.0)
    assert (await sender(ctx, http).send(envelope("webpush", "alice"))).outcome == "delivered"
    assert len(await subscriptions(ctx.db, "alice")) == 1


async def test_subscriptions_per_user_and_browser(ctx: Context) -> None:
    sub = {"endpoint": "https://push.example/abc", "keys": {"p256dh": "B" + "A" * 86, "auth": "A" * 22}}
    await subscribe(ctx.db, user="alice", subscription=sub, user_agent="Firefox", now=ctx.clock.now())
    await subscribe(ctx.db, user="bob", subscription=sub, user_agent="Firefox", now=ctx.clock.now())
    assert await subscriptions(ctx.db, "alice") == []  # one browser belongs to whoever subscribed it last
    assert [s.user_agent for s in await subscriptions(ctx.db, "bob")] == ["Firefox"]
    assert await unsubscribe(ctx.db, user="bob", endpoint=sub["endpoint"])
    for bad, why in (({"endpoint": "ftp://x", "keys": sub["keys"]}, "endpoint"),
                     ({"endpoint": sub["endpoint"], "keys": {"p256dh": "xx", "auth": "A" * 22}}, "p256dh")):
        with pytest.raises(InvalidInput, match=why):
            await subscribe(ctx.db, user="bob", subscription=bad, user_agent="", now=ctx.clock.now())


def test_contact_preferring_webpush_routes_to_its_console_user() -> None:
    from datetime import UTC, datetime

    from core.config import Targets
    from core.routing import resolve_targets
    from tests.conftest import make_config

    cfg = make_config(**ALICE)
    planned, _ = resolve_targets(cfg, Targets(contacts=["alice"]), severity="sev2", now=datetime.now(UTC),
                                 reason="t")
    assert [(d.channel, d.address) for d in planned] == [("webpush", "alice"), ("email", "alice@example.com")]
