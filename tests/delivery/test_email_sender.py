"""EmailSender against a real SMTP server (aiosmtpd) on loopback: MIME, headers, TLS modes, SMTP errors."""
from __future__ import annotations

import time
from typing import Any

import pytest

from core.config import ConfigHolder
from core.delivery.email import EmailSender, message_id
from core.delivery.message import DeliveryResult
from tests.delivery.helpers import config, envelope, notification
from tests.stand_ins.http import free_port
from tests.stand_ins.smtp import SmtpStandIn, smtp_stand_in


def email_cfg(smtp: SmtpStandIn | None, **over: Any) -> Any:
    section = {"host": "127.0.0.1", "port": smtp.port if smtp else free_port(),
               "from_address": "Tocsin <pager@ops.example>", "retry": {"timeout_seconds": 5}}
    section.update(over)
    return config(channels={"email": section})


async def test_multipart_alternative_with_both_parts_and_headers() -> None:
    async with smtp_stand_in() as smtp:
        env = envelope("email", "alice@example.com", notification(kind="UPDATE"), key="inc-12:m3:alice:email")
        result = await EmailSender(ConfigHolder(email_cfg(smtp))).send(env)
        assert result.outcome == "delivered", result
        mail = smtp.messages[0]
    assert mail.mail_from == "pager@ops.example" and mail.rcpt_tos == ["alice@example.com"]
    msg = mail.message
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "[SEV1] INC-12 Update: Database <primary> down & out"
    assert msg["To"] == "alice@example.com"
    assert msg["From"] == "Tocsin <pager@ops.example>"
    assert msg["Message-ID"] == message_id("inc-12:m3:alice:email", "ops.example")
    assert msg["Message-ID"].endswith("@ops.example>")
    assert msg["References"] == msg["In-Reply-To"] == "<tocsin.inc-12@ops.example>"
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["Importance"] == "high"
    assert msg["X-Tocsin-Incident"] == "INC-12" and msg["X-Tocsin-Delivery"] == str(env.delivery_id)
    assert msg["Date"]
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    text, markup = plain.get_content(), html.get_content()
    assert "Database <primary> down & out" in text
    assert "Acknowledge: https://tocsin.example/ack/tok123" in text
    assert "Database &lt;primary&gt; down &amp; out" in markup
    assert 'href="https://tocsin.example/ack/tok123"' in markup


async def test_message_id_is_stable_across_retries() -> None:
    async with smtp_stand_in() as smtp:
        sender = EmailSender(ConfigHolder(email_cfg(smtp)))
        for attempt in (1, 2):
            await sender.send(envelope("email", "a@example.com", attempt=attempt, key="same-key"))
        ids = {m.message["Message-ID"] for m in smtp.messages}
    assert len(ids) == 1


@pytest.mark.parametrize(("stage", "reply", "outcome", "code"), [
    ("data", "451 4.7.1 Greylisted, try again later", "retry", 451),
    ("data", "554 5.7.1 Message rejected as spam", "permanent", 554),
    ("rcpt", "450 4.2.1 Mailbox busy", "retry", 450),
    ("rcpt", "550 5.1.1 No such user", "permanent", 550),
])
async def test_smtp_answers_are_classified(stage: str, reply: str, outcome: str, code: int) -> None:
    async with smtp_stand_in() as smtp:
        (smtp.reply_data if stage == "data" else smtp.reply_rcpt)(reply)
        result = await EmailSender(ConfigHolder(email_cfg(smtp))).send(envelope("email", "bob@example.com"))
        assert smtp.messages == []
    assert (result.outcome, result.status_code) == (outcome, code)
    assert str(code) in result.summary


async def test_connection_refused_is_retry() -> None:
    result = await EmailSender(ConfigHolder(email_cfg(None))).send(envelope("email", "bob@example.com"))
    assert result.outcome == "retry"


async def test_stalled_server_times_out_as_retry() -> None:
    async with smtp_stand_in() as smtp:
        smtp.data_delay = 3.0
        started = time.monotonic()
        cfg = email_cfg(smtp, retry={"timeout_seconds": 0.5})
        result = await EmailSender(ConfigHolder(cfg)).send(envelope("email", "bob@example.com"))
        assert time.monotonic() - started < 2.5
        smtp.data_delay = 0
    assert result.outcome == "retry", result


async def test_bad_address_is_permanent_without_connecting() -> None:
    result = await EmailSender(ConfigHolder(email_cfg(None))).send(envelope("email", "not-an-address"))
    assert result.outcome == "permanent"


async def test_starttls_with_login() -> None:
    async with smtp_stand_in(tls="starttls", auth=("pager", "pw")) as smtp:
        cfg = email_cfg(smtp, security="starttls", username="pager", password="pw")
        sender = EmailSender(ConfigHolder(cfg), tls_context=smtp.client_tls_context)
        result = await sender.send(envelope("email", "a@example.com"))
        assert result.outcome == "delivered", result
        assert smtp.messages[0].tls and smtp.messages[0].authenticated


async def test_wrong_password_is_permanent() -> None:
    async with smtp_stand_in(tls="starttls", auth=("pager", "pw")) as smtp:
        cfg = email_cfg(smtp, security="starttls", username="pager", password="nope")
        sender = EmailSender(ConfigHolder(cfg), tls_context=smtp.client_tls_context)
        result = await sender.send(envelope("email", "a@example.com"))
    assert result.outcome == "permanent" and result.status_code == 535
    assert "nope" not in result.summary


async def test_implicit_tls() -> None:
    async with smtp_stand_in(tls="ssl") as smtp:
        cfg = email_cfg(smtp, security="ssl")
        result: DeliveryResult = await EmailSender(ConfigHolder(cfg), tls_context=smtp.client_tls_context).send(
            envelope("email", "a@example.com"))
        assert result.outcome == "delivered", result
        assert smtp.messages[0].tls


async def test_security_none_does_not_upgrade_and_required_starttls_refuses() -> None:
    async with smtp_stand_in(tls="starttls") as smtp:
        result = await EmailSender(ConfigHolder(email_cfg(smtp, security="none"))).send(envelope("email", "a@example.com"))
    # the server insists on STARTTLS (530); we were told not to use TLS: a config problem, not transient
    assert result.outcome == "permanent" and result.status_code == 530
