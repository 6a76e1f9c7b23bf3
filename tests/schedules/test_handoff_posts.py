"""`schedules[].announce_handoffs: true`: each handoff is also a plain post (no card) in the incident channel
of every chat platform that has one, queued as a `chat:<platform>` delivery in the handoff's transaction and
sent by the real Slack, Telegram and Teams senders to their stand-ins; frozen clock; SQLite and PostgreSQL."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

from bot import server
from bot.slack import app as slack_app
from bot.teams.app import mount_teams
from bot.telegram import bot as tg_bot
from core.clock import FrozenClock
from core.config import loads
from core.errors import ConfigError
from core.models import Delivery
from core.schedules.handoffs import HandoffTimer
from tests.schedules.conftest import SCHEDULES, berlin
from tests.slack.conftest import slack_config
from tests.slack.standin import INCIDENT_CHANNEL, SlackApi
from tests.stand_ins.http import HttpStandIn
from tests.teams.helpers import INCIDENT_CONV, bot_connector, plain
from tests.telegram.botapi import BotApi
from tests.telegram.conftest import INCIDENT_CHAT, telegram_overrides
from tests.twoway.helpers import drive_dm_pages

LINE = "On-call handoff for primary at Mon 12 Jan 09:00 CET: alice -> bob"


def with_posts(on: bool) -> dict[str, Any]:
    return {**SCHEDULES, "schedules": [{**SCHEDULES["schedules"][0], "announce_handoffs": on}]}


async def chat_rows(ctx: Any) -> list[tuple[str, str, str]]:
    async with ctx.db.sessions() as s:
        rows = (await s.execute(select(Delivery).where(Delivery.channel.like("chat:%")).order_by(Delivery.id)))
        return [(r.channel, r.address, r.notification_json["kind"]) for r in rows.scalars()]


@pytest.mark.parametrize("on", [True, False])
async def test_a_handoff_is_posted_in_every_incident_channel(make_ctx: Callable[..., Any], clock: FrozenClock,
                                                             monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    clock.set(berlin(2026, 1, 12, 8, 0))
    slack = await SlackApi().start()
    try:
        async with HttpStandIn() as tg_peer, bot_connector() as bc:
            tg = BotApi(tg_peer)
            tg_cfg = telegram_overrides(tg)
            monkeypatch.setattr(server, "_mounts", lambda: [tg_bot.mount, slack_app.mount, mount_teams])
            ctx = await make_ctx(**with_posts(on), slack=slack_config(slack), server=tg_cfg["server"],
                                 telegram=tg_cfg["telegram"], worker={"enabled": False},
                                 teams={"enabled": True, "allow_unauthenticated": True, "service_url": bc.url,
                                        "incident_conversation": INCIDENT_CONV})
            assert ctx.service.surfaces == ["slack", "teams", "telegram"]
            app, rt = await server.build_app(ctx)
            client = TestClient(TestServer(app))
            await client.start_server()
            try:
                bot = next(c for c in rt.components if c.name == "telegram")
                await asyncio.wait_for(bot.connected.wait(), 10)
                timers = [HandoffTimer(ctx.service), HandoffTimer(ctx.service)]
                clock.set(berlin(2026, 1, 12, 9, 0, 5))
                assert sorted(await asyncio.gather(*(t.run_due() for t in timers))) == [0, 1]  # once
                rows = await chat_rows(ctx)
                if not on:
                    assert rows == []
                    return
                assert sorted(rows) == [(f"chat:{p}", "channel", "HANDOFF") for p in ("slack", "teams", "telegram")]
                for p in ("slack", "teams", "telegram"):
                    [result] = await drive_dm_pages(ctx, rt.chat_senders[f"chat:{p}"], f"chat:{p}")
                    assert result.outcome == "delivered", (p, result)
                [post] = slack.calls("chat.postMessage")
                assert post["channel"] == INCIDENT_CHANNEL and not post.get("blocks")
                assert post["text"] == f":busts_in_silhouette: {LINE.replace('->', '-&gt;')}"  # Slack escaping
                assert not post.get("thread_ts")
                [msg] = [c.params for c in tg.calls("sendMessage") if str(c.params["chat_id"]) == INCIDENT_CHAT]
                assert msg["text"] == LINE.replace("->", "-&gt;") and not msg.get("reply_markup")
                [sent] = bc.sends(INCIDENT_CONV)
                assert plain(sent.json["text"]) == LINE and not sent.json.get("attachments")
                assert not sent.json.get("replyToId")
                async with ctx.db.sessions() as s:
                    statuses = (await s.execute(select(Delivery.status).where(
                        Delivery.channel.like("chat:%")))).scalars().all()
                assert statuses == ["delivered"] * 3
            finally:
                await client.close()
    finally:
        await slack.close()


def test_announce_handoffs_needs_an_incident_channel_at_load() -> None:
    text = ("contacts:\n  - name: alice\n    email: a@example.com\nschedules:\n  - name: primary\n"
            "    announce_handoffs: true\n    layers:\n      - name: l\n        members: [alice]\n"
            "        rotation: daily\n        handoff: '09:00'\n        start: '2026-01-05'\n")
    with pytest.raises(ConfigError) as err:
        loads(text, filename="c.yaml", env={})
    assert "c.yaml:6 schedules[0].announce_handoffs: schedule 'primary': announce_handoffs needs an " \
           "incident channel" in str(err.value)
