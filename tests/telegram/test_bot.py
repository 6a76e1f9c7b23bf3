"""The Telegram adapter end to end: real python-telegram-bot, real aiohttp app (build_app), loopback Bot API.

Every test here runs on SQLite and PostgreSQL (db_url).
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from bot.commands import HELP
from bot.telegram import bot as tg_bot
from core.errors import ConfigError
from core.models import Incident
from core.rbac import Actor
from tests.telegram.botapi import GROUP, TOKEN, command, press
from tests.telegram.conftest import INCIDENT_CHAT, PUBLIC_URL, SECRET, Harness

Factory = Callable[..., Any]


async def incidents(h: Harness) -> list[Incident]:
    return await h.ctx.service.list(state="all")


async def replies(h: Harness, count: int) -> list[dict[str, Any]]:
    return [c.params for c in await h.api.wait_calls("sendMessage", count)]


async def test_start_registers_the_webhook_with_the_secret(harness: Factory) -> None:
    h: Harness = await harness()
    [call] = h.api.calls("setWebhook")
    assert call.params["url"] == f"{PUBLIC_URL}/telegram/webhook"
    assert call.params["secret_token"] == SECRET
    assert set(call.params["allowed_updates"]) == {"message", "callback_query"}
    assert h.api.calls("getMe") and not h.api.calls("getUpdates")


async def test_declare_is_answered_as_a_reply_and_opens_the_incident(harness: Factory) -> None:
    h: Harness = await harness()
    resp = await h.post(command(1, "/incident declare sev2 Payment errors", message_id=71))
    assert resp.status == 200
    [reply] = await replies(h, 1)
    assert reply["chat_id"] == str(GROUP)
    assert reply["reply_parameters"]["message_id"] == 71
    assert reply["text"].startswith("Declared INC-1 [sev2] Payment errors")
    [inc] = await incidents(h)
    assert (inc.title, inc.severity, inc.commander, inc.source) == ("Payment errors", "sev2", "telegram:4242",
                                                                    "telegram")


@pytest.mark.parametrize("text,expected", [
    ("/incident@TocsinBot declare sev1 DB down", "Declared INC-1 [sev1] DB down"),
    ("/incident declare sev9 x", "'sev9' is not a severity"),
    ("/incident frobnicate", "Unknown command 'frobnicate'"),
    ("/incident", HELP),
    ("/start", HELP),
])
async def test_commands_and_usage_errors_are_answered(harness: Factory, text: str, expected: str) -> None:
    h: Harness = await harness()
    await h.post(command(1, text))
    [reply] = await replies(h, 1)
    assert reply["text"].startswith(expected)


async def test_commands_for_another_bot_are_left_alone(harness: Factory) -> None:
    h: Harness = await harness()
    await h.post(command(1, "/incident@OtherBot declare sev1 not for us"))
    await h.post(command(2, "/incident list"))  # same chat: processed after the first one
    [reply] = await replies(h, 1)
    assert reply["text"] == "No open incidents."
    assert await incidents(h) == []


async def test_users_without_the_role_are_refused_in_the_chat(harness: Factory) -> None:
    h: Harness = await harness()
    await h.post(command(1, "/incident declare sev2 Payment errors", user_id=999))
    [reply] = await replies(h, 1)
    assert reply["text"].startswith("Not allowed: telegram:999 has role VIEWER")
    assert await incidents(h) == []


async def test_card_buttons_ack_through_the_service_and_the_card_follows(harness: Factory) -> None:
    h: Harness = await harness()
    await h.post(command(1, "/incident declare sev2 Payment errors"))
    await replies(h, 1)
    assert [r.outcome for r in await h.drain()] == ["delivered"]
    card = h.api.calls("sendMessage")[-1].params
    assert card["chat_id"] == INCIDENT_CHAT and card["parse_mode"] == "HTML"
    assert "<b>INC-1 · SEV2 · OPEN</b>" in card["text"]
    buttons = card["reply_markup"]["inline_keyboard"][0]
    assert [(b["text"], b["callback_data"]) for b in buttons] == [
        ("Acknowledge", "tocsin:ack:1"), ("Monitoring", "tocsin:monitor:1"), ("Resolve", "tocsin:resolve:1")]
    ref = await h.ctx.cards.get(1, "telegram")
    assert ref is not None and ref.channel == INCIDENT_CHAT

    await h.post(press(2, "tocsin:ack:1", message_id=int(ref.message_ref)))
    [answer] = [c.params for c in await h.api.wait_calls("answerCallbackQuery")]
    assert answer["callback_query_id"] == "cbq-2"
    assert answer["text"].startswith("INC-1: acknowledged by Alice")
    assert answer.get("show_alert") in (None, False, "false")
    assert (await h.ctx.service.get(1)).acknowledged_by == "telegram:4242"

    assert [r.outcome for r in await h.drain()] == ["delivered"]
    [edit] = [c.params for c in h.api.calls("editMessageText")]
    assert edit["message_id"] == ref.message_ref and edit["chat_id"] == INCIDENT_CHAT
    assert "Acknowledged by telegram:4242" in edit["text"]
    assert [b["callback_data"] for b in edit["reply_markup"]["inline_keyboard"][0]] == [
        "tocsin:monitor:1", "tocsin:resolve:1"]
    note = h.api.calls("sendMessage")[-1].params
    assert note["reply_parameters"]["message_id"] == int(ref.message_ref)
    assert note["text"].startswith("<b>Acknowledged</b> · INC-1")


async def test_a_button_press_without_the_role_shows_the_refusal(harness: Factory) -> None:
    h: Harness = await harness()
    await h.ctx.service.declare(actor=Actor("cli:op", "cli"), title="Disk full", severity="sev3")
    await h.post(press(1, "tocsin:resolve:1", user_id=999))
    [answer] = [c.params for c in await h.api.wait_calls("answerCallbackQuery")]
    assert answer["show_alert"] in (True, "true")
    assert answer["text"].startswith("Not allowed: telegram:999 has role VIEWER")
    assert len(answer["text"]) <= 200
    assert (await h.ctx.service.get(1)).state == "open"


async def test_resolve_by_command_edits_the_card_and_removes_the_buttons(harness: Factory) -> None:
    h: Harness = await harness(topic_id=42)
    await h.ctx.service.declare(actor=Actor("cli:op", "cli"), title="Disk full", severity="sev3")
    await h.drain()
    card = h.api.calls("sendMessage")[-1].params
    assert card["message_thread_id"] == "42"  # the configured forum topic
    await h.post(command(1, "/incident resolve INC-1 fixed the disk", user_id=7))
    reply = (await replies(h, 2))[1]
    assert re.fullmatch(r"INC-1: resolved, \d+ pages queued\.", reply["text"]), reply["text"]
    await h.drain()
    edit = h.api.calls("editMessageText")[-1].params
    # no action buttons left; only the Open incident link to the console page stays
    assert "RESOLVED" in edit["text"]
    assert edit["reply_markup"]["inline_keyboard"] == [[{"text": "Open incident",
                                                         "url": "https://tocsin.example.com/incidents/1"}]]
    note = h.api.calls("sendMessage")[-1].params
    assert note["message_thread_id"] == "42" and "fixed the disk" in note["text"]


async def test_incident_declared_from_the_cli_gets_its_card(harness: Factory) -> None:
    h: Harness = await harness()
    await h.ctx.service.declare(actor=Actor("cli:op", "cli"), title="API latency", severity="sev1")
    assert [r.outcome for r in await h.drain()] == ["delivered"]
    [card] = [c.params for c in h.api.calls("sendMessage")]
    assert card["chat_id"] == INCIDENT_CHAT and "API latency" in card["text"]
    assert await h.ctx.cards.get(1, "telegram") is not None


async def test_a_retried_card_sync_is_not_an_error_when_nothing_changed(harness: Factory) -> None:
    h: Harness = await harness()
    await h.ctx.service.declare(actor=Actor("cli:op", "cli"), title="API latency", severity="sev1")
    await h.drain()
    ref = await h.ctx.cards.get(1, "telegram")
    assert ref is not None
    inc = await h.ctx.service.get(1)
    from core.appearance.card import IncidentCard

    surface = h.rt.chat_senders["chat:telegram"].surface
    # Telegram answers 400 "message is not modified"; for a retried sync that means done.
    await surface.update_card(ref, IncidentCard.of(inc, PUBLIC_URL))
    assert h.api.calls("editMessageText")


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
async def test_webhook_without_the_secret_is_forbidden(harness: Factory, secret: str | None) -> None:
    h: Harness = await harness()
    resp = await h.post(command(1, "/incident declare sev1 spoofed"), secret=secret)
    assert resp.status == 403
    await h.post(command(2, "/incident list"))
    [reply] = await replies(h, 1)
    assert reply["text"] == "No open incidents."


async def test_a_redelivered_update_is_processed_once(harness: Factory) -> None:
    h: Harness = await harness()
    update = command(5, "/incident declare sev2 Payment errors")
    for _ in range(3):
        assert (await h.post(update)).status == 200
    await h.post(command(6, "/incident list"))
    texts = [r["text"] for r in await replies(h, 2)]
    assert texts[0].startswith("Declared INC-1") and texts[1].startswith("INC-1 [sev2] open")
    assert len(await incidents(h)) == 1


@pytest.mark.parametrize("raw,body", [
    (b"not json", None),
    (b"", None),
    (b'{"update_id": 7, "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None),  # too deep for json
    (None, [1, 2]),
    (None, {"message": {"text": "no update_id"}}),
    (None, {"update_id": "7"}),
    (None, {"update_id": 7, "message": "not an object"}),
    (None, {"update_id": 7, "callback_query": {"id": "x"}}),
])
async def test_malformed_updates_are_rejected_with_400(harness: Factory, raw: bytes | None,
                                                       body: Any) -> None:
    h: Harness = await harness()
    resp = await h.post(body, raw=raw)
    assert resp.status == 400
    await h.post(command(8, "/incident list"))  # still serving
    [reply] = await replies(h, 1)
    assert reply["text"] == "No open incidents."


async def test_a_crashing_handler_still_answers(harness: Factory, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    h: Harness = await harness()

    async def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("database on fire")

    monkeypatch.setattr(h.ctx.service, "declare", broken)
    await h.post(command(1, "/incident declare sev2 Payment errors"))
    [reply] = await replies(h, 1)
    assert reply["text"].startswith("Something went wrong")
    assert any(r.getMessage() == "telegram.handler.failed" and r.exc_info for r in caplog.records)


async def test_polling_mode_reads_updates_without_a_webhook(harness: Factory) -> None:
    h: Harness = await harness(mode="polling", webhook_secret=None)
    await asyncio.wait_for(h.tg.polling.wait(), 10)
    assert h.api.calls("deleteWebhook") and not h.api.calls("setWebhook")
    h.api.push(command(11, "/incident declare sev3 Queue backlog"))
    [reply] = await replies(h, 1)
    assert reply["text"].startswith("Declared INC-1 [sev3] Queue backlog")
    resp = await h.post(command(12, "/incident list"))
    assert resp.status in (404, 405)  # no webhook route in polling mode


async def test_the_bot_token_never_reaches_the_logs(harness: Factory,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    h: Harness = await harness()
    await h.post(command(1, "/incident declare sev2 Payment errors"))
    await replies(h, 1)
    await h.drain()
    lines = [r.getMessage() for r in caplog.records]
    assert any("<bot-token>" in line for line in lines)  # httpx did log the URLs, redacted
    assert not any(TOKEN in line or TOKEN.split(":")[1] in line for line in lines)


@pytest.mark.parametrize("telegram,server,problem", [
    ({"webhook_secret": None}, {}, "telegram.webhook_secret: required"),
    ({"webhook_secret": "has spaces"}, {}, "telegram.webhook_secret: 1-256 characters"),
    ({}, {"public_url": "http://tocsin.example.com"}, "Telegram only calls HTTPS webhooks"),
    ({"bot_token": None}, {}, "telegram.bot_token: required"),
])
async def test_config_problems_fail_fast_naming_the_key(make_ctx: Factory, api: Any, telegram: dict[str, Any],
                                                        server: dict[str, Any], problem: str) -> None:
    # Checked when the config loads, so `config check` says it and `tocsin run` stops with the same line.
    from tests.telegram.conftest import telegram_overrides

    over = telegram_overrides(api, **telegram)
    over["server"].update(server)
    with pytest.raises(ConfigError, match=r"test-config.yaml:\d+ [a-z_.]+: .*" + problem.split(": ")[-1]):
        await make_ctx(**over)


async def test_mounted_by_the_server() -> None:
    from bot import server as server_mod

    assert tg_bot.mount in server_mod._mounts()


async def test_updates_of_one_chat_are_handled_in_order(harness: Factory) -> None:
    h: Harness = await harness()
    await h.post(command(1, "/incident declare sev2 Payment errors"))
    await h.post(command(2, "/incident ack INC-1"))
    await h.post(command(3, "/incident resolve INC-1 rolled back"))
    texts = [r["text"] for r in await replies(h, 3)]
    assert texts[0].startswith("Declared INC-1")
    assert re.fullmatch(r"INC-1: acknowledged by Alice, \d+ pages queued\.", texts[1]), texts
    assert re.fullmatch(r"INC-1: resolved, \d+ pages queued\.", texts[2]), texts


async def test_an_unreachable_bot_api_does_not_stop_the_server(harness: Factory, api: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    api.peer.script("*/getMe", (502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}))
    h: Harness = await harness()  # connected after one retry
    assert len(h.api.calls("getMe")) == 2 and h.api.calls("setWebhook")
    assert any(r.getMessage() == "telegram.connect.failed" for r in caplog.records)


async def test_only_one_process_polls_and_another_takes_over(harness: Factory, db_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    if db_url.startswith("sqlite"):
        pytest.skip("SQLite means one process: it always leads")
    monkeypatch.setattr(tg_bot.TelegramBot, "leader_retry_seconds", 0.2)
    first: Harness = await harness(mode="polling", webhook_secret=None)
    await asyncio.wait_for(first.tg.polling.wait(), 10)
    second: Harness = await harness(mode="polling", webhook_secret=None)  # another process, same database
    await asyncio.sleep(1)
    assert second.tg.app.updater is not None and not second.tg.app.updater.running
    await first.client.close()  # the leader shuts down and releases the lock
    await asyncio.wait_for(second.tg.polling.wait(), 10)
    second.api.push(command(21, "/incident declare sev3 Queue backlog"))
    [reply] = await replies(second, 1)
    assert reply["text"].startswith("Declared INC-1")


async def test_old_update_ids_are_forgotten(harness: Factory, clock: Any) -> None:
    h: Harness = await harness()
    assert await h.ctx.seen.first_time("telegram:123456:update:1")
    clock.advance(days=3)
    await h.post(command(2, "/incident list"))
    await replies(h, 1)
    await h.ctx.seen.prune()  # what the hourly job of `tocsin run` does
    assert await h.ctx.seen.result("telegram:123456:update:1") is None
    assert await h.ctx.seen.result("telegram:123456:update:2") is not None
