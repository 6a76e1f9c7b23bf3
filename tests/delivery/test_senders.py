"""HTTP senders (Slack, Teams, generic webhook, Telegram) against a loopback stand-in, and the registry."""
from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import aiohttp
import pytest

from core.appearance.slack import render_slack
from core.appearance.telegram import render_telegram
from core.config import ConfigHolder, RetryPolicy
from core.delivery import policy
from core.delivery.message import DeliveryResult, Envelope
from core.delivery.registry import (
    DEFAULT_RETRY,
    SENDERS,
    OutboxSwitch,
    build_senders,
    close_senders,
    retry_policy,
)
from core.delivery.slack_webhook import SlackWebhookSender
from core.delivery.sms import SmsSender
from core.delivery.ntfy import NtfySender
from core.delivery.pagerduty import PagerDutySender
from core.delivery.sms_sns import SnsSmsSender
from core.delivery.teams_webhook import TeamsWebhookSender
from core.delivery.telegram import TelegramSender
from core.delivery.webhook import SIGNATURE_HEADER, WebhookSender, verify_signature
from core.errors import ConfigError
from tests.delivery.helpers import HANG_TIMEOUT, NORMAL_TIMEOUT, config, envelope, notification, retry
from tests.stand_ins.http import HttpStandIn, Reply, free_port, hang, retry_after

TOKEN = "123456:SECRET-bot-token"


def http_config(peer_url: str, *, timeout: float = NORMAL_TIMEOUT, **extra: Any) -> Any:
    return config(
        destinations=[
            {"name": "ops-slack", "channel": "slack_webhook", "url": f"{peer_url}/slack/T000/B000/XXXX"},
            {"name": "ops-teams", "channel": "teams_webhook", "url": f"{peer_url}/teams/webhook"},
            {"name": "ops-hook", "channel": "webhook", "url": f"{peer_url}/hook", "method": "PUT",
             "headers": {"Authorization": "Bearer hook-token", "X-Team": "sre"}, "hmac_secret": "s3cret"},
            {"name": "plain-hook", "channel": "webhook", "url": f"{peer_url}/plain"},
            {"name": "ops-tg", "channel": "telegram", "chat_id": "-100200"},
            {"name": "ops-ntfy", "channel": "ntfy", "url": f"{peer_url}/ntfy/ops-pages", "token": "tk_SECRETntfy"},
            {"name": "ops-pd", "channel": "pagerduty", "url": f"{peer_url}/v2/enqueue",
             "routing_key": "SECRETroutingkey0000000000000001"},
        ],
        channels={ch: retry(timeout) for ch in ("slack_webhook", "teams_webhook", "webhook", "telegram", "ntfy",
                                                 "pagerduty")},
        telegram={"bot_token": TOKEN, "api_url": f"{peer_url}/bot"},
        **extra,
    )


# (channel, sender class, address, stand-in path pattern)
HTTP_SENDERS = [
    ("slack_webhook", SlackWebhookSender, "ops-slack", "/slack/*"),
    ("teams_webhook", TeamsWebhookSender, "ops-teams", "/teams/*"),
    ("webhook", WebhookSender, "ops-hook", "/hook"),
    ("telegram", TelegramSender, "-100200", f"/bot{TOKEN}/sendMessage"),
    ("ntfy", NtfySender, "ops-ntfy", "/ntfy/"),
    ("pagerduty", PagerDutySender, "ops-pd", "/v2/enqueue"),
]
OK_REPLY = {
    "slack_webhook": (200, "ok"),
    "teams_webhook": (202, ""),
    "webhook": (204,),
    "telegram": (200, {"ok": True, "result": {"message_id": 77}}),
    "ntfy": (200, {"id": "abc", "event": "message"}),
    "pagerduty": (202, {"status": "success", "message": "Event processed", "dedup_key": "INC-12"}),
}


by_channel = pytest.mark.parametrize(("channel", "cls", "address", "path"), HTTP_SENDERS,
                                     ids=[s[0] for s in HTTP_SENDERS])


def make(cls: type, cfg: Any, http: aiohttp.ClientSession) -> Any:
    return cls(ConfigHolder(cfg), http=http)


# --- the outcome table every HTTP sender must honour ---------------------------------------------------


@by_channel
@pytest.mark.parametrize(("reply", "outcome", "status", "after"), [
    ("ok", "delivered", None, None),
    (retry_after(2), "retry", 429, 2.0),
    (retry_after(0.5, status=503), "retry", 503, 0.5),
    ((500,), "retry", 500, None),
    ((408,), "retry", 408, None),
    ((400, "bad request"), "permanent", 400, None),
    ((404,), "permanent", 404, None),
], ids=["ok", "429-retry-after", "503-retry-after", "500", "408", "400", "404"])
async def test_http_outcomes(peer: HttpStandIn, http: aiohttp.ClientSession, channel: str, cls: type,
                             address: str, path: str, reply: Any, outcome: str, status: int | None,
                             after: float | None) -> None:
    peer.script(path, OK_REPLY[channel] if reply == "ok" else reply)
    sender = make(cls, http_config(peer.url), http)
    result: DeliveryResult = await sender.send(envelope(channel, address, recipient=address))
    assert result.outcome == outcome, result
    if status is not None:
        assert result.status_code == status
    assert result.retry_after == after
    assert len(peer.requests_to(path)) == 1


@by_channel
async def test_http_hang_is_a_quick_retry(peer: HttpStandIn, http: aiohttp.ClientSession, channel: str,
                                          cls: type, address: str, path: str) -> None:
    peer.script(path, hang(10))
    sender = make(cls, http_config(peer.url, timeout=HANG_TIMEOUT), http)
    started = time.monotonic()
    result = await sender.send(envelope(channel, address, recipient=address))
    elapsed = time.monotonic() - started
    assert result.outcome == "retry" and "within 0.36s" in result.summary
    assert elapsed < 2.0


@by_channel
async def test_http_connection_refused_is_retry_without_secrets(http: aiohttp.ClientSession, channel: str,
                                                                cls: type, address: str, path: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = await make(cls, http_config(dead), http).send(envelope(channel, address, recipient=address))
    assert result.outcome == "retry"
    assert "SECRET" not in result.summary and "XXXX" not in result.summary


async def test_unknown_or_mismatched_destination_is_permanent(peer: HttpStandIn,
                                                              http: aiohttp.ClientSession) -> None:
    cfg = http_config(peer.url)
    sender = SlackWebhookSender(ConfigHolder(cfg), http=http)
    assert (await sender.send(envelope("slack_webhook", "nope"))).outcome == "permanent"
    res = await sender.send(envelope("slack_webhook", "ops-teams"))
    assert res.outcome == "permanent" and "teams_webhook" in res.summary
    assert peer.requests == []


# --- Slack --------------------------------------------------------------------------------------------------


async def test_slack_posts_block_kit(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("/slack/*", (200, "ok"))
    sender = SlackWebhookSender(ConfigHolder(http_config(peer.url)), http=http)
    result = await sender.send(envelope("slack_webhook", "ops-slack"))
    assert result.outcome == "delivered" and result.status_code == 200
    req = peer.requests[0]
    assert req.method == "POST" and req.path == "/slack/T000/B000/XXXX"
    assert req.headers["Content-Type"].startswith("application/json")
    assert req.json == json.loads(json.dumps(render_slack(notification())))


# --- Teams --------------------------------------------------------------------------------------------------


async def test_teams_posts_adaptive_card_under_28kb(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("/teams/*", (202, ""))
    n = notification(body="Ünïcode 😀 " * 20_000)
    sender = TeamsWebhookSender(ConfigHolder(http_config(peer.url)), http=http)
    result = await sender.send(envelope("teams_webhook", "ops-teams", n))
    assert result.outcome == "delivered"
    req = peer.requests[0]
    assert len(req.body) <= 28_000
    assert req.json["type"] == "message"
    card = req.json["attachments"][0]["content"]
    assert req.json["attachments"][0]["contentType"] == "application/vnd.microsoft.card.adaptive"
    assert card["version"] == "1.4"


@pytest.mark.parametrize(("text", "outcome"), [
    ("1", "delivered"),
    ("Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 429 with "
     "ContextId tcid=0,server=msgapi-production-eus-azsc2-4-170,cv=deadbeef.0", "retry"),
    ("Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error 400",
     "permanent"),
])
async def test_teams_legacy_connector_errors_inside_a_200(peer: HttpStandIn, http: aiohttp.ClientSession,
                                                          text: str, outcome: str) -> None:
    peer.script("/teams/*", (200, text))
    sender = TeamsWebhookSender(ConfigHolder(http_config(peer.url)), http=http)
    result = await sender.send(envelope("teams_webhook", "ops-teams"))
    assert result.outcome == outcome


# --- generic webhook ----------------------------------------------------------------------------------------


async def test_webhook_headers_signature_and_method(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("/hook", (200, {"received": True}))
    env = envelope("webhook", "ops-hook", key="inc-12:m1:ops-hook:webhook")
    result = await WebhookSender(ConfigHolder(http_config(peer.url)), http=http).send(env)
    assert result.outcome == "delivered"
    req = peer.requests[0]
    assert req.method == "PUT"
    assert req.headers["Idempotency-Key"] == "inc-12:m1:ops-hook:webhook"
    assert req.headers["Authorization"] == "Bearer hook-token" and req.headers["X-Team"] == "sre"
    assert req.headers[SIGNATURE_HEADER].startswith("sha256=")
    assert verify_signature("s3cret", req.body, req.headers[SIGNATURE_HEADER])
    assert not verify_signature("wrong", req.body, req.headers[SIGNATURE_HEADER])
    assert not verify_signature("s3cret", req.body + b" ", req.headers[SIGNATURE_HEADER])
    assert req.json["idempotency_key"] == env.idempotency_key
    assert req.json["event"] == {"source": "alertmanager", "labels": {"alertname": "DBDown"}}
    assert req.json["notification"]["title"] == "Database <primary> down & out"


async def test_webhook_retry_carries_the_same_idempotency_key(peer: HttpStandIn,
                                                              http: aiohttp.ClientSession) -> None:
    peer.script("/plain", hang(10), (200,))
    sender = WebhookSender(ConfigHolder(http_config(peer.url, timeout=HANG_TIMEOUT)), http=http)
    first = await sender.send(envelope("webhook", "plain-hook", attempt=1, key="k-same"))
    second = await sender.send(envelope("webhook", "plain-hook", attempt=2, key="k-same"))
    assert (first.outcome, second.outcome) == ("retry", "delivered")
    reqs = peer.requests_to("/plain")
    assert [r.headers["Idempotency-Key"] for r in reqs] == ["k-same", "k-same"]
    assert SIGNATURE_HEADER not in reqs[0].headers           # no hmac_secret on this destination
    assert reqs[0].method == "POST"


async def test_webhook_does_not_follow_redirects(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("/plain", (302, None, {"Location": "/elsewhere"}))
    result = await WebhookSender(ConfigHolder(http_config(peer.url)), http=http).send(envelope("webhook", "plain-hook"))
    assert result.outcome == "permanent" and peer.requests_to("/elsewhere") == []


# --- Telegram -----------------------------------------------------------------------------------------------


async def test_telegram_send_message(peer: HttpStandIn, http: aiohttp.ClientSession) -> None:
    peer.script("*/sendMessage", (200, {"ok": True, "result": {"message_id": 77}}))
    result = await TelegramSender(ConfigHolder(http_config(peer.url)), http=http).send(envelope("telegram", "4242"))
    assert result.outcome == "delivered" and "77" in result.summary
    req = peer.requests[0]
    assert req.path == f"/bot{TOKEN}/sendMessage"
    assert req.json["chat_id"] == "4242" and req.json["parse_mode"] == "HTML"
    assert req.json["text"] == render_telegram(notification())


@pytest.mark.parametrize(("reply", "outcome", "after"), [
    (Reply(429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry after 7",
                 "parameters": {"retry_after": 7}}), "retry", 7.0),
    (Reply(400, {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"}),
     "permanent", None),
    (Reply(403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}),
     "permanent", None),
    (Reply(200, {"ok": False, "error_code": 200, "description": "weird"}), "permanent", None),
    (Reply(200, {"ok": False, "description": "no code at all"}), "permanent", None),
    (Reply(502, "<html>Bad Gateway</html>"), "retry", None),
])
async def test_telegram_error_answers(peer: HttpStandIn, http: aiohttp.ClientSession, reply: Reply,
                                      outcome: str, after: float | None) -> None:
    peer.script("*/sendMessage", reply)
    result = await TelegramSender(ConfigHolder(http_config(peer.url)), http=http).send(envelope("telegram", "4242"))
    assert result.outcome == outcome and result.retry_after == after
    assert TOKEN not in result.summary


async def test_telegram_group_migrated_names_the_new_chat(peer: HttpStandIn,
                                                         http: aiohttp.ClientSession) -> None:
    peer.script("*/sendMessage", (400, {
        "ok": False, "error_code": 400,
        "description": "Bad Request: group chat was upgraded to a supergroup chat",
        "parameters": {"migrate_to_chat_id": -1001234},
    }))
    result = await TelegramSender(ConfigHolder(http_config(peer.url)), http=http).send(envelope("telegram", "-100200"))
    assert result.outcome == "permanent" and "-1001234" in result.summary


async def test_telegram_without_token_is_permanent(http: aiohttp.ClientSession) -> None:
    result = await TelegramSender(ConfigHolder(config()), http=http).send(envelope("telegram", "4242"))
    assert result.outcome == "permanent" and "bot_token" in result.summary


# --- registry -----------------------------------------------------------------------------------------------


class FakeOutbox:
    """Stands in for the outbox sender (another module): records what it was built for."""

    channel: ClassVar[str] = "outbox"
    rate_per_second: ClassVar[float | None] = None

    def __init__(self, channel: str) -> None:
        self.for_channel = channel
        self.closed = False

    async def send(self, envelope: Envelope) -> DeliveryResult:
        return DeliveryResult.ok("stored")

    async def aclose(self) -> None:
        self.closed = True


async def test_build_senders_real_and_outbox(http: aiohttp.ClientSession) -> None:
    holder = ConfigHolder(config(channels={"sms": {"outbox": True}, "voice": {"outbox": True}}))
    senders = build_senders(holder, http=http, outbox_factory=FakeOutbox)
    assert set(senders) == {"email", "sms", "voice", "slack_webhook", "teams_webhook", "webhook", "telegram",
                            "ntfy", "pagerduty", "webpush", "outbox"}
    sms = senders["sms"]
    assert isinstance(sms, OutboxSwitch) and isinstance(sms.current, FakeOutbox)
    assert sms.current.for_channel == "sms"  # type: ignore[attr-defined]
    assert isinstance(senders["outbox"], FakeOutbox)
    for channel in ("email", "slack_webhook", "teams_webhook", "webhook", "telegram"):
        switch = senders[channel]
        assert isinstance(switch, OutboxSwitch) and isinstance(switch.current, SENDERS[channel])
        assert switch.channel == channel
        for attr in ("rate_per_second", "send", "aclose"):
            assert hasattr(switch, attr)
    # a reload that turns the outbox off (or on) applies to the next send, no rebuild
    holder.replace(config(channels={"email": {"outbox": True}}))
    assert isinstance(sms.current, SmsSender) and isinstance(sms.current.current, SnsSmsSender)
    assert isinstance(senders["email"].current, FakeOutbox)  # type: ignore[attr-defined]
    assert sms.rate_per_second == SnsSmsSender.rate_per_second
    await close_senders(senders)
    assert sms.outbox.closed  # type: ignore[attr-defined]


async def test_outbox_channel_without_a_factory_is_a_config_error(http: aiohttp.ClientSession) -> None:
    with pytest.raises(ConfigError, match=r"channels\.email\.outbox"):
        build_senders(ConfigHolder(config(channels={"email": {"outbox": True}})), http=http,
                      outbox_factory=None)
    senders = build_senders(ConfigHolder(config()), http=http, outbox_factory=None)
    assert "outbox" not in senders and "email" in senders


async def test_unconfigured_voice_is_permanent_not_silent(http: aiohttp.ClientSession) -> None:
    senders = build_senders(ConfigHolder(config()), http=http)
    result = await senders["voice"].send(envelope("voice", "+15550100001"))
    assert result.outcome == "permanent" and "account_sid" in result.summary


def test_default_retry_policies() -> None:
    assert DEFAULT_RETRY is policy.DEFAULT_RETRY and retry_policy is policy.retry_policy   # one truth
    assert DEFAULT_RETRY["email"].max_retries == 3
    assert (DEFAULT_RETRY["email"].base_seconds, DEFAULT_RETRY["email"].factor) == (2.0, 2.0)
    for ch in ("slack_webhook", "teams_webhook"):
        p = DEFAULT_RETRY[ch]
        assert [p.base_seconds * p.factor ** i for i in range(p.max_retries)] == [1.0, 2.0, 4.0]
    assert DEFAULT_RETRY["webhook"].max_retries == 5
    for ch in ("sms", "voice", "telegram", "outbox"):
        assert DEFAULT_RETRY[ch].max_retries == 3
    cfg = config(channels={"webhook": {"retry": {"max_retries": 9, "timeout_seconds": 2}}})
    assert retry_policy(cfg, "webhook") == RetryPolicy(max_retries=9, timeout_seconds=2)
    assert retry_policy(cfg, "email") is DEFAULT_RETRY["email"]
