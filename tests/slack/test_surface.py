"""SlackSurface behind SurfaceSender: Slack's answers become delivered / retry(after) / permanent, so the
queue (not the incident) absorbs Slack's failures. Runs on SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.surface import SlackSurface
from bot.surface import SurfaceSender
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.rbac import Actor
from tests.conftest import free_port
from tests.slack.conftest import slack_config
from tests.slack.standin import BOT_TOKEN, INCIDENT_CHANNEL, SlackApi
from tests.stand_ins.http import hang, retry_after

OP = Actor("cli:op", "cli")


async def make_sender(make_ctx: Callable[..., Any], api: SlackApi, *, base_url: str | None = None,
                      timeout: int = 10) -> tuple[Any, SurfaceSender]:
    ctx = await make_ctx(slack=slack_config(api))
    client = AsyncWebClient(token=BOT_TOKEN, base_url=base_url or api.base_url, timeout=timeout,
                            retry_handlers=[])
    surface = SlackSurface(client, channel=INCIDENT_CHANNEL, clock=ctx.clock)
    return ctx, SurfaceSender(surface, service=ctx.service, cards=ctx.cards)


def envelope(incident_id: int, kind: str = "INITIAL", body: str = "") -> Envelope:
    return Envelope(delivery_id=1, channel="chat:slack", recipient="surface:slack", address=str(incident_id),
                    idempotency_key="k", attempt=1,
                    notification=Notification(kind=kind, title="t", body=body))


async def test_post_then_update_and_reply_in_thread(make_ctx: Callable[..., Any],
                                                    slack_api: SlackApi) -> None:
    ctx, sender = await make_sender(make_ctx, slack_api)
    await ctx.service.declare(actor=OP, title="Edge 502s", severity="sev2")
    assert (await sender.send(envelope(1))).outcome == "delivered"
    ref = await ctx.cards.get(1, "slack")
    assert ref is not None and (ref.channel, ref.message_ref) == (INCIDENT_CHANNEL, "1700000000.000001")
    await ctx.service.bridge(1, actor=OP, details="https://meet.example/abc")
    result = await sender.send(envelope(1, "BRIDGE", "https://meet.example/abc"))
    assert result == DeliveryResult.ok("card updated CINCIDENTS/1700000000.000001")
    [upd] = slack_api.calls("chat.update")
    assert upd["ts"] == ref.message_ref
    reply = slack_api.calls("chat.postMessage")[-1]
    assert reply["thread_ts"] == ref.message_ref and reply["text"].startswith(":telephone_receiver: *Bridge*")


@pytest.mark.parametrize(("reply", "outcome", "after", "status"), [
    (retry_after(7, body={"ok": False, "error": "ratelimited"}), "retry", 7.0, 429),
    (retry_after(3), "retry", 3.0, 429),                                      # 429 with no body at all
    ((500, {"ok": False, "error": "internal_error"}), "retry", None, 500),
    ((503, "upstream gone"), "retry", None, 503),                            # not even JSON
    ((200, {"ok": False, "error": "ratelimited"}), "retry", None, 200),
    ((200, {"ok": False, "error": "channel_not_found"}), "permanent", None, 200),
    ((200, {"ok": False, "error": "invalid_auth"}), "permanent", None, 200),
    ((200, {"ok": False, "error": "invalid_blocks"}), "permanent", None, 200),
])
async def test_slack_errors_are_classified(make_ctx: Callable[..., Any], slack_api: SlackApi, reply: Any,
                                           outcome: str, after: float | None, status: int) -> None:
    ctx, sender = await make_sender(make_ctx, slack_api)
    await ctx.service.declare(actor=OP, title="x", severity="sev3")
    slack_api.script("/api/chat.postMessage", reply)
    result = await sender.send(envelope(1))
    assert (result.outcome, result.retry_after, result.status_code) == (outcome, after, status)
    assert await ctx.cards.get(1, "slack") is None  # nothing recorded: the next attempt posts again


async def test_429_on_card_update_goes_back_to_the_queue(make_ctx: Callable[..., Any],
                                                         slack_api: SlackApi) -> None:
    ctx, sender = await make_sender(make_ctx, slack_api)
    await ctx.service.declare(actor=OP, title="x", severity="sev3")
    await sender.send(envelope(1))
    slack_api.script("/api/chat.update", retry_after(12))
    out = await ctx.service.acknowledge(1, actor=OP)  # the incident changes whatever Slack says
    assert out.incident is not None and out.incident.acknowledged_by == "cli:op"
    result = await sender.send(envelope(1, "ACK", "Acknowledged by cli:op"))
    assert (result.outcome, result.retry_after) == ("retry", 12.0)
    assert len(slack_api.calls("chat.update")) == 1  # no waiting inside the sender
    assert (await sender.send(envelope(1, "ACK", "Acknowledged by cli:op"))).outcome == "delivered"


async def test_unreachable_and_slow_slack_retry_later(make_ctx: Callable[..., Any],
                                                      slack_api: SlackApi) -> None:
    ctx, sender = await make_sender(make_ctx, slack_api, base_url=f"http://127.0.0.1:{free_port()}/api/")
    await ctx.service.declare(actor=OP, title="x", severity="sev3")
    result = await sender.send(envelope(1))
    assert result.outcome == "retry" and "ClientConnectorError" in result.summary

    _, slow = await make_sender(make_ctx, slack_api, timeout=1)
    slack_api.script("/api/chat.postMessage", hang(5))
    result = await slow.send(envelope(1))
    assert result.outcome == "retry" and "Timeout" in result.summary


async def test_unknown_incident_is_permanent(make_ctx: Callable[..., Any], slack_api: SlackApi) -> None:
    _, sender = await make_sender(make_ctx, slack_api)
    assert (await sender.send(envelope(404))).outcome == "permanent"
    assert slack_api.requests == []
