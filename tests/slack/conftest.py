"""Slack test environment: the real server app (bot.server.build_app) behind aiohttp's TestServer, a loopback
Slack Web API, and helpers that send signed requests and read back the database and audit log."""
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import func, select, update

from bot.context import Context
from bot.server import Runtime, build_app
from bot.slack.app import EVENTS_PATH, SlackAdapter
from bot.surface import SurfaceSender
from core.audit.log import AuditLog
from core.delivery.message import DeliveryResult, Envelope, Notification
from core.models import AuditEntry, Delivery, Incident
from tests.slack.standin import (
    BOT_TOKEN,
    INCIDENT_CHANNEL,
    SIGNING_SECRET,
    SlackApi,
    action_body,
    sign,
    slash_body,
    view_body,
)


def slack_config(api: SlackApi, **extra: Any) -> dict[str, Any]:
    return {"enabled": True, "bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET,
            "incident_channel": INCIDENT_CHANNEL, "api_url": api.base_url, **extra}


@dataclass
class SlackEnv:
    ctx: Context
    rt: Runtime
    client: TestClient
    api: SlackApi
    _n: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def adapter(self) -> SlackAdapter:
        return next(c for c in self.rt.components if isinstance(c, SlackAdapter))

    @property
    def sender(self) -> SurfaceSender:
        return self.rt.chat_senders["chat:slack"]

    def next_id(self) -> int:
        return next(self._n)

    async def post(self, body: str, *, headers: dict[str, str] | None = None, retry: int | None = None,
                   drain: bool = True) -> tuple[int, str]:
        """POST a (by default correctly signed) body to /slack/events; then wait for the acked work."""
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(sign(body) if headers is None else headers)
        if retry is not None:
            h["X-Slack-Retry-Num"] = str(retry)
            h["X-Slack-Retry-Reason"] = "http_timeout"
        resp = await self.client.post(EVENTS_PATH, data=body.encode(), headers=h)
        text = await resp.text()
        if drain:
            await self.adapter.drain()
        return resp.status, text

    async def command(self, text: str, *, user: str = "UOP", channel: str = "CGENERAL",
                      trigger: str | None = None) -> tuple[int, list[dict[str, Any]]]:
        """A slash command; returns the HTTP status and what reached its response_url."""
        n = self.next_id()
        status, _ = await self.post(slash_body(text, user=user, trigger=trigger or f"trig-{n}",
                                               channel=channel, response_url=self.api.response_url(n)))
        return status, self.api.responses(n)

    async def press(self, verb: str, incident_id: int, *, user: str = "UOP") -> int:
        n = self.next_id()
        status, _ = await self.post(action_body(f"incident.{verb}:{incident_id}", user=user,
                                                action_ts=f"1700000100.{n:06d}", trigger=f"trig-btn-{n}",
                                                response_url=self.api.response_url(f"btn-{n}")))
        return status

    async def submit(self, view: dict[str, Any], values: dict[str, Any], *, user: str = "UOP",
                     view_id: str | None = None) -> tuple[int, str]:
        return await self.post(view_body(view, values, user=user, view_id=view_id or f"V{self.next_id()}"))

    async def sync_cards(self, channel: str = "chat:slack") -> list[DeliveryResult]:
        """Do what the delivery worker does with queued `chat:slack` (or `slack_dm`) rows: hand each row's
        Envelope to the registered sender, then record the outcome on the row."""
        sender = self.rt.chat_senders[channel]
        async with self.ctx.db.sessions() as s:
            rows = (await s.execute(select(Delivery).where(Delivery.channel == channel,
                                                           Delivery.status == "queued")
                                    .order_by(Delivery.id))).scalars().all()
        results = []
        for row in rows:
            env = Envelope(delivery_id=row.id, channel=row.channel, recipient=row.recipient,
                           address=row.address, idempotency_key=row.idempotency_key, attempt=row.attempts + 1,
                           notification=Notification.from_json(row.notification_json))
            result = await sender.send(env)
            results.append(result)
            status = {"delivered": "delivered", "permanent": "failed"}.get(result.outcome, "queued")
            async with self.ctx.db.transaction() as s:
                await s.execute(update(Delivery).where(Delivery.id == row.id).values(
                    status=status, attempts=row.attempts + 1, last_error=None if result.outcome == "delivered"
                    else result.summary))
        return results

    async def incidents(self) -> list[Incident]:
        async with self.ctx.db.sessions() as s:
            return list((await s.execute(select(Incident).order_by(Incident.id))).scalars().all())

    async def audit(self, action: str | None = None) -> list[AuditEntry]:
        async with self.ctx.db.sessions() as s:
            rows = await AuditLog.entries(s)
        return [r for r in rows if action is None or r.action == action]

    async def audit_count(self) -> int:
        async with self.ctx.db.sessions() as s:
            return int((await s.execute(select(func.count()).select_from(AuditEntry))).scalar_one())


@pytest.fixture
async def slack_api() -> AsyncIterator[SlackApi]:
    api = SlackApi()
    await api.start()
    try:
        yield api
    finally:
        await api.close()


@pytest.fixture
async def make_slack_env(make_ctx: Callable[..., Any], slack_api: SlackApi
                         ) -> AsyncIterator[Callable[..., Any]]:
    """Factory: `await make_slack_env(**config_overrides)`. The delivery worker is off unless asked for,
    so tests decide when cards sync (`env.sync_cards()`)."""
    made: list[TestClient] = []

    async def factory(*, slack: dict[str, Any] | None = None, **overrides: Any) -> SlackEnv:
        overrides.setdefault("worker", {"enabled": False})
        ctx = await make_ctx(slack=slack_config(slack_api, **(slack or {})), **overrides)
        app, rt = await build_app(ctx)
        client = TestClient(TestServer(app))
        await client.start_server()
        made.append(client)
        return SlackEnv(ctx, rt, client, slack_api)

    yield factory
    for c in made:
        await c.close()


@pytest.fixture
async def env(make_slack_env: Callable[..., Any]) -> SlackEnv:
    return await make_slack_env()
