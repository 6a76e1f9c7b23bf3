"""Flood control: per-chat pacing, 429 retry_after waited out (interactive) or handed to the queue (cards)."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from telegram.error import RetryAfter
from telegram.ext import ExtBot

from bot.telegram.surface import NO_WAIT, ChatPacer
from core.rbac import Actor
from tests.telegram.botapi import TOKEN, BotApi, command, flood
from tests.telegram.conftest import INCIDENT_CHAT, Harness


@pytest.fixture
async def bot(api: BotApi) -> AsyncIterator[ExtBot[Any]]:
    b: ExtBot[Any] = ExtBot(TOKEN, base_url=api.api_url, rate_limiter=ChatPacer())
    async with b:
        yield b


async def test_one_chat_is_paced_without_holding_up_another(api: BotApi, bot: ExtBot[Any]) -> None:
    started = time.monotonic()
    await asyncio.gather(*(bot.send_message(chat_id=-1, text=f"a{i}") for i in range(3)),
                         bot.send_message(chat_id=-2, text="b"))
    calls = api.calls("sendMessage")
    a = [c.at for c in calls if c.params["chat_id"] == "-1"]
    [b] = [c.at for c in calls if c.params["chat_id"] == "-2"]
    assert a[1] - a[0] >= 0.95 and a[2] - a[1] >= 0.95
    assert b - started < 0.5  # not queued behind chat -1


async def test_429_is_waited_out_before_the_retry(api: BotApi, bot: ExtBot[Any]) -> None:
    api.peer.script("*/sendMessage", flood(1))
    msg = await bot.send_message(chat_id=-1, text="hello")
    assert msg.text == "hello"
    first, second = api.calls("sendMessage")
    assert second.at - first.at >= 1.0


async def test_a_card_sync_gets_the_wait_back_instead_of_sleeping(api: BotApi, bot: ExtBot[Any]) -> None:
    api.peer.script("*/sendMessage", flood(7))
    started = time.monotonic()
    with pytest.raises(RetryAfter):
        await bot.send_message(chat_id=-1, text="card", rate_limit_args=NO_WAIT)
    with pytest.raises(RetryAfter):  # still blocked: not even tried
        await bot.send_message(chat_id=-1, text="card", rate_limit_args=NO_WAIT)
    assert time.monotonic() - started < 1
    assert len(api.calls("sendMessage")) == 1
    await bot.send_message(chat_id=-2, text="other chat", rate_limit_args=NO_WAIT)  # unaffected
    assert len(api.calls("sendMessage")) == 2


async def test_command_reply_survives_flood_control(harness: Callable[..., Any]) -> None:
    h: Harness = await harness()
    h.api.peer.script("*/sendMessage", flood(1))
    await h.post(command(1, "/incident declare sev2 Payment errors"))
    first, second = await h.api.wait_calls("sendMessage", 2)
    assert second.at - first.at >= 1.0
    assert second.params["text"].startswith("Declared INC-1")


async def test_card_sync_429_becomes_a_retry_after_for_the_worker(harness: Callable[..., Any]) -> None:
    h: Harness = await harness()
    await h.ctx.service.declare(actor=Actor("cli:op", "cli"), title="API latency", severity="sev1")
    h.api.peer.script("*/sendMessage", flood(7))
    [result] = await h.drain()
    assert (result.outcome, result.retry_after, result.status_code) == ("retry", 7, 429)
    [again] = await h.drain()  # the queue retried early: we still do not call Telegram
    assert again.outcome == "retry" and again.retry_after is not None and again.retry_after >= 6
    assert [c.params["chat_id"] for c in h.api.calls("sendMessage")] == [INCIDENT_CHAT]
    # People talking to the bot elsewhere are not held up by the incident chat's flood wait.
    await h.post(command(2, "/incident list", chat_id=4242))
    reply = (await h.api.wait_calls("sendMessage", 2))[1]
    assert reply.params["chat_id"] == "4242" and reply.params["text"].startswith("INC-1")
