"""SnsSmsSender against moto's SNS server (read the SMS back) and an HTTP stand-in speaking SNS errors."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from core.appearance.sms import sms_info
from core.config import ConfigHolder
from core.delivery.sms_sns import SnsSmsSender
from tests.delivery.helpers import config, envelope, notification
from tests.stand_ins.http import HttpStandIn, free_port, hang
from tests.stand_ins.sns import ACCESS_KEY, REGION, SECRET_KEY, MotoSns, moto_sns

PHONE = "+15550100001"


@pytest.fixture(scope="module")
def sns() -> Iterator[MotoSns]:
    with moto_sns() as server:
        yield server


def sms_cfg(endpoint: str, **over: Any) -> Any:
    section = {"endpoint_url": endpoint, "region": REGION, "access_key_id": ACCESS_KEY,
               "secret_access_key": SECRET_KEY, "sender_id": "Tocsin", "retry": {"timeout_seconds": 5}}
    section.update(over)
    return config(channels={"sms": section})


def sns_error(code: str, message: str, kind: str = "Sender") -> str:
    return (f'<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error><Type>{kind}</Type>'
            f"<Code>{code}</Code><Message>{message}</Message></Error><RequestId>r-1</RequestId></ErrorResponse>")


async def test_publishes_sms_that_moto_records(sns: MotoSns) -> None:
    await asyncio.to_thread(sns.reset)
    sender = SnsSmsSender(ConfigHolder(sms_cfg(sns.url)))
    try:
        result = await sender.send(envelope("sms", PHONE))
        assert result.outcome == "delivered", result
        published = await asyncio.to_thread(sns.published_sms)
    finally:
        await sender.aclose()
    assert len(published) == 1
    sms = published[0]
    assert sms["phone_number"] == PHONE
    assert sms["message"].startswith("SEV1 INC-12 Declared: Database <primary> down & out")
    lines = sms["message"].split("\n")
    assert lines[1] == "Ack: https://tocsin.example/ack/tok123" and lines[-1] == "Reply 4 to ack INC-12"
    assert sms_info(sms["message"]).segments <= 3
    assert sms["message_id"] in result.summary


async def test_long_page_respects_max_segments(sns: MotoSns) -> None:
    await asyncio.to_thread(sns.reset)
    sender = SnsSmsSender(ConfigHolder(sms_cfg(sns.url, max_segments=3)))
    try:
        for body in ("z" * 5000, "ы" * 5000):
            result = await sender.send(envelope("sms", PHONE, notification(body=body)))
            assert result.outcome == "delivered"
    finally:
        await sender.aclose()
    gsm, ucs = [m["message"] for m in await asyncio.to_thread(sns.published_sms)]
    assert sms_info(gsm).encoding == "GSM-7" and sms_info(gsm).segments == 3
    assert sms_info(ucs).encoding == "UCS-2" and sms_info(ucs).segments == 3


@pytest.mark.parametrize("number", ["12", "15550100001", "+0123456789", "+1 555 010 0001", "",
                                    "+1555abc0001"])
async def test_bad_number_is_permanent_and_never_published(sns: MotoSns, number: str) -> None:
    await asyncio.to_thread(sns.reset)
    result = await SnsSmsSender(ConfigHolder(sms_cfg(sns.url))).send(envelope("sms", number))
    assert result.outcome == "permanent" and "E.164" in result.summary
    assert await asyncio.to_thread(sns.published_sms) == []


async def test_sender_id_and_transactional_attributes_on_the_wire(peer: HttpStandIn) -> None:
    peer.script("/", (200, '<PublishResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><PublishResult>'
                           "<MessageId>m-1</MessageId></PublishResult><ResponseMetadata><RequestId>r</RequestId>"
                           "</ResponseMetadata></PublishResponse>", {"Content-Type": "text/xml"}))
    sender = SnsSmsSender(ConfigHolder(sms_cfg(peer.url)))
    try:
        result = await sender.send(envelope("sms", PHONE))
    finally:
        await sender.aclose()
    assert result.outcome == "delivered" and "m-1" in result.summary
    form = peer.requests[0].form or {}
    assert form["Action"] == "Publish" and form["PhoneNumber"] == PHONE
    attrs = {form[f"MessageAttributes.entry.{i}.Name"]: form[f"MessageAttributes.entry.{i}.Value.StringValue"]
             for i in (1, 2)}
    assert attrs == {"AWS.SNS.SMS.SMSType": "Transactional", "AWS.SNS.SMS.SenderID": "Tocsin"}
    assert peer.requests[0].headers["Authorization"].startswith("AWS4-HMAC-SHA256")


@pytest.mark.parametrize(("status", "code", "outcome"), [
    (400, "Throttling", "retry"),
    (400, "ThrottlingException", "retry"),
    (500, "InternalError", "retry"),
    (503, "ServiceUnavailable", "retry"),
    (400, "InvalidParameter", "permanent"),
    (403, "AuthorizationError", "permanent"),
])
async def test_sns_errors_are_classified(peer: HttpStandIn, status: int, code: str, outcome: str) -> None:
    peer.script("/", (status, sns_error(code, "nope", "Receiver" if status >= 500 else "Sender"),
                      {"Content-Type": "text/xml"}))
    sender = SnsSmsSender(ConfigHolder(sms_cfg(peer.url)))
    try:
        result = await sender.send(envelope("sms", PHONE))
    finally:
        await sender.aclose()
    assert result.outcome == outcome and code in result.summary
    assert len(peer.requests) == 1        # botocore made no hidden retries of its own
    assert PHONE not in result.summary


async def test_unreachable_or_stalled_sns_is_retry(peer: HttpStandIn) -> None:
    dead = SnsSmsSender(ConfigHolder(sms_cfg(f"http://127.0.0.1:{free_port()}", retry={"timeout_seconds": 0.5})))
    assert (await dead.send(envelope("sms", PHONE))).outcome == "retry"
    await dead.aclose()
    peer.script("/", hang(10))
    slow = SnsSmsSender(ConfigHolder(sms_cfg(peer.url, retry={"timeout_seconds": 0.5})))
    started = time.monotonic()
    result = await slow.send(envelope("sms", PHONE))
    await slow.aclose()
    assert result.outcome == "retry" and time.monotonic() - started < 3


async def test_logs_mask_the_phone_number(sns: MotoSns, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="core.delivery")
    sender = SnsSmsSender(ConfigHolder(sms_cfg(sns.url)))
    try:
        await sender.send(envelope("sms", PHONE))
        await sender.send(envelope("sms", "+1555"))
    finally:
        await sender.aclose()
    records = [r for r in caplog.records if r.getMessage() == "notify.provider.response"]
    assert len(records) == 2
    assert [getattr(r, "outcome", None) for r in records] == ["delivered", "permanent"]
    assert getattr(records[0], "to", None) == "*******0001"
    for r in caplog.records:
        assert PHONE not in r.getMessage() and PHONE not in str(r.__dict__)
