"""POST /sns/sms: AWS two-way SMS replies through an SNS HTTPS subscription. Messages are signed with a
self-signed certificate served on loopback (allowed by explicit test config only); confirmation only for
the configured topic; bad signatures, wrong topics, wrong certificate hosts and replays change nothing.
SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot.server import build_app
from core.sns_inbound import sns_host_allowed
from tests.stand_ins.http import HttpStandIn
from tests.stand_ins.sns_signer import CONFIRM_PATH, SnsSigner, self_signed
from tests.twoway.helpers import ALICE_PHONE, audit, declare_and_escalate, deliveries, paging_config

TOPIC = "arn:aws:sns:us-east-1:123456789012:tocsin-replies"


@pytest.fixture
async def aws() -> AsyncIterator[SnsSigner]:
    async with HttpStandIn() as peer:
        yield SnsSigner(peer, topic_arn=TOPIC)


@pytest.fixture
async def setup(make_ctx: Any, aws: SnsSigner) -> AsyncIterator[tuple[Any, TestClient, int]]:
    ctx = await make_ctx(**paging_config(channels={"sms": {"reply_topic_arn": TOPIC,
                                                           "sns_cert_hosts": [aws.host]}}))
    iid = await declare_and_escalate(ctx)
    app, _ = await build_app(ctx)
    async with TestClient(TestServer(app)) as client:
        yield ctx, client, iid


async def post(client: TestClient, msg: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    resp = await client.post("/sns/sms", json=msg, headers={"x-amz-sns-message-type": msg.get("Type", "")})
    return resp.status, await resp.json()


async def test_subscription_is_confirmed_only_for_the_configured_topic(
        setup: tuple[Any, TestClient, int], aws: SnsSigner) -> None:
    ctx, client, _ = setup
    status, body = await post(client, aws.confirmation(now=ctx.clock.now(),
                                                       topic_arn="arn:aws:sns:us-east-1:123456789012:other"))
    assert status == 403 and "topic" in body["reason"]
    assert aws.peer.requests_to(CONFIRM_PATH) == []
    status, body = await post(client, aws.confirmation(now=ctx.clock.now(), version="1"))
    assert status == 200 and body == {"status": "confirmed"}
    [confirm] = aws.peer.requests_to(CONFIRM_PATH)
    assert confirm.query["Action"] == "ConfirmSubscription" and confirm.query["TopicArn"] == TOPIC


@pytest.mark.parametrize("version", ["1", "2"])
async def test_signed_reply_acks_once_as_the_contact(
        setup: tuple[Any, TestClient, int], aws: SnsSigner, version: str) -> None:
    ctx, client, iid = setup
    msg = aws.inbound_sms(number=ALICE_PHONE, body=f"ACK {iid}", now=ctx.clock.now(), version=version)
    assert await post(client, msg) == (200, {"status": "acknowledged"})
    inc = await ctx.service.get(iid)
    assert inc.acknowledged_by == f"sms:{ALICE_PHONE}" and inc.next_escalation_at is None
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["cancelled"]
    [entry] = await audit(ctx, "incident.ack")
    assert entry.actor == f"sms:{ALICE_PHONE}" and entry.source == "sns sms"
    [reply] = await deliveries(ctx, purpose="reply")
    assert reply.address == ALICE_PHONE and reply.notification_json["title"] == f"INC-{iid} acknowledged. Paging stopped."
    # SNS retries with the same MessageId: acted on and answered once.
    assert await post(client, msg) == (200, {"status": "duplicate"})
    assert len(await audit(ctx, "incident.ack")) == 1 and len(await deliveries(ctx, purpose="reply")) == 1


async def test_forged_and_misdirected_messages_are_refused(
        setup: tuple[Any, TestClient, int], aws: SnsSigner) -> None:
    ctx, client, iid = setup
    now = ctx.clock.now()
    other_key, _ = self_signed()
    good = aws.inbound_sms(number=ALICE_PHONE, body="4", now=now)
    tampered = {**good, "Message": good["Message"].replace(ALICE_PHONE, "+15550100002")}
    cases = {
        "bad signature": aws.inbound_sms(number=ALICE_PHONE, body="4", now=now, key=other_key),
        "tampered": tampered,
        "wrong topic": aws.inbound_sms(number=ALICE_PHONE, body="4", now=now,
                                       topic_arn="arn:aws:sns:us-east-1:123456789012:other"),
        "cert host": aws.inbound_sms(number=ALICE_PHONE, body="4", now=now,
                                     cert_url="https://evil.example/SimpleNotificationService.pem"),
        "old": aws.inbound_sms(number=ALICE_PHONE, body="4", now=now.replace(year=2025)),
        "no signature version": {k: v for k, v in good.items() if k != "SignatureVersion"},
        "unsigned": {k: v for k, v in good.items() if k != "Signature"},
    }
    for name, msg in cases.items():
        status, body = await post(client, msg)
        assert status == 403 and body["error"] == "forbidden", name
    resp = await client.post("/sns/sms", data=b"not json")
    assert resp.status == 400
    assert (await ctx.service.get(iid)).acknowledged_at is None
    assert await audit(ctx, "incident.ack") == [] and await deliveries(ctx, purpose="reply") == []


async def test_unknown_numbers_change_nothing(setup: tuple[Any, TestClient, int], aws: SnsSigner) -> None:
    ctx, client, iid = setup
    for number in ("+15550199999", "+15550100002"):
        msg = aws.inbound_sms(number=number, body="4", now=ctx.clock.now())
        status, _ = await post(client, msg)
        assert status == 200
    assert (await ctx.service.get(iid)).acknowledged_at is None
    assert await deliveries(ctx, purpose="reply") == []


@pytest.mark.parametrize(("url", "ok"), [
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True),
    ("https://sns.cn-north-1.amazonaws.com.cn/x.pem", False),           # another region
    ("http://sns.us-east-1.amazonaws.com/x.pem", False),                # not HTTPS
    ("https://sns.us-east-1.amazonaws.com.evil.example/x.pem", False),
    ("https://evil.example/sns.us-east-1.amazonaws.com/x.pem", False),
    ("https://sns.us-east-1.amazonaws.com:8443/x.pem", False),
    ("https://s3.amazonaws.com/x.pem", False),
])
def test_certificate_hosts(url: str, ok: bool) -> None:
    assert sns_host_allowed(url, region="us-east-1", extra_hosts=[]) is ok
