"""Issue 23 end to end, with the shipped config.yaml and the real worker paging loopback peers (the Twilio
stand-in for voice, SNS on moto for SMS, aiosmtpd for email), on SQLite and PostgreSQL: a sev1 rings each
paged phone once per page and escalation; the voice acknowledgement, an update and the resolution ring
nothing, text nobody, arrive by email, and never reach the person who did them."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from bot.context import Context, open_context
from bot.server import build_app
from core.clock import FrozenClock
from core.config import loads
from core.escalation import ESCALATOR
from core.models import Delivery
from core.rbac import Actor
from tests.conftest import deep_merge
from tests.stand_ins.http import HttpStandIn, Reply
from tests.stand_ins.smtp import SmtpStandIn, smtp_stand_in
from tests.stand_ins.sns import ACCESS_KEY, REGION, SECRET_KEY, MotoSns, moto_sns

ROOT = Path(__file__).resolve().parents[2]
SID = "AC" + "0" * 32
TOKEN = "twilio-e2e-token"
PUBLIC = "https://tocsin.example"
CALLS = f"/2010-04-01/Accounts/{SID}/Calls.json"
ALICE, BOB = "+15550100001", "+15550100002"


@pytest.fixture(scope="module")
def sns() -> Iterator[MotoSns]:
    with moto_sns() as server:
        yield server


@pytest.fixture
async def peers(sns: MotoSns) -> AsyncIterator[tuple[HttpStandIn, SmtpStandIn, MotoSns]]:
    await asyncio.to_thread(sns.reset)
    async with HttpStandIn() as http, smtp_stand_in() as smtp:
        http.on(CALLS, Reply(201, {"sid": "CA" + "1" * 32, "status": "queued", "account_sid": SID}))
        http.on("/hook", (200, "ok"))
        yield http, smtp, sns


async def shipped(db_url: str, clock: FrozenClock, http: HttpStandIn, smtp: SmtpStandIn, sns: MotoSns) -> Context:
    """config.yaml as shipped; only where things live changes (database, peers' addresses, public URL)."""
    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data = deep_merge(data, {
        "server": {"public_url": PUBLIC},
        "database": {"url": db_url},
        "worker": {"poll_seconds": 0.1},
        "channels": {
            "email": {"outbox": False, "host": smtp.host, "port": smtp.port},
            "sms": {"outbox": False, "endpoint_url": sns.url, "region": REGION, "access_key_id": ACCESS_KEY,
                    "secret_access_key": SECRET_KEY},
            "voice": {"outbox": False, "account_sid": SID, "auth_token": TOKEN, "from_number": "+15550000000",
                      "api_url": http.url},
            "webhook": {"outbox": False}},
    })
    cfg = loads(yaml.safe_dump(data), filename="config.yaml", env={"OPS_WEBHOOK_URL": f"{http.url}/hook"})
    return await open_context(cfg=cfg, clock=clock)


async def settled(ctx: Context, timeout: float = 20.0) -> list[Delivery]:
    """Every delivery once none is queued or sending (the worker has finished with all of them)."""
    deadline = time.monotonic() + timeout
    while True:
        async with ctx.db.sessions() as s:
            rows = list((await s.execute(select(Delivery).order_by(Delivery.id))).scalars().all())
        if all(d.status not in ("queued", "sending") for d in rows):
            return rows
        if time.monotonic() > deadline:
            raise TimeoutError([(d.recipient, d.channel, d.status) for d in rows])
        await asyncio.sleep(0.05)


class Phones:
    """What reached people's phones and mailboxes so far."""

    def __init__(self, http: HttpStandIn, smtp: SmtpStandIn, sns: MotoSns) -> None:
        self.http, self.smtp, self.sns = http, smtp, sns

    async def calls(self) -> list[str]:
        return [r.form["To"] for r in self.http.requests_to(CALLS)]

    async def texts(self) -> list[str]:
        return sorted(m["phone_number"] for m in await asyncio.to_thread(self.sns.published_sms))

    def mail_to(self) -> list[str]:
        return [rcpt for m in self.smtp.messages for rcpt in m.rcpt_tos]


def kinds_for(rows: list[Delivery], recipient: str, channel: str) -> list[int]:
    return [d.message_id for d in rows if d.recipient == recipient and d.channel == channel and
            d.status == "delivered"]


async def test_sev1_rings_once_per_page_and_escalation_never_for_news(
        db_url: str, peers: tuple[HttpStandIn, SmtpStandIn, MotoSns]) -> None:
    http, smtp, sns = peers
    clock = FrozenClock(datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc))
    ctx = await shipped(db_url, clock, http, smtp, sns)
    seen = Phones(http, smtp, sns)
    app, _ = await build_app(ctx)
    try:
        async with TestClient(TestServer(app)) as client:
            # the page: alice's phone rings once, alice and bob get a text and a mail
            await ctx.service.declare(actor=Actor("cli:op", "cli"), title="DB down", severity="sev1")
            await settled(ctx)
            assert await seen.calls() == [ALICE]
            assert await seen.texts() == [ALICE, BOB]
            assert sorted(seen.mail_to()) == ["alice@example.com", "bob@example.com"]

            # the escalation timer pages level 1 (oncall): one more ring, one more text each
            clock.advance(minutes=6)
            out = await ctx.service.escalate("INC-1", actor=ESCALATOR, due_at=clock.now())
            assert out.changed
            await settled(ctx)
            assert await seen.calls() == [ALICE, ALICE]
            assert await seen.texts() == [ALICE, ALICE, BOB, BOB]

            # alice presses 1 on the call: acknowledged as contact:alice; she is not called about it
            async with ctx.db.sessions() as s:
                voice = (await s.execute(select(Delivery).where(Delivery.channel == "voice")
                                         .order_by(Delivery.id))).scalars().first()
            assert voice is not None
            params = {"CallSid": "CA1", "Digits": "1", "From": "+15550000000", "To": ALICE}
            sig = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}/twilio/voice?delivery={voice.id}", params)
            resp = await client.post(f"/twilio/voice?delivery={voice.id}", data=params,
                                     headers={"X-Twilio-Signature": sig})
            assert resp.status == 200 and "acknowledged" in await resp.text()
            assert (await ctx.service.get("INC-1")).acknowledged_by == "contact:alice"
            mails = len(seen.mail_to())
            await settled(ctx)
            assert seen.mail_to()[mails:] == ["bob@example.com"]  # the ACK is news, and not for alice

            # escalation stops: the timer finds nothing due
            clock.advance(minutes=15)
            assert (await ctx.service.escalate("INC-1", actor=ESCALATOR, due_at=clock.now())).note == "not due"

            # bob posts an update from the CLI: news for alice (email + telegram DM), nothing for bob
            mails = len(seen.mail_to())
            await ctx.service.update("INC-1", actor=Actor("cli:bob", "cli"), text="failover running")
            await settled(ctx)
            assert seen.mail_to()[mails:] == ["alice@example.com"]

            # alice resolves from Slack: bob hears by email, alice hears nothing
            mails = len(seen.mail_to())
            await ctx.service.resolve("INC-1", actor=Actor("slack:U0ALICE", "slack"), text="fixed")
            rows = await settled(ctx)
            assert seen.mail_to()[mails:] == ["bob@example.com"]

            # all told: two rings (page + escalation) and four texts; news never rang or texted anyone
            assert await seen.calls() == [ALICE, ALICE]
            assert await seen.texts() == [ALICE, ALICE, BOB, BOB]
            news_ids = {d.message_id for d in rows} - {rows[0].message_id} - {
                d.message_id for d in rows if d.purpose == "escalation"}
            for d in rows:
                if d.message_id in news_ids and d.recipient in ("alice", "bob"):
                    assert d.channel in ("email", "telegram"), (d.message_id, d.recipient, d.channel)
            assert all(d.status in ("delivered", "cancelled") for d in rows), \
                [(d.recipient, d.channel, d.status, d.last_error) for d in rows if d.status != "delivered"]
    finally:
        await ctx.close()


async def test_the_console_actor_is_not_told_about_their_own_resolve(
        db_url: str, peers: tuple[HttpStandIn, SmtpStandIn, MotoSns]) -> None:
    """A console user linked to a contact by name (web:bob -> bob) resolves from the incident page: the
    resolution reaches alice by email and nobody's phone, and bob hears nothing about his own action."""
    from core.rbac import SYSTEM
    from core.users import UserService
    from tests.security.kit import console_login

    http, smtp, sns = peers
    clock = FrozenClock(datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc))
    ctx = await shipped(db_url, clock, http, smtp, sns)
    seen = Phones(http, smtp, sns)
    app, _ = await build_app(ctx)
    try:
        async with TestClient(TestServer(app)) as client:
            await UserService(ctx.db, ctx.audit, ctx.clock, ctx.holder).add(
                name="bob", role="operator", password="bob-console-pw-0123", actor=SYSTEM)
            await ctx.service.declare(actor=Actor("cli:op", "cli"), title="DB down", severity="sev1")
            await settled(ctx)
            calls, texts, mails = len(await seen.calls()), len(await seen.texts()), len(seen.mail_to())
            session = await console_login(client, "bob", "bob-console-pw-0123")
            assert session is not None
            resp = await client.post("/incidents/1/resolve", data={"csrf": session["X-Csrf"]},
                                     headers={"Cookie": session["Cookie"]})
            assert resp.status == 200, await resp.text()
            inc = await ctx.service.get("INC-1")
            assert inc.state == "resolved"
            await settled(ctx)
            assert seen.mail_to()[mails:] == ["alice@example.com"]
            assert len(await seen.calls()) == calls and len(await seen.texts()) == texts
    finally:
        await ctx.close()
