"""The outbox stores what the real sender sends: per channel, the outbox payload is compared with the bytes the
real sender put on the wire to its loopback stand-in (HTTP peer, aiosmtpd, SNS and Twilio stand-ins)."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest
from sqlalchemy import select

from bot.cli_outbox import format_message, message_json
from core.appearance.common import json_bytes
from core.appearance.sms import sms_info
from core.config import ConfigHolder
from core.delivery.email import EmailSender
from core.delivery.message import Envelope
from core.delivery.outbox import OutboxStore
from core.delivery.registry import OutboxSwitch
from core.delivery.sms_sns import SnsSmsSender
from core.delivery.voice_twilio import TwilioVoiceSender
from core.models import Delivery, OutboxMessage
from tests.delivery.helpers import config, envelope, notification
from tests.delivery.test_senders import HTTP_SENDERS, OK_REPLY, TOKEN, http_config
from tests.stand_ins.http import HttpStandIn, Reply
from tests.stand_ins.smtp import smtp_stand_in

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PD_KEY = "SECRETroutingkey0000000000000001"  # tests.delivery.test_senders.http_config's ops-pd
SNS_OK = (200, '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
               "<MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r</RequestId>"
               "</ResponseMetadata></PublishResponse>", {"Content-Type": "text/xml"})


def with_outbox(cfg: Any) -> ConfigHolder:
    data = cfg.model_dump(mode="python")
    for section in data["channels"].values():
        if isinstance(section, dict) and "outbox" in section:
            section["outbox"] = True
    from core.config import Config

    def unsecret(v: Any) -> Any:
        if hasattr(v, "get_secret_value"):
            return v.get_secret_value()
        if isinstance(v, dict):
            return {k: unsecret(x) for k, x in v.items()}
        if isinstance(v, list):
            return [unsecret(x) for x in v]
        return v
    return ConfigHolder(Config.model_validate(unsecret(data)))


async def stored(ctx: Any, real: Any, env: Envelope) -> OutboxMessage:
    """Send `env` through the outbox switch (outbox on) with `real` as the real sender; the stored row."""
    async with ctx.db.transaction() as s:
        s.add(Delivery(id=env.delivery_id, recipient=env.recipient, channel=env.channel, address=env.address,
                       payload={}, idempotency_key=f"wire-{env.delivery_id}", next_attempt_at=T0,
                       created_at=T0, updated_at=T0))
    store = OutboxStore(ctx.db, clock=ctx.clock)
    switch = OutboxSwitch(env.channel, config=with_outbox(real._config.cfg), real=real,
                          outbox=store.sender(env.channel))
    result = await switch.send(env)
    await store.aclose()
    assert result.outcome == "delivered", result
    async with ctx.db.sessions() as s:
        row = (await s.execute(select(OutboxMessage).where(OutboxMessage.delivery_id == env.delivery_id))).scalar_one()
    # what `tocsin outbox` and `--json` print comes from the same row
    assert json.loads(message_json(row))["payload"] == row.payload
    assert row.body in format_message(row).replace("\n  | ", "\n") or row.body.splitlines()[0] in format_message(row)
    return row


@pytest.mark.parametrize(("channel", "sender_cls", "address", "path"),
                         [s for s in HTTP_SENDERS if s[0] in ("slack_webhook", "teams_webhook", "webhook", "telegram", "ntfy",
                                                     "pagerduty")])
async def test_http_channels_store_the_request_sent(ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession,
                                                    channel: str, sender_cls: Any, address: str, path: str) -> None:
    peer.script(path, OK_REPLY[channel])
    sender = sender_cls(ConfigHolder(http_config(peer.url)), http=http)
    env = envelope(channel, address, recipient=address)
    result = await sender.send(env)
    assert result.outcome == "delivered", result
    sent = peer.requests_to(path)[0]
    row = await stored(ctx, sender, env)
    wire = row.payload
    assert wire is not None
    if channel == "pagerduty":  # the routing key travels in the body: masked there, the rest byte for byte
        assert wire["body"]["routing_key"] == "<redacted>"
        assert json_bytes({**wire["body"], "routing_key": PD_KEY}) == sent.body
    else:
        assert json_bytes(wire["body"]) == sent.body                 # the exact bytes
    assert wire["method"] == sent.method
    for name, value in wire["headers"].items():
        assert value == "<redacted>" or sent.headers[name] == value, name
    # secrets never reach the outbox: webhook path, header values, bot token
    dumped = json.dumps(wire) + row.body
    for secret in ("T000/B000/XXXX", "hook-token", "s3cret", TOKEN, "tk_SECRETntfy", PD_KEY):
        assert secret not in dumped
    assert row.subject == "[SEV1] INC-12 Declared: Database <primary> down & out"
    if channel == "webhook":
        assert wire["headers"]["Authorization"] == "<redacted>" and wire["headers"]["X-Team"] == "<redacted>"
        assert wire["headers"]["X-Tocsin-Signature"] == sent.headers["X-Tocsin-Signature"]
        assert row.body.startswith(f"PUT {peer.url}/<redacted>") or row.body.startswith(f"PUT {peer.url}/hook")
    if channel == "slack_webhook":
        assert wire["url"] == f"{peer.url}/<redacted>" and wire["body"]["blocks"][0]["type"] == "header"
    if channel == "teams_webhook":
        assert wire["body"]["attachments"][0]["content"]["type"] == "AdaptiveCard"
    if channel == "telegram":
        assert wire["url"] == f"{peer.url}/bot<redacted>/sendMessage"
        assert wire["body"]["parse_mode"] == "HTML"
        assert "--- text (HTML) ---\n<b>" in row.body
    if channel == "ntfy":
        assert wire["url"] == f"{peer.url}/ntfy/" and wire["headers"]["Authorization"] == "<redacted>"
        assert wire["body"]["topic"] == "ops-pages" and sent.headers["Authorization"] == "Bearer tk_SECRETntfy"
    if channel == "pagerduty":
        assert wire["url"] == f"{peer.url}/<redacted>" and wire["body"]["event_action"] == "trigger"


async def test_email_stores_subject_and_both_parts_sent(ctx: Any) -> None:
    async with smtp_stand_in() as smtp:
        cfg = config(channels={"email": {"host": "127.0.0.1", "port": smtp.port,
                                         "from_address": "Tocsin <pager@ops.example>"}})
        sender = EmailSender(ConfigHolder(cfg))
        env = envelope("email", "alice@example.com")
        assert (await sender.send(env)).outcome == "delivered"
        msg = smtp.messages[0].message
    row = await stored(ctx, sender, env)
    wire = row.payload
    assert wire is not None
    # SMTP carries lines as CRLF (RFC 5321); the content is otherwise the same
    text, html = (p.get_content().replace("\r\n", "\n") for p in msg.iter_parts())
    assert (wire["subject"], wire["text"], wire["html"]) == (msg["Subject"], text, html)
    for name in ("From", "To", "Message-ID", "References", "Importance", "X-Tocsin-Delivery"):
        assert wire["headers"].get(name) == msg[name], name
    assert "--- text/plain ---\n[SEV1] INC-12 Declared" in row.body and "--- text/html ---\n<!DOCTYPE html>" in row.body


@pytest.mark.parametrize(("body", "encoding"), [("Writes fail. " * 40, "GSM-7"), ("База недоступна. " * 40, "UCS-2")])
async def test_sms_stores_the_text_published_with_its_segments(ctx: Any, peer: HttpStandIn, body: str,
                                                               encoding: str) -> None:
    peer.script("/", SNS_OK)
    cfg = config(channels={"sms": {"endpoint_url": peer.url, "region": "us-east-1", "access_key_id": "AKIDTEST",
                                   "secret_access_key": "secret-test-key", "max_segments": 3}})
    sender = SnsSmsSender(ConfigHolder(cfg))
    env = envelope("sms", "+15550100001", notification(body=body))
    try:
        assert (await sender.send(env)).outcome == "delivered"
    finally:
        await sender.aclose()
    sent = (peer.requests[0].form or {})["Message"]
    row = await stored(ctx, sender, env)
    wire = row.payload
    assert wire is not None and wire["Message"] == sent
    info = sms_info(sent)
    assert (wire["encoding"], wire["segments"]) == (encoding, info.segments) and info.segments == 3
    assert f"{encoding}, 3 of 3 segments" in row.body


@pytest.mark.parametrize("body", ["Writes fail. " * 40, "База недоступна. " * 40])
async def test_twilio_sms_stores_the_form_posted_with_its_segments(ctx: Any, peer: HttpStandIn,
                                                                    http: aiohttp.ClientSession, body: str) -> None:
    from core.delivery.sms_twilio import TwilioSmsSender

    sid = "AC" + "2" * 32
    messages = f"/2010-04-01/Accounts/{sid}/Messages.json"
    peer.script(messages, Reply(201, {"sid": "SM" + "1" * 32, "status": "queued", "account_sid": sid}))
    cfg = config(channels={"sms": {"provider": "twilio", "account_sid": sid, "auth_token": "twilio-sms-token",
                                   "from_number": "+15550009998", "api_url": peer.url, "max_segments": 3}})
    sender = TwilioSmsSender(ConfigHolder(cfg), http=http)
    env = envelope("sms", "+15550100001", notification(body=body))
    assert (await sender.send(env)).outcome == "delivered"
    form = peer.requests_to(messages)[0].form or {}
    row = await stored(ctx, sender, env)
    wire = row.payload
    assert wire is not None
    assert (wire["To"], wire["From"], wire["Body"]) == (form["To"], form["From"], form["Body"])
    info = sms_info(form["Body"])
    assert (wire["encoding"], wire["segments"]) == (info.encoding, info.segments) and info.segments <= 3
    assert "twilio-sms-token" not in json.dumps(wire) + row.body
    assert row.body.startswith("To: +15550100001\n") and form["Body"] in row.body
    assert f"{info.encoding}, {info.segments} of 3 segments" in row.body


async def test_voice_stores_the_twiml_of_the_call(ctx: Any, peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    sid = "AC" + "0" * 32
    calls = f"/2010-04-01/Accounts/{sid}/Calls.json"
    peer.script(calls, Reply(201, {"sid": "CA" + "1" * 32, "status": "queued", "account_sid": sid}))
    cfg = config(channels={"voice": {"account_sid": sid, "auth_token": "twilio-auth-token",
                                     "from_number": "+15550109999", "api_url": peer.url}})
    sender = TwilioVoiceSender(ConfigHolder(cfg), http=http)
    env = envelope("voice", "+15550100001")
    assert (await sender.send(env)).outcome == "delivered"
    form = peer.requests_to(calls)[0].form or {}
    row = await stored(ctx, sender, env)
    wire = row.payload
    assert wire is not None
    assert (wire["Twiml"], wire["To"], wire["From"], str(wire["Timeout"])) == (
        form["Twiml"], form["To"], form["From"], form["Timeout"])
    assert "twilio-auth-token" not in json.dumps(wire) and "<Gather" in row.body


async def test_unknown_destination_is_refused_by_the_outbox_too(ctx: Any, peer: HttpStandIn,
                                                                http: aiohttp.ClientSession) -> None:
    from core.delivery.webhook import WebhookSender
    sender = WebhookSender(ConfigHolder(http_config(peer.url)), http=http)
    env = envelope("webhook", "no-such-destination")
    switch = OutboxSwitch("webhook", config=with_outbox(sender._config.cfg), real=sender,
                          outbox=OutboxStore(ctx.db, clock=ctx.clock).sender("webhook"))
    result = await switch.send(env)
    assert result.outcome == "permanent" and "unknown destination" in result.summary


async def test_webpush_stores_what_the_browser_decrypts(make_ctx: Any, peer: HttpStandIn,
                                                         http: aiohttp.ClientSession) -> None:
    from core.delivery.webpush import WebPushSender
    from core.webpush import subscribe
    from tests.delivery.test_webpush import ALICE
    from tests.stand_ins.push import PushService

    ctx = await make_ctx(**ALICE)
    browser = PushService(peer).browser("laptop")
    await subscribe(ctx.db, user="alice", subscription=browser.subscription(), user_agent="", now=ctx.clock.now())
    sender = WebPushSender(ConfigHolder(ctx.cfg), http=http, db=ctx.db)
    env = envelope("webpush", "alice")
    assert (await sender.send(env)).outcome == "delivered"
    [received] = browser.received
    sent = peer.requests[0]
    row = await stored(ctx, sender, env)
    wire = row.payload
    assert wire is not None and wire["data"] == received  # the decrypted push, field for field
    assert wire["headers"] == {"TTL": sent.headers["TTL"], "Content-Encoding": sent.headers["Content-Encoding"]}
    assert wire["user"] == "alice" and received["title"] in row.body
