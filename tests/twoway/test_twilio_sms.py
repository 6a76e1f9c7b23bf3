"""POST /twilio/sms: signed Twilio Messaging webhooks acknowledge (or resolve) as the paged contact, once;
forged, replayed, unknown-number and STOP requests change nothing. SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from bot.server import build_app
from tests.stand_ins.http import HttpStandIn, Reply
from tests.twoway.helpers import ALICE_PHONE, OP, PUBLIC, audit, declare_and_escalate, deliveries, paging_config

SID = "AC00000000000000000000000000000003"
TOKEN = "twilio-sms-webhook-token"
URL = f"{PUBLIC}/twilio/sms"


def twilio_sms(api_url: str = "https://api.twilio.com") -> dict[str, Any]:
    return {"sms": {"outbox": False, "provider": "twilio", "account_sid": SID, "auth_token": TOKEN,
                    "from_number": "+15550009997", "api_url": api_url}}


def inbound(body: str, *, sid: str, number: str = ALICE_PHONE) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": SID, "From": number, "To": "+15550009997",
            "Body": body, "NumMedia": "0"}


def signed(params: dict[str, str], token: str = TOKEN) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(URL, params)}


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient] = []

    async def factory(ctx: Any) -> TestClient:
        app, _ = await build_app(ctx)
        c = TestClient(TestServer(app))
        await c.start_server()
        clients.append(c)
        return c

    yield factory
    for c in clients:
        await c.close()


async def replies(ctx: Any) -> list[str]:
    return [d.notification_json["title"] for d in await deliveries(ctx, purpose="reply")]


async def test_reply_4_acks_as_the_contact_once_and_stops_escalation(
        make_ctx: Callable[..., Any], client_for: Callable[..., Any]) -> None:
    ctx = await make_ctx(**paging_config(channels=twilio_sms()))
    iid = await declare_and_escalate(ctx)
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["queued"]
    client = await client_for(ctx)

    params = inbound("4", sid="SM1")
    resp = await client.post("/twilio/sms", data=params, headers=signed(params))
    assert resp.status == 200 and "<Response" in await resp.text()
    inc = await ctx.service.get(iid)
    assert inc.acknowledged_by == f"sms:{ALICE_PHONE}" and inc.next_escalation_at is None
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["cancelled"]
    [entry] = await audit(ctx, "incident.ack")
    assert entry.actor == f"sms:{ALICE_PHONE}" and entry.source == "twilio sms"
    assert await replies(ctx) == [f"INC-{iid} acknowledged. Paging stopped."]
    [reply] = await deliveries(ctx, purpose="reply")
    assert (reply.channel, reply.address, reply.recipient) == ("sms", ALICE_PHONE, "alice")

    # Twilio delivers the same message again: acted on once, answered once.
    resp = await client.post("/twilio/sms", data=params, headers=signed(params))
    assert resp.status == 200
    assert len(await audit(ctx, "incident.ack")) == 1 and len(await replies(ctx)) == 1

    # A later "ACK" for an incident already acknowledged says so.
    again = inbound(f"ACK INC-{iid}", sid="SM2")
    await client.post("/twilio/sms", data=again, headers=signed(again))
    assert (await replies(ctx))[-1] == f"INC-{iid} was already acknowledged by sms:{ALICE_PHONE}."


@pytest.mark.parametrize("headers", [{}, {"X-Twilio-Signature": "Zm9yZ2Vk"}, "wrong-token", "tampered"])
async def test_forged_requests_are_403_and_change_nothing(
        make_ctx: Callable[..., Any], client_for: Callable[..., Any], headers: Any) -> None:
    ctx = await make_ctx(**paging_config(channels=twilio_sms()))
    iid = await declare_and_escalate(ctx)
    client = await client_for(ctx)
    params = inbound("4", sid="SM9")
    if headers == "wrong-token":
        headers = signed(params, token="someone-elses-token")
    elif headers == "tampered":
        headers = signed(inbound("4", sid="SM9", number="+15550100002"))
    resp = await client.post("/twilio/sms", data=params, headers=headers)
    assert resp.status == 403 and (await resp.json())["error"] == "forbidden"
    assert (await ctx.service.get(iid)).acknowledged_at is None
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["queued"]
    assert await replies(ctx) == []


@pytest.mark.parametrize(("number", "body"), [
    ("+15550199999", "4"),          # nobody's number
    ("+15550100002", "4"),          # bob's, but bob is paged by email only
    (ALICE_PHONE, "STOP"),          # the provider's keyword, never ours
    (ALICE_PHONE, "HELP"),
    (ALICE_PHONE, "ACK 999"),       # an incident that was never paged to alice
])
async def test_unknown_numbers_keywords_and_unpaged_incidents_change_nothing(
        make_ctx: Callable[..., Any], client_for: Callable[..., Any], number: str, body: str) -> None:
    ctx = await make_ctx(**paging_config(channels=twilio_sms()))
    iid = await declare_and_escalate(ctx)
    client = await client_for(ctx)
    params = inbound(body, sid="SM5", number=number)
    resp = await client.post("/twilio/sms", data=params, headers=signed(params))
    assert resp.status == 200
    assert (await ctx.service.get(iid)).acknowledged_at is None
    assert await replies(ctx) == [] and await audit(ctx, "incident.ack") == []


async def test_ack_all_and_resolve_need_the_right_role(
        make_ctx: Callable[..., Any], client_for: Callable[..., Any]) -> None:
    ctx = await make_ctx(**paging_config(channels=twilio_sms()))
    first = await declare_and_escalate(ctx)
    second = await declare_and_escalate(ctx)
    client = await client_for(ctx)

    deny = inbound(f"6 {first}", sid="SM10")
    await client.post("/twilio/sms", data=deny, headers=signed(deny))
    assert (await ctx.service.get(first)).state == "open"
    assert (await replies(ctx))[-1].startswith(f"INC-{first} not resolved: sms:{ALICE_PHONE} has role VIEWER")

    every = inbound("ack all", sid="SM11")
    await client.post("/twilio/sms", data=every, headers=signed(every))
    assert (await replies(ctx))[-1] == (f"INC-{second} acknowledged. Paging stopped. "
                                        f"INC-{first} acknowledged. Paging stopped.")
    assert {e.resource for e in await audit(ctx, "incident.ack")} == {f"INC-{first}", f"INC-{second}"}
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["cancelled", "cancelled"]

    garbled = inbound("on it", sid="SM12")
    await client.post("/twilio/sms", data=garbled, headers=signed(garbled))
    assert (await replies(ctx))[-1].startswith("Reply 4 to ack")


async def test_resolve_by_sms_when_the_number_maps_to_an_operator(
        make_ctx: Callable[..., Any], client_for: Callable[..., Any]) -> None:
    ctx = await make_ctx(**paging_config(channels=twilio_sms(),
                                         access={"cli:op": "operator", f"sms:{ALICE_PHONE}": "operator"}))
    iid = await declare_and_escalate(ctx)
    client = await client_for(ctx)
    params = inbound(f"RESOLVE INC-{iid}", sid="SM20")
    await client.post("/twilio/sms", data=params, headers=signed(params))
    inc = await ctx.service.get(iid)
    assert inc.state == "resolved"
    [entry] = await audit(ctx, "incident.resolve")
    assert entry.actor == f"sms:{ALICE_PHONE}"
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["cancelled"]
    assert await replies(ctx) == [f"INC-{iid} resolved. Paging stopped."]


async def test_page_reply_and_confirmation_through_the_twilio_stand_in(
        make_ctx: Callable[..., Any], client_for: Callable[..., Any]) -> None:
    """The whole loop over loopback: the worker sends the page with its reply code through Twilio, the
    signed reply acknowledges, and the confirmation goes out through Twilio too."""
    async with HttpStandIn() as twilio:
        messages = f"/2010-04-01/Accounts/{SID}/Messages.json"
        twilio.set_default(Reply(201, {"sid": "SMout", "status": "queued"}))
        ctx = await make_ctx(**paging_config(channels=twilio_sms(twilio.url), worker={"enabled": True}))
        client = await client_for(ctx)
        out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
        [page] = await twilio.wait_for(1, messages)
        assert (page.form or {})["To"] == ALICE_PHONE
        assert (page.form or {})["Body"].endswith(f"Reply 4 to ack INC-{out.incident.id}")
        params = inbound("4", sid="SMin1")
        await client.post("/twilio/sms", data=params, headers=signed(params))
        # The confirmation only: the ACK notice is news (never SMS unless listed under updates) and the
        # person who acknowledged is not told about their own action.
        sent = await twilio.wait_for(2, messages)
        bodies = [(r.form or {})["Body"] for r in sent[1:]]
        assert bodies == [f"INC-{out.incident.id} acknowledged. Paging stopped."]
        await asyncio.sleep(0.5)
        assert len(twilio.requests_to(messages)) == 2



