"""telegram_dm pages: the card sent to the contact's private chat, Acknowledge pressed there acts as the
contact (a paged contact, no role needed) once and stops escalation, later changes edit the DM and reply
under it; "bot can't initiate conversation" is a permanent failure naming why. SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from bot import server
from bot.telegram import bot as tg_bot
from core.delivery.message import DeliveryResult
from tests.stand_ins.http import Reply
from tests.telegram.botapi import BotApi, decode, press
from tests.telegram.conftest import SECRET, telegram_overrides
from tests.twoway.helpers import OP, audit, deliveries, drive_dm_pages, paging_config

CONTACTS = [{"name": "alice", "email": "alice@example.com", "chat": {"telegram": "4242"},
             "preferences": {"sev1": ["telegram_dm", "email"], "default": ["email"]}},
            {"name": "bob", "email": "bob@example.com", "chat": {"telegram": "5151"},
             "preferences": {"sev1": ["telegram_dm", "email"], "default": ["email"]}},
            {"name": "carol", "email": "carol@example.com"}]


@pytest.fixture
async def started(make_ctx: Callable[..., Any], api: BotApi,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Any, Any, TestClient]]:
    monkeypatch.setattr(server, "_mounts", lambda: [tg_bot.mount])
    cfg = telegram_overrides(api)
    cfg["access"] = {"cli:op": "operator"}  # alice acts as a paged contact, not through a role
    ctx = await make_ctx(**{**paging_config(contacts=CONTACTS), **cfg})
    app, rt = await server.build_app(ctx)
    client = TestClient(TestServer(app))
    await client.start_server()
    tg = next(c for c in rt.components if c.name == "telegram")
    await asyncio.wait_for(tg.connected.wait(), 10)
    yield ctx, rt, client
    await client.close()


async def sync_dms(ctx: Any, rt: Any) -> list[DeliveryResult]:
    return await drive_dm_pages(ctx, rt.chat_senders["telegram_dm"], "telegram_dm")


async def test_dm_page_ack_in_the_private_chat(started: tuple[Any, Any, TestClient], api: BotApi) -> None:
    ctx, rt, client = started

    async def send(rec: Any) -> Reply:
        if str(decode(rec).get("chat_id")) == "5151":  # bob never started a chat with the bot
            return Reply(403, {"ok": False, "error_code": 403,
                               "description": "Forbidden: bot can't initiate conversation with a user"})
        return await api._handle(rec)

    api.peer.on("*/sendMessage", send)
    api.peer._handlers.insert(0, api.peer._handlers.pop())  # ahead of the generic Bot API handler
    out = await ctx.service.declare(actor=OP, title="DB down", severity="sev1")
    iid = out.incident.id
    await ctx.service.escalate(iid, actor=OP)
    results = await sync_dms(ctx, rt)
    assert sorted(r.outcome for r in results) == ["delivered", "permanent"]
    [bob] = await deliveries(ctx, channel="telegram_dm", recipient="bob")
    assert bob.status == "failed" and "never opened a direct message" in (bob.last_error or "")
    assert "bot can't initiate conversation" in (bob.last_error or "")
    dm = next(c for c in api.calls("sendMessage") if str(c.params["chat_id"]) == "4242")
    assert f"tocsin:ack:{iid}" in str(dm.params["reply_markup"])
    # Acknowledge / Open incident: the second is a URL button to the console page (server.public_url)
    rows = dm.params["reply_markup"]["inline_keyboard"]
    assert rows[0][0] == {"text": "Acknowledge", "callback_data": f"tocsin:ack:{iid}"}
    assert rows[-1] == [{"text": "Open incident", "url": f"{ctx.cfg.server.public_url}/incidents/{iid}"}]

    update = press(9001, f"tocsin:ack:{iid}", user_id=4242, chat_id=4242, message_id=int(dm.params.get(
        "message_id", 0) or 100))
    update["callback_query"]["message"]["chat"] = {"id": 4242, "type": "private", "first_name": "Alice"}
    resp = await client.post(tg_bot.WEBHOOK_PATH, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert resp.status == 200
    await api.wait_calls("answerCallbackQuery")
    inc = await ctx.service.get(iid)
    assert inc.acknowledged_by == "telegram:4242"
    [entry] = await audit(ctx, "incident.ack")
    assert entry.actor == "telegram:4242"
    assert [d.status for d in await deliveries(ctx, purpose="escalation")] == ["cancelled"]

    await sync_dms(ctx, rt)  # the ACK notice: alice's DM is edited and answered under it
    edits = [c for c in api.calls("editMessageText") if str(c.params["chat_id"]) == "4242"]
    assert edits
    replies = [c for c in api.calls("sendMessage") if str(c.params["chat_id"]) == "4242"
               and c.params.get("reply_parameters")]
    assert replies and replies[-1].params["reply_parameters"]["message_id"] == int(edits[-1].params["message_id"])
