"""`/incident role` and `/incident note` from Telegram, end to end (real python-telegram-bot, the real app,
loopback Bot API): @username names a contact, the incident card lists the roles, the new holder is told in
a private chat (their news channel), refusals are answered and store nothing. SQLite and PostgreSQL."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot.telegram import bot as tg_bot
from core.models import AuditEntry, IncidentMessage
from tests.telegram.botapi import BotApi, command
from tests.telegram.conftest import INCIDENT_CHAT, SECRET
from tests.twoway.helpers import drive_dm_pages

CONTACTS = [{"name": "alice", "email": "alice@example.com",
             "chat": {"telegram": "5150", "telegram_username": "alice_ops"},
             "preferences": {"default": ["email"], "updates": ["telegram_dm"]}},
            {"name": "bob", "email": "bob@example.com"}]


@pytest.fixture
async def started(harness: Callable[..., Any]) -> tuple[Any, Any, TestClient]:
    h = await harness({"contacts": CONTACTS, "contact_lists": [],
                       "routing": {"default_targets": {"lists": [], "contacts": ["bob"]}}})
    return h.ctx, h.rt, h.client


async def send(client: TestClient, api: BotApi, update: dict[str, Any]) -> str:
    """Post the update to the webhook and return the bot's answer in the chat."""
    before = len(api.calls("sendMessage"))
    resp = await client.post(tg_bot.WEBHOOK_PATH, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert resp.status == 200
    calls = await api.wait_calls("sendMessage", before + 1)
    return str(calls[-1].params["text"])


async def stored(ctx: Any) -> list[int]:
    async with ctx.db.sessions() as s:
        return [int((await s.execute(select(func.count()).select_from(m))).scalar_one())
                for m in (IncidentMessage, AuditEntry)]


async def test_role_and_note_from_telegram(started: tuple[Any, Any, TestClient], api: BotApi) -> None:
    ctx, rt, client = started
    assert (await send(client, api, command(1, "/incident declare sev2 Search is slow"))).startswith(
        "Declared INC-1")
    await drive_dm_pages(ctx, rt.chat_senders["chat:telegram"], "chat:telegram")

    answer = await send(client, api, command(2, "/incident role INC-1 comms @alice_ops"))
    assert answer == "INC-1: alice is now comms (assigned by Alice); 1 private message(s) queued."
    inc = await ctx.service.get(1)
    assert (inc.commander, inc.comms) == ("telegram:4242", "contact:alice")

    # The card in the incident chat is edited to show the roles; the change is answered under it.
    assert [r.outcome for r in await drive_dm_pages(ctx, rt.chat_senders["chat:telegram"], "chat:telegram")] \
        == ["delivered"]
    edit = [c.params for c in api.calls("editMessageText") if str(c.params["chat_id"]) == INCIDENT_CHAT][-1]
    assert "Commander: telegram:4242" in edit["text"] and "Comms: alice" in edit["text"]
    # alice's news goes to her private chat with the bot: what comms does.
    assert [r.outcome for r in await drive_dm_pages(ctx, rt.chat_senders["telegram_dm"], "telegram_dm")] \
        == ["delivered"]
    to_alice = " ".join(str(c.params["text"]) for c in api.calls("sendMessage") if str(c.params["chat_id"]) == "5150")
    assert "You are now comms of INC-1 (Search is slow)." in to_alice and "post regular updates" in to_alice

    assert await send(client, api, command(3, "/incident note INC-1 Cache hit rate fell to 20%")) == \
        "INC-1: note added to the timeline."
    await drive_dm_pages(ctx, rt.chat_senders["chat:telegram"], "chat:telegram")
    last = api.calls("sendMessage")[-1].params
    assert str(last["chat_id"]) == INCIDENT_CHAT and "Cache hit rate fell to 20%" in last["text"]
    assert "<b>Note</b>" in last["text"]

    # A viewer (user 99): refused, answered, nothing stored; an unknown @username is named.
    before = await stored(ctx)
    answer = await send(client, api, command(4, "/incident role INC-1 scribe bob", user_id=99))
    assert answer.startswith("Not allowed: telegram:99 has role VIEWER, which may not assign incident roles")
    answer = await send(client, api, command(5, "/incident note INC-1 hi", user_id=99))
    assert "may not add notes to incident timelines" in answer
    answer = await send(client, api, command(6, "/incident role INC-1 scribe @nobody_here"))
    assert answer.startswith("unknown person '@nobody_here'")
    answer = await send(client, api, command(7, "/incident role INC-1 comms me", user_id=99))
    assert answer.startswith("Comms of INC-1 is already alice")
    assert await stored(ctx) == before
    # ... while taking the empty scribe role is anyone's.
    assert (await send(client, api, command(8, "/incident role INC-1 scribe me", user_id=99))).startswith(
        "INC-1: Alice took scribe")
