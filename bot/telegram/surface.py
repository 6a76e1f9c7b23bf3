"""Telegram as a chat surface: the incident card (sendMessage / editMessageText), replies under it, and
the flood control every Bot API call of the process goes through.

Flood control is a python-telegram-bot rate limiter, so handler replies, button answers and card syncs
share one view of each chat: messages to one chat are paced (about one per second) without holding up
other chats, and a 429 blocks only the chat it names, for exactly `retry_after` seconds. Interactive
calls wait that out and retry; card syncs from the delivery queue pass `rate_limit_args={"wait": False}`
and get the wait back as SurfaceError(after=...) so the worker reschedules instead of sleeping.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ClassVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Forbidden,
    InvalidToken,
    RetryAfter,
    TelegramError,
)
from telegram.ext import BaseRateLimiter, ExtBot
from telegram.warnings import PTBDeprecationWarning

from bot.surface import SurfaceError
from core.appearance.card import IncidentCard
from core.appearance.telegram import card_html, keyboard, note_html, post_html, note_keyboard
from core.cards import CardRef
from core.delivery.message import Notification

log = logging.getLogger("tocsin.telegram")

RateLimitArgs = dict[str, Any]
NO_WAIT: RateLimitArgs = {"wait": False}
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


def markup(card: IncidentCard | Notification) -> InlineKeyboardMarkup | None:
    """The card's keyboard, or a thread reply's (drawn as Bot API JSON in core/appearance/telegram.py), as
    PTB's markup type."""
    kb = keyboard(card) if isinstance(card, IncidentCard) else note_keyboard(card)
    if kb is None:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(b["text"], callback_data=b.get("callback_data"),
                                                       url=b.get("url")) for b in row]
                                 for row in kb["inline_keyboard"]])


def retry_seconds(exc: RetryAfter) -> float:
    """Seconds Telegram asked us to wait (PTB 22 warns about the int form; we read either form)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class ChatPacer(BaseRateLimiter[RateLimitArgs]):
    """Per-chat pacing plus an overall cap; waits out 429 RetryAfter and retries (see module doc).

    Slots are reserved synchronously (no await between reading and writing the next free time), so
    concurrent senders to one chat queue up one interval apart while other chats go straight through.
    A 429 blocks its chat (or, for calls without a chat, every chat) until `retry_after` has passed;
    callers already waiting for a slot check the block again before they call.
    """

    per_chat_interval: ClassVar[float] = 1.0
    """Telegram: avoid more than one message per second in one chat."""
    overall_interval: ClassVar[float] = 1 / 30
    """Telegram: about 30 messages per second per bot."""
    max_retries: ClassVar[int] = 3
    max_no_wait: ClassVar[float] = 5.0
    """A queued card sync paces itself up to this long; beyond it, it hands the wait to the worker."""

    _ALL = "*"

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._monotonic = monotonic
        self._sleep = sleep
        self._next_slot: dict[str, float] = {}
        self._blocked_until: dict[str, float] = {}
        self._overall_next = 0.0

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def blocked_for(self, chat: str | None) -> float:
        """Seconds until Telegram lets us send to `chat` again after a 429 (0 when not blocked)."""
        until = max(self._blocked_until.get(self._ALL, 0.0),
                    self._blocked_until.get(chat, 0.0) if chat is not None else 0.0)
        return max(0.0, until - self._monotonic())

    def backlog(self, chat: str) -> float:
        """Seconds until the next free pacing slot of `chat`."""
        return max(0.0, self._next_slot.get(chat, 0.0) - self._monotonic())

    def block(self, chat: str | None, seconds: float) -> None:
        key = self._ALL if chat is None else chat
        self._blocked_until[key] = max(self._blocked_until.get(key, 0.0), self._monotonic() + seconds)

    def _reserve_chat(self, chat: str) -> float:
        """Take the chat's next pacing slot; return how long to sleep until it."""
        now = self._monotonic()
        slot = max(now, self._next_slot.get(chat, 0.0))
        self._next_slot[chat] = slot + self.per_chat_interval
        if len(self._next_slot) > 10_000:  # forget chats that are long idle
            self._next_slot = {k: v for k, v in self._next_slot.items() if v > now}
            self._blocked_until = {k: v for k, v in self._blocked_until.items() if v > now}
        return slot - now

    def _reserve_overall(self) -> float:
        """Taken only once the chat's own slot has come, so one busy chat never delays the others."""
        now = self._monotonic()
        slot = max(now, self._overall_next)
        self._overall_next = slot + self.overall_interval
        return slot - now

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, bool | dict[str, Any] | list[dict[str, Any]]]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: RateLimitArgs | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        wait = bool((rate_limit_args or {}).get("wait", True))
        chat = str(data["chat_id"]) if data.get("chat_id") is not None else None
        attempt = 0
        while True:
            blocked = self.blocked_for(chat)
            if blocked > 0:
                if not wait and blocked > self.max_no_wait:
                    raise RetryAfter(math.ceil(blocked))  # do not even try: Telegram said not yet
                await self._sleep(blocked)
                continue
            if not wait and chat is not None and self.backlog(chat) > self.max_no_wait:
                raise RetryAfter(math.ceil(self.backlog(chat)))
            if chat is not None:
                delay = self._reserve_chat(chat)
                if delay > 0:
                    await self._sleep(delay)
                    if self.blocked_for(chat) > 0:  # a 429 arrived while we waited for our slot
                        continue
            delay = self._reserve_overall()
            if delay > 0:
                await self._sleep(delay)
            try:
                return await callback(*args, **kwargs)
            except RetryAfter as exc:
                seconds = retry_seconds(exc)
                self.block(chat, seconds)
                attempt += 1
                retrying = wait and attempt <= self.max_retries
                log.warning("telegram.flood_control", extra={
                    "endpoint": endpoint, "chat": chat, "retry_after": seconds, "attempt": attempt,
                    "action": "wait and retry" if retrying else "hand back"})
                if not retrying:
                    raise


class TelegramSurface:
    """ChatSurface on Telegram: the card in `incident_chat_id` (or its forum topic), replies under it."""

    platform: str = "telegram"

    def __init__(self, bot: ExtBot[RateLimitArgs], *, chat_id: str, topic_id: int | None = None) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.topic_id = topic_id

    async def post_card(self, card: IncidentCard) -> CardRef:
        msg = await self._call("sendMessage", self.bot.send_message(
            chat_id=self.chat_id, text=card_html(card), parse_mode=ParseMode.HTML,
            reply_markup=markup(card), message_thread_id=self.topic_id, link_preview_options=_NO_PREVIEW,
            rate_limit_args=NO_WAIT))
        assert isinstance(msg, Message)
        thread = str(msg.message_thread_id) if msg.message_thread_id else None
        log.info("telegram.card.posted", extra={"incident": card.ref, "chat": msg.chat_id,
                                                "message_id": msg.message_id, "topic": thread})
        return CardRef(self.platform, str(msg.chat_id), str(msg.message_id), thread)

    async def update_card(self, ref: CardRef, card: IncidentCard) -> None:
        try:
            await self._call("editMessageText", self.bot.edit_message_text(
                chat_id=ref.channel, message_id=int(ref.message_ref), text=card_html(card),
                parse_mode=ParseMode.HTML, reply_markup=markup(card), link_preview_options=_NO_PREVIEW,
                rate_limit_args=NO_WAIT))
        except SurfaceError as exc:
            # A retried sync re-applies the same edit: Telegram calls that "not modified", we call it done.
            if exc.status == 400 and "not modified" in str(exc).lower():
                return
            raise

    async def post(self, note: Notification) -> str:
        msg = await self._call("sendMessage", self.bot.send_message(
            chat_id=self.chat_id, text=post_html(note), parse_mode=ParseMode.HTML, message_thread_id=self.topic_id,
            link_preview_options=_NO_PREVIEW, rate_limit_args=NO_WAIT))
        return f"{getattr(msg, 'chat_id', self.chat_id)}/{getattr(msg, 'message_id', '')}"

    async def reply(self, ref: CardRef, card: IncidentCard, note: Notification) -> None:
        thread = int(ref.thread_ref) if ref.thread_ref else None
        await self._call("sendMessage", self.bot.send_message(
            chat_id=ref.channel, text=note_html(note), parse_mode=ParseMode.HTML, message_thread_id=thread,
            reply_markup=markup(note), reply_parameters=ReplyParameters(message_id=int(ref.message_ref),
                                             allow_sending_without_reply=True),
            link_preview_options=_NO_PREVIEW, rate_limit_args=NO_WAIT))

    async def _call(self, method: str, call: Awaitable[Any]) -> Any:
        """Await a Bot API call and map PTB's errors to SurfaceError (retry or permanent)."""
        try:
            return await call
        except RetryAfter as exc:
            seconds = retry_seconds(exc)
            raise SurfaceError(f"{method}: flood control, retry in {seconds:g}s", after=seconds,
                               status=429) from exc
        except ChatMigrated as exc:
            raise SurfaceError(f"{method}: the group is now chat {exc.new_chat_id}: update "
                               "telegram.incident_chat_id", retry=False, status=400) from exc
        except InvalidToken as exc:
            raise SurfaceError(f"{method}: telegram.bot_token was rejected", retry=False, status=401) from exc
        except Forbidden as exc:
            raise SurfaceError(f"{method}: {exc.message}", retry=False, status=403) from exc
        except BadRequest as exc:
            raise SurfaceError(f"{method}: {exc.message}", retry=False, status=400) from exc
        except TelegramError as exc:  # timeouts, 5xx, connection trouble (NetworkError): try again later
            raise SurfaceError(f"{method}: {type(exc).__name__}: {exc.message}", retry=True) from exc
