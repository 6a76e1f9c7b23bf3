"""Telegram fixtures: the Bot API stand-in and a running app (build_app) with only Telegram mounted."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select, update

from bot import server
from bot.context import Context
from bot.server import Runtime
from bot.telegram import bot as tg_bot
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.models import Delivery
from tests.conftest import deep_merge
from tests.stand_ins.http import HttpStandIn
from tests.telegram.botapi import TOKEN, BotApi

SECRET = "s3cret_Webhook-token"
PUBLIC_URL = "https://tocsin.example.com"
INCIDENT_CHAT = "-100777"


def telegram_overrides(api: BotApi, **telegram: Any) -> dict[str, Any]:
    return {
        "server": {"public_url": PUBLIC_URL},
        "access": {"telegram:4242": "operator", "telegram:7": "admin"},
        "telegram": {"enabled": True, "bot_token": TOKEN, "incident_chat_id": INCIDENT_CHAT,
                     "mode": "webhook", "webhook_secret": SECRET, "api_url": api.api_url, **telegram},
    }


@dataclass
class Harness:
    ctx: Context
    rt: Runtime
    client: TestClient
    api: BotApi
    tg: tg_bot.TelegramBot

    async def post(self, body: Any, *, secret: str | None = SECRET,
                   raw: bytes | None = None) -> ClientResponse:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        if raw is None:
            return await self.client.post(tg_bot.WEBHOOK_PATH, json=body, headers=headers)
        return await self.client.post(tg_bot.WEBHOOK_PATH, data=raw, headers=headers)

    async def drain(self) -> list[DeliveryResult]:
        """Do what the worker does for queued `chat:telegram` deliveries, in order, once each."""
        sender = self.rt.chat_senders["chat:telegram"]
        async with self.ctx.db.sessions() as s:
            rows = (await s.execute(select(Delivery).where(Delivery.channel == "chat:telegram",
                                                           Delivery.status == "queued")
                                    .order_by(Delivery.id))).scalars().all()
        results = []
        for row in rows:
            env = Envelope(row.id, row.channel, row.recipient, row.address, row.idempotency_key,
                           row.attempts + 1, Notification.from_json(row.notification_json))
            result = await sender.send(env)
            results.append(result)
            status = {"delivered": "delivered", "permanent": "failed"}.get(result.outcome, "queued")
            async with self.ctx.db.transaction() as s:
                await s.execute(update(Delivery).where(Delivery.id == row.id)
                                .values(status=status, attempts=row.attempts + 1))
        return results


@pytest.fixture
async def api() -> AsyncIterator[BotApi]:
    async with HttpStandIn() as peer:
        yield BotApi(peer)


@pytest.fixture
async def harness(make_ctx: Callable[..., Any], api: BotApi,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Callable[..., Any]]:
    """`await harness(config, **telegram_config)` -> a started app (webhook mode unless told), connected;
    `config` (contacts, schedules, reminders...) is merged over the Telegram settings."""
    started: list[TestClient] = []
    # Only Telegram: the other adapters and the worker are someone else's tests (drain() stands in for it).
    monkeypatch.setattr(server, "_mounts", lambda: [tg_bot.mount])

    async def factory(config: dict[str, Any] | None = None, **telegram: Any) -> Harness:
        ctx = await make_ctx(**deep_merge(telegram_overrides(api, **telegram), config or {}))
        app, rt = await server.build_app(ctx)
        client = TestClient(TestServer(app))
        await client.start_server()
        started.append(client)
        tg = next(c for c in rt.components if c.name == "telegram")
        assert isinstance(tg, tg_bot.TelegramBot)
        await asyncio.wait_for(tg.connected.wait(), 10)
        return Harness(ctx, rt, client, api, tg)

    yield factory
    for client in reversed(started):
        await client.close()
