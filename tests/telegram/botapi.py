"""A loopback Telegram Bot API for the real python-telegram-bot client, on the shared HttpStandIn.

Answers getMe, setWebhook, deleteWebhook, getUpdates (long poll over `push()`ed updates, honouring
`offset`), sendMessage, editMessageText (with Telegram's "message is not modified" 400),
editMessageReplyMarkup and answerCallbackQuery. PTB posts form data with nested objects as JSON strings;
JSON bodies work too. Every request is recorded by the HttpStandIn; `calls(method)` decodes them.
Script throttling with `peer.script("*/sendMessage", flood(7))`: scripts win over these handlers.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass
from typing import Any

from tests.stand_ins.http import HttpStandIn, Recorded, Reply

TOKEN = "123456:AAH-test-token_0123456789abcdefghijklmno"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Tocsin", "username": "TocsinBot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}
_JSON_FIELDS = ("reply_markup", "reply_parameters", "link_preview_options", "allowed_updates", "entities")


@dataclass
class Call:
    """One Bot API call: the method, its decoded parameters and when it arrived (monotonic)."""

    method: str
    params: dict[str, Any]
    at: float


def flood(seconds: int) -> Reply:
    """Telegram's 429: the wait is in parameters.retry_after (no Retry-After header needed)."""
    return Reply(429, {"ok": False, "error_code": 429,
                       "description": f"Too Many Requests: retry after {seconds}",
                       "parameters": {"retry_after": seconds}})


def decode(rec: Recorded) -> dict[str, Any]:
    params: dict[str, Any] = dict(rec.query)
    if isinstance(rec.json, dict):
        params.update(rec.json)
    elif rec.form:
        params.update(rec.form)
    for key in _JSON_FIELDS:
        if isinstance(params.get(key), str):
            params[key] = json.loads(params[key])
    return params


class BotApi:
    """See module docstring. `api_url` goes into telegram.api_url (PTB appends the token)."""

    def __init__(self, peer: HttpStandIn, *, token: str = TOKEN) -> None:
        self.peer = peer
        self.token = token
        self._ids = itertools.count(100)
        self.messages: dict[tuple[str, int], tuple[str, Any]] = {}
        self._updates: list[dict[str, Any]] = []
        self._confirmed = 0
        self._new_update = asyncio.Event()
        peer.on("/bot*", self._handle)

    @property
    def api_url(self) -> str:
        return f"{self.peer.url}/bot"

    # --- what the tests read ----------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        out = []
        for rec in self.peer.requests:
            name = rec.path.rsplit("/", 1)[-1]
            if method is None or name == method:
                out.append(Call(name, decode(rec), rec.at))
        return out

    async def wait_calls(self, method: str, count: int = 1, timeout: float = 10.0) -> list[Call]:
        await self.peer.wait_for(count, f"*/{method}", timeout=timeout)
        return self.calls(method)

    def push(self, *updates: dict[str, Any]) -> None:
        """Make updates available to getUpdates."""
        self._updates.extend(updates)
        self._new_update.set()

    # --- the server side ---------------------------------------------------------------------------

    async def _handle(self, rec: Recorded) -> Reply:
        prefix, _, method = rec.path.rpartition("/")
        if prefix != f"/bot{self.token}":
            return Reply(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        p = decode(rec)
        if method == "getMe":
            return ok(BOT_USER)
        if method in ("setWebhook", "deleteWebhook"):
            return ok(True)
        if method == "getUpdates":
            return ok(await self._get_updates(p))
        if method == "sendMessage":
            return ok(self._store(p, next(self._ids)))
        if method in ("editMessageText", "editMessageReplyMarkup"):
            key = (str(p["chat_id"]), int(p["message_id"]))
            if key not in self.messages:
                return bad("Bad Request: message to edit not found")
            text = p.get("text", self.messages[key][0])
            if (text, p.get("reply_markup")) == self.messages[key]:
                return bad("Bad Request: message is not modified: specified new message content and reply "
                           "markup are exactly the same as a current content and reply markup of the message")
            return ok(self._store({**p, "text": text}, int(p["message_id"]), edited=True))
        if method == "answerCallbackQuery":
            return ok(True)
        return Reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})

    def _store(self, p: dict[str, Any], message_id: int, *, edited: bool = False) -> dict[str, Any]:
        chat = str(p["chat_id"])
        self.messages[(chat, message_id)] = (p.get("text", ""), p.get("reply_markup"))
        msg: dict[str, Any] = {"message_id": message_id, "date": int(time.time()), "from": BOT_USER,
                               "chat": {"id": int(chat), "type": "supergroup", "title": "Incidents"},
                               "text": p.get("text", "")}
        if p.get("message_thread_id"):
            msg.update(message_thread_id=int(p["message_thread_id"]), is_topic_message=True)
        if edited:
            msg["edit_date"] = int(time.time())
        if p.get("reply_markup"):
            msg["reply_markup"] = p["reply_markup"]
        return msg

    async def _get_updates(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        if p.get("offset") is not None:
            self._confirmed = max(self._confirmed, int(p["offset"]))
        wait = min(float(p.get("timeout") or 0), 0.3)
        deadline = time.monotonic() + wait
        while True:
            pending = [u for u in self._updates if u["update_id"] >= self._confirmed]
            left = deadline - time.monotonic()
            if pending or left <= 0:
                return pending
            self._new_update.clear()
            try:
                await asyncio.wait_for(self._new_update.wait(), left)
            except TimeoutError:
                return []


def ok(result: Any) -> Reply:
    return Reply(200, {"ok": True, "result": result})


def bad(description: str) -> Reply:
    return Reply(400, {"ok": False, "error_code": 400, "description": description})


# --- updates as Telegram sends them --------------------------------------------------------------------

GROUP = -100777
_msg_ids = itertools.count(5000)


def user(user_id: int, name: str = "Alice") -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": name}


def command(update_id: int, text: str, *, user_id: int = 4242, chat_id: int = GROUP,
            message_id: int | None = None) -> dict[str, Any]:
    """A message whose text starts with a bot command, with the bot_command entity PTB matches on."""
    word = text.split()[0] if text.startswith("/") else ""
    msg: dict[str, Any] = {
        "message_id": message_id or next(_msg_ids), "date": int(time.time()), "from": user(user_id),
        "chat": {"id": chat_id, "type": "supergroup" if chat_id < 0 else "private", "title": "Ops"},
        "text": text}
    if word:
        msg["entities"] = [{"type": "bot_command", "offset": 0, "length": len(word)}]
    return {"update_id": update_id, "message": msg}


def press(update_id: int, data: str, *, user_id: int = 4242, chat_id: int = GROUP,
          message_id: int = 100) -> dict[str, Any]:
    """A button press on a message the bot sent (the card)."""
    return {"update_id": update_id, "callback_query": {
        "id": f"cbq-{update_id}", "from": user(user_id), "chat_instance": "ci-1", "data": data,
        "message": {"message_id": message_id, "date": int(time.time()), "from": BOT_USER, "text": "card",
                    "chat": {"id": chat_id, "type": "supergroup", "title": "Incidents"}}}}
