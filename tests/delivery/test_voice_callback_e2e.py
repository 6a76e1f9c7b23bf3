"""A paged person presses 1 on the voice call: Twilio's signed callback acknowledges the incident as them."""
from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from bot.server import build_app
from core.models import AuditEntry, Delivery
from core.rbac import Actor

TOKEN = "twilio-test-token"


async def test_keypress_acknowledges_as_the_paged_contact(make_ctx: Any) -> None:
    ctx = await make_ctx(
        worker={"enabled": False},
        server={"public_url": "https://tocsin.example"},
        channels={"voice": {"outbox": False, "account_sid": "AC123", "auth_token": TOKEN,
                            "from_number": "+15550000000"}},
        contacts=[{"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
                   "preferences": {"sev1": ["voice", "email"], "default": ["email"]}},
                  {"name": "bob", "email": "bob@example.com"}, {"name": "carol", "email": "carol@example.com"}])
    await ctx.service.declare(actor=Actor("cli:op"), title="DB down", severity="sev1")
    async with ctx.db.sessions() as s:
        voice = (await s.execute(select(Delivery).where(Delivery.channel == "voice"))).scalars().one()
    app, _ = await build_app(ctx)
    async with TestClient(TestServer(app)) as client:
        url = f"https://tocsin.example/twilio/voice?delivery={voice.id}"
        params = {"CallSid": "CA1", "Digits": "1", "From": "+15550000000", "To": "+15550100001"}
        resp = await client.post(f"/twilio/voice?delivery={voice.id}", data=params,
                                 headers={"X-Twilio-Signature": "forged"})
        assert resp.status == 403
        assert (await ctx.service.get("INC-1")).acknowledged_at is None
        sig = RequestValidator(TOKEN).compute_signature(url, params)
        resp = await client.post(f"/twilio/voice?delivery={voice.id}", data=params,
                                 headers={"X-Twilio-Signature": sig})
        body = await resp.text()
        assert resp.status == 200 and "<Say" in body and "acknowledged" in body
    inc = await ctx.service.get("INC-1")
    assert inc.acknowledged_by == "contact:alice"
    async with ctx.db.sessions() as s:
        entry = (await s.execute(select(AuditEntry).where(AuditEntry.action == "incident.ack"))).scalars().one()
    assert entry.actor == "contact:alice" and entry.source == "twilio voice"
