"""Structured logs: JSON off a terminal, readable on one, one line per key event, never a secret or a phone."""
from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from core.logs import mask_phone, scrub, set_secret_values, setup
from core.rbac import Actor

ADMIN = Actor("cli:admin", source="test")
PHONE = "+15550100001"  # alice in tests/conftest.py


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def capture() -> Iterator[Callable[..., io.StringIO]]:
    """Route the root logger to a buffer with core.logs.setup, and put pytest's handlers back afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def start(fmt: str = "json", stream: io.StringIO | None = None) -> io.StringIO:
        buf = stream or io.StringIO()
        setup("INFO", fmt, stream=buf)
        return buf

    yield start
    root.handlers[:], _ = saved
    root.setLevel(saved[1])
    set_secret_values([])


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(x) for x in buf.getvalue().splitlines() if x.strip()]


def test_json_off_a_terminal_and_console_on_one(capture: Callable[..., io.StringIO]) -> None:
    buf = capture("auto")
    logging.getLogger("tocsin.test").info("notify.delivery.success", extra={"delivery": 7, "channel": "email"})
    [rec] = lines(buf)
    assert rec["event"] == "notify.delivery.success" and rec["delivery"] == 7 and rec["channel"] == "email"
    assert rec["level"] == "info" and rec["ts"].endswith("+00:00")

    tty = capture("auto", Tty())
    logging.getLogger("tocsin.test").info("notify.delivery.success", extra={"delivery": 7, "channel": "email"})
    out = tty.getvalue().strip()
    assert not out.startswith("{")
    assert "notify.delivery.success" in out and "delivery=7" in out and "channel=email" in out


@pytest.mark.parametrize("text,expected", [
    ("+15551234567", "*******4567"),
    ("call +1 (555) 123-4567 now", "call *******4567 now"),
    ("+44 20 7946 0958", "********0958"),
    ("555-123-4567", "******4567"),
    ("15551234567", "*******4567"),
    # Not phones: must stay readable.
    ("127.0.0.1:8080", "127.0.0.1:8080"),
    ("2024-06-01T12:00:00.123456+00:00", "2024-06-01T12:00:00.123456+00:00"),
    ("tocsin-12-sms-alice", "tocsin-12-sms-alice"),
    ("hash 3f2a12345678901bc", "hash 3f2a12345678901bc"),
    ("123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174000"),
    ("1718000000.123", "1718000000.123"),
    ("-1001234567890", "-1001234567890"),
])
def test_phone_masking_keeps_only_the_last_four_digits(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text,leak", [
    ("postgresql://tocsin:hunter2pw@db:5432/tocsin", "hunter2pw"),
    ("Authorization: Bearer abcdefghijklmnop", "abcdefghijklmnop"),
    ("POST https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage",
     "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
    ("token xoxb-1234-5678-abcdefghijkl", "xoxb-1234-5678-abcdefghijkl"),
])
def test_token_shaped_secrets_are_blanked_even_when_unknown(text: str, leak: str) -> None:
    assert leak not in scrub(text)


def test_secret_keys_values_and_phones_never_reach_a_line(capture: Callable[..., io.StringIO]) -> None:
    buf = capture("json")
    set_secret_values(["s3cr3t-\"quoted\"-value", "checkpoint-key-123"])
    log = logging.getLogger("tocsin.test")
    log.info("sent to %s with s3cr3t-\"quoted\"-value", PHONE, extra={
        "phone": "555 010 0001", "password": "pw", "checkpoint_key": "x", "api_key": "k",
        "nested": {"to": [PHONE], "bot_token": "t", "note": "key checkpoint-key-123 here"},
        "obj": RuntimeError(f"provider said no to {PHONE}")})
    try:
        raise ValueError(f"cannot call {PHONE}: token checkpoint-key-123 rejected")
    except ValueError:
        log.exception("notify.delivery.failed", extra={"channel": "voice"})
    out = buf.getvalue()
    for leak in ("15550100001", "555 010 0001", "s3cr3t", "checkpoint-key-123", '"pw"'):
        assert leak not in out, leak
    first, second = lines(buf)
    assert first["event"] == "sent to *******0001 with **********"
    assert first["phone"] == "******0001" and first["password"] == "**********"
    assert first["nested"]["bot_token"] == "**********" and first["nested"]["to"] == ["*******0001"]
    assert first["obj"] == "provider said no to *******0001"
    assert "ValueError: cannot call *******0001: token ********** rejected" in second["exc"]


def test_mask_phone() -> None:
    assert mask_phone("+1 555 010 0001") == "*******0001"
    assert mask_phone("12") == "12"


async def test_declare_ack_escalate_log_one_line_per_key_event(make_ctx: Callable[..., Any],
                                                              capture: Callable[..., io.StringIO]) -> None:
    ctx = await make_ctx(
        routing={"default_targets": {"lists": ["oncall"]},
                 "rules": [{"name": "sev1-pages", "min_severity": "sev1", "targets": {"lists": ["oncall"]},
                            "escalation_policy": "p"}]},
        escalation_policies=[{"name": "p", "levels": [{"wait_minutes": 5, "targets": {"lists": ["leads"]}}]}],
        api={"keys": [{"name": "ci", "key": "api-key-value-42", "role": "operator"}]})
    buf = capture("json")
    out = await ctx.service.declare(actor=ADMIN, title=f"db down, call {PHONE}", severity="sev1")
    ref = out.incident.ref
    await ctx.service.escalate(ref, actor=ADMIN)
    await ctx.service.acknowledge(ref, actor=ADMIN)
    await ctx.service.resolve(ref, actor=ADMIN, text="fixed")
    logging.getLogger("tocsin.test").info("inbound with key api-key-value-42")
    recs = lines(buf)
    events = [r["event"] for r in recs]
    for name in ("notify.event.received", "notify.rule.matched", "incident.state.changed", "escalation.fired"):
        assert name in events, (name, events)
    matched = next(r for r in recs if r["event"] == "notify.rule.matched")
    assert matched["incident"] == ref and matched["rules"] == ["sev1-pages"]
    assert "sms" in matched["channels"]
    changes = [r for r in recs if r["event"] == "incident.state.changed"]
    assert [c.get("to_state") for c in changes] == ["open", "resolved"]
    assert all(c["incident"] == ref for c in changes)
    fired = next(r for r in recs if r["event"] == "escalation.fired")
    assert fired["level"] == "info" and fired["field_level"] == 1  # the field cannot shadow the log level
    text = buf.getvalue()
    assert "15550100001" not in text and "api-key-value-42" not in text and "test-checkpoint-key" not in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_event_fields_never_shadow_ts_level_event_or_logger(capture: Callable[..., io.StringIO], fmt: str) -> None:
    buf = capture(fmt, Tty() if fmt == "console" else None)
    logging.getLogger("tocsin.test").warning("x.happened", extra={
        "ts": "then", "level": 3, "event": "other", "logger": "me", "exc": "none", "kept": 1})
    line = buf.getvalue().strip()
    if fmt == "json":
        rec = json.loads(line)
        assert (rec["level"], rec["event"], rec["logger"]) == ("warning", "x.happened", "tocsin.test")
        assert rec["ts"] != "then" and rec["kept"] == 1
        assert {rec[f"field_{k}"] for k in ("ts", "level", "event", "logger", "exc")} == {
            "then", 3, "other", "me", "none"}
    else:
        assert "WARNING x.happened" in line and "field_level=3" in line and " level=" not in line


async def test_declare_to_delivery_logs_every_key_event_and_no_full_number(
        make_ctx: Callable[..., Any], capture: Callable[..., io.StringIO]) -> None:
    """The worker runs in the app: a declare becomes attempts, a success (webhook, SMS via outbox) and a
    permanent failure, each one line naming incident, delivery id and channel."""
    from aiohttp.test_utils import TestClient, TestServer
    from sqlalchemy import func, select

    from bot.server import build_app
    from core.models import Delivery
    from tests.stand_ins.http import HttpStandIn

    async with HttpStandIn() as peer:
        peer.on("/broken", (400, {"error": "no such channel"}))
        ctx = await make_ctx(
            destinations=[{"name": "hook", "channel": "webhook", "url": peer.url + "/hook",
                           "headers": {"Authorization": "Bearer hook-secret-123456"}},
                          {"name": "broken", "channel": "webhook", "url": peer.url + "/broken"}],
            routing={"default_targets": {"lists": [], "contacts": ["alice"], "destinations": ["hook", "broken"]},
                     "rules": []},
            channels={"webhook": {"outbox": False}})
        buf = capture("json")
        app, _rt = await build_app(ctx)
        async with TestClient(TestServer(app)):
            out = await ctx.service.declare(actor=ADMIN, title="payments down", severity="sev1")

            async def settled() -> bool:
                async with ctx.db.engine.connect() as conn:
                    rows = dict((await conn.execute(select(Delivery.status, func.count())
                                                    .group_by(Delivery.status))).all())
                return rows.get("queued", 0) == 0 and rows.get("sending", 0) == 0

            import asyncio

            for _ in range(200):
                if await settled():
                    break
                await asyncio.sleep(0.05)
            assert await settled()
    recs = lines(buf)
    ref = out.incident.ref
    by_event: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        by_event.setdefault(r["event"], []).append(r)
    for name in ("notify.event.received", "notify.rule.matched", "incident.state.changed",
                 "notify.delivery.attempt", "notify.delivery.success", "notify.delivery.failed"):
        assert name in by_event, (name, sorted(by_event))
    for name in ("notify.delivery.attempt", "notify.delivery.failed"):
        for r in by_event[name]:
            if r["logger"] == "tocsin.worker":
                assert r["incident"] == ref and isinstance(r["delivery_id"], int) and r["channel"], r
    # Successes: one line per incident and channel in a commit, naming each delivery and its masked address.
    success = [r for r in by_event["notify.delivery.success"] if r["logger"] == "tocsin.worker"]
    for r in success:
        assert r["incident"] == ref and r["channel"] and r["count"] == len(r["delivery_ids"]) == len(r["to"]), r
        assert all(isinstance(i, int) for i in r["delivery_ids"]), r
    assert sum(r["count"] for r in success) == sum(1 for r in success for _ in r["delivery_ids"]) >= 2
    failed = [r for r in by_event["notify.delivery.failed"] if r.get("recipient") == "broken"]
    assert failed and failed[0]["level"] == "error"
    sms = [r for r in success if r.get("channel") == "sms"]
    assert sms and sms[0]["to"][0].endswith("0001") and sms[0]["to"][0].startswith("*")
    text = buf.getvalue()
    assert "15550100001" not in text and "hook-secret-123456" not in text
