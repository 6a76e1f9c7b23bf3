"""`tocsin channel test` / `/incident test`: a marked test through the real sender against good and failing
stand-ins of every channel, the provider's answer (masked), outbox mode said out loud, ADMIN only, audited."""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pytest
import yaml
from sqlalchemy import select

from bot.commands import Command, parse
from bot.context import Context
from bot.dispatch import run_text
from core.audit.log import AuditLog
from core.channel_test import ChannelTests
from core.errors import Forbidden, InvalidInput, NotFound
from core.models import AuditEntry, OutboxMessage
from core.rbac import Actor
from tests.stand_ins.http import HttpStandIn, retry_after
from tests.stand_ins.ntfy import NtfyStandIn
from tests.stand_ins.pagerduty import PagerDutyStandIn
from tests.stand_ins.smtp import smtp_stand_in

ADMIN = Actor("slack:UADMIN", source="slack")
OPERATOR = Actor("slack:UOPS", source="slack")
PD_KEY = "R0UTINGKEY0000000000000000000001"
TG_TOKEN = "123456:SECRET-bot-token"
FAST = {"retry": {"timeout_seconds": 5}}


SID = "AC00000000000000000000000000000001"
CALLS = f"/2010-04-01/Accounts/{SID}/Calls.json"


def overrides(peer_url: str, **channels: Any) -> dict[str, Any]:
    real = {ch: {"outbox": False, **FAST} for ch in ("slack_webhook", "teams_webhook", "webhook", "telegram",
                                                       "ntfy", "pagerduty", "voice", "webpush")}
    real["ntfy"]["server"] = peer_url
    real["voice"].update({"account_sid": SID, "auth_token": "SECRETtwilio", "from_number": "+15550009999",
                          "api_url": peer_url})
    for ch, section in channels.items():
        real[ch] = {**real.get(ch, {}), **section}
    return {
        "access": {"slack:UADMIN": "admin", "slack:UOPS": "operator"},
        "contacts": [{"name": "alice", "email": "alice@example.com", "phone": "+15550100001",
                      "ntfy_topic": "alice-pages", "chat": {"telegram": "4242"}, "console_user": "alice"},
                     {"name": "bob", "email": "bob@example.com"}, {"name": "carol", "email": "carol@example.com"}],
        "destinations": [
            {"name": "ops-slack", "channel": "slack_webhook", "url": f"{peer_url}/slack/T0/B0/SECRETXXXX"},
            {"name": "ops-teams", "channel": "teams_webhook", "url": f"{peer_url}/teams/hook"},
            {"name": "ops-hook", "channel": "webhook", "url": f"{peer_url}/hook"},
            {"name": "ops-ntfy", "channel": "ntfy", "url": f"{peer_url}/ops", "token": "tk_SECRETops"},
            {"name": "pd", "channel": "pagerduty", "url": f"{peer_url}/v2/enqueue", "routing_key": PD_KEY},
        ],
        "channels": real,
        "telegram": {"bot_token": TG_TOKEN, "api_url": f"{peer_url}/bot"},
    }


def make_tester(ctx: Context, http: aiohttp.ClientSession) -> ChannelTests:
    return ChannelTests(ctx.db, ctx.holder, audit=ctx.audit, clock=ctx.clock, http=http)


async def audit_entries(ctx: Context) -> list[AuditEntry]:
    async with ctx.db.transaction() as s:
        return list(await AuditLog.entries(s, resource=None))


# (channel, target, path, good answer, failing answer, words the failure must show)
HTTP_CASES = [
    ("slack_webhook", "ops-slack", "/slack/*", (200, "ok"), (404, "no_service"), ["HTTP 404", "no_service"]),
    ("teams_webhook", "ops-teams", "/teams/*", (202, ""), (400, "Bad payload"), ["HTTP 400", "Bad payload"]),
    ("webhook", "ops-hook", "/hook", (204,), retry_after(3, status=503), ["HTTP 503"]),
    ("telegram", "alice", f"/bot{TG_TOKEN}/sendMessage", (200, {"ok": True, "result": {"message_id": 9}}),
     (403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
     ["403", "blocked by the user"]),
    ("voice", "alice", CALLS, (201, {"sid": "CA0123456789abcdef0123456789abcdef", "status": "queued"}),
     (400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
     ["400", "21211"]),
]


@pytest.mark.parametrize(("channel", "target", "path", "good", "bad", "words"), HTTP_CASES,
                         ids=[c[0] for c in HTTP_CASES])
async def test_http_channels_good_and_failing(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession,
                                             channel: str, target: str, path: str, good: Any, bad: Any,
                                             words: list[str]) -> None:
    ctx = await make_ctx(**overrides(peer.url))
    peer.script(path, good, bad)
    ok = await make_tester(ctx, http).run(actor=ADMIN, channel=channel, target=target)
    assert ok.ok and ok.outcome == "delivered", ok
    assert ok.text().startswith(f"{channel} test to {target}") and "accepted by the provider" in ok.text()
    sent = unquote_plus(peer.requests_to(path)[0].text)
    assert "test of the" in sent and "not an incident" in sent, sent  # every channel says it is a test
    failed = await make_tester(ctx, http).run(actor=ADMIN, channel=channel, target=target)
    assert not failed.ok and all(w in failed.text() for w in words), failed.text()
    assert "SECRET" not in failed.text() and "SECRET" not in ok.text()
    entries = [e for e in await audit_entries(ctx) if e.action == "channel.test"]
    details = [json.loads(e.details) if isinstance(e.details, str) else e.details for e in entries]
    assert [d["outcome"] for d in details] == ["delivered", failed.outcome]
    assert entries[0].actor == "slack:UADMIN" and entries[0].resource == f"{channel}:{target}"


async def test_ntfy_contact_and_destination(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ntfy = NtfyStandIn(peer, tokens={"ops": "tk_SECRETops"})
    ctx = await make_ctx(**overrides(peer.url))
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="ntfy", target="alice")
    assert res.ok and "accepted, id msg" in res.text()
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="ntfy", target="ops-ntfy")
    assert res.ok, res
    assert [m["topic"] for m in ntfy.messages] == ["alice-pages", "ops"]
    assert ntfy.messages[0]["title"].startswith("[SEV4] Test: TEST message from Tocsin (ntfy)")
    ntfy.tokens["ops"] = "rotated"
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="ntfy", target="ops-ntfy")
    assert not res.ok and "HTTP 401: unauthorized" in res.text() and "SECRET" not in res.text()


async def test_pagerduty_test_resolves_its_alert_and_reports_400(make_ctx: Any, peer: HttpStandIn,
                                                                 http: aiohttp.ClientSession) -> None:
    pd = PagerDutyStandIn(peer, routing_keys=(PD_KEY,))
    ctx = await make_ctx(**overrides(peer.url))
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="pagerduty", target="pd")
    assert res.ok and "HTTP 202: Event processed" in res.text() and "resolved again" in res.text(), res.text()
    assert [e["event_action"] for e in pd.events] == ["trigger", "resolve"]
    assert set(pd.alerts.values()) == {"resolved"}
    assert pd.events[0]["payload"]["severity"] == "info"
    pd.routing_keys = {"other"}
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="pagerduty", target="pd")
    assert res.outcome == "permanent" and "HTTP 400" in res.text() and "'routing_key' is invalid" in res.text()
    assert PD_KEY not in res.text()


async def test_email_accepted_and_smtp_code(make_ctx: Any, http: aiohttp.ClientSession) -> None:
    async with smtp_stand_in() as smtp:
        ctx = await make_ctx(**overrides("http://127.0.0.1:9", email={"outbox": False, "host": "127.0.0.1",
                                                                      "port": smtp.port, **FAST}))
        res = await make_tester(ctx, http).run(actor=ADMIN, channel="email", target="alice")
        assert res.ok, res
        assert smtp.messages[0].message["Subject"].startswith("[SEV4] Test: TEST message from Tocsin")
        smtp.reply_rcpt("550 5.1.1 <alice@example.com>: Recipient address rejected")
        res = await make_tester(ctx, http).run(actor=ADMIN, channel="email", target="alice")
        assert not res.ok and "SMTP 550" in res.text() and "a***@example.com" in res.text()


async def test_sms_sns_error_code(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("/sns", (400, '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>Sender'
                              '</Type><Code>OptedOut</Code><Message>Phone number is opted out</Message></Error>'
                              '<RequestId>r-1</RequestId></ErrorResponse>', {"Content-Type": "text/xml"}))
    ctx = await make_ctx(**overrides(peer.url, sms={"outbox": False, "endpoint_url": f"{peer.url}/sns",
                                                    "access_key_id": "AKIDEXAMPLE", "secret_access_key": "SECRETkey",
                                                    **FAST}))
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="sms", target="alice")
    assert not res.ok and "OptedOut" in res.text() and "+15550100001" not in res.text(), res.text()
    assert "SECRETkey" not in res.text()


async def test_outbox_mode_says_so_and_stores_instead_of_sending(make_ctx: Any, peer: HttpStandIn,
                                                                  http: aiohttp.ClientSession) -> None:
    ctx = await make_ctx(**overrides(peer.url, webhook={"outbox": True}))
    res = await make_tester(ctx, http).run(actor=ADMIN, channel="webhook", target="ops-hook")
    assert res.ok and res.outcome == "outbox"
    assert "NOT sent" in res.text() and "channels.webhook.outbox is true" in res.text()
    assert peer.requests == []
    async with ctx.db.transaction() as s:
        [row] = (await s.execute(select(OutboxMessage))).scalars().all()
    assert row.channel == "webhook" and row.delivery_id is None and "TEST message" in row.subject


async def test_only_admins_and_clear_errors(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ctx = await make_ctx(**overrides(peer.url))
    t = make_tester(ctx, http)
    with pytest.raises(Forbidden, match="OPERATOR"):
        await t.run(actor=OPERATOR, channel="webhook", target="ops-hook")
    with pytest.raises(InvalidInput, match="unknown channel 'fax'"):
        await t.run(actor=ADMIN, channel="fax", target="alice")
    with pytest.raises(InvalidInput, match="is a slack_webhook destination, not webhook"):
        await t.run(actor=ADMIN, channel="webhook", target="ops-slack")
    with pytest.raises(NotFound, match="no contact or destination named 'zed'"):
        await t.run(actor=ADMIN, channel="email", target="zed")
    with pytest.raises(InvalidInput, match="contact 'alice' has no address for pagerduty"):
        await t.run(actor=ADMIN, channel="pagerduty", target="alice")
    assert peer.requests == []


def test_the_chat_grammar() -> None:
    assert parse("/incident test ntfy alice") == Command("test", target="ntfy", text="alice")
    for bad in ("/incident test", "/incident test ntfy", "/incident test ntfy a b"):
        with pytest.raises(Exception, match="Usage: /incident test <channel> <contact or destination>"):
            parse(bad)


async def test_chat_command_runs_it(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    ctx = await make_ctx(**overrides(peer.url))
    _, reply = await run_text(ctx.service, ADMIN, "/incident test webhook ops-hook")
    assert not reply.ok and "run` server" in reply.text  # no tester in this process
    ctx.service.channel_tests = make_tester(ctx, http)
    _, reply = await run_text(ctx.service, ADMIN, "/incident test webhook ops-hook")
    assert reply.ok and reply.ephemeral and "accepted by the provider: HTTP 200" in reply.text
    _, reply = await run_text(ctx.service, OPERATOR, "/incident test webhook ops-hook")
    assert not reply.ok and reply.text.startswith("Not allowed")


async def test_cli_channel_test(tmp_path: Path, peer: HttpStandIn) -> None:
    ntfy = NtfyStandIn(peer)
    cfg = overrides(peer.url)
    cfg["access"] = {"cli:alice": "admin"}
    cfg["database"] = {"url": f"sqlite+aiosqlite:///{tmp_path / 'tocsin.db'}"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, TOCSIN_CONFIG=str(tmp_path / "config.yaml"), USER="alice", LOGNAME="alice")

    async def tocsin(*args: str, user: str = "alice") -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, cwd=tmp_path, env={**env, "USER": user, "LOGNAME": user},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    assert (await tocsin("db", "upgrade"))[0] == 0
    code, out, err = await tocsin("channel", "test", "ntfy", "--to", "alice")
    assert code == 0 and "ntfy test to alice (alice-pages): accepted by the provider" in out, err
    assert ntfy.messages[0]["topic"] == "alice-pages"
    code, out, err = await tocsin("channel", "test", "ntfy", "--to", "alice", user="bob")
    assert code == 1 and "Not allowed" in err


async def test_webpush_good_and_gone(make_ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    from core.webpush import subscribe, subscriptions
    from tests.stand_ins.push import PushService

    push = PushService(peer)
    laptop = push.browser("laptop")
    ctx = await make_ctx(**overrides(peer.url))
    t = make_tester(ctx, http)
    res = await t.run(actor=ADMIN, channel="webpush", target="alice")
    assert not res.ok and "no browser subscribed" in res.text()
    await subscribe(ctx.db, user="alice", subscription=laptop.subscription(), user_agent="", now=ctx.clock.now())
    res = await t.run(actor=ADMIN, channel="webpush", target="alice")
    assert res.ok and "accepted by 1 of 1 browsers" in res.text()
    assert laptop.received[0]["title"].startswith("[SEV4] Test: TEST message from Tocsin (webpush)")
    laptop.gone = 410
    res = await t.run(actor=ADMIN, channel="webpush", target="alice")
    assert not res.ok and "HTTP 410" in res.text() and await subscriptions(ctx.db, "alice") == []
