"""SMS through Twilio Messaging (channels.sms.provider: twilio) as a loopback Twilio stand-in sees it."""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from core.appearance.sms import sms_info
from core.config import ConfigHolder
from core.delivery.message import Notification
from core.delivery.sms import SmsSender
from core.errors import ConfigError
from tests.conftest import make_config
from tests.delivery.helpers import config, envelope, notification
from tests.stand_ins.http import HttpStandIn, Reply, retry_after

SID = "AC00000000000000000000000000000002"
AUTH = "twilio-sms-token"
FROM = "+15550009998"
TO = "+15550100001"
MESSAGES = f"/2010-04-01/Accounts/{SID}/Messages.json"


@pytest.fixture
async def twilio() -> AsyncIterator[HttpStandIn]:
    async with HttpStandIn() as p:
        yield p


def twilio_cfg(api_url: str, **over: Any) -> Any:
    section = {"provider": "twilio", "account_sid": SID, "auth_token": AUTH, "from_number": FROM,
               "api_url": api_url, "retry": {"timeout_seconds": 5}}
    section.update(over)
    return config(channels={"sms": section})


def created() -> Reply:
    return Reply(201, {"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued", "to": TO, "from": FROM,
                       "account_sid": SID, "body": "x"})


async def test_page_is_posted_to_messages_json_with_basic_auth(twilio: HttpStandIn,
                                                                http: aiohttp.ClientSession) -> None:
    twilio.script(MESSAGES, created())
    result = await SmsSender(ConfigHolder(twilio_cfg(twilio.url)), http=http).send(envelope("sms", TO))
    assert result.outcome == "delivered" and "SM0123456789abcdef" in result.summary
    req = twilio.requests_to(MESSAGES)[0]
    assert req.method == "POST"
    assert req.headers["Authorization"] == "Basic " + base64.b64encode(f"{SID}:{AUTH}".encode()).decode()
    form = req.form or {}
    assert form["To"] == TO and form["From"] == FROM
    assert form["Body"].startswith("SEV1 INC-12 Declared:")
    assert form["Body"].endswith("\nReply 4 to ack INC-12")
    assert sms_info(form["Body"]).encoding == "GSM-7" and sms_info(form["Body"]).segments <= 3


async def test_messaging_service_sid_replaces_from(twilio: HttpStandIn, http: aiohttp.ClientSession) -> None:
    twilio.script(MESSAGES, created())
    cfg = twilio_cfg(twilio.url, from_number=None, messaging_service_sid="MG0001")
    assert (await SmsSender(ConfigHolder(cfg), http=http).send(envelope("sms", TO))).outcome == "delivered"
    form = twilio.requests_to(MESSAGES)[0].form or {}
    assert form["MessagingServiceSid"] == "MG0001" and "From" not in form


@pytest.mark.parametrize(("reply", "outcome", "after"), [
    (retry_after(7, body={"code": 20429, "message": "Too Many Requests", "status": 429}), "retry", 7.0),
    (Reply(503, {"code": 20503, "message": "Service Unavailable", "status": 503}), "retry", None),
    (Reply(400, {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}), "permanent", None),
])
async def test_twilio_errors_are_classified(twilio: HttpStandIn, http: aiohttp.ClientSession, reply: Reply,
                                            outcome: str, after: float | None) -> None:
    twilio.script(MESSAGES, reply)
    result = await SmsSender(ConfigHolder(twilio_cfg(twilio.url)), http=http).send(envelope("sms", TO))
    assert result.outcome == outcome and result.retry_after == after
    assert TO not in result.summary


async def test_provider_switch_applies_on_reload(twilio: HttpStandIn, http: aiohttp.ClientSession) -> None:
    holder = ConfigHolder(twilio_cfg(twilio.url))
    sender = SmsSender(holder, http=http)
    twilio.script(MESSAGES, created())
    assert (await sender.send(envelope("sms", TO))).outcome == "delivered"
    holder.replace(config(channels={"sms": {"provider": "sns", "endpoint_url": twilio.url,
                                            "access_key_id": "k", "secret_access_key": "s",
                                            "retry": {"timeout_seconds": 5}}}))
    twilio.set_default((200, '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
                             "<MessageId>m-9</MessageId></PublishResult></PublishResponse>",
                        {"Content-Type": "text/xml"}))
    result = await sender.send(envelope("sms", TO))
    assert result.outcome == "delivered" and "m-9" in result.summary
    assert (twilio.requests[-1].form or {})["Action"] == "Publish"
    await sender.aclose()


def test_reply_codes_survive_a_one_segment_budget() -> None:
    from core.appearance.sms import render_sms

    text = render_sms(notification(body="z" * 2000), max_segments=1)
    assert text.endswith("\nReply 4 to ack INC-12") and sms_info(text).segments == 1
    # Once acknowledged (the core sends no ack link then) there is nothing left to reply to.
    assert "Reply 4" not in render_sms(notification(body="z" * 2000, ack_url=None), max_segments=1)
    assert "Reply 4" not in render_sms(notification(kind="RESOLVED"))
    assert "Reply 4" not in render_sms(Notification(kind="ONE_TIME", title="hello"))


def test_twilio_provider_without_credentials_fails_at_load() -> None:
    with pytest.raises(ConfigError) as err:
        make_config(channels={"sms": {"outbox": False, "provider": "twilio"}})
    text = str(err.value)
    assert "channels.sms.account_sid: required when channels.sms.provider is twilio" in text
    assert "channels.sms.from_number" in text and "test-config.yaml:" in text
