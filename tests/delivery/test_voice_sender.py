"""Twilio voice: the call as a Twilio stand-in sees it, error mapping, and the signed digit callback."""
from __future__ import annotations

import base64
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from twilio.request_validator import RequestValidator

from core.config import ConfigHolder
from bot.twilio_mount import twilio_voice_handler
from core.delivery.voice_twilio import (
    TwilioVoiceSender,
    build_twiml,
    voice_action_url,
)
from core.errors import InvalidTransition
from tests.delivery.helpers import config, envelope, notification
from tests.stand_ins.http import HttpStandIn, Reply, hang, retry_after

SID = "AC00000000000000000000000000000001"
AUTH = "twilio-auth-token"
FROM = "+15550009999"
TO = "+15550100001"
CALLS = f"/2010-04-01/Accounts/{SID}/Calls.json"
PUBLIC = "https://tocsin.example"


@pytest.fixture
async def twilio() -> AsyncIterator[HttpStandIn]:
    async with HttpStandIn() as p:
        yield p


def voice_cfg(api_url: str, timeout: float = 5.0) -> Any:
    return config(channels={"voice": {"account_sid": SID, "auth_token": AUTH, "from_number": FROM,
                                      "api_url": api_url, "retry": {"timeout_seconds": timeout}}})


def call_created() -> Reply:
    return Reply(201, {"sid": "CA0123456789abcdef0123456789abcdef", "status": "queued", "to": TO,
                       "from": FROM, "account_sid": SID})


def twilio_error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                          "status": status}, headers or {})


async def test_call_is_created_with_twiml_gather(twilio: HttpStandIn, http: aiohttp.ClientSession) -> None:
    twilio.script(CALLS, call_created())
    env = envelope("voice", TO)
    result = await TwilioVoiceSender(ConfigHolder(voice_cfg(twilio.url)), http=http).send(env)
    assert result.outcome == "delivered" and "CA0123456789abcdef" in result.summary
    req = twilio.requests_to(CALLS)[0]
    assert req.method == "POST"
    basic = base64.b64decode(req.headers["Authorization"].removeprefix("Basic ")).decode()
    user, _, password = basic.partition(":")
    assert (user, password) == (SID, AUTH)
    form = req.form or {}
    assert form["To"] == TO and form["From"] == FROM
    root = ET.fromstring(form["Twiml"])
    gathers = root.findall("Gather")
    assert gathers and gathers[0].get("numDigits") == "1"
    assert gathers[0].get("action") == f"{PUBLIC}/twilio/voice?delivery={env.delivery_id}"
    spoken = " ".join(s.text or "" for s in root.iter("Say"))
    assert "incident 12" in spoken and "severity 1, critical" in spoken
    assert "Press 1 to acknowledge" in spoken
    assert "INC-12" not in spoken and "*" not in spoken


def test_twiml_without_incident_has_no_gather() -> None:
    twiml = build_twiml(notification(kind="ONE_TIME", incident=None), action_url=voice_action_url(PUBLIC, 1))
    assert "<Gather" not in twiml and "<Say>" in twiml


def test_twiml_stays_under_twilio_limit() -> None:
    n = notification(title="<&>" * 2000, body="<&>" * 5000)
    twiml = build_twiml(n, action_url=voice_action_url(PUBLIC, 1))
    assert len(twiml) <= 4000
    ET.fromstring(twiml)


@pytest.mark.parametrize(("reply", "outcome", "after"), [
    (twilio_error(429, 20429, "Too Many Requests", {"Retry-After": "3"}), "retry", 3.0),
    (twilio_error(503, 20503, "Service unavailable"), "retry", None),
    (twilio_error(400, 21211, "The 'To' number is not a valid phone number."), "permanent", None),
    (twilio_error(401, 20003, "Authenticate"), "permanent", None),
])
async def test_twilio_errors(twilio: HttpStandIn, http: aiohttp.ClientSession, reply: Reply, outcome: str,
                             after: float | None) -> None:
    twilio.script(CALLS, reply)
    result = await TwilioVoiceSender(ConfigHolder(voice_cfg(twilio.url)), http=http).send(envelope("voice", TO))
    assert (result.outcome, result.status_code, result.retry_after) == (outcome, reply.status, after)
    assert str(reply.body["code"]) in result.summary


async def test_twilio_hang_is_a_quick_retry(twilio: HttpStandIn, http: aiohttp.ClientSession) -> None:
    twilio.script(CALLS, hang(10))
    started = time.monotonic()
    result = await TwilioVoiceSender(ConfigHolder(voice_cfg(twilio.url, 0.4)), http=http).send(envelope("voice", TO))
    assert result.outcome == "retry" and time.monotonic() - started < 2


async def test_bad_number_is_permanent(twilio: HttpStandIn, http: aiohttp.ClientSession) -> None:
    result = await TwilioVoiceSender(ConfigHolder(voice_cfg(twilio.url)), http=http).send(envelope("voice", "555-0100"))
    assert result.outcome == "permanent" and twilio.requests == []


async def test_retry_after_is_per_call_not_shared(twilio: HttpStandIn, http: aiohttp.ClientSession) -> None:
    slow_down = retry_after(5, body={"code": 20429, "message": "slow down", "status": 429})
    twilio.script(CALLS, slow_down, call_created())
    sender = TwilioVoiceSender(ConfigHolder(voice_cfg(twilio.url)), http=http)
    first = await sender.send(envelope("voice", TO))
    second = await sender.send(envelope("voice", TO))
    assert (first.outcome, first.retry_after) == ("retry", 5.0)
    assert (second.outcome, second.retry_after) == ("delivered", None)


# --- the callback: POST /twilio/voice?delivery=<id> ---------------------------------------------------------


@pytest.fixture
async def callback() -> AsyncIterator[tuple[TestClient, list[int]]]:
    acked: list[int] = []

    async def acknowledge(delivery_id: int) -> str:
        if delivery_id == 99:
            raise InvalidTransition("INC-12 is already resolved")
        acked.append(delivery_id)
        return "INC-12 acknowledged. Thank you."

    app = web.Application()
    app.router.add_post("/twilio/voice", twilio_voice_handler(auth_token=AUTH, public_url=PUBLIC,
                                                              acknowledge=acknowledge))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client, acked


def signed(url: str, params: dict[str, str], token: str = AUTH) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(token).compute_signature(url, params)}


FORM = {"CallSid": "CA1", "AccountSid": SID, "From": FROM, "To": TO, "CallStatus": "in-progress"}


async def test_callback_with_valid_signature_acknowledges(callback: tuple[TestClient, list[int]]) -> None:
    client, acked = callback
    params = {**FORM, "Digits": "1"}
    url = voice_action_url(PUBLIC, 42)
    resp = await client.post("/twilio/voice?delivery=42", data=params, headers=signed(url, params))
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = ET.fromstring(await resp.text())
    assert acked == [42]
    assert "incident 12 acknowledged" in (root.find("Say").text or "")  # type: ignore[union-attr]
    assert root.find("Hangup") is not None


@pytest.mark.parametrize("case", ["wrong-token", "missing", "tampered-body", "other-delivery"])
async def test_callback_with_bad_signature_is_403(callback: tuple[TestClient, list[int]], case: str) -> None:
    client, acked = callback
    params = {**FORM, "Digits": "1"}
    url = voice_action_url(PUBLIC, 42)
    headers = {"wrong-token": signed(url, params, "other-token"), "missing": {},
               "tampered-body": signed(url, {**params, "Digits": "2"}),
               "other-delivery": signed(voice_action_url(PUBLIC, 41), params)}[case]
    resp = await client.post("/twilio/voice?delivery=42", data=params, headers=headers)
    assert resp.status == 403
    assert acked == []


async def test_callback_other_digit_asks_again(callback: tuple[TestClient, list[int]]) -> None:
    client, acked = callback
    params = {**FORM, "Digits": "7"}
    url = voice_action_url(PUBLIC, 42)
    resp = await client.post("/twilio/voice?delivery=42", data=params, headers=signed(url, params))
    assert resp.status == 200 and acked == []
    gather = ET.fromstring(await resp.text()).find("Gather")
    assert gather is not None and gather.get("action") == url and gather.get("numDigits") == "1"


async def test_callback_speaks_the_refusal(callback: tuple[TestClient, list[int]]) -> None:
    client, _ = callback
    params = {**FORM, "Digits": "1"}
    url = voice_action_url(PUBLIC, 99)
    resp = await client.post("/twilio/voice?delivery=99", data=params, headers=signed(url, params))
    assert resp.status == 200
    assert "incident 12 is already resolved" in await resp.text()


async def test_callback_without_delivery_is_400(callback: tuple[TestClient, list[int]]) -> None:
    client, _ = callback
    params = {**FORM, "Digits": "1"}
    url = f"{PUBLIC}/twilio/voice"
    resp = await client.post("/twilio/voice", data=params, headers=signed(url, params))
    assert resp.status == 400
