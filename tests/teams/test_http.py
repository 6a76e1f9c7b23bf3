"""Real HTTP: Bot Framework activities posted to /api/messages (auth off), answers recorded by a loopback
Bot Connector; the incident card posted proactively for incidents declared elsewhere. SQLite and PostgreSQL.
"""
from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from bot.context import Context
from bot.server import Runtime, build_app
from core.delivery.message import Envelope, Notification
from core.models import Delivery
from core.rbac import Actor
from tests.teams.helpers import (
    BOT_ID,
    INCIDENT_CONV,
    OPERATOR,
    TEAMS_CONV,
    VIEWER,
    action_titles,
    activity,
    bot_connector,
    card_of,
    card_text,
    execute,
    mention_message,
    plain,
    submit,
    teams_config,
)


@asynccontextmanager
async def teams_server(ctx: Context, **mount_kw: Any) -> AsyncIterator[tuple[str, Runtime]]:
    """Only the Teams mount on a real aiohttp server (no worker racing the tests for deliveries)."""
    from bot.teams.app import mount_teams

    app = web.Application()
    async with aiohttp.ClientSession() as http:
        rt = Runtime(ctx=ctx, app=app, http=http)
        rt.provide(mount_teams(rt, **mount_kw))
        for comp in rt.components:
            await comp.start()
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            yield str(server.make_url("/api/messages")), rt
        finally:
            await server.close()


async def post(url: str, body: Any, *, headers: dict[str, str] | None = None,
               raw: bytes | None = None) -> tuple[int, Any]:
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    data = raw if raw is not None else json.dumps(body).encode()
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=hdrs) as r:
        text = await r.text()
        return r.status, (json.loads(text) if text and "json" in r.headers.get("Content-Type", "") else text)


async def test_conversation_over_http(make_ctx: Callable[..., Any]) -> None:
    """message -> replyToActivity; Action.Execute invoke -> refreshed card in the response;
    Action.Submit -> updateActivity of the card; conversationUpdate -> sendToConversation."""
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url))
        async with teams_server(ctx) as (url, _rt):
            msg = mention_message("incident declare sev1 Database down", service_url=bc.url)
            status, _ = await post(url, msg)
            assert status == 200
            (reply,) = bc.replies(TEAMS_CONV)
            assert reply.path.endswith(f"/activities/{msg['id']}")
            assert plain(reply.json["text"]).startswith("Declared INC-1 [sev1] Database down")
            assert reply.json["replyToId"] == msg["id"] and reply.json["from"]["id"] == BOT_ID
            assert "Database down" in card_text(card_of(reply.json))
            inc = await ctx.service.get(1)
            assert inc.commander == f"teams:{OPERATOR}" and inc.title == "Database down"

            status, body = await post(url, execute("ack", "INC-1", service_url=bc.url))
            assert status == 200, body
            assert body["statusCode"] == 200 and body["type"] == "application/vnd.microsoft.card.adaptive"
            assert "Acknowledged by" in card_text(body["value"]) and "Acknowledge" not in action_titles(body["value"])
            assert (await ctx.service.get(1)).acknowledged_by == f"teams:{OPERATOR}"

            status, _ = await post(url, submit({"tocsin": "resolve", "incident": "INC-1"}, card_id="card-7",
                                               service_url=bc.url))
            assert status == 200
            (update,) = bc.updates(TEAMS_CONV)
            assert update.path == f"/v3/conversations/{TEAMS_CONV}/activities/card-7"
            card = card_of(update.json)
            assert "RESOLVED" in card_text(card) and "actions" in card and action_titles(card) == ["Open incident"]
            assert (await ctx.service.get(1)).state == "resolved"

            hello = activity("conversationUpdate", service_url=bc.url, membersAdded=[{"id": BOT_ID}])
            status, _ = await post(url, hello)
            assert status == 200
            (sent,) = bc.sends(TEAMS_CONV)
            assert "incident help" in plain(sent.json["text"])


async def test_permission_refusal_over_http(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url))
        async with teams_server(ctx) as (url, _rt):
            await post(url, mention_message("incident declare sev2 Slow", service_url=bc.url))
            status, body = await post(url, execute("resolve", "INC-1", user=VIEWER, service_url=bc.url))
            assert status == 200 and "OPEN" in card_text(body["value"])
            refusals = [plain(r.json["text"]) for r in bc.replies(TEAMS_CONV)][1:]
            assert refusals == [(f"Not allowed: teams:{VIEWER} has role VIEWER, which may not send incidents "
                                 "(allowed: ADMIN, MANAGER, OPERATOR)")]
            assert bc.replies(TEAMS_CONV)[1].path.endswith("/activities/card-1")  # in the card's thread
            assert (await ctx.service.get(1)).state == "open"


async def test_malformed_requests_are_400_not_500(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url))
        async with teams_server(ctx) as (url, _rt):
            good = mention_message("incident list", service_url=bc.url)
            cases: list[tuple[str, Any, dict[str, Any]]] = [
                ("not json", None, {"raw": b"{nope"}),
                ("too deep", None, {"raw": b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}),
                ("no content type", good, {"headers": {"Content-Type": "text/plain"}}),
                ("array", [good], {}),
                ("no type", {k: v for k, v in good.items() if k != "type"}, {}),
                ("no serviceUrl", {k: v for k, v in good.items() if k != "serviceUrl"}, {}),
                ("bad serviceUrl", {**good, "serviceUrl": "file:///etc/passwd"}, {}),
                ("no conversation", {k: v for k, v in good.items() if k != "conversation"}, {}),
                ("no from", {k: v for k, v in good.items() if k != "from"}, {}),
                ("from without id", {**good, "from": {"name": "x"}}, {}),
                ("conversation not an object", {**good, "conversation": "19:x"}, {}),
                ("entities not a list", {**good, "entities": {"type": "mention"}}, {}),
            ]
            for name, body, kw in cases:
                status, answer = await post(url, body, **kw)
                assert status in (400, 415), (name, status, answer)
            # invoke without a value, or with an action that is not Action.Execute: botbuilder's 400
            inv = execute("ack", "INC-1", service_url=bc.url)
            status, answer = await post(url, {**inv, "value": None})
            assert status == 400, answer
            assert answer["value"]["message"] == "Missing value property"
            status, answer = await post(url, {**inv, "value": {"action": {"type": "Action.Submit"}}})
            assert status == 400 and answer["value"]["code"] == "NotSupported"
            status, answer = await post(url, {**inv, "value": "ack"})
            assert status == 400
            # an unknown invoke is "not implemented", not a crash
            status, _ = await post(url, {**inv, "name": "composeExtension/query"})
            assert status == 501
            assert bc.peer.requests == []  # nothing was answered to any of them


async def test_card_appears_for_incidents_declared_elsewhere(make_ctx: Callable[..., Any]) -> None:
    """Declared via the service (as the CLI and API do): the queued `chat:teams` delivery posts the card to
    the incident conversation, then each change updates it in place and replies in its thread."""
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url, incident_conversation=INCIDENT_CONV))
        async with teams_server(ctx) as (url, rt):
            deliver = Driver(ctx, rt.chat_senders["chat:teams"])
            await ctx.service.declare(actor=Actor("cli:op", "cli"), title="Disk full on db-1", severity="sev2")
            assert (await deliver()) == ["delivered"]
            (post_,) = bc.sends(INCIDENT_CONV)
            card = card_of(post_.json)
            assert "Disk full on db-1" in card_text(card) and action_titles(card)[0] == "Acknowledge"
            assert post_.json["conversation"]["id"] == INCIDENT_CONV and not post_.json.get("replyToId")
            ref = await ctx.cards.get(1, "teams")
            assert ref is not None and ref.channel == INCIDENT_CONV and ref.message_ref == "srv-1"
            assert ref.extra and ref.extra["reference"]["serviceUrl"] == bc.url

            # someone presses Acknowledge on that card in Teams
            status, body = await post(url, execute("ack", "INC-1", card_id="srv-1", conversation=INCIDENT_CONV,
                                                   service_url=bc.url))
            assert status == 200 and "Acknowledged by" in card_text(body["value"])
            assert (await deliver()) == ["delivered"]
            (put,) = bc.updates(INCIDENT_CONV)
            assert put.path == f"/v3/conversations/{INCIDENT_CONV}/activities/srv-1"
            assert "Acknowledged by" in card_text(card_of(put.json))
            (thread,) = bc.replies(INCIDENT_CONV)
            assert thread.path == f"/v3/conversations/{INCIDENT_CONV};messageid=srv-1/activities/srv-1"
            assert thread.json["replyToId"] == "srv-1"
            assert plain(thread.json["text"]).startswith("Acknowledged")

            await ctx.service.resolve("INC-1", actor=Actor("cli:op", "cli"), text="freed 40 GB")
            assert (await deliver()) == ["delivered"]
            assert "RESOLVED" in card_text(card_of(bc.updates(INCIDENT_CONV)[-1].json))
            assert plain(bc.replies(INCIDENT_CONV)[-1].json["text"]) == "Resolved: freed 40 GB"
            assert len(bc.sends(INCIDENT_CONV)) == 1  # one card per incident, ever


async def test_declared_in_teams_when_cards_follow_goes_to_the_incident_conversation(
        make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url, incident_conversation=INCIDENT_CONV))
        async with teams_server(ctx) as (url, rt):
            await post(url, mention_message("incident declare sev3 Search degraded", service_url=bc.url))
            (reply,) = bc.replies(TEAMS_CONV)
            assert plain(reply.json["text"]).startswith("Declared INC-1") and not reply.json.get("attachments")
            assert (await Driver(ctx, rt.chat_senders["chat:teams"])()) == ["delivered"]
            assert "Search degraded" in card_text(card_of(bc.sends(INCIDENT_CONV)[0].json))


async def test_connector_failures_are_classified(make_ctx: Callable[..., Any]) -> None:
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url, incident_conversation=INCIDENT_CONV))
        async with teams_server(ctx) as (_url, rt):
            sender = rt.chat_senders["chat:teams"]
            await ctx.service.declare(actor=Actor("cli:op", "cli"), title="x", severity="sev3")
            env = await surface_envelopes(ctx)
            bc.peer.script("/v3/conversations/*", (429, {"error": {"code": "Throttled"}}, {"Retry-After": "7"}),
                           (503, None), (403, {"error": {"code": "BotNotInConversationRoster"}}))
            throttled, down, forbidden = [await sender.send(env[0]) for _ in range(3)]
            assert (throttled.outcome, throttled.retry_after, throttled.status_code) == ("retry", 7.0, 429)
            assert (down.outcome, down.status_code) == ("retry", 503)
            assert (forbidden.outcome, forbidden.status_code) == ("permanent", 403)
            assert await ctx.cards.get(1, "teams") is None
            assert (await sender.send(env[0])).outcome == "delivered"


async def test_server_wiring(make_ctx: Callable[..., Any]) -> None:
    """`tocsin run` mounts POST /api/messages and the chat:teams sender from config."""
    ctx = await make_ctx(**teams_config("http://127.0.0.1:9", incident_conversation=INCIDENT_CONV))
    app, rt = await build_app(ctx)
    try:
        routes = {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource is not None}
        assert ("POST", "/api/messages") in routes
        assert "chat:teams" in rt.chat_senders and any(c.name == "teams" for c in rt.components)
    finally:
        await rt.http.close()


# --- helpers ---------------------------------------------------------------------------------------------


async def surface_envelopes(ctx: Context) -> list[Envelope]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.channel == "chat:teams")
                                .order_by(Delivery.id))).scalars().all()
    return [Envelope(delivery_id=r.id, channel=r.channel, recipient=r.recipient, address=r.address,
                     idempotency_key=r.idempotency_key, attempt=1, notification=Notification.from_json(r.notification_json))
            for r in rows]


class Driver:
    """Hands each not-yet-handed `chat:teams` delivery to the sender, as the worker would."""

    def __init__(self, ctx: Context, sender: Any) -> None:
        self.ctx, self.sender, self.done = ctx, sender, set[int]()

    async def __call__(self) -> list[str]:
        out = []
        for env in await surface_envelopes(self.ctx):
            if env.delivery_id not in self.done:
                self.done.add(env.delivery_id)
                out.append((await self.sender.send(env)).outcome)
        return out


async def test_worker_posts_the_card_in_tocsin_run(make_ctx: Callable[..., Any]) -> None:
    """The whole `tocsin run` app: the delivery worker hands the queued `chat:teams` delivery to our sender."""
    async with bot_connector() as bc:
        ctx = await make_ctx(**teams_config(bc.url, incident_conversation=INCIDENT_CONV))
        app, _rt = await build_app(ctx)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            await ctx.service.declare(actor=Actor("cli:op", "cli"), title="Worker-driven card", severity="sev2")
            (posted,) = await bc.peer.wait_for(1, f"/v3/conversations/{INCIDENT_CONV}/activities", timeout=10)
            assert "Worker-driven card" in card_text(card_of(posted.json))
        finally:
            await server.close()
